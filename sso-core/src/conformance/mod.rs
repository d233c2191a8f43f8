//! The conformance suite every store backend runs (spec/storage.md §2), behind the `conformance`
//! feature.
//!
//! Each case is an `async fn(stores: Stores)` in the module of its trait group ([`users`],
//! [`search`], [`sessions`], [`attrs`], [`tokens`], [`linked`], [`counters`], [`service`]). A case
//! receives **fresh, empty** stores and panics with a message naming the broken guarantee when the
//! backend does not hold it.
//!
//! A backend crate runs the suite with one line in an integration test:
//!
//! ```ignore
//! async fn fresh() -> sso_core::store::Stores { my_backend::stores().await }
//! sso_core::conformance_tests!(fresh); // every group
//! // or, for a backend that implements only some traits:
//! // sso_core::conformance_tests!(fresh; sessions, counters);
//! ```
//!
//! The macro expands to one `#[tokio::test]` per case, named `<group>::<case>`, on a
//! multi-threaded runtime (the concurrency cases need real parallelism). The backend crate needs
//! no tokio dependency of its own for it: the macro uses the runtime re-exported here.
//!
//! Times in store-level cases lie in the year 2100 (with non-zero microseconds), so a backend
//! whose records carry a real TTL (Redis) keeps them for the whole test while the cases move the
//! logical `now` they pass past any expiry they need.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod attrs;
pub mod audit;
pub mod counters;
pub mod linked;
pub mod search;
pub mod service;
pub mod sessions;
pub mod tokens;
pub mod users;

use std::sync::Arc;

use crate::crypto::random;
use crate::error::StoreError;
use crate::ids::{AuthId, SessionId, UserId};
use crate::model::{
    ApprovalStatus, AttrWrite, HistoryEntry, LinkedAuthRecord, PrtRecord, SessionRecord, SignUpStatus, UserRecord,
    upper,
};
use crate::store::{StoreResult, Stores, UserTx};
use crate::time::Timestamp;

/// Implementation details of [`conformance_tests!`](crate::conformance_tests); not a public API.
#[doc(hidden)]
pub mod __private {
    pub use tokio;
}

/// The trait groups, in the order [`conformance_tests!`](crate::conformance_tests) runs them.
pub const GROUPS: &[&str] = &["users", "search", "sessions", "attrs", "tokens", "linked", "counters", "service"];

/// Every case, as `<group>::<case>` (the test names the macro generates).
pub const CASES: &[&str] = crate::__conformance_names!([] users search sessions attrs tokens linked counters service);

