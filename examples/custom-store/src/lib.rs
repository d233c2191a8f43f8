//! # sso-example-custom-store
//!
//! A third-party-style backend for `sso`: every store trait of [`sso_core::store`] implemented
//! outside `sso-core`, on nothing but `std::collections::BTreeMap`s behind **one**
//! [`tokio::sync::Mutex`]. It exists to show that the store traits are really pluggable: this
//! crate depends only on `sso-core`'s public API and passes the same conformance suite as the
//! built-in backends (`tests/conformance.rs`).
//!
//! The design is deliberately simple and different from `sso_core::memory`:
//!
//! * one lock for all data (users, tokens, links, attributes, sessions, counters), so every
//!   method is trivially atomic;
//! * a [`UserTx`] takes the lock when it begins, works on a **snapshot** (a clone of the whole
//!   state) and swaps the snapshot in at commit; dropping it without commit simply throws the
//!   snapshot away, which is the rollback;
//! * unique keys (username, confirmation-token hash, principal) are checked by scanning; only
//!   sessions keep a per-user index, because the trait requires one;
//! * sessions live in the same "database" as users, so deleting a user deletes its sessions too
//!   (the co-located case of spec/storage.md §1).
//!
//! ```
//! let stores = sso_example_custom_store::stores();
//! // Hand `stores` to `sso_core::Sso::builder(config, stores)`.
//! # let _ = stores;
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sso_core::StoreError;
use sso_core::ids::{AuthId, SessionId, UserId};
use sso_core::model::{
    AttrRecord, AttrScope, AttrWrite, HistoryEntry, LinkedAuthRecord, PrtRecord, SessionRecord, SignUpStatus,
    UserPatch, UserQuery, UserRecord, search_order,
};
use sso_core::store::{
    AttrEnvelope, AttrStore, ConfirmOutcome, CounterStore, EnvelopeField, LinkedAuthStore, PasswordResetStore,
    SessionStore, StoreResult, Stores, UserStore, UserTx,
};
use sso_core::time::Timestamp;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// A fresh, empty set of stores, all sharing one [`CustomStore`].
pub fn stores() -> Stores {
    let store = CustomStore::new();
    Stores {
        users: Arc::new(store.clone()),
        resets: Arc::new(store.clone()),
        links: Arc::new(store.clone()),
        user_attrs: Arc::new(store.attrs(AttrScope::User)),
        sessions: Arc::new(store.clone()),
        session_attrs: Arc::new(store.attrs(AttrScope::Session)),
        counters: Arc::new(store),
    }
}

/// The async form of [`stores`], the shape the conformance suite's factory takes.
pub async fn stores_async() -> Stores {
    stores()
}

/// One owner's attributes, by name.
type Attrs = BTreeMap<String, AttrRecord>;

/// A throttle counter or replay marker.
#[derive(Debug, Clone, Copy)]
struct Counter {
    value: u64,
    last_at: Timestamp,
    expires_at: Timestamp,
}

impl Counter {
    fn live(&self, now: Timestamp) -> bool {
        self.expires_at > now
    }
}

/// Everything the backend holds.
#[derive(Debug, Clone, Default)]
struct State {
    users: BTreeMap<UserId, UserRecord>,
    prts: BTreeMap<[u8; 32], PrtRecord>,
    links: BTreeMap<AuthId, LinkedAuthRecord>,
    user_attrs: BTreeMap<String, Attrs>,
    sessions: BTreeMap<SessionId, SessionRecord>,
    sessions_by_user: BTreeMap<UserId, BTreeSet<SessionId>>,
    session_attrs: BTreeMap<String, Attrs>,
    counters: BTreeMap<String, Counter>,
}

impl State {
    fn username_owner(&self, username: &str) -> Option<&UserId> {
        self.users.values().find(|u| u.username == username).map(|u| &u.user_id)
    }

    fn by_confirm_hash(&self, hash: &[u8]) -> Option<&UserRecord> {
        self.users.values().find(|u| u.confirm_token_hash.as_deref() == Some(hash))
    }

