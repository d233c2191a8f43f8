//! Sessions (spec/sessions.md): login step by step, linked login, logout, logout-all, revoke,
//! verify, renew, get and list.

use super::throttle::Key;
use super::trail::{Audit, Kind};
use super::views::{SessionInfo, SessionListItem, SessionView};
use super::{CallCtx, Inner, UserApi};
use crate::error::{Code, Reason, SsoError, SsoResult};
use crate::ids::{RemoteAddr, SessionId};
use crate::model::{HistoryEntry, SessionRecord, UserPatch, UserRecord};
use crate::secret::{Password, SecretStr, TotpCode, Ust};
use crate::service::metrics::inc;
use crate::service::policy;
use crate::time::Timestamp;

/// Session operations, reached as `sso.session()`.
#[derive(Clone, Copy)]
pub struct SessionApi<'a> {
    pub(crate) s: &'a Inner,
}

/// What `get_list` lists.
#[derive(Debug, Clone)]
pub enum ListTarget {
    /// The current session's user.
    Own,
    /// The user of this UST.
    Ust(Ust),
    /// This user (id as given).
    User(String),
}

/// A session named by its UST or its public id.
#[derive(Debug, Clone)]
pub enum SessionRef {
    /// By UST.
    Ust(Ust),
    /// By public session id (as given).
    Id(String),
}

fn no_session() -> SsoError {
    SsoError::code(Code::E007001, Reason::NoSuchSession)
}

/// The pieces of a new session that differ between password and linked logins.
struct NewSession<'a> {
    auth_type: &'a str,
    auth_principal: &'a str,
    ext_session_id: String,
}

impl Inner {
    /// The address and user agent a login records: the claimed ones only for apps in
    /// `apps.login_metadata_allowed`.
    fn login_metadata(&self, ctx: &CallCtx) -> (RemoteAddr, Option<String>) {
        if self.cfg.apps.login_metadata_allowed.contains(&ctx.current_app) {
            (
                ctx.claimed_remote_addr.clone().unwrap_or_else(|| ctx.remote_addr.clone()),
                ctx.claimed_user_agent.clone().or_else(|| ctx.user_agent.clone()),
            )
        } else {
            (ctx.remote_addr.clone(), ctx.user_agent.clone())
        }
    }

    /// Login step 6 (and the same step of `login_linked`): a TOTP code when the user has TOTP on.
    /// Returns whether a code was checked.
    async fn login_totp(&self, a: &mut Audit, user: &UserRecord, code: Option<&TotpCode>, ip: &Key) -> SsoResult<bool> {
        if !user.is_totp_enabled {
            return Ok(false);
        }
        let Some(code) = code.filter(|c| !c.is_empty()) else {
            return Err(self.flagged(self.cfg.login.inform_if_totp_missing, Code::E005008, Reason::TotpMissing));
        };
        self.reserve(a, &Key::totp(&user.user_id)).await?;
        if let Err(e) = self.check_totp_code(user, code).await {
            if matches!(e, SsoError::Validation { .. }) {
                self.count_failure(ip).await;
            }
            return Err(e);
        }
        Ok(true)
    }

    /// Login steps 7–11 (app allowed for login, address, lock, sign-up, approval).
    fn login_account(&self, ctx: &CallCtx, user: &UserRecord, remote: &RemoteAddr, now: Timestamp) -> SsoResult<()> {
        if !self.cfg.apps.login_allowed.contains(&ctx.current_app) {
            return Err(self.flagged(self.cfg.apps.inform_if_app_invalid, Code::E004001, Reason::AppNotAllowed));
        }
        self.check_account(user, remote, now, false)
    }

