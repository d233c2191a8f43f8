//! Session verification over HTTP (`POST {prefix}/user/session` with `current_ust` = `target_ust`,
//! spec/rest.md 3.17 → `verify`) against the real `sso serve` with 64 keep-alive connections for
//! `SSO_BENCH_SECS`, on three session stores: SQLite (the embedded default), PostgreSQL, and Redis
//! (users in PostgreSQL, as in examples/scale-out). Baselines of the same run: a trivial axum
//! handler on the same stack and load generator; `redis-benchmark` GET against the same Redis;
//! `pgbench -S` against the same PostgreSQL. Also the server's RSS at idle and under this load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hyper::Method;
use hyper::body::Bytes;
use serde_json::{Value, json};

use crate::cpu;
use crate::harness::{cores, ms, ratio, rss_kib, scratch, secs, warmup};
use crate::loadgen::{self, Load};
use crate::server::{self, SsoServer};
use crate::{Figure, Section, figures_json};

const VERIFY_PATH: &str = "/zato/sso/user/session";
const CONNS: usize = 64;
/// Users per server; each logs in `CONNS / USERS` times (one session per connection).
const USERS: usize = 4;
/// The per-node user cache of the pipeline (spec/concepts.md §5): verifies read only the session.
const USER_CACHE: &str = "[session]\nuser_cache_ms = 1000\n";
/// Repetitions of the interleaved SQLite and trivial-handler slices.
const REPS: u32 = 5;
const AUDIT_FILE_NO_FSYNC: &str = "[audit]\nsinks = [\"file\"]\n\n[audit.file]\nfsync = \"never\"\n";

fn verify_body(ust: &str) -> Bytes {
    Bytes::from(json!({"current_ust": ust, "target_ust": ust, "current_app": "CRM"}).to_string())
}

/// A figure from an external tool: (ops/s, p50, p99).
#[derive(Debug, Clone)]
struct Tool {
    name: String,
    command: String,
    ops_per_s: f64,
    p50: Duration,
    p99: Duration,
    /// Where the machine's CPU went while it ran.
    cpu: cpu::Use,
}

struct VerifyRun {
    label: String,
    config: String,
    fig: Figure,
    errors: u64,
    rss_start_kib: u64,
    rss_idle_kib: u64,
    rss_peak_kib: u64,
    /// The trivial handler's req/s in the slices paired with this run's (interleaved runs).
    paired_baseline: Option<f64>,
    /// Where the machine's CPU went in this run's load windows.
    cpu: cpu::Use,
}

fn load_of(addr: std::net::SocketAddr, bodies: Vec<Bytes>) -> Load {
    Load {
        addr,
        method: Method::POST,
        path: VERIFY_PATH.into(),
        bodies,
        conns: CONNS,
        warmup: warmup(),
        window: secs(),
    }
}

/// A started `sso serve` with one logged-in session per connection, ready to be loaded.
struct Prepared {
    label: String,
    config: String,
    server: SsoServer,
    bodies: Vec<Bytes>,
    rss_start_kib: u64,
    rss_idle_kib: u64,
    /// Kept until the server is dropped (declared after it: dropped last).
    _dir: crate::harness::Scratch,
}

async fn prepare(label: &str, slug: &str, config: String) -> Result<Prepared, String> {
    let dir = scratch(&format!("verify-{slug}"))?;
    let port = SsoServer::configure(&dir, &config)?;
    let users: Vec<String> = (0..USERS).map(|i| format!("verify{i}")).collect();
    SsoServer::create_users(&dir, &users)?;
    let server = SsoServer::start(&dir, port).await?;
    let rss_start_kib = server.rss_kib().unwrap_or(0);
    // One session per connection: each user logs in CONNS / USERS times, users in parallel.
    let mut tasks = Vec::new();
    for u in users {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut usts = Vec::new();
            for _ in 0..CONNS / USERS {
                usts.push(server::login(addr, &u).await?);
            }
            Ok::<_, String>(usts)
        }));
    }
    let mut usts = Vec::new();
    for t in tasks {
        usts.extend(t.await.map_err(|e| e.to_string())??);
    }
    let first = usts.first().ok_or("no session")?;
    let (status, text) =
        loadgen::once(server.addr, Method::POST, VERIFY_PATH, &String::from_utf8_lossy(&verify_body(first))).await?;
    let valid = serde_json::from_str::<Value>(&text).ok().and_then(|v| v.get("is_valid").and_then(Value::as_bool));
    if status != 200 || valid != Some(true) {
        return Err(format!("{label}: verify answered {status} {text}"));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle_kib = server.rss_kib().unwrap_or(0);
    Ok(Prepared {
        label: label.to_owned(),
        config,
        bodies: usts.iter().map(|u| verify_body(u)).collect(),
        server,
        rss_start_kib,
        rss_idle_kib,
        _dir: dir,
    })
}

