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