/// The case table: one arm per group, listing its cases. Calls back `$crate::$cb!` with
/// `{ [args] group [case, …] }`. Not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_group {
    ($cb:ident [$($args:tt)*] users) => {
        $crate::$cb! { [$($args)*] users [
            insert_get_round_trip,
            insert_get_round_trip_nulls,
            username_unique,
            username_unique_concurrent,
            username_case_sensitive,
            user_id_unique,
            confirm_token_hash_unique,
            update_present_fields_only,
            update_username,
            update_username_conflict,
            update_missing_user,
            update_totp_bumps_generation,
            update_totp_concurrent_never_tears,
            bump_epoch,
            confirm_signup_compare_and_set,
            delete_cascades,
            email_idx_lookup,
            tx_rollback_on_drop,
            tx_reads_own_writes,
            scan_users_in_id_order,
            replace_envelope_compare_and_set,
        ] }
    };
    ($cb:ident [$($args:tt)*] search) => {
        $crate::$cb! { [$($args)*] search [
            exact_name_case_insensitive,
            substring_name,
            name_op_and_or,
            and_with_filters,
            precedence_user_id_username,
            order_bytewise_nulls_first,
            totals_and_pages,
            wildcards_literal,
            no_criteria_returns_all,
            substring_follows_changes,
        ] }
    };
    ($cb:ident [$($args:tt)*] sessions) => {
        $crate::$cb! { [$($args)*] sessions [
            create_get,
            unknown_id,
            get_with_user,
            extend_never_backwards,
            extend_missing,
            set_epoch,
            delete_idempotent,
            list_by_user_only_own,
            delete_by_user,
            expired_readable,
            delete_expired,
            history_cap,
            many_sessions_of_one_user,
        ] }
    };
    ($cb:ident [$($args:tt)*] attrs) => {
        $crate::$cb! { [$($args)*] attrs [
            create_conflict,
            create_many_atomic,
            update_many_missing_none_written,
            update_keeps_or_sets_expiry,
            set_keeps_creation_time,
            expiry_hides_and_allows_recreate,
            names_sorted_without_expired,
            get_many_skips_missing_and_expired,
            delete_many_atomic,
            set_expiry_many,
            owners_isolated,
            session_attrs_removed_with_session,
            encrypted_flag_round_trip,
            delete_expired,
            scan_and_replace_envelopes,
        ] }
    };
    ($cb:ident [$($args:tt)*] tokens) => {
        $crate::$cb! { [$($args)*] tokens [
            prt_insert_get,
            prt_token_hash_unique,
            mark_accessed_once_concurrent,
            mark_used_once,
            expired_token_refused,
            mark_rolled_back,
            prts_removed_with_user,
            delete_expired_prts,
        ] }
    };
    ($cb:ident [$($args:tt)*] linked) => {
        $crate::$cb! { [$($args)*] linked [
            principal_unique,
            delete_returns_id,
            delete_other_users_link,
            list_by_user,
        ] }
    };
    ($cb:ident [$($args:tt)*] counters) => {
        $crate::$cb! { [$($args)*] counters [
            record_failure_counts,
            record_failure_concurrent,
            ttl_expiry_resets_count,
            get_expired_is_none,
            reset,
            keys_independent,
            advance_step_monotonic,
            advance_step_concurrent,
            advance_step_after_ttl,
            delete_expired_keeps_live,
        ] }
    };
    ($cb:ident [$($args:tt)*] service) => {
        $crate::$cb! { [$($args)*] service [
            login_password_and_totp,
            reset_totp_key_self,
            reset_totp_key_admin,
            replay_refused,
            throttling_shared_by_nodes,
            revoke_all_visible_on_second_node,
            password_change_revokes_other_sessions,
            user_cache_pipeline,
        ] }
    };
}

/// Builds [`CASES`] from the case table. Not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_names {
    ([$($acc:tt)*]) => { &[$($acc)*] };
    ([$($acc:tt)*] $group:ident $($rest:ident)*) => {
        $crate::__conformance_group!(__conformance_names_step [[$($acc)*] $($rest)*] $group)
    };
}

/// One step of [`__conformance_names!`]. Not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_names_step {
    ([[$($acc:tt)*] $($rest:ident)*] $group:ident [$($case:ident),* $(,)?]) => {
        $crate::__conformance_names!(
            [$($acc)* $(concat!(stringify!($group), "::", stringify!($case)),)*] $($rest)*
        )
    };
}

/// Emits the test module of one group. Not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_emit {
    ([] $group:ident [$($case:ident),* $(,)?]) => {
        mod $group {
            use $crate::conformance::__private::tokio as __sso_tokio;
            $(
                #[__sso_tokio::test(flavor = "multi_thread", worker_threads = 4, crate = "self::__sso_tokio")]
                async fn $case() {
                    $crate::conformance::$group::$case(super::__sso_conformance_stores().await).await;
                }
            )*
        }
    };
}

/// Expands to the conformance suite (spec/storage.md §2): one named
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]` per case, in one module per
/// group (`users::username_unique`, `counters::advance_step_concurrent`, …).
///
/// `factory` is the path of an `async fn() -> Stores` returning fresh, empty stores; it is called
/// once per case.
///
/// ```ignore
/// async fn fresh() -> sso_core::store::Stores { sso_core::memory::stores() }
/// sso_core::conformance_tests!(fresh); // every group
/// // or only some groups:
/// // sso_core::conformance_tests!(fresh; users, sessions, counters, service);
/// ```
///
/// Groups: `users`, `search`, `sessions`, `attrs`, `tokens`, `linked`, `counters`, `service`. Use
/// the macro at most once per module.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path; $($group:ident),+ $(,)?) => {
        async fn __sso_conformance_stores() -> $crate::store::Stores {
            $factory().await
        }
        $( $crate::__conformance_group!(__conformance_emit [] $group); )+
    };
    ($factory:path $(,)?) => {
        $crate::conformance_tests!($factory; users, search, sessions, attrs, tokens, linked, counters, service);
    };
}

