//! # sso-core
//!
//! The domain, the policy and the services of the `sso` single-sign-on framework: users and
//! super-users, user session tokens (USTs), TOTP two-factor authentication, attributes, password
//! reset, linked principals and the audit trail — the Zato SSO API, rebuilt and hardened.
//!
//! * [`Sso`] is the facade: `sso.user()`, `sso.session()`, `sso.totp()`, `sso.password_reset()`,
//!   `sso.attr()`, `sso.audit()`. **All policy lives there** (who may do what, check order, codes).
//! * [`store`] holds the narrow store traits a backend implements; [`memory`] implements all of
//!   them; the `conformance` feature exposes the suite every backend must pass.
//! * [`secret`] holds the secret newtypes (redacted `Debug`, no `Display`/`Serialize`/`PartialEq`,
//!   zeroised on drop); [`ids`] the public identifiers; [`error`] the codes and errors.
//!
//! Read `ARCHITECTURE.md` at the repository root first.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod audit;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod crypto;
pub mod error;
pub mod ids;
pub mod memory;
pub mod model;
pub mod secret;
pub mod service;
pub mod store;
#[cfg(feature = "conformance")]
pub mod testing;
pub mod time;

pub use error::{Code, Reason, SsoError, SsoResult, StoreError};
pub use service::{CallCtx, Sso, SsoBuilder};
