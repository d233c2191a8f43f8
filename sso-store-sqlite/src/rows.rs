//! What is SQLite-specific in binding and decoding: times as Unix microseconds, booleans as 0/1,
//! JSON as text; plus the mapping of SQLite errors. Column lists, row mapping and the search
//! filter are shared with PostgreSQL in `sso-store-sql`.

use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Row, Sqlite};
use sso_core::StoreError;
use sso_core::time::Timestamp;
pub(crate) use sso_store_sql::Val;
use sso_store_sql::{Half, RowRead, conflict_of};

pub(crate) type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments>;

/// Binds `v` to `q` in SQLite's types.
pub(crate) fn bind(q: Query<'_>, v: Val) -> Query<'_> {
    match v {
        Val::Text(t) | Val::Json(t) => q.bind(t),
        Val::Int(i) => q.bind(i),
        Val::Bool(b) => q.bind(b.map(i64::from)),
        Val::Ts(t) => q.bind(t.map(Timestamp::as_micros)),
        Val::Blob(b) => q.bind(b),
    }
}

/// Binds every value.
pub(crate) fn bind_all(mut q: Query<'_>, vals: Vec<Val>) -> Query<'_> {
    for v in vals {
        q = bind(q, v);
    }
    q
}

/// A decoded row.
pub(crate) struct R<'a>(pub &'a SqliteRow);

fn get<'r, T, I>(row: &'r SqliteRow, col: I) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
    I: sqlx::ColumnIndex<SqliteRow>,
{
    row.try_get(col).map_err(|e| StoreError::corrupt(e.to_string()))
}

/// One table's half of a joined row (see [`sso_store_sql::Half`]).
pub(crate) struct Part<'a> {
    row: &'a SqliteRow,
    half: Half<'a>,
}

impl<'a> Part<'a> {
    /// The session's and the user's halves of a joined row.
    pub(crate) fn split(row: &'a SqliteRow) -> Result<(Part<'a>, Part<'a>), StoreError> {
        use sqlx::Column;
        let (a, b) = Half::split(row.columns().iter().map(|c| c.name()).collect())?;
        Ok((Part { row, half: a }, Part { row, half: b }))
    }

    fn at(&self, col: &str) -> Result<usize, StoreError> {
        self.half.index(col)
    }
}

impl RowRead for R<'_> {
    fn text(&self, col: &str) -> Result<String, StoreError> {
        get(self.0, col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        get(self.0, col)
    }
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        get(self.0, col)
    }
    fn flag(&self, col: &str) -> Result<bool, StoreError> {
        Ok(get::<i64, _>(self.0, col)? != 0)
    }
    fn ts(&self, col: &str) -> Result<Timestamp, StoreError> {
        Ok(Timestamp::from_micros(get(self.0, col)?))
    }
    fn opt_ts(&self, col: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(get::<Option<i64>, _>(self.0, col)?.map(Timestamp::from_micros))
    }
    fn opt_blob(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError> {
        get(self.0, col)
    }
    fn json(&self, col: &str) -> Result<String, StoreError> {
        get(self.0, col)
    }
    fn opt_json(&self, col: &str) -> Result<Option<String>, StoreError> {
        get(self.0, col)
    }
}

impl RowRead for Part<'_> {
    fn text(&self, col: &str) -> Result<String, StoreError> {
        get(self.row, self.at(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        get(self.row, self.at(col)?)
    }
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        get(self.row, self.at(col)?)
    }
    fn flag(&self, col: &str) -> Result<bool, StoreError> {
        Ok(get::<i64, _>(self.row, self.at(col)?)? != 0)
    }
    fn ts(&self, col: &str) -> Result<Timestamp, StoreError> {
        Ok(Timestamp::from_micros(get(self.row, self.at(col)?)?))
    }
    fn opt_ts(&self, col: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(get::<Option<i64>, _>(self.row, self.at(col)?)?.map(Timestamp::from_micros))
    }
    fn opt_blob(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError> {
        get(self.row, self.at(col)?)
    }
    fn json(&self, col: &str) -> Result<String, StoreError> {
        get(self.row, self.at(col)?)
    }
    fn opt_json(&self, col: &str) -> Result<Option<String>, StoreError> {
        get(self.row, self.at(col)?)
    }
}

/// Maps an sqlx error to a store error: unique violations become `Conflict` (naming the key),
/// foreign-key violations `NotFound`, connection problems `Unavailable`.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            let msg = db.message();
            if db.is_unique_violation() {
                StoreError::Conflict { what: conflict_of(msg) }
            } else if db.is_foreign_key_violation() {
                StoreError::NotFound
            } else if msg.contains("locked") || msg.contains("busy") {
                StoreError::unavailable(format!("sqlite: {msg}"))
            } else {
                StoreError::corrupt(format!("sqlite: {msg}"))
            }
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::TypeNotFound { .. } => {
            StoreError::corrupt(e.to_string())
        }
        sqlx::Error::RowNotFound => StoreError::NotFound,
        _ => StoreError::unavailable(format!("sqlite: {e}")),
    }
}