// ----- fixtures shared by the cases ------------------------------------------------------------

/// 2100-01-01T00:00:00.123457Z: the origin of every store-level time (non-zero microseconds).
const BASE_US: i64 = 4_102_444_800_123_457;

/// `BASE + secs` seconds.
fn at(secs: i64) -> Timestamp {
    Timestamp::from_micros(BASE_US + secs * 1_000_000)
}

/// `BASE + micros` microseconds.
fn at_us(micros: i64) -> Timestamp {
    Timestamp::from_micros(BASE_US + micros)
}

fn new_user_id() -> UserId {
    UserId::generate().expect("user id")
}

fn new_session_id() -> SessionId {
    SessionId::generate().expect("session id")
}

fn new_auth_id() -> AuthId {
    AuthId::generate().expect("auth id")
}

fn random_hash() -> [u8; 32] {
    random::bytes::<32>().expect("random bytes")
}

/// A user with every field set: Unicode names, microsecond times, every NULL-able column filled.
pub(crate) fn user_record(username: &str) -> UserRecord {
    let display_name = Some(format!("Zoë «{username}» Ñandú-Łukasz 東京"));
    let first_name = Some("Zoë".to_owned());
    let middle_name = Some("Ñandú".to_owned());
    let last_name = Some("Straße-Łukasz".to_owned());
    UserRecord {
        user_id: new_user_id(),
        username: username.to_owned(),
        password_hash: "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA".to_owned(),
        password_is_set: true,
        password_must_change: true,
        password_last_set: at_us(1),
        password_expiry: Some(at_us(86_400_000_002)),
        email_enc: Some("gAAAAA.envelope.of.zoë@example.org".to_owned()),
        email_idx: Some(format!("idx-{username}")),
        display_name_upper: upper(&display_name),
        first_name_upper: upper(&first_name),
        middle_name_upper: upper(&middle_name),
        last_name_upper: upper(&last_name),
        display_name,
        first_name,
        middle_name,
        last_name,
        is_super_user: true,
        is_locked: true,
        locked_time: Some(at_us(3)),
        locked_by: Some("cli:operator@höst".to_owned()),
        approval_status: ApprovalStatus::Rejected,
        approval_status_mod_time: at_us(4),
        approval_status_mod_by: "zusr-admin-ü".to_owned(),
        sign_up_status: SignUpStatus::BeforeConfirmation,
        sign_up_time: at_us(5),
        sign_up_confirm_time: Some(at_us(6)),
        confirm_token_hash: Some(random_hash().to_vec()),
        creation_ctx:
            r#"{"via":"api","current_app":"CRM","remote_addr":"10.0.0.1, 10.0.0.2","user_agent":"Mözilla/5.0 ☃"}"#
                .to_owned(),
        is_totp_enabled: true,
        totp_key_enc: "gAAAAA.totp-key-envelope".to_owned(),
        totp_label_enc: "gAAAAA.totp-label-envelope".to_owned(),
        totp_key_gen: 7,
        session_epoch: 11,
    }
}

