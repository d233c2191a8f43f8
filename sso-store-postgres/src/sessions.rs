//! `SessionStore` over PostgreSQL: one row per session, indexed by user (the per-user index) and by expiry.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row};
use sso_core::StoreError;
use sso_core::ids::{SessionId, UserId};
use sso_core::model::{HistoryEntry, SessionRecord};
use sso_core::store::{SessionLookup, SessionStore, StoreResult};
use sso_core::time::Timestamp;

use crate::PgStore;
use crate::rows::{Part, R, bind_all, map_err, to_odt};
use sso_store_sql::{insert_session_sql, session_from_row, session_values, user_from_row};

#[async_trait]
impl SessionStore for PgStore {
    async fn create(&self, record: &SessionRecord) -> StoreResult<()> {
        bind_all(sqlx::query(AssertSqlSafe(insert_session_sql())), session_values(record))
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn get(&self, session_id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        let row = self
            .read_one(sqlx::query("SELECT * FROM sso_session WHERE session_id = $1").bind(session_id.as_str()))
            .await
            .map_err(map_err)?;
        row.as_ref().map(|r| session_from_row(&R(r))).transpose()
    }

    async fn get_with_user(&self, session_id: &SessionId) -> StoreResult<SessionLookup> {
        // One round trip instead of two on the session-verify path; the split column marks
        // where the session's columns end and the user's begin.
        let row = self
            .read_one(
                sqlx::query(
                    "SELECT s.*, 0 AS sso_split, u.* FROM sso_session s JOIN sso_user u ON u.user_id = s.user_id \
                     WHERE s.session_id = $1",
                )
                .bind(session_id.as_str()),
            )
            .await
            .map_err(map_err)?;
        let Some(row) = row else { return Ok(SessionLookup::NotFound) };
        let (session, user) = Part::split(&row)?;
        Ok(SessionLookup::Found(Arc::new(session_from_row(&session)?), Arc::new(user_from_row(&user)?)))
    }

    async fn extend(&self, session_id: &SessionId, new_expiration: Timestamp) -> StoreResult<bool> {
        let r =
            sqlx::query("UPDATE sso_session SET expiration_time = GREATEST(expiration_time, $2) WHERE session_id = $1")
                .bind(session_id.as_str())
                .bind(to_odt(new_expiration))
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn set_epoch(&self, session_id: &SessionId, epoch: u64) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE sso_session SET epoch = $2 WHERE session_id = $1")
            .bind(session_id.as_str())
            .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn append_history(&self, session_id: &SessionId, entry: &HistoryEntry, max: u32) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let row = sqlx::query("SELECT history FROM sso_session WHERE session_id = $1 FOR UPDATE")
            .bind(session_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(false);
        };
        let text: sqlx::types::Json<serde_json::Value> = row.try_get("history").map_err(map_err)?;
        let mut h: Vec<HistoryEntry> =
            serde_json::from_value(text.0).map_err(|e| StoreError::corrupt(e.to_string()))?;
        h.push(entry.clone());
        let max = max as usize;
        if h.len() > max {
            let excess = h.len() - max;
            h.drain(..excess);
        }
        sqlx::query("UPDATE sso_session SET history = $2 WHERE session_id = $1")
            .bind(session_id.as_str())
            .bind(sqlx::types::Json(h))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn delete(&self, session_id: &SessionId) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM sso_session WHERE session_id = $1")
            .bind(session_id.as_str())
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn list_by_user(&self, user_id: &UserId) -> StoreResult<Vec<SessionRecord>> {
        let rows = sqlx::query("SELECT * FROM sso_session WHERE user_id = $1")
            .bind(user_id.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(|r| session_from_row(&R(r))).collect()
    }

    async fn delete_by_user(&self, user_id: &UserId, except: Option<&SessionId>) -> StoreResult<u64> {
        let r = match except {
            Some(keep) => {
                sqlx::query("DELETE FROM sso_session WHERE user_id = $1 AND session_id <> $2")
                    .bind(user_id.as_str())
                    .bind(keep.as_str())
                    .execute(&self.pool)
                    .await
            }
            None => {
                sqlx::query("DELETE FROM sso_session WHERE user_id = $1")
                    .bind(user_id.as_str())
                    .execute(&self.pool)
                    .await
            }
        }
        .map_err(map_err)?;
        Ok(r.rows_affected())
    }

    async fn delete_expired(&self, now: Timestamp, limit: u64) -> StoreResult<u64> {
        let r = sqlx::query(
            "DELETE FROM sso_session WHERE session_id IN (SELECT session_id FROM sso_session \
             WHERE expiration_time <= $1 OR (abs_expiration_time IS NOT NULL AND abs_expiration_time <= $1) LIMIT $2)",
        )
        .bind(to_odt(now))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(r.rows_affected())
    }

    async fn ping(&self) -> StoreResult<()> {
        self.ping_db().await
    }
}
