//! In-memory `UserStore` (with transactions), `PasswordResetStore`, `LinkedAuthStore` and
//! user-scope `AttrStore`.
//!
//! A transaction holds the database's write lock for its whole life and keeps an undo log: each
//! write records the previous value of what it touches, and a drop without commit restores them.

// foldhash (randomly seeded per process): the maps are keyed by ids and names; SipHash
// showed as ~4 % of an in-process verify.
use foldhash::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

use super::attrs::{self, AttrMap};
use crate::error::StoreError;
use crate::ids::{AuthId, UserId};
use crate::model::{
    AttrRecord, AttrScope, AttrWrite, LinkedAuthRecord, PrtRecord, SignUpStatus, UserPatch, UserQuery, UserRecord,
    search_order,
};
use crate::store::{
    AttrEnvelope, AttrStore, ConfirmOutcome, EnvelopeField, LinkedAuthStore, PasswordResetStore, StoreResult,
    UserStore, UserTx,
};
use crate::time::Timestamp;

#[derive(Debug, Default)]
struct Db {
    /// Shared so the session pipeline's read ([`UserStore::get_by_id_shared`]) is not a copy;
    /// writes replace the `Arc` (or copy on write), never change a record someone holds.
    users: HashMap<UserId, Arc<UserRecord>>,
    by_username: HashMap<String, UserId>,
    by_confirm: HashMap<Vec<u8>, UserId>,
    prts: HashMap<[u8; 32], PrtRecord>,
    links: HashMap<AuthId, LinkedAuthRecord>,
    by_principal: HashMap<(String, String), AuthId>,
    attrs: HashMap<String, AttrMap>,
}

impl Db {
    /// Replaces (or removes) a user, keeping the indexes right; returns the previous record.
    fn put_user(&mut self, id: &UserId, new: Option<UserRecord>) -> Option<UserRecord> {
        let old = self.users.remove(id).map(Arc::unwrap_or_clone);
        if let Some(o) = &old {
            self.by_username.remove(&o.username);
            if let Some(h) = &o.confirm_token_hash {
                self.by_confirm.remove(h);
            }
        }
        if let Some(n) = new {
            self.by_username.insert(n.username.clone(), id.clone());
            if let Some(h) = &n.confirm_token_hash {
                self.by_confirm.insert(h.clone(), id.clone());
            }
            self.users.insert(id.clone(), Arc::new(n));
        }
        old
    }

    fn put_link(&mut self, id: &AuthId, new: Option<LinkedAuthRecord>) -> Option<LinkedAuthRecord> {
        let old = self.links.remove(id);
        if let Some(o) = &old {
            self.by_principal.remove(&(o.auth_type.clone(), o.auth_username.clone()));
        }
        if let Some(n) = new {
            self.by_principal.insert((n.auth_type.clone(), n.auth_username.clone()), id.clone());
            self.links.insert(id.clone(), n);
        }
        old
    }

    fn put_prt(&mut self, h: [u8; 32], new: Option<PrtRecord>) -> Option<PrtRecord> {
        let old = self.prts.remove(&h);
        if let Some(n) = new {
            self.prts.insert(h, n);
        }
        old
    }

    fn put_attrs(&mut self, owner: &str, new: Option<AttrMap>) -> Option<AttrMap> {
        let old = self.attrs.remove(owner);
        if let Some(n) = new {
            self.attrs.insert(owner.to_owned(), n);
        }
        old
    }
}

enum Undo {
    User(UserId, Option<Box<UserRecord>>),
    Prt([u8; 32], Option<PrtRecord>),
    Link(AuthId, Option<LinkedAuthRecord>),
    Attrs(String, Option<AttrMap>),
}

/// Users, PRTs, links and user attributes in maps.
#[derive(Debug, Default)]
pub struct MemoryUsers {
    db: Arc<RwLock<Db>>,
}

impl MemoryUsers {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of users (tests).
    pub async fn len(&self) -> usize {
        self.db.read().await.users.len()
    }