/// A user with every NULL-able column NULL and the common states (approved, final).
fn bare_user_record(username: &str) -> UserRecord {
    UserRecord {
        user_id: new_user_id(),
        username: username.to_owned(),
        password_hash: "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA".to_owned(),
        password_is_set: true,
        password_must_change: false,
        password_last_set: at_us(10),
        password_expiry: None,
        email_enc: None,
        email_idx: None,
        display_name: None,
        first_name: None,
        middle_name: None,
        last_name: None,
        display_name_upper: None,
        first_name_upper: None,
        middle_name_upper: None,
        last_name_upper: None,
        is_super_user: false,
        is_locked: false,
        locked_time: None,
        locked_by: None,
        approval_status: ApprovalStatus::Approved,
        approval_status_mod_time: at_us(11),
        approval_status_mod_by: "auto".to_owned(),
        sign_up_status: SignUpStatus::Final,
        sign_up_time: at_us(12),
        sign_up_confirm_time: None,
        confirm_token_hash: None,
        creation_ctx: r#"{"via":"cli"}"#.to_owned(),
        is_totp_enabled: false,
        totp_key_enc: "gAAAAA.key".to_owned(),
        totp_label_enc: "gAAAAA.label".to_owned(),
        totp_key_gen: 1,
        session_epoch: 1,
    }
}

/// Sets the four names and their upper-cased copies.
fn with_names(mut u: UserRecord, display: Option<&str>, first: Option<&str>, last: Option<&str>) -> UserRecord {
    u.display_name = display.map(str::to_owned);
    u.first_name = first.map(str::to_owned);
    u.middle_name = None;
    u.last_name = last.map(str::to_owned);
    u.display_name_upper = upper(&u.display_name);
    u.first_name_upper = upper(&u.first_name);
    u.middle_name_upper = None;
    u.last_name_upper = upper(&u.last_name);
    u
}

/// Opens a transaction or panics.
async fn begin(stores: &Stores) -> Box<dyn UserTx> {
    stores.users.begin().await.expect("begin a users transaction")
}

/// Inserts a user in its own transaction.
async fn try_insert_user(stores: &Stores, u: &UserRecord) -> StoreResult<()> {
    let mut tx = stores.users.begin().await?;
    tx.insert_user(u).await?;
    tx.commit().await
}

/// Inserts a user in its own transaction or panics.
async fn insert_user(stores: &Stores, u: &UserRecord) {
    try_insert_user(stores, u).await.unwrap_or_else(|e| panic!("insert user {:?}: {e}", u.username));
}

/// Reads a user that must exist.
async fn get_user(stores: &Stores, id: &UserId) -> UserRecord {
    stores.users.get_by_id(id).await.expect("get_by_id").unwrap_or_else(|| panic!("user {id} should exist"))
}

/// Parses JSON text (stores may keep JSON columns normalised, e.g. Postgres `jsonb`).
fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("stored JSON does not parse ({e}): {s}"))
}

/// Asserts two users are equal, comparing the JSON column as JSON.
fn assert_user_eq(actual: &UserRecord, expected: &UserRecord, what: &str) {
    assert_eq!(json(&actual.creation_ctx), json(&expected.creation_ctx), "{what}: creation_ctx differs");
    let mut a = actual.clone();
    let mut e = expected.clone();
    a.creation_ctx = String::new();
    e.creation_ctx = String::new();
    assert_eq!(a, e, "{what}: the stored user differs from what was written");
}

/// Asserts two PRTs are equal, comparing the JSON columns as JSON.
fn assert_prt_eq(actual: &PrtRecord, expected: &PrtRecord, what: &str) {
    let opt = |s: &Option<String>| s.as_deref().map(json);
    assert_eq!(json(&actual.creation_ctx), json(&expected.creation_ctx), "{what}: creation_ctx differs");
    assert_eq!(opt(&actual.access_ctx), opt(&expected.access_ctx), "{what}: access_ctx differs");
    assert_eq!(
        opt(&actual.password_reset_ctx),
        opt(&expected.password_reset_ctx),
        "{what}: password_reset_ctx differs"
    );
    let strip = |p: &PrtRecord| PrtRecord {
        creation_ctx: String::new(),
        access_ctx: None,
        password_reset_ctx: None,
        ..p.clone()
    };
    assert_eq!(strip(actual), strip(expected), "{what}: the stored PRT differs from what was written");
}

