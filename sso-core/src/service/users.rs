//! User operations (spec/users.md): create, sign-up and approval, reads and search, passwords,
//! updates, locking, deletion, linked authentication and import. Login and logout are in
//! `sessions.rs`; `reset_totp_key` in `totp.rs` (both reached through [`UserApi`]).

use serde_json::json;

use super::ctx::Caller;
use super::notify::{EventKind, SignupData};
use super::policy::{self, PasswordContext};
use super::throttle::Key;
use super::trail::{Audit, Kind};
use super::views::{LinkedAuthView, SearchResult, UserView};
use super::{CallCtx, Inner};
use crate::error::{Code, Reason, SsoError, SsoResult, StoreError};
use crate::ids::{AuthId, UserId};
use crate::model::{
    ApprovalStatus, LinkedAuthRecord, NameField, SignUpStatus, UserPatch, UserQuery, UserRecord, upper,
};
use crate::secret::{ConfirmToken, Password, SecretStr, TotpCode, TotpKey, TotpKeyText};
use crate::time::Timestamp;

/// User operations, reached as `sso.user()`.
#[derive(Clone, Copy)]
pub struct UserApi<'a> {
    pub(crate) s: &'a Inner,
}

/// Input of `create_user` / `create_super_user` (all optional except as checked).
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    /// Required (missing → `E001001`).
    pub username: Option<String>,
    /// Hashed; generated when absent (nobody learns it).
    pub password: Option<Password>,
    /// Default false.
    pub password_must_change: Option<bool>,
    /// E-mail.
    pub email: Option<String>,
    /// Display name (default: first middle last).
    pub display_name: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Middle name.
    pub middle_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Create locked.
    pub is_locked: Option<bool>,
    /// `before_confirmation` or `final` (default `final`); anything else → `E008002`.
    pub sign_up_status: Option<String>,
    /// Default false.
    pub is_totp_enabled: Option<bool>,
    /// A TOTP key to use instead of a generated one.
    pub totp_key: Option<TotpKeyText>,
    /// A TOTP label (default label when absent).
    pub totp_label: Option<String>,
}

/// Input of `signup`.
#[derive(Debug, Clone)]
pub struct SignupCtx {
    /// Username.
    pub username: String,
    /// Password.
    pub password: Password,
    /// E-mail.
    pub email: Option<String>,
    /// Apps the user signs up for.
    pub app_list: Vec<String>,
}

/// Search criteria and options of `search` (spec/users.md §4).
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct SearchCtx {
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub sign_up_status: Option<String>,
    pub approval_status: Option<String>,
    pub cur_page: Option<i64>,
    pub page_size: Option<i64>,
    /// `and` (default) or `or`.
    pub name_op: Option<String>,
    /// Default true.
    pub is_name_exact: Option<bool>,
    /// Accepted and ignored.
    pub paginate: Option<bool>,
}

/// Input of `change_password`.
#[derive(Debug, Clone)]
pub struct ChangePassword {
    /// Target (`None` or own id = self).
    pub user_id: Option<String>,
    /// Required for one's own password.
    pub old_password: Option<Password>,
    /// The new password.
    pub new_password: Password,
    /// Days (super-users only; ≤ 0 = default).
    pub password_expiry: Option<i64>,
    /// Super-users only.
    pub must_change: Option<bool>,
}

/// Input of `update_current_user` / `update_user_by_id`: each key absent (`None`), set to null
/// (`Some(None)`) or set (`Some(Some(v))`).
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct UserUpdate {
    pub username: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub display_name: Option<Option<String>>,
    pub first_name: Option<Option<String>>,
    pub middle_name: Option<Option<String>>,
    pub last_name: Option<Option<String>>,
    pub is_totp_enabled: Option<Option<bool>>,
    pub totp_label: Option<Option<String>>,
    pub is_locked: Option<Option<bool>>,
    /// A datetime text (concepts.md §2).
    pub password_expiry: Option<Option<String>>,
    pub password_must_change: Option<Option<bool>>,
    pub sign_up_status: Option<Option<String>>,
    pub approval_status: Option<Option<String>>,
    /// Used only when a user turns their own TOTP on with `totp.require_code_to_enable`.
    pub totp_code: Option<TotpCode>,
}

impl UserUpdate {
    /// The names of the keys present.
    pub fn keys(&self) -> Vec<&'static str> {
        let mut k = Vec::new();
        macro_rules! push {
            ($($f:ident),*) => { $( if self.$f.is_some() { k.push(stringify!($f)); } )* };
        }
        push!(
            username,
            email,
            display_name,
            first_name,
            middle_name,
            last_name,
            is_totp_enabled,
            totp_label,
            is_locked,
            password_expiry,
            password_must_change,
            sign_up_status,
            approval_status
        );
        k
    }

    fn has_admin_keys(&self) -> bool {
        self.is_locked.is_some()
            || self.password_expiry.is_some()
            || self.password_must_change.is_some()
            || self.sign_up_status.is_some()
            || self.approval_status.is_some()
    }
}

/// One row of a Zato user export (spec/users.md §12).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[allow(missing_docs)]
#[serde(default)]
pub struct ImportRow {
    pub user_id: String,
    pub username: String,
    /// A `$pbkdf2-sha512$…` string.
    pub password: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub is_super_user: bool,
    pub is_locked: bool,
    pub locked_time: Option<String>,
    pub locked_by: Option<String>,
    pub approval_status: Option<String>,
    pub approval_status_mod_time: Option<String>,
    pub approval_status_mod_by: Option<String>,
    pub password_is_set: Option<bool>,
    pub password_must_change: bool,
    pub password_last_set: Option<String>,
    pub password_expiry: Option<String>,
    pub sign_up_status: Option<String>,
    pub sign_up_time: Option<String>,
    pub sign_up_confirm_time: Option<String>,
    pub is_totp_enabled: bool,
    pub totp_key: Option<String>,
    pub totp_label: Option<String>,
    pub creation_ctx: Option<String>,
}

impl std::fmt::Debug for ImportOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportOutcome::Imported(id) => write!(f, "Imported({id})"),
            ImportOutcome::Skipped(why) => write!(f, "Skipped({why})"),
        }
    }
}

/// What happened to one import row.
#[derive(Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Imported under this id.
    Imported(UserId),
    /// Skipped, with the reason (no secret in it).
    Skipped(String),
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_owned)
}

