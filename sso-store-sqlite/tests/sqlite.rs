//! sso-store-sqlite tests: the sso-core conformance suite, unchanged, plus SQLite specifics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

use sso_core::store::Stores;
use sso_core::testing::Fixture;
use sso_store_sqlite::{SqliteOptions, SqliteStore};

/// Where this process keeps its databases: `<tmp>/sso-sqlite-tests/<pid>`.
///
/// A store outlives the function that opens it (the conformance suite takes only `Stores`), so
/// no `TempDir` guard can remove its file, and nextest ends each test's process without running
/// destructors. Instead, the first call in a process removes the folders of processes that have
/// ended (`sso_testkit::process_scratch_dir`), so finished runs leave nothing behind for long.
fn process_dir() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| sso_testkit::process_scratch_dir("sso-sqlite-tests").unwrap()).clone()
}

/// A fresh database in this process's folder (see [`process_dir`]), and its file.
async fn fresh_store_at() -> (SqliteStore, std::path::PathBuf) {
    let path = tempfile::tempdir_in(process_dir()).unwrap().keep().join("sso.db");
    let store = SqliteStore::open(&format!("sqlite://{}", path.display()), &SqliteOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    (store, path)
}

/// A fresh database in this process's folder.
async fn fresh_store() -> SqliteStore {
    fresh_store_at().await.0
}

/// A fresh database with user `name` logged in once: the store, the user's id and the session.
async fn store_with_session(name: &str) -> (SqliteStore, sso_core::ids::UserId, sso_core::model::SessionRecord) {
    let store = fresh_store().await;
    let stores = store.stores();
    let f = Fixture::with(stores.clone(), |_| {}).await;
    let (id, ust) = f.user_with_session(name, false).await;
    let session = stores.sessions.get(&ust.session_id().unwrap()).await.unwrap().unwrap();
    (store, id, session)
}

/// The time of the store-level writes below (any fixed time does).
fn at() -> sso_core::time::Timestamp {
    sso_core::time::Timestamp::from_secs(4_000_000_000)
}

/// A throttle counter's lifetime in the tests below.
const TTL: std::time::Duration = std::time::Duration::from_secs(60);

async fn fresh() -> Stores {
    fresh_store().await.stores()
}

sso_core::conformance_tests!(fresh);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_login_and_reset_over_sqlite() {
    let f = Fixture::with(fresh().await, |_| {}).await;
    let (id, ust) = f.user_with_session("alice", false).await;
    let key = f.sso.user().reset_totp_key(&f.as_user(&ust), None, None, Some("Phone")).await.unwrap().unwrap();
    let view = f.sso.user().get_current_user(&f.as_user(&ust), true).await.unwrap();
    assert_eq!(view.totp_label, "Phone");
    assert_eq!(view.admin.unwrap().user_id, id);
    assert_eq!(key.expose_base32().len(), 32);
}

/// An in-memory database has no file a second connection could read: `get_with_user` and the
/// session pipeline take the sqlx path there, with the same answers.
#[tokio::test]
async fn in_memory_database_joins_through_sqlx() {
    let opts = SqliteOptions { pool_max: 1, ..SqliteOptions::default() };
    let store = SqliteStore::open("sqlite::memory:", &opts).await.unwrap();
    store.migrate().await.unwrap();
    sso_core::conformance::sessions::get_with_user(store.stores()).await;
    let f = Fixture::with(store.stores(), |_| {}).await;
    let (_, ust) = f.user_with_session("mem", false).await;
    assert!(f.sso.session().verify(&f.as_user(&ust), &ust).await.unwrap());
}

/// An in-memory database has no file for the direct writer either: the session and counter
/// groups (whose writes a file database runs on the calling task) pass through sqlx too.
mod in_memory {
    use sso_core::store::Stores;
    use sso_store_sqlite::{SqliteOptions, SqliteStore};

    async fn fresh() -> Stores {
        let store = SqliteStore::open("sqlite::memory:", &SqliteOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        store.stores()
    }

    sso_core::conformance_tests!(fresh; sessions, counters);
}

/// Writes on the calling task (counters, sessions) and sqlx transactions (users) take turns:
/// mixed at once, none meets SQLite's busy handler or fails, and each sees the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writes_and_transactions_take_turns() {
    use sso_core::model::UserPatch;
    let (store, id, _) = store_with_session("turns").await;
    let stores = store.stores();
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let s = stores.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let mut tx = s.users.begin().await.unwrap();
                let patch = UserPatch { display_name: Some(Some(format!("n{i}"))), ..Default::default() };
                tx.update_user(&id, &patch).await.unwrap();
                tx.commit().await.unwrap();
            } else {
                s.counters.record_failure("user:turns", at(), TTL).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (n, _) = stores.counters.get("user:turns", at()).await.unwrap().unwrap();
    assert_eq!(n, 20);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
}

/// A dropped transaction's rollback waits on sqlx's worker thread while the database is still
/// locked: the writes right after it (a counter, a session) go through sqlx,
/// after the rollback, instead of failing or sleeping in SQLite's busy handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_right_after_a_dropped_transaction() {
    use sso_core::model::UserPatch;
    let (store, id, session) = store_with_session("dropped").await;
    let stores = store.stores();
    for i in 0..20 {
        let mut tx = stores.users.begin().await.unwrap();
        let patch = UserPatch { display_name: Some(Some(format!("never {i}"))), ..Default::default() };
        tx.update_user(&id, &patch).await.unwrap();
        drop(tx);
        stores.counters.record_failure("user:dropped", at(), TTL).await.unwrap();
        let mut again = session.clone();
        let fresh_ust = sso_core::secret::Ust::generate().unwrap();
        (again.session_id, again.ust_hash) = (fresh_ust.session_id().unwrap(), fresh_ust.hash());
        stores.sessions.create(&again).await.unwrap();
    }
    let user = stores.users.get_by_id(&id).await.unwrap().unwrap();
    assert_ne!(user.display_name.as_deref(), Some("never 19"), "the dropped transactions were rolled back");
    assert_eq!(stores.counters.get("user:dropped", at()).await.unwrap().unwrap().0, 20);
    assert_eq!(stores.sessions.list_by_user(&id).await.unwrap().len(), 21);
}

