//! The store traits: narrow, async, object-safe (`Arc<dyn …>`), one aggregate each
//! (spec/storage.md §1). A store stores; it never decides. It receives envelopes and hashes, never a
//! plaintext secret. The reference semantics are those of [`crate::memory`]; every backend is held
//! to them by the conformance suite.
//!
//! Writes to the users database (users, password-reset tokens, linked auth) go through a
//! transaction handle, [`UserTx`], so that an operation that writes several rows — and, where the
//! SQL audit sink shares the database, its audit record — commits all or nothing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::audit::AuditRecord;
use crate::error::StoreError;
use crate::ids::{AuthId, SessionId, UserId};
use crate::model::{
    AttrRecord, AttrScope, AttrWrite, HistoryEntry, LinkedAuthRecord, PrtRecord, SessionRecord, UserPatch, UserQuery,
    UserRecord,
};
use crate::time::Timestamp;

/// Result alias of store methods.
pub type StoreResult<T> = Result<T, StoreError>;

/// What `confirm_signup` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// The user moved from `before_confirmation` to `final`.
    Confirmed(UserId),
    /// A user has the token but is already `final`.
    AlreadyFinal(UserId),
    /// No user has the token.
    Unknown,
}

/// A secret field of a user row that holds an envelope (spec/totp.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnvelopeField {
    /// `totp_key_enc`
    TotpKey,
    /// `totp_label_enc`
    TotpLabel,
    /// `email_enc` (when e-mails are encrypted)
    Email,
    /// `password_hash` (when hashes are encrypted)
    Password,
}

impl EnvelopeField {
    /// Every field.
    pub const ALL: [EnvelopeField; 4] =
        [EnvelopeField::TotpKey, EnvelopeField::TotpLabel, EnvelopeField::Email, EnvelopeField::Password];

    /// The column name.
    pub fn column(self) -> &'static str {
        match self {
            EnvelopeField::TotpKey => "totp_key_enc",
            EnvelopeField::TotpLabel => "totp_label_enc",
            EnvelopeField::Email => "email_enc",
            EnvelopeField::Password => "password_hash",
        }
    }

    /// The AAD field name (`sso/v1/user/<id>/<field>`).
    pub fn aad_field(self) -> &'static str {
        match self {
            EnvelopeField::TotpKey => "totp_key",
            EnvelopeField::TotpLabel => "totp_label",
            EnvelopeField::Email => "email",
            EnvelopeField::Password => "password",
        }
    }

    /// The field's value in a record (`None` when NULL).
    pub fn of(self, u: &UserRecord) -> Option<&str> {
        match self {
            EnvelopeField::TotpKey => Some(&u.totp_key_enc),
            EnvelopeField::TotpLabel => Some(&u.totp_label_enc),
            EnvelopeField::Email => u.email_enc.as_deref(),
            EnvelopeField::Password => Some(&u.password_hash),
        }
    }
}

/// An encrypted attribute found by a rotation scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrEnvelope {
    /// User id or session id.
    pub owner: String,
    /// Attribute name.
    pub name: String,
    /// The stored envelope.
    pub value: String,
}