    /// Steps 17–19: per-user cap, create the session, audit (deleting the session again when a
    /// required sink fails: the compensation of spec/audit.md §2).
    async fn open_session(
        &self,
        ctx: &CallCtx,
        a: &mut Audit,
        user: &UserRecord,
        epoch: u64,
        kind: NewSession<'_>,
        warning: bool,
    ) -> SsoResult<SessionInfo> {
        let now = self.now();
        let max = self.cfg.session.max_per_user;
        if max > 0 {
            let mut live = self.stores.sessions.list_by_user(&user.user_id).await?;
            live.retain(|s| !s.is_expired(now) && s.epoch == epoch);
            live.sort_by_key(|s| s.creation_time);
            let excess = (live.len() + 1).saturating_sub(max as usize);
            for old in live.iter().take(excess) {
                if self.stores.sessions.delete(&old.session_id).await? {
                    inc(&self.metrics.sessions_revoked);
                }
            }
            if excess > 0 {
                a.detail("sessions_revoked", excess);
            }
        }
        let ust = Ust::generate()?;
        let session_id = ust.session_id().ok_or_else(SsoError::internal)?;
        let abs = match self.cfg.session.max_lifetime {
            0 => None,
            m => Some(now.add_secs(i64::try_from(m.saturating_mul(60)).unwrap_or(i64::MAX))),
        };
        let mut expiration = now.plus(self.session_expiry(&ctx.current_app, user));
        if let Some(abs) = abs {
            expiration = expiration.min(abs);
        }
        let (remote, ua) = self.login_metadata(ctx);
        let record = SessionRecord {
            session_id: session_id.clone(),
            ust_hash: ust.hash(),
            user_id: user.user_id.clone(),
            creation_time: now,
            expiration_time: expiration,
            abs_expiration_time: abs,
            epoch,
            remote_addr: remote.to_string(),
            user_agent: ua,
            current_app: ctx.current_app.clone(),
            auth_type: kind.auth_type.to_owned(),
            auth_principal: kind.auth_principal.to_owned(),
            ext_session_id: kind.ext_session_id,
            history: Vec::new(),
        };
        self.stores.sessions.create(&record).await.map_err(|e| {
            inc(&self.metrics.store_errors);
            tracing::warn!(error = %e, "session could not be created");
            SsoError::Unavailable { backend: "store" }
        })?;
        a.target_session(&session_id);
        a.rec.set_result(Ok(if warning { Some(Code::W003005) } else { None }));
        a.done = true;
        if self.trail.write(a.stamped(), false).await.is_err() && self.trail.fail_closed() {
            let _ = self.stores.sessions.delete(&session_id).await;
            return Err(SsoError::Unavailable { backend: "audit" });
        }
        inc(&self.metrics.sessions_created);
        Ok(SessionInfo {
            ust,
            session_id,
            user_id: user.user_id.clone(),
            username: user.username.clone(),
            creation_time: now,
            expiration_time: expiration,
            has_w_about_to_exp: warning,
        })
    }

    /// Commits a password change made during login (steps 14–15). The login record is written
    /// at step 19; this change has no record of its own.
    async fn login_password_write(&self, user: &UserRecord, patch: &UserPatch, revoke: bool) -> SsoResult<u64> {
        let mut tx = self.begin().await?;
        tx.update_user(&user.user_id, patch).await?;
        let epoch = if revoke { tx.bump_epoch(&user.user_id).await? } else { user.session_epoch };
        self.commit_users(tx).await?;
        if revoke {
            self.revoke_after_commit(&user.user_id, epoch, None).await;
        }
        Ok(epoch)
    }

