//! In-memory `CounterStore`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::poisoned;
use crate::store::{CounterStore, StoreResult};
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy)]
struct Counter {
    value: u64,
    last_at: Timestamp,
    expires_at: Timestamp,
}

/// Throttle counters and replay markers in a map.
#[derive(Debug, Default)]
pub struct MemoryCounters {
    map: Mutex<HashMap<String, Counter>>,
}

impl MemoryCounters {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CounterStore for MemoryCounters {
    async fn record_failure(&self, key: &str, now: Timestamp, ttl: Duration) -> StoreResult<(u64, Option<Timestamp>)> {
        let mut m = self.map.lock().map_err(|_| poisoned())?;
        let (value, prev) = match m.get(key) {
            Some(c) if c.expires_at > now => (c.value.saturating_add(1), Some(c.last_at)),
            _ => (1, None),
        };
        m.insert(key.to_owned(), Counter { value, last_at: now, expires_at: now.plus(ttl) });
        Ok((value, prev))
    }

    async fn get(&self, key: &str, now: Timestamp) -> StoreResult<Option<(u64, Timestamp)>> {
        let m = self.map.lock().map_err(|_| poisoned())?;
        Ok(m.get(key).filter(|c| c.expires_at > now).map(|c| (c.value, c.last_at)))
    }

    async fn reset(&self, key: &str) -> StoreResult<()> {
        self.map.lock().map_err(|_| poisoned())?.remove(key);
        Ok(())
    }

    async fn advance_step(&self, key: &str, step: u64, now: Timestamp, ttl: Duration) -> StoreResult<bool> {
        let mut m = self.map.lock().map_err(|_| poisoned())?;
        let allowed = match m.get(key) {
            Some(c) if c.expires_at > now => c.value < step,
            _ => true,
        };
        if allowed {
            m.insert(key.to_owned(), Counter { value: step, last_at: now, expires_at: now.plus(ttl) });
        }
        Ok(allowed)
    }

    async fn delete_expired(&self, now: Timestamp) -> StoreResult<u64> {
        let mut m = self.map.lock().map_err(|_| poisoned())?;
        let before = m.len();
        m.retain(|_, c| c.expires_at > now);
        Ok((before - m.len()) as u64)
    }
}
