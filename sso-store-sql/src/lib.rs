//! # sso-store-sql
//!
//! What the SQLite and PostgreSQL stores share, written once: the column lists, the values of a row
//! as backend-neutral [`Val`]s (each backend binds them in its own types), row decoding through the
//! small [`RowRead`] trait, and the dynamic search filter with its [`Dialect`] differences. Each
//! store crate holds only what differs: binding, decoding of its column types, error mapping and
//! the statements whose syntax differs.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod audit;

use sso_core::StoreError;
use sso_core::ids::{AuthId, SessionId, UserId};
use sso_core::model::{
    ApprovalStatus, AttrRecord, HistoryEntry, LinkedAuthRecord, PrtRecord, SessionRecord, SignUpStatus, UserPatch,
    UserQuery, UserRecord,
};
use sso_core::time::Timestamp;

/// A backend-neutral value to bind.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// Text.
    Text(Option<String>),
    /// 64-bit integer.
    Int(Option<i64>),
    /// Boolean (SQLite: 0/1).
    Bool(Option<bool>),
    /// Time (SQLite: Unix µs; Postgres: `timestamptz`).
    Ts(Option<Timestamp>),
    /// JSON text (SQLite: TEXT; Postgres: `jsonb`).
    Json(Option<String>),
    /// Bytes.
    Blob(Option<Vec<u8>>),
}

impl Val {
    /// Non-null text.
    pub fn text(s: &str) -> Val {
        Val::Text(Some(s.to_owned()))
    }

    /// Non-null time.
    pub fn ts(t: Timestamp) -> Val {
        Val::Ts(Some(t))
    }

    /// Non-null boolean.
    pub fn bool(b: bool) -> Val {
        Val::Bool(Some(b))
    }

    /// An unsigned counter as `bigint`.
    pub fn uint(n: u64) -> Val {
        Val::Int(Some(i64::try_from(n).unwrap_or(i64::MAX)))
    }
}

/// The column that splits a joined row: `SELECT a.*, 0 AS sso_split, b.* …` (the session-verify
/// read of a session and its user).
pub const SPLIT: &str = "sso_split";

/// Where one table's columns sit in a joined row split at [`SPLIT`]: names resolve within that
/// half only, so columns both tables have (`user_id`, `creation_time`) are read from the right one.
/// The names are collected once per row; a lookup starts where the previous one matched, since
/// the decoders read columns in table order (one comparison per field, typically).
#[derive(Debug, Clone)]
pub struct Half<'a> {
    names: std::rc::Rc<Vec<&'a str>>,
    from: usize,
    to: usize,
    /// Position (within the half) after the last match.
    next: std::cell::Cell<usize>,
}

impl<'a> Half<'a> {
    /// The halves before and after the [`SPLIT`] column of a row with these column names.
    pub fn split(names: Vec<&'a str>) -> Result<(Half<'a>, Half<'a>), StoreError> {
        let n = names.len();
        let at = names
            .iter()
            .position(|c| *c == SPLIT)
            .ok_or_else(|| StoreError::corrupt("joined row without its split column"))?;
        let names = std::rc::Rc::new(names);
        let half = |names, from, to| Half { names, from, to, next: std::cell::Cell::new(0) };
        Ok((half(names.clone(), 0, at), half(names, at + 1, n)))
    }

    /// The row indexes of this half's columns.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.from..self.to
    }

    /// The row index of column `col` of this half.
    pub fn index(&self, col: &str) -> Result<usize, StoreError> {
        let half = self.names.get(self.from..self.to).unwrap_or_default();
        let start = self.next.get().min(half.len());
        let (after, before) = (half.get(start..).unwrap_or_default(), half.get(..start).unwrap_or_default());
        let found =
            after.iter().position(|c| *c == col).map(|i| i + start).or_else(|| before.iter().position(|c| *c == col));
        match found {
            Some(i) => {
                self.next.set(i + 1);
                Ok(i + self.from)
            }
            None => Err(StoreError::corrupt(format!("no column {col}"))),
        }
    }
}