/// One load window on `p` (after `warm`), with the server's peak RSS sampled every 200 ms and
/// the machine's CPU use during the load.
async fn load_window(
    p: &Prepared,
    warm: Duration,
    window: Duration,
) -> Result<(loadgen::Outcome, u64, cpu::Use), String> {
    let pid = p.server.pid();
    let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(p.rss_idle_kib)));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(r) = rss_kib(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut load = load_of(p.server.addr, p.bodies.clone());
    load.warmup = warm;
    load.window = window;
    let cpu_at = cpu::Snapshot::take();
    let out = loadgen::run(&load).await;
    let cpu = cpu_at.since();
    // Whatever the server still does after the load (draining its read-audit queue into the
    // sinks) finishes before anything else is measured.
    crate::harness::settle(pid).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    Ok((out?, peak.load(Ordering::Relaxed), cpu))
}

/// The run of `p` from its windows' outcomes.
fn finish(p: Prepared, outs: Vec<loadgen::Outcome>, peak_kib: u64, cpu: cpu::Use) -> Result<VerifyRun, String> {
    let window = outs.iter().map(|o| o.window).sum();
    let errors = outs.iter().map(|o| o.errors).sum();
    let lat: Vec<Duration> = outs.into_iter().flat_map(|o| o.lat).collect();
    if lat.is_empty() {
        return Err(format!("{}: no successful verify: {}", p.label, p.server.stderr()));
    }
    Ok(VerifyRun {
        fig: crate::harness::concurrent_figure(format!("verify, {}", p.label), lat, window),
        label: p.label,
        config: p.config,
        errors,
        rss_start_kib: p.rss_start_kib,
        rss_idle_kib: p.rss_idle_kib,
        rss_peak_kib: peak_kib,
        paired_baseline: None,
        cpu,
    })
}

/// One store, one load window of `SSO_BENCH_SECS`.
async fn verify_on(label: &str, slug: &str, config: String) -> Result<VerifyRun, String> {
    let p = prepare(label, slug, config).await?;
    let (out, peak, cpu) = load_window(&p, warmup(), secs()).await?;
    finish(p, vec![out], peak, cpu)
}

fn command(program: &str, args: &[String]) -> Result<String, String> {
    let out = std::process::Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
    }
}

fn ms_f(v: Option<&str>) -> Duration {
    let x: f64 = v.map(|s| s.trim().trim_matches('"')).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    Duration::from_secs_f64(x / 1e3)
}

