//! sso-store-redis tests against real servers: the sso-core conformance groups Redis implements
//! (sessions, session attributes, counters, and the service cases) on a single Redis and on a
//! 3-master Redis Cluster, unchanged. Users (and user attributes) stay in memory stores: Redis
//! holds none. `cargo xtask ci` starts the servers and exports `REDIS_URL` and
//! `REDIS_CLUSTER_URL`; without them the tests fail under CI and are skipped elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

use sso_core::store::Stores;
use sso_store_redis::{RedisOptions, RedisStore};

fn url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var_os("CI_REQUIRE_SERVICES").is_some() => panic!("{var} is not set but CI_REQUIRE_SERVICES is"),
        _ => {
            eprintln!("skipped: {var} is not set (cargo xtask ci starts Redis)");
            None
        }
    }
}

/// Memory users with Redis sessions, attributes and counters under a fresh key prefix.
pub async fn stores_on(var: &str) -> Option<(Stores, RedisStore)> {
    let url = url(var)?;
    let opts = RedisOptions { prefix: format!("t{}:", sso_core::ids::Cid::generate()), ..Default::default() };
    let redis = RedisStore::open(&url, opts).await.unwrap();
    let mut stores = sso_core::memory::stores();
    redis.apply(&mut stores);
    Some((stores, redis))
}

async fn fresh(var: &str) -> Stores {
    match stores_on(var).await {
        Some((s, _)) => s,
        None => sso_core::memory::stores(),
    }
}

mod single {
    async fn fresh() -> sso_core::store::Stores {
        super::fresh("REDIS_URL").await
    }
    sso_core::conformance_tests!(fresh; sessions, attrs, counters, service);
}

mod cluster {
    async fn fresh() -> sso_core::store::Stores {
        super::fresh("REDIS_CLUSTER_URL").await
    }
    sso_core::conformance_tests!(fresh; sessions, attrs, counters, service);
}

mod outage {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use sso_core::SsoError;
    use sso_core::testing::Fixture;
    use sso_store_redis::{RedisOptions, RedisStore};

    fn private_redis() -> Option<sso_testkit::RedisServer> {
        match sso_testkit::RedisServer::start() {
            Ok(r) => Some(r),
            Err(e) if std::env::var_os("CI_REQUIRE_SERVICES").is_none() => {
                eprintln!("skipped: {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// Redis killed under a bounded load of session verifies: every request gets `Unavailable`
    /// (REST 503) within the operation timeout — no panic, no hang; restarted, service resumes
    /// without restarting sso.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn killed_redis_gives_unavailable_then_service_resumes() {
        let Some(mut server) = private_redis() else { return };
        let opts = RedisOptions {
            op_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            ..Default::default()
        };
        let redis = RedisStore::open(&server.url(), opts).await.unwrap();
        let mut stores = sso_core::memory::stores();
        redis.apply(&mut stores);
        let f = Arc::new(Fixture::with(stores, |_| {}).await);
        let (_id, ust) = f.user_with_session("alice", false).await;
        f.sso.session().verify(&f.as_user(&ust), &ust).await.unwrap();
        server.stop().unwrap();
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (f, ust) = (f.clone(), ust.clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = f.sso.session().verify(&f.as_user(&ust), &ust).await;
                (r, t.elapsed())
            }));
        }
        for t in tasks {
            let (r, took) = t.await.unwrap();
            assert!(matches!(r, Err(SsoError::Unavailable { .. })), "{r:?}");
            assert!(took < Duration::from_secs(3), "bounded by the configured timeout: {took:?}");
        }
        server.start_again().unwrap();
        let mut resumed = false;
        for _ in 0..50 {
            // The session record was lost with the server (no persistence): a fresh login proves
            // the store works again through the same connection manager.
            if f.login("alice", None).await.is_ok() {
                resumed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(resumed, "service resumes without restarting sso");
    }
}

mod sinks {
    use std::sync::Arc;

    use sso_core::conformance::audit::AuditFixture;

    async fn fresh() -> AuditFixture {
        match super::stores_on("REDIS_URL").await {
            Some((stores, redis)) => {
                let stream = format!("audit-{}", sso_core::ids::Cid::generate());
                let sink = sso_store_redis::RedisAuditSink::new(redis, &stream, 100_000, true);
                AuditFixture { stores, sink: Arc::new(sink), colocated: false, ages_out: false }
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
