//! The `sql` audit sink (spec/audit.md §4) and the in-transaction insert used when the sink shares
//! the users database (G3: the record commits with the change, or neither does).

use async_trait::async_trait;
use sqlx::AssertSqlSafe;
use sso_core::audit::{AuditError, AuditPage, AuditQuery, AuditRecord, AuditSink};
use sso_core::time::Timestamp;
use sso_store_sql::audit::{self as sql, Flavor};

use crate::SqliteStore;
use crate::rows::{R, bind, bind_all, map_err};

fn err(e: impl std::fmt::Display) -> AuditError {
    AuditError { sink: "sql".into(), detail: e.to_string() }
}

impl SqliteStore {
    /// Creates the audit table and its indexes if missing (a role that may only `INSERT` and
    /// `SELECT` passes when the table already exists).
    pub async fn ensure_audit_table(&self, table: &str) -> Result<(), sso_core::StoreError> {
        if !sql::valid_table(table) {
            return Err(sso_core::StoreError::unavailable(format!("invalid audit table name {table:?}")));
        }
        for stmt in sql::create_table_sql(table, Flavor::Sqlite) {
            if let Err(e) = sqlx::query(AssertSqlSafe(stmt)).execute(&*self.writer.turn().await?).await {
                let exists = sqlx::query(AssertSqlSafe(format!("SELECT 1 FROM {table} LIMIT 1")))
                    .fetch_optional(&self.pool)
                    .await;
                if exists.is_err() {
                    return Err(map_err(e));
                }
            }
        }
        Ok(())
    }

    /// Makes write transactions insert audit records into `table` (the sink shares this database).
    pub fn with_audit_table(mut self, table: &str) -> Self {
        self.audit_table = Some(table.into());
        self
    }
}

/// Audit records in a table of this database.
#[derive(Debug, Clone)]
pub struct SqlAuditSink {
    store: SqliteStore,
    table: String,
    required: bool,
}

impl SqlAuditSink {
    /// A sink writing to `table` (created if missing).
    pub async fn open(store: SqliteStore, table: &str, required: bool) -> Result<SqlAuditSink, sso_core::StoreError> {
        store.ensure_audit_table(table).await?;
        Ok(SqlAuditSink { store, table: table.to_owned(), required })
    }
}

#[async_trait]
impl AuditSink for SqlAuditSink {
    fn name(&self) -> &str {
        "sql"
    }

    fn required(&self) -> bool {
        self.required
    }

    async fn write(&self, record: &AuditRecord) -> Result<(), AuditError> {
        // One record per call (a login's, a verify's): on the calling task (see `writer`).
        self.store
            .writer
            .execute(&sql::insert_sql(&self.table), sql::audit_values(record))
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn query(&self, q: &AuditQuery) -> Result<Option<AuditPage>, AuditError> {
        let (text, vals) = sql::query_sql(&self.table, q);
        let rows = bind_all(sqlx::query(AssertSqlSafe(text)), vals).fetch_all(&self.store.pool).await.map_err(err)?;
        let records = rows.iter().map(|r| sql::audit_from_row(&R(r))).collect::<Result<Vec<_>, _>>().map_err(err)?;
        Ok(Some(sql::page(records, q)))
    }

    async fn purge_before(&self, ts: Timestamp) -> Result<u64, AuditError> {
        let q = bind(sqlx::query(AssertSqlSafe(sql::purge_sql(&self.table))), sql::purge_value(ts));
        Ok(q.execute(&*self.store.writer.turn().await.map_err(err)?).await.map_err(err)?.rows_affected())
    }
}
