//! sso-core integration tests: one binary (link time), one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

mod attrs;
mod audit;
mod audit_records;
mod common;
mod conformance_memory;
mod login;
mod props;
mod reset;
mod rotation;
mod security;
mod seed;
mod sessions;
mod totp_api;
mod users;
