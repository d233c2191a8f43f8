//! The key ring as the services hold it: swappable at run time, re-read (at most once per 10 s)
//! when an envelope names a key this node does not know yet.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::crypto::aead::{DecryptError, KeyRing};
use crate::error::SsoResult;

pub(crate) type Reloader = Box<dyn Fn() -> Option<KeyRing> + Send + Sync>;

pub(crate) struct Keys {
    ring: RwLock<Arc<KeyRing>>,
    reloader: Option<Reloader>,
    last_reload: Mutex<Option<Instant>>,
}

impl Keys {
    pub(crate) fn new(ring: KeyRing, reloader: Option<Reloader>) -> Self {
        Keys { ring: RwLock::new(Arc::new(ring)), reloader, last_reload: Mutex::new(None) }
    }

    pub(crate) fn current(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(crate) fn replace(&self, ring: KeyRing) {
        match self.ring.write() {
            Ok(mut r) => *r = Arc::new(ring),
            Err(p) => *p.into_inner() = Arc::new(ring),
        }
    }

    pub(crate) fn encrypt(&self, aad: &str, plaintext: &[u8]) -> SsoResult<String> {
        self.current().encrypt(aad, plaintext)
    }

    fn try_reload(&self) -> bool {
        let Some(reload) = &self.reloader else {
            return false;
        };
        {
            let Ok(mut last) = self.last_reload.lock() else {
                return false;
            };
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match reload() {
            Some(r) => {
                self.replace(r);
                true
            }
            None => false,
        }
    }

    pub(crate) fn decrypt(&self, aad: &str, envelope: &str) -> SsoResult<Zeroizing<Vec<u8>>> {
        match self.current().decrypt(aad, envelope) {
            Err(DecryptError::UnknownKey) if self.try_reload() => Ok(self.current().decrypt(aad, envelope)?),
            r => Ok(r?),
        }
    }

    pub(crate) fn decrypt_string(&self, aad: &str, envelope: &str) -> SsoResult<Zeroizing<String>> {
        let bytes = self.decrypt(aad, envelope)?;
        let s = std::str::from_utf8(&bytes).map_err(|_| crate::error::SsoError::from(DecryptError::Invalid))?;
        Ok(Zeroizing::new(s.to_owned()))
    }
}
