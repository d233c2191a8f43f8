//! `UserStore` with its transaction, `PasswordResetStore` and `LinkedAuthStore` over PostgreSQL.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};
use sso_core::StoreError;
use sso_core::ids::{AuthId, UserId};
use sso_core::model::{LinkedAuthRecord, PrtRecord, UserPatch, UserQuery, UserRecord};
use sso_core::store::{
    ConfirmOutcome, EnvelopeField, LinkedAuthStore, PasswordResetStore, StoreResult, UserStore, UserTx,
};
use sso_core::time::Timestamp;

use crate::PgStore;
use crate::rows::{R, bind, bind_all, json_of, map_err, to_odt};
use sso_store_sql::{
    INSERT_PRT, POSTGRES, SEARCH_ORDER, insert_user_sql, link_from_row, patch_values, prt_from_row, prt_values,
    search_filter, update_user_sql, user_from_row, user_values,
};

struct Tx {
    audit_table: Option<std::sync::Arc<str>>,
    tx: Transaction<'static, Postgres>,
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn u64_of(n: i64) -> StoreResult<u64> {
    u64::try_from(n).map_err(|_| StoreError::corrupt("negative counter"))
}

#[async_trait]
impl UserTx for Tx {
    async fn get_user(&mut self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM sso_user WHERE user_id = $1")
            .bind(user_id.as_str())
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(map_err)?;
        row.as_ref().map(|r| user_from_row(&R(r))).transpose()
    }

