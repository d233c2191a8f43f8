//! Row mapping and value binding: records to and from SQLite rows (times as Unix microseconds,
//! booleans as 0/1, JSON as text, hashes as blobs).

use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Row, Sqlite};
use sso_core::StoreError;
use sso_core::ids::{AuthId, SessionId, UserId};
use sso_core::model::{
    ApprovalStatus, AttrRecord, HistoryEntry, LinkedAuthRecord, PrtRecord, SessionRecord, SignUpStatus, UserPatch,
    UserRecord,
};
use sso_core::time::Timestamp;

/// A bindable value.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Text(Option<String>),
    Int(Option<i64>),
    Blob(Option<Vec<u8>>),
}

impl Val {
    pub(crate) fn ts(t: Timestamp) -> Val {
        Val::Int(Some(t.as_micros()))
    }

    pub(crate) fn opt_ts(t: Option<Timestamp>) -> Val {
        Val::Int(t.map(Timestamp::as_micros))
    }

    pub(crate) fn bool(b: bool) -> Val {
        Val::Int(Some(i64::from(b)))
    }

    pub(crate) fn text(s: &str) -> Val {
        Val::Text(Some(s.to_owned()))
    }
}

pub(crate) type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments>;

/// Binds `v` to `q`.
pub(crate) fn bind(q: Query<'_>, v: Val) -> Query<'_> {
    match v {
        Val::Text(t) => q.bind(t),
        Val::Int(i) => q.bind(i),
        Val::Blob(b) => q.bind(b),
    }
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::corrupt(e.to_string())
}

pub(crate) fn get<'r, T>(row: &'r SqliteRow, col: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(col).map_err(corrupt)
}

fn ts(row: &SqliteRow, col: &str) -> Result<Timestamp, StoreError> {
    Ok(Timestamp::from_micros(get::<i64>(row, col)?))
}

fn opt_ts(row: &SqliteRow, col: &str) -> Result<Option<Timestamp>, StoreError> {
    Ok(get::<Option<i64>>(row, col)?.map(Timestamp::from_micros))
}

fn flag(row: &SqliteRow, col: &str) -> Result<bool, StoreError> {
    Ok(get::<i64>(row, col)? != 0)
}

fn uint(row: &SqliteRow, col: &str) -> Result<u64, StoreError> {
    u64::try_from(get::<i64>(row, col)?).map_err(corrupt)
}

fn hash32(v: Vec<u8>) -> Result<[u8; 32], StoreError> {
    v.try_into().map_err(|_| StoreError::corrupt("hash is not 32 bytes"))
}

/// Every column of `sso_user`, in [`user_values`] order.
pub(crate) const USER_COLUMNS: &[&str] = &[
    "user_id",
    "username",
    "password_hash",
    "password_is_set",
    "password_must_change",
    "password_last_set",
    "password_expiry",
    "email_enc",
    "email_idx",
    "display_name",
    "first_name",
    "middle_name",
    "last_name",
    "display_name_upper",
    "first_name_upper",
    "middle_name_upper",
    "last_name_upper",
    "is_super_user",
    "is_locked",
    "locked_time",
    "locked_by",
    "approval_status",
    "approval_status_mod_time",
    "approval_status_mod_by",
    "sign_up_status",
    "sign_up_time",
    "sign_up_confirm_time",
    "confirm_token_hash",
    "creation_ctx",
    "is_totp_enabled",
    "totp_key_enc",
    "totp_label_enc",
    "totp_key_gen",
    "session_epoch",
];

fn int_of(n: u64) -> Val {
    Val::Int(Some(i64::try_from(n).unwrap_or(i64::MAX)))
}

