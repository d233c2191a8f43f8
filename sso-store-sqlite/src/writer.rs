//! This process's writes to one SQLite database: one at a time, in the order they asked.
//!
//! SQLite lets one connection write at a time; a second writer of the same process would meet
//! the busy handler, which sleeps 1, 2, 5, 10 … ms between retries. So every write of the
//! process first takes its [`Turn`], and then runs either
//! - through sqlx's writer connection (transactions, migrations, bulk deletes), or
//! - for the single-statement writes of the login and verify paths (throttle counters, TOTP
//!   replay markers, session create/extend/delete, the `sql` audit sink's record), directly on
//!   the calling task over a `rusqlite` connection to the same file ([`Writer::direct`]).
//!
//! Why the direct path: sqlx runs each statement on its connection's worker thread and, when the
//! pool gets the connection back, pings that thread once more. That is two hand-offs to another
//! thread and two wake-ups back per statement; with every core hashing passwords, each wake-up
//! waited ≈ 0.2–0.6 ms for a CPU (`perf sched latency` of the login benchmark). A point write of
//! cached pages in WAL mode, without `fsync` at commit (`synchronous = NORMAL`), costs tens of
//! microseconds, so it runs where it is asked for.
//!
//! Nothing on the direct path sleeps on a runtime worker, and it `fsync`s there only once per
//! checkpoint cycle (the first write after the WAL restarts syncs the new WAL header):
//! - it has no busy timeout: a write that finds the database locked (by another process such as
//!   the `sso` CLI, or by a dropped sqlx transaction whose rollback is still queued on sqlx's
//!   worker thread) is handed to sqlx, whose worker thread waits out `store.busy_timeout`;
//! - it never checkpoints by itself (`wal_autocheckpoint = 0`): every [`CHECKPOINT_EVERY`]
//!   direct writes a task runs a passive checkpoint through sqlx's connection instead.
//!
//! In-memory databases, which another connection cannot see, use sqlx for every write.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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
    /// connection): a turn never given back fails the writes behind it instead of hanging them.
    wait: Duration,
}

/// The write turn, held while a write runs; dereferences to sqlx's writer pool, so a statement
/// runs with `.execute(&*writer.turn().await?)` and the turn ends with the statement.
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

/// A read-write `rusqlite` connection, opened on first use, without a busy timeout: a write
/// that finds the database locked goes to sqlx instead of sleeping on a runtime worker.
#[derive(Debug)]
struct Direct {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
    /// Set by [`Writer::close`]: writes go to sqlx's closed pool and fail.
    closed: AtomicBool,
    /// Direct writes since the last checkpoint was started.
    since_checkpoint: AtomicU32,
}

/// What a direct write came to.
enum Outcome<T> {
    /// It ran (or failed for a reason sqlx would fail for too).
    Ran(Result<T, StoreError>),
    /// The database was locked: by another process's write, or by a dropped sqlx transaction
    /// whose rollback still waits on sqlx's worker thread. Nothing was written.
    Busy,
}

impl Writer {
    /// A writer over sqlx's `pool`, with a direct connection to `path` when it is given; a write
    /// waits at most `wait` for its turn.
    pub(crate) fn new(pool: SqlitePool, path: Option<PathBuf>, wait: Duration) -> Writer {
        let direct = path.map(|path| {
            Arc::new(Direct {
                path,
                conn: Mutex::new(None),
                closed: AtomicBool::new(false),
                since_checkpoint: AtomicU32::new(0),
            })
        });
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

    /// sqlx's writer pool, for what is not a write of the data (a health ping).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Ends the direct writes (after the one running, if any) and closes sqlx's writer.
    pub(crate) async fn close(&self) {
        let turn = self.wait_turn().await;
        if let Some(d) = &self.direct {
            d.closed.store(true, Ordering::Relaxed);
            d.lock().take();
        }
        drop(turn);
        self.pool.close().await;
    }

    /// Runs one write on the calling task over the direct connection, in turn. `None` when the
    /// database has no direct connection (in memory, closed) or was locked (see [`Outcome::Busy`]):
    /// the caller then writes through sqlx, whose worker thread waits out the busy timeout and
    /// runs after any rollback queued there.
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
        // Closed (before or while this write waited for its turn): sqlx's closed pool answers.
        if direct.closed.load(Ordering::Relaxed) {
            return None;
        }
        let out = match direct.run(write) {
            Outcome::Ran(r) => r,
            Outcome::Busy => return None,
        };
        if out.is_ok() && (direct.since_checkpoint.fetch_add(1, Ordering::Relaxed) + 1) % CHECKPOINT_EVERY == 0 {
            self.checkpoint_later();
        }
        drop(turn);
        Some(out)
    }

