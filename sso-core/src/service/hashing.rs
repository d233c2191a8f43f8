//! Password hashing off the async runtime, behind a semaphore (spec/users.md §5 "Hashing"):
//! at most `password.hash_max_concurrent` computations at once; a caller waiting longer than
//! `password.hash_queue_timeout_ms` gets `Unavailable` (HTTP 503).
//!
//! The hashes run on the hasher's own threads (at most one per permit), not on the runtime's shared
//! blocking pool. On Linux those threads run at a lower priority (nice [`HASH_NICE`]): a hash is
//! ~20 ms of pure CPU, and with every core hashing, each thread a login or a verify wakes (a
//! runtime worker, the SQLite writer) would otherwise wait for a time slice behind a hash. At the
//! lower priority the scheduler lets it run at once, so the hashes still use all the idle CPU
//! but never delay the short work around them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::crypto::password::{self, HashParams, Verdict};
use crate::crypto::random;
use crate::error::{SsoError, SsoResult};
use crate::secret::{Password, SecretStr};

/// The nice value of the hashing threads (Linux; 0 is the default of every other thread, 19 the
/// lowest priority).
pub(crate) const HASH_NICE: i32 = 10;

/// A job for a hashing thread.
type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads, taking jobs from one queue. A thread is started when a job arrives and
/// fewer threads exist than jobs in flight (so a job never waits for a thread, and a large
/// `hash_max_concurrent` costs threads only as concurrency actually reaches it); they end when
/// the pool is dropped.
#[derive(Debug)]
struct Pool {
    /// The queue's sending end and the number of threads started.
    jobs: Mutex<(mpsc::Sender<Job>, usize)>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
}

impl Pool {
    fn new() -> Pool {
        let (tx, rx) = mpsc::channel::<Job>();
        Pool { jobs: Mutex::new((tx, 0)), rx: Arc::new(Mutex::new(rx)) }
    }

    /// Queues `job`, first starting threads up to `in_flight` (the jobs running or queued,
    /// this one included); false when there is no thread to run it.
    fn submit(&self, job: Job, in_flight: usize) -> bool {
        let Ok(mut jobs) = self.jobs.lock() else { return false };
        while jobs.1 < in_flight {
            let rx = self.rx.clone();
            let started =
                std::thread::Builder::new().name(format!("sso-hash-{}", jobs.1)).spawn(move || worker(&rx)).is_ok();
            if !started {
                break;
            }
            jobs.1 += 1;
        }
        jobs.1 > 0 && jobs.0.send(job).is_ok()
    }
}

/// A hashing thread: lowers its own priority, then runs jobs until the queue closes.
fn worker(rx: &Mutex<mpsc::Receiver<Job>>) {
    lower_priority();
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A panicking job drops its reply channel (the caller gets an internal error); the
        // thread stays.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// Sets this thread's nice value to [`HASH_NICE`] (Linux keeps the nice value per thread).
#[cfg(target_os = "linux")]
fn lower_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, HASH_NICE) {
        tracing::debug!(error = %e, "could not lower the hashing thread's priority");
    }
}

/// Elsewhere the hashing threads keep the default priority.
#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// One computation counted in `in_flight` until dropped.
struct InFlight<'a> {
    counter: &'a AtomicU64,
    /// The count right after this one entered.
    now: usize,
}

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicU64) -> Self {
        let now = counter.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        InFlight { counter, now: usize::try_from(now).unwrap_or(usize::MAX) }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The bounded hasher.
#[derive(Debug)]
pub(crate) struct Hasher {
    params: HashParams,
    /// The hashing threads, at most one per permit.
    pool: Pool,
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
            pool: Pool::new(),
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
        // Counted down when this call ends, awaited to the end or dropped half-way.
        let counted = InFlight::enter(&self.in_flight);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let out = if self.pool.submit(job, counted.now) { rx.await.ok() } else { None };
        drop(counted);
        drop(permit);
        out.ok_or_else(SsoError::internal)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The hashes run on the hasher's own threads, at the lower priority (Linux).
    #[tokio::test]
    async fn hashes_run_on_low_priority_threads() {
        let h = Hasher::new(HashParams { m_kib: 64, t: 1, p: 1 }, 2, Duration::from_secs(5));
        let (name, nice) = h
            .run(|| {
                let name = std::thread::current().name().map(str::to_owned);
                #[cfg(target_os = "linux")]
                let nice = rustix::process::getpriority_process(None).ok();
                #[cfg(not(target_os = "linux"))]
                let nice = Some(HASH_NICE);
                (name, nice)
            })
            .await
            .unwrap();
        assert!(name.is_some_and(|n| n.starts_with("sso-hash-")));
        assert_eq!(nice, Some(HASH_NICE));
    }

    /// Threads start with concurrency, not with the configured maximum.
    #[tokio::test]
    async fn threads_start_as_concurrency_needs_them() {
        let h = Hasher::new(HashParams { m_kib: 64, t: 1, p: 1 }, 10_000, Duration::from_secs(5));
        assert_eq!(h.pool.jobs.lock().unwrap().1, 0);
        for _ in 0..3 {
            h.run(|| ()).await.unwrap();
        }
        assert_eq!(h.pool.jobs.lock().unwrap().1, 1, "sequential calls share one thread");
        let (a, b) = tokio::join!(
            h.run(|| std::thread::sleep(Duration::from_millis(50))),
            h.run(|| std::thread::sleep(Duration::from_millis(50)))
        );
        a.unwrap();
        b.unwrap();
        assert_eq!(h.pool.jobs.lock().unwrap().1, 2);
        assert_eq!(h.in_flight.load(Ordering::Relaxed), 0);
    }

    /// A call dropped while its hash runs still counts itself out of `in_flight`.
    #[tokio::test]
    async fn a_dropped_call_leaves_in_flight() {
        let h = Hasher::new(HashParams { m_kib: 64, t: 1, p: 1 }, 2, Duration::from_secs(5));
        let r =
            tokio::time::timeout(Duration::from_millis(10), h.run(|| std::thread::sleep(Duration::from_millis(200))))
                .await;
        assert!(r.is_err(), "timed out");
        assert_eq!(h.in_flight.load(Ordering::Relaxed), 0);
    }

    /// A job that panics costs its caller an internal error, not the thread: the next job runs.
    #[tokio::test]
    async fn a_panicking_job_leaves_the_pool_working() {
        let h = Hasher::new(HashParams { m_kib: 64, t: 1, p: 1 }, 1, Duration::from_secs(5));
        let r = h.run(|| -> u8 { panic!("boom") }).await;
        assert!(r.is_err());
        assert_eq!(h.run(|| 7u8).await.unwrap(), 7);
    }
}
