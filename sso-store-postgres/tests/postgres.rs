//! sso-store-postgres tests against a real PostgreSQL: the sso-core conformance suite unchanged (a
//! fresh database per test), concurrency, and a server killed and restarted under the pool.
//!
//! `cargo xtask ci` starts the server and exports `DATABASE_URL`. Without it the tests fail under
//! CI (`CI_REQUIRE_SERVICES`) and are skipped elsewhere, saying so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

use std::sync::atomic::{AtomicU32, Ordering};

use sso_core::store::Stores;
use sso_store_postgres::{PgOptions, PgStore};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The admin URL, or `None` (skip) outside CI.
fn admin_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var_os("CI_REQUIRE_SERVICES").is_some() => {
            panic!("DATABASE_URL is not set but CI_REQUIRE_SERVICES is: PostgreSQL tests may not skip")
        }
        _ => {
            eprintln!("skipped: no DATABASE_URL (run `cargo xtask ci`, which starts PostgreSQL)");
            None
        }
    }
}

/// A fresh, migrated database, named after this process (see `sso_testkit::drop_ended_databases`,
/// called once per process to drop the databases of ended ones).
pub async fn fresh_store() -> Option<PgStore> {
    fresh_store_with(&PgOptions::default()).await
}

/// As [`fresh_store`], with `opts`.
pub async fn fresh_store_with(opts: &PgOptions) -> Option<PgStore> {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let admin = admin_url()?;
    SWEPT.call_once(|| sso_testkit::drop_ended_databases(&admin, "sso_t_"));
    let name = format!(
        "sso_t_{}_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst),
        sso_core::ids::Cid::generate()
    );
    let url = PgStore::create_database(&admin, &name.replace(['.', ':', '-'], "_")).await.unwrap();
    let store = PgStore::open(&url, opts).await.unwrap();
    store.migrate().await.unwrap();
    Some(store)
}

async fn fresh() -> Stores {
    match fresh_store().await {
        Some(s) => s.stores(),
        // Outside CI without a server: the memory stores keep the case meaningful but say nothing
        // about PostgreSQL; the skip was announced.
        None => sso_core::memory::stores(),
    }
}

sso_core::conformance_tests!(fresh);

mod extra {
    use std::sync::Arc;

    use sso_core::service::UserUpdate;
    use sso_core::testing::Fixture;

