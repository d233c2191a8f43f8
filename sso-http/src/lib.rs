//! # sso-http
//!
//! The HTTP face of `sso`: the Zato-compatible REST API on axum ([`api`]), configuration loading
//! with figment ([`config`]), the composition of stores, key ring and audit sinks from
//! configuration ([`wiring`]), the server lifecycle ([`server`]) and the `sso` command ([`cli`]).
//!
//! This crate translates; it never decides. Every rule lives in `sso-core`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod api;
pub mod cli;
pub mod config;
pub mod notify;
pub mod server;
pub mod wiring;
