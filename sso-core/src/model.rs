//! Stored records, patches and the views operations return (spec/users.md §1, sessions.md,
//! concepts.md §4). Records hold only envelopes and hashes, never a plaintext secret.

use serde::{Deserialize, Serialize};

use crate::ids::{AuthId, SessionId, UserId};
use crate::time::Timestamp;

/// `approval_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a super-user.
    BeforeDecision,
    /// Approved.
    Approved,
    /// Rejected.
    Rejected,
}

impl ApprovalStatus {
    /// Wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::BeforeDecision => "before_decision",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
        }
    }

    /// Parses the wire form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "before_decision" => Some(ApprovalStatus::BeforeDecision),
            "approved" => Some(ApprovalStatus::Approved),
            "rejected" => Some(ApprovalStatus::Rejected),
            _ => None,
        }
    }
}

/// `sign_up_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignUpStatus {
    /// Waiting for the confirmation token.
    BeforeConfirmation,
    /// Confirmed (or created directly).
    Final,
}

impl SignUpStatus {
    /// Wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            SignUpStatus::BeforeConfirmation => "before_confirmation",
            SignUpStatus::Final => "final",
        }
    }

    /// Parses the wire form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "before_confirmation" => Some(SignUpStatus::BeforeConfirmation),
            "final" => Some(SignUpStatus::Final),
            _ => None,
        }
    }
}

/// The stored user (internal; never returned as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Primary key.
    pub user_id: UserId,
    /// Unique, case-sensitive.
    pub username: String,
    /// PHC string, or its envelope when `crypto.encrypt_password`.
    pub password_hash: String,
    /// Always true once created.
    pub password_is_set: bool,
    /// The user must change the password at the next login.
    pub password_must_change: bool,
    /// When the password was last set.
    pub password_last_set: Timestamp,
    /// When the password expires (`None` = never).
    pub password_expiry: Option<Timestamp>,
    /// E-mail envelope (or plaintext when `crypto.encrypt_email = false`).
    pub email_enc: Option<String>,
    /// E-mail blind index.
    pub email_idx: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Middle name.
    pub middle_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Upper-cased copy for search.
    pub display_name_upper: Option<String>,
    /// Upper-cased copy for search.
    pub first_name_upper: Option<String>,
    /// Upper-cased copy for search.
    pub middle_name_upper: Option<String>,
    /// Upper-cased copy for search.
    pub last_name_upper: Option<String>,
    /// Super-user flag (read at every call).
    pub is_super_user: bool,
    /// Manual lock.
    pub is_locked: bool,
    /// When the lock state last changed.
    pub locked_time: Option<Timestamp>,
    /// Who changed the lock state.
    pub locked_by: Option<String>,
    /// Approval state.
    pub approval_status: ApprovalStatus,
    /// When the approval state last changed.
    pub approval_status_mod_time: Timestamp,
    /// Who changed the approval state.
    pub approval_status_mod_by: String,
    /// Sign-up state.
    pub sign_up_status: SignUpStatus,
    /// When the user was created.
    pub sign_up_time: Timestamp,
    /// When the sign-up was confirmed.
    pub sign_up_confirm_time: Option<Timestamp>,
    /// SHA-256 of the confirmation token (sign-up only).
    pub confirm_token_hash: Option<Vec<u8>>,
    /// JSON text `{"via":…,"current_app":…,"remote_addr":…,"user_agent":…}`.
    pub creation_ctx: String,
    /// Login requires a TOTP code.
    pub is_totp_enabled: bool,
    /// TOTP key envelope.
    pub totp_key_enc: String,
    /// TOTP label envelope (the default label is stored as an encrypted empty string).
    pub totp_label_enc: String,
    /// +1 on every key change; keys the replay marker.
    pub totp_key_gen: u64,
    /// +1 on every revoke-all; sessions of older epochs are invalid.
    pub session_epoch: u64,
}

/// A change to one user row: every field is "absent" (`None`) or "set to" (`Some`), nullable
/// columns use `Some(None)` for NULL. Built by the core, applied by a store as one atomic update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct UserPatch {
    pub username: Option<String>,
    pub password_hash: Option<String>,
    pub password_is_set: Option<bool>,
    pub password_must_change: Option<bool>,
    pub password_last_set: Option<Timestamp>,
    pub password_expiry: Option<Option<Timestamp>>,
    pub email_enc: Option<Option<String>>,
    pub email_idx: Option<Option<String>>,
    pub display_name: Option<Option<String>>,
    pub first_name: Option<Option<String>>,
    pub middle_name: Option<Option<String>>,
    pub last_name: Option<Option<String>>,
    pub display_name_upper: Option<Option<String>>,
    pub first_name_upper: Option<Option<String>>,
    pub middle_name_upper: Option<Option<String>>,
    pub last_name_upper: Option<Option<String>>,
    pub is_super_user: Option<bool>,
    pub is_locked: Option<bool>,
    pub locked_time: Option<Option<Timestamp>>,
    pub locked_by: Option<Option<String>>,
    pub approval_status: Option<ApprovalStatus>,
    pub approval_status_mod_time: Option<Timestamp>,
    pub approval_status_mod_by: Option<String>,
    pub sign_up_status: Option<SignUpStatus>,
    pub sign_up_confirm_time: Option<Option<Timestamp>>,
    pub is_totp_enabled: Option<bool>,
    pub totp_label_enc: Option<String>,
}

