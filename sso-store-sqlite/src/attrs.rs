//! `AttrStore` for both scopes: `sso_user_attr` (owner `user_id`) and `sso_session_attr` (owner
//! `session_id`). Every `*_many` runs in one `BEGIN IMMEDIATE` transaction.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};
use sso_core::StoreError;
use sso_core::model::{AttrRecord, AttrScope, AttrWrite};
use sso_core::store::{AttrEnvelope, AttrStore, StoreResult};
use sso_core::time::Timestamp;

use crate::SqliteStore;
use crate::rows::{R, map_err};
use sso_store_sql::{attr_from_row, placeholders};

fn table(scope: AttrScope) -> (&'static str, &'static str) {
    match scope {
        AttrScope::User => ("sso_user_attr", "user_id"),
        AttrScope::Session => ("sso_session_attr", "session_id"),
    }
}

const LIVE: &str = "(expiration_time IS NULL OR expiration_time > $2)";

async fn count_live(
    tx: &mut Transaction<'static, Sqlite>,
    scope: AttrScope,
    owner: &str,
    names: &[&str],
    now: Timestamp,
) -> StoreResult<usize> {
    let (t, o) = table(scope);
    let sql = format!(
        "SELECT COUNT(*) AS n FROM {t} WHERE {o} = $1 AND {LIVE} AND name IN ({})",
        placeholders(names.len(), 3)
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(owner.to_owned()).bind(now.as_micros());
    for n in names {
        q = q.bind((*n).to_owned());
    }
    let n: i64 = q.fetch_one(&mut **tx).await.map_err(map_err)?.try_get("n").map_err(map_err)?;
    Ok(usize::try_from(n).unwrap_or(0))
}

fn expiry(e: Option<Option<Timestamp>>) -> Option<i64> {
    e.flatten().map(Timestamp::as_micros)
}

impl SqliteStore {
    async fn upsert(
        &self,
        scope: AttrScope,
        owner: &str,
        items: &[AttrWrite],
        now: Timestamp,
        create: bool,
    ) -> StoreResult<()> {
        let (t, o) = table(scope);
        let turn = self.writer.turn().await?;
        let mut tx = turn.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
        if create {
            let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
            if count_live(&mut tx, scope, owner, &names, now).await? > 0 {
                return Err(StoreError::Conflict { what: "attr" });
            }
        }
        // An expired row counts as absent: it is replaced, creation time included.
        let sql = format!(
            "INSERT INTO {t} ({o}, name, value, is_encrypted, creation_time, last_modified, expiration_time) \
             VALUES ($1, $2, $3, $4, $5, $5, $6) \
             ON CONFLICT ({o}, name) DO UPDATE SET value = excluded.value, is_encrypted = excluded.is_encrypted, \
             last_modified = excluded.last_modified, expiration_time = excluded.expiration_time, \
             creation_time = CASE WHEN {t}.expiration_time IS NOT NULL AND {t}.expiration_time <= $5 \
               THEN excluded.creation_time ELSE {t}.creation_time END"
        );
        for i in items {
            sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(owner.to_owned())
                .bind(i.name.clone())
                .bind(i.value.clone())
                .bind(i64::from(i.is_encrypted))
                .bind(now.as_micros())
                .bind(expiry(i.expiration_time))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }
}

#[async_trait]
impl AttrStore for SqliteStore {
    async fn create_many(&self, scope: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        self.upsert(scope, owner, items, now, true).await
    }

    async fn set_many(&self, scope: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        self.upsert(scope, owner, items, now, false).await
    }

    async fn update_many(&self, scope: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        let (t, o) = table(scope);
        let turn = self.writer.turn().await?;
        let mut tx = turn.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        if count_live(&mut tx, scope, owner, &names, now).await? != names.len() {
            return Err(StoreError::NotFound);
        }
        for i in items {
            let (sql, exp) = match i.expiration_time {
                Some(e) => (
                    format!(
                        "UPDATE {t} SET value = $3, is_encrypted = $4, last_modified = $5, expiration_time = $6 \
                         WHERE {o} = $1 AND name = $2"
                    ),
                    Some(e.map(Timestamp::as_micros)),
                ),
                None => (
                    format!(
                        "UPDATE {t} SET value = $3, is_encrypted = $4, last_modified = $5 WHERE {o} = $1 AND name = $2"
                    ),
                    None,
                ),
            };
            let mut q = sqlx::query(AssertSqlSafe(sql))
                .bind(owner.to_owned())
                .bind(i.name.clone())
                .bind(i.value.clone())
                .bind(i64::from(i.is_encrypted))
                .bind(now.as_micros());
            if let Some(e) = exp {
                q = q.bind(e);
            }
            q.execute(&mut *tx).await.map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn get_many(
        &self,
        scope: AttrScope,
        owner: &str,
        names: &[String],
        now: Timestamp,
    ) -> StoreResult<Vec<AttrRecord>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let (t, o) = table(scope);
        let sql = format!("SELECT * FROM {t} WHERE {o} = $1 AND {LIVE} AND name IN ({})", placeholders(names.len(), 3));
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(owner.to_owned()).bind(now.as_micros());
        for n in names {
            q = q.bind(n.clone());
        }
        let rows = q.fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter().map(|r| attr_from_row(&R(r))).collect()
    }

    async fn names(&self, scope: AttrScope, owner: &str, now: Timestamp) -> StoreResult<Vec<String>> {
        let (t, o) = table(scope);
        let sql = format!("SELECT name FROM {t} WHERE {o} = $1 AND {LIVE} ORDER BY name");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(owner.to_owned())
            .bind(now.as_micros())
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(|r| r.try_get::<String, _>("name").map_err(map_err)).collect()
    }

    async fn delete_many(&self, scope: AttrScope, owner: &str, names: &[String], now: Timestamp) -> StoreResult<()> {
        let (t, o) = table(scope);
        let turn = self.writer.turn().await?;
        let mut tx = turn.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        if count_live(&mut tx, scope, owner, &refs, now).await? != names.len() {
            return Err(StoreError::NotFound);
        }
        let sql = format!("DELETE FROM {t} WHERE {o} = $1 AND name IN ({})", placeholders(names.len(), 2));
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(owner.to_owned());
        for n in names {
            q = q.bind(n.clone());
        }
        q.execute(&mut *tx).await.map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn set_expiry_many(
        &self,
        scope: AttrScope,
        owner: &str,
        items: &[(String, Option<Timestamp>)],
        now: Timestamp,
    ) -> StoreResult<()> {
        let (t, o) = table(scope);
        let turn = self.writer.turn().await?;
        let mut tx = turn.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
        let names: Vec<&str> = items.iter().map(|(n, _)| n.as_str()).collect();
        if count_live(&mut tx, scope, owner, &names, now).await? != names.len() {
            return Err(StoreError::NotFound);
        }
        let sql = format!("UPDATE {t} SET expiration_time = $3, last_modified = $4 WHERE {o} = $1 AND name = $2");
        for (n, e) in items {
            sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(owner.to_owned())
                .bind(n.clone())
                .bind(e.map(Timestamp::as_micros))
                .bind(now.as_micros())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn delete_expired(&self, now: Timestamp, limit: u64) -> StoreResult<u64> {
        let mut total = 0;
        for scope in [AttrScope::User, AttrScope::Session] {
            let (t, _) = table(scope);
            let sql = format!(
                "DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE expiration_time IS NOT NULL \
                 AND expiration_time <= $1 LIMIT $2)"
            );
            let r = sqlx::query(AssertSqlSafe(sql))
                .bind(now.as_micros())
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .execute(&*self.writer.turn().await?)
                .await
                .map_err(map_err)?;
            total += r.rows_affected();
        }
        Ok(total)
    }

    async fn scan_envelopes(
        &self,
        scope: AttrScope,
        cursor: Option<String>,
        limit: u64,
    ) -> StoreResult<(Vec<AttrEnvelope>, Option<String>)> {
        let (t, o) = table(scope);
        let (after_owner, after_name) = cursor.as_deref().and_then(|c| c.split_once('\t')).unwrap_or(("", ""));
        let sql = format!(
            "SELECT {o} AS owner, name, value FROM {t} WHERE is_encrypted <> 0 AND ({o}, name) > ($1, $2) ORDER BY {o}, name LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(after_owner.to_owned())
            .bind(after_name.to_owned())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(AttrEnvelope {
                    owner: r.try_get("owner").map_err(map_err)?,
                    name: r.try_get("name").map_err(map_err)?,
                    value: r.try_get("value").map_err(map_err)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = out.len() > limit;
        out.truncate(limit);
        let next = if more { out.last().map(|e| format!("{}\t{}", e.owner, e.name)) } else { None };
        Ok((out, next))
    }

    async fn replace_envelope(
        &self,
        scope: AttrScope,
        owner: &str,
        name: &str,
        old: &str,
        new: &str,
    ) -> StoreResult<bool> {
        let (t, o) = table(scope);
        let sql = format!("UPDATE {t} SET value = $4 WHERE {o} = $1 AND name = $2 AND value = $3");
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(owner.to_owned())
            .bind(name.to_owned())
            .bind(old.to_owned())
            .bind(new.to_owned())
            .execute(&*self.writer.turn().await?)
            .await
            .map_err(map_err)?;
        Ok(r.rows_affected() == 1)
    }
}