    #[allow(clippy::too_many_lines)]
    async fn login_inner(
        &self,
        ctx: &CallCtx,
        a: &mut Audit,
        username: &str,
        password: &Password,
        new_password: Option<&Password>,
        totp_code: Option<&TotpCode>,
    ) -> SsoResult<SessionInfo> {
        let cfg = &self.cfg;
        // 1. current_app ∈ apps.all
        self.check_app(ctx)?;
        // 2. username and password non-empty
        if username.is_empty() || password.is_empty() {
            return Err(SsoError::not_allowed(Reason::EmptyCredentials));
        }
        // 3. throttle gate: ip not blocked, user attempt reserved
        let ip = Key::ip(ctx.remote_addr.client(), cfg.throttle.ipv6_prefix);
        self.gate(a, &ip).await?;
        let user_key = Key::user(username);
        self.reserve(a, &user_key).await?;
        // 4. look up the user, whatever its state
        let user = self.stores.users.get_by_username(username).await?;
        // 5. verify the password (the dummy hash when there is no user)
        let verdict = match &user {
            Some(u) if u.password_is_set => self.verify_password(u, password).await?,
            _ => {
                self.verify_dummy(password).await?;
                None
            }
        };
        let Some(user) = user else {
            self.count_failure(&ip).await;
            return Err(SsoError::not_allowed(Reason::UnknownUser));
        };
        a.target_user(&user.user_id);
        let Some(rehash_wanted) = verdict else {
            self.count_failure(&ip).await;
            return Err(SsoError::not_allowed(Reason::BadPassword));
        };
        // 6. TOTP
        let totp_checked = self.login_totp(a, &user, totp_code, &ip).await?;
        a.detail("totp", totp_checked);
        // 7–11. app allowed for login, address, lock, sign-up, approval
        let now = self.now();
        let (remote, _) = self.login_metadata(ctx);
        self.login_account(ctx, &user, &remote, now)?;
        // 12. password not expired
        if user.password_expiry.is_some_and(|e| e <= now) {
            return Err(self.flagged(cfg.password.inform_if_expired, Code::E003004, Reason::PasswordExpired));
        }
        // 13. password about to expire
        let threshold = cfg.password.about_to_expire_threshold;
        let mut warning = false;
        if threshold > 0
            && let Some(exp) = user.password_expiry
        {
            let window = exp.add_secs(-i64::try_from(threshold.saturating_mul(86_400)).unwrap_or(i64::MAX));
            if now > window {
                match (cfg.password.inform_if_about_to_expire, cfg.password.log_in_if_about_to_expire) {
                    (true, true) => warning = true,
                    (false, true) => {}
                    (true, false) => return Err(SsoError::code(Code::E003006, Reason::PasswordAboutToExpire)),
                    (false, false) => return Err(SsoError::not_allowed(Reason::PasswordAboutToExpire)),
                }
            }
        }
        // 14. must change
        let mut epoch = user.session_epoch;
        let mut password_changed = false;
        if user.password_must_change {
            let Some(new_pw) = new_password.filter(|p| !p.is_empty()) else {
                return Err(self.flagged(cfg.password.inform_if_must_be_changed, Code::E003007, Reason::MustChange));
            };
            let pc = policy::PasswordContext { username: Some(&user.username), ..Default::default() };
            let bad = |c: Code| SsoError::code_public(c, cfg.password.inform_if_invalid, Reason::NewPasswordInvalid);
            policy::validate_password(&cfg.password, new_pw.expose(), pc).map_err(bad)?;
            if new_pw.ct_eq(password.expose()) {
                return Err(bad(Code::E003001));
            }
            let hash = self.new_password_hash(&user.user_id, new_pw).await?;
            let patch = UserPatch {
                password_hash: Some(hash),
                password_is_set: Some(true),
                password_last_set: Some(now),
                password_expiry: Some(self.default_password_expiry(now)),
                password_must_change: Some(false),
                ..Default::default()
            };
            epoch = self.login_password_write(&user, &patch, cfg.password.revoke_sessions_on_change).await?;
            password_changed = true;
            warning = false;
        }
        a.detail("password_changed", password_changed);
        // 15. re-hash legacy or differently-parameterised hashes
        let mut rehashed = false;
        if !password_changed && (rehash_wanted || self.needs_rehash(&user)) {
            let legacy = self.password_hash_of(&user).is_ok_and(|h| h.starts_with("$pbkdf2"));
            let hash = self.new_password_hash(&user.user_id, password).await?;
            let patch = UserPatch { password_hash: Some(hash), ..Default::default() };
            match self.login_password_write(&user, &patch, false).await {
                Ok(_) => {
                    rehashed = true;
                    if legacy {
                        inc(&self.metrics.legacy_hashes_upgraded);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "password re-hash could not be stored"),
            }
        }
        a.detail("rehashed", rehashed);
        a.detail("warning", warning);
        // 16. reset the user and totp keys — 17–19. cap, create, audit: at once (the resets are
        // best effort and independent of the session; a store round trip each)
        let totp_key = Key::totp(&user.user_id);
        if warning {
            a.warning = Some(Code::W003005);
        }
        let kind = NewSession { auth_type: "default", auth_principal: &user.username, ext_session_id: String::new() };
        // A checked code reserved the totp key (step 6): clear it. Without one the key is rarely
        // counted (failures of `validate_code`, or from before TOTP was turned off), so look
        // before writing.
        let clear_totp = async {
            if totp_checked {
                self.throttle_reset(&totp_key).await;
            } else {
                self.throttle_reset_if_counted(&totp_key).await;
            }
        };
        let (_, _, info) = tokio::join!(
            self.throttle_reset(&user_key),
            clear_totp,
            self.open_session(ctx, a, &user, epoch, kind, warning)
        );
        let info = info?;
        inc(&self.metrics.logins_ok);
        Ok(info)
    }

    async fn login_linked_inner(
        &self,
        ctx: &CallCtx,
        a: &mut Audit,
        auth_type: &str,
        auth_username: &str,
        ext_session_id: Option<&str>,
        totp_code: Option<&TotpCode>,
    ) -> SsoResult<SessionInfo> {
        self.check_app(ctx)?;
        let ip = Key::ip(ctx.remote_addr.client(), self.cfg.throttle.ipv6_prefix);
        self.gate(a, &ip).await?;
        let link = self
            .stores
            .links
            .get_link(auth_type, auth_username)
            .await?
            .filter(|l| l.is_active)
            .ok_or_else(|| SsoError::not_allowed(Reason::UnknownUser))?;
        let user = self
            .stores
            .users
            .get_by_id(&link.user_id)
            .await?
            .ok_or_else(|| SsoError::not_allowed(Reason::UnknownUser))?;
        a.target_user(&user.user_id);
        let totp_checked = self.login_totp(a, &user, totp_code, &ip).await?;
        a.detail("totp", totp_checked);
        let now = self.now();
        let (remote, _) = self.login_metadata(ctx);
        self.login_account(ctx, &user, &remote, now)?;
        // A successful TOTP check resets the `totp` key (spec/concepts.md §8), as login step 16 does.
        if totp_checked {
            self.throttle_reset(&Key::totp(&user.user_id)).await;
        }
        let ext = match ext_session_id.filter(|e| !e.is_empty()) {
            Some(e) => format!("{}.{e}", link.auth_id),
            None => link.auth_id.to_string(),
        };
        // spec/audit.md §3 lists these for both login ops; no password is used here, so none of
        // them can have happened.
        a.detail("warning", false);
        a.detail("password_changed", false);
        a.detail("rehashed", false);
        let kind = NewSession { auth_type: &link.auth_type, auth_principal: &link.auth_username, ext_session_id: ext };
        let info = self.open_session(ctx, a, &user, user.session_epoch, kind, false).await?;
        inc(&self.metrics.logins_ok);
        Ok(info)
    }

    /// `logout`: any existing session can be ended, whatever the account state.
    pub(crate) async fn logout(&self, ctx: &CallCtx) -> SsoResult<()> {
        let mut a = self.audit(ctx, "user.logout", Kind::Write);
        let r = async {
            self.check_app(ctx)?;
            let ust = ctx.current_ust.as_ref().ok_or_else(no_session)?;
            let sid = ust.session_id().ok_or_else(no_session)?;
            let s = self.stores.sessions.get(&sid).await?.ok_or_else(no_session)?;
            if !crate::crypto::digest::ct_eq(&s.ust_hash, &ust.hash()) {
                return Err(no_session());
            }
            // An expired session is already invalid: `E007001` (spec/sessions.md §2); the cleanup
            // task deletes its record.
            if s.is_expired(self.now()) {
                return Err(no_session());
            }
            a.rec.actor = s.user_id.as_str().to_owned().into();
            a.rec.actor_session_id = Some(sid.to_string());
            a.target_user(&s.user_id);
            a.target_session(&sid);
            if !self.stores.sessions.delete(&sid).await? {
                return Err(no_session());
            }
            inc(&self.metrics.sessions_revoked);
            Ok(())
        }
        .await;
        self.finish(a, r).await
    }

    /// Steps 2–5 for a session named by id (no UST to check).
    async fn resolve_session_id(&self, sid: &SessionId, now: Timestamp) -> SsoResult<(SessionRecord, UserRecord)> {
        let s = self.stores.sessions.get(sid).await?.ok_or_else(no_session)?;
        if s.is_expired(now) {
            return Err(no_session());
        }
        let u = self.stores.users.get_by_id(&s.user_id).await?.ok_or_else(no_session)?;
        if s.epoch != u.session_epoch {
            return Err(no_session());
        }
        Ok((s, u))
    }

    async fn resolve_ref(
        &self,
        r: &SessionRef,
        now: Timestamp,
    ) -> SsoResult<(std::sync::Arc<SessionRecord>, std::sync::Arc<UserRecord>)> {
        match r {
            SessionRef::Ust(u) => self.resolve_session(u, now).await,
            SessionRef::Id(id) => {
                let sid = SessionId::parse(id).ok_or_else(no_session)?;
                let (s, u) = self.resolve_session_id(&sid, now).await?;
                Ok((std::sync::Arc::new(s), std::sync::Arc::new(u)))
            }
        }
    }
}

impl UserApi<'_> {
    /// `login` (spec/sessions.md §1): the 19 steps in order. Unauthenticated.
    pub async fn login(
        &self,
        ctx: &CallCtx,
        username: &str,
        password: &Password,
        new_password: Option<&Password>,
        totp_code: Option<&TotpCode>,
    ) -> SsoResult<SessionInfo> {
        let s = self.s;
        let mut a = s.audit(ctx, "user.login", Kind::Write);
        a.detail("username", username);
        a.detail("auth_type", "default");
        let r = s.login_inner(ctx, &mut a, username, password, new_password, totp_code).await;
        if r.is_err() {
            inc(&s.metrics.logins_error);
        }
        s.finish(a, r).await
    }

