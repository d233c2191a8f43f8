//! Password hashing off the async runtime, behind a semaphore (spec/users.md §5 "Hashing"):
//! at most `password.hash_max_concurrent` computations at once; a caller waiting longer than
//! `password.hash_queue_timeout_ms` gets `Unavailable` (HTTP 503).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::crypto::password::{self, HashParams, Verdict};
use crate::crypto::random;
use crate::error::{SsoError, SsoResult};
use crate::secret::{Password, SecretStr};

/// The bounded hasher.
#[derive(Debug)]
pub(crate) struct Hasher {
    params: HashParams,
    permits: Arc<Semaphore>,
    queue_timeout: Duration,
    pub(crate) in_flight: AtomicU64,
    /// Password verifications computed (real and dummy alike).
    pub(crate) verifications: AtomicU64,
}

impl Hasher {
    pub(crate) fn new(params: HashParams, max_concurrent: usize, queue_timeout: Duration) -> Self {
        let n = if max_concurrent == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            max_concurrent
        };
        Hasher {
            params,
            permits: Arc::new(Semaphore::new(n)),
            queue_timeout,
            in_flight: AtomicU64::new(0),
            verifications: AtomicU64::new(0),
        }
    }

    pub(crate) fn params(&self) -> HashParams {
        self.params
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> SsoResult<T> {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| SsoError::Unavailable { backend: "hashing queue" })?
            .map_err(|_| SsoError::Unavailable { backend: "hashing queue" })?;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let out = tokio::task::spawn_blocking(f).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        drop(permit);
        out.map_err(|_| SsoError::internal())
    }

    /// A new argon2id PHC string of the NFKC-normalised password.
    pub(crate) async fn hash(&self, pw: &Password) -> SsoResult<String> {
        let normalized = password::normalize(pw.expose());
        let salt = random::bytes::<16>()?;
        let params = self.params;
        self.run(move || password::hash_argon2id(normalized.as_bytes(), params, &salt))
            .await?
            .ok_or_else(SsoError::internal)
    }

    /// Verifies against a stored PHC / passlib string.
    pub(crate) async fn verify(&self, stored: String, pw: &Password) -> SsoResult<Verdict> {
        let pw = zeroize::Zeroizing::new(pw.expose().to_owned());
        let params = self.params;
        self.verifications.fetch_add(1, Ordering::Relaxed);
        self.run(move || password::verify(&stored, &pw, params)).await
    }
}