    async fn insert_user(&mut self, user: &UserRecord) -> StoreResult<()> {
        bind_all(sqlx::query(AssertSqlSafe(insert_user_sql())), user_values(user))
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn update_user(&mut self, user_id: &UserId, patch: &UserPatch) -> StoreResult<()> {
        let cols = patch_values(patch);
        if cols.is_empty() {
            return match self.get_user(user_id).await? {
                Some(_) => Ok(()),
                None => Err(StoreError::NotFound),
            };
        }
        let mut q = sqlx::query(AssertSqlSafe(update_user_sql(&cols))).bind(user_id.as_str().to_owned());
        for (_, v) in cols {
            q = bind(q, v);
        }
        let r = q.execute(&mut *self.tx).await.map_err(map_err)?;
        if r.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn update_totp(
        &mut self,
        user_id: &UserId,
        key_enc: &str,
        label_enc: &str,
        bump_epoch: bool,
    ) -> StoreResult<(u64, u64)> {
        let row = sqlx::query(
            "UPDATE sso_user SET totp_key_enc = $2, totp_label_enc = $3, totp_key_gen = totp_key_gen + 1, \
             session_epoch = session_epoch + $4 WHERE user_id = $1 RETURNING totp_key_gen, session_epoch",
        )
        .bind(user_id.as_str())
        .bind(key_enc)
        .bind(label_enc)
        .bind(i64::from(bump_epoch))
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
        let g: i64 = row.try_get("totp_key_gen").map_err(map_err)?;
        let e: i64 = row.try_get("session_epoch").map_err(map_err)?;
        Ok((u64_of(g)?, u64_of(e)?))
    }

    async fn bump_epoch(&mut self, user_id: &UserId) -> StoreResult<u64> {
        let row = sqlx::query(
            "UPDATE sso_user SET session_epoch = session_epoch + 1 WHERE user_id = $1 RETURNING session_epoch",
        )
        .bind(user_id.as_str())
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
        u64_of(row.try_get("session_epoch").map_err(map_err)?)
    }

    async fn confirm_signup(&mut self, hash: &[u8; 32], now: Timestamp) -> StoreResult<ConfirmOutcome> {
        let row = sqlx::query("SELECT user_id FROM sso_user WHERE confirm_token_hash = $1")
            .bind(hash.as_slice())
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(ConfirmOutcome::Unknown);
        };
        let id: String = row.try_get("user_id").map_err(map_err)?;
        let id = UserId::parse(&id).ok_or_else(|| StoreError::corrupt("user_id"))?;
        let r = sqlx::query(
            "UPDATE sso_user SET sign_up_status = 'final', sign_up_confirm_time = $2 \
             WHERE confirm_token_hash = $1 AND sign_up_status = 'before_confirmation'",
        )
        .bind(hash.as_slice())
        .bind(to_odt(now))
        .execute(&mut *self.tx)
        .await
        .map_err(map_err)?;
        Ok(if r.rows_affected() == 1 { ConfirmOutcome::Confirmed(id) } else { ConfirmOutcome::AlreadyFinal(id) })
    }

    async fn delete_user(&mut self, user_id: &UserId) -> StoreResult<bool> {
        // Sessions have no foreign key (they may live elsewhere); when they share this database
        // they go in this transaction. Attributes, links and PRTs cascade.
        sqlx::query("DELETE FROM sso_session WHERE user_id = $1")
            .bind(user_id.as_str())
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        let r = sqlx::query("DELETE FROM sso_user WHERE user_id = $1")
            .bind(user_id.as_str())
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn insert_prt(&mut self, prt: &PrtRecord) -> StoreResult<()> {
        bind_all(sqlx::query(INSERT_PRT), prt_values(prt)).execute(&mut *self.tx).await.map_err(map_err)?;
        Ok(())
    }

    async fn mark_prt_accessed(
        &mut self,
        token_hash: &[u8; 32],
        reset_key_hash: &[u8; 32],
        reset_key_exp: Timestamp,
        now: Timestamp,
        ctx: &str,
    ) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE sso_password_reset SET has_been_accessed = true, access_time = $2, access_ctx = $3, \
             reset_key_hash = $4, reset_key_exp_time = $5 \
             WHERE token_hash = $1 AND has_been_accessed = false AND is_password_reset = false AND expiration_time > $2",
        )
        .bind(token_hash.as_slice())
        .bind(to_odt(now))
        .bind(json_of(ctx))
        .bind(reset_key_hash.as_slice())
        .bind(to_odt(reset_key_exp))
        .execute(&mut *self.tx)
        .await
        .map_err(map_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn mark_prt_used(&mut self, token_hash: &[u8; 32], now: Timestamp, ctx: &str) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE sso_password_reset SET is_password_reset = true, password_reset_time = $2, password_reset_ctx = $3 \
             WHERE token_hash = $1 AND has_been_accessed = true AND is_password_reset = false",
        )
        .bind(token_hash.as_slice())
        .bind(to_odt(now))
        .bind(json_of(ctx))
        .execute(&mut *self.tx)
        .await
        .map_err(map_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn insert_link(&mut self, link: &LinkedAuthRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sso_linked_auth (auth_id, user_id, auth_type, auth_username, is_active, creation_time, \
             last_modified) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(link.auth_id.as_str())
        .bind(link.user_id.as_str())
        .bind(link.auth_type.as_str())
        .bind(link.auth_username.as_str())
        .bind(link.is_active)
        .bind(to_odt(link.creation_time))
        .bind(to_odt(link.last_modified))
        .execute(&mut *self.tx)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn delete_link(
        &mut self,
        user_id: &UserId,
        auth_type: &str,
        auth_username: &str,
    ) -> StoreResult<Option<AuthId>> {
        let row = sqlx::query(
            "DELETE FROM sso_linked_auth WHERE user_id = $1 AND auth_type = $2 AND auth_username = $3 RETURNING auth_id",
        )
        .bind(user_id.as_str())
        .bind(auth_type)
        .bind(auth_username)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(map_err)?;
        match row {
            None => Ok(None),
            Some(r) => {
                let id: String = r.try_get("auth_id").map_err(map_err)?;
                Ok(Some(AuthId::parse(&id).ok_or_else(|| StoreError::corrupt("auth_id"))?))
            }
        }
    }

    async fn insert_audit(&mut self, record: &sso_core::audit::AuditRecord) -> StoreResult<bool> {
        let Some(table) = &self.audit_table else {
            return Ok(false);
        };
        let sql = sso_store_sql::audit::insert_sql(table);
        bind_all(sqlx::query(AssertSqlSafe(sql)), sso_store_sql::audit::audit_values(record))
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(true)
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.tx.commit().await.map_err(map_err)
    }
}

#[async_trait]
impl UserStore for PgStore {
    async fn begin(&self) -> StoreResult<Box<dyn UserTx>> {
        let tx = self.pool.begin().await.map_err(map_err)?;
        Ok(Box::new(Tx { tx, audit_table: self.audit_table.clone() }))
    }

    async fn get_by_id(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        let row = self
            .read_one(sqlx::query("SELECT * FROM sso_user WHERE user_id = $1").bind(user_id.as_str()))
            .await
            .map_err(map_err)?;
        row.as_ref().map(|r| user_from_row(&R(r))).transpose()
    }

    async fn get_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let row = self
            .read_one(sqlx::query("SELECT * FROM sso_user WHERE username = $1").bind(username))
            .await
            .map_err(map_err)?;
        row.as_ref().map(|r| user_from_row(&R(r))).transpose()
    }

    async fn get_by_confirm_token_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM sso_user WHERE confirm_token_hash = $1")
            .bind(hash.as_slice())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(|r| user_from_row(&R(r))).transpose()
    }

    async fn find_by_email_idx(&self, idx: &str) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT * FROM sso_user WHERE email_idx = $1")
            .bind(idx)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(|r| user_from_row(&R(r))).collect()
    }

