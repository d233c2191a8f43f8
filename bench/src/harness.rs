//! What the groups share: the run length (`SSO_BENCH_SECS`), the timing loops (warm-up, then
//! samples; sub-microsecond operations are timed in batches), figures of concurrent runs and
//! number formatting.

use std::time::{Duration, Instant};

use crate::Figure;

/// The password every benchmark user has.
pub const PASSWORD: &str = "correct horse battery staple";

/// The length of each timed load phase: `SSO_BENCH_SECS` (default 10 s).
pub fn secs() -> Duration {
    let s = std::env::var("SSO_BENCH_SECS").ok().and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(10.0);
    Duration::from_secs_f64(s.clamp(0.5, 3600.0))
}

/// The warm-up before a timed load phase: a fifth of it, at most 1 s.
pub fn warmup() -> Duration {
    (secs() / 5).min(Duration::from_secs(1))
}

/// Logical CPUs.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// A batch size that makes one timed sample last about 2 µs (timer overhead stays below ~2 %).
fn batch_for(one: Duration) -> u32 {
    let target = Duration::from_micros(2);
    if one >= target {
        1
    } else {
        let n = target.as_nanos() / one.as_nanos().max(1);
        u32::try_from(n.clamp(1, 512)).unwrap_or(1)
    }
}

/// Times `f`: `warmup` untimed calls, then up to `samples` samples (at least 5) within `budget`.
/// Each sample is the mean of a batch of calls (one call when a call takes ≥ 2 µs).
pub fn time_sync(
    warmup: usize,
    samples: usize,
    budget: Duration,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<Vec<Duration>, String> {
    for _ in 0..warmup {
        f()?;
    }
    let t = Instant::now();
    f()?;
    let batch = batch_for(t.elapsed());
    let start = Instant::now();
    let mut out = Vec::with_capacity(samples);
    while out.len() < samples && (out.len() < 5 || start.elapsed() < budget) {
        let t = Instant::now();
        for _ in 0..batch {
            f()?;
        }
        out.push(t.elapsed() / batch);
    }
    Ok(out)
}

/// [`time_sync`] for async calls (awaited one after another on this task: one core).
pub async fn time_async(
    warmup: usize,
    samples: usize,
    budget: Duration,
    mut f: impl AsyncFnMut() -> Result<(), String>,
) -> Result<Vec<Duration>, String> {
    for _ in 0..warmup {
        f().await?;
    }
    let t = Instant::now();
    f().await?;
    let batch = batch_for(t.elapsed());
    let start = Instant::now();
    let mut out = Vec::with_capacity(samples);
    while out.len() < samples && (out.len() < 5 || start.elapsed() < budget) {
        let t = Instant::now();
        for _ in 0..batch {
            f().await?;
        }
        out.push(t.elapsed() / batch);
    }
    Ok(out)
}

/// Runs `op(client)` from `clients` tasks, each calling it back to back until the window ends;
/// calls that end inside the window (after `warm`) are timed. Throughput = timed calls ÷ window.
pub async fn closed_loop<F, Fut>(
    name: &str,
    clients: usize,
    warm: Duration,
    window: Duration,
    op: F,
) -> Result<Figure, String>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    Ok(concurrent_figure(name, closed_loop_latencies(clients, warm, window, op).await?, window))
}

/// [`closed_loop`]'s latencies of the calls that ended inside the window.
pub async fn closed_loop_latencies<F, Fut>(
    clients: usize,
    warm: Duration,
    window: Duration,
    op: F,
) -> Result<Vec<Duration>, String>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let op = std::sync::Arc::new(op);
    let from = Instant::now() + warm;
    let until = from + window;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let start = Instant::now();
                if start >= until {
                    break;
                }
                op(c).await?;
                let end = Instant::now();
                if end >= from && end <= until {
                    lat.push(end - start);
                }
            }
            Ok::<_, String>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.map_err(|e| e.to_string())??);
    }
    Ok(lat)
}

