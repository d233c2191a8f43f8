//! TOTP (spec/totp.md): the seed operation `reset_totp_key`, code verification with replay
//! protection, `validate_code` and the enrolment URI.

use std::time::Duration;

use super::ctx::Caller;
use super::notify::EventKind;
use super::policy;
use super::throttle::Key;
use super::trail::{Audit, Kind};
use super::views::TotpUri;
use super::{CallCtx, Inner, UserApi};
use crate::crypto::totp as otp;
use crate::error::{Code, Reason, SsoError, SsoResult};
use crate::ids::UserId;
use crate::model::{ApprovalStatus, UserRecord};
use crate::secret::{SecretStr, TotpCode, TotpKey, Ust};
use crate::service::metrics::inc;

/// TOTP operations, reached as `sso.totp()`.
#[derive(Clone, Copy)]
pub struct TotpApi<'a> {
    pub(crate) s: &'a Inner,
}

/// Whose code `validate_code` checks.
#[derive(Debug, Clone)]
pub enum TotpTarget {
    /// The user of this UST.
    Ust(Ust),
    /// An approved user by username.
    Username(String),
    /// A user by id (as given).
    UserId(String),
}

impl TotpTarget {
    fn kind(&self) -> &'static str {
        match self {
            TotpTarget::Ust(_) => "ust",
            TotpTarget::Username(_) => "username",
            TotpTarget::UserId(_) => "user_id",
        }
    }
}

impl Inner {
    /// The replay-marker key of a user's current TOTP key generation.
    pub(crate) fn totp_marker(user: &UserRecord) -> String {
        format!("totp-step:{}:{}", user.user_id, user.totp_key_gen)
    }

    /// The user's TOTP key, decrypted (an `Internal` error, audited `decrypt_failed`, if it cannot be).
    fn totp_key_of(&self, user: &UserRecord) -> SsoResult<TotpKey> {
        let text = self.decrypt_field(&user.user_id, "totp_key", &user.totp_key_enc)?;
        TotpKey::parse(&text).map_err(|_| SsoError::Internal { reason: Reason::DecryptFailed })
    }

    /// Verifies a code (spec/totp.md §3); the caller has already reserved the `totp` key.
    /// Malformed, wrong and replayed codes all give `E005001` (reasons differ in the audit).
    pub(crate) async fn check_totp_code(&self, user: &UserRecord, code: &TotpCode) -> SsoResult<()> {
        let r = self.check_totp_code_inner(user, code).await;
        inc(if r.is_ok() { &self.metrics.totp_ok } else { &self.metrics.totp_error });
        r
    }

