//! Counters behind `GET /metrics` (spec/rest.md §4). Labels never hold a user id, username or token.

use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters of one `Sso` instance.
#[derive(Debug, Default)]
#[allow(missing_docs)]
pub struct Metrics {
    pub logins_ok: AtomicU64,
    pub logins_error: AtomicU64,
    pub totp_ok: AtomicU64,
    pub totp_error: AtomicU64,
    pub throttle_refusals_user: AtomicU64,
    pub throttle_refusals_ip: AtomicU64,
    pub throttle_refusals_totp: AtomicU64,
    pub sessions_created: AtomicU64,
    pub sessions_revoked: AtomicU64,
    pub store_errors: AtomicU64,
    pub invalid_ust: AtomicU64,
    pub legacy_hashes_upgraded: AtomicU64,
}

/// Adds one.
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n`.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// Renders the counters in Prometheus text format (`hashes_in_flight`, audit figures passed in).
    pub fn render(&self, hashes_in_flight: u64, audit_records: u64, audit_failures: u64, audit_dropped: u64) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut s = String::new();
        let mut line = |name: &str, labels: &str, v: u64| {
            s.push_str(name);
            if !labels.is_empty() {
                s.push('{');
                s.push_str(labels);
                s.push('}');
            }
            s.push(' ');
            s.push_str(&v.to_string());
            s.push('\n');
        };
        line("sso_logins_total", "outcome=\"ok\"", g(&self.logins_ok));
        line("sso_logins_total", "outcome=\"error\"", g(&self.logins_error));
        line("sso_totp_checks_total", "outcome=\"ok\"", g(&self.totp_ok));
        line("sso_totp_checks_total", "outcome=\"error\"", g(&self.totp_error));
        line("sso_throttle_refusals_total", "class=\"user\"", g(&self.throttle_refusals_user));
        line("sso_throttle_refusals_total", "class=\"ip\"", g(&self.throttle_refusals_ip));
        line("sso_throttle_refusals_total", "class=\"totp\"", g(&self.throttle_refusals_totp));
        line("sso_sessions_created_total", "", g(&self.sessions_created));
        line("sso_sessions_revoked_total", "", g(&self.sessions_revoked));
        line("sso_password_hashes_in_flight", "", hashes_in_flight);
        line("sso_store_errors_total", "", g(&self.store_errors));
        line("sso_invalid_ust_total", "", g(&self.invalid_ust));
        line("sso_legacy_password_hashes_upgraded_total", "", g(&self.legacy_hashes_upgraded));
        line("sso_audit_records_total", "", audit_records);
        line("sso_audit_failures_total", "", audit_failures);
        line("sso_audit_dropped_total", "", audit_dropped);
        s
    }
}
