//! # sso-store-sqlite
//!
//! The embedded default of `sso`: every store trait of `sso-core` over one SQLite file, with
//! `sqlx` runtime queries (no compile-time database), embedded migrations, WAL journal, foreign
//! keys on and a busy timeout. The writes of one process take turns (`writer`): transactions
//! through sqlx, starting with `BEGIN IMMEDIATE`; the single-statement writes of the login and
//! verify paths directly on the calling task. Writers of other processes (the `sso` CLI) queue
//! on the busy timeout instead of failing on a lock upgrade.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sso_core::StoreError> {
//! let store = sso_store_sqlite::SqliteStore::open("sqlite://./sso.db", &Default::default()).await?;
//! store.migrate().await?;
//! let stores = store.stores();
//! # Ok(()) }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

mod attrs;
mod audit;
mod counters;
mod decoded;
mod fast_read;
mod rows;
mod sessions;
mod users;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sso_core::StoreError;
use sso_core::store::Stores;

pub use audit::SqlAuditSink;

/// Connection settings (from `[store]` in the configuration).
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Connections in the pool.
    pub pool_max: u32,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// SQLite busy timeout.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions { pool_max: 10, connect_timeout: Duration::from_secs(5), busy_timeout: Duration::from_secs(5) }
    }
}

/// An SQLite database holding any of the stores.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    audit_table: Option<Arc<str>>,
    pool: SqlitePool,
    /// Every write of this process, one at a time (see `writer`): they queue here, in order,
    /// instead of in SQLite's busy handler, which sleeps 1, 2, 5, 10 … ms between retries
    /// (≈ 3 ms per login at two concurrent logins).
    writer: writer::Writer,
    /// Direct read-only connections for the session-verify read (file databases only).
    fast: Option<Arc<fast_read::FastReader>>,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl SqliteStore {
    /// Opens (creating if missing) the database named by a `sqlite://<path>` URL.
    pub async fn open(url: &str, opts: &SqliteOptions) -> Result<SqliteStore, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::unavailable(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(opts.busy_timeout);
        let path = connect.get_filename().to_path_buf();
        let fast = fast_read::FastReader::for_file(path.clone(), opts.busy_timeout).map(Arc::new);
        // No ping before each use: sqlx's default sends one to the connection's worker thread
        // on every acquire (a second round trip per statement), which guards against a network
        // peer that went away — a local file has none.
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(opts.pool_max.max(1))
            .acquire_timeout(opts.connect_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(rows::map_err)?;
        let sqlx_writer = if fast.is_some() {
            SqlitePoolOptions::new()
                .test_before_acquire(false)
                .max_connections(1)
                .acquire_timeout(opts.connect_timeout)
                .connect_with(connect)
                .await
                .map_err(rows::map_err)?
        } else {
            pool.clone()
        };
        let writer = writer::Writer::new(sqlx_writer, fast.is_some().then_some(path), opts.connect_timeout);
        Ok(SqliteStore { pool, writer, audit_table: None, fast })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&*self.writer.turn().await?)
            .await
            .map_err(|e| StoreError::unavailable(format!("migration failed: {e}")))
    }

    /// The versions and descriptions of migrations not yet applied.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
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
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool (graceful shutdown).
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    async fn ping_db(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(self.writer.pool()).await.map(|_| ()).map_err(rows::map_err)
    }
}