/// `redis-benchmark -t get -c 64 -n N --csv` (the `-q` run with p99 in the output).
fn redis_benchmark(port: u16, n: u64) -> Result<Tool, String> {
    let args: Vec<String> =
        ["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "get", "-c", "64", "-n", &n.to_string(), "--csv"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
    let cpu_at = cpu::Snapshot::take();
    let out = command("redis-benchmark", &args)?;
    let cpu = cpu_at.since();
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let line = out.lines().find(|l| l.starts_with("\"GET")).ok_or_else(|| format!("no GET line in: {out}"))?;
    let f: Vec<&str> = line.split(',').collect();
    let rps = f.get(1).map(|s| s.trim_matches('"')).and_then(|s| s.parse().ok()).ok_or("no rps")?;
    Ok(Tool {
        name: "redis-benchmark GET".into(),
        command: format!("redis-benchmark {}", args.join(" ")),
        ops_per_s: rps,
        p50: ms_f(f.get(4).copied()),
        p99: ms_f(f.get(6).copied()),
        cpu,
    })
}

/// `pgbench -i` on a scratch database, then `pgbench -S -c 64 -j 2 -T secs` with per-transaction
/// logs for the latency percentiles.
fn pgbench(pg: &sso_testkit::PgServer, secs: u64) -> Result<Tool, String> {
    pg.create_db("pgbench_scratch")?;
    let port = pg.port().to_string();
    let conn = ["-h", "127.0.0.1", "-p", &port, "-U", "postgres"];
    let init: Vec<String> =
        ["-i", "-s", "1", "-q"].iter().chain(&conn).chain(&["pgbench_scratch"]).map(|s| (*s).to_owned()).collect();
    command("pgbench", &init)?;
    let logs = scratch("pgbench-logs")?;
    let prefix = logs.join("pgb").display().to_string();
    let mut run: Vec<String> =
        ["-S", "-c", "64", "-j", "2", "-T", &secs.to_string()].iter().chain(&conn).map(|s| (*s).to_owned()).collect();
    run.extend(["-l".to_owned(), format!("--log-prefix={prefix}"), "pgbench_scratch".to_owned()]);
    let cpu_at = cpu::Snapshot::take();
    let out = command("pgbench", &run)?;
    let cpu = cpu_at.since();
    let tps = out
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok())
        .ok_or_else(|| format!("no tps in pgbench output: {out}"))?;
    // Log lines: client_id transaction_no latency_us script_no epoch epoch_us.
    let mut lat: Vec<Duration> = Vec::new();
    for e in std::fs::read_dir(&logs).map_err(|e| e.to_string())?.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        lat.extend(
            text.lines().filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()).map(Duration::from_micros),
        );
    }
    let f = Figure::of("pgbench", lat);
    Ok(Tool {
        name: "pgbench -S (select-only)".into(),
        command: format!("pgbench {}\npgbench {}", init.join(" "), run.join(" ").replace(&prefix, "<dir>/pgb")),
        ops_per_s: tps,
        p50: f.p50,
        p99: f.p99,
        cpu,
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Runs the benchmark.
#[allow(clippy::too_many_lines)]
pub async fn run() -> Result<Vec<Section>, String> {
    let secs_ = secs();
    // (a) The trivial handler, bodies the size of the real ones, and the three SQLite servers
    // run side by side (an idle server costs nothing) and are loaded in turns: REPS repetitions
    // of trivial, SQLite 1, trivial, SQLite 2, trivial, SQLite 3, trivial — each slice a
    // REPS-th of SSO_BENCH_SECS. This machine's speed drifts by ±10–30 % within a minute; each
    // SQLite slice is compared with the trivial slices just before and after it.
    let fake = format!("zust{}", "0".repeat(52));
    let trivial = server::trivial(VERIFY_PATH, cores())?;
    let trivial_load = load_of(trivial.addr, vec![verify_body(&fake)]);
    let sqlite_store = "[store]\nusers = \"sqlite://./sso.db\"\n";
    let prepared = vec![
        prepare("SQLite (embedded default)", "sqlite", format!("{sqlite_store}\n{AUDIT_FILE_NO_FSYNC}")).await?,
        prepare("SQLite, default audit (stdout + file, fsync always)", "sqlite-audit", sqlite_store.to_owned()).await?,
        prepare(
            "SQLite, session.user_cache_ms = 1000",
            "sqlite-cache",
            format!("{sqlite_store}\n{USER_CACHE}\n{AUDIT_FILE_NO_FSYNC}"),
        )
        .await?,
    ];
    let slice = secs_ / REPS;
    let warm = (slice / 5).clamp(Duration::from_millis(200), Duration::from_secs(1));
    let trivial_cpu = std::cell::RefCell::new(cpu::Use::default());
    let trivial_slice = async || {
        let mut load = trivial_load.clone();
        load.warmup = warm;
        load.window = slice;
        let cpu_at = cpu::Snapshot::take();
        let out = loadgen::run(&load).await;
        trivial_cpu.borrow_mut().add(&cpu_at.since());
        out
    };
    let mut trivial_outs = Vec::new();
    let mut outs: Vec<Vec<loadgen::Outcome>> = prepared.iter().map(|_| Vec::new()).collect();
    let mut paired: Vec<Vec<f64>> = prepared.iter().map(|_| Vec::new()).collect();
    let mut peaks: Vec<u64> = prepared.iter().map(|p| p.rss_idle_kib).collect();
    let mut cpus: Vec<cpu::Use> = prepared.iter().map(|_| cpu::Use::default()).collect();
    let rate = |o: &loadgen::Outcome| o.lat.len() as f64 / o.window.as_secs_f64().max(1e-9);
    for _ in 0..REPS {
        let mut before = trivial_slice().await?;
        for (i, p) in prepared.iter().enumerate() {
            let (out, peak, used) = load_window(p, warm, slice).await?;
            let after = trivial_slice().await?;
            if let (Some(o), Some(b), Some(pk), Some(c)) =
                (outs.get_mut(i), paired.get_mut(i), peaks.get_mut(i), cpus.get_mut(i))
            {
                o.push(out);
                c.add(&used);
                b.push((rate(&before) + rate(&after)) / 2.0);
                *pk = (*pk).max(peak);
            }
            trivial_outs.push(std::mem::replace(&mut before, after));
        }
        trivial_outs.push(before);
    }
    drop(trivial);
    let trivial_cpu = trivial_cpu.into_inner();
    let base_errors: u64 = trivial_outs.iter().map(|o| o.errors).sum();
    let base = crate::harness::concurrent_figure(
        format!("trivial axum handler (same stack, same load generator; all {} slices)", trivial_outs.len()),
        trivial_outs.iter().flat_map(|o| o.lat.iter().copied()).collect(),
        trivial_outs.iter().map(|o| o.window).sum(),
    );
    let trivial_rates: Vec<String> = trivial_outs.iter().map(|o| format!("{:.0}", rate(o))).collect();
    let mut runs = Vec::new();
    for (((p, o), b), c) in prepared.into_iter().zip(outs).zip(&paired).zip(cpus) {
        let peak = peaks.get(runs.len()).copied().unwrap_or(0);
        let mut r = finish(p, o, peak, c)?;
        r.paired_baseline = Some(b.iter().sum::<f64>() / b.len().max(1) as f64);
        runs.push(r);
    }
    let load_text = format!(
        "{}; the SQLite rows and their baseline in {REPS} repetitions of {:.1} s warm-up + {:.1} s slices",
        trivial_load.describe(),
        warm.as_secs_f64(),
        slice.as_secs_f64()
    );

    let pg = sso_testkit::PgServer::start()?;
    let pgb = pgbench(&pg, secs_.as_secs().max(1))?;
    let redis = sso_testkit::RedisServer::start()?;
    let n = (secs_.as_secs().max(1) * 20_000).max(100_000);
    let rb = redis_benchmark(redis.port(), n)?;
    // Each store runs without and with the user cache; each run has its own database (its users
    // are encrypted under its own key ring) and its own Redis prefix. Reported PostgreSQL first.
    let mut redis_runs = Vec::new();
    for (label, slug, cache) in [("", "", ""), (", session.user_cache_ms = 1000", "_cache", USER_CACHE)] {
        let db = async |name: &str| {
            sso_store_postgres::PgStore::create_database(&pg.url("postgres"), &format!("{name}{slug}"))
                .await
                .map_err(|e| e.to_string())
        };
        let cache = if cache.is_empty() { String::new() } else { format!("{cache}\n") };
        let pg_url = db("sso_verify_pg").await?;
        runs.push(
            verify_on(
                &format!("PostgreSQL{label}"),
                &format!("pg{slug}"),
                format!("[store]\nusers = {pg_url:?}\n\n{cache}{AUDIT_FILE_NO_FSYNC}"),
            )
            .await?,
        );
        let mixed_url = db("sso_verify_mixed").await?;
        redis_runs.push(
            verify_on(
                &format!("Redis sessions (users in PostgreSQL){label}"),
                &format!("redis{slug}"),
                format!(
                    "[store]\nusers = {mixed_url:?}\nsessions = {:?}\nredis_prefix = \"bench{}{slug}:\"\n\n{cache}{AUDIT_FILE_NO_FSYNC}",
                    redis.url(),
                    std::process::id()
                ),
            )
            .await?,
        );
    }
    runs.extend(redis_runs);

    // ----- report -----
    let tools = [pgb.clone(), rb.clone()];
    let mut md = format!(
        "`POST /zato/sso/user/session` `{{\"current_ust\": U, \"target_ust\": U, \"current_app\": \"CRM\"}}` (a user verifying\n\
         their own session: the pipeline twice, no renewal) against `target/release/sso serve`, {CONNS} connections,\n\
         one session each ({USERS} users × {} logins). Client, server, database and Redis share this machine's\n\
         {} cores on loopback. Load: {}.\n\n\
         Baselines of the same run: (a) a trivial axum 0.8 handler (hyper 1 HTTP/1.1, its own {}-worker tokio\n\
         runtime) answering a fixed JSON body, loaded the same way — goal for SQLite: ≥ 0.4× its req/s;\n\
         (b) `{}` against the same Redis (`--csv` in place of `-q`: same test, but it prints p99) — goal\n\
         ≥ 0.5× its ops/s with p99 ≤ 2 ms; (c) against the same\n\
         PostgreSQL (fsync off, as every testkit server):\n\n```\n{}\n```\n\n\
         Trivial-handler slices of this run (req/s, in order): {}. Each SQLite row's baseline is the\n\
         mean of the trivial slices just before and after each of its slices; the other rows use all of them.\n\n\
         | run | req/s | p50 ms | p99 ms | baseline (same run) | baseline ops/s | baseline p50 ms | baseline p99 ms | ratio (req/s) |\n\
         |---|---|---|---|---|---|---|---|---|\n\
         | {} | {:.0} | {} | {} | — | | | | 1.00 |\n",
        CONNS / USERS,
        cores(),
        load_text,
        cores(),
        rb.command,
        pgb.command,
        trivial_rates.join(", "),
        base.name,
        base.ops_per_s,
        ms(base.p50),
        ms(base.p99),
    );
    let mut js = Vec::new();
    let mut row = |r: &VerifyRun, bname: &str, bops: f64, bp50: Duration, bp99: Duration| {
        let x = ratio(r.fig.ops_per_s, bops);
        md.push_str(&format!(
            "| {} | {:.0} | {} | {} | {bname} | {bops:.0} | {} | {} | {x:.2} |\n",
            r.fig.name,
            r.fig.ops_per_s,
            ms(r.fig.p50),
            ms(r.fig.p99),
            ms(bp50),
            ms(bp99)
        ));
        js.push(json!({"run": r.label, "req_per_s": r.fig.ops_per_s, "baseline": bname, "baseline_ops_per_s": bops, "ratio": x,
                       "p50_ms": r.fig.p50.as_secs_f64() * 1e3, "p99_ms": r.fig.p99.as_secs_f64() * 1e3}));
    };
    for r in &runs {
        match r.paired_baseline {
            Some(b) => row(r, "trivial handler (slices around it)", b, base.p50, base.p99),
            None => row(r, "trivial handler", base.ops_per_s, base.p50, base.p99),
        }
        if r.label.starts_with("PostgreSQL") {
            row(r, &pgb.name, pgb.ops_per_s, pgb.p50, pgb.p99);
        }
        if r.label.starts_with("Redis") {
            row(r, &rb.name, rb.ops_per_s, rb.p50, rb.p99);
        }
    }
    let errors: u64 = runs.iter().map(|r| r.errors).sum::<u64>() + base_errors;
    if errors > 0 {
        md.push_str(&format!("\n{errors} failed requests in the windows (not counted).\n"));
    }
    // Each phase's name in the table, in the JSON, its ops/s and CPU use.
    let phases: Vec<(&str, &str, f64, &cpu::Use)> =
        std::iter::once((base.name.as_str(), base.name.as_str(), base.ops_per_s, &trivial_cpu))
            .chain(runs.iter().map(|r| (r.fig.name.as_str(), r.label.as_str(), r.fig.ops_per_s, &r.cpu)))
            .chain(tools.iter().map(|t| (t.name.as_str(), t.name.as_str(), t.ops_per_s, &t.cpu)))
            .collect();
    md.push_str(&cpu_table(&phases));
    md.push_str(
        "\nServer memory: `VmRSS` of the `sso serve` process (`/proc/<pid>/status`) right after start, 1 s\n\
         after the 64 logins (idle, the baseline of the ratio) and its peak sampled every 200 ms under the\n\
         load above.\n\n\
         | store | RSS after start MiB | RSS idle after the logins MiB | RSS peak under load MiB | ratio (peak ÷ idle) |\n|---|---|---|---|---|\n",
    );
    for r in &runs {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} |\n",
            r.label,
            mib(r.rss_start_kib),
            mib(r.rss_idle_kib),
            mib(r.rss_peak_kib),
            ratio(r.rss_peak_kib as f64, r.rss_idle_kib as f64)
        ));
    }
    md.push_str("\nThe `sso.toml` of each run (plus `[server] listen` on a free loopback port; users created with\n`sso user create <name> --password-stdin`):\n");
    for r in &runs {
        md.push_str(&format!("\n{}:\n\n```toml\n{}\n```\n", r.label, r.config.trim_end()));
    }
    let rss: Vec<Value> = runs
        .iter()
        .map(|r| json!({"run": r.label, "rss_start_kib": r.rss_start_kib, "rss_idle_kib": r.rss_idle_kib, "rss_peak_kib": r.rss_peak_kib}))
        .collect();
    let tool_js: Vec<Value> = tools
        .iter()
        .map(|t| {
            json!({"name": t.name, "command": t.command, "ops_per_s": t.ops_per_s,
                         "p50_ms": t.p50.as_secs_f64() * 1e3, "p99_ms": t.p99.as_secs_f64() * 1e3})
        })
        .collect();
    let cpu_js: Vec<Value> = phases
        .iter()
        .map(|&(_, name, ops, c)| {
            let parts: serde_json::Map<String, Value> =
                cpu::PARTS.iter().map(|p| ((*p).to_owned(), json!(c.us_per_op(Some(p), ops)))).collect();
            json!({"phase": name, "ops_per_s": ops, "cores_busy": c.cores_busy(),
                   "cpu_us_per_op": c.us_per_op(None, ops), "parts_us_per_op": parts})
        })
        .collect();
    let mut figs = vec![base];
    figs.extend(runs.iter().map(|r| r.fig.clone()));
    Ok(vec![Section {
        title: "HTTP session verify: 64 connections".into(),
        markdown: md,
        json: json!({"rows": js, "tools": tool_js, "rss": rss, "cpu": cpu_js, "figures": figures_json(&figs)}),
    }])
}

