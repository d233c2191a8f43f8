//! Complete in-memory implementations of every store trait: the reference semantics, used by unit
//! tests, by `memory://` deployments and by embedders who need no persistence.

mod attrs;
mod counters;
mod sessions;
mod users;

use std::sync::Arc;

pub use counters::MemoryCounters;
pub use sessions::MemorySessions;
pub use users::MemoryUsers;

use crate::store::Stores;

/// A fresh, empty set of memory stores.
pub fn stores() -> Stores {
    let users = Arc::new(MemoryUsers::new());
    let sessions = Arc::new(MemorySessions::new());
    Stores {
        users: users.clone(),
        resets: users.clone(),
        links: users.clone(),
        user_attrs: users,
        sessions: sessions.clone(),
        session_attrs: sessions,
        counters: Arc::new(MemoryCounters::new()),
    }
}

fn poisoned() -> crate::error::StoreError {
    crate::error::StoreError::unavailable("memory store lock poisoned")
}