fn default_display_name(first: &Option<String>, middle: &Option<String>, last: &Option<String>) -> Option<String> {
    let parts: Vec<&str> =
        [first, middle, last].iter().filter_map(|p| p.as_deref()).filter(|p| !p.is_empty()).collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Whether an unauthenticated sign-up caller may see `c` (the last column of the code table,
/// spec/concepts.md §3): used for the codes of embedders' `SignupValidator`s.
fn signup_public(cfg: &crate::config::Config, c: Code) -> bool {
    match c {
        Code::E001001 | Code::E001003 | Code::E001004 => cfg.signup.inform_if_user_invalid,
        Code::E001002 => cfg.signup.inform_if_user_exists,
        Code::E002001 | Code::E002003 | Code::E002004 | Code::E002005 => cfg.signup.inform_if_email_invalid,
        Code::E002002 => cfg.signup.inform_if_email_exists,
        Code::E003001 | Code::E003002 | Code::E003003 | Code::E003008 => cfg.password.inform_if_invalid,
        Code::E003006 => cfg.password.inform_if_about_to_expire,
        Code::E003004
        | Code::W003005
        | Code::E003007
        | Code::E004001
        | Code::E004002
        | Code::E005001
        | Code::E005002
        | Code::E005003
        | Code::E005004
        | Code::E005006
        | Code::E005007
        | Code::E005008
        | Code::E010001 => true,
        _ => false,
    }
}

fn code(c: Code, reason: Reason) -> SsoError {
    SsoError::code(c, reason)
}

fn invalid() -> SsoError {
    SsoError::invalid_input()
}

impl Inner {
    /// Resolves the target of an operation that takes an optional `user_id` (spec/concepts.md §6):
    /// none or the caller's own id → the caller; another id → `other` unless super-user; unknown
    /// (or malformed) → `E005001`.
    pub(crate) async fn target(
        &self,
        caller: &Caller,
        user_id: Option<&str>,
        other: Code,
        a: &mut Audit,
    ) -> SsoResult<UserRecord> {
        let own = caller.session_user();
        let wanted = user_id.filter(|s| !s.is_empty());
        let user = match (wanted, own) {
            (None, Some(me)) => UserRecord::clone(&me.user),
            (Some(id), Some(me)) if id == me.user.user_id.as_str() => UserRecord::clone(&me.user),
            (None, None) => return Err(invalid()),
            (Some(id), _) => {
                if !caller.is_super() {
                    return Err(code(other, Reason::NotOwner));
                }
                let found = match UserId::parse(id) {
                    Some(uid) => self.stores.users.get_by_id(&uid).await?,
                    None => None,
                };
                found.ok_or_else(|| SsoError::not_allowed(Reason::NoSuchUser))?
            }
        };
        a.target_user(&user.user_id);
        Ok(user)
    }

    fn creation_ctx(&self, ctx: &CallCtx, via: &str) -> String {
        json!({
            "via": via,
            "current_app": ctx.current_app,
            "remote_addr": ctx.remote_addr.to_string(),
            "user_agent": ctx.user_agent,
        })
        .to_string()
    }

    /// The effects of `create_user` (spec/users.md §2) on already-checked input.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn build_user(
        &self,
        ctx: &CallCtx,
        data: &NewUser,
        username: String,
        totp_key: Option<TotpKey>,
        approval: ApprovalStatus,
        mod_by: String,
        locked_by: String,
        sign_up_status: SignUpStatus,
        via: &str,
    ) -> SsoResult<UserRecord> {
        let now = self.now();
        let user_id = UserId::generate()?;
        let generated;
        let password = match &data.password {
            Some(p) if !p.is_empty() => p,
            _ => {
                generated = Password::generate()?;
                &generated
            }
        };
        let password_hash = self.new_password_hash(&user_id, password).await?;
        let (email_enc, email_idx) = match non_empty(&data.email) {
            Some(e) => {
                let (enc, idx) = self.store_email(&user_id, &e)?;
                (Some(enc), Some(idx))
            }
            None => (None, None),
        };
        let first = non_empty(&data.first_name);
        let middle = non_empty(&data.middle_name);
        let last = non_empty(&data.last_name);
        let display = non_empty(&data.display_name).or_else(|| default_display_name(&first, &middle, &last));
        let key = match totp_key {
            Some(k) => k,
            None => TotpKey::generate()?,
        };
        let label = data.totp_label.clone().unwrap_or_default();
        let is_locked = data.is_locked.unwrap_or(false);
        Ok(UserRecord {
            totp_key_enc: self.encrypt_field(&user_id, "totp_key", key.expose_base32())?,
            totp_label_enc: self.encrypt_field(&user_id, "totp_label", &label)?,
            user_id,
            username,
            password_hash,
            password_is_set: true,
            password_must_change: data.password_must_change.unwrap_or(false),
            password_last_set: now,
            password_expiry: self.default_password_expiry(now),
            email_enc,
            email_idx,
            display_name_upper: upper(&display),
            first_name_upper: upper(&first),
            middle_name_upper: upper(&middle),
            last_name_upper: upper(&last),
            display_name: display,
            first_name: first,
            middle_name: middle,
            last_name: last,
            is_super_user: false,
            is_locked,
            locked_time: is_locked.then_some(now),
            locked_by: is_locked.then_some(locked_by),
            approval_status: approval,
            approval_status_mod_time: now,
            approval_status_mod_by: mod_by,
            sign_up_status,
            sign_up_time: now,
            sign_up_confirm_time: None,
            confirm_token_hash: None,
            creation_ctx: self.creation_ctx(ctx, via),
            is_totp_enabled: data.is_totp_enabled.unwrap_or(false),
            totp_key_gen: 1,
            session_epoch: 1,
        })
    }

    /// `now + password.expiry days`, or `None` when it is 0.
    pub(crate) fn default_password_expiry(&self, now: Timestamp) -> Option<Timestamp> {
        let days = self.cfg.password.expiry;
        (days > 0).then(|| now.add_secs(i64::try_from(days.saturating_mul(86_400)).unwrap_or(i64::MAX)))
    }

    fn expiry_in_days(&self, now: Timestamp, days: Option<i64>) -> Option<Timestamp> {
        match days {
            Some(d) if d > 0 => Some(now.add_secs(d.saturating_mul(86_400))),
            _ => self.default_password_expiry(now),
        }
    }

    fn password_ctx<'a>(&self, username: Option<&'a str>, email: Option<&'a str>) -> PasswordContext<'a> {
        PasswordContext { username, email, names: [None; 4] }
    }

    /// Checks and effects shared by `create_user` and `create_super_user`.
    async fn create(
        &self,
        ctx: &CallCtx,
        a: &mut Audit,
        data: NewUser,
        auto_approve: bool,
        super_user: bool,
    ) -> SsoResult<UserView> {
        let caller = self.authenticate(ctx, a, true).await?;
        let username = data.username.clone().unwrap_or_default();
        policy::check_username(&self.cfg, &username).map_err(|c| code(c, Reason::InvalidInput))?;
        if self.stores.users.get_by_username(&username).await?.is_some() {
            return Err(code(Code::E001002, Reason::Conflict));
        }
        // Checked as given (not trimmed): surrounding whitespace is whitespace (E002004).
        if let Some(e) = data.email.as_deref().filter(|e| !e.is_empty()) {
            policy::check_email(&self.cfg, e).map_err(|c| code(c, Reason::InvalidInput))?;
        }
        if let Some(p) = &data.password
            && !p.is_empty()
        {
            let pc = self.password_ctx(Some(&username), data.email.as_deref());
            policy::validate_password(&self.cfg.password, p.expose(), pc)
                .map_err(|c| code(c, Reason::NewPasswordInvalid))?;
        }
        let key = match data.totp_key.as_ref().filter(|k| !k.is_empty()) {
            Some(k) => {
                if !self.cfg.totp.allow_supplied_key {
                    return Err(invalid());
                }
                Some(TotpKey::parse(k.expose()).map_err(|_| invalid())?)
            }
            None => None,
        };
        if let Some(l) = data.totp_label.as_deref().filter(|l| !l.is_empty())
            && !policy::valid_label(l)
        {
            return Err(invalid());
        }
        let sign_up_status = match data.sign_up_status.as_deref() {
            None => SignUpStatus::Final,
            Some(s) => SignUpStatus::parse(s).ok_or_else(invalid)?,
        };
        let operator = matches!(caller, Caller::Operator(_));
        let mod_by = if operator { "auto".to_owned() } else { caller.actor_name() };
        let (approval, sign_up_status) = if super_user {
            (ApprovalStatus::Approved, SignUpStatus::Final)
        } else if auto_approve || !self.cfg.signup.is_approval_needed {
            (ApprovalStatus::Approved, sign_up_status)
        } else {
            (ApprovalStatus::BeforeDecision, sign_up_status)
        };
        let via = if operator { "cli" } else { "api" };
        a.detail("via", via);
        let mut user = self
            .build_user(ctx, &data, username, key, approval, mod_by, caller.actor_name(), sign_up_status, via)
            .await?;
        user.is_super_user = super_user;
        let mut tx = self.begin().await?;
        tx.insert_user(&user).await.map_err(|e| match e {
            StoreError::Conflict { .. } => code(Code::E001002, Reason::Conflict),
            other => other.into(),
        })?;
        a.target_user(&user.user_id);
        self.commit(tx, a).await?;
        self.view(&user, true)
    }

    async fn signup_inner(&self, ctx: &CallCtx, a: &mut Audit, data: &SignupCtx) -> SsoResult<ConfirmToken> {
        let c = &self.cfg;
        let app_flag = c.apps.inform_if_app_invalid;
        self.check_app(ctx)?;
        let signup_apps: &Vec<String> =
            if c.apps.signup_allowed.is_empty() { &c.apps.all } else { &c.apps.signup_allowed };
        if !signup_apps.contains(&ctx.current_app) {
            return Err(self.flagged(app_flag, Code::E004002, Reason::AppNotAllowed));
        }
        for app in &data.app_list {
            if !c.apps.all.contains(app) {
                return Err(self.flagged(app_flag, Code::E004001, Reason::AppInvalid));
            }
            if !signup_apps.contains(app) {
                return Err(self.flagged(app_flag, Code::E004002, Reason::AppNotAllowed));
            }
        }
        let user_invalid = |cd: Code| SsoError::code_public(cd, c.signup.inform_if_user_invalid, Reason::InvalidInput);
        let email_invalid =
            |cd: Code| SsoError::code_public(cd, c.signup.inform_if_email_invalid, Reason::InvalidInput);
        // Checked as given (not trimmed): surrounding whitespace is whitespace (E002004).
        let email = data.email.clone().filter(|e| !e.is_empty());
        if self.stores.users.get_by_username(&data.username).await?.is_some() {
            return Err(SsoError::code_public(Code::E001002, c.signup.inform_if_user_exists, Reason::Conflict));
        }
        if let Some(e) = &email {
            let idx = self.keys.current().email_index(e);
            if !self.stores.users.find_by_email_idx(&idx).await?.is_empty() {
                return Err(SsoError::code_public(Code::E002002, c.signup.inform_if_email_exists, Reason::Conflict));
            }
        }
        policy::check_username(c, &data.username).map_err(user_invalid)?;
        if policy::contains_any_ci(&data.username, &c.user_validation.reject_username) {
            return Err(user_invalid(Code::E001001));
        }
        let pc = self.password_ctx(Some(&data.username), email.as_deref());
        policy::validate_password(&c.password, data.password.expose(), pc)
            .map_err(|cd| SsoError::code_public(cd, c.password.inform_if_invalid, Reason::NewPasswordInvalid))?;
        match &email {
            None if c.signup.is_email_required => return Err(email_invalid(Code::E002005)),
            None => {}
            Some(e) => {
                policy::check_email(c, e).map_err(email_invalid)?;
                if policy::contains_any_ci(e, &c.user_validation.reject_email) {
                    return Err(email_invalid(Code::E002001));
                }
            }
        }
        let sd = SignupData {
            username: &data.username,
            email: email.as_deref(),
            password: &data.password,
            app_list: &data.app_list,
        };
        for v in &self.validators {
            v.validate(&sd).map_err(|cd| SsoError::code_public(cd, signup_public(c, cd), Reason::InvalidInput))?;
        }
        let approval =
            if c.signup.is_approval_needed { ApprovalStatus::BeforeDecision } else { ApprovalStatus::Approved };
        let nu = NewUser {
            username: Some(data.username.clone()),
            password: Some(data.password.clone()),
            email: email.clone(),
            ..Default::default()
        };
        let mut user = self
            .build_user(
                ctx,
                &nu,
                data.username.clone(),
                None,
                approval,
                "auto".into(),
                "auto".into(),
                SignUpStatus::BeforeConfirmation,
                "signup",
            )
            .await?;
        let token = ConfirmToken::generate()?;
        user.confirm_token_hash = Some(token.hash().to_vec());
        let mut tx = self.begin().await?;
        tx.insert_user(&user).await.map_err(|e| match e {
            StoreError::Conflict { .. } => {
                SsoError::code_public(Code::E001002, c.signup.inform_if_user_exists, Reason::Conflict)
            }
            other => other.into(),
        })?;
        a.target_user(&user.user_id);
        self.commit(tx, a).await?;
        for h in &self.hooks {
            h.on_signup(&user.user_id, &user.username);
        }
        self.notify(ctx, EventKind::Signup, &user, None);
        Ok(token)
    }

    async fn set_approval(&self, ctx: &CallCtx, a: &mut Audit, user_id: &str, status: ApprovalStatus) -> SsoResult<()> {
        let caller = self.authenticate(ctx, a, false).await?;
        if !caller.is_super() {
            return Err(code(Code::E008002, Reason::NotSuperUser));
        }
        let target = self.target(&caller, Some(user_id), Code::E008002, a).await?;
        let now = self.now();
        let patch = UserPatch {
            approval_status: Some(status),
            approval_status_mod_by: Some(caller.actor_name()),
            approval_status_mod_time: Some(now),
            ..Default::default()
        };
        let revoke = target.approval_status == ApprovalStatus::Approved && status != ApprovalStatus::Approved;
        let revoked = if revoke { self.live_sessions(&target, now).await?.len() } else { 0 };
        a.detail("sessions_revoked", revoked);
        let mut tx = self.begin().await?;
        tx.update_user(&target.user_id, &patch).await?;
        let epoch = if revoke { Some(tx.bump_epoch(&target.user_id).await?) } else { None };
        self.commit(tx, a).await?;
        if let Some(e) = epoch {
            self.revoke_after_commit(&target.user_id, e, None).await;
        }
        Ok(())
    }

    async fn set_lock(&self, ctx: &CallCtx, a: &mut Audit, user_id: &str, lock: bool) -> SsoResult<()> {
        let caller = self.authenticate(ctx, a, true).await?;
        let target = self.target(&caller, Some(user_id), Code::E005001, a).await?;
        let now = self.now();
        let patch = UserPatch {
            is_locked: Some(lock),
            locked_time: Some(Some(now)),
            locked_by: Some(Some(caller.actor_name())),
            ..Default::default()
        };
        let revoked = if lock { self.live_sessions(&target, now).await?.len() } else { 0 };
        a.detail("sessions_revoked", revoked);
        let mut tx = self.begin().await?;
        tx.update_user(&target.user_id, &patch).await?;
        let epoch = if lock { Some(tx.bump_epoch(&target.user_id).await?) } else { None };
        self.commit(tx, a).await?;
        if let Some(e) = epoch {
            self.revoke_after_commit(&target.user_id, e, None).await;
            self.notify(ctx, EventKind::UserLocked, &target, Some(a.rec.actor.to_string()));
        } else {
            self.throttle_reset(&Key::user(&target.username)).await;
            self.throttle_reset(&Key::totp(&target.user_id)).await;
        }
        Ok(())
    }

    async fn delete(&self, ctx: &CallCtx, a: &mut Audit, target: Option<UserRecord>, caller: &Caller) -> SsoResult<()> {
        let target = target.ok_or_else(|| code(Code::E008001, Reason::NoSuchUser))?;
        a.target_user(&target.user_id);
        a.detail("username", target.username.clone());
        if caller.user_id() == Some(&target.user_id) {
            return Err(code(Code::E008001, Reason::InvalidInput));
        }
        let mut tx = self.begin().await?;
        if !tx.delete_user(&target.user_id).await? {
            return Err(code(Code::E008001, Reason::NoSuchUser));
        }
        self.commit(tx, a).await?;
        self.revoke_after_commit(&target.user_id, 0, None).await;
        let _ = ctx;
        let marker = format!("totp-step:{}:{}", target.user_id, target.totp_key_gen);
        for k in [marker, Key::totp(&target.user_id).key] {
            if let Err(e) = self.stores.counters.reset(&k).await {
                tracing::warn!(error = %e, "could not delete a deleted user's counter");
            }
        }
        Ok(())
    }

    /// Applies a new password to `target` (shared by `change_password`, `set_password`, login
    /// must-change and the reset flow). `keep` = the session kept on a self change.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn apply_password(
        &self,
        a: &mut Audit,
        target: &UserRecord,
        new_password: &Password,
        must_change: bool,
        expiry_days: Option<i64>,
        revoke: bool,
        keep: Option<&crate::ids::SessionId>,
    ) -> SsoResult<u64> {
        let now = self.now();
        let hash = self.new_password_hash(&target.user_id, new_password).await?;
        let patch = UserPatch {
            password_hash: Some(hash),
            password_is_set: Some(true),
            password_last_set: Some(now),
            password_expiry: Some(self.expiry_in_days(now, expiry_days)),
            password_must_change: Some(must_change),
            ..Default::default()
        };
        let revoked = if revoke {
            let live = self.live_sessions(target, now).await?;
            live.iter().filter(|s| Some(&s.session_id) != keep).count() as u64
        } else {
            0
        };
        a.detail("sessions_revoked", revoked);
        let mut tx = self.begin().await?;
        tx.update_user(&target.user_id, &patch).await?;
        let epoch = if revoke { Some(tx.bump_epoch(&target.user_id).await?) } else { None };
        self.commit(tx, a).await?;
        if let Some(e) = epoch {
            self.revoke_after_commit(&target.user_id, e, keep).await;
        }
        self.throttle_reset(&Key::user(&target.username)).await;
        Ok(revoked)
    }

    async fn change_password_inner(&self, ctx: &CallCtx, a: &mut Audit, data: &ChangePassword) -> SsoResult<()> {
        let caller = self.authenticate(ctx, a, false).await?;
        let target = self.target(&caller, data.user_id.as_deref(), Code::E008002, a).await?;
        let is_self = caller.user_id() == Some(&target.user_id);
        if is_self {
            let old = data
                .old_password
                .as_ref()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| SsoError::not_allowed(Reason::BadPassword))?;
            self.reserve(a, &Key::user(&target.username)).await?;
            if self.verify_password(&target, old).await?.is_none() {
                return Err(SsoError::not_allowed(Reason::BadPassword));
            }
        }
        let pc = self.password_ctx(Some(&target.username), None);
        policy::validate_password(&self.cfg.password, data.new_password.expose(), pc)
            .map_err(|c| code(c, Reason::NewPasswordInvalid))?;
        if is_self
            && let Some(old) = &data.old_password
            && old.ct_eq(data.new_password.expose())
        {
            return Err(code(Code::E003001, Reason::NewPasswordInvalid));
        }
        let (must_change, expiry) =
            if caller.is_super() { (data.must_change.unwrap_or(false), data.password_expiry) } else { (false, None) };
        a.detail("must_change", must_change);
        a.detail("expiry_days", expiry.unwrap_or(0));
        let keep = if is_self { caller.session_id().cloned() } else { None };
        self.apply_password(
            a,
            &target,
            &data.new_password,
            must_change,
            expiry,
            self.cfg.password.revoke_sessions_on_change,
            keep.as_ref(),
        )
        .await?;
        self.notify(ctx, EventKind::PasswordChanged, &target, Some(a.rec.actor.to_string()));
        Ok(())
    }

    async fn update_inner(
        &self,
        ctx: &CallCtx,
        a: &mut Audit,
        user_id: Option<&str>,
        data: &UserUpdate,
    ) -> SsoResult<()> {
        let caller = self.authenticate(ctx, a, false).await?;
        let target = self.target(&caller, user_id, Code::E008002, a).await?;
        let keys = data.keys();
        a.detail("keys", keys.clone());
        if keys.is_empty() {
            return Err(code(Code::E008003, Reason::InvalidInput));
        }
        if data.has_admin_keys() && !caller.is_super() {
            return Err(invalid());
        }
        let now = self.now();
        let mut patch = UserPatch::default();
        // Check 6: values.
        if let Some(v) = &data.username {
            let name = v.as_ref().ok_or_else(invalid)?;
            policy::check_username(&self.cfg, name).map_err(|c| code(c, Reason::InvalidInput))?;
            patch.username = Some(name.clone());
        }
        if let Some(v) = &data.email {
            match v.as_deref().filter(|s| !s.is_empty()) {
                Some(e) => {
                    policy::check_email(&self.cfg, e).map_err(|c| code(c, Reason::InvalidInput))?;
                    let (enc, idx) = self.store_email(&target.user_id, e)?;
                    patch.email_enc = Some(Some(enc));
                    patch.email_idx = Some(Some(idx));
                }
                None => {
                    patch.email_enc = Some(None);
                    patch.email_idx = Some(None);
                }
            }
        }
        let name = |v: &Option<Option<String>>| {
            v.as_ref().map(|x| x.as_ref().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()))
        };
        if let Some(v) = name(&data.display_name) {
            patch.display_name_upper = Some(upper(&v));
            patch.display_name = Some(v);
        }
        if let Some(v) = name(&data.first_name) {
            patch.first_name_upper = Some(upper(&v));
            patch.first_name = Some(v);
        }
        if let Some(v) = name(&data.middle_name) {
            patch.middle_name_upper = Some(upper(&v));
            patch.middle_name = Some(v);
        }
        if let Some(v) = name(&data.last_name) {
            patch.last_name_upper = Some(upper(&v));
            patch.last_name = Some(v);
        }
        if let Some(v) = &data.totp_label {
            let label = v.clone().unwrap_or_default();
            if !label.is_empty() && !policy::valid_label(&label) {
                return Err(invalid());
            }
            patch.totp_label_enc = Some(self.encrypt_field(&target.user_id, "totp_label", &label)?);
        }
        if let Some(v) = data.is_totp_enabled {
            patch.is_totp_enabled = Some(v.unwrap_or(false));
        }
        if let Some(v) = data.is_locked {
            let lock = v.ok_or_else(invalid)?;
            patch.is_locked = Some(lock);
            patch.locked_time = Some(Some(now));
            patch.locked_by = Some(Some(caller.actor_name()));
        }
        if let Some(v) = &data.password_expiry {
            let t = v.as_deref().and_then(Timestamp::parse).ok_or_else(invalid)?;
            patch.password_expiry = Some(Some(t));
        }
        if let Some(v) = data.password_must_change {
            patch.password_must_change = Some(v.ok_or_else(invalid)?);
        }
        if let Some(v) = &data.sign_up_status {
            patch.sign_up_status = Some(v.as_deref().and_then(SignUpStatus::parse).ok_or_else(invalid)?);
        }
        if let Some(v) = &data.approval_status {
            patch.approval_status = Some(v.as_deref().and_then(ApprovalStatus::parse).ok_or_else(invalid)?);
            patch.approval_status_mod_by = Some(caller.actor_name());
            patch.approval_status_mod_time = Some(now);
        }
        // Check 7: the new username is free.
        if let Some(n) = &patch.username
            && n != &target.username
            && let Some(other) = self.stores.users.get_by_username(n).await?
            && other.user_id != target.user_id
        {
            return Err(code(Code::E001002, Reason::Conflict));
        }
        // Check 8: turning one's own TOTP on may need a code.
        let own = caller.user_id() == Some(&target.user_id);
        if own && self.cfg.totp.require_code_to_enable && !target.is_totp_enabled && patch.is_totp_enabled == Some(true)
        {
            let code_in = data.totp_code.as_ref().filter(|c| !c.is_empty()).ok_or_else(|| {
                self.flagged(self.cfg.login.inform_if_totp_missing, Code::E005008, Reason::TotpMissing)
            })?;
            self.reserve(a, &Key::totp(&target.user_id)).await?;
            self.check_totp_code(&target, code_in).await?;
            self.throttle_reset(&Key::totp(&target.user_id)).await;
        }
        let becomes_locked = patch.is_locked == Some(true) && !target.is_locked;
        let leaves_approved = target.approval_status == ApprovalStatus::Approved
            && patch.approval_status.is_some_and(|s| s != ApprovalStatus::Approved);
        let revoke = becomes_locked || leaves_approved;
        let revoked = if revoke { self.live_sessions(&target, now).await?.len() } else { 0 };
        a.detail("sessions_revoked", revoked);
        let mut tx = self.begin().await?;
        tx.update_user(&target.user_id, &patch).await.map_err(|e| match e {
            StoreError::Conflict { .. } => code(Code::E001002, Reason::Conflict),
            other => other.into(),
        })?;
        let epoch = if revoke { Some(tx.bump_epoch(&target.user_id).await?) } else { None };
        self.commit(tx, a).await?;
        if let Some(e) = epoch {
            self.revoke_after_commit(&target.user_id, e, None).await;
        }
        Ok(())
    }

    async fn search_inner(&self, ctx: &CallCtx, a: &mut Audit, q: &SearchCtx) -> SsoResult<SearchResult> {
        self.authenticate(ctx, a, true).await?;
        let mut criteria: Vec<&str> = Vec::new();
        let mut uq = UserQuery { names_exact: q.is_name_exact.unwrap_or(true), ..Default::default() };
        match q.name_op.as_deref() {
            None | Some("and") => {}
            Some("or") => uq.names_or = true,
            Some(_) => return Err(invalid()),
        }
        if let Some(s) = &q.sign_up_status {
            uq.sign_up_status = Some(SignUpStatus::parse(s).ok_or_else(invalid)?);
            criteria.push("sign_up_status");
        }
        if let Some(s) = &q.approval_status {
            uq.approval_status = Some(ApprovalStatus::parse(s).ok_or_else(invalid)?);
            criteria.push("approval_status");
        }
        if let Some(id) = &q.user_id {
            criteria.push("user_id");
            match UserId::parse(id) {
                Some(uid) => uq.user_id = Some(uid),
                // A malformed id matches nobody.
                None => uq.username = Some(String::from("\u{0}")),
            }
        } else if let Some(u) = &q.username {
            criteria.push("username");
            uq.username = Some(u.clone());
        }
        for (field, v, label) in [
            (NameField::DisplayName, &q.display_name, "display_name"),
            (NameField::FirstName, &q.first_name, "first_name"),
            (NameField::MiddleName, &q.middle_name, "middle_name"),
            (NameField::LastName, &q.last_name, "last_name"),
        ] {
            if let Some(v) = v {
                uq.names.push((field, v.to_uppercase()));
                criteria.push(label);
            }
        }
        if let Some(e) = &q.email {
            uq.email_idx = Some(self.keys.current().email_index(e));
            criteria.push("email");
        }
        let sc = &self.cfg.search;
        let page_size = match q.page_size {
            Some(n) if n >= 1 => u64::try_from(n).unwrap_or(1).min(u64::from(sc.max_page_size)),
            _ => u64::from(sc.default_page_size).min(u64::from(sc.max_page_size)),
        };
        let cur_page = q.cur_page.filter(|p| *p >= 1).and_then(|p| u64::try_from(p).ok()).unwrap_or(1);
        let offset = (cur_page - 1).saturating_mul(page_size);
        let (total, users) = self.stores.users.search(&uq, offset, page_size).await?;
        let num_pages = total.div_ceil(page_size);
        a.detail("criteria", criteria);
        a.detail("cur_page", cur_page);
        a.detail("page_size", page_size);
        a.detail("total", total);
        let result = users.iter().map(|u| self.view(u, true)).collect::<SsoResult<Vec<_>>>()?;
        Ok(SearchResult {
            total,
            num_pages,
            page_size,
            cur_page,
            has_next_page: cur_page < num_pages,
            has_prev_page: cur_page > 1,
            next_page: (cur_page < num_pages).then_some(cur_page + 1),
            prev_page: (cur_page > 1).then(|| cur_page - 1),
            result,
        })
    }
}