    /// Runs one single-statement write with `values` bound: on the calling task when it can
    /// (see [`Writer::direct`]), else through sqlx. The number of rows it changed.
    pub(crate) async fn execute(&self, sql: &str, values: Vec<Val>) -> Result<u64, StoreError> {
        let direct =
            self.direct(|c| c.prepare_cached(sql)?.execute(rusqlite::params_from_iter(values.iter().map(value))));
        if let Some(r) = direct.await {
            return r.map(|n| u64::try_from(n).unwrap_or(u64::MAX));
        }
        let q = crate::rows::bind_all(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())), values);
        Ok(q.execute(&*self.turn().await?).await.map_err(crate::rows::map_err)?.rows_affected())
    }

    /// Starts a passive checkpoint through sqlx's connection (its worker thread does the
    /// `fsync`s), in turn: writes wait for it (on the runtime, asleep), as they waited for
    /// SQLite's automatic checkpoint inside a commit. Without the turn the WAL would never
    /// restart under a steady stream of writes: it restarts only when a write begins after a
    /// checkpoint copied every frame. Outside a runtime there is nothing to run it on; the next
    /// sqlx commit's automatic checkpoint does it then.
    fn checkpoint_later(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let (pool, turn) = (self.pool.clone(), self.turn.clone());
        rt.spawn(async move {
            let _turn = turn.lock_owned().await;
            if pool.is_closed() {
                return;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        });
    }
}

impl Direct {
    /// The connection slot. A write that panicked (none does) leaves no connection behind.
    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        self.conn.lock().unwrap_or_else(|poisoned| {
            self.conn.clear_poison();
            let mut slot = poisoned.into_inner();
            *slot = None;
            slot
        })
    }

    /// Runs `write` on the connection (opened first if needed). A connection SQLite reported a
    /// failure of (other than a constraint or a lock) is dropped and opened afresh next time.
    fn run<T>(&self, write: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Outcome<T> {
        let mut slot = self.lock();
        let conn = match slot.take() {
            Some(c) => c,
            None => match self.open() {
                Ok(c) => c,
                Err(e) => return Outcome::Ran(Err(map_err(e))),
            },
        };
        let out = write(&conn);
        let (keep, outcome) = match out {
            Ok(v) => (true, Outcome::Ran(Ok(v))),
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
            {
                (true, Outcome::Busy)
            }
            Err(e) => {
                let sqlite_failed = matches!(&e, rusqlite::Error::SqliteFailure(f, _)
                    if f.code != rusqlite::ErrorCode::ConstraintViolation);
                (!sqlite_failed, Outcome::Ran(Err(map_err(e))))
            }
        };
        if keep {
            *slot = Some(conn);
        }
        outcome
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        // No busy timeout (see `Outcome::Busy`); the settings sqlx's connections have (WAL is a
        // property of the file); no automatic checkpoint (see the module documentation).
        conn.busy_timeout(Duration::ZERO)?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;")?;
        Ok(conn)
    }
}

/// A bound value in `rusqlite`'s types: SQLite's representation of [`Val`] (times as Unix
/// microseconds, booleans as 0/1, JSON as text), the same as `rows::bind` gives sqlx.
fn value(v: &Val) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match v {
        Val::Text(Some(t)) | Val::Json(Some(t)) => Value::Text(t.clone()),
        Val::Int(Some(i)) => Value::Integer(*i),
        Val::Bool(Some(b)) => Value::Integer(i64::from(*b)),
        Val::Ts(Some(t)) => Value::Integer(t.as_micros()),
        Val::Blob(Some(b)) => Value::Blob(b.clone()),
        Val::Text(None) | Val::Json(None) | Val::Int(None) | Val::Bool(None) | Val::Ts(None) | Val::Blob(None) => {
            Value::Null
        }
    }
}