    /// Whether there is no user.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

struct Tx {
    db: OwnedRwLockWriteGuard<Db>,
    undo: Vec<Undo>,
    committed: bool,
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::User(id, old) => {
                    self.db.put_user(&id, old.map(|b| *b));
                }
                Undo::Prt(h, old) => {
                    self.db.put_prt(h, old);
                }
                Undo::Link(id, old) => {
                    self.db.put_link(&id, old);
                }
                Undo::Attrs(owner, old) => {
                    self.db.put_attrs(&owner, old);
                }
            }
        }
    }
}

impl Tx {
    fn set_user(&mut self, id: &UserId, new: Option<UserRecord>) {
        let old = self.db.put_user(id, new);
        self.undo.push(Undo::User(id.clone(), old.map(Box::new)));
    }

    fn modify_user<T>(&mut self, id: &UserId, f: impl FnOnce(&mut UserRecord) -> T) -> StoreResult<T> {
        let mut u = self.db.users.get(id).map(|u| UserRecord::clone(u)).ok_or(StoreError::NotFound)?;
        let out = f(&mut u);
        self.set_user(id, Some(u));
        Ok(out)
    }

    fn modify_prt(&mut self, h: &[u8; 32], f: impl FnOnce(&mut PrtRecord) -> bool) -> bool {
        let Some(mut p) = self.db.prts.get(h).cloned() else {
            return false;
        };
        if !f(&mut p) {
            return false;
        }
        let old = self.db.put_prt(*h, Some(p));
        self.undo.push(Undo::Prt(*h, old));
        true
    }
}

#[async_trait]
impl UserTx for Tx {
    async fn get_user(&mut self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        Ok(self.db.users.get(user_id).map(|u| UserRecord::clone(u)))
    }

    async fn insert_user(&mut self, user: &UserRecord) -> StoreResult<()> {
        if self.db.users.contains_key(&user.user_id) {
            return Err(StoreError::Conflict { what: "user_id" });
        }
        if self.db.by_username.contains_key(&user.username) {
            return Err(StoreError::Conflict { what: "username" });
        }
        if user.confirm_token_hash.as_ref().is_some_and(|h| self.db.by_confirm.contains_key(h)) {
            return Err(StoreError::Conflict { what: "confirm_token_hash" });
        }
        self.set_user(&user.user_id, Some(user.clone()));
        Ok(())
    }

    async fn update_user(&mut self, user_id: &UserId, patch: &UserPatch) -> StoreResult<()> {
        if !self.db.users.contains_key(user_id) {
            return Err(StoreError::NotFound);
        }
        if let Some(name) = &patch.username
            && self.db.by_username.get(name).is_some_and(|owner| owner != user_id)
        {
            return Err(StoreError::Conflict { what: "username" });
        }
        self.modify_user(user_id, |u| patch.apply_to(u))
    }

    async fn update_totp(
        &mut self,
        user_id: &UserId,
        key_enc: &str,
        label_enc: &str,
        bump_epoch: bool,
    ) -> StoreResult<(u64, u64)> {
        self.modify_user(user_id, |u| {
            u.totp_key_enc = key_enc.to_owned();
            u.totp_label_enc = label_enc.to_owned();
            u.totp_key_gen += 1;
            if bump_epoch {
                u.session_epoch += 1;
            }
            (u.totp_key_gen, u.session_epoch)
        })
    }

    async fn bump_epoch(&mut self, user_id: &UserId) -> StoreResult<u64> {
        self.modify_user(user_id, |u| {
            u.session_epoch += 1;
            u.session_epoch
        })
    }

    async fn confirm_signup(&mut self, hash: &[u8; 32], now: Timestamp) -> StoreResult<ConfirmOutcome> {
        let Some(id) = self.db.by_confirm.get(hash.as_slice()).cloned() else {
            return Ok(ConfirmOutcome::Unknown);
        };
        let final_already = self.db.users.get(&id).is_some_and(|u| u.sign_up_status == SignUpStatus::Final);
        if final_already {
            return Ok(ConfirmOutcome::AlreadyFinal(id));
        }
        self.modify_user(&id, |u| {
            u.sign_up_status = SignUpStatus::Final;
            u.sign_up_confirm_time = Some(now);
        })?;
        Ok(ConfirmOutcome::Confirmed(id))
    }

