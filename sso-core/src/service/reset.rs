//! Password-reset tokens (spec/users.md §6): create, access, change. All unauthenticated.

use serde_json::json;

use super::notify::{Event, EventKind};
use super::policy::{self, PasswordContext};
use super::trail::{Audit, Kind};
use super::{CallCtx, Inner};
use crate::config::UserSearchBy;
use crate::error::{Code, Reason, SsoError, SsoResult};
use crate::ids::UserId;
use crate::model::{ApprovalStatus, PrtRecord, UserPatch, UserRecord};
use crate::secret::{Password, PrtToken, ResetKey, SecretStr};
use crate::service::throttle::Key;

/// Password-reset operations, reached as `sso.password_reset()`.
#[derive(Clone, Copy)]
pub struct PasswordResetApi<'a> {
    pub(crate) s: &'a Inner,
}

/// The result of `access_token`.
#[derive(Debug, Clone)]
pub struct AccessTokenCtx {
    /// The user the token belongs to.
    pub user_id: UserId,
    /// The reset key (shown once; a secret).
    pub reset_key: ResetKey,
}

fn could_not_access() -> SsoError {
    SsoError::code(Code::E010001, Reason::NotFound)
}

impl Inner {
    fn ctx_json(&self, ctx: &CallCtx) -> String {
        json!({
            "current_app": ctx.current_app,
            "remote_addr": ctx.remote_addr.to_string(),
            "user_agent": ctx.user_agent,
        })
        .to_string()
    }

    async fn find_for_reset(&self, credential: &str) -> SsoResult<Option<UserRecord>> {
        let approved = |u: &UserRecord| u.approval_status == ApprovalStatus::Approved;
        let by_name =
            || async { Ok::<_, SsoError>(self.stores.users.get_by_username(credential).await?.filter(approved)) };
        let by_email = || async {
            let idx = self.keys.current().email_index(credential);
            let mut found: Vec<UserRecord> = self.stores.users.find_by_email_idx(&idx).await?;
            found.retain(approved);
            Ok::<_, SsoError>(if found.len() == 1 { found.pop() } else { None })
        };
        match self.cfg.password_reset.user_search_by {
            UserSearchBy::Username => by_name().await,
            UserSearchBy::Email => by_email().await,
            UserSearchBy::UsernameOrEmail => match by_name().await? {
                Some(u) => Ok(Some(u)),
                None => by_email().await,
            },
        }
    }

    async fn create_token_inner(&self, ctx: &CallCtx, a: &mut Audit, credential: &str) -> SsoResult<()> {
        self.check_app(ctx)?;
        a.detail("found", false);
        if credential.is_empty() {
            return Ok(());
        }
        let Some(user) = self.find_for_reset(credential).await? else {
            return Ok(());
        };
        a.detail("found", true);
        a.target_user(&user.user_id);
        let now = self.now();
        let token = PrtToken::generate()?;
        let minutes = i64::try_from(self.cfg.password_reset.valid_for).unwrap_or(i64::MAX);
        let prt = PrtRecord {
            token_hash: token.hash(),
            user_id: user.user_id.clone(),
            creation_time: now,
            expiration_time: now.add_secs(minutes.saturating_mul(60)),
            creation_ctx: self.ctx_json(ctx),
            has_been_accessed: false,
            access_time: None,
            access_ctx: None,
            reset_key_hash: None,
            reset_key_exp_time: None,
            is_password_reset: false,
            password_reset_time: None,
            password_reset_ctx: None,
        };
        let mut tx = self.begin().await?;
        tx.insert_prt(&prt).await?;
        self.commit(tx, a).await?;
        self.notifier.notify(Event {
            kind: EventKind::PasswordReset,
            ts: now,
            cid: ctx.cid.to_string(),
            current_app: ctx.current_app.clone(),
            remote_addr: ctx.remote_addr.to_string(),
            user_id: user.user_id.clone(),
            username: user.username.clone(),
            email: self.email_of(&user).ok().flatten(),
            actor: None,
            token: Some(token),
            expiration_time: Some(prt.expiration_time),
        });
        Ok(())
    }

