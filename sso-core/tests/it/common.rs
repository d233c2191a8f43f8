//! Helpers shared by the operation modules (users, sessions, totp_api, reset, attrs, audit).

use std::time::Duration;

use sso_core::audit::{AuditRecord, Outcome};
use sso_core::config::Config;
use sso_core::ids::UserId;
use sso_core::model::{UserPatch, UserRecord};
use sso_core::secret::{Password, TotpKey};
use sso_core::service::UserUpdate;
use sso_core::testing::{Fixture, audit_contains};
use sso_core::{Code, SsoError, SsoResult};

/// The RFC 6238 SHA-1 test key.
pub const RFC_KEY: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// The real code of a failed call (a throttling refusal is not a code: it panics).
pub fn code<T: std::fmt::Debug>(r: SsoResult<T>) -> Code {
    let e = r.unwrap_err();
    assert!(!matches!(e, SsoError::Throttled { .. }), "unexpectedly throttled");
    e.real_code()
}

/// Whether a call was refused by throttling.
pub fn is_throttled<T>(r: &SsoResult<T>) -> bool {
    matches!(r, Err(SsoError::Throttled { .. }))
}

/// A memory fixture with `Config::for_tests()` changed by `tune`.
pub async fn fixture(tune: impl FnOnce(&mut Config)) -> Fixture {
    Fixture::with(sso_core::memory::stores(), tune).await
}

/// The stored record of a user.
pub async fn record(f: &Fixture, id: &UserId) -> UserRecord {
    f.sso.stores().users.get_by_id(id).await.unwrap().unwrap()
}

/// The stored record of a user by name, if any.
pub async fn by_name(f: &Fixture, username: &str) -> Option<UserRecord> {
    f.sso.stores().users.get_by_username(username).await.unwrap()
}

/// Applies a patch directly in the store (test set-up only).
pub async fn patch(f: &Fixture, id: &UserId, p: UserPatch) {
    let mut tx = f.sso.stores().users.begin().await.unwrap();
    tx.update_user(id, &p).await.unwrap();
    tx.commit().await.unwrap();
}

/// The audit records of `op`, oldest first.
pub fn records(f: &Fixture, op: &str) -> Vec<AuditRecord> {
    f.audit.records().into_iter().filter(|r| r.op == op).collect()
}

/// The last audit record of `op`.
pub fn last(f: &Fixture, op: &str) -> AuditRecord {
    f.audit.records().into_iter().rfind(|r| r.op == op).unwrap_or_else(|| panic!("no {op} record: {:?}", f.ops()))
}

/// Asserts the op, outcome and sub-status of a record.
pub fn assert_rec(r: &AuditRecord, op: &str, outcome: Outcome, sub_status: &[&str]) {
    assert_eq!(r.op, op, "{r:?}");
    assert_eq!(r.outcome, outcome, "{r:?}");
    assert_eq!(r.sub_status, sub_status, "{r:?}");
    if outcome == Outcome::Success {
        assert!(r.status == "ok" || r.status == "warning", "{r:?}");
    } else {
        assert_eq!(r.status, "error", "{r:?}");
    }
}

/// The outcome a refusal with `c` is recorded with.
pub fn outcome_of(c: Code) -> Outcome {
    if c.is_denial() { Outcome::Denied } else { Outcome::Failure }
}

/// Asserts that none of `secrets` appears in any audit record.
pub fn assert_no_secrets(f: &Fixture, secrets: &[&str]) {
    for s in secrets {
        assert!(!audit_contains(f, s), "{s:?} leaked into the audit trail");
    }
}

/// Logs in with a password.
pub async fn login_pw(f: &Fixture, user: &str, pw: &str) -> SsoResult<sso_core::service::views::SessionInfo> {
    f.sso.user().login(&f.anon(), user, &Password::new(pw), None, None).await
}

/// Gives a user the RFC key and turns TOTP on (through the Operator).
pub async fn enable_totp(f: &Fixture, id: &UserId) -> TotpKey {
    let key = TotpKey::parse(RFC_KEY).unwrap();
    f.sso.user().reset_totp_key(&f.operator(), Some(id), Some(RFC_KEY), None).await.unwrap();
    let upd = UserUpdate { is_totp_enabled: Some(Some(true)), ..Default::default() };
    f.sso.user().update_user_by_id(&f.operator(), id.as_str(), upd).await.unwrap();
    key
}

/// A code different from `good`.
pub fn wrong_code(good: &str) -> &'static str {
    if good == "000000" { "000001" } else { "000000" }
}

/// Seconds as a `Duration`.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