    async fn delete_user(&mut self, user_id: &UserId) -> StoreResult<bool> {
        if !self.db.users.contains_key(user_id) {
            return Ok(false);
        }
        self.set_user(user_id, None);
        let owner = user_id.as_str().to_owned();
        let old = self.db.put_attrs(&owner, None);
        self.undo.push(Undo::Attrs(owner, old));
        let links: Vec<AuthId> =
            self.db.links.values().filter(|l| &l.user_id == user_id).map(|l| l.auth_id.clone()).collect();
        for id in links {
            let old = self.db.put_link(&id, None);
            self.undo.push(Undo::Link(id, old));
        }
        let prts: Vec<[u8; 32]> =
            self.db.prts.values().filter(|p| &p.user_id == user_id).map(|p| p.token_hash).collect();
        for h in prts {
            let old = self.db.put_prt(h, None);
            self.undo.push(Undo::Prt(h, old));
        }
        Ok(true)
    }

    async fn insert_prt(&mut self, prt: &PrtRecord) -> StoreResult<()> {
        if self.db.prts.contains_key(&prt.token_hash) {
            return Err(StoreError::Conflict { what: "token_hash" });
        }
        if !self.db.users.contains_key(&prt.user_id) {
            return Err(StoreError::NotFound);
        }
        let old = self.db.put_prt(prt.token_hash, Some(prt.clone()));
        self.undo.push(Undo::Prt(prt.token_hash, old));
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
        Ok(self.modify_prt(token_hash, |p| {
            if p.has_been_accessed || p.is_password_reset || now >= p.expiration_time {
                return false;
            }
            p.has_been_accessed = true;
            p.access_time = Some(now);
            p.access_ctx = Some(ctx.to_owned());
            p.reset_key_hash = Some(*reset_key_hash);
            p.reset_key_exp_time = Some(reset_key_exp);
            true
        }))
    }

    async fn mark_prt_used(&mut self, token_hash: &[u8; 32], now: Timestamp, ctx: &str) -> StoreResult<bool> {
        Ok(self.modify_prt(token_hash, |p| {
            if !p.has_been_accessed || p.is_password_reset {
                return false;
            }
            p.is_password_reset = true;
            p.password_reset_time = Some(now);
            p.password_reset_ctx = Some(ctx.to_owned());
            true
        }))
    }

    async fn insert_link(&mut self, link: &LinkedAuthRecord) -> StoreResult<()> {
        let key = (link.auth_type.clone(), link.auth_username.clone());
        if self.db.by_principal.contains_key(&key) {
            return Err(StoreError::Conflict { what: "principal" });
        }
        if self.db.links.contains_key(&link.auth_id) {
            return Err(StoreError::Conflict { what: "auth_id" });
        }
        if !self.db.users.contains_key(&link.user_id) {
            return Err(StoreError::NotFound);
        }
        let old = self.db.put_link(&link.auth_id, Some(link.clone()));
        self.undo.push(Undo::Link(link.auth_id.clone(), old));
        Ok(())
    }

    async fn delete_link(
        &mut self,
        user_id: &UserId,
        auth_type: &str,
        auth_username: &str,
    ) -> StoreResult<Option<AuthId>> {
        let key = (auth_type.to_owned(), auth_username.to_owned());
        let Some(id) = self.db.by_principal.get(&key).cloned() else {
            return Ok(None);
        };
        if self.db.links.get(&id).is_none_or(|l| &l.user_id != user_id) {
            return Ok(None);
        }
        let old = self.db.put_link(&id, None);
        self.undo.push(Undo::Link(id.clone(), old));
        Ok(Some(id))
    }

    async fn commit(mut self: Box<Self>) -> StoreResult<()> {
        self.committed = true;
        Ok(())
    }
}