impl UserPatch {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == UserPatch::default()
    }

    /// Applies the patch to a record (the in-memory semantics every backend must match).
    pub fn apply_to(&self, u: &mut UserRecord) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { u.$f = v.clone(); } )* };
        }
        set!(
            username,
            password_hash,
            password_is_set,
            password_must_change,
            password_last_set,
            password_expiry,
            email_enc,
            email_idx,
            display_name,
            first_name,
            middle_name,
            last_name,
            display_name_upper,
            first_name_upper,
            middle_name_upper,
            last_name_upper,
            is_super_user,
            is_locked,
            locked_time,
            locked_by,
            approval_status,
            approval_status_mod_time,
            approval_status_mod_by,
            sign_up_status,
            sign_up_confirm_time,
            is_totp_enabled,
            totp_label_enc
        );
    }
}

/// Unicode upper case of a name, for the `*_upper` search columns.
pub fn upper(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|v| v.to_uppercase())
}

/// A session history entry (`session_state_change_list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Client address.
    pub remote_addr: String,
    /// User agent.
    pub user_agent: Option<String>,
    /// When.
    pub timestamp_utc: Timestamp,
    /// `login` or `renew`.
    pub ctx_source: String,
    /// 1-based index.
    pub idx: u32,
}

/// The stored session (spec/sessions.md "Session record").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Public id derived from the UST.
    pub session_id: SessionId,
    /// SHA-256 of the UST.
    pub ust_hash: [u8; 32],
    /// Owner.
    pub user_id: UserId,
    /// Login time.
    pub creation_time: Timestamp,
    /// Idle deadline.
    pub expiration_time: Timestamp,
    /// Absolute limit (`None` = no limit).
    pub abs_expiration_time: Option<Timestamp>,
    /// The user's `session_epoch` at creation.
    pub epoch: u64,
    /// Client address(es) at login.
    pub remote_addr: String,
    /// User agent at login.
    pub user_agent: Option<String>,
    /// App at login.
    pub current_app: String,
    /// `default` or the link's `auth_type`.
    pub auth_type: String,
    /// Username or linked `auth_username`.
    pub auth_principal: String,
    /// `""` or `<auth_id>[.<caller id>]`.
    pub ext_session_id: String,
    /// Renewal entries (the login entry is built from the record).
    pub history: Vec<HistoryEntry>,
}

impl SessionRecord {
    /// Whether the session is past its idle deadline or absolute limit at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expiration_time || self.abs_expiration_time.is_some_and(|a| now >= a)
    }
}

/// Attribute scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttrScope {
    /// Owned by a user.
    User,
    /// Owned by a session.
    Session,
}

impl AttrScope {
    /// Wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            AttrScope::User => "user",
            AttrScope::Session => "session",
        }
    }
}

/// A stored attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrRecord {
    /// Name.
    pub name: String,
    /// JSON text, or an envelope when encrypted.
    pub value: String,
    /// Whether `value` is an envelope.
    pub is_encrypted: bool,
    /// Created.
    pub creation_time: Timestamp,
    /// Last changed.
    pub last_modified: Timestamp,
    /// Expiry (`None` = never).
    pub expiration_time: Option<Timestamp>,
}

impl AttrRecord {
    /// Whether the attribute is expired at `now` (expired attributes behave as absent).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expiration_time.is_some_and(|e| now >= e)
    }
}

/// An attribute write for `create_many` / `set_many` / `update_many`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrWrite {
    /// Name.
    pub name: String,
    /// JSON text or envelope.
    pub value: String,
    /// Whether `value` is an envelope.
    pub is_encrypted: bool,
    /// New expiry: for create/set the expiry itself; for update `None` keeps the current one.
    pub expiration_time: Option<Option<Timestamp>>,
}