    fn link_of(&self, auth_type: &str, auth_username: &str) -> Option<&LinkedAuthRecord> {
        self.links.values().find(|l| l.auth_type == auth_type && l.auth_username == auth_username)
    }

    fn user_mut(&mut self, user_id: &UserId) -> StoreResult<&mut UserRecord> {
        self.users.get_mut(user_id).ok_or(StoreError::NotFound)
    }

    fn attrs(&self, scope: AttrScope) -> &BTreeMap<String, Attrs> {
        match scope {
            AttrScope::User => &self.user_attrs,
            AttrScope::Session => &self.session_attrs,
        }
    }

    fn attrs_mut(&mut self, scope: AttrScope) -> &mut BTreeMap<String, Attrs> {
        match scope {
            AttrScope::User => &mut self.user_attrs,
            AttrScope::Session => &mut self.session_attrs,
        }
    }

    /// Whether the owner of an attribute exists (a user or a session, by scope).
    fn owner_exists(&self, scope: AttrScope, owner: &str) -> bool {
        match scope {
            AttrScope::User => UserId::parse(owner).is_some_and(|id| self.users.contains_key(&id)),
            AttrScope::Session => SessionId::parse(owner).is_some_and(|id| self.sessions.contains_key(&id)),
        }
    }

    /// Removes a session with its attributes and index entry.
    fn remove_session(&mut self, session_id: &SessionId) -> bool {
        let Some(rec) = self.sessions.remove(session_id) else {
            return false;
        };
        self.session_attrs.remove(session_id.as_str());
        let now_empty = match self.sessions_by_user.get_mut(&rec.user_id) {
            Some(ids) => {
                ids.remove(session_id);
                ids.is_empty()
            }
            None => false,
        };
        if now_empty {
            self.sessions_by_user.remove(&rec.user_id);
        }
        true
    }
}

/// Every store trait except [`AttrStore`] over one shared, locked [`State`]. Cheap to clone (one
/// `Arc`); clones share the data.
#[derive(Debug, Clone, Default)]
pub struct CustomStore {
    state: Arc<Mutex<State>>,
}

impl CustomStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The attribute store of one scope over the same data.
    pub fn attrs(&self, scope: AttrScope) -> ScopedAttrs {
        ScopedAttrs { state: self.state.clone(), scope }
    }
}

// ----- users and their transaction -------------------------------------------------------------

/// A transaction: the lock, held from `begin` to commit or drop, and the snapshot it changes.
struct SnapshotTx {
    guard: OwnedMutexGuard<State>,
    work: State,
}

impl SnapshotTx {
    fn prt_mut(&mut self, token_hash: &[u8; 32]) -> Option<&mut PrtRecord> {
        self.work.prts.get_mut(token_hash)
    }
}

#[async_trait]
impl UserTx for SnapshotTx {
    async fn get_user(&mut self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        Ok(self.work.users.get(user_id).cloned())
    }

    async fn insert_user(&mut self, user: &UserRecord) -> StoreResult<()> {
        let w = &mut self.work;
        if w.users.contains_key(&user.user_id) {
            return Err(StoreError::Conflict { what: "user_id" });
        }
        if w.username_owner(&user.username).is_some() {
            return Err(StoreError::Conflict { what: "username" });
        }
        if let Some(h) = &user.confirm_token_hash
            && w.by_confirm_hash(h).is_some()
        {
            return Err(StoreError::Conflict { what: "confirm_token_hash" });
        }
        w.users.insert(user.user_id.clone(), user.clone());
        Ok(())
    }

    async fn update_user(&mut self, user_id: &UserId, patch: &UserPatch) -> StoreResult<()> {
        let w = &mut self.work;
        if !w.users.contains_key(user_id) {
            return Err(StoreError::NotFound);
        }
        if let Some(name) = &patch.username
            && w.username_owner(name).is_some_and(|owner| owner != user_id)
        {
            return Err(StoreError::Conflict { what: "username" });
        }
        patch.apply_to(w.user_mut(user_id)?);
        Ok(())
    }

