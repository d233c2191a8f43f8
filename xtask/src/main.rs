//! `cargo xtask`: the project's automation, in plain Rust with no dependencies.
//!
//! * `cargo xtask bench` — the benchmarks (release build, not part of CI).
//! * `cargo xtask fuzz [--secs N] [target…]` — the cargo-fuzz targets (nightly; not part of CI).
//! * `cargo xtask with-services -- <cmd>` — runs a command with the test servers up.
//! * `cargo xtask ci` — everything CI runs: formatting, lints, doc tests, then every test with
//!   `cargo nextest` (its closing `Summary` line is the last thing printed). Before the tests it
//!   starts a real PostgreSQL, Redis and a 3-master Redis Cluster on 127.0.0.1 (installing them
//!   with apt when missing and running as root) and exports `DATABASE_URL`, `REDIS_URL` and
//!   `REDIS_CLUSTER_URL`; the servers are torn down when the run ends, failures included.
//!
//! Each step prints what it runs; the first failure stops the run with a non-zero exit code.

mod fuzz;

use std::process::{Command, ExitCode};
use std::time::Instant;

fn run(label: &str, program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    eprintln!("==> {label}: {program} {}", args.join(" "));
    let start = Instant::now();
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .map_err(|e| format!("{label}: cannot run {program}: {e}"))?;
    eprintln!("<== {label}: {:.1}s", start.elapsed().as_secs_f64());
    if status.success() { Ok(()) } else { Err(format!("{label} failed ({status})")) }
}

fn ci() -> Result<(), String> {
    let started = Instant::now();
    // No incremental state: CI builds once, and the state would take gigabytes of disk.
    let base: &[(&str, &str)] = &[("CI", "true"), ("CI_REQUIRE_SERVICES", "1"), ("CARGO_INCREMENTAL", "0")];
    // The free disk, for the log: a run that fills the disk fails in odd places (see
    // ARCHITECTURE.md, "CI's footprint"); not a step, so a missing `df` changes nothing.
    let _ = Command::new("df").args(["-h", "."]).status();
    run("format", "cargo", &["fmt", "--all", "--", "--check"], base)?;
    run("lints", "cargo", &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"], base)?;
    // Dropped (stopped, directories removed) when `ci` returns, whatever the outcome.
    let services = Services::start()?;
    let owned = services.env();
    let mut env: Vec<(&str, &str)> = base.to_vec();
    env.extend(owned.iter().map(|(k, v)| (*k, v.as_str())));
    let env = env.as_slice();
    run("doc tests", "cargo", &["test", "--workspace", "--all-features", "--doc", "--quiet"], env)?;
    eprintln!(
        "==> ci so far: {:.0}s; the test run comes last so its Summary line closes the output",
        started.elapsed().as_secs_f64()
    );
    // Nothing is printed after this step: CI reads nextest's closing `Summary` line.
    run_last(
        "tests",
        "cargo",
        &["nextest", "run", "--workspace", "--all-features", "--profile", "ci", "--no-fail-fast"],
        env,
    )
}

fn run_last(label: &str, program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    eprintln!("==> {label}: {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .map_err(|e| format!("{label}: cannot run {program}: {e}"))?;
    if status.success() { Ok(()) } else { Err(String::new()) }
}

/// The servers tests need, started on loopback; dropped (stopped, removed) with this value.
struct Services {
    pg: sso_testkit::PgServer,
    redis: sso_testkit::RedisServer,
    cluster: sso_testkit::RedisCluster,
}

impl Services {
    fn start() -> Result<Services, String> {
        eprintln!("==> services: starting PostgreSQL, Redis and a 3-master Redis Cluster");
        let t = Instant::now();
        let pg = sso_testkit::PgServer::start()?;
        let redis = sso_testkit::RedisServer::start()?;
        let cluster = sso_testkit::RedisCluster::start()?;
        eprintln!(
            "<== services: PostgreSQL :{}, Redis :{}, Cluster {} in {:.1}s",
            pg.port(),
            redis.port(),
            cluster.url(),
            t.elapsed().as_secs_f64()
        );
        Ok(Services { pg, redis, cluster })
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.pg.url("postgres")),
            ("REDIS_URL", self.redis.url()),
            ("REDIS_CLUSTER_URL", self.cluster.url()),
        ]
    }
}

/// `cargo xtask with-services -- <command…>`: runs a command with the test servers up.
fn with_services(cmd: &[String]) -> Result<(), String> {
    let (program, args) = cmd.split_first().ok_or("usage: cargo xtask with-services -- <command> [args…]")?;
    let services = Services::start()?;
    let env = services.env();
    for (k, v) in &env {
        eprintln!("    {k}={v}");
    }
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{program} failed ({status})")) }
}

/// `cargo xtask bench [which]`: builds the benchmarks in release mode and runs them; they start
/// their own servers, and write `BENCHMARKS.md` and `target/bench/summary.json`.
fn bench(which: &[String]) -> Result<(), String> {
    run("build", "cargo", &["build", "--release", "-p", "sso-bench", "-p", "sso-http"], &[])?;
    let root = std::env::current_dir().map_err(|e| e.to_string())?;
    let root = root.to_string_lossy().into_owned();
    let mut args: Vec<&str> = which.iter().map(String::as_str).collect();
    if args.first() == Some(&"--") {
        args.remove(0);
    }
    run("bench", "target/release/sso-bench", &args, &[("SSO_BENCH_OUT", root.as_str())])
}

fn usage() -> String {
    "usage: cargo xtask <ci | bench [section] | fuzz [--secs N] [target…] | with-services -- <command…>>".to_owned()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench(args.get(1..).unwrap_or(&[])),
        Some("fuzz") => fuzz::fuzz(args.get(1..).unwrap_or(&[])),
        Some("with-services") => {
            with_services(args.get(1..).map(|a| a.strip_prefix(&["--".to_owned()][..]).unwrap_or(a)).unwrap_or(&[]))
        }
        _ => Err(usage()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("xtask: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