/// The report's CPU table: each phase's cores and µs of CPU per request, by part; a phase is
/// (its name here, its name in the JSON, its ops/s, its CPU use).
fn cpu_table(phases: &[(&str, &str, f64, &cpu::Use)]) -> String {
    let mut md = format!(
        "\nWhere the CPU went: the machine's busy time and each part's user + system time during the\n\
         load (warm-up included), from `/proc`; µs of CPU per request = the part's cores ÷ the row's\n\
         ops/s. \"other\" is busy time no part accounts for (the kernel's own threads and interrupts,\n\
         ended processes). With every core busy, a row's ops/s is the machine's {} cores ÷ its\n\
         \"all\" column: a request is as fast as the CPU all parts spend on it.\n\n\
         | phase | ops/s | cores busy | all µs/op |",
        cores()
    );
    for p in cpu::PARTS {
        md.push_str(&format!(" {p} |"));
    }
    md.push_str(" other |\n|---|---|---|---|");
    md.push_str(&"---|".repeat(cpu::PARTS.len() + 1));
    md.push('\n');
    for &(name, _, ops, c) in phases {
        md.push_str(&format!("| {name} | {ops:.0} | {:.2} | {:.1} |", c.cores_busy(), c.us_per_op(None, ops)));
        for p in cpu::PARTS {
            let v = c.us_per_op(Some(p), ops);
            md.push_str(&if v > 0.0 { format!(" {v:.1} |") } else { " – |".to_owned() });
        }
        md.push_str(&format!(" {:.1} |\n", c.other_us_per_op(ops)));
    }
    md
}