    async fn scan_users(&self, after: Option<&UserId>, limit: u64) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT * FROM sso_user WHERE user_id > $1 ORDER BY user_id LIMIT $2")
            .bind(after.map_or("", UserId::as_str))
            .bind(i64_of(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(|r| user_from_row(&R(r))).collect()
    }

    async fn replace_envelope(
        &self,
        user_id: &UserId,
        field: EnvelopeField,
        old: &str,
        new: &str,
    ) -> StoreResult<bool> {
        let col = field.column();
        let sql = format!("UPDATE sso_user SET {col} = $3 WHERE user_id = $1 AND {col} = $2");
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(user_id.as_str().to_owned())
            .bind(old.to_owned())
            .bind(new.to_owned())
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn search(&self, q: &UserQuery, offset: u64, limit: u64) -> StoreResult<(u64, Vec<UserRecord>)> {
        let (clause, vals) = search_filter(q, POSTGRES);
        let substring = !q.names.is_empty() && !q.names_exact && q.user_id.is_none() && q.username.is_none();
        // A substring filter is planned for its own pattern (an unnamed statement): a cached generic
        // plan cannot know that `%…%` is selective and scans the table instead of the trigram indexes.
        let mut count =
            sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM sso_user{clause}"))).persistent(!substring);
        for v in vals.clone() {
            count = bind(count, v);
        }
        let total: i64 = count.fetch_one(&self.pool).await.map_err(map_err)?.try_get("n").map_err(map_err)?;
        let n = vals.len();
        let sql = if substring {
            // A substring filter matches few rows through the trigram indexes, but a generic plan
            // would walk the ordered index and filter every row: filter first, then sort.
            format!(
                "WITH m AS MATERIALIZED (SELECT * FROM sso_user{clause}) SELECT * FROM m {SEARCH_ORDER} LIMIT ${} OFFSET ${}",
                n + 1,
                n + 2
            )
        } else {
            format!("SELECT * FROM sso_user{clause} {SEARCH_ORDER} LIMIT ${} OFFSET ${}", n + 1, n + 2)
        };
        let mut page = sqlx::query(AssertSqlSafe(sql)).persistent(!substring);
        for v in vals {
            page = bind(page, v);
        }
        let rows = page.bind(i64_of(limit)).bind(i64_of(offset)).fetch_all(&self.pool).await.map_err(map_err)?;
        let users = rows.iter().map(|r| user_from_row(&R(r))).collect::<StoreResult<Vec<_>>>()?;
        Ok((u64_of(total)?, users))
    }

    async fn ping(&self) -> StoreResult<()> {
        self.ping_db().await
    }
}

#[async_trait]
impl PasswordResetStore for PgStore {
    async fn get_prt(&self, token_hash: &[u8; 32]) -> StoreResult<Option<PrtRecord>> {
        let row = sqlx::query("SELECT * FROM sso_password_reset WHERE token_hash = $1")
            .bind(token_hash.as_slice())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(|r| prt_from_row(&R(r))).transpose()
    }

    async fn delete_expired_prts(&self, now: Timestamp, limit: u64) -> StoreResult<u64> {
        let r = sqlx::query(
            "DELETE FROM sso_password_reset WHERE token_hash IN \
             (SELECT token_hash FROM sso_password_reset WHERE expiration_time <= $1 LIMIT $2)",
        )
        .bind(to_odt(now))
        .bind(i64_of(limit))
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(r.rows_affected())
    }
}

#[async_trait]
impl LinkedAuthStore for PgStore {
    async fn list_links(&self, user_id: &UserId) -> StoreResult<Vec<LinkedAuthRecord>> {
        let rows = sqlx::query("SELECT * FROM sso_linked_auth WHERE user_id = $1 ORDER BY creation_time, auth_id")
            .bind(user_id.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(|r| link_from_row(&R(r))).collect()
    }

    async fn get_link(&self, auth_type: &str, auth_username: &str) -> StoreResult<Option<LinkedAuthRecord>> {
        let row = sqlx::query("SELECT * FROM sso_linked_auth WHERE auth_type = $1 AND auth_username = $2")
            .bind(auth_type)
            .bind(auth_username)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(|r| link_from_row(&R(r))).transpose()
    }
}