impl UserApi<'_> {
    /// `create_user` (spec/users.md §2). Super-users and the Operator. Returns the super-user view.
    pub async fn create_user(&self, ctx: &CallCtx, data: NewUser, auto_approve: bool) -> SsoResult<UserView> {
        let mut a = self.s.audit(ctx, "user.create_user", Kind::Write);
        a.detail("auto_approve", auto_approve);
        let r = self.s.create(ctx, &mut a, data, auto_approve, false).await;
        self.s.finish(a, r).await
    }

    /// `create_super_user`: as `create_user` with super-user, final and approved forced.
    pub async fn create_super_user(&self, ctx: &CallCtx, data: NewUser) -> SsoResult<UserView> {
        let mut a = self.s.audit(ctx, "user.create_super_user", Kind::Write);
        a.detail("auto_approve", true);
        let r = self.s.create(ctx, &mut a, data, true, true).await;
        self.s.finish(a, r).await
    }

    /// `signup` (spec/users.md §3). Unauthenticated; returns the confirmation token.
    pub async fn signup(&self, ctx: &CallCtx, data: SignupCtx) -> SsoResult<ConfirmToken> {
        let mut a = self.s.audit(ctx, "user.signup", Kind::Write);
        a.detail("username", data.username.clone());
        a.detail("app_list", data.app_list.clone());
        let r = self.s.signup_inner(ctx, &mut a, &data).await;
        self.s.finish(a, r).await
    }

    /// `confirm_signup`: compare-and-set to `final` (`E005006` unknown token, `E005007` already final).
    pub async fn confirm_signup(&self, ctx: &CallCtx, token: &ConfirmToken) -> SsoResult<()> {
        let s = self.s;
        let mut a = s.audit(ctx, "user.confirm_signup", Kind::Write);
        let r = async {
            s.check_app(ctx)?;
            if !token.is_well_formed() {
                return Err(code(Code::E005006, Reason::NotFound));
            }
            let mut tx = s.begin().await?;
            match tx.confirm_signup(&token.hash(), s.now()).await? {
                crate::store::ConfirmOutcome::Unknown => Err(code(Code::E005006, Reason::NotFound)),
                crate::store::ConfirmOutcome::AlreadyFinal(id) => {
                    a.target_user(&id);
                    Err(code(Code::E005007, Reason::Conflict))
                }
                crate::store::ConfirmOutcome::Confirmed(id) => {
                    a.target_user(&id);
                    s.commit(tx, &mut a).await
                }
            }
        }
        .await;
        s.finish(a, r).await
    }

    /// `approve_user`: super-users (`E008002` for others); unknown target `E005001`.
    pub async fn approve_user(&self, ctx: &CallCtx, user_id: &str) -> SsoResult<()> {
        let mut a = self.s.audit(ctx, "user.approve_user", Kind::Write);
        let r = self.s.set_approval(ctx, &mut a, user_id, ApprovalStatus::Approved).await;
        self.s.finish(a, r).await
    }

    /// `reject_user`: as `approve_user`; the user's sessions are revoked.
    pub async fn reject_user(&self, ctx: &CallCtx, user_id: &str) -> SsoResult<()> {
        let mut a = self.s.audit(ctx, "user.reject_user", Kind::Write);
        let r = self.s.set_approval(ctx, &mut a, user_id, ApprovalStatus::Rejected).await;
        self.s.finish(a, r).await
    }

    /// `get_current_user`: own view (all non-secret fields for super-users or with the flag).
    pub async fn get_current_user(&self, ctx: &CallCtx, return_all_attrs: bool) -> SsoResult<UserView> {
        let s = self.s;
        let mut a = s.audit(ctx, "user.get_current_user", Kind::Read);
        a.detail("return_all_attrs", return_all_attrs);
        let r = async {
            let caller = s.authenticate(ctx, &mut a, false).await?;
            let me = caller.session_user().ok_or_else(invalid)?;
            a.target_user(&me.user.user_id);
            s.view(&me.user, me.user.is_super_user || return_all_attrs)
        }
        .await;
        s.finish(a, r).await
    }

    /// `get_user_by_id`: super-users, or one's own id (`E005001` otherwise; unknown `E005001`).
    pub async fn get_user_by_id(&self, ctx: &CallCtx, user_id: &str, return_all_attrs: bool) -> SsoResult<UserView> {
        let s = self.s;
        let mut a = s.audit(ctx, "user.get_user_by_id", Kind::Read);
        a.detail("return_all_attrs", return_all_attrs);
        let r = async {
            let caller = s.authenticate(ctx, &mut a, false).await?;
            let target = s.target(&caller, Some(user_id), Code::E005001, &mut a).await?;
            s.view(&target, caller.is_super() || return_all_attrs)
        }
        .await;
        s.finish(a, r).await
    }

    /// `get_user_by_username`: Operator only.
    pub async fn get_user_by_username(&self, ctx: &CallCtx, username: &str) -> SsoResult<Option<UserView>> {
        let s = self.s;
        let mut a = s.audit(ctx, "user.get_user_by_username", Kind::Read);
        // spec/audit.md §3: `return_all_attrs` (always true here: the Operator gets every field);
        // §1 allows `username` for ops that take one as input.
        a.detail("return_all_attrs", true);
        a.detail("username", username);
        let r = async {
            s.check_app(ctx)?;
            if !ctx.is_operator() {
                return Err(SsoError::not_allowed(Reason::NotSuperUser));
            }
            match s.stores.users.get_by_username(username).await? {
                Some(u) => {
                    a.target_user(&u.user_id);
                    Ok(Some(s.view(&u, true)?))
                }
                None => Ok(None),
            }
        }
        .await;
        s.finish(a, r).await
    }

    /// `search` (spec/users.md §4): super-users only.
    pub async fn search(&self, ctx: &CallCtx, q: SearchCtx) -> SsoResult<SearchResult> {
        let mut a = self.s.audit(ctx, "user.search", Kind::Read);
        let r = self.s.search_inner(ctx, &mut a, &q).await;
        self.s.finish(a, r).await
    }

    /// `change_password` (spec/users.md §5).
    pub async fn change_password(&self, ctx: &CallCtx, data: ChangePassword) -> SsoResult<()> {
        let mut a = self.s.audit(ctx, "user.change_password", Kind::Write);
        let r = self.s.change_password_inner(ctx, &mut a, &data).await;
        self.s.finish(a, r).await
    }

    /// `set_password`: Operator only (CLI, import); effects as a super-user changing someone else.
    pub async fn set_password(
        &self,
        ctx: &CallCtx,
        user_id: &UserId,
        password: &Password,
        must_change: bool,
        password_expiry: Option<i64>,
    ) -> SsoResult<()> {
        let s = self.s;
        let mut a = s.audit(ctx, "user.set_password", Kind::Write);
        a.detail("must_change", must_change);
        a.detail("expiry_days", password_expiry.unwrap_or(0));
        let r = async {
            s.check_app(ctx)?;
            if !ctx.is_operator() {
                return Err(SsoError::not_allowed(Reason::NotSuperUser));
            }
            let target =
                s.stores.users.get_by_id(user_id).await?.ok_or_else(|| SsoError::not_allowed(Reason::NoSuchUser))?;
            a.target_user(&target.user_id);
            let pc = s.password_ctx(Some(&target.username), None);
            policy::validate_password(&s.cfg.password, password.expose(), pc)
                .map_err(|c| code(c, Reason::NewPasswordInvalid))?;
            s.apply_password(
                &mut a,
                &target,
                password,
                must_change,
                password_expiry,
                s.cfg.password.revoke_sessions_on_change,
                None,
            )
            .await?;
            s.notify(ctx, EventKind::PasswordChanged, &target, Some(a.rec.actor.to_string()));
            Ok(())
        }
        .await;
        s.finish(a, r).await
    }

    /// `update_current_user` (spec/users.md §7).
    pub async fn update_current_user(&self, ctx: &CallCtx, data: UserUpdate) -> SsoResult<()> {
        let mut a = self.s.audit(ctx, "user.update_current_user", Kind::Write);
        let r = self.s.update_inner(ctx, &mut a, None, &data).await;
        self.s.finish(a, r).await
    }

    /// `update_user_by_id` (spec/users.md §7).
    pub async fn update_user_by_id(&self, ctx: &CallCtx, user_id: &str, data: UserUpdate) -> SsoResult<()> {
        let mut a = self.s.audit(ctx, "user.update_user_by_id", Kind::Write);
        let r = self.s.update_inner(ctx, &mut a, Some(user_id), &data).await;
        self.s.finish(a, r).await
    }

    /// `lock_user`: super-users; revokes the user's sessions.
    pub async fn lock_user(&self, ctx: &CallCtx, user_id: &str) -> SsoResult<()> {
        let mut a = self.s.audit(ctx, "user.lock_user", Kind::Write);
        let r = self.s.set_lock(ctx, &mut a, user_id, true).await;
        self.s.finish(a, r).await
    }

    /// `unlock_user`: super-users; clears the user's `user` and `totp` throttle keys.
    pub async fn unlock_user(&self, ctx: &CallCtx, user_id: &str) -> SsoResult<()> {
        let mut a = self.s.audit(ctx, "user.unlock_user", Kind::Write);
        let r = self.s.set_lock(ctx, &mut a, user_id, false).await;
        self.s.finish(a, r).await
    }

    /// `delete_user_by_id`: super-users; unknown target or oneself → `E008001`.
    pub async fn delete_user_by_id(&self, ctx: &CallCtx, user_id: &str) -> SsoResult<()> {
        let s = self.s;
        let mut a = s.audit(ctx, "user.delete_user_by_id", Kind::Write);
        let r = async {
            let caller = s.authenticate(ctx, &mut a, true).await?;
            let target = match UserId::parse(user_id) {
                Some(id) => s.stores.users.get_by_id(&id).await?,
                None => None,
            };
            s.delete(ctx, &mut a, target, &caller).await
        }
        .await;
        s.finish(a, r).await
    }

    /// `delete_user_by_username`: as `delete_user_by_id`.
    pub async fn delete_user_by_username(&self, ctx: &CallCtx, username: &str) -> SsoResult<()> {
        let s = self.s;
        let mut a = s.audit(ctx, "user.delete_user_by_username", Kind::Write);
        a.detail("username", username);
        let r = async {
            let caller = s.authenticate(ctx, &mut a, true).await?;
            let target = s.stores.users.get_by_username(username).await?;
            s.delete(ctx, &mut a, target, &caller).await
        }
        .await;
        s.finish(a, r).await
    }

    /// `get_linked_auth_list`: self, or super-users for others.
    pub async fn get_linked_auth_list(&self, ctx: &CallCtx, user_id: Option<&str>) -> SsoResult<Vec<LinkedAuthView>> {
        let s = self.s;
        let mut a = s.audit(ctx, "user.get_linked_auth_list", Kind::Read);
        let r = async {
            let caller = s.authenticate(ctx, &mut a, false).await?;
            let target = s.target(&caller, user_id, Code::E005001, &mut a).await?;
            let links = s.stores.links.list_links(&target.user_id).await?;
            Ok(links
                .into_iter()
                .map(|l| LinkedAuthView {
                    auth_id: l.auth_id,
                    auth_type: l.auth_type,
                    auth_username: l.auth_username,
                    is_active: l.is_active,
                    creation_time: l.creation_time,
                    last_modified: l.last_modified,
                })
                .collect())
        }
        .await;
        s.finish(a, r).await
    }

    /// `create_linked_auth`: super-users; the principal must be free (`E008001`).
    pub async fn create_linked_auth(
        &self,
        ctx: &CallCtx,
        user_id: &str,
        auth_type: &str,
        auth_username: &str,
        is_active: bool,
    ) -> SsoResult<(UserId, AuthId)> {
        let s = self.s;
        let mut a = s.audit(ctx, "user.create_linked_auth", Kind::Write);
        a.detail("auth_type", auth_type);
        let r = async {
            let caller = s.authenticate(ctx, &mut a, true).await?;
            let target = s.target(&caller, Some(user_id), Code::E005001, &mut a).await?;
            if !policy::valid_auth_type(auth_type) || !policy::valid_auth_username(auth_username) {
                return Err(invalid());
            }
            let now = s.now();
            let link = LinkedAuthRecord {
                auth_id: AuthId::generate()?,
                user_id: target.user_id.clone(),
                auth_type: auth_type.to_owned(),
                auth_username: auth_username.to_owned(),
                is_active,
                creation_time: now,
                last_modified: now,
            };
            a.detail("auth_id", link.auth_id.to_string());
            let mut tx = s.begin().await?;
            tx.insert_link(&link).await.map_err(|e| match e {
                StoreError::Conflict { .. } => code(Code::E008001, Reason::Conflict),
                other => other.into(),
            })?;
            s.commit(tx, &mut a).await?;
            Ok((target.user_id, link.auth_id))
        }
        .await;
        s.finish(a, r).await
    }

    /// `delete_linked_auth`: super-users; no such link for that user → `E008001`. Revokes the
    /// user's sessions created through the link.
    pub async fn delete_linked_auth(
        &self,
        ctx: &CallCtx,
        user_id: &str,
        auth_type: &str,
        auth_username: &str,
    ) -> SsoResult<AuthId> {
        let s = self.s;
        let mut a = s.audit(ctx, "user.delete_linked_auth", Kind::Write);
        a.detail("auth_type", auth_type);
        let r = async {
            let caller = s.authenticate(ctx, &mut a, true).await?;
            let target = s.target(&caller, Some(user_id), Code::E005001, &mut a).await?;
            let mut tx = s.begin().await?;
            let id = tx
                .delete_link(&target.user_id, auth_type, auth_username)
                .await?
                .ok_or_else(|| code(Code::E008001, Reason::NotFound))?;
            a.detail("auth_id", id.to_string());
            s.commit(tx, &mut a).await?;
            for sess in s.stores.sessions.list_by_user(&target.user_id).await? {
                if (sess.ext_session_id == id.as_str() || sess.ext_session_id.starts_with(&format!("{id}.")))
                    && let Err(e) = s.stores.sessions.delete(&sess.session_id).await
                {
                    tracing::warn!(error = %e, "could not delete a linked session");
                }
            }
            Ok(id)
        }
        .await;
        s.finish(a, r).await
    }

    /// `get_user_by_linked_auth`: super-users; the linked user's view (`E005001` if no active link).
    pub async fn get_user_by_linked_auth(
        &self,
        ctx: &CallCtx,
        auth_type: &str,
        auth_username: &str,
    ) -> SsoResult<UserView> {
        let s = self.s;
        let mut a = s.audit(ctx, "user.get_user_by_linked_auth", Kind::Read);
        a.detail("auth_type", auth_type);
        let r = async {
            s.authenticate(ctx, &mut a, true).await?;
            let link = s
                .stores
                .links
                .get_link(auth_type, auth_username)
                .await?
                .filter(|l| l.is_active)
                .ok_or_else(|| SsoError::not_allowed(Reason::NotFound))?;
            let u = s
                .stores
                .users
                .get_by_id(&link.user_id)
                .await?
                .ok_or_else(|| SsoError::not_allowed(Reason::NoSuchUser))?;
            a.target_user(&u.user_id);
            s.view(&u, true)
        }
        .await;
        s.finish(a, r).await
    }

    /// `import_users` (spec/users.md §12): Operator only; one audit record per row. Values must be
    /// plain (a `$pbkdf2-sha512$…` password; e-mail, TOTP key and label in clear text).
    pub async fn import_users(&self, ctx: &CallCtx, rows: Vec<ImportRow>) -> SsoResult<Vec<ImportOutcome>> {
        let s = self.s;
        // A refused call is audited too (one record, spec/users.md "including refusals").
        let gate = s.audit(ctx, "user.import_user", Kind::Write);
        let allowed = match s.check_app(ctx) {
            Err(e) => Err(e),
            Ok(()) if !ctx.is_operator() => Err(SsoError::not_allowed(Reason::NotSuperUser)),
            Ok(()) => Ok(()),
        };
        if let Err(e) = allowed {
            return s.finish(gate, Err(e)).await;
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut a = s.audit(ctx, "user.import_user", Kind::Write);
            a.detail("username", row.username.clone());
            // Set before the row's commit writes the record; a skipped row overwrites it below.
            a.detail("skipped", false);
            let r = s.import_one(&mut a, &row).await;
            let skipped = matches!(&r, Ok(ImportOutcome::Skipped(_)));
            a.detail("skipped", skipped);
            let r = s.finish(a, r).await;
            out.push(match r {
                Ok(o) => o,
                Err(e) => ImportOutcome::Skipped(format!("{} {}", e.real_code(), e.real_code().name())),
            });
        }
        Ok(out)
    }
}