    async fn check_totp_code_inner(&self, user: &UserRecord, code: &TotpCode) -> SsoResult<()> {
        if !otp::is_well_formed_code(code.expose()) {
            return Err(SsoError::not_allowed(Reason::TotpInvalid));
        }
        let key = self.totp_key_of(user)?;
        let now = self.now();
        let t = otp::step_of(u64::try_from(now.as_secs()).unwrap_or(0));
        let c = &self.cfg.totp;
        let step = otp::match_step(key.expose_bytes(), code.expose(), t, c.window_back, c.window_ahead)
            .ok_or_else(|| SsoError::not_allowed(Reason::TotpInvalid))?;
        if !c.allow_reuse {
            let ttl = Duration::from_secs((u64::from(c.window_back) + u64::from(c.window_ahead) + 2) * otp::STEP_SECS);
            let fresh = self.stores.counters.advance_step(&Self::totp_marker(user), step, now, ttl).await?;
            if !fresh {
                return Err(SsoError::not_allowed(Reason::TotpReplay));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_lines)]
    async fn reset_totp_key_inner(
        &self,
        ctx: &CallCtx,
        a: &mut Audit,
        user_id: Option<&UserId>,
        key: Option<&str>,
        key_label: Option<&str>,
    ) -> SsoResult<Option<TotpKey>> {
        let cfg = &self.cfg.totp;
        // 1–2. current_app, then the pipeline (an Operator skips it and must name a target).
        let caller = self.authenticate(ctx, a, false).await?;
        // 3–5. the target: self, or another user for super-users (E008002 / E005001).
        let target = self.target(&caller, user_id.map(UserId::as_str), Code::E008002, a).await?;
        let own = caller.user_id() == Some(&target.user_id);
        // 6. optional re-authentication for own resets.
        if own
            && cfg.self_reset_max_session_age_s > 0
            && let Caller::Session(me) = &caller
        {
            let age = self.now().since(me.session.creation_time);
            if age > Duration::from_secs(cfg.self_reset_max_session_age_s) {
                return Err(SsoError::code(Code::E005009, Reason::ReauthRequired));
            }
        }
        // 7. a supplied key must be allowed and valid.
        let supplied = match key.filter(|k| !k.is_empty()) {
            Some(k) => {
                if !cfg.allow_supplied_key {
                    return Err(SsoError::invalid_input());
                }
                Some(TotpKey::parse(k).map_err(|_| SsoError::invalid_input())?)
            }
            None => None,
        };
        // 8. a label must be valid.
        let label = key_label.filter(|l| !l.is_empty());
        if let Some(l) = label
            && !policy::valid_label(l)
        {
            return Err(SsoError::invalid_input());
        }
        // 9. generate when no key was given.
        let generated = supplied.is_none();
        let new_key = match supplied {
            Some(k) => k,
            None => TotpKey::generate()?,
        };
        a.detail("key_source", if generated { "generated" } else { "supplied" });
        a.detail("label", if label.is_some() { "custom" } else { "default" });
        // 10. one atomic update, with the epoch bump when sessions are to be revoked.
        let bump = if own { cfg.revoke_other_sessions_on_self_reset } else { cfg.revoke_sessions_on_admin_reset };
        let keep = if own { caller.session_id().cloned() } else { None };
        let revoked = if bump {
            let live = self.live_sessions(&target, self.now()).await?;
            live.iter().filter(|s| Some(&s.session_id) != keep.as_ref()).count()
        } else {
            0
        };
        a.detail("sessions_revoked", revoked);
        let key_enc = self.encrypt_field(&target.user_id, "totp_key", new_key.expose_base32())?;
        let label_enc = self.encrypt_field(&target.user_id, "totp_label", label.unwrap_or(""))?;
        let mut tx = self.begin().await?;
        let (_gen, epoch) = tx.update_totp(&target.user_id, &key_enc, &label_enc, bump).await?;
        // 12. the record is written before the commit.
        self.commit(tx, a).await?;
        // 11. delete the revoked records; reset the target's totp throttle key.
        if bump {
            self.revoke_after_commit(&target.user_id, epoch, keep.as_ref()).await;
        }
        self.throttle_reset(&Key::totp(&target.user_id)).await;
        // 13. notify (no key, no label).
        self.notify(ctx, EventKind::TotpReset, &target, Some(a.rec.actor.to_string()));
        // 14. the key only when generated (with the enrolment URI's issuer and account).
        let account = label.map_or_else(|| target.username.clone(), str::to_owned);
        Ok(generated.then(|| new_key.with_uri(&cfg.issuer, &account)))
    }

    async fn validate_code_inner(
        &self,
        ctx: &CallCtx,
        a: &mut Audit,
        code: Option<&TotpCode>,
        target: &TotpTarget,
    ) -> SsoResult<()> {
        self.check_app(ctx)?;
        let caller = match &ctx.current_ust {
            Some(_) => Some(self.authenticate(ctx, a, false).await?),
            None => None,
        };
        let now = self.now();
        let user = match target {
            TotpTarget::Ust(u) => std::sync::Arc::unwrap_or_clone(self.resolve_session(u, now).await?.1),
            TotpTarget::Username(name) => self
                .stores
                .users
                .get_by_username(name)
                .await?
                .filter(|u| u.approval_status == ApprovalStatus::Approved)
                .ok_or_else(|| SsoError::not_allowed(Reason::NoSuchUser))?,
            TotpTarget::UserId(id) => match UserId::parse(id) {
                Some(uid) => self.stores.users.get_by_id(&uid).await?,
                None => None,
            }
            .ok_or_else(|| SsoError::not_allowed(Reason::NoSuchUser))?,
        };
        // The target is known from here on, refused or not (spec/audit.md §3 "the user when known").
        a.target_user(&user.user_id);
        if let Some(c) = &caller
            && !c.is_super()
            && c.user_id() != Some(&user.user_id)
        {
            return Err(SsoError::not_allowed(Reason::NotOwner));
        }
        let code = code
            .filter(|c| !c.is_empty())
            .ok_or_else(|| self.flagged(self.cfg.login.inform_if_totp_missing, Code::E005008, Reason::TotpMissing))?;
        let key = Key::totp(&user.user_id);
        self.reserve(a, &key).await?;
        self.check_totp_code(&user, code).await?;
        self.throttle_reset(&key).await;
        Ok(())
    }
}

impl UserApi<'_> {
    /// `reset_totp_key` — the seed operation (spec/totp.md §2).
    ///
    /// Changes a user's TOTP key and label. Regular users change their own key; super-users
    /// anyone's. `key` `None` or `""` generates a 160-bit key, returned as `Some`; a supplied key
    /// is validated and never returned (`None`). An empty label selects the default label. A
    /// super-user resetting another user's key revokes that user's sessions (by default). Every
    /// call, refused ones included, writes one audit record `user.reset_totp_key` without the key
    /// or the label.
    pub async fn reset_totp_key(
        &self,
        ctx: &CallCtx,
        user_id: Option<&UserId>,
        key: Option<&str>,
        key_label: Option<&str>,
    ) -> SsoResult<Option<TotpKey>> {
        let s = self.s;
        let mut a = s.audit(ctx, "user.reset_totp_key", Kind::Write);
        let r = s.reset_totp_key_inner(ctx, &mut a, user_id, key, key_label).await;
        s.finish(a, r).await
    }