/// Users: reads, search and the transaction that carries every users-database write.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Opens a transaction. Dropping it without [`UserTx::commit`] rolls it back.
    async fn begin(&self) -> StoreResult<Box<dyn UserTx>>;

    /// By id.
    async fn get_by_id(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>>;

    /// By id, as a shared record: the read of the session pipeline (every authenticated call),
    /// which never changes the record. The default wraps [`UserStore::get_by_id`]; a store that
    /// keeps its records in memory hands out its own `Arc` instead of a copy. Same answer as
    /// `get_by_id`, always.
    async fn get_by_id_shared(&self, user_id: &UserId) -> StoreResult<Option<Arc<UserRecord>>> {
        Ok(self.get_by_id(user_id).await?.map(Arc::new))
    }

    /// By exact, case-sensitive username.
    async fn get_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>>;

    /// By the SHA-256 of a sign-up confirmation token.
    async fn get_by_confirm_token_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<UserRecord>>;

    /// Every user whose e-mail blind index equals `idx`.
    async fn find_by_email_idx(&self, idx: &str) -> StoreResult<Vec<UserRecord>>;

    /// The users matching `q` in the search order ([`crate::model::search_order`]): the total count
    /// and the page `offset .. offset + limit`.
    async fn search(&self, q: &UserQuery, offset: u64, limit: u64) -> StoreResult<(u64, Vec<UserRecord>)>;

    /// Key rotation: up to `limit` users with ids after `after`, in id order (the caller reads the
    /// envelope fields).
    async fn scan_users(&self, after: Option<&UserId>, limit: u64) -> StoreResult<Vec<UserRecord>>;

    /// Key rotation: compare-and-set of one envelope field; `true` when the stored value was `old`
    /// and is now `new` (a concurrent update is never overwritten).
    async fn replace_envelope(&self, user_id: &UserId, field: EnvelopeField, old: &str, new: &str)
    -> StoreResult<bool>;

    /// Whether the backend can be reached (health checks).
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// A users-database transaction.
#[async_trait]
pub trait UserTx: Send {
    /// Reads a user inside the transaction (never call the [`UserStore`] reads while a
    /// transaction is open: a single-connection backend would wait on itself).
    async fn get_user(&mut self, user_id: &UserId) -> StoreResult<Option<UserRecord>>;

    /// Inserts a user. `Conflict` on `user_id`, `username` or `confirm_token_hash`.
    async fn insert_user(&mut self, user: &UserRecord) -> StoreResult<()>;

    /// Applies a patch as one row update. `NotFound`; `Conflict { what: "username" }`.
    async fn update_user(&mut self, user_id: &UserId, patch: &UserPatch) -> StoreResult<()>;

    /// Sets the TOTP key and label envelopes and increments `totp_key_gen` (and `session_epoch`
    /// when `bump_epoch`) in one statement. Returns the new `(totp_key_gen, session_epoch)`.
    async fn update_totp(
        &mut self,
        user_id: &UserId,
        key_enc: &str,
        label_enc: &str,
        bump_epoch: bool,
    ) -> StoreResult<(u64, u64)>;

    /// Increments `session_epoch`, returning the new value. `NotFound`.
    async fn bump_epoch(&mut self, user_id: &UserId) -> StoreResult<u64>;

    /// Compare-and-set of the sign-up state from `before_confirmation` to `final`.
    async fn confirm_signup(&mut self, hash: &[u8; 32], now: Timestamp) -> StoreResult<ConfirmOutcome>;

    /// Deletes the user and what hangs off it in this database (user attributes, links, PRTs, and
    /// sessions with their attributes when co-located). Returns whether the user existed.
    async fn delete_user(&mut self, user_id: &UserId) -> StoreResult<bool>;

    /// Inserts a password-reset token. `Conflict` on the token hash.
    async fn insert_prt(&mut self, prt: &PrtRecord) -> StoreResult<()>;

    /// Compare-and-set: marks an unaccessed, unused, unexpired PRT accessed and stores the reset
    /// key's hash and expiry. Exactly one of concurrent callers gets `true`.
    async fn mark_prt_accessed(
        &mut self,
        token_hash: &[u8; 32],
        reset_key_hash: &[u8; 32],
        reset_key_exp: Timestamp,
        now: Timestamp,
        ctx: &str,
    ) -> StoreResult<bool>;

    /// Compare-and-set: marks an accessed, unused PRT used.
    async fn mark_prt_used(&mut self, token_hash: &[u8; 32], now: Timestamp, ctx: &str) -> StoreResult<bool>;

    /// Inserts a link. `Conflict { what: "principal" }` when (`auth_type`, `auth_username`) is taken.
    async fn insert_link(&mut self, link: &LinkedAuthRecord) -> StoreResult<()>;

    /// Deletes the user's link for a principal, returning its id.
    async fn delete_link(
        &mut self,
        user_id: &UserId,
        auth_type: &str,
        auth_username: &str,
    ) -> StoreResult<Option<AuthId>>;

    /// Inserts the operation's audit record in this transaction when this database holds the SQL
    /// audit sink; returns whether it did. Other stores return `false`.
    async fn insert_audit(&mut self, record: &AuditRecord) -> StoreResult<bool> {
        let _ = record;
        Ok(false)
    }

    /// Commits.
    async fn commit(self: Box<Self>) -> StoreResult<()>;
}

/// Password-reset tokens (reads; writes go through [`UserTx`]). Lives in the users database.
#[async_trait]
pub trait PasswordResetStore: Send + Sync {
    /// By token hash.
    async fn get_prt(&self, token_hash: &[u8; 32]) -> StoreResult<Option<PrtRecord>>;

    /// Deletes PRTs whose `expiration_time` has passed, at most `limit`.
    async fn delete_expired_prts(&self, now: Timestamp, limit: u64) -> StoreResult<u64>;
}

/// Linked external principals (reads; writes go through [`UserTx`]). Lives in the users database.
#[async_trait]
pub trait LinkedAuthStore: Send + Sync {
    /// The user's links, oldest first.
    async fn list_links(&self, user_id: &UserId) -> StoreResult<Vec<LinkedAuthRecord>>;

    /// The link of a principal.
    async fn get_link(&self, auth_type: &str, auth_username: &str) -> StoreResult<Option<LinkedAuthRecord>>;
}

/// The answer of [`SessionStore::get_with_user`].
#[derive(Debug, Clone)]
pub enum SessionLookup {
    /// This store does not hold users; read the session and the user separately.
    Unsupported,
    /// No such session, or its user is gone.
    NotFound,
    /// The session and its user (shared: a store may hand out records it keeps).
    Found(Arc<SessionRecord>, Arc<UserRecord>),
}

/// Sessions (spec/storage.md §1 `SessionStore`).
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Creates a session; the record and its per-user index entry are visible before it returns.
    async fn create(&self, record: &SessionRecord) -> StoreResult<()>;

    /// By id; expired records too (the core decides validity).
    async fn get(&self, session_id: &SessionId) -> StoreResult<Option<SessionRecord>>;

    /// By id, as a shared record: the read of the session pipeline. The default wraps
    /// [`SessionStore::get`]; a store that keeps its records in memory hands out its own `Arc`
    /// instead of a copy. Same answer as `get`, always.
    async fn get_shared(&self, session_id: &SessionId) -> StoreResult<Option<Arc<SessionRecord>>> {
        Ok(self.get(session_id).await?.map(Arc::new))
    }

    /// The session and its user in one read, for a backend that holds users too (the SQL
    /// stores join the two tables). The service asks only when this very object is also the
    /// [`UserStore`] in use, so both come from one database. `Found` needs both the session and
    /// its user; expired sessions are returned too. The default answers
    /// [`SessionLookup::Unsupported`] and the service reads twice.
    async fn get_with_user(&self, session_id: &SessionId) -> StoreResult<SessionLookup> {
        let _ = session_id;
        Ok(SessionLookup::Unsupported)
    }

    /// Sets `expiration_time = max(current, new)`; `false` if missing.
    async fn extend(&self, session_id: &SessionId, new_expiration: Timestamp) -> StoreResult<bool>;

    /// Sets the session's epoch.
    async fn set_epoch(&self, session_id: &SessionId, epoch: u64) -> StoreResult<bool>;

    /// Appends a history entry, keeping at most `max` (oldest dropped).
    async fn append_history(&self, session_id: &SessionId, entry: &HistoryEntry, max: u32) -> StoreResult<bool>;

    /// Deletes the record, its attributes and index entry; idempotent; `true` if it existed.
    async fn delete(&self, session_id: &SessionId) -> StoreResult<bool>;

    /// The user's sessions through a per-user index (never a scan of all sessions).
    async fn list_by_user(&self, user_id: &UserId) -> StoreResult<Vec<SessionRecord>>;

    /// Deletes the user's sessions except `except`, returning how many were deleted.
    async fn delete_by_user(&self, user_id: &UserId, except: Option<&SessionId>) -> StoreResult<u64>;

    /// Deletes up to `limit` sessions expired at `now` (with their attributes).
    async fn delete_expired(&self, now: Timestamp, limit: u64) -> StoreResult<u64>;

    /// Whether the backend can be reached.
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// Attributes of one scope (`owner` = user id or session id). Every `*_many` is all-or-nothing;
/// expired attributes are invisible to reads and count as absent for `create`.
#[async_trait]
pub trait AttrStore: Send + Sync {
    /// Creates; `Conflict { what: "attr" }` if any name exists unexpired (nothing written).
    async fn create_many(&self, scope: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()>;

    /// Upserts; replaces value, encryption and expiry, keeps `creation_time`.
    async fn set_many(&self, scope: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()>;

    /// Updates existing ones; `NotFound` if any is missing or expired (nothing written).
    /// `expiration_time: None` keeps the current expiry.
    async fn update_many(&self, scope: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()>;

    /// The unexpired attributes among `names`.
    async fn get_many(
        &self,
        scope: AttrScope,
        owner: &str,
        names: &[String],
        now: Timestamp,
    ) -> StoreResult<Vec<AttrRecord>>;

    /// Unexpired names, sorted.
    async fn names(&self, scope: AttrScope, owner: &str, now: Timestamp) -> StoreResult<Vec<String>>;

    /// Deletes; `NotFound` if any is missing or expired (nothing deleted).
    async fn delete_many(&self, scope: AttrScope, owner: &str, names: &[String], now: Timestamp) -> StoreResult<()>;

    /// Sets expiries; `NotFound` if any is missing or expired (nothing written).
    async fn set_expiry_many(
        &self,
        scope: AttrScope,
        owner: &str,
        items: &[(String, Option<Timestamp>)],
        now: Timestamp,
    ) -> StoreResult<()>;

    /// Deletes up to `limit` expired attributes.
    async fn delete_expired(&self, now: Timestamp, limit: u64) -> StoreResult<u64>;

    /// Key rotation: a batch of about `limit` encrypted attributes of `scope` after the opaque
    /// `cursor` (a backend may return one twice; rewriting is idempotent), and
    /// the cursor to continue from (`None` when the scan is complete).
    async fn scan_envelopes(
        &self,
        scope: AttrScope,
        cursor: Option<String>,
        limit: u64,
    ) -> StoreResult<(Vec<AttrEnvelope>, Option<String>)>;

    /// Key rotation: compare-and-set of one encrypted attribute's value.
    async fn replace_envelope(
        &self,
        scope: AttrScope,
        owner: &str,
        name: &str,
        old: &str,
        new: &str,
    ) -> StoreResult<bool>;
}

/// Throttle counters and TOTP replay markers (spec/storage.md §1 `CounterStore`).
#[async_trait]
pub trait CounterStore: Send + Sync {
    /// One atomic increment-and-read (an expired key restarts at 1); sets the failure time to `now`
    /// and expiry to `now + ttl`; returns the new count and the failure time it replaced.
    async fn record_failure(&self, key: &str, now: Timestamp, ttl: Duration) -> StoreResult<(u64, Option<Timestamp>)>;

    /// `(count, last_failure)`; expired keys read as `None`.
    async fn get(&self, key: &str, now: Timestamp) -> StoreResult<Option<(u64, Timestamp)>>;

    /// Deletes the key.
    async fn reset(&self, key: &str) -> StoreResult<()>;

    /// Atomic compare-and-set: `true` iff there is no live value or the stored value is lower than
    /// `step`, then stores `step` with the TTL.
    async fn advance_step(&self, key: &str, step: u64, now: Timestamp, ttl: Duration) -> StoreResult<bool>;

    /// Deletes expired keys (SQL backends; others may return 0).
    async fn delete_expired(&self, now: Timestamp) -> StoreResult<u64>;

    /// Whether the backend can be reached.
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// The set of stores an `Sso` instance works on. Backends are chosen per trait (by configuration
/// in the server).
#[derive(Clone)]
pub struct Stores {
    /// Users.
    pub users: Arc<dyn UserStore>,
    /// Password-reset tokens (same database as users).
    pub resets: Arc<dyn PasswordResetStore>,
    /// Linked auth (same database as users).
    pub links: Arc<dyn LinkedAuthStore>,
    /// User-scope attributes (same database as users).
    pub user_attrs: Arc<dyn AttrStore>,
    /// Sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Session-scope attributes (same backend as sessions).
    pub session_attrs: Arc<dyn AttrStore>,
    /// Counters.
    pub counters: Arc<dyn CounterStore>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stores { .. }")
    }
}