    async fn update_totp(
        &mut self,
        user_id: &UserId,
        key_enc: &str,
        label_enc: &str,
        bump_epoch: bool,
    ) -> StoreResult<(u64, u64)> {
        let u = self.work.user_mut(user_id)?;
        u.totp_key_enc = key_enc.to_owned();
        u.totp_label_enc = label_enc.to_owned();
        u.totp_key_gen = u.totp_key_gen.saturating_add(1);
        if bump_epoch {
            u.session_epoch = u.session_epoch.saturating_add(1);
        }
        Ok((u.totp_key_gen, u.session_epoch))
    }

    async fn bump_epoch(&mut self, user_id: &UserId) -> StoreResult<u64> {
        let u = self.work.user_mut(user_id)?;
        u.session_epoch = u.session_epoch.saturating_add(1);
        Ok(u.session_epoch)
    }

    async fn confirm_signup(&mut self, hash: &[u8; 32], now: Timestamp) -> StoreResult<ConfirmOutcome> {
        let Some(id) = self.work.by_confirm_hash(hash).map(|u| u.user_id.clone()) else {
            return Ok(ConfirmOutcome::Unknown);
        };
        let u = self.work.user_mut(&id)?;
        if u.sign_up_status == SignUpStatus::Final {
            return Ok(ConfirmOutcome::AlreadyFinal(id));
        }
        u.sign_up_status = SignUpStatus::Final;
        u.sign_up_confirm_time = Some(now);
        Ok(ConfirmOutcome::Confirmed(id))
    }

    async fn delete_user(&mut self, user_id: &UserId) -> StoreResult<bool> {
        let w = &mut self.work;
        if w.users.remove(user_id).is_none() {
            return Ok(false);
        }
        w.user_attrs.remove(user_id.as_str());
        w.links.retain(|_, l| &l.user_id != user_id);
        w.prts.retain(|_, p| &p.user_id != user_id);
        let sessions: Vec<SessionId> = w.sessions_by_user.get(user_id).into_iter().flatten().cloned().collect();
        for sid in &sessions {
            w.remove_session(sid);
        }
        Ok(true)
    }

    async fn insert_prt(&mut self, prt: &PrtRecord) -> StoreResult<()> {
        let w = &mut self.work;
        if w.prts.contains_key(&prt.token_hash) {
            return Err(StoreError::Conflict { what: "token_hash" });
        }
        if !w.users.contains_key(&prt.user_id) {
            return Err(StoreError::NotFound);
        }
        w.prts.insert(prt.token_hash, prt.clone());
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
        let Some(p) = self.prt_mut(token_hash) else {
            return Ok(false);
        };
        if p.has_been_accessed || p.is_password_reset || now >= p.expiration_time {
            return Ok(false);
        }
        p.has_been_accessed = true;
        p.access_time = Some(now);
        p.access_ctx = Some(ctx.to_owned());
        p.reset_key_hash = Some(*reset_key_hash);
        p.reset_key_exp_time = Some(reset_key_exp);
        Ok(true)
    }

    async fn mark_prt_used(&mut self, token_hash: &[u8; 32], now: Timestamp, ctx: &str) -> StoreResult<bool> {
        let Some(p) = self.prt_mut(token_hash) else {
            return Ok(false);
        };
        if !p.has_been_accessed || p.is_password_reset {
            return Ok(false);
        }
        p.is_password_reset = true;
        p.password_reset_time = Some(now);
        p.password_reset_ctx = Some(ctx.to_owned());
        Ok(true)
    }

    async fn insert_link(&mut self, link: &LinkedAuthRecord) -> StoreResult<()> {
        let w = &mut self.work;
        if w.link_of(&link.auth_type, &link.auth_username).is_some() {
            return Err(StoreError::Conflict { what: "principal" });
        }
        if w.links.contains_key(&link.auth_id) {
            return Err(StoreError::Conflict { what: "auth_id" });
        }
        if !w.users.contains_key(&link.user_id) {
            return Err(StoreError::NotFound);
        }
        w.links.insert(link.auth_id.clone(), link.clone());
        Ok(())
    }

