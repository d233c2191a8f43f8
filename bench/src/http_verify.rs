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
}

struct VerifyRun {
    label: String,
    config: String,
    fig: Figure,
    errors: u64,
    rss_start_kib: u64,
    rss_idle_kib: u64,
    rss_peak_kib: u64,
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

async fn verify_on(label: &str, slug: &str, config: String) -> Result<VerifyRun, String> {
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
    let pid = server.pid();
    let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(rss_idle_kib)));
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
    let load = load_of(server.addr, usts.iter().map(|u| verify_body(u)).collect());
    let out = loadgen::run(&load).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let out = out?;
    if out.lat.is_empty() {
        return Err(format!("{label}: no successful verify: {}", server.stderr()));
    }
    drop(server);
    Ok(VerifyRun {
        label: label.to_owned(),
        config,
        fig: out.figure(format!("verify, {label}")),
        errors: out.errors,
        rss_start_kib,
        rss_idle_kib,
        rss_peak_kib: peak.load(Ordering::Relaxed),
    })
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
    let out = command("redis-benchmark", &args)?;
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
    let out = command("pgbench", &run)?;
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
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Runs the benchmark.
#[allow(clippy::too_many_lines)]
pub async fn run() -> Result<Vec<Section>, String> {
    let secs_ = secs();
    // (a) The trivial handler, bodies the size of the real ones — measured before and after the
    // SQLite runs and averaged: this machine's speed drifts by up to ±20 % between minutes, and
    // a baseline on both sides of the measured runs cancels most of that drift.
    let fake = format!("zust{}", "0".repeat(52));
    let trivial_run = async |when: &str| {
        let trivial = server::trivial(VERIFY_PATH, cores())?;
        let load = load_of(trivial.addr, vec![verify_body(&fake)]);
        let out = loadgen::run(&load).await?;
        drop(trivial);
        Ok::<_, String>((out.figure(format!("trivial axum handler, {when}")), out.errors, load.describe()))
    };
    let (before, before_errors, load_text) = trivial_run("before the SQLite runs").await?;

    let sqlite_store = "[store]\nusers = \"sqlite://./sso.db\"\n";
    let mut runs = Vec::new();
    runs.push(
        verify_on("SQLite (embedded default)", "sqlite", format!("{sqlite_store}\n{AUDIT_FILE_NO_FSYNC}")).await?,
    );
    runs.push(
        verify_on("SQLite, default audit (stdout + file, fsync always)", "sqlite-audit", sqlite_store.to_owned())
            .await?,
    );
    runs.push(
        verify_on(
            "SQLite, session.user_cache_ms = 1000",
            "sqlite-cache",
            format!("{sqlite_store}\n{USER_CACHE}\n{AUDIT_FILE_NO_FSYNC}"),
        )
        .await?,
    );
    let (after, after_errors, _) = trivial_run("after the SQLite runs").await?;
    let mean = |a: Duration, b: Duration| (a + b) / 2;
    let base = Figure {
        name: "trivial axum handler (same stack, same load generator; mean of before and after)".into(),
        ops_per_s: (before.ops_per_s + after.ops_per_s) / 2.0,
        mean: mean(before.mean, after.mean),
        p50: mean(before.p50, after.p50),
        p99: mean(before.p99, after.p99),
    };
    let base_errors = before_errors + after_errors;

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
         | run | req/s | p50 ms | p99 ms | baseline (same run) | baseline ops/s | baseline p50 ms | baseline p99 ms | ratio (req/s) |\n\
         |---|---|---|---|---|---|---|---|---|\n\
         | {} | {:.0} | {} | {} | — | | | | |\n\
         | {} | {:.0} | {} | {} | — | | | | |\n\
         | {} | {:.0} | {} | {} | — | | | | 1.00 |\n",
        CONNS / USERS,
        cores(),
        load_text,
        cores(),
        rb.command,
        pgb.command,
        before.name,
        before.ops_per_s,
        ms(before.p50),
        ms(before.p99),
        after.name,
        after.ops_per_s,
        ms(after.p50),
        ms(after.p99),
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
        row(r, "trivial handler", base.ops_per_s, base.p50, base.p99);
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
    let mut figs = vec![before, after, base];
    figs.extend(runs.iter().map(|r| r.fig.clone()));
    Ok(vec![Section {
        title: "HTTP session verify: 64 connections".into(),
        markdown: md,
        json: json!({"rows": js, "tools": tool_js, "rss": rss, "figures": figures_json(&figs)}),
    }])
}