/// A session of `user_id`, created at `BASE`, with the given idle deadline and two history entries.
fn session_record(user_id: &UserId, expiration: Timestamp) -> SessionRecord {
    SessionRecord {
        session_id: new_session_id(),
        ust_hash: random_hash(),
        user_id: user_id.clone(),
        creation_time: at_us(0),
        expiration_time: expiration,
        abs_expiration_time: Some(at(86_400)),
        epoch: 3,
        remote_addr: "10.0.0.1,2001:db8::1".to_owned(),
        user_agent: Some("Mözilla/5.0 (X11; Linux) ☃".to_owned()),
        current_app: "CRM".to_owned(),
        auth_type: "default".to_owned(),
        auth_principal: "zoë".to_owned(),
        ext_session_id: String::new(),
        history: vec![history_entry(1), history_entry(2)],
    }
}

fn history_entry(idx: u32) -> HistoryEntry {
    HistoryEntry {
        remote_addr: format!("10.0.0.{idx}"),
        user_agent: if idx.is_multiple_of(2) { None } else { Some(format!("agent ü {idx}")) },
        timestamp_utc: at_us(i64::from(idx) * 1_000_001),
        ctx_source: "renew".to_owned(),
        idx,
    }
}

/// A fresh, unaccessed PRT of `user_id` expiring at `expiration`.
fn prt_record(user_id: &UserId, expiration: Timestamp) -> PrtRecord {
    PrtRecord {
        token_hash: random_hash(),
        user_id: user_id.clone(),
        creation_time: at_us(0),
        expiration_time: expiration,
        creation_ctx: r#"{"remote_addr":"10.0.0.1","user_agent":"Mözilla","current_app":"CRM"}"#.to_owned(),
        has_been_accessed: false,
        access_time: None,
        access_ctx: None,
        reset_key_hash: None,
        reset_key_exp_time: None,
        is_password_reset: false,
        password_reset_time: None,
        password_reset_ctx: None,
    }
}

/// A link of `user_id` for (`auth_type`, `auth_username`) created at `BASE + created` µs.
fn link_record(user_id: &UserId, auth_type: &str, auth_username: &str, created: i64) -> LinkedAuthRecord {
    LinkedAuthRecord {
        auth_id: new_auth_id(),
        user_id: user_id.clone(),
        auth_type: auth_type.to_owned(),
        auth_username: auth_username.to_owned(),
        is_active: true,
        creation_time: at_us(created),
        last_modified: at_us(created + 1),
    }
}

/// An attribute write without expiry.
fn attr(name: &str, value: &str) -> AttrWrite {
    AttrWrite { name: name.to_owned(), value: value.to_owned(), is_encrypted: false, expiration_time: Some(None) }
}

/// An attribute write expiring at `exp`.
fn attr_exp(name: &str, value: &str, exp: Timestamp) -> AttrWrite {
    AttrWrite { name: name.to_owned(), value: value.to_owned(), is_encrypted: false, expiration_time: Some(Some(exp)) }
}

/// Names as owned strings.
fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// Asserts `r` is `Err(Conflict { what })`.
#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(r: StoreResult<T>, what: &'static str, ctx: &str) {
    match r {
        Err(StoreError::Conflict { what: w }) => assert_eq!(w, what, "{ctx}: conflict names the wrong key"),
        other => panic!("{ctx}: expected Conflict {{ what: {what:?} }}, got {other:?}"),
    }
}

/// Asserts `r` is `Err(NotFound)`.
#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(r: StoreResult<T>, ctx: &str) {
    match r {
        Err(StoreError::NotFound) => {}
        other => panic!("{ctx}: expected NotFound, got {other:?}"),
    }
}

/// Shares the stores with spawned tasks.
fn shared(stores: &Stores) -> Arc<Stores> {
    Arc::new(stores.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_are_unique_and_grouped() {
        let mut seen = std::collections::HashSet::new();
        for c in CASES {
            assert!(seen.insert(*c), "duplicate case {c}");
            let group = c.split("::").next().unwrap();
            assert!(GROUPS.contains(&group), "{c} is in no group");
        }
        assert!(CASES.len() >= 80, "{} cases", CASES.len());
    }
}