    async fn delete_link(
        &mut self,
        user_id: &UserId,
        auth_type: &str,
        auth_username: &str,
    ) -> StoreResult<Option<AuthId>> {
        let w = &mut self.work;
        let Some(id) = w.link_of(auth_type, auth_username).filter(|l| &l.user_id == user_id).map(|l| l.auth_id.clone())
        else {
            return Ok(None);
        };
        w.links.remove(&id);
        Ok(Some(id))
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        let SnapshotTx { mut guard, work } = *self;
        *guard = work;
        Ok(())
    }
}

#[async_trait]
impl UserStore for CustomStore {
    async fn begin(&self) -> StoreResult<Box<dyn UserTx>> {
        let guard = self.state.clone().lock_owned().await;
        let work = guard.clone();
        Ok(Box::new(SnapshotTx { guard, work }))
    }

    async fn get_by_id(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        Ok(self.state.lock().await.users.get(user_id).cloned())
    }

    async fn get_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        Ok(self.state.lock().await.users.values().find(|u| u.username == username).cloned())
    }

    async fn get_by_confirm_token_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<UserRecord>> {
        Ok(self.state.lock().await.by_confirm_hash(hash).cloned())
    }

    async fn find_by_email_idx(&self, idx: &str) -> StoreResult<Vec<UserRecord>> {
        let s = self.state.lock().await;
        Ok(s.users.values().filter(|u| u.email_idx.as_deref() == Some(idx)).cloned().collect())
    }

    async fn search(&self, q: &UserQuery, offset: u64, limit: u64) -> StoreResult<(u64, Vec<UserRecord>)> {
        let s = self.state.lock().await;
        let mut hits: Vec<&UserRecord> = s.users.values().filter(|u| q.matches(u)).collect();
        hits.sort_by(|a, b| search_order(a, b));
        let total = u64::try_from(hits.len()).unwrap_or(u64::MAX);
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok((total, hits.into_iter().skip(skip).take(take).cloned().collect()))
    }

    async fn scan_users(&self, after: Option<&UserId>, limit: u64) -> StoreResult<Vec<UserRecord>> {
        let s = self.state.lock().await;
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        // BTreeMap keys are already in id order.
        Ok(s.users.values().filter(|u| after.is_none_or(|a| &u.user_id > a)).take(take).cloned().collect())
    }

    async fn replace_envelope(
        &self,
        user_id: &UserId,
        field: EnvelopeField,
        old: &str,
        new: &str,
    ) -> StoreResult<bool> {
        let mut s = self.state.lock().await;
        let Some(u) = s.users.get_mut(user_id) else {
            return Ok(false);
        };
        let slot = match field {
            EnvelopeField::TotpKey => Some(&mut u.totp_key_enc),
            EnvelopeField::TotpLabel => Some(&mut u.totp_label_enc),
            EnvelopeField::Password => Some(&mut u.password_hash),
            EnvelopeField::Email => u.email_enc.as_mut(),
        };
        match slot {
            Some(v) if v == old => {
                new.clone_into(v);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl PasswordResetStore for CustomStore {
    async fn get_prt(&self, token_hash: &[u8; 32]) -> StoreResult<Option<PrtRecord>> {
        Ok(self.state.lock().await.prts.get(token_hash).cloned())
    }

    async fn delete_expired_prts(&self, now: Timestamp, limit: u64) -> StoreResult<u64> {
        let mut s = self.state.lock().await;
        let doomed: Vec<[u8; 32]> = s
            .prts
            .values()
            .filter(|p| p.expiration_time <= now)
            .map(|p| p.token_hash)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        for h in &doomed {
            s.prts.remove(h);
        }
        Ok(u64::try_from(doomed.len()).unwrap_or(u64::MAX))
    }
}

#[async_trait]
impl LinkedAuthStore for CustomStore {
    async fn list_links(&self, user_id: &UserId) -> StoreResult<Vec<LinkedAuthRecord>> {
        let s = self.state.lock().await;
        let mut v: Vec<LinkedAuthRecord> = s.links.values().filter(|l| &l.user_id == user_id).cloned().collect();
        v.sort_by(|a, b| (a.creation_time, &a.auth_id).cmp(&(b.creation_time, &b.auth_id)));
        Ok(v)
    }

    async fn get_link(&self, auth_type: &str, auth_username: &str) -> StoreResult<Option<LinkedAuthRecord>> {
        Ok(self.state.lock().await.link_of(auth_type, auth_username).cloned())
    }
}

// ----- sessions --------------------------------------------------------------------------------

#[async_trait]
impl SessionStore for CustomStore {
    async fn create(&self, record: &SessionRecord) -> StoreResult<()> {
        let mut s = self.state.lock().await;
        if s.sessions.contains_key(&record.session_id) {
            return Err(StoreError::Conflict { what: "session_id" });
        }
        s.sessions_by_user.entry(record.user_id.clone()).or_default().insert(record.session_id.clone());
        s.sessions.insert(record.session_id.clone(), record.clone());
        Ok(())
    }

    async fn get(&self, session_id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        Ok(self.state.lock().await.sessions.get(session_id).cloned())
    }

    async fn extend(&self, session_id: &SessionId, new_expiration: Timestamp) -> StoreResult<bool> {
        let mut s = self.state.lock().await;
        let Some(rec) = s.sessions.get_mut(session_id) else {
            return Ok(false);
        };
        rec.expiration_time = rec.expiration_time.max(new_expiration);
        Ok(true)
    }

    async fn set_epoch(&self, session_id: &SessionId, epoch: u64) -> StoreResult<bool> {
        let mut s = self.state.lock().await;
        let Some(rec) = s.sessions.get_mut(session_id) else {
            return Ok(false);
        };
        rec.epoch = epoch;
        Ok(true)
    }

    async fn append_history(&self, session_id: &SessionId, entry: &HistoryEntry, max: u32) -> StoreResult<bool> {
        let mut s = self.state.lock().await;
        let Some(rec) = s.sessions.get_mut(session_id) else {
            return Ok(false);
        };
        rec.history.push(entry.clone());
        let keep = usize::try_from(max).unwrap_or(usize::MAX);
        let excess = rec.history.len().saturating_sub(keep);
        rec.history.drain(..excess);
        Ok(true)
    }

    async fn delete(&self, session_id: &SessionId) -> StoreResult<bool> {
        Ok(self.state.lock().await.remove_session(session_id))
    }

    async fn list_by_user(&self, user_id: &UserId) -> StoreResult<Vec<SessionRecord>> {
        let s = self.state.lock().await;
        let ids = s.sessions_by_user.get(user_id).into_iter().flatten();
        Ok(ids.filter_map(|id| s.sessions.get(id).cloned()).collect())
    }

    async fn delete_by_user(&self, user_id: &UserId, except: Option<&SessionId>) -> StoreResult<u64> {
        let mut s = self.state.lock().await;
        let doomed: Vec<SessionId> =
            s.sessions_by_user.get(user_id).into_iter().flatten().filter(|id| Some(*id) != except).cloned().collect();
        let mut n = 0;
        for id in &doomed {
            if s.remove_session(id) {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn delete_expired(&self, now: Timestamp, limit: u64) -> StoreResult<u64> {
        let mut s = self.state.lock().await;
        let doomed: Vec<SessionId> = s
            .sessions
            .values()
            .filter(|r| r.is_expired(now))
            .map(|r| r.session_id.clone())
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        let mut n = 0;
        for id in &doomed {
            if s.remove_session(id) {
                n += 1;
            }
        }
        Ok(n)
    }
}

// ----- attributes ------------------------------------------------------------------------------

/// [`AttrStore`] of one scope over a [`CustomStore`]'s data. The `scope` argument of each method
/// selects the data; the handle's own scope is used by `delete_expired`, which has none.
#[derive(Debug, Clone)]
pub struct ScopedAttrs {
    state: Arc<Mutex<State>>,
    scope: AttrScope,
}

fn live<'a>(attrs: &'a Attrs, name: &str, now: Timestamp) -> Option<&'a AttrRecord> {
    attrs.get(name).filter(|a| !a.is_expired(now))
}

fn all_live<'a>(attrs: Option<&Attrs>, mut names: impl Iterator<Item = &'a str>, now: Timestamp) -> bool {
    names.all(|n| attrs.and_then(|m| live(m, n, now)).is_some())
}

fn new_record(w: &AttrWrite, creation_time: Timestamp, now: Timestamp) -> AttrRecord {
    AttrRecord {
        name: w.name.clone(),
        value: w.value.clone(),
        is_encrypted: w.is_encrypted,
        creation_time,
        last_modified: now,
        expiration_time: w.expiration_time.flatten(),
    }
}

#[async_trait]
impl AttrStore for ScopedAttrs {
    async fn create_many(&self, scope: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        let mut s = self.state.lock().await;
        if !s.owner_exists(scope, owner) {
            return Err(StoreError::NotFound);
        }
        let attrs = s.attrs_mut(scope).entry(owner.to_owned()).or_default();
        if items.iter().any(|w| live(attrs, &w.name, now).is_some()) {
            return Err(StoreError::Conflict { what: "attr" });
        }
        for w in items {
            attrs.insert(w.name.clone(), new_record(w, now, now));
        }
        Ok(())
    }

    async fn set_many(&self, scope: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        let mut s = self.state.lock().await;
        if !s.owner_exists(scope, owner) {
            return Err(StoreError::NotFound);
        }
        let attrs = s.attrs_mut(scope).entry(owner.to_owned()).or_default();
        for w in items {
            let created = live(attrs, &w.name, now).map_or(now, |a| a.creation_time);
            attrs.insert(w.name.clone(), new_record(w, created, now));
        }
        Ok(())
    }

    async fn update_many(&self, scope: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        let mut s = self.state.lock().await;
        let map = s.attrs_mut(scope);
        if !all_live(map.get(owner), items.iter().map(|w| w.name.as_str()), now) {
            return Err(StoreError::NotFound);
        }
        let Some(attrs) = map.get_mut(owner) else {
            return Ok(());
        };
        for w in items {
            if let Some(a) = attrs.get_mut(&w.name) {
                a.value = w.value.clone();
                a.is_encrypted = w.is_encrypted;
                a.last_modified = now;
                if let Some(exp) = w.expiration_time {
                    a.expiration_time = exp;
                }
            }
        }
        Ok(())
    }

    async fn get_many(
        &self,
        scope: AttrScope,
        owner: &str,
        names: &[String],
        now: Timestamp,
    ) -> StoreResult<Vec<AttrRecord>> {
        let s = self.state.lock().await;
        let Some(attrs) = s.attrs(scope).get(owner) else {
            return Ok(Vec::new());
        };
        Ok(names.iter().filter_map(|n| live(attrs, n, now).cloned()).collect())
    }

    async fn names(&self, scope: AttrScope, owner: &str, now: Timestamp) -> StoreResult<Vec<String>> {
        let s = self.state.lock().await;
        let Some(attrs) = s.attrs(scope).get(owner) else {
            return Ok(Vec::new());
        };
        Ok(attrs.values().filter(|a| !a.is_expired(now)).map(|a| a.name.clone()).collect())
    }

    async fn delete_many(&self, scope: AttrScope, owner: &str, names: &[String], now: Timestamp) -> StoreResult<()> {
        let mut s = self.state.lock().await;
        let map = s.attrs_mut(scope);
        if !all_live(map.get(owner), names.iter().map(String::as_str), now) {
            return Err(StoreError::NotFound);
        }
        if let Some(attrs) = map.get_mut(owner) {
            for n in names {
                attrs.remove(n);
            }
        }
        Ok(())
    }

    async fn set_expiry_many(
        &self,
        scope: AttrScope,
        owner: &str,
        items: &[(String, Option<Timestamp>)],
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut s = self.state.lock().await;
        let map = s.attrs_mut(scope);
        if !all_live(map.get(owner), items.iter().map(|(n, _)| n.as_str()), now) {
            return Err(StoreError::NotFound);
        }
        if let Some(attrs) = map.get_mut(owner) {
            for (n, exp) in items {
                if let Some(a) = attrs.get_mut(n) {
                    a.expiration_time = *exp;
                    a.last_modified = now;
                }
            }
        }
        Ok(())
    }

    async fn delete_expired(&self, now: Timestamp, limit: u64) -> StoreResult<u64> {
        let mut s = self.state.lock().await;
        let mut left = limit;
        let mut n = 0;
        for attrs in s.attrs_mut(self.scope).values_mut() {
            if left == 0 {
                break;
            }
            let doomed: Vec<String> = attrs
                .values()
                .filter(|a| a.is_expired(now))
                .map(|a| a.name.clone())
                .take(usize::try_from(left).unwrap_or(usize::MAX))
                .collect();
            for name in &doomed {
                attrs.remove(name);
            }
            let k = u64::try_from(doomed.len()).unwrap_or(u64::MAX);
            n += k;
            left = left.saturating_sub(k);
        }
        Ok(n)
    }

    async fn scan_envelopes(
        &self,
        scope: AttrScope,
        cursor: Option<String>,
        limit: u64,
    ) -> StoreResult<(Vec<AttrEnvelope>, Option<String>)> {
        let s = self.state.lock().await;
        // The cursor is `owner<TAB>name` of the last envelope returned; maps iterate in key order.
        let after = cursor.as_deref().and_then(|c| c.split_once('\t'));
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut found: Vec<AttrEnvelope> = s
            .attrs(scope)
            .iter()
            .flat_map(|(owner, attrs)| attrs.values().map(move |a| (owner, a)))
            .filter(|(owner, a)| {
                a.is_encrypted && after.is_none_or(|(o, n)| (owner.as_str(), a.name.as_str()) > (o, n))
            })
            .take(take.saturating_add(1))
            .map(|(owner, a)| AttrEnvelope { owner: owner.clone(), name: a.name.clone(), value: a.value.clone() })
            .collect();
        let more = found.len() > take;
        found.truncate(take);
        let next = if more { found.last().map(|e| format!("{}\t{}", e.owner, e.name)) } else { None };
        Ok((found, next))
    }

    async fn replace_envelope(
        &self,
        scope: AttrScope,
        owner: &str,
        name: &str,
        old: &str,
        new: &str,
    ) -> StoreResult<bool> {
        let mut s = self.state.lock().await;
        match s.attrs_mut(scope).get_mut(owner).and_then(|m| m.get_mut(name)) {
            Some(a) if a.value == old => {
                new.clone_into(&mut a.value);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

// ----- counters --------------------------------------------------------------------------------

#[async_trait]
impl CounterStore for CustomStore {
    async fn record_failure(&self, key: &str, now: Timestamp, ttl: Duration) -> StoreResult<(u64, Option<Timestamp>)> {
        let mut s = self.state.lock().await;
        let (value, prev) = match s.counters.get(key).filter(|c| c.live(now)) {
            Some(c) => (c.value.saturating_add(1), Some(c.last_at)),
            None => (1, None),
        };
        s.counters.insert(key.to_owned(), Counter { value, last_at: now, expires_at: now.plus(ttl) });
        Ok((value, prev))
    }

    async fn get(&self, key: &str, now: Timestamp) -> StoreResult<Option<(u64, Timestamp)>> {
        let s = self.state.lock().await;
        Ok(s.counters.get(key).filter(|c| c.live(now)).map(|c| (c.value, c.last_at)))
    }

    async fn reset(&self, key: &str) -> StoreResult<()> {
        self.state.lock().await.counters.remove(key);
        Ok(())
    }

    async fn advance_step(&self, key: &str, step: u64, now: Timestamp, ttl: Duration) -> StoreResult<bool> {
        let mut s = self.state.lock().await;
        let fresh = s.counters.get(key).filter(|c| c.live(now)).is_none_or(|c| c.value < step);
        if fresh {
            s.counters.insert(key.to_owned(), Counter { value: step, last_at: now, expires_at: now.plus(ttl) });
        }
        Ok(fresh)
    }

    async fn delete_expired(&self, now: Timestamp) -> StoreResult<u64> {
        let mut s = self.state.lock().await;
        let before = s.counters.len();
        s.counters.retain(|_, c| c.live(now));
        Ok(u64::try_from(before.saturating_sub(s.counters.len())).unwrap_or(u64::MAX))
    }
}