/// The values of a user row, in [`USER_COLUMNS`] order.
pub(crate) fn user_values(u: &UserRecord) -> Vec<Val> {
    vec![
        Val::text(u.user_id.as_str()),
        Val::text(&u.username),
        Val::text(&u.password_hash),
        Val::bool(u.password_is_set),
        Val::bool(u.password_must_change),
        Val::ts(u.password_last_set),
        Val::opt_ts(u.password_expiry),
        Val::Text(u.email_enc.clone()),
        Val::Text(u.email_idx.clone()),
        Val::Text(u.display_name.clone()),
        Val::Text(u.first_name.clone()),
        Val::Text(u.middle_name.clone()),
        Val::Text(u.last_name.clone()),
        Val::Text(u.display_name_upper.clone()),
        Val::Text(u.first_name_upper.clone()),
        Val::Text(u.middle_name_upper.clone()),
        Val::Text(u.last_name_upper.clone()),
        Val::bool(u.is_super_user),
        Val::bool(u.is_locked),
        Val::opt_ts(u.locked_time),
        Val::Text(u.locked_by.clone()),
        Val::text(u.approval_status.as_str()),
        Val::ts(u.approval_status_mod_time),
        Val::text(&u.approval_status_mod_by),
        Val::text(u.sign_up_status.as_str()),
        Val::ts(u.sign_up_time),
        Val::opt_ts(u.sign_up_confirm_time),
        Val::Blob(u.confirm_token_hash.clone()),
        Val::text(&u.creation_ctx),
        Val::bool(u.is_totp_enabled),
        Val::text(&u.totp_key_enc),
        Val::text(&u.totp_label_enc),
        int_of(u.totp_key_gen),
        int_of(u.session_epoch),
    ]
}

/// The `SET` columns and values of a patch, in a fixed order.
pub(crate) fn patch_values(p: &UserPatch) -> Vec<(&'static str, Val)> {
    let mut v = Vec::new();
    macro_rules! text {
        ($($f:ident),*) => { $( if let Some(x) = &p.$f { v.push((stringify!($f), Val::text(x))); } )* };
    }
    macro_rules! opt_text {
        ($($f:ident),*) => { $( if let Some(x) = &p.$f { v.push((stringify!($f), Val::Text(x.clone()))); } )* };
    }
    macro_rules! flag {
        ($($f:ident),*) => { $( if let Some(x) = p.$f { v.push((stringify!($f), Val::bool(x))); } )* };
    }
    macro_rules! opt_ts {
        ($($f:ident),*) => { $( if let Some(x) = p.$f { v.push((stringify!($f), Val::opt_ts(x))); } )* };
    }
    text!(username, password_hash, approval_status_mod_by, totp_label_enc);
    opt_text!(
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
        locked_by
    );
    flag!(password_is_set, password_must_change, is_super_user, is_locked, is_totp_enabled);
    opt_ts!(password_expiry, locked_time, sign_up_confirm_time);
    if let Some(t) = p.password_last_set {
        v.push(("password_last_set", Val::ts(t)));
    }
    if let Some(t) = p.approval_status_mod_time {
        v.push(("approval_status_mod_time", Val::ts(t)));
    }
    if let Some(s) = p.approval_status {
        v.push(("approval_status", Val::text(s.as_str())));
    }
    if let Some(s) = p.sign_up_status {
        v.push(("sign_up_status", Val::text(s.as_str())));
    }
    v
}