    async fn access_token_inner(&self, ctx: &CallCtx, a: &mut Audit, token: &PrtToken) -> SsoResult<AccessTokenCtx> {
        self.check_app(ctx)?;
        if !token.is_well_formed() {
            return Err(could_not_access());
        }
        let now = self.now();
        let prt = self.stores.resets.get_prt(&token.hash()).await?.ok_or_else(could_not_access)?;
        a.target_user(&prt.user_id);
        if now >= prt.expiration_time || prt.has_been_accessed || prt.is_password_reset {
            return Err(could_not_access());
        }
        let user = self.stores.users.get_by_id(&prt.user_id).await?.ok_or_else(could_not_access)?;
        self.check_account(&user, &ctx.remote_addr, now, false)?;
        let reset_key = ResetKey::generate()?;
        let secs = i64::try_from(self.cfg.password_reset.password_change_session_duration).unwrap_or(i64::MAX);
        let exp = now.add_secs(secs).min(prt.expiration_time);
        let mut tx = self.begin().await?;
        if !tx.mark_prt_accessed(&token.hash(), &reset_key.hash(), exp, now, &self.ctx_json(ctx)).await? {
            return Err(could_not_access());
        }
        self.commit(tx, a).await?;
        Ok(AccessTokenCtx { user_id: user.user_id, reset_key })
    }

    async fn reset_change_inner(
        &self,
        ctx: &CallCtx,
        a: &mut Audit,
        token: &PrtToken,
        reset_key: &ResetKey,
        new_password: &Password,
    ) -> SsoResult<()> {
        self.check_app(ctx)?;
        if !token.is_well_formed() || !reset_key.is_well_formed() {
            return Err(could_not_access());
        }
        let now = self.now();
        let prt = self.stores.resets.get_prt(&token.hash()).await?.ok_or_else(could_not_access)?;
        a.target_user(&prt.user_id);
        let key_ok = prt.reset_key_hash.is_some_and(|h| crate::crypto::digest::ct_eq(&h, &reset_key.hash()));
        let fresh = prt.reset_key_exp_time.is_some_and(|e| now < e);
        if !prt.has_been_accessed || prt.is_password_reset || !fresh || !key_ok {
            return Err(could_not_access());
        }
        let user = self.stores.users.get_by_id(&prt.user_id).await?.ok_or_else(could_not_access)?;
        self.check_account(&user, &ctx.remote_addr, now, false)?;
        let pc = PasswordContext { username: Some(&user.username), ..Default::default() };
        policy::validate_password(&self.cfg.password, new_password.expose(), pc)
            .map_err(|c| SsoError::code_public(c, self.cfg.password.inform_if_invalid, Reason::NewPasswordInvalid))?;
        let hash = self.new_password_hash(&user.user_id, new_password).await?;
        let patch = UserPatch {
            password_hash: Some(hash),
            password_is_set: Some(true),
            password_last_set: Some(now),
            password_expiry: Some(self.default_password_expiry(now)),
            password_must_change: Some(false),
            ..Default::default()
        };
        let mut tx = self.begin().await?;
        if !tx.mark_prt_used(&token.hash(), now, &self.ctx_json(ctx)).await? {
            return Err(could_not_access());
        }
        tx.update_user(&user.user_id, &patch).await?;
        let epoch = tx.bump_epoch(&user.user_id).await?;
        self.commit(tx, a).await?;
        self.revoke_after_commit(&user.user_id, epoch, None).await;
        self.throttle_reset(&Key::user(&user.username)).await;
        self.notify(ctx, EventKind::PasswordChanged, &user, None);
        Ok(())
    }
}

impl PasswordResetApi<'_> {
    /// `create_token`: always `Ok` for an empty or unknown credential (nothing is written); for a
    /// found, approved user a PRT is committed before the call returns and handed to the notifier.
    pub async fn create_token(&self, ctx: &CallCtx, credential: &str) -> SsoResult<()> {
        let s = self.s;
        let mut a = s.audit(ctx, "password_reset.create_token", Kind::Write);
        let r = s.create_token_inner(ctx, &mut a, credential).await;
        s.finish(a, r).await
    }

    /// `access_token`: exactly one of concurrent callers gets the reset key.
    pub async fn access_token(&self, ctx: &CallCtx, token: &PrtToken) -> SsoResult<AccessTokenCtx> {
        let s = self.s;
        let mut a = s.audit(ctx, "password_reset.access_token", Kind::Write);
        let r = s.access_token_inner(ctx, &mut a, token).await;
        s.finish(a, r).await
    }

    /// `change_password` (reset): single use; sets the password and revokes every session; TOTP
    /// stays as it was.
    pub async fn change_password(
        &self,
        ctx: &CallCtx,
        token: &PrtToken,
        reset_key: &ResetKey,
        new_password: &Password,
    ) -> SsoResult<()> {
        let s = self.s;
        let mut a = s.audit(ctx, "password_reset.change_password", Kind::Write);
        let r = s.reset_change_inner(ctx, &mut a, token, reset_key, new_password).await;
        s.finish(a, r).await
    }
}
