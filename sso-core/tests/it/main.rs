//! sso-core integration tests: one binary (link time), one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

mod conformance_memory;
mod login;
mod props;
mod seed;