#[async_trait]
impl UserStore for MemoryUsers {
    async fn begin(&self) -> StoreResult<Box<dyn UserTx>> {
        let db = self.db.clone().write_owned().await;
        Ok(Box::new(Tx { db, undo: Vec::new(), committed: false }))
    }

    async fn get_by_id(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        Ok(self.db.read().await.users.get(user_id).map(|u| UserRecord::clone(u)))
    }

    async fn get_by_id_shared(&self, user_id: &UserId) -> StoreResult<Option<Arc<UserRecord>>> {
        // The pipeline's read: without a writer in the way, take the lock without a wait queue.
        if let Ok(db) = self.db.try_read() {
            return Ok(db.users.get(user_id).cloned());
        }
        Ok(self.db.read().await.users.get(user_id).cloned())
    }

    async fn get_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let db = self.db.read().await;
        Ok(db.by_username.get(username).and_then(|id| db.users.get(id)).map(|u| UserRecord::clone(u)))
    }

    async fn get_by_confirm_token_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<UserRecord>> {
        let db = self.db.read().await;
        Ok(db.by_confirm.get(hash.as_slice()).and_then(|id| db.users.get(id)).map(|u| UserRecord::clone(u)))
    }

    async fn find_by_email_idx(&self, idx: &str) -> StoreResult<Vec<UserRecord>> {
        let db = self.db.read().await;
        Ok(db.users.values().filter(|u| u.email_idx.as_deref() == Some(idx)).map(|u| UserRecord::clone(u)).collect())
    }

    async fn scan_users(&self, after: Option<&UserId>, limit: u64) -> StoreResult<Vec<UserRecord>> {
        let db = self.db.read().await;
        let mut ids: Vec<&UserId> = db.users.keys().filter(|id| after.is_none_or(|a| *id > a)).collect();
        ids.sort();
        Ok(ids
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .filter_map(|id| db.users.get(id).map(|u| UserRecord::clone(u)))
            .collect())
    }

    async fn replace_envelope(
        &self,
        user_id: &UserId,
        field: EnvelopeField,
        old: &str,
        new: &str,
    ) -> StoreResult<bool> {
        let mut db = self.db.write().await;
        let Some(u) = db.users.get_mut(user_id).map(Arc::make_mut) else {
            return Ok(false);
        };
        let slot: &mut String = match field {
            EnvelopeField::TotpKey => &mut u.totp_key_enc,
            EnvelopeField::TotpLabel => &mut u.totp_label_enc,
            EnvelopeField::Password => &mut u.password_hash,
            EnvelopeField::Email => match u.email_enc.as_mut() {
                Some(e) => e,
                None => return Ok(false),
            },
        };
        if slot != old {
            return Ok(false);
        }
        new.clone_into(slot);
        Ok(true)
    }

    async fn search(&self, q: &UserQuery, offset: u64, limit: u64) -> StoreResult<(u64, Vec<UserRecord>)> {
        let db = self.db.read().await;
        let mut found: Vec<&UserRecord> = db.users.values().map(|u| &**u).filter(|u| q.matches(u)).collect();
        found.sort_by(|a, b| search_order(a, b));
        let total = found.len() as u64;
        let page = found
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect();
        Ok((total, page))
    }
}

#[async_trait]
impl PasswordResetStore for MemoryUsers {
    async fn get_prt(&self, token_hash: &[u8; 32]) -> StoreResult<Option<PrtRecord>> {
        Ok(self.db.read().await.prts.get(token_hash).cloned())
    }

    async fn delete_expired_prts(&self, now: Timestamp, limit: u64) -> StoreResult<u64> {
        let mut db = self.db.write().await;
        let expired: Vec<[u8; 32]> = db
            .prts
            .values()
            .filter(|p| p.expiration_time <= now)
            .map(|p| p.token_hash)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        for h in &expired {
            db.prts.remove(h);
        }
        Ok(expired.len() as u64)
    }
}

