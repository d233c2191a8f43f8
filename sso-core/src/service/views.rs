//! What operations return: user views by caller, session views, login results, search pages.
//! No view ever carries a password hash, a TOTP key, a UST or a token hash.

use serde::Serialize;

use crate::ids::{SessionId, UserId};
use crate::model::{ApprovalStatus, HistoryEntry, SessionRecord, SignUpStatus, UserRecord};
use crate::secret::Ust;
use crate::time::Timestamp;

/// A user as returned by reads: the regular set, plus the super-user set when the caller may see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserView {
    /// Username.
    pub username: String,
    /// E-mail (decrypted).
    pub email: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Middle name.
    pub middle_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Whether login requires a TOTP code.
    pub is_totp_enabled: bool,
    /// TOTP label (decrypted; the default label reads as `""`).
    pub totp_label: String,
    /// The super-user-only fields, when shown.
    #[serde(flatten)]
    pub admin: Option<UserAdminView>,
}

/// The super-user-only fields of a user (spec/concepts.md §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct UserAdminView {
    pub user_id: UserId,
    pub is_active: bool,
    pub is_approval_needed: bool,
    pub is_internal: bool,
    pub is_super_user: bool,
    pub is_locked: bool,
    pub locked_time: Option<Timestamp>,
    pub locked_by: Option<String>,
    pub creation_ctx: String,
    pub approval_status: ApprovalStatus,
    pub approval_status_mod_by: String,
    pub approval_status_mod_time: Timestamp,
    pub password_expiry: Option<Timestamp>,
    pub password_is_set: bool,
    pub password_must_change: bool,
    pub password_last_set: Timestamp,
    pub sign_up_status: SignUpStatus,
    pub sign_up_time: Timestamp,
}

impl UserAdminView {
    pub(crate) fn of(u: &UserRecord) -> Self {
        UserAdminView {
            user_id: u.user_id.clone(),
            is_active: true,
            is_approval_needed: u.approval_status == ApprovalStatus::BeforeDecision,
            is_internal: false,
            is_super_user: u.is_super_user,
            is_locked: u.is_locked,
            locked_time: u.locked_time,
            locked_by: u.locked_by.clone(),
            creation_ctx: u.creation_ctx.clone(),
            approval_status: u.approval_status,
            approval_status_mod_by: u.approval_status_mod_by.clone(),
            approval_status_mod_time: u.approval_status_mod_time,
            password_expiry: u.password_expiry,
            password_is_set: u.password_is_set,
            password_must_change: u.password_must_change,
            password_last_set: u.password_last_set,
            sign_up_status: u.sign_up_status,
            sign_up_time: u.sign_up_time,
        }
    }
}

/// The result of a successful login.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The new UST (a secret: hand it to the client only).
    pub ust: Ust,
    /// Public session id.
    pub session_id: SessionId,
    /// The user.
    pub user_id: UserId,
    /// The username.
    pub username: String,
    /// Login time.
    pub creation_time: Timestamp,
    /// Idle deadline.
    pub expiration_time: Timestamp,
    /// The password expires soon (REST `status: warning`, `W003005`).
    pub has_w_about_to_exp: bool,
}

/// A session as `get` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct SessionView {
    pub session_id: SessionId,
    pub creation_time: Timestamp,
    pub expiration_time: Timestamp,
    pub remote_addr: String,
    pub user_agent: Option<String>,
    pub current_app: String,
    pub auth_type: String,
    pub auth_principal: String,
}

impl SessionView {
    pub(crate) fn of(s: &SessionRecord) -> Self {
        SessionView {
            session_id: s.session_id.clone(),
            creation_time: s.creation_time,
            expiration_time: s.expiration_time,
            remote_addr: s.remote_addr.clone(),
            user_agent: s.user_agent.clone(),
            current_app: s.current_app.clone(),
            auth_type: s.auth_type.clone(),
            auth_principal: s.auth_principal.clone(),
        }
    }
}

/// A session as `get_list` returns it. Never a UST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct SessionListItem {
    #[serde(flatten)]
    pub view: SessionView,
    pub ext_session_id: String,
    pub is_current: bool,
    pub session_state_change_list: Vec<HistoryEntry>,
}

impl SessionListItem {
    pub(crate) fn of(s: &SessionRecord, current: Option<&SessionId>) -> Self {
        let mut list = Vec::with_capacity(1 + s.history.len());
        list.push(HistoryEntry {
            remote_addr: s.remote_addr.clone(),
            user_agent: s.user_agent.clone(),
            timestamp_utc: s.creation_time,
            ctx_source: "login".into(),
            idx: 1,
        });
        for (i, h) in s.history.iter().enumerate() {
            let mut h = h.clone();
            h.idx = u32::try_from(i + 2).unwrap_or(u32::MAX);
            list.push(h);
        }
        SessionListItem {
            view: SessionView::of(s),
            ext_session_id: s.ext_session_id.clone(),
            is_current: current == Some(&s.session_id),
            session_state_change_list: list,
        }
    }
}

/// A page of search results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct SearchResult {
    pub total: u64,
    pub num_pages: u64,
    pub page_size: u64,
    pub cur_page: u64,
    pub has_next_page: bool,
    pub has_prev_page: bool,
    pub next_page: Option<u64>,
    pub prev_page: Option<u64>,
    pub result: Vec<UserView>,
}

/// A linked principal as `get_linked_auth_list` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct LinkedAuthView {
    pub auth_id: crate::ids::AuthId,
    pub auth_type: String,
    pub auth_username: String,
    pub is_active: bool,
    pub creation_time: Timestamp,
    pub last_modified: Timestamp,
}

/// An attribute as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attr {
    /// Name.
    pub name: String,
    /// The JSON value (or the envelope text when read with `decrypt = false`).
    pub value: serde_json::Value,
    /// Created.
    pub creation_time: Timestamp,
    /// Last changed.
    pub last_modified: Timestamp,
    /// Expiry (`9999-12-31T00:00:00` when it never expires).
    pub expiration_time: Timestamp,
    /// Whether it is stored encrypted.
    pub is_encrypted: bool,
}

/// An enrolment URI and its QR code.
#[derive(Debug, Clone)]
pub struct TotpUri {
    /// `otpauth://…` (holds the key: never log it).
    pub uri: String,
    /// SVG QR code of the URI.
    pub qr_svg: String,
}
