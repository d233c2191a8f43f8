//! In-memory `SessionStore` and session-scope `AttrStore`.

// foldhash (randomly seeded per process): the maps are keyed by ids; SipHash showed as ~4 %
// of an in-process verify.
use foldhash::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::attrs::{self, AttrMap};
use super::poisoned;
use crate::error::StoreError;
use crate::ids::{SessionId, UserId};
use crate::model::{AttrRecord, AttrScope, AttrWrite, HistoryEntry, SessionRecord};
use crate::store::{AttrEnvelope, AttrStore, SessionStore, StoreResult};
use crate::time::Timestamp;

#[derive(Debug, Default)]
struct Db {
    /// Shared so the session pipeline's read ([`SessionStore::get_shared`]) is not a copy;
    /// writes copy on write, never change a record someone holds.
    sessions: HashMap<SessionId, Arc<SessionRecord>>,
    attrs: HashMap<SessionId, AttrMap>,
    by_user: HashMap<UserId, HashSet<SessionId>>,
}

impl Db {
    fn remove(&mut self, sid: &SessionId) -> bool {
        let Some(rec) = self.sessions.remove(sid) else {
            return false;
        };
        self.attrs.remove(sid);
        if let Some(set) = self.by_user.get_mut(&rec.user_id) {
            set.remove(sid);
            if set.is_empty() {
                self.by_user.remove(&rec.user_id);
            }
        }
        true
    }
}

/// Sessions and their attributes in maps, with a per-user index.
#[derive(Debug, Default)]
pub struct MemorySessions {
    db: Mutex<Db>,
}

