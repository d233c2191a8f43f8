//! `CounterStore`: throttle counters and TOTP replay markers as single-statement upserts.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sso_core::store::{CounterStore, StoreResult};
use sso_core::time::Timestamp;

use crate::SqliteStore;
use crate::fast_read;
use crate::rows::map_err;
use sso_store_sql::Val;

/// A live counter's value and last time.
const COUNTER_SQL: &str = "SELECT value, last_at FROM sso_counter WHERE key = $1 AND expires_at > $2";

/// Counts one more failure (a counter that expired starts again at 1): key, now, expiry.
const RECORD_FAILURE_SQL: &str = "INSERT INTO sso_counter (key, value, last_at, prev_at, expires_at) VALUES (?1, 1, ?2, NULL, ?3) \
     ON CONFLICT (key) DO UPDATE SET \
       value = CASE WHEN sso_counter.expires_at <= ?2 THEN 1 ELSE sso_counter.value + 1 END, \
       prev_at = CASE WHEN sso_counter.expires_at <= ?2 THEN NULL ELSE sso_counter.last_at END, \
       last_at = ?2, expires_at = ?3 \
     RETURNING value, prev_at";

/// Clears a counter: key.
const RESET_SQL: &str = "DELETE FROM sso_counter WHERE key = ?1";

/// Moves a replay marker forward only (or over an expired one): key, step, now, expiry.
const ADVANCE_STEP_SQL: &str = "INSERT INTO sso_counter (key, value, last_at, prev_at, expires_at) VALUES (?1, ?2, ?3, NULL, ?4) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value, last_at = excluded.last_at, \
       expires_at = excluded.expires_at \
     WHERE sso_counter.value < excluded.value OR sso_counter.expires_at <= ?3";

#[async_trait]
impl CounterStore for SqliteStore {
    async fn record_failure(&self, key: &str, now: Timestamp, ttl: Duration) -> StoreResult<(u64, Option<Timestamp>)> {
        let (now, expires) = (now.as_micros(), now.plus(ttl).as_micros());
        // The throttle reservation of every login: on the calling task (see `writer`).
        let direct = self.writer.direct(|c| {
            let mut stmt = c.prepare_cached(RECORD_FAILURE_SQL)?;
            let mut rows = stmt.query(rusqlite::params![key, now, expires])?;
            let row = rows.next()?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            let counted: (i64, Option<i64>) = (row.get(0)?, row.get(1)?);
            // The statement commits when it finishes: step it to the end so a failed commit
            // is an error, not a count that was never stored.
            while rows.next()?.is_some() {}
            Ok(counted)
        });
        let (value, prev): (i64, Option<i64>) = match direct.await {
            Some(r) => r?,
            None => {
                let row = sqlx::query(RECORD_FAILURE_SQL)
                    .bind(key)
                    .bind(now)
                    .bind(expires)
                    .fetch_one(&*self.writer.turn().await?)
                    .await
                    .map_err(map_err)?;
                (row.try_get("value").map_err(map_err)?, row.try_get("prev_at").map_err(map_err)?)
            }
        };
        Ok((u64::try_from(value).unwrap_or(0), prev.map(Timestamp::from_micros)))
    }

    async fn get(&self, key: &str, now: Timestamp) -> StoreResult<Option<(u64, Timestamp)>> {
        // The throttle gate of every login: on the calling task.
        if let Some(fast) = &self.fast {
            let found = fast.one(COUNTER_SQL, rusqlite::params![key, now.as_micros()], |row, _| {
                let v: i64 = row.get(0).map_err(fast_read::map_err)?;
                let t: i64 = row.get(1).map_err(fast_read::map_err)?;
                Ok((u64::try_from(v).unwrap_or(0), Timestamp::from_micros(t)))
            })?;
            return Ok(found);
        }
        let row = sqlx::query(COUNTER_SQL)
            .bind(key)
            .bind(now.as_micros())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        match row {
            None => Ok(None),
            Some(r) => {
                let v: i64 = r.try_get("value").map_err(map_err)?;
                let t: i64 = r.try_get("last_at").map_err(map_err)?;
                Ok(Some((u64::try_from(v).unwrap_or(0), Timestamp::from_micros(t))))
            }
        }
    }

    async fn reset(&self, key: &str) -> StoreResult<()> {
        // Every successful login clears its user's counter: on the calling task.
        self.writer.execute(RESET_SQL, vec![Val::text(key)]).await.map(|_| ())
    }

    async fn advance_step(&self, key: &str, step: u64, now: Timestamp, ttl: Duration) -> StoreResult<bool> {
        // The TOTP replay check of every login with a code: on the calling task.
        let values = vec![Val::text(key), Val::uint(step), Val::ts(now), Val::ts(now.plus(ttl))];
        Ok(self.writer.execute(ADVANCE_STEP_SQL, values).await? == 1)
    }

    async fn delete_expired(&self, now: Timestamp) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM sso_counter WHERE expires_at <= $1")
            .bind(now.as_micros())
            .execute(&*self.writer.turn().await?)
            .await
            .map_err(map_err)?;
        Ok(r.rows_affected())
    }

    async fn ping(&self) -> StoreResult<()> {
        self.ping_db().await
    }
}
