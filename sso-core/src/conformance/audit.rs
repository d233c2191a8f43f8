//! Audit sinks (spec/storage.md §2, group `audit`): write then query by cid, by user (actor or
//! target), by op, by outcome and by time range; pagination with `before`; retention purge; and,
//! for an SQL sink in the users database, a rolled-back transaction leaves no record while a
//! committed change carries exactly one.
//!
//! Run with [`audit_conformance_tests!`](crate::audit_conformance_tests) and a factory returning
//! an [`AuditFixture`].

use std::sync::Arc;

use serde_json::Map;

use crate::audit::{AuditQuery, AuditRecord, AuditSink, Outcome};
use crate::store::Stores;
use crate::time::Timestamp;

/// What an audit case runs on.
pub struct AuditFixture {
    /// The stores (users in the same database as the sink when `colocated`).
    pub stores: Stores,
    /// The sink under test, fresh and empty.
    pub sink: Arc<dyn AuditSink>,
    /// Whether the users store inserts records in its transactions (`UserTx::insert_audit`).
    pub colocated: bool,
    /// Whether `purge_before` deletes by age (SQL, memory). A Redis stream keeps about `maxlen`
    /// records instead (spec/audit.md §4), so its purge is only required not to fail.
    pub ages_out: bool,
}

/// Expands to one `#[tokio::test]` per audit case, named `audit::<case>`. `factory` is an
/// `async fn() -> AuditFixture`.
#[macro_export]
macro_rules! audit_conformance_tests {
    ($factory:path) => {
        async fn __sso_audit_fixture() -> $crate::conformance::audit::AuditFixture {
            $factory().await
        }
        mod audit {
            use $crate::conformance::__private::tokio as __sso_tokio;
            $crate::__audit_case!(super::__sso_audit_fixture, __sso_tokio; write_then_query, pagination_with_before, retention_purge, rolled_back_transaction_leaves_no_record, service_change_carries_one_record);
        }
    };
}

/// Implementation detail of [`audit_conformance_tests!`](crate::audit_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __audit_case {
    ($factory:path, $tokio:ident; $($case:ident),*) => {
        $(
            #[$tokio::test(flavor = "multi_thread", worker_threads = 2, crate = "self::__sso_tokio")]
            async fn $case() {
                $crate::conformance::audit::$case($factory().await).await;
            }
        )*
    };
}

/// The audit cases, as `audit::<case>`.
pub const CASES: &[&str] = &[
    "audit::write_then_query",
    "audit::pagination_with_before",
    "audit::retention_purge",
    "audit::rolled_back_transaction_leaves_no_record",
    "audit::service_change_carries_one_record",
];

/// A record of the suite (also the audit line tests' fixture).
pub(crate) fn record(
    n: u32,
    ts: Timestamp,
    cid: &str,
    op: &str,
    actor: &str,
    target: Option<&str>,
    outcome: Outcome,
) -> AuditRecord {
    // ULIDs sort by time; build them from the record time so "newest first" is by id.
    let id = ulid::Ulid::from_parts(u64::try_from(ts.as_millis()).unwrap_or(0), u128::from(n)).to_string();
    AuditRecord {
        id,
        ts: ts.to_rfc3339_micros(),
        node: "conformance".into(),
        cid: cid.into(),
        op: op.to_owned().into(),
        outcome,
        status: if outcome == Outcome::Success { "ok".into() } else { "error".into() },
        sub_status: if outcome == Outcome::Success { vec![] } else { vec!["E005001".into()] },
        reason: (outcome != Outcome::Success).then(|| "bad_password".into()),
        actor: actor.to_owned().into(),
        actor_session_id: None,
        target_user_id: target.map(str::to_owned),
        target_session_id: None,
        current_app: "CRM".into(),
        remote_addr: "10.0.0.1".into(),
        user_agent: Some("agent \r\n\u{2028}".into()),
        details: {
            let mut m = Map::new();
            m.insert("n".into(), n.into());
            m
        },
    }
}

/// A unique tag so cases never see each other's records in a shared sink.
fn tag() -> String {
    crate::ids::Cid::generate().to_string()
}

/// Times around the real clock (records are written at the time they describe, and a stream sink
/// orders by arrival), from one base per case: `clock()(secs)` is base + `secs`.
fn clock() -> impl Fn(i64) -> Timestamp {
    let base = crate::time::Clock::now(&crate::time::SystemClock);
    move |secs| base.add_secs(secs)
}

async fn query(sink: &Arc<dyn AuditSink>, q: AuditQuery) -> Vec<AuditRecord> {
    sink.query(&q)
        .await
        .unwrap_or_else(|e| panic!("query failed: {e}"))
        .unwrap_or_else(|| panic!("sink not queryable"))
        .records
}