/// A password-reset token row (spec/storage.md `sso_password_reset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrtRecord {
    /// SHA-256 of the token.
    pub token_hash: [u8; 32],
    /// The user.
    pub user_id: UserId,
    /// Created.
    pub creation_time: Timestamp,
    /// Expires.
    pub expiration_time: Timestamp,
    /// JSON text of the creation context.
    pub creation_ctx: String,
    /// Whether `access_token` succeeded.
    pub has_been_accessed: bool,
    /// When.
    pub access_time: Option<Timestamp>,
    /// JSON text of the access context.
    pub access_ctx: Option<String>,
    /// SHA-256 of the reset key.
    pub reset_key_hash: Option<[u8; 32]>,
    /// Reset-key expiry.
    pub reset_key_exp_time: Option<Timestamp>,
    /// Whether the password was changed with it.
    pub is_password_reset: bool,
    /// When.
    pub password_reset_time: Option<Timestamp>,
    /// JSON text of the change context.
    pub password_reset_ctx: Option<String>,
}

/// A linked external principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedAuthRecord {
    /// Link id.
    pub auth_id: AuthId,
    /// The user.
    pub user_id: UserId,
    /// e.g. `basic_auth`, `oidc.google`.
    pub auth_type: String,
    /// The external username.
    pub auth_username: String,
    /// Inactive links cannot be used to log in.
    pub is_active: bool,
    /// Created.
    pub creation_time: Timestamp,
    /// Last changed.
    pub last_modified: Timestamp,
}

/// Search criteria as the store sees them (already validated and upper-cased by the core).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserQuery {
    /// Exact user id (wins over everything).
    pub user_id: Option<UserId>,
    /// Exact, case-sensitive username (wins over the rest).
    pub username: Option<String>,
    /// Upper-cased name criteria: (column, value).
    pub names: Vec<(NameField, String)>,
    /// Combine names with OR instead of AND.
    pub names_or: bool,
    /// Names compared for equality (else substring).
    pub names_exact: bool,
    /// E-mail blind index.
    pub email_idx: Option<String>,
    /// Sign-up status filter.
    pub sign_up_status: Option<SignUpStatus>,
    /// Approval status filter.
    pub approval_status: Option<ApprovalStatus>,
}

/// A searchable name column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameField {
    /// `display_name_upper`
    DisplayName,
    /// `first_name_upper`
    FirstName,
    /// `middle_name_upper`
    MiddleName,
    /// `last_name_upper`
    LastName,
}

impl NameField {
    /// The upper-cased column name.
    pub fn column(self) -> &'static str {
        match self {
            NameField::DisplayName => "display_name_upper",
            NameField::FirstName => "first_name_upper",
            NameField::MiddleName => "middle_name_upper",
            NameField::LastName => "last_name_upper",
        }
    }

    /// The value of this column in a record.
    pub fn get(self, u: &UserRecord) -> Option<&str> {
        match self {
            NameField::DisplayName => u.display_name_upper.as_deref(),
            NameField::FirstName => u.first_name_upper.as_deref(),
            NameField::MiddleName => u.middle_name_upper.as_deref(),
            NameField::LastName => u.last_name_upper.as_deref(),
        }
    }
}

impl UserQuery {
    /// Whether a record matches (the reference semantics every backend must reproduce).
    pub fn matches(&self, u: &UserRecord) -> bool {
        if let Some(id) = &self.user_id {
            return &u.user_id == id;
        }
        if let Some(name) = &self.username {
            return &u.username == name;
        }
        if !self.names.is_empty() {
            let test = |(f, v): &(NameField, String)| {
                f.get(u).is_some_and(|col| if self.names_exact { col == v } else { col.contains(v.as_str()) })
            };
            let ok = if self.names_or { self.names.iter().any(test) } else { self.names.iter().all(test) };
            if !ok {
                return false;
            }
        }
        if let Some(idx) = &self.email_idx
            && u.email_idx.as_ref() != Some(idx)
        {
            return false;
        }
        if let Some(s) = self.sign_up_status
            && u.sign_up_status != s
        {
            return false;
        }
        if let Some(a) = self.approval_status
            && u.approval_status != a
        {
            return false;
        }
        true
    }
}

/// The search order: `display_name` (NULL first), `username`, `sign_up_time`, `user_id`, strings
/// byte-wise.
pub fn search_order(a: &UserRecord, b: &UserRecord) -> std::cmp::Ordering {
    let dn = |u: &UserRecord| u.display_name.as_ref().map(|s| s.as_bytes().to_vec());
    dn(a)
        .cmp(&dn(b))
        .then_with(|| a.username.as_bytes().cmp(b.username.as_bytes()))
        .then_with(|| a.sign_up_time.cmp(&b.sign_up_time))
        .then_with(|| a.user_id.as_str().as_bytes().cmp(b.user_id.as_str().as_bytes()))
}