    /// `reset_totp_key` with the target given as text (the HTTP and CLI form): a malformed id is
    /// treated like an unknown one.
    pub async fn reset_totp_key_for(
        &self,
        ctx: &CallCtx,
        user_id: Option<&str>,
        key: Option<&str>,
        key_label: Option<&str>,
    ) -> SsoResult<Option<TotpKey>> {
        let s = self.s;
        let mut a = s.audit(ctx, "user.reset_totp_key", Kind::Write);
        let r = async {
            match user_id.filter(|u| !u.is_empty()) {
                None => s.reset_totp_key_inner(ctx, &mut a, None, key, key_label).await,
                Some(text) => match UserId::parse(text) {
                    Some(id) => s.reset_totp_key_inner(ctx, &mut a, Some(&id), key, key_label).await,
                    None => {
                        // Same order of checks as a well-formed unknown id.
                        let caller = s.authenticate(ctx, &mut a, false).await?;
                        if !caller.is_super() {
                            return Err(SsoError::code(Code::E008002, Reason::NotOwner));
                        }
                        Err(SsoError::not_allowed(Reason::NoSuchUser))
                    }
                },
            }
        }
        .await;
        s.finish(a, r).await
    }
}

impl TotpApi<'_> {
    /// `validate_code` (spec/totp.md §4): checks a code for the target; `Ok(())` = valid.
    pub async fn validate_code(&self, ctx: &CallCtx, code: Option<&TotpCode>, target: TotpTarget) -> SsoResult<()> {
        let s = self.s;
        let mut a = s.audit(ctx, "totp_api.validate_code", Kind::Write);
        a.detail("target_kind", target.kind());
        a.detail("has_code", code.is_some_and(|c| !c.is_empty()));
        let r = s.validate_code_inner(ctx, &mut a, code, &target).await;
        s.finish(a, r).await
    }

    /// `enrolment_uri` (spec/totp.md §7): the caller's own key as an `otpauth://` URI and an SVG
    /// QR code, only while the caller's TOTP is off (`E008001` after).
    pub async fn enrolment_uri(&self, ctx: &CallCtx) -> SsoResult<TotpUri> {
        let s = self.s;
        // Not a read of spec/audit.md §3 (not marked R): recorded whatever `audit.include_reads` says.
        let mut a = s.audit(ctx, "user.get_totp_uri", Kind::Write);
        let r = async {
            let caller = s.authenticate(ctx, &mut a, false).await?;
            let me = caller.session_user().ok_or_else(SsoError::invalid_input)?;
            a.target_user(&me.user.user_id);
            if me.user.is_totp_enabled {
                return Err(SsoError::code(Code::E008001, Reason::InvalidInput));
            }
            let key = s.totp_key_of(&me.user)?;
            let label = s.decrypt_field(&me.user.user_id, "totp_label", &me.user.totp_label_enc)?;
            let account = if label.is_empty() { me.user.username.clone() } else { label.to_string() };
            let uri = key.otpauth_uri_for(&s.cfg.totp.issuer, &account);
            let qr_svg = qr_svg(&uri)?;
            Ok(TotpUri { uri, qr_svg })
        }
        .await;
        s.finish(a, r).await
    }
}

/// An SVG QR code of `text` (error correction M, quiet zone 4 modules).
pub fn qr_svg(text: &str) -> SsoResult<String> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|_| SsoError::internal())?;
    Ok(code.render::<svg::Color<'_>>().quiet_zone(true).min_dimensions(200, 200).build())
}

/// Terminal rendering of a QR code of `text` with block characters (CLI `--qr`).
pub fn qr_text(text: &str) -> SsoResult<String> {
    use qrcode::render::unicode;
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|_| SsoError::internal())?;
    Ok(code.render::<unicode::Dense1x2>().quiet_zone(true).build())
}