    /// `login_linked` (Rust API only): the embedder vouches that the external principal
    /// authenticated; TOTP is still required when the user has it on.
    pub async fn login_linked(
        &self,
        ctx: &CallCtx,
        auth_type: &str,
        auth_username: &str,
        ext_session_id: Option<&str>,
        totp_code: Option<&TotpCode>,
    ) -> SsoResult<SessionInfo> {
        let s = self.s;
        let mut a = s.audit(ctx, "user.login_linked", Kind::Write);
        a.detail("auth_type", auth_type);
        let r = s.login_linked_inner(ctx, &mut a, auth_type, auth_username, ext_session_id, totp_code).await;
        if r.is_err() {
            inc(&s.metrics.logins_error);
        }
        s.finish(a, r).await
    }

    /// `logout`: ends `ctx.current_ust`'s session (`E007001` if unknown).
    pub async fn logout(&self, ctx: &CallCtx) -> SsoResult<()> {
        self.s.logout(ctx).await
    }
}

impl SessionApi<'_> {
    /// `logout` (same as `sso.user().logout`).
    pub async fn logout(&self, ctx: &CallCtx) -> SsoResult<()> {
        self.s.logout(ctx).await
    }

    /// `logout_all`: revokes all the target's sessions (the caller's own survives with
    /// `keep_current` on a self call). Returns the number of records deleted.
    pub async fn logout_all(&self, ctx: &CallCtx, user_id: Option<&str>, keep_current: bool) -> SsoResult<u32> {
        let s = self.s;
        let mut a = s.audit(ctx, "session.logout_all", Kind::Write);
        a.detail("keep_current", keep_current);
        let r = async {
            let caller = s.authenticate(ctx, &mut a, false).await?;
            let target = s.target(&caller, user_id, Code::E005001, &mut a).await?;
            let keep = if caller.user_id() == Some(&target.user_id) && keep_current {
                caller.session_id().cloned()
            } else {
                None
            };
            let live = s.live_sessions(&target, s.now()).await?;
            let revoked = live.iter().filter(|x| Some(&x.session_id) != keep.as_ref()).count();
            a.detail("revoked", revoked);
            let mut tx = s.begin().await?;
            let epoch = tx.bump_epoch(&target.user_id).await?;
            s.commit(tx, &mut a).await?;
            let n = s.revoke_after_commit(&target.user_id, epoch, keep.as_ref()).await;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        }
        .await;
        s.finish(a, r).await
    }

    /// `revoke`: ends one session by its public id. A regular user cannot tell a foreign id from
    /// a missing one (`E007001` for both).
    pub async fn revoke(&self, ctx: &CallCtx, session_id: &str) -> SsoResult<()> {
        let s = self.s;
        let mut a = s.audit(ctx, "session.revoke", Kind::Write);
        let r = async {
            let caller = s.authenticate(ctx, &mut a, false).await?;
            let sid = SessionId::parse(session_id).ok_or_else(no_session)?;
            let rec = s.stores.sessions.get(&sid).await?.ok_or_else(no_session)?;
            // Recorded even when refused: the caller sees `E007001`, the trail names the session.
            a.target_user(&rec.user_id);
            a.target_session(&sid);
            if rec.is_expired(s.now()) || (!caller.is_super() && caller.user_id() != Some(&rec.user_id)) {
                return Err(no_session());
            }
            s.stores.sessions.delete(&sid).await?;
            inc(&s.metrics.sessions_revoked);
            Ok(())
        }
        .await;
        s.finish(a, r).await
    }

    /// `verify`: whether `target_ust` is valid (pipeline steps 2–10). Super-users, or a regular
    /// user for their own UST. Never renews.
    pub async fn verify(&self, ctx: &CallCtx, target_ust: &Ust) -> SsoResult<bool> {
        let s = self.s;
        let mut a = s.audit(ctx, "session.verify", Kind::Read);
        let r = async {
            let caller = s.authenticate(ctx, &mut a, false).await?;
            let own = ctx.current_ust.as_ref().is_some_and(|u| u.ct_eq(target_ust.expose()));
            if !caller.is_super() && !own {
                return Err(SsoError::not_allowed(Reason::NotOwner));
            }
            // Verifying one's own session: the pipeline just validated it (the same record, user
            // and account checks), so it is not read a second time.
            if own && let Some(me) = caller.session_user() {
                a.target_user(&me.user.user_id);
                a.target_session(&me.session.session_id);
                a.detail("is_valid", true);
                return Ok(true);
            }
            let now = a.now;
            let valid = match s.resolve_session(target_ust, now).await {
                Ok((sess, user)) => {
                    a.target_user(&user.user_id);
                    a.target_session(&sess.session_id);
                    s.check_account(&user, &ctx.remote_addr, now, true).is_ok()
                }
                Err(SsoError::Validation { .. }) => false,
                Err(e) => return Err(e),
            };
            a.detail("is_valid", valid);
            Ok(valid)
        }
        .await;
        s.finish(a, r).await
    }

    /// `renew`: moves the caller's idle deadline (never backwards, never past the absolute limit).
    pub async fn renew(&self, ctx: &CallCtx) -> SsoResult<Timestamp> {
        let s = self.s;
        let mut a = s.audit(ctx, "session.renew", Kind::Write);
        let r = async {
            let caller = s.authenticate(ctx, &mut a, false).await?;
            let me = caller.session_user().ok_or_else(no_session)?;
            a.target_user(&me.user.user_id);
            a.target_session(&me.session.session_id);
            let now = s.now();
            let mut exp = me.session.expiration_time;
            if let Some(new_exp) = s.renewed_expiration(&me.session, &me.user, now) {
                if !s.stores.sessions.extend(&me.session.session_id, new_exp).await? {
                    return Err(no_session());
                }
                exp = exp.max(new_exp);
            }
            if s.cfg.session.history_max > 0 {
                let entry = HistoryEntry {
                    remote_addr: ctx.remote_addr.to_string(),
                    user_agent: ctx.user_agent.clone(),
                    timestamp_utc: now,
                    ctx_source: "renew".into(),
                    idx: 0,
                };
                s.stores.sessions.append_history(&me.session.session_id, &entry, s.cfg.session.history_max).await?;
            }
            a.detail("expiration_time", exp.to_zato());
            Ok(exp)
        }
        .await;
        s.finish(a, r).await
    }

    /// `get`: a session of one's own user, or any for super-users (`E007001` otherwise).
    pub async fn get(&self, ctx: &CallCtx, target: SessionRef) -> SsoResult<SessionView> {
        let s = self.s;
        let mut a = s.audit(ctx, "session.get", Kind::Read);
        let r = async {
            let caller = s.authenticate(ctx, &mut a, false).await?;
            let (sess, user) = s.resolve_ref(&target, s.now()).await?;
            // Recorded even when refused: the caller sees `E007001`, the trail names the session.
            a.target_user(&user.user_id);
            a.target_session(&sess.session_id);
            if !caller.is_super() && caller.user_id() != Some(&user.user_id) {
                return Err(no_session());
            }
            Ok(SessionView::of(&sess))
        }
        .await;
        s.finish(a, r).await
    }

    /// `get_list`: unexpired sessions of the current epoch, newest first. Never a UST.
    pub async fn get_list(&self, ctx: &CallCtx, target: ListTarget) -> SsoResult<Vec<SessionListItem>> {
        let s = self.s;
        let mut a = s.audit(ctx, "session.get_list", Kind::Read);
        let r = async {
            let caller = s.authenticate(ctx, &mut a, false).await?;
            let now = s.now();
            let user = match &target {
                ListTarget::Own => s.target(&caller, None, Code::E005001, &mut a).await?,
                ListTarget::User(id) => s.target(&caller, Some(id), Code::E005001, &mut a).await?,
                ListTarget::Ust(u) => {
                    let (_, owner) = s.resolve_session(u, now).await?;
                    a.target_user(&owner.user_id);
                    if !caller.is_super() && caller.user_id() != Some(&owner.user_id) {
                        return Err(SsoError::not_allowed(Reason::NotOwner));
                    }
                    std::sync::Arc::unwrap_or_clone(owner)
                }
            };
            let mut live = s.live_sessions(&user, now).await?;
            live.sort_by(|x, y| y.creation_time.cmp(&x.creation_time).then_with(|| y.session_id.cmp(&x.session_id)));
            let current = caller.session_id();
            Ok(live.iter().map(|x| SessionListItem::of(x, current)).collect())
        }
        .await;
        s.finish(a, r).await
    }
}