/// A figure of a concurrent run: latencies of the calls that completed in a window of `wall`;
/// ops/s is their count over the window (not over the summed latencies).
pub fn concurrent_figure(name: impl Into<String>, lat: Vec<Duration>, wall: Duration) -> Figure {
    let n = lat.len();
    let mut f = Figure::of(name, lat);
    f.ops_per_s = n as f64 / wall.as_secs_f64().max(1e-9);
    f
}

/// Microseconds with one decimal.
pub fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// `a / b`, 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// The resident set size of a process in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU time (user + system, in clock ticks) a process has used so far (`/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Waits (at most 10 s) until process `pid` is idle: under one clock tick of CPU in 200 ms. A
/// server may still be working off a load after it ends (the read-audit queue, an fsync'ing
/// sink); the next measurement must not pay for it.
pub async fn settle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = cpu_ticks(pid);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = cpu_ticks(pid);
        match (last, now) {
            (Some(a), Some(b)) if b.saturating_sub(a) <= 1 => return,
            (_, None) => return,
            _ => last = now,
        }
    }
}

/// A scratch directory under the system temp dir, fresh for this process, removed on drop
/// (declare it before anything that runs in it, so that it is dropped last).
pub struct Scratch(std::path::PathBuf);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh [`Scratch`] directory named after `kind`.
pub fn scratch(kind: &str) -> Result<Scratch, String> {
    let dir = std::env::temp_dir().join(format!("sso-bench-{kind}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(Scratch(dir))
}

/// A migrated SQLite database in file `name` of `dir`, with the default options.
pub async fn sqlite_in(dir: &std::path::Path, name: &str) -> Result<sso_store_sqlite::SqliteStore, String> {
    let sqlite = sso_store_sqlite::SqliteStore::open(
        &format!("sqlite://{}", dir.join(name).display()),
        &sso_store_sqlite::SqliteOptions::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    sqlite.migrate().await.map_err(|e| e.to_string())?;
    Ok(sqlite)
}

/// An `Sso` on `stores` for in-process runs: the default configuration with no audit sink (each
/// record is still built, then written nowhere), weak argon2id parameters (64 KiB, t = 1: only the
/// set-up hashes), then `tune`.
pub async fn sso_on(
    stores: sso_core::store::Stores,
    clock: Option<sso_core::time::ManualClock>,
    tune: impl FnOnce(&mut sso_core::config::Config),
) -> Result<sso_core::Sso, String> {
    let mut cfg = sso_core::config::Config::default();
    cfg.audit.sinks = Vec::new();
    cfg.password.allow_weak_hash_params = true;
    cfg.password.argon2_memory_kib = 64;
    cfg.password.argon2_iterations = 1;
    tune(&mut cfg);
    let mut b = sso_core::Sso::builder(cfg, stores);
    if let Some(c) = clock {
        b = b.clock(std::sync::Arc::new(c));
    }
    b.build().await.map_err(|e| e.to_string())
}

/// Creates an approved regular user `name` with [`PASSWORD`] as an Operator; returns its id.
pub async fn create_user(sso: &sso_core::Sso, name: &str) -> Result<sso_core::ids::UserId, String> {
    let op = sso.operator_ctx(sso_core::ids::Cid::generate(), "bench");
    let data = sso_core::service::NewUser {
        username: Some(name.into()),
        password: Some(sso_core::secret::Password::new(PASSWORD)),
        ..Default::default()
    };
    let v = sso.user().create_user(&op, data, true).await.map_err(|e| format!("create {name}: {e}"))?;
    v.admin.map(|a| a.user_id).ok_or_else(|| format!("create {name}: no admin view"))
}

/// An end-user call context (app `CRM`, 127.0.0.1).
pub fn user_ctx() -> sso_core::CallCtx {
    sso_core::CallCtx::new(sso_core::ids::Cid::generate(), "CRM", sso_core::ids::RemoteAddr::localhost())
}