/// Records written are found by every filter, newest first, with every field intact.
pub async fn write_then_query(f: AuditFixture) {
    let t = clock();
    let g = tag();
    let (u1, u2) = (format!("zusr1{}", &g[..8]), format!("zusr2{}", &g[..8]));
    let recs = vec![
        record(1, t(1), &format!("{g}a"), "user.login", "anonymous", Some(&u1), Outcome::Denied),
        record(2, t(2), &format!("{g}a"), "user.login", &u1, Some(&u1), Outcome::Success),
        record(3, t(3), &format!("{g}b"), "user.reset_totp_key", &u2, Some(&u1), Outcome::Success),
        record(4, t(4), &format!("{g}c"), "user.reset_totp_key", &u2, Some(&u2), Outcome::Failure),
    ];
    for r in &recs {
        f.sink.write(r).await.unwrap_or_else(|e| panic!("write failed: {e}"));
    }
    let by_cid = query(&f.sink, AuditQuery { cid: Some(format!("{g}a")), limit: 10, ..Default::default() }).await;
    assert_eq!(
        by_cid.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![recs[1].id.clone(), recs[0].id.clone()],
        "by cid, newest first"
    );
    assert_eq!(by_cid[1], recs[0], "every field round-trips");
    let by_user = query(&f.sink, AuditQuery { user_id: Some(u1.clone()), limit: 10, ..Default::default() }).await;
    assert_eq!(by_user.len(), 3, "actor or target");
    let by_op = query(
        &f.sink,
        AuditQuery {
            op: Some("user.reset_totp_key".into()),
            user_id: Some(u2.clone()),
            limit: 10,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_op.len(), 2);
    let by_outcome = query(
        &f.sink,
        AuditQuery { user_id: Some(u2.clone()), outcome: Some(Outcome::Failure), limit: 10, ..Default::default() },
    )
    .await;
    assert_eq!(by_outcome, vec![recs[3].clone()]);
    let by_time = query(
        &f.sink,
        AuditQuery { user_id: Some(u1), since: Some(t(2)), until: Some(t(3)), limit: 10, ..Default::default() },
    )
    .await;
    assert_eq!(
        by_time.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![recs[2].id.clone(), recs[1].id.clone()],
        "inclusive range"
    );
}

/// `limit` and `before` page through the records newest first; `next_before` ends the paging.
pub async fn pagination_with_before(f: AuditFixture) {
    let t = clock();
    let g = tag();
    let mut ids = Vec::new();
    for n in 0..7 {
        let r = record(n, t(100 + i64::from(n)), &g, "user.search", "anonymous", None, Outcome::Success);
        ids.push(r.id.clone());
        f.sink.write(&r).await.unwrap_or_else(|e| panic!("write failed: {e}"));
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut before = None;
    for _ in 0..5 {
        let page = f
            .sink
            .query(&AuditQuery { cid: Some(g.clone()), limit: 3, before: before.clone(), ..Default::default() })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("not queryable"));
        seen.extend(page.records.iter().map(|r| r.id.clone()));
        match page.next_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert_eq!(seen, ids, "all records, once each, newest first");
}

/// `purge_before` deletes older records and keeps newer ones.
pub async fn retention_purge(f: AuditFixture) {
    let t = clock();
    let g = tag();
    let old = record(1, t(-400 * 86_400), &g, "user.login", "anonymous", None, Outcome::Denied);
    let new = record(2, t(0), &g, "user.login", "anonymous", None, Outcome::Denied);
    for r in [&old, &new] {
        f.sink.write(r).await.unwrap_or_else(|e| panic!("write failed: {e}"));
    }
    let n = f.sink.purge_before(t(-365 * 86_400)).await.unwrap_or_else(|e| panic!("purge failed: {e}"));
    if !f.ages_out {
        return;
    }
    assert!(n >= 1, "the old record is purged (got {n})");
    let left = query(&f.sink, AuditQuery { cid: Some(g), limit: 10, ..Default::default() }).await;
    assert_eq!(left, vec![new], "newer records remain");
}

/// An SQL sink in the users database: the record inserted in a transaction that rolls back is
/// gone with it; a committed one is there.
pub async fn rolled_back_transaction_leaves_no_record(f: AuditFixture) {
    let t = clock();
    if !f.colocated {
        return;
    }
    let g = tag();
    let r = record(1, t(5), &g, "user.lock_user", "cli:t@h", None, Outcome::Success);
    let mut tx = f.stores.users.begin().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        tx.insert_audit(&r).await.unwrap_or_else(|e| panic!("{e}")),
        "a co-located sink inserts in the transaction"
    );
    drop(tx);
    assert!(
        query(&f.sink, AuditQuery { cid: Some(g.clone()), limit: 10, ..Default::default() }).await.is_empty(),
        "rolled back"
    );
    let mut tx = f.stores.users.begin().await.unwrap_or_else(|e| panic!("{e}"));
    tx.insert_audit(&r).await.unwrap_or_else(|e| panic!("{e}"));
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(query(&f.sink, AuditQuery { cid: Some(g), limit: 10, ..Default::default() }).await, vec![r]);
}

/// Through the service: a state change audited through the sink leaves exactly one record (the
/// co-located insert is not duplicated by the sink write).
pub async fn service_change_carries_one_record(f: AuditFixture) {
    let sso = crate::Sso::builder(crate::config::Config::for_tests(), f.stores.clone())
        .audit_sink(f.sink.clone())
        .build()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ctx = sso.operator_ctx(crate::ids::Cid::generate(), "conformance@host");
    let data = crate::service::NewUser {
        username: Some(format!("audited-{}", tag())),
        password: Some(crate::secret::Password::new("correct horse battery staple")),
        ..Default::default()
    };
    sso.user().create_user(&ctx, data, true).await.unwrap_or_else(|e| panic!("{e}"));
    let got = query(&f.sink, AuditQuery { cid: Some(ctx.cid.to_string()), limit: 10, ..Default::default() }).await;
    assert_eq!(got.len(), 1, "exactly one record: {got:?}");
    assert_eq!(got[0].op, "user.create_user");
    assert_eq!(got[0].outcome, Outcome::Success);
}
