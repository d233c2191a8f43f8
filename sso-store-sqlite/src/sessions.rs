//! `SessionStore`: one row per session, indexed by user (the per-user index) and by expiry.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::Row;
use sso_core::StoreError;
use sso_core::ids::{SessionId, UserId};
use sso_core::model::{HistoryEntry, SessionRecord};
use sso_core::store::{SessionLookup, SessionStore, StoreResult};
use sso_core::time::Timestamp;

use crate::SqliteStore;
use crate::fast_read::RowHalf;
use crate::rows::{Part, R, map_err};
use sso_store_sql::{Val, history_json, insert_session_sql, session_from_row, session_values, user_from_row};

/// A session and its user in one row, split at the `sso_split` column.
const JOINED_SQL: &str = "SELECT s.*, 0 AS sso_split, u.* FROM sso_session s JOIN sso_user u ON u.user_id = s.user_id \
                          WHERE s.session_id = $1";

/// Moves a session's expiry later, never earlier: session id, new expiry.
const EXTEND_SQL: &str = "UPDATE sso_session SET expiration_time = MAX(expiration_time, ?2) WHERE session_id = ?1";

/// Deletes a session: session id.
const DELETE_SQL: &str = "DELETE FROM sso_session WHERE session_id = ?1";

/// A session alone, in the joined read's shape (an empty second half).
const SESSION_SQL: &str = "SELECT s.*, 0 AS sso_split FROM sso_session s WHERE s.session_id = $1";

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create(&self, record: &SessionRecord) -> StoreResult<()> {
        // Every login's session: on the calling task (see `writer`).
        self.writer.execute(&insert_session_sql(), session_values(record)).await.map(|_| ())
    }

    async fn get(&self, session_id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        // The pipeline's session read when the user comes from `session.user_cache_ms`: on the
        // calling task, like the joined read.
        if let Some(fast) = &self.fast {
            return fast.one(SESSION_SQL, [session_id.as_str()], |row, names| {
                let (session, _) = RowHalf::split(row, names)?;
                session_from_row(&session)
            });
        }
        let row = sqlx::query("SELECT * FROM sso_session WHERE session_id = $1")
            .bind(session_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(|r| session_from_row(&R(r))).transpose()
    }

    async fn get_with_user(&self, session_id: &SessionId) -> StoreResult<SessionLookup> {
        // One round trip instead of two on the session-verify path; the split column marks
        // where the session's columns end and the user's begin.
        if let Some(fast) = &self.fast {
            // Records decoded from unchanged rows are reused (see `decoded`).
            let found = fast.one(JOINED_SQL, [session_id.as_str()], |row, names| {
                let (session, user) = RowHalf::split(row, names)?;
                let s = fast.sessions.get_or_decode(row, session.range(), || session_from_row(&session))?;
                let u = fast.users.get_or_decode(row, user.range(), || user_from_row(&user))?;
                Ok((s, u))
            })?;
            return Ok(found.map_or(SessionLookup::NotFound, |(s, u)| SessionLookup::Found(s, u)));
        }
        let row =
            sqlx::query(JOINED_SQL).bind(session_id.as_str()).fetch_optional(&self.pool).await.map_err(map_err)?;
        let Some(row) = row else { return Ok(SessionLookup::NotFound) };
        let (session, user) = Part::split(&row)?;
        Ok(SessionLookup::Found(Arc::new(session_from_row(&session)?), Arc::new(user_from_row(&user)?)))
    }

    async fn extend(&self, session_id: &SessionId, new_expiration: Timestamp) -> StoreResult<bool> {
        // The sliding expiry of a verify (`session.renew_on_use`): on the calling task.
        let values = vec![Val::text(session_id.as_str()), Val::ts(new_expiration)];
        Ok(self.writer.execute(EXTEND_SQL, values).await? == 1)
    }

    async fn set_epoch(&self, session_id: &SessionId, epoch: u64) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE sso_session SET epoch = $2 WHERE session_id = $1")
            .bind(session_id.as_str())
            .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
            .execute(&*self.writer.turn().await?)
            .await
            .map_err(map_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn append_history(&self, session_id: &SessionId, entry: &HistoryEntry, max: u32) -> StoreResult<bool> {
        let turn = self.writer.turn().await?;
        let mut tx = turn.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
        let row = sqlx::query("SELECT history FROM sso_session WHERE session_id = $1")
            .bind(session_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(false);
        };
        let text: String = row.try_get("history").map_err(map_err)?;
        let mut h: Vec<HistoryEntry> = serde_json::from_str(&text).map_err(|e| StoreError::corrupt(e.to_string()))?;
        h.push(entry.clone());
        let max = max as usize;
        if h.len() > max {
            let excess = h.len() - max;
            h.drain(..excess);
        }
        sqlx::query("UPDATE sso_session SET history = $2 WHERE session_id = $1")
            .bind(session_id.as_str())
            .bind(history_json(&h))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn delete(&self, session_id: &SessionId) -> StoreResult<bool> {
        // Logout: on the calling task.
        Ok(self.writer.execute(DELETE_SQL, vec![Val::text(session_id.as_str())]).await? == 1)
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
                    .execute(&*self.writer.turn().await?)
                    .await
            }
            None => {
                sqlx::query("DELETE FROM sso_session WHERE user_id = $1")
                    .bind(user_id.as_str())
                    .execute(&*self.writer.turn().await?)
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
        .bind(now.as_micros())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .execute(&*self.writer.turn().await?)
        .await
        .map_err(map_err)?;
        Ok(r.rows_affected())
    }

    async fn ping(&self) -> StoreResult<()> {
        self.ping_db().await
    }
}