impl MemorySessions {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> StoreResult<MutexGuard<'_, Db>> {
        self.db.lock().map_err(|_| poisoned())
    }

    /// Number of sessions held (tests).
    pub fn len(&self) -> usize {
        self.lock().map(|d| d.sessions.len()).unwrap_or(0)
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn session_id(owner: &str) -> StoreResult<SessionId> {
    SessionId::parse(owner).ok_or(StoreError::NotFound)
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn create(&self, record: &SessionRecord) -> StoreResult<()> {
        let mut db = self.lock()?;
        if db.sessions.contains_key(&record.session_id) {
            return Err(StoreError::Conflict { what: "session_id" });
        }
        db.by_user.entry(record.user_id.clone()).or_default().insert(record.session_id.clone());
        db.sessions.insert(record.session_id.clone(), Arc::new(record.clone()));
        Ok(())
    }

    async fn get(&self, session_id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        Ok(self.lock()?.sessions.get(session_id).map(|s| SessionRecord::clone(s)))
    }

    async fn get_shared(&self, session_id: &SessionId) -> StoreResult<Option<Arc<SessionRecord>>> {
        Ok(self.lock()?.sessions.get(session_id).cloned())
    }

    async fn extend(&self, session_id: &SessionId, new_expiration: Timestamp) -> StoreResult<bool> {
        let mut db = self.lock()?;
        Ok(match db.sessions.get_mut(session_id).map(Arc::make_mut) {
            Some(s) => {
                s.expiration_time = s.expiration_time.max(new_expiration);
                true
            }
            None => false,
        })
    }

    async fn set_epoch(&self, session_id: &SessionId, epoch: u64) -> StoreResult<bool> {
        let mut db = self.lock()?;
        Ok(db.sessions.get_mut(session_id).map(|s| Arc::make_mut(s).epoch = epoch).is_some())
    }

    async fn append_history(&self, session_id: &SessionId, entry: &HistoryEntry, max: u32) -> StoreResult<bool> {
        let mut db = self.lock()?;
        Ok(match db.sessions.get_mut(session_id).map(Arc::make_mut) {
            Some(s) => {
                s.history.push(entry.clone());
                let max = max as usize;
                if s.history.len() > max {
                    let excess = s.history.len() - max;
                    s.history.drain(..excess);
                }
                true
            }
            None => false,
        })
    }

    async fn delete(&self, session_id: &SessionId) -> StoreResult<bool> {
        Ok(self.lock()?.remove(session_id))
    }

    async fn list_by_user(&self, user_id: &UserId) -> StoreResult<Vec<SessionRecord>> {
        let db = self.lock()?;
        let Some(ids) = db.by_user.get(user_id) else {
            return Ok(Vec::new());
        };
        Ok(ids.iter().filter_map(|id| db.sessions.get(id).map(|s| SessionRecord::clone(s))).collect())
    }

    async fn delete_by_user(&self, user_id: &UserId, except: Option<&SessionId>) -> StoreResult<u64> {
        let mut db = self.lock()?;
        let ids: Vec<SessionId> = db
            .by_user
            .get(user_id)
            .map(|s| s.iter().filter(|id| Some(*id) != except).cloned().collect())
            .unwrap_or_default();
        let mut n = 0;
        for id in ids {
            if db.remove(&id) {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn delete_expired(&self, now: Timestamp, limit: u64) -> StoreResult<u64> {
        let mut db = self.lock()?;
        let ids: Vec<SessionId> = db
            .sessions
            .values()
            .filter(|s| s.is_expired(now))
            .map(|s| s.session_id.clone())
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        let mut n = 0;
        for id in ids {
            if db.remove(&id) {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[async_trait]
impl AttrStore for MemorySessions {
    async fn create_many(&self, _: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        let sid = session_id(owner)?;
        let mut db = self.lock()?;
        if !db.sessions.contains_key(&sid) {
            return Err(StoreError::NotFound);
        }
        attrs::create_many(db.attrs.entry(sid).or_default(), items, now)
    }

    async fn set_many(&self, _: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        let sid = session_id(owner)?;
        let mut db = self.lock()?;
        if !db.sessions.contains_key(&sid) {
            return Err(StoreError::NotFound);
        }
        attrs::set_many(db.attrs.entry(sid).or_default(), items, now);
        Ok(())
    }

    async fn update_many(&self, _: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        let sid = session_id(owner)?;
        let mut db = self.lock()?;
        attrs::update_many(db.attrs.entry(sid).or_default(), items, now)
    }

    async fn get_many(
        &self,
        _: AttrScope,
        owner: &str,
        names: &[String],
        now: Timestamp,
    ) -> StoreResult<Vec<AttrRecord>> {
        let sid = session_id(owner)?;
        let db = self.lock()?;
        Ok(db.attrs.get(&sid).map(|m| attrs::get_many(m, names, now)).unwrap_or_default())
    }

    async fn names(&self, _: AttrScope, owner: &str, now: Timestamp) -> StoreResult<Vec<String>> {
        let sid = session_id(owner)?;
        let db = self.lock()?;
        Ok(db.attrs.get(&sid).map(|m| attrs::names(m, now)).unwrap_or_default())
    }

    async fn delete_many(&self, _: AttrScope, owner: &str, names: &[String], now: Timestamp) -> StoreResult<()> {
        let sid = session_id(owner)?;
        let mut db = self.lock()?;
        attrs::delete_many(db.attrs.entry(sid).or_default(), names, now)
    }

    async fn set_expiry_many(
        &self,
        _: AttrScope,
        owner: &str,
        items: &[(String, Option<Timestamp>)],
        now: Timestamp,
    ) -> StoreResult<()> {
        let sid = session_id(owner)?;
        let mut db = self.lock()?;
        attrs::set_expiry_many(db.attrs.entry(sid).or_default(), items, now)
    }

    async fn scan_envelopes(
        &self,
        _: AttrScope,
        cursor: Option<String>,
        limit: u64,
    ) -> StoreResult<(Vec<AttrEnvelope>, Option<String>)> {
        let db = self.lock()?;
        Ok(attrs::scan(db.attrs.iter().map(|(k, v)| (k.as_str(), v)), cursor, limit))
    }

    async fn replace_envelope(&self, _: AttrScope, owner: &str, name: &str, old: &str, new: &str) -> StoreResult<bool> {
        let sid = session_id(owner)?;
        let mut db = self.lock()?;
        Ok(db.attrs.get_mut(&sid).is_some_and(|m| attrs::replace(m, name, old, new)))
    }

    async fn delete_expired(&self, now: Timestamp, limit: u64) -> StoreResult<u64> {
        let mut db = self.lock()?;
        let mut n = 0;
        for m in db.attrs.values_mut() {
            if n >= limit {
                break;
            }
            n += attrs::delete_expired(m, now, limit - n);
        }
        Ok(n)
    }
}
