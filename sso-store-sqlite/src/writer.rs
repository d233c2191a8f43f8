//! This process's writes to one SQLite database: one at a time, in the order they asked.
//!
//! SQLite lets one connection write at a time; a second writer of the same process would meet
//! the busy handler, which sleeps 1, 2, 5, 10 … ms between retries. So every write of the
//! process first takes its [`Turn`], and then runs either
//! - through sqlx's writer connection (transactions, migrations, bulk deletes), or
//! - for the single-statement writes of the login and verify paths (throttle counters, TOTP
//!   replay markers, session create/extend/delete), directly on the calling task over a
//!   `rusqlite` connection to the same file ([`Writer::direct`]).
//!
//! Why the direct path: sqlx runs each statement on its connection's worker thread and, when the
//! pool gets the connection back, pings that thread once more. That is two hand-offs to another
//! thread and two wake-ups back per statement; with every core hashing passwords, each wake-up
//! waited ≈ 0.2–0.6 ms for a CPU (`perf sched latency` of the login benchmark). A point write of
//! cached pages in WAL mode, without `fsync` at commit (`synchronous = NORMAL`), costs tens of
//! microseconds, so it runs where it is asked for.
//!
//! The direct connection never checkpoints by itself (`wal_autocheckpoint = 0`): a checkpoint
//! `fsync`s, which must not happen on a runtime worker. Every [`CHECKPOINT_EVERY`] direct writes
//! a task runs a passive checkpoint through sqlx's connection instead, on its worker thread.
//! Other processes (the `sso` CLI) still meet the busy timeout. In-memory databases, which
//! another connection cannot see, use sqlx for every write.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sqlx::SqlitePool;
use sso_core::StoreError;
use sso_store_sql::Val;
use tokio::sync::OwnedMutexGuard;

use crate::fast_read::map_err;

/// Direct writes between two checkpoints (each adds a few pages to the WAL; SQLite's own
/// default is a checkpoint at 1000 pages).
const CHECKPOINT_EVERY: u32 = 256;

/// The writes of one process to one database.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    /// sqlx's connection for writes (for in-memory databases: the read pool).
    pool: SqlitePool,
    /// Whose turn it is to write.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// The connection for single-statement writes on the calling task (file databases).
    direct: Option<Arc<Direct>>,
    /// How long a write waits for its turn (`store.connect_timeout`, as sqlx waits for a
    /// connection): a turn never awaited back fails the writes behind it instead of hanging them.
    wait: Duration,
}

/// The write turn, held while a write runs; dereferences to sqlx's writer pool, so a statement
/// runs with `.execute(&*writer.turn().await)` and the turn ends with the statement.
pub(crate) struct Turn {
    pool: SqlitePool,
    _turn: OwnedMutexGuard<()>,
}

impl Deref for Turn {
    type Target = SqlitePool;

    fn deref(&self) -> &SqlitePool {
        &self.pool
    }
}

/// A read-write `rusqlite` connection, opened on first use.
#[derive(Debug)]
struct Direct {
    path: PathBuf,
    busy: Duration,
    conn: Mutex<Option<Connection>>,
    /// Direct writes since the last checkpoint was started.
    since_checkpoint: AtomicU32,
}

impl Writer {
    /// A writer over sqlx's `pool`, with a direct connection to `path` when it is given; a write
    /// waits at most `wait` for its turn and `busy` for another process's write.
    pub(crate) fn new(pool: SqlitePool, path: Option<PathBuf>, wait: Duration, busy: Duration) -> Writer {
        let direct = path
            .map(|path| Arc::new(Direct { path, busy, conn: Mutex::new(None), since_checkpoint: AtomicU32::new(0) }));
        Writer { pool, turn: Arc::new(tokio::sync::Mutex::new(())), direct, wait }
    }

    /// Waits for this process's turn to write through sqlx.
    pub(crate) async fn turn(&self) -> Result<Turn, StoreError> {
        Ok(Turn { pool: self.pool.clone(), _turn: self.wait_turn().await? })
    }

    async fn wait_turn(&self) -> Result<OwnedMutexGuard<()>, StoreError> {
        tokio::time::timeout(self.wait, self.turn.clone().lock_owned())
            .await
            .map_err(|_| StoreError::unavailable("sqlite: timed out waiting for this process's write turn"))
    }

    /// sqlx's writer pool, for what is not a write of the data (closing, a health ping).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Runs one write on the calling task over the direct connection, in turn; `None` when the
    /// database has none (in memory): the caller then writes through sqlx.
    ///
    /// `rusqlite` binds by position, sqlx by the number in `$N`. A statement written for both
    /// numbers its parameters `?N` (SQLite's own numbering) or uses `$1, $2, …` in order of first
    /// appearance, as the generated inserts of `sso-store-sql` do.
    pub(crate) async fn direct<T>(
        &self,
        write: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Option<Result<T, StoreError>> {
        let direct = self.direct.as_ref()?;
        let turn = match self.wait_turn().await {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        };
        let out = direct.run(write);
        if direct.since_checkpoint.fetch_add(1, Ordering::Relaxed) + 1 >= CHECKPOINT_EVERY {
            direct.since_checkpoint.store(0, Ordering::Relaxed);
            self.checkpoint_later();
        }
        drop(turn);
        Some(out)
    }

    /// Starts a passive checkpoint through sqlx's connection (its worker thread does the
    /// `fsync`s), in turn. Outside a runtime there is nothing to run it on; the next sqlx
    /// commit's automatic checkpoint does it then.
    fn checkpoint_later(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let (pool, turn) = (self.pool.clone(), self.turn.clone());
        rt.spawn(async move {
            let _turn = turn.lock_owned().await;
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        });
    }
}

impl Direct {
    /// Runs `write` on the connection (opened first if needed). A connection that failed is
    /// dropped and opened afresh next time.
    fn run<T>(&self, write: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let mut slot = self.conn.lock().map_err(|_| StoreError::unavailable("sqlite: direct writer poisoned"))?;
        let conn = match slot.take() {
            Some(c) => c,
            None => self.open().map_err(map_err)?,
        };
        match write(&conn) {
            Ok(v) => {
                *slot = Some(conn);
                Ok(v)
            }
            Err(e) => {
                // A constraint or a busy database leaves the connection sound; anything else
                // (I/O, corruption) gets a fresh one.
                if matches!(&e, rusqlite::Error::SqliteFailure(f, _)
                    if matches!(f.code, rusqlite::ErrorCode::ConstraintViolation
                        | rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
                {
                    *slot = Some(conn);
                }
                Err(map_err(e))
            }
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(self.busy)?;
        // The settings sqlx's connections have (WAL is a property of the file), and no
        // automatic checkpoint (see the module documentation).
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;")?;
        Ok(conn)
    }
}

/// A bound value in `rusqlite`'s types: SQLite's representation of [`Val`] (times as Unix
/// microseconds, booleans as 0/1, JSON as text), the same as `rows::bind` gives sqlx.
pub(crate) fn value(v: Val) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match v {
        Val::Text(Some(t)) | Val::Json(Some(t)) => Value::Text(t),
        Val::Int(Some(i)) => Value::Integer(i),
        Val::Bool(Some(b)) => Value::Integer(i64::from(b)),
        Val::Ts(Some(t)) => Value::Integer(t.as_micros()),
        Val::Blob(Some(b)) => Value::Blob(b),
        Val::Text(None) | Val::Json(None) | Val::Int(None) | Val::Bool(None) | Val::Ts(None) | Val::Blob(None) => {
            Value::Null
        }
    }
}