/// Hidden group `profile-http-verify`: the embedded-default SQLite server and the trivial
/// handler side by side, loaded in turns for `SSO_BENCH_SECS` (REPS slices each); prints each
/// slice pair's ratio and the server's pid (for `perf record -p`) — a quick before/after check.
pub async fn profile() -> Result<(), String> {
    let fake = format!("zust{}", "0".repeat(52));
    let trivial = server::trivial(VERIFY_PATH, cores())?;
    let trivial_load = load_of(trivial.addr, vec![verify_body(&fake)]);
    let config = format!("[store]\nusers = \"sqlite://./sso.db\"\n\n{AUDIT_FILE_NO_FSYNC}");
    let p = prepare("SQLite (embedded default)", "profile", config).await?;
    eprintln!("sso serve pid {}", p.server.pid());
    let slice = secs() / REPS;
    let warm = (slice / 5).clamp(Duration::from_millis(200), Duration::from_secs(1));
    let rate = |o: &loadgen::Outcome| o.lat.len() as f64 / o.window.as_secs_f64().max(1e-9);
    let (mut sum_v, mut sum_t) = (0.0, 0.0);
    for _ in 0..REPS {
        let mut load = trivial_load.clone();
        load.warmup = warm;
        load.window = slice;
        let t = rate(&loadgen::run(&load).await?);
        let (v, _, _) = load_window(&p, warm, slice).await?;
        let v = rate(&v);
        eprintln!("trivial {t:.0} req/s, verify {v:.0} req/s, ratio {:.3}", v / t.max(1.0));
        sum_v += v;
        sum_t += t;
    }
    eprintln!("overall ratio {:.3}", sum_v / sum_t.max(1.0));
    Ok(())
}

