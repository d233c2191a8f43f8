//! What is PostgreSQL-specific in binding and decoding (`timestamptz`, `boolean`, `jsonb`, `bytea`)
//! and the mapping of PostgreSQL errors.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, Row};
use sso_core::StoreError;
use sso_core::time::Timestamp;
pub(crate) use sso_store_sql::Val;
use sso_store_sql::{Half, RowRead, conflict_of};
use time::OffsetDateTime;

pub(crate) type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

pub(crate) fn to_odt(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.as_micros()) * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) fn from_odt(t: OffsetDateTime) -> Timestamp {
    Timestamp::from_micros(i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX))
}

pub(crate) fn json_of(text: &str) -> Json<serde_json::Value> {
    Json(serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned())))
}

/// Binds `v` to `q` in PostgreSQL's types.
pub(crate) fn bind(q: Query<'_>, v: Val) -> Query<'_> {
    match v {
        Val::Text(t) => q.bind(t),
        Val::Int(i) => q.bind(i),
        Val::Bool(b) => q.bind(b),
        Val::Ts(t) => q.bind(t.map(to_odt)),
        Val::Json(j) => q.bind(j.as_deref().map(json_of)),
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
pub(crate) struct R<'a>(pub &'a PgRow);

fn get<'r, T, I>(row: &'r PgRow, col: I) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
    I: sqlx::ColumnIndex<PgRow>,
{
    row.try_get(col).map_err(|e| StoreError::corrupt(e.to_string()))
}

/// One table's half of a joined row (see [`sso_store_sql::Half`]).
pub(crate) struct Part<'a> {
    row: &'a PgRow,
    half: Half<'a>,
}

impl<'a> Part<'a> {
    /// The session's and the user's halves of a joined row.
    pub(crate) fn split(row: &'a PgRow) -> Result<(Part<'a>, Part<'a>), StoreError> {
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
        get(self.0, col)
    }
    fn ts(&self, col: &str) -> Result<Timestamp, StoreError> {
        Ok(from_odt(get(self.0, col)?))
    }
    fn opt_ts(&self, col: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(get::<Option<OffsetDateTime>, _>(self.0, col)?.map(from_odt))
    }
    fn opt_blob(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError> {
        get(self.0, col)
    }
    fn json(&self, col: &str) -> Result<String, StoreError> {
        Ok(get::<Json<serde_json::Value>, _>(self.0, col)?.0.to_string())
    }
    fn opt_json(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(get::<Option<Json<serde_json::Value>>, _>(self.0, col)?.map(|j| j.0.to_string()))
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
        get(self.row, self.at(col)?)
    }
    fn ts(&self, col: &str) -> Result<Timestamp, StoreError> {
        Ok(from_odt(get(self.row, self.at(col)?)?))
    }
    fn opt_ts(&self, col: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(get::<Option<OffsetDateTime>, _>(self.row, self.at(col)?)?.map(from_odt))
    }
    fn opt_blob(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError> {
        get(self.row, self.at(col)?)
    }
    fn json(&self, col: &str) -> Result<String, StoreError> {
        Ok(get::<Json<serde_json::Value>, _>(self.row, self.at(col)?)?.0.to_string())
    }
    fn opt_json(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(get::<Option<Json<serde_json::Value>>, _>(self.row, self.at(col)?)?.map(|j| j.0.to_string()))
    }
}

/// Maps an sqlx error: unique violations → `Conflict` (by constraint name), foreign keys →
/// `NotFound`, connection loss, timeouts, cancellations and shutdowns → `Unavailable`.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            if db.is_unique_violation() {
                return StoreError::Conflict { what: conflict_of(db.constraint().unwrap_or(db.message())) };
            }
            if db.is_foreign_key_violation() {
                return StoreError::NotFound;
            }
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // 08: connection, 53: resources, 57: operator intervention (cancel, shutdown), 40: serialization.
            if ["08", "53", "57", "40"].iter().any(|p| code.starts_with(p)) {
                StoreError::unavailable(format!("postgres {code}: {}", db.message()))
            } else {
                StoreError::corrupt(format!("postgres {code}: {}", db.message()))
            }
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::TypeNotFound { .. } => {
            StoreError::corrupt(e.to_string())
        }
        sqlx::Error::RowNotFound => StoreError::NotFound,
        _ => StoreError::unavailable(format!("postgres: {e}")),
    }
}