/// Another process's write transaction locks the database: a write waits for it on sqlx's
/// worker thread, not on the runtime (a single-threaded runtime keeps running meanwhile), and
/// lands when the lock goes.
#[tokio::test(flavor = "current_thread")]
async fn another_process_lock_never_blocks_the_runtime() {
    let (store, path) = fresh_store_at().await;
    let stores = store.stores();
    // Open the direct connection first, then lock the file from a connection of "another process".
    stores.counters.reset("ip:warm").await.unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE; INSERT INTO sso_counter (key, value, last_at, prev_at, expires_at) VALUES ('other', 1, 0, NULL, 0);").unwrap();
    let write = tokio::spawn({
        let stores = stores.clone();
        async move { stores.counters.record_failure("ip:locked", at(), TTL).await }
    });
    let started = std::time::Instant::now();
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "the runtime stalled: {:?}", started.elapsed());
    assert!(!write.is_finished(), "the write waits for the lock");
    other.execute_batch("COMMIT").unwrap();
    assert_eq!(write.await.unwrap().unwrap().0, 1);
}

/// The direct path's errors and effects are the sqlx path's: a taken session id is a conflict;
/// deleting a session deletes its attributes (foreign keys on); a closed store writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_write_errors_cascades_and_close() {
    use sso_core::StoreError;
    use sso_core::model::{AttrScope, AttrWrite};
    let (store, _, session) = store_with_session("errs").await;
    let stores = store.stores();
    assert_eq!(stores.sessions.create(&session).await, Err(StoreError::Conflict { what: "session_id" }));
    let now = at();
    let attr = AttrWrite { name: "a".into(), value: "1".into(), is_encrypted: false, expiration_time: Some(None) };
    let sid = session.session_id.as_str();
    stores.session_attrs.create_many(AttrScope::Session, sid, &[attr], now).await.unwrap();
    assert_eq!(stores.session_attrs.names(AttrScope::Session, sid, now).await.unwrap(), vec!["a".to_owned()]);
    assert!(stores.sessions.delete(&session.session_id).await.unwrap());
    assert!(stores.session_attrs.names(AttrScope::Session, sid, now).await.unwrap().is_empty(), "cascaded");
    store.close().await;
    assert!(stores.counters.reset("ip:closed").await.is_err(), "a closed store writes nothing");
    assert!(stores.sessions.delete(&session.session_id).await.is_err());
}

