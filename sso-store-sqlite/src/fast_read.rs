//! Point reads on the session-verify and login paths without sqlx's worker-thread hop.
//!
//! sqlx runs every SQLite statement on a per-connection worker thread and hands rows back over a
//! channel: two thread wake-ups per query, which the profile of `POST /user/session` showed as
//! the largest cost after HTTP itself (futex, scheduler and channel frames ≈ 40 % of the server's
//! CPU). A session verify is one indexed point read of pages that are nearly always cached, so
//! it runs here directly on the calling task over a small pool of read-only `rusqlite`
//! connections to the same file (the same `libsqlite3-sys` build sqlx links). In WAL mode a
//! reader never waits for a writer, so the call stays in the microseconds; the busy timeout
//! bounds the rare wait (a WAL recovery). In-memory databases, which other connections cannot
//! see, keep the sqlx path.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sso_core::StoreError;
use sso_core::model::{SessionRecord, UserRecord};
use sso_core::time::Timestamp;
use sso_store_sql::{Half, RowRead, conflict_of};

use crate::decoded::RecordCache;

/// Statements whose column names are kept.
const COLUMN_CACHE: usize = 8;

/// Read-only connections kept for reuse (more are opened when they are all in use).
const KEEP: usize = 8;

/// A statement's text and its column names.
type StatementColumns = (&'static str, Arc<[String]>);

/// A pool of read-only connections to one SQLite file.
#[derive(Debug)]
pub(crate) struct FastReader {
    path: PathBuf,
    busy: Duration,
    idle: Mutex<Vec<Connection>>,
    /// The column names of the statements run (text, names): they are fixed for a statement and
    /// a schema, and reading them from SQLite costs a `strlen` and a UTF-8 check per column per
    /// row. A handful of constant statements use this reader.
    columns: RwLock<Vec<StatementColumns>>,
    /// Sessions decoded from rows of the joined read, reused while a row is unchanged.
    pub(crate) sessions: RecordCache<SessionRecord>,
    /// Users decoded from rows of the joined read, reused while a row is unchanged.
    pub(crate) users: RecordCache<UserRecord>,
}

impl FastReader {
    /// A reader of `path`, or `None` for an in-memory database.
    pub(crate) fn for_file(path: PathBuf, busy: Duration) -> Option<FastReader> {
        let p = path.to_string_lossy();
        if p.is_empty() || p.starts_with(":memory:") || p.starts_with("file:") || p.contains("mode=memory") {
            return None;
        }
        Some(FastReader {
            path,
            busy,
            idle: Mutex::new(Vec::new()),
            columns: RwLock::new(Vec::new()),
            sessions: RecordCache::default(),
            users: RecordCache::default(),
        })
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(map_err)?;
        conn.busy_timeout(self.busy).map_err(map_err)?;
        Ok(conn)
    }

    /// The column names of `stmt` (the statement of `sql`), from the cache when it ran before.
    fn columns(&self, sql: &'static str, stmt: &rusqlite::Statement<'_>) -> Arc<[String]> {
        if let Ok(c) = self.columns.read()
            && let Some((_, names)) = c.iter().find(|(s, names)| *s == sql && names.len() == stmt.column_count())
        {
            return names.clone();
        }
        let names: Arc<[String]> = stmt.column_names().into_iter().map(str::to_owned).collect();
        if let Ok(mut c) = self.columns.write() {
            c.retain(|(s, _)| *s != sql);
            if c.len() >= COLUMN_CACHE {
                c.clear();
            }
            c.push((sql, names.clone()));
        }
        names
    }

    /// Runs `sql` with `params` and decodes the first row, if any, with `decode` (which also
    /// gets the row's column names).
    pub(crate) fn one<T>(
        &self,
        sql: &'static str,
        params: impl rusqlite::Params,
        decode: impl FnOnce(&rusqlite::Row<'_>, &[String]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let pooled = self.idle.lock().ok().and_then(|mut v| v.pop());
        let conn = match pooled {
            Some(c) => c,
            None => self.open()?,
        };
        let out = (|| {
            let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
            let names = self.columns(sql, &stmt);
            let mut decoded = None;
            stmt.query_row(params, |row| {
                decoded = Some(decode(row, &names));
                Ok(())
            })
            .optional()
            .map_err(map_err)?;
            decoded.transpose()
        })();
        if let Ok(mut v) = self.idle.lock()
            && v.len() < KEEP
        {
            v.push(conn);
        }
        out
    }
}

/// A `rusqlite` error as a store error, as `rows::map_err` maps sqlx's: a unique violation is a
/// `Conflict` (naming the key), a foreign-key violation or a missing row `NotFound`; another
/// constraint, a value that does not decode or a damaged file corrupt data; anything else (a
/// lock, I/O) an unavailable database.
pub(crate) fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi;
    match &e {
        rusqlite::Error::SqliteFailure(f, msg) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            match f.extended_code {
                ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                    StoreError::Conflict { what: conflict_of(msg.as_deref().unwrap_or_default()) }
                }
                ffi::SQLITE_CONSTRAINT_FOREIGNKEY => StoreError::NotFound,
                _ => StoreError::corrupt(format!("sqlite: {e}")),
            }
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) =>
        {
            StoreError::corrupt(format!("sqlite: {e}"))
        }
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::corrupt(format!("sqlite: {e}")),
        _ => StoreError::unavailable(format!("sqlite: {e}")),
    }
}

/// One table's half of a joined `rusqlite` row (see [`sso_store_sql::Half`]).
pub(crate) struct RowHalf<'a, 'r> {
    row: &'a rusqlite::Row<'r>,
    half: Half<'a>,
}

impl<'a, 'r> RowHalf<'a, 'r> {
    /// The session's and the user's halves of a joined row.
    pub(crate) fn split(
        row: &'a rusqlite::Row<'r>,
        names: &'a [String],
    ) -> Result<(RowHalf<'a, 'r>, RowHalf<'a, 'r>), StoreError> {
        let (a, b) = Half::split(names.iter().map(String::as_str).collect())?;
        Ok((RowHalf { row, half: a }, RowHalf { row, half: b }))
    }

    /// The row indexes of this half's columns.
    pub(crate) fn range(&self) -> std::ops::Range<usize> {
        self.half.range()
    }

    fn get<T: rusqlite::types::FromSql>(&self, col: &str) -> Result<T, StoreError> {
        self.row.get(self.half.index(col)?).map_err(map_err)
    }
}

impl RowRead for RowHalf<'_, '_> {
    fn text(&self, col: &str) -> Result<String, StoreError> {
        self.get(col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        self.get(col)
    }
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        self.get(col)
    }
    fn flag(&self, col: &str) -> Result<bool, StoreError> {
        Ok(self.get::<i64>(col)? != 0)
    }
    fn ts(&self, col: &str) -> Result<Timestamp, StoreError> {
        Ok(Timestamp::from_micros(self.get(col)?))
    }
    fn opt_ts(&self, col: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.get::<Option<i64>>(col)?.map(Timestamp::from_micros))
    }
    fn opt_blob(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(col)
    }
    fn json(&self, col: &str) -> Result<String, StoreError> {
        self.get(col)
    }
    fn opt_json(&self, col: &str) -> Result<Option<String>, StoreError> {
        self.get(col)
    }
}