/// Hidden group `profile-redis-verify`: the Redis-sessions server (users in PostgreSQL, the user
/// cache on unless `SSO_PROFILE_NO_CACHE` is set) loaded for `SSO_BENCH_SECS` after printing its
/// pid (for `perf record -p`); prints req/s and where the CPU went.
pub async fn profile_redis() -> Result<(), String> {
    let pg = sso_testkit::PgServer::start()?;
    let redis = sso_testkit::RedisServer::start()?;
    let url = sso_store_postgres::PgStore::create_database(&pg.url("postgres"), "sso_profile_redis")
        .await
        .map_err(|e| e.to_string())?;
    let cache = if std::env::var_os("SSO_PROFILE_NO_CACHE").is_some() { "" } else { USER_CACHE };
    let config = format!(
        "[store]\nusers = {url:?}\nsessions = {:?}\nredis_prefix = \"profile:\"\n\n{cache}\n{AUDIT_FILE_NO_FSYNC}",
        redis.url()
    );
    let p = prepare("Redis", "profile-redis", config).await?;
    eprintln!("sso serve pid {}", p.server.pid());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (out, _, used) = load_window(&p, warmup(), secs()).await?;
    let ops = out.lat.len() as f64 / out.window.as_secs_f64().max(1e-9);
    eprintln!("verify {ops:.0} req/s, {:.1} µs CPU per request", used.us_per_op(None, ops));
    for part in cpu::PARTS {
        eprintln!("  {part}: {:.1} µs", used.us_per_op(Some(part), ops));
    }
    Ok(())
}
