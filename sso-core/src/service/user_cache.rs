//! The per-node cache of user records read by the session pipeline (`session.user_cache_ms`,
//! spec/concepts.md §5): with it, a verify on a busy node reads only the session, not the user.
//!
//! Rules: an entry lives at most `user_cache_ms` of the service clock; every users-database write
//! made through this node empties the cache at once (after the write, whatever its outcome); a
//! read that started before such a write never puts its (possibly older) record back — each read
//! notes the cache generation first and inserts only if no write happened since. Writes made by
//! other nodes are seen when the entry expires, which is the trade the spec allows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::ids::UserId;
use crate::model::UserRecord;
use crate::time::Timestamp;

/// At most this many users are cached; a full cache is emptied (then refills with the active
/// users), which keeps memory bounded without an eviction order to maintain.
const CAPACITY: usize = 100_000;

/// Cached user records, by id. Disabled (always a miss) when the lifetime is zero.
#[derive(Debug)]
pub(crate) struct UserCache {
    /// Entry lifetime in microseconds; 0 = disabled.
    ttl_us: i64,
    /// Bumped by every invalidation.
    generation: AtomicU64,
    /// Read-locked by every verify, write-locked on a miss or a write: the readers of a busy
    /// node never wait for each other.
    entries: RwLock<HashMap<UserId, (Arc<UserRecord>, Timestamp)>>,
}

/// What a reader notes before reading a user from the store (see [`UserCache::put`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

impl UserCache {
    /// A cache whose entries live `ttl_ms` milliseconds (0 = disabled).
    pub(crate) fn new(ttl_ms: u64) -> Self {
        UserCache {
            ttl_us: i64::try_from(ttl_ms.saturating_mul(1000)).unwrap_or(i64::MAX),
            generation: AtomicU64::new(0),
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// Whether the cache is in use.
    pub(crate) fn enabled(&self) -> bool {
        self.ttl_us > 0
    }

    /// The record cached for `id`, if it is younger than the lifetime at `now`.
    pub(crate) fn get(&self, id: &UserId, now: Timestamp) -> Option<Arc<UserRecord>> {
        if !self.enabled() {
            return None;
        }
        let entries = self.entries.read().ok()?;
        let (rec, read_at) = entries.get(id)?;
        let age = now.as_micros().saturating_sub(read_at.as_micros());
        // A clock set back makes an entry look younger than it is: refuse negative ages too.
        ((0..self.ttl_us).contains(&age)).then(|| rec.clone())
    }

    /// Noted before reading a user from the store.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.generation.load(Ordering::Acquire))
    }

    /// Caches `rec`, read at `now` under `ticket` — unless a write through this node happened
    /// since the ticket was taken (the record may predate it).
    pub(crate) fn put(&self, ticket: Ticket, rec: &Arc<UserRecord>, now: Timestamp) {
        if !self.enabled() {
            return;
        }
        let Ok(mut entries) = self.entries.write() else { return };
        // Checked under the lock: `invalidate` bumps the generation before it takes the lock to
        // empty the map, so a put that sees the old generation here lands before the emptying.
        if self.generation.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(rec.user_id.clone(), (rec.clone(), now));
    }

    /// Forgets every entry: called after each users-database write made through this node.
    pub(crate) fn invalidate(&self) {
        if !self.enabled() {
            return;
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::user_record;

    fn rec(name: &str) -> Arc<UserRecord> {
        Arc::new(user_record(name))
    }

    #[test]
    fn disabled_cache_never_answers() {
        let c = UserCache::new(0);
        let r = rec("alice");
        c.put(c.ticket(), &r, Timestamp::from_secs(10));
        assert!(c.get(&r.user_id, Timestamp::from_secs(10)).is_none());
    }

    #[test]
    fn entries_expire_with_the_service_clock() {
        let c = UserCache::new(500);
        let r = rec("alice");
        let t0 = Timestamp::from_secs(100);
        c.put(c.ticket(), &r, t0);
        assert!(c.get(&r.user_id, t0).is_some());
        assert!(c.get(&r.user_id, Timestamp::from_micros(t0.as_micros() + 499_999)).is_some());
        assert!(c.get(&r.user_id, Timestamp::from_micros(t0.as_micros() + 500_000)).is_none());
        // A clock set back does not stretch an entry's life.
        assert!(c.get(&r.user_id, Timestamp::from_micros(t0.as_micros() - 1)).is_none());
    }

    #[test]
    fn a_write_empties_the_cache_and_refuses_older_reads() {
        let c = UserCache::new(60_000);
        let r = rec("alice");
        let now = Timestamp::from_secs(100);
        c.put(c.ticket(), &r, now);
        // A read starts (ticket), a write through this node lands, the read finishes.
        let before_write = c.ticket();
        c.invalidate();
        assert!(c.get(&r.user_id, now).is_none());
        c.put(before_write, &r, now);
        assert!(c.get(&r.user_id, now).is_none(), "a read older than the write must not be cached");
        c.put(c.ticket(), &r, now);
        assert!(c.get(&r.user_id, now).is_some());
    }
}