#[async_trait]
impl LinkedAuthStore for MemoryUsers {
    async fn list_links(&self, user_id: &UserId) -> StoreResult<Vec<LinkedAuthRecord>> {
        let db = self.db.read().await;
        let mut v: Vec<LinkedAuthRecord> = db.links.values().filter(|l| &l.user_id == user_id).cloned().collect();
        v.sort_by(|a, b| a.creation_time.cmp(&b.creation_time).then_with(|| a.auth_id.cmp(&b.auth_id)));
        Ok(v)
    }

    async fn get_link(&self, auth_type: &str, auth_username: &str) -> StoreResult<Option<LinkedAuthRecord>> {
        let db = self.db.read().await;
        let key = (auth_type.to_owned(), auth_username.to_owned());
        Ok(db.by_principal.get(&key).and_then(|id| db.links.get(id)).cloned())
    }
}

fn user_owner(owner: &str) -> StoreResult<UserId> {
    UserId::parse(owner).ok_or(StoreError::NotFound)
}

#[async_trait]
impl AttrStore for MemoryUsers {
    async fn create_many(&self, _: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        let id = user_owner(owner)?;
        let mut db = self.db.write().await;
        if !db.users.contains_key(&id) {
            return Err(StoreError::NotFound);
        }
        attrs::create_many(db.attrs.entry(owner.to_owned()).or_default(), items, now)
    }

    async fn set_many(&self, _: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        let id = user_owner(owner)?;
        let mut db = self.db.write().await;
        if !db.users.contains_key(&id) {
            return Err(StoreError::NotFound);
        }
        attrs::set_many(db.attrs.entry(owner.to_owned()).or_default(), items, now);
        Ok(())
    }

    async fn update_many(&self, _: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        let mut db = self.db.write().await;
        attrs::update_many(db.attrs.entry(owner.to_owned()).or_default(), items, now)
    }

    async fn get_many(
        &self,
        _: AttrScope,
        owner: &str,
        names: &[String],
        now: Timestamp,
    ) -> StoreResult<Vec<AttrRecord>> {
        let db = self.db.read().await;
        Ok(db.attrs.get(owner).map(|m| attrs::get_many(m, names, now)).unwrap_or_default())
    }

    async fn names(&self, _: AttrScope, owner: &str, now: Timestamp) -> StoreResult<Vec<String>> {
        let db = self.db.read().await;
        Ok(db.attrs.get(owner).map(|m| attrs::names(m, now)).unwrap_or_default())
    }

    async fn delete_many(&self, _: AttrScope, owner: &str, names: &[String], now: Timestamp) -> StoreResult<()> {
        let mut db = self.db.write().await;
        attrs::delete_many(db.attrs.entry(owner.to_owned()).or_default(), names, now)
    }

    async fn set_expiry_many(
        &self,
        _: AttrScope,
        owner: &str,
        items: &[(String, Option<Timestamp>)],
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut db = self.db.write().await;
        attrs::set_expiry_many(db.attrs.entry(owner.to_owned()).or_default(), items, now)
    }

    async fn delete_expired(&self, now: Timestamp, limit: u64) -> StoreResult<u64> {
        let mut db = self.db.write().await;
        let mut n = 0;
        for m in db.attrs.values_mut() {
            if n >= limit {
                break;
            }
            n += attrs::delete_expired(m, now, limit - n);
        }
        Ok(n)
    }

    async fn scan_envelopes(
        &self,
        _: AttrScope,
        cursor: Option<String>,
        limit: u64,
    ) -> StoreResult<(Vec<AttrEnvelope>, Option<String>)> {
        let db = self.db.read().await;
        Ok(attrs::scan(db.attrs.iter().map(|(k, v)| (k.as_str(), v)), cursor, limit))
    }

    async fn replace_envelope(&self, _: AttrScope, owner: &str, name: &str, old: &str, new: &str) -> StoreResult<bool> {
        let mut db = self.db.write().await;
        Ok(db.attrs.get_mut(owner).is_some_and(|m| attrs::replace(m, name, old, new)))
    }
}