pub(crate) fn user_from_row(r: &SqliteRow) -> Result<UserRecord, StoreError> {
    let user_id: String = get(r, "user_id")?;
    let approval: String = get(r, "approval_status")?;
    let sign_up: String = get(r, "sign_up_status")?;
    Ok(UserRecord {
        user_id: UserId::parse(&user_id).ok_or_else(|| corrupt("user_id"))?,
        username: get(r, "username")?,
        password_hash: get(r, "password_hash")?,
        password_is_set: flag(r, "password_is_set")?,
        password_must_change: flag(r, "password_must_change")?,
        password_last_set: ts(r, "password_last_set")?,
        password_expiry: opt_ts(r, "password_expiry")?,
        email_enc: get(r, "email_enc")?,
        email_idx: get(r, "email_idx")?,
        display_name: get(r, "display_name")?,
        first_name: get(r, "first_name")?,
        middle_name: get(r, "middle_name")?,
        last_name: get(r, "last_name")?,
        display_name_upper: get(r, "display_name_upper")?,
        first_name_upper: get(r, "first_name_upper")?,
        middle_name_upper: get(r, "middle_name_upper")?,
        last_name_upper: get(r, "last_name_upper")?,
        is_super_user: flag(r, "is_super_user")?,
        is_locked: flag(r, "is_locked")?,
        locked_time: opt_ts(r, "locked_time")?,
        locked_by: get(r, "locked_by")?,
        approval_status: ApprovalStatus::parse(&approval).ok_or_else(|| corrupt("approval_status"))?,
        approval_status_mod_time: ts(r, "approval_status_mod_time")?,
        approval_status_mod_by: get(r, "approval_status_mod_by")?,
        sign_up_status: SignUpStatus::parse(&sign_up).ok_or_else(|| corrupt("sign_up_status"))?,
        sign_up_time: ts(r, "sign_up_time")?,
        sign_up_confirm_time: opt_ts(r, "sign_up_confirm_time")?,
        confirm_token_hash: get(r, "confirm_token_hash")?,
        creation_ctx: get(r, "creation_ctx")?,
        is_totp_enabled: flag(r, "is_totp_enabled")?,
        totp_key_enc: get(r, "totp_key_enc")?,
        totp_label_enc: get(r, "totp_label_enc")?,
        totp_key_gen: uint(r, "totp_key_gen")?,
        session_epoch: uint(r, "session_epoch")?,
    })
}

/// Every column of `sso_session`, in [`session_values`] order.
pub(crate) const SESSION_COLUMNS: &[&str] = &[
    "session_id",
    "ust_hash",
    "user_id",
    "creation_time",
    "expiration_time",
    "abs_expiration_time",
    "epoch",
    "remote_addr",
    "user_agent",
    "current_app",
    "auth_type",
    "auth_principal",
    "ext_session_id",
    "history",
];

pub(crate) fn session_values(s: &SessionRecord) -> Vec<Val> {
    vec![
        Val::text(s.session_id.as_str()),
        Val::Blob(Some(s.ust_hash.to_vec())),
        Val::text(s.user_id.as_str()),
        Val::ts(s.creation_time),
        Val::ts(s.expiration_time),
        Val::opt_ts(s.abs_expiration_time),
        int_of(s.epoch),
        Val::text(&s.remote_addr),
        Val::Text(s.user_agent.clone()),
        Val::text(&s.current_app),
        Val::text(&s.auth_type),
        Val::text(&s.auth_principal),
        Val::text(&s.ext_session_id),
        Val::Text(Some(history_json(&s.history))),
    ]
}