impl Inner {
    async fn import_one(&self, a: &mut Audit, row: &ImportRow) -> SsoResult<ImportOutcome> {
        let skip = |why: &str| Ok(ImportOutcome::Skipped(why.to_owned()));
        let Some(user_id) = UserId::parse(&row.user_id) else {
            return skip("invalid user_id");
        };
        a.target_user(&user_id);
        if policy::check_username(&self.cfg, &row.username).is_err() {
            return skip("invalid username");
        }
        if !row.password.starts_with("$pbkdf2-sha512$") {
            return skip("password is not a $pbkdf2-sha512$ hash");
        }
        if self.stores.users.get_by_id(&user_id).await?.is_some() {
            return skip("user_id exists");
        }
        if self.stores.users.get_by_username(&row.username).await?.is_some() {
            return skip("username exists");
        }
        let now = self.now();
        let ts = |v: &Option<String>| v.as_deref().and_then(Timestamp::parse);
        let key = match row.totp_key.as_deref().filter(|k| !k.is_empty()) {
            Some(k) => match TotpKey::parse(k) {
                Ok(k) => k,
                Err(_) => return skip("invalid totp_key"),
            },
            None => TotpKey::generate()?,
        };
        let label = match row.totp_label.as_deref() {
            None | Some("<default-label>") => String::new(),
            Some(l) => l.to_owned(),
        };
        let (email_enc, email_idx) = match non_empty(&row.email) {
            Some(e) => {
                let (enc, idx) = self.store_email(&user_id, &e)?;
                (Some(enc), Some(idx))
            }
            None => (None, None),
        };
        let first = non_empty(&row.first_name);
        let middle = non_empty(&row.middle_name);
        let last = non_empty(&row.last_name);
        let display = non_empty(&row.display_name);
        let user = UserRecord {
            password_hash: self.store_password_hash(&user_id, &row.password)?,
            totp_key_enc: self.encrypt_field(&user_id, "totp_key", key.expose_base32())?,
            totp_label_enc: self.encrypt_field(&user_id, "totp_label", &label)?,
            user_id: user_id.clone(),
            username: row.username.clone(),
            password_is_set: row.password_is_set.unwrap_or(true),
            password_must_change: row.password_must_change,
            password_last_set: ts(&row.password_last_set).unwrap_or(now),
            password_expiry: ts(&row.password_expiry),
            email_enc,
            email_idx,
            display_name_upper: upper(&display),
            first_name_upper: upper(&first),
            middle_name_upper: upper(&middle),
            last_name_upper: upper(&last),
            display_name: display,
            first_name: first,
            middle_name: middle,
            last_name: last,
            is_super_user: row.is_super_user,
            is_locked: row.is_locked,
            locked_time: ts(&row.locked_time),
            locked_by: row.locked_by.clone(),
            approval_status: row
                .approval_status
                .as_deref()
                .and_then(ApprovalStatus::parse)
                .unwrap_or(ApprovalStatus::Approved),
            approval_status_mod_time: ts(&row.approval_status_mod_time).unwrap_or(now),
            approval_status_mod_by: row.approval_status_mod_by.clone().unwrap_or_else(|| "auto".into()),
            sign_up_status: row.sign_up_status.as_deref().and_then(SignUpStatus::parse).unwrap_or(SignUpStatus::Final),
            sign_up_time: ts(&row.sign_up_time).unwrap_or(now),
            sign_up_confirm_time: ts(&row.sign_up_confirm_time),
            confirm_token_hash: None,
            creation_ctx: row.creation_ctx.clone().unwrap_or_else(|| json!({"via": "import"}).to_string()),
            is_totp_enabled: row.is_totp_enabled,
            totp_key_gen: 1,
            session_epoch: 1,
        };
        let mut tx = self.begin().await?;
        match tx.insert_user(&user).await {
            Ok(()) => {}
            Err(StoreError::Conflict { what }) => return skip(&format!("{what} exists")),
            Err(e) => return Err(e.into()),
        }
        self.commit(tx, a).await?;
        Ok(ImportOutcome::Imported(user_id))
    }
}
