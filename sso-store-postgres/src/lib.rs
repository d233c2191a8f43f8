//! # sso-store-postgres
//!
//! Every store trait of `sso-core` over PostgreSQL: `sqlx` runtime queries on a `PgPool`, embedded
//! migrations (`sso migrate` or at start-up), uniqueness and atomicity in the database (unique
//! constraints, `INSERT … ON CONFLICT`, single-statement compare-and-set for counters and the TOTP
//! replay marker, transactions for multi-row changes, advisory locks for all-or-nothing attribute
//! batches). Column lists, row mapping and the search filter are shared with SQLite through
//! `sso-store-sql`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

mod attrs;
mod audit;
mod counters;
mod lane;
mod rows;
mod sessions;
mod users;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sso_core::StoreError;
use sso_core::store::Stores;

pub use audit::SqlAuditSink;

/// A pooled connection idle longer than this is pinged before use (see [`PgStore::open`]).
pub(crate) const PING_IF_IDLE: std::time::Duration = std::time::Duration::from_millis(500);

/// Connection settings (from `[store]` in the configuration).
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections to the database in all: from 2 up, half of them (rounded down) serve the hot
    /// single-statement reads (the read lane), the rest everything else.
    pub pool_max: u32,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// Statement timeout (`statement_timeout`).
    pub op_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions { pool_max: 10, connect_timeout: Duration::from_secs(5), op_timeout: Duration::from_secs(5) }
    }
}

/// A PostgreSQL database holding any of the stores.
#[derive(Debug, Clone)]
pub struct PgStore {
    audit_table: Option<Arc<str>>,
    pool: PgPool,
    /// The hot reads' connections (`None` with a one-connection pool: they use the pool).
    lane: Option<Arc<lane::Lane>>,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl PgStore {
    /// Connects to a `postgres://` URL (any libpq parameter) and checks the connection.
    pub async fn open(url: &str, opts: &PgOptions) -> Result<PgStore, StoreError> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::unavailable(format!("invalid PostgreSQL URL: {e}")))?
            .options([("statement_timeout", opts.op_timeout.as_millis().to_string())]);
        let lane_size = opts.pool_max / 2;
        let lane = (lane_size > 0)
            .then(|| Arc::new(lane::Lane::new(connect.clone(), lane_size as usize, opts.connect_timeout)));
        // A connection is pinged before use only when it sat idle longer than PING_IF_IDLE
        // (HikariCP's rule), not on every acquire as sqlx does by default: that ping is a round
        // trip to the server per statement, and a connection used moments ago is alive.
        let pool = PgPoolOptions::new()
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IF_IDLE {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .max_connections(opts.pool_max.saturating_sub(lane_size).max(1))
            .acquire_timeout(opts.connect_timeout)
            .connect_with(connect)
            .await
            .map_err(rows::map_err)?;
        Ok(PgStore { pool, audit_table: None, lane })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(|e| StoreError::unavailable(format!("migration failed: {e}")))
    }

    /// The versions and descriptions of migrations not yet applied.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&self.pool)
            .await
            .unwrap_or_default();
        Ok(MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect())
    }

    /// Every store trait over this database.
    pub fn stores(&self) -> Stores {
        let s = Arc::new(self.clone());
        Stores {
            users: s.clone(),
            resets: s.clone(),
            links: s.clone(),
            user_attrs: s.clone(),
            sessions: s.clone(),
            session_attrs: s.clone(),
            counters: s,
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool and the read lane (graceful shutdown).
    pub async fn close(&self) {
        if let Some(lane) = &self.lane {
            lane.close().await;
        }
        self.pool.close().await;
    }

    /// Runs a hot single-row read on the read lane (the pool without one).
    pub(crate) async fn read_one(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Option<sqlx::postgres::PgRow>, sqlx::Error> {
        match &self.lane {
            Some(lane) => lane.fetch_optional(query).await,
            None => query.fetch_optional(&self.pool).await,
        }
    }

    /// Connections of the read lane waiting for a read (tests: a cancelled read must not leave
    /// its connection there).
    #[doc(hidden)]
    pub fn read_lane_idle(&self) -> usize {
        self.lane.as_ref().map_or(0, |l| l.idle_count())
    }

    /// Creates a fresh, empty database next to the one `admin_url` names and returns its URL
    /// (tests: a database per test).
    pub async fn create_database(admin_url: &str, name: &str) -> Result<String, StoreError> {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::unavailable("database names are [A-Za-z0-9_]"));
        }
        let pool = PgPoolOptions::new().max_connections(1).connect(admin_url).await.map_err(rows::map_err)?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&pool)
            .await
            .map_err(rows::map_err)?;
        pool.close().await;
        let base = admin_url.split('?').next().unwrap_or(admin_url);
        let (prefix, _) = base.rsplit_once('/').ok_or_else(|| StoreError::unavailable("URL without a database"))?;
        Ok(format!("{prefix}/{name}"))
    }

    async fn ping_db(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(rows::map_err)
    }
}