pub(crate) fn history_json(h: &[HistoryEntry]) -> String {
    serde_json::to_string(h).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn session_from_row(r: &SqliteRow) -> Result<SessionRecord, StoreError> {
    let sid: String = get(r, "session_id")?;
    let uid: String = get(r, "user_id")?;
    let history: String = get(r, "history")?;
    Ok(SessionRecord {
        session_id: SessionId::parse(&sid).ok_or_else(|| corrupt("session_id"))?,
        ust_hash: hash32(get(r, "ust_hash")?)?,
        user_id: UserId::parse(&uid).ok_or_else(|| corrupt("user_id"))?,
        creation_time: ts(r, "creation_time")?,
        expiration_time: ts(r, "expiration_time")?,
        abs_expiration_time: opt_ts(r, "abs_expiration_time")?,
        epoch: uint(r, "epoch")?,
        remote_addr: get(r, "remote_addr")?,
        user_agent: get(r, "user_agent")?,
        current_app: get(r, "current_app")?,
        auth_type: get(r, "auth_type")?,
        auth_principal: get(r, "auth_principal")?,
        ext_session_id: get(r, "ext_session_id")?,
        history: serde_json::from_str(&history).map_err(corrupt)?,
    })
}

pub(crate) fn attr_from_row(r: &SqliteRow) -> Result<AttrRecord, StoreError> {
    Ok(AttrRecord {
        name: get(r, "name")?,
        value: get(r, "value")?,
        is_encrypted: flag(r, "is_encrypted")?,
        creation_time: ts(r, "creation_time")?,
        last_modified: ts(r, "last_modified")?,
        expiration_time: opt_ts(r, "expiration_time")?,
    })
}

pub(crate) fn link_from_row(r: &SqliteRow) -> Result<LinkedAuthRecord, StoreError> {
    let aid: String = get(r, "auth_id")?;
    let uid: String = get(r, "user_id")?;
    Ok(LinkedAuthRecord {
        auth_id: AuthId::parse(&aid).ok_or_else(|| corrupt("auth_id"))?,
        user_id: UserId::parse(&uid).ok_or_else(|| corrupt("user_id"))?,
        auth_type: get(r, "auth_type")?,
        auth_username: get(r, "auth_username")?,
        is_active: flag(r, "is_active")?,
        creation_time: ts(r, "creation_time")?,
        last_modified: ts(r, "last_modified")?,
    })
}

pub(crate) fn prt_from_row(r: &SqliteRow) -> Result<PrtRecord, StoreError> {
    let uid: String = get(r, "user_id")?;
    Ok(PrtRecord {
        token_hash: hash32(get(r, "token_hash")?)?,
        user_id: UserId::parse(&uid).ok_or_else(|| corrupt("user_id"))?,
        creation_time: ts(r, "creation_time")?,
        expiration_time: ts(r, "expiration_time")?,
        creation_ctx: get(r, "creation_ctx")?,
        has_been_accessed: flag(r, "has_been_accessed")?,
        access_time: opt_ts(r, "access_time")?,
        access_ctx: get(r, "access_ctx")?,
        reset_key_hash: get::<Option<Vec<u8>>>(r, "reset_key_hash")?.map(hash32).transpose()?,
        reset_key_exp_time: opt_ts(r, "reset_key_exp_time")?,
        is_password_reset: flag(r, "is_password_reset")?,
        password_reset_time: opt_ts(r, "password_reset_time")?,
        password_reset_ctx: get(r, "password_reset_ctx")?,
    })
}

/// `$1, $2, …, $n`.
pub(crate) fn placeholders(n: usize, start: usize) -> String {
    (start..start + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Maps an sqlx error to a store error: unique violations become `Conflict` (naming the key),
/// foreign-key violations `NotFound`, connection problems `Unavailable`.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            let msg = db.message();
            if db.is_unique_violation() {
                // Most specific columns first: `sso_linked_auth.auth_username` contains "username".
                let what = if msg.contains("auth_type") || msg.contains("auth_username") {
                    "principal"
                } else if msg.contains("sso_user.username") {
                    "username"
                } else if msg.contains("confirm_token_hash") {
                    "confirm_token_hash"
                } else if msg.contains("sso_user.user_id") {
                    "user_id"
                } else if msg.contains("token_hash") {
                    "token_hash"
                } else if msg.contains("session_id") || msg.contains("ust_hash") {
                    "session_id"
                } else if msg.contains("auth_id") {
                    "auth_id"
                } else {
                    "unique"
                };
                StoreError::Conflict { what }
            } else if db.is_foreign_key_violation() {
                StoreError::NotFound
            } else if msg.contains("locked") || msg.contains("busy") {
                StoreError::unavailable(format!("sqlite: {msg}"))
            } else {
                StoreError::corrupt(format!("sqlite: {msg}"))
            }
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::TypeNotFound { .. } => {
            StoreError::corrupt(e.to_string())
        }
        sqlx::Error::RowNotFound => StoreError::NotFound,
        _ => StoreError::unavailable(format!("sqlite: {e}")),
    }
}