/// The direct writer never checkpoints on the calling task; the checkpoints it starts through
/// sqlx keep the WAL from growing with every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writes_keep_the_wal_bounded() {
    let (store, path) = fresh_store_at().await;
    let stores = store.stores();
    for i in 0..4000 {
        stores.counters.record_failure(&format!("ip:{i}"), at(), TTL).await.unwrap();
    }
    let wal = std::fs::metadata(path.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0);
    // Each write adds 2–3 pages of 4 KiB: ≈ 40 MiB without checkpoints.
    assert!(wal < 12 << 20, "WAL is {wal} bytes");
    assert!(stores.counters.get("ip:3999", at()).await.unwrap().is_some());
}

#[tokio::test]
async fn migrations_are_idempotent_and_listed() {
    let s = fresh_store().await;
    s.migrate().await.unwrap();
    assert!(s.pending_migrations().await.unwrap().is_empty());
}

mod sinks {
    use std::sync::Arc;

    use sso_core::conformance::audit::AuditFixture;

    /// The sql sink in the users database (the embedded default): records share transactions.
    async fn fresh() -> AuditFixture {
        let store = super::fresh_store().await.with_audit_table("sso_audit");
        let sink = sso_store_sqlite::SqlAuditSink::open(store.clone(), "sso_audit", true).await.unwrap();
        AuditFixture { stores: store.stores(), sink: Arc::new(sink), colocated: true, ages_out: true }
    }

    sso_core::audit_conformance_tests!(fresh);
}

mod audit_failure {
    use std::sync::Arc;

    use sso_core::config::{Config, OnFailure};
    use sso_core::ids::Cid;
    use sso_core::secret::Password;
    use sso_core::service::NewUser;
    use sso_core::{Sso, SsoError};

    async fn sso(on_failure: OnFailure) -> (Sso, sso_store_sqlite::SqliteStore) {
        let store = super::fresh_store().await.with_audit_table("sso_audit");
        let sink = sso_store_sqlite::SqlAuditSink::open(store.clone(), "sso_audit", true).await.unwrap();
        let mut cfg = Config::for_tests();
        cfg.audit.on_failure = on_failure;
        let sso = Sso::builder(cfg, store.stores()).audit_sink(Arc::new(sink)).build().await.unwrap();
        // The audit table becomes unwritable (as for an INSERT-denied role or a full disk).
        sqlx::query("CREATE TRIGGER no_audit BEFORE INSERT ON sso_audit BEGIN SELECT RAISE(ABORT, 'read-only'); END")
            .execute(store.pool())
            .await
            .unwrap();
        (sso, store)
    }

    fn new_user(name: &str) -> NewUser {
        NewUser {
            username: Some(name.into()),
            password: Some(Password::new("correct horse battery staple")),
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unwritable_audit_table_fails_closed_and_changes_nothing() {
        let (sso, _store) = sso(OnFailure::Fail).await;
        let ctx = sso.operator_ctx(Cid::generate(), "t@h");
        let e = sso.user().create_user(&ctx, new_user("alice"), true).await.unwrap_err();
        assert_eq!(e, SsoError::Unavailable { backend: "audit" });
        assert!(sso.stores().users.get_by_username("alice").await.unwrap().is_none(), "the change was rolled back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_failure_log_lets_operations_succeed() {
        let (sso, _store) = sso(OnFailure::Log).await;
        let ctx = sso.operator_ctx(Cid::generate(), "t@h");
        sso.user().create_user(&ctx, new_user("alice"), true).await.unwrap();
        assert!(sso.stores().users.get_by_username("alice").await.unwrap().is_some());
        assert!(sso.render_metrics().contains("sso_audit_failures_total "), "{}", sso.render_metrics());
        let failures: u64 = sso
            .render_metrics()
            .lines()
            .find_map(|l| l.strip_prefix("sso_audit_failures_total "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(failures >= 1, "the failure is counted");
    }
}