    use super::fresh_store;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_resets_over_a_pool_of_ten_keep_key_and_label_together() {
        let Some(store) = fresh_store().await else { return };
        let f = Arc::new(Fixture::with(store.stores(), |_| {}).await);
        let (_su, su_ust) = f.user_with_session("root-admin", true).await;
        let bob = f.create_user("bob", false).await;
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let f = f.clone();
            let (ust, bob) = (su_ust.clone(), bob.clone());
            tasks.push(tokio::spawn(async move {
                let key = sso_core::crypto::base32::encode(&[u8::try_from(i % 251).unwrap(); 10]);
                f.sso
                    .user()
                    .reset_totp_key(&f.as_user(&ust), Some(&bob), Some(&key), Some(&format!("L{key}")))
                    .await
                    .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let u = f.sso.stores().users.get_by_id(&bob).await.unwrap().unwrap();
        let ring = f.sso.key_ring();
        let aad = |field: &str| sso_core::crypto::aead::aad::user_field(bob.as_str(), field);
        let key = ring.decrypt_string(&aad("totp_key"), &u.totp_key_enc).unwrap().to_string();
        let label = ring.decrypt_string(&aad("totp_label"), &u.totp_label_enc).unwrap().to_string();
        assert_eq!(label, format!("L{key}"), "key and label from the same call");
        assert_eq!(u.totp_key_gen, 201);
        let audited = f.audit.records().iter().filter(|r| r.op == "user.reset_totp_key" && r.status == "ok").count();
        assert_eq!(audited, 200, "every call audited");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_logins_with_one_code_succeed_exactly_once() {
        let Some(store) = fresh_store().await else { return };
        let f = Arc::new(
            Fixture::with(store.stores(), |c| {
                c.throttle.enabled = false;
            })
            .await,
        );
        let id = f.create_user("alice", false).await;
        let key = sso_core::secret::TotpKey::parse("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        f.sso.user().reset_totp_key(&f.operator(), Some(&id), Some(key.expose_base32()), None).await.unwrap();
        let upd = UserUpdate { is_totp_enabled: Some(Some(true)), ..Default::default() };
        f.sso.user().update_user_by_id(&f.operator(), id.as_str(), upd).await.unwrap();
        let code = f.code_now(&key, 0);
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let f = f.clone();
            let code = code.clone();
            tasks.push(tokio::spawn(async move { f.login("alice", Some(&code)).await.is_ok() }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        assert_eq!(ok, 1, "replay protection: exactly one of 200 concurrent logins with one code");
    }
}

mod outage {
    use sso_core::testing::Fixture;
    use sso_core::{Sso, SsoError};
    use sso_store_postgres::{PgOptions, PgStore};

    /// A private server (this test kills it), so it runs even without `DATABASE_URL` when the
    /// binaries are present; under CI it must run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_server_gives_unavailable_then_the_pool_recovers() {
        let mut pg = match sso_testkit::PgServer::start_durable() {
            Ok(pg) => pg,
            Err(e) if std::env::var_os("CI_REQUIRE_SERVICES").is_none() => {
                eprintln!("skipped: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let opts = PgOptions { connect_timeout: std::time::Duration::from_secs(2), ..Default::default() };
        let store = PgStore::open(&pg.url("postgres"), &opts).await.unwrap();
        store.migrate().await.unwrap();
        let f = Fixture::with(store.stores(), |_| {}).await;
        let (_id, ust) = f.user_with_session("alice", false).await;
        let sso: &Sso = &f.sso;
        sso.user().get_current_user(&f.as_user(&ust), false).await.unwrap();
        pg.stop_immediate().unwrap();
        for _ in 0..3 {
            let e = sso.user().get_current_user(&f.as_user(&ust), false).await.unwrap_err();
            assert!(matches!(e, SsoError::Unavailable { .. }), "{e:?}");
            let e = f.login("alice", None).await.unwrap_err();
            assert!(matches!(e, SsoError::Unavailable { .. }), "{e:?}");
        }
        pg.start_again().unwrap();
        // Each connection that died with the server fails the one statement that finds it so
        // (a connection used in the last 500 ms is not pinged first); reads (the read lane) and
        // writes (the pool) have their own connections.
        let mut recovered = false;
        for _ in 0..50 {
            if sso.user().get_current_user(&f.as_user(&ust), false).await.is_ok()
                && f.login("alice", None).await.is_ok()
            {
                recovered = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(recovered, "the pool and the read lane reconnect without restarting sso");
        f.login("alice", None).await.unwrap();
    }
}

mod sinks {
    use std::sync::Arc;

    use sso_core::conformance::audit::AuditFixture;

    async fn fresh() -> AuditFixture {
        match super::fresh_store().await {
            Some(store) => {
                let store = store.with_audit_table("sso_audit");
                let sink = sso_store_postgres::SqlAuditSink::open(store.clone(), "sso_audit", true).await.unwrap();
                AuditFixture { stores: store.stores(), sink: Arc::new(sink), colocated: true, ages_out: true }
            }
            None => AuditFixture {
                stores: sso_core::memory::stores(),
                sink: Arc::new(sso_core::audit::MemoryAuditSink::new()),
                colocated: false,
                ages_out: true,
            },
        }
    }

    sso_core::audit_conformance_tests!(fresh);
}

/// The read lane (`PgStore::read_one`): hot reads on connections handed back without sqlx's
/// release ping; a read that does not finish never hands its connection back.
mod lane {
    use std::time::Duration;

    use sso_core::StoreError;
    use sso_core::testing::Fixture;
    use sso_store_postgres::PgOptions;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_read_closes_its_connection_and_the_next_read_works() {
        let Some(store) = super::fresh_store().await else { return };
        let stores = store.stores();
        let f = Fixture::with(stores.clone(), |_| {}).await;
        let (_, ust) = f.user_with_session("alice", false).await;
        let sid = ust.session_id().unwrap();
        assert!(matches!(
            stores.sessions.get_with_user(&sid).await.unwrap(),
            sso_core::store::SessionLookup::Found(..)
        ));
        assert_eq!(store.read_lane_idle(), 1, "a finished read hands its connection back");

        // Another connection holds the session table: the next read waits, and is dropped.
        let mut tx = store.pool().begin().await.unwrap();
        sqlx::query("LOCK TABLE sso_session IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await.unwrap();
        let cancelled = tokio::time::timeout(Duration::from_millis(200), stores.sessions.get_with_user(&sid)).await;
        assert!(cancelled.is_err(), "the read waited for the lock");
        assert_eq!(store.read_lane_idle(), 0, "the cancelled read's connection is not handed back");
        tx.rollback().await.unwrap();

        assert!(matches!(
            stores.sessions.get_with_user(&sid).await.unwrap(),
            sso_core::store::SessionLookup::Found(..)
        ));
        assert_eq!(store.read_lane_idle(), 1);
    }

    #[tokio::test]
    async fn reads_after_close_fail_as_unavailable() {
        let Some(store) = super::fresh_store().await else { return };
        let stores = store.stores();
        let id = sso_core::ids::UserId::generate().unwrap();
        assert!(stores.users.get_by_id(&id).await.unwrap().is_none());
        store.close().await;
        assert_eq!(store.read_lane_idle(), 0);
        let e = stores.users.get_by_id(&id).await.unwrap_err();
        assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    }

    /// With one connection there is no lane: the hot reads use the pool.
    #[tokio::test]
    async fn a_one_connection_store_reads_through_the_pool() {
        let opts = PgOptions { pool_max: 1, ..PgOptions::default() };
        let Some(store) = super::fresh_store_with(&opts).await else { return };
        let f = Fixture::with(store.stores(), |_| {}).await;
        let (_, ust) = f.user_with_session("bob", false).await;
        assert!(f.sso.session().verify(&f.as_user(&ust), &ust).await.unwrap());
        assert_eq!(store.read_lane_idle(), 0);
    }
}