/// Reading typed columns from a row; implemented by each backend for its row type.
pub trait RowRead {
    /// Text.
    fn text(&self, col: &str) -> Result<String, StoreError>;
    /// Nullable text.
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    /// Integer.
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    /// Boolean.
    fn flag(&self, col: &str) -> Result<bool, StoreError>;
    /// Time.
    fn ts(&self, col: &str) -> Result<Timestamp, StoreError>;
    /// Nullable time.
    fn opt_ts(&self, col: &str) -> Result<Option<Timestamp>, StoreError>;
    /// Nullable bytes.
    fn opt_blob(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// JSON as text.
    fn json(&self, col: &str) -> Result<String, StoreError>;
    /// Nullable JSON as text.
    fn opt_json(&self, col: &str) -> Result<Option<String>, StoreError>;

    /// Bytes.
    fn blob(&self, col: &str) -> Result<Vec<u8>, StoreError> {
        self.opt_blob(col)?.ok_or_else(|| StoreError::corrupt(format!("{col} is NULL")))
    }

    /// An unsigned counter.
    fn uint(&self, col: &str) -> Result<u64, StoreError> {
        u64::try_from(self.int(col)?).map_err(|_| StoreError::corrupt(format!("{col} is negative")))
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::corrupt(what.to_owned())
}

fn hash32(v: Vec<u8>) -> Result<[u8; 32], StoreError> {
    v.try_into().map_err(|_| corrupt("hash is not 32 bytes"))
}

/// `$start, $start+1, …` (`n` placeholders).
pub fn placeholders(n: usize, start: usize) -> String {
    (start..start + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Every column of `sso_user`, in [`user_values`] order.
pub const USER_COLUMNS: &[&str] = &[
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

/// `INSERT INTO sso_user (…) VALUES ($1, …)`.
pub fn insert_user_sql() -> String {
    format!("INSERT INTO sso_user ({}) VALUES ({})", USER_COLUMNS.join(", "), placeholders(USER_COLUMNS.len(), 1))
}

/// The values of a user row, in [`USER_COLUMNS`] order.
pub fn user_values(u: &UserRecord) -> Vec<Val> {
    vec![
        Val::text(u.user_id.as_str()),
        Val::text(&u.username),
        Val::text(&u.password_hash),
        Val::bool(u.password_is_set),
        Val::bool(u.password_must_change),
        Val::ts(u.password_last_set),
        Val::Ts(u.password_expiry),
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
        Val::Ts(u.locked_time),
        Val::Text(u.locked_by.clone()),
        Val::text(u.approval_status.as_str()),
        Val::ts(u.approval_status_mod_time),
        Val::text(&u.approval_status_mod_by),
        Val::text(u.sign_up_status.as_str()),
        Val::ts(u.sign_up_time),
        Val::Ts(u.sign_up_confirm_time),
        Val::Blob(u.confirm_token_hash.clone()),
        Val::Json(Some(u.creation_ctx.clone())),
        Val::bool(u.is_totp_enabled),
        Val::text(&u.totp_key_enc),
        Val::text(&u.totp_label_enc),
        Val::uint(u.totp_key_gen),
        Val::uint(u.session_epoch),
    ]
}

/// The `SET` columns and values of a patch, in a fixed order.
pub fn patch_values(p: &UserPatch) -> Vec<(&'static str, Val)> {
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
        ($($f:ident),*) => { $( if let Some(x) = p.$f { v.push((stringify!($f), Val::Ts(x))); } )* };
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

/// `UPDATE sso_user SET … WHERE user_id = $1` for a patch (values bind from `$2`).
pub fn update_user_sql(cols: &[(&'static str, Val)]) -> String {
    let set: Vec<String> = cols.iter().enumerate().map(|(i, (c, _))| format!("{c} = ${}", i + 2)).collect();
    format!("UPDATE sso_user SET {} WHERE user_id = $1", set.join(", "))
}

/// Decodes a user row.
pub fn user_from_row(r: &impl RowRead) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        user_id: UserId::parse(&r.text("user_id")?).ok_or_else(|| corrupt("user_id"))?,
        username: r.text("username")?,
        password_hash: r.text("password_hash")?,
        password_is_set: r.flag("password_is_set")?,
        password_must_change: r.flag("password_must_change")?,
        password_last_set: r.ts("password_last_set")?,
        password_expiry: r.opt_ts("password_expiry")?,
        email_enc: r.opt_text("email_enc")?,
        email_idx: r.opt_text("email_idx")?,
        display_name: r.opt_text("display_name")?,
        first_name: r.opt_text("first_name")?,
        middle_name: r.opt_text("middle_name")?,
        last_name: r.opt_text("last_name")?,
        display_name_upper: r.opt_text("display_name_upper")?,
        first_name_upper: r.opt_text("first_name_upper")?,
        middle_name_upper: r.opt_text("middle_name_upper")?,
        last_name_upper: r.opt_text("last_name_upper")?,
        is_super_user: r.flag("is_super_user")?,
        is_locked: r.flag("is_locked")?,
        locked_time: r.opt_ts("locked_time")?,
        locked_by: r.opt_text("locked_by")?,
        approval_status: ApprovalStatus::parse(&r.text("approval_status")?)
            .ok_or_else(|| corrupt("approval_status"))?,
        approval_status_mod_time: r.ts("approval_status_mod_time")?,
        approval_status_mod_by: r.text("approval_status_mod_by")?,
        sign_up_status: SignUpStatus::parse(&r.text("sign_up_status")?).ok_or_else(|| corrupt("sign_up_status"))?,
        sign_up_time: r.ts("sign_up_time")?,
        sign_up_confirm_time: r.opt_ts("sign_up_confirm_time")?,
        confirm_token_hash: r.opt_blob("confirm_token_hash")?,
        creation_ctx: r.json("creation_ctx")?,
        is_totp_enabled: r.flag("is_totp_enabled")?,
        totp_key_enc: r.text("totp_key_enc")?,
        totp_label_enc: r.text("totp_label_enc")?,
        totp_key_gen: r.uint("totp_key_gen")?,
        session_epoch: r.uint("session_epoch")?,
    })
}

/// Every column of `sso_session`, in [`session_values`] order.
pub const SESSION_COLUMNS: &[&str] = &[
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

/// `INSERT INTO sso_session (…) VALUES ($1, …)`.
pub fn insert_session_sql() -> String {
    format!(
        "INSERT INTO sso_session ({}) VALUES ({})",
        SESSION_COLUMNS.join(", "),
        placeholders(SESSION_COLUMNS.len(), 1)
    )
}

/// The session history as JSON text.
pub fn history_json(h: &[HistoryEntry]) -> String {
    serde_json::to_string(h).unwrap_or_else(|_| "[]".into())
}

/// The values of a session row, in [`SESSION_COLUMNS`] order.
pub fn session_values(s: &SessionRecord) -> Vec<Val> {
    vec![
        Val::text(s.session_id.as_str()),
        Val::Blob(Some(s.ust_hash.to_vec())),
        Val::text(s.user_id.as_str()),
        Val::ts(s.creation_time),
        Val::ts(s.expiration_time),
        Val::Ts(s.abs_expiration_time),
        Val::uint(s.epoch),
        Val::text(&s.remote_addr),
        Val::Text(s.user_agent.clone()),
        Val::text(&s.current_app),
        Val::text(&s.auth_type),
        Val::text(&s.auth_principal),
        Val::text(&s.ext_session_id),
        Val::Json(Some(history_json(&s.history))),
    ]
}

/// Decodes a session row.
pub fn session_from_row(r: &impl RowRead) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        session_id: SessionId::parse(&r.text("session_id")?).ok_or_else(|| corrupt("session_id"))?,
        ust_hash: hash32(r.blob("ust_hash")?)?,
        user_id: UserId::parse(&r.text("user_id")?).ok_or_else(|| corrupt("user_id"))?,
        creation_time: r.ts("creation_time")?,
        expiration_time: r.ts("expiration_time")?,
        abs_expiration_time: r.opt_ts("abs_expiration_time")?,
        epoch: r.uint("epoch")?,
        remote_addr: r.text("remote_addr")?,
        user_agent: r.opt_text("user_agent")?,
        current_app: r.text("current_app")?,
        auth_type: r.text("auth_type")?,
        auth_principal: r.text("auth_principal")?,
        ext_session_id: r.text("ext_session_id")?,
        history: serde_json::from_str(&r.json("history")?).map_err(|e| StoreError::corrupt(e.to_string()))?,
    })
}

/// Decodes an attribute row.
pub fn attr_from_row(r: &impl RowRead) -> Result<AttrRecord, StoreError> {
    Ok(AttrRecord {
        name: r.text("name")?,
        value: r.text("value")?,
        is_encrypted: r.flag("is_encrypted")?,
        creation_time: r.ts("creation_time")?,
        last_modified: r.ts("last_modified")?,
        expiration_time: r.opt_ts("expiration_time")?,
    })
}

/// Decodes a linked-auth row.
pub fn link_from_row(r: &impl RowRead) -> Result<LinkedAuthRecord, StoreError> {
    Ok(LinkedAuthRecord {
        auth_id: AuthId::parse(&r.text("auth_id")?).ok_or_else(|| corrupt("auth_id"))?,
        user_id: UserId::parse(&r.text("user_id")?).ok_or_else(|| corrupt("user_id"))?,
        auth_type: r.text("auth_type")?,
        auth_username: r.text("auth_username")?,
        is_active: r.flag("is_active")?,
        creation_time: r.ts("creation_time")?,
        last_modified: r.ts("last_modified")?,
    })
}

/// The values of a PRT row for [`INSERT_PRT`].
pub fn prt_values(p: &PrtRecord) -> Vec<Val> {
    vec![
        Val::Blob(Some(p.token_hash.to_vec())),
        Val::text(p.user_id.as_str()),
        Val::ts(p.creation_time),
        Val::ts(p.expiration_time),
        Val::Json(Some(p.creation_ctx.clone())),
        Val::bool(p.has_been_accessed),
        Val::Ts(p.access_time),
        Val::Json(p.access_ctx.clone()),
        Val::Blob(p.reset_key_hash.map(|h| h.to_vec())),
        Val::Ts(p.reset_key_exp_time),
        Val::bool(p.is_password_reset),
        Val::Ts(p.password_reset_time),
        Val::Json(p.password_reset_ctx.clone()),
    ]
}

/// Inserts a PRT (values: [`prt_values`]).
pub const INSERT_PRT: &str = "INSERT INTO sso_password_reset (token_hash, user_id, creation_time, expiration_time, \
     creation_ctx, has_been_accessed, access_time, access_ctx, reset_key_hash, reset_key_exp_time, is_password_reset, \
     password_reset_time, password_reset_ctx) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// Decodes a PRT row.
pub fn prt_from_row(r: &impl RowRead) -> Result<PrtRecord, StoreError> {
    Ok(PrtRecord {
        token_hash: hash32(r.blob("token_hash")?)?,
        user_id: UserId::parse(&r.text("user_id")?).ok_or_else(|| corrupt("user_id"))?,
        creation_time: r.ts("creation_time")?,
        expiration_time: r.ts("expiration_time")?,
        creation_ctx: r.json("creation_ctx")?,
        has_been_accessed: r.flag("has_been_accessed")?,
        access_time: r.opt_ts("access_time")?,
        access_ctx: r.opt_json("access_ctx")?,
        reset_key_hash: r.opt_blob("reset_key_hash")?.map(hash32).transpose()?,
        reset_key_exp_time: r.opt_ts("reset_key_exp_time")?,
        is_password_reset: r.flag("is_password_reset")?,
        password_reset_time: r.opt_ts("password_reset_time")?,
        password_reset_ctx: r.opt_json("password_reset_ctx")?,
    })
}

/// How a dialect tests "column contains the value" (values are taken literally).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Substring {
    /// `instr(col, $n) > 0` (SQLite without its trigram index).
    Instr,
    /// SQLite with the `sso_user_name_fts` trigram index (migration 0002): values of three or
    /// more characters first narrow the candidates through the index, then `instr` decides as
    /// in [`Substring::Instr`]; shorter values scan.
    Trigram,
    /// `col LIKE '%' || $n || '%' ESCAPE '\'` with `\ % _` escaped in the value (PostgreSQL: can
    /// use trigram indexes).
    EscapedLike,
}

/// Where SQL dialects differ in the search.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    /// The substring test.
    pub substring: Substring,
}

/// SQLite.
pub const SQLITE: Dialect = Dialect { substring: Substring::Trigram };
/// PostgreSQL.
pub const POSTGRES: Dialect = Dialect { substring: Substring::EscapedLike };

/// An FTS5 query matching `value` as one phrase in `column` (`{col} : "…"`, quotes doubled), so
/// the value is data to the query syntax, never operators.
pub fn fts_phrase(column: &str, value: &str) -> String {
    format!("{{{column}}} : \"{}\"", value.replace('"', "\"\""))
}

/// Escapes `\`, `%` and `_` for a `LIKE … ESCAPE '\'` pattern.
pub fn like_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The search order (binary collation comes from the schema): display name (NULL first), username,
/// sign-up time, user id.
pub const SEARCH_ORDER: &str = "ORDER BY display_name ASC NULLS FIRST, username, sign_up_time, user_id";

/// The `WHERE` clause and its values for a search (the semantics of `UserQuery::matches`).
pub fn search_filter(q: &UserQuery, d: Dialect) -> (String, Vec<Val>) {
    let mut conds: Vec<String> = Vec::new();
    let mut vals: Vec<Val> = Vec::new();
    let next = |v: Val, vals: &mut Vec<Val>| {
        vals.push(v);
        format!("${}", vals.len())
    };
    if let Some(id) = &q.user_id {
        let p = next(Val::text(id.as_str()), &mut vals);
        conds.push(format!("user_id = {p}"));
    } else if let Some(name) = &q.username {
        let p = next(Val::text(name), &mut vals);
        conds.push(format!("username = {p}"));
    } else {
        if !q.names.is_empty() {
            let parts: Vec<String> = q
                .names
                .iter()
                .map(|(f, v)| {
                    if q.names_exact {
                        let p = next(Val::text(v), &mut vals);
                        return format!("{} = {p}", f.column());
                    }
                    match d.substring {
                        Substring::Instr => {
                            let p = next(Val::text(v), &mut vals);
                            format!("instr({}, {p}) > 0", f.column())
                        }
                        Substring::Trigram if v.chars().count() >= 3 => {
                            let m = next(Val::text(&fts_phrase(f.column(), v)), &mut vals);
                            let p = next(Val::text(v), &mut vals);
                            format!(
                                "(user_id IN (SELECT k.user_id FROM sso_user_name_key k WHERE k.fts_rowid IN \
                                 (SELECT rowid FROM sso_user_name_fts WHERE sso_user_name_fts MATCH {m})) \
                                 AND instr({col}, {p}) > 0)",
                                col = f.column()
                            )
                        }
                        Substring::Trigram => {
                            let p = next(Val::text(v), &mut vals);
                            format!("instr({}, {p}) > 0", f.column())
                        }
                        Substring::EscapedLike => {
                            let p = next(Val::text(&like_escape(v)), &mut vals);
                            format!("{} LIKE '%' || {p} || '%' ESCAPE '\\'", f.column())
                        }
                    }
                })
                .collect();
            let op = if q.names_or { " OR " } else { " AND " };
            conds.push(format!("({})", parts.join(op)));
        }
        if let Some(idx) = &q.email_idx {
            let p = next(Val::text(idx), &mut vals);
            conds.push(format!("email_idx = {p}"));
        }
        if let Some(s) = q.sign_up_status {
            let p = next(Val::text(s.as_str()), &mut vals);
            conds.push(format!("sign_up_status = {p}"));
        }
        if let Some(s) = q.approval_status {
            let p = next(Val::text(s.as_str()), &mut vals);
            conds.push(format!("approval_status = {p}"));
        }
    }
    let clause = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
    (clause, vals)
}

/// Maps a unique-constraint name or message to the `Conflict { what }` of the store contract.
/// The most specific names come first (`auth_username` contains `username`).
pub fn conflict_of(text: &str) -> &'static str {
    if text.contains("auth_type") || text.contains("auth_username") || text.contains("linked_auth_principal") {
        "principal"
    } else if text.contains("confirm_token_hash") {
        "confirm_token_hash"
    } else if text.contains("username") {
        "username"
    } else if text.contains("sso_user_pkey") || text.contains("sso_user.user_id") {
        "user_id"
    } else if text.contains("token_hash") || text.contains("sso_password_reset") {
        "token_hash"
    } else if text.contains("session_id") || text.contains("ust_hash") || text.contains("sso_session") {
        "session_id"
    } else if text.contains("auth_id") || text.contains("sso_linked_auth_pkey") {
        "auth_id"
    } else {
        "unique"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sso_core::model::NameField;

    /// Lookups in any order find the column of their own half (the start hint never changes an
    /// answer), shared names resolve per half, a missing name is an error.
    #[test]
    fn half_lookups_in_any_order() {
        let names = vec!["session_id", "user_id", "creation_time", SPLIT, "user_id", "username", "creation_time"];
        let (s, u) = Half::split(names).unwrap();
        for _ in 0..2 {
            assert_eq!(s.index("session_id").unwrap(), 0);
            assert_eq!(s.index("creation_time").unwrap(), 2);
            assert_eq!(s.index("user_id").unwrap(), 1);
            assert_eq!(u.index("creation_time").unwrap(), 6);
            assert_eq!(u.index("user_id").unwrap(), 4);
            assert_eq!(u.index("username").unwrap(), 5);
            assert_eq!(u.index("username").unwrap(), 5);
        }
        assert!(s.index("username").is_err());
        assert!(u.index("session_id").is_err());
        assert!(u.index(SPLIT).is_err());
        assert!(Half::split(vec!["a", "b"]).is_err());
    }

    #[test]
    fn filters_are_positional_and_dialect_specific() {
        let q = UserQuery {
            names: vec![(NameField::FirstName, "AL".into()), (NameField::LastName, "SM".into())],
            names_or: true,
            names_exact: false,
            ..Default::default()
        };
        let (sql, vals) = search_filter(&q, POSTGRES);
        assert_eq!(
            sql,
            " WHERE (first_name_upper LIKE '%' || $1 || '%' ESCAPE '\\' OR last_name_upper LIKE '%' || $2 || '%' ESCAPE '\\')"
        );
        assert_eq!(vals.len(), 2);
        assert_eq!(like_escape("50%_a\\b"), "50\\%\\_a\\\\b");
        let (sql, _) = search_filter(&q, SQLITE);
        assert!(sql.contains("instr(first_name_upper, $1) > 0"));
        assert_eq!(search_filter(&UserQuery::default(), SQLITE).0, "");
    }

    #[test]
    fn conflicts() {
        assert_eq!(
            conflict_of("UNIQUE constraint failed: sso_linked_auth.auth_type, sso_linked_auth.auth_username"),
            "principal"
        );
        assert_eq!(conflict_of("UNIQUE constraint failed: sso_user.username"), "username");
        assert_eq!(conflict_of("sso_user_username_key"), "username");
        assert_eq!(conflict_of("sso_user_pkey"), "user_id");
    }
}
