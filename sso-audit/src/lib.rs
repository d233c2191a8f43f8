//! # sso-audit
//!
//! Audit sinks implementing `sso_core::audit::AuditSink` (spec/audit.md §4):
//!
//! * [`StdoutSink`]: one JSON object per line on standard output (optional by default);
//! * [`FileSink`]: JSON lines in a file created with mode 0600, rotated by size
//!   (`audit.jsonl` → `.1` → … → `.<max_files>`), with an `fsync` policy; queryable by scanning
//!   the current and rotated files.
//!
//! Which sinks run, and which are required, is configuration (`audit.sinks`); the fail-closed rule
//! that uses `required` lives in `sso-core`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

mod file;
mod stdout;

pub use file::{FileSink, FileSinkOptions};
pub use stdout::StdoutSink;
