//! # sso-store-redis
//!
//! How `sso` scales out: sessions, session attributes and throttle/replay counters in Redis or
//! Redis Cluster, shared by every `sso serve` node (spec/storage.md §4). **It does not hold users**:
//! pair it with a SQL users store (`store.users = "postgres://…"`, `store.sessions = "redis://…"`).
//!
//! Key layout (`P` = `store.redis_prefix`; braces are Cluster hash tags, so keys that change together
//! share a slot):
//!
//! | Key | Type | Content |
//! |---|---|---|
//! | `P{<session_id>}:s` | hash | the session record; TTL = its expiration |
//! | `P{<session_id>}:a` | hash | attribute name → JSON; TTL = the session's |
//! | `P{<user_id>}:sx` | sorted set | the user's session ids by expiration (ms) |
//! | `P{<counter key>}` | hash / string | throttle counter (`n`, `t`, `x`) or TOTP replay marker (`step:expiry`) |
//!
//! Every multi-field change is one Lua script on one slot. The record and the per-user index live
//! in different slots and are kept consistent by order (index first on create, record first on
//! delete); a dangling index member is pruned on the next list. Revoke-all never depends on the
//! index: it is guaranteed by the user's epoch in the users store.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

mod attrs;
mod audit;
mod conn;
mod counters;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

pub use audit::RedisAuditSink;
use conn::Conn;
use sso_core::StoreError;
use sso_core::store::Stores;

/// Connection settings (from `[store]`).
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Prefix of every key (`store.redis_prefix`).
    pub prefix: String,
    /// Connection attempt limit.
    pub connect_timeout: Duration,
    /// Per-command limit (`store.op_timeout_ms`).
    pub op_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: "sso:".into(),
            connect_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_secs(5),
        }
    }
}

/// Sessions, session attributes and counters in Redis.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    opts: RedisOptions,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.opts.prefix).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `redis://…` or `redis+cluster://h1:p,h2:p,…`.
    pub async fn open(url: &str, opts: RedisOptions) -> Result<RedisStore, StoreError> {
        let conn = Conn::open(url, opts.connect_timeout, opts.op_timeout).await?;
        Ok(RedisStore { conn, opts })
    }

    /// Replaces the session, session-attribute and counter stores of `stores` with this one
    /// (users stay where they are: Redis holds no users).
    pub fn apply(&self, stores: &mut Stores) {
        let s = Arc::new(self.clone());
        stores.sessions = s.clone();
        stores.session_attrs = s.clone();
        stores.counters = s;
    }

    pub(crate) fn key(&self, tag: &str, suffix: &str) -> String {
        format!("{}{{{tag}}}{suffix}", self.opts.prefix)
    }

    pub(crate) fn op_timeout(&self) -> Duration {
        self.opts.op_timeout
    }

    pub(crate) async fn ping_redis(&self) -> Result<(), StoreError> {
        self.conn.cmd::<String>(&redis::cmd("PING"), self.opts.op_timeout).await.map(|_| ())
    }
}

/// Microseconds to whole milliseconds, rounded up (key expiry).
pub(crate) fn ms_ceil(us: i64) -> i64 {
    us.div_euclid(1000) + i64::from(us.rem_euclid(1000) != 0)
}

/// The real clock in milliseconds (Redis TTLs run on it).
pub(crate) fn real_now_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
