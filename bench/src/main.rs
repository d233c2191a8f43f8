//! `sso-bench`: measures sso's hot paths and its scaling, each figure beside a baseline measured in
//! the same run, and writes `BENCHMARKS.md` and `target/bench/summary.json`.
//!
//! Run it with `cargo xtask bench` (release build, real servers started on loopback).

mod audit_sinks;
mod cpu;
mod harness;
mod http_verify;
mod loadgen;
mod login_throughput;
mod login_timing;
mod micro;
mod redis_mem;
mod reset_totp;
mod scale;
mod server;

/// The same allocator as the `sso` binary, so in-process figures match the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use serde_json::{Value, json};

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// Operations per second.
    pub ops_per_s: f64,
    /// Mean latency.
    pub mean: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

impl Figure {
    /// From individual latencies.
    pub fn of(name: impl Into<String>, mut lat: Vec<Duration>) -> Figure {
        lat.sort();
        let n = lat.len().max(1);
        let total: Duration = lat.iter().sum();
        let pick = |q: f64| lat.get(((n as f64 * q) as usize).min(n - 1)).copied().unwrap_or_default();
        Figure {
            name: name.into(),
            ops_per_s: n as f64 / total.as_secs_f64().max(1e-9),
            mean: total / u32::try_from(n).unwrap_or(u32::MAX),
            p50: pick(0.50),
            p99: pick(0.99),
        }
    }

    fn json(&self) -> Value {
        json!({"name": self.name, "ops_per_s": self.ops_per_s, "mean_us": self.mean.as_secs_f64() * 1e6,
               "p50_us": self.p50.as_secs_f64() * 1e6, "p99_us": self.p99.as_secs_f64() * 1e6})
    }
}

/// A section of the report.
pub struct Section {
    /// Title.
    pub title: String,
    /// Markdown body.
    pub markdown: String,
    /// Machine-readable figures.
    pub json: Value,
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only: Option<&str> = args.first().map(String::as_str);
    // Hidden groups (profiling aids, not in BENCHMARKS.md).
    let hidden = match only {
        Some("profile-verify") => Some(micro::profile_verify().await),
        Some("profile-login") => Some(login_throughput::profile_login().await),
        Some("profile-http-verify") => Some(http_verify::profile().await),
        Some("profile-redis-verify") => Some(http_verify::profile_redis().await),
        Some("profile-login-http") => Some(login_throughput::profile_login_http().await),
        _ => None,
    };
    if let Some(r) = hidden {
        if let Err(e) = r {
            eprintln!("{} failed: {e}", only.unwrap_or_default());
        }
        return;
    }
    let root = std::env::var("SSO_BENCH_OUT").unwrap_or_else(|_| ".".into());
    let store = format!("{root}/target/bench/sections");
    let _ = std::fs::create_dir_all(&store);
    // Each group's sections are kept under target/bench/sections, so a run of one group
    // (`cargo xtask bench scale`) rewrites BENCHMARKS.md with the others' last figures.
    for (order, name) in GROUPS.iter().enumerate() {
        if only.is_some_and(|o| o != *name) {
            continue;
        }
        let r = match *name {
            "scale" => scale::run().await,
            "redis-memory" => redis_mem::run().await,
            "audit" => audit_sinks::run().await,
            "micro" => micro::run().await,
            "login" => login_throughput::run().await,
            "http-verify" => http_verify::run().await,
            "reset-totp" => reset_totp::run().await,
            "login-timing" => login_timing::run().await,
            _ => continue,
        };
        match r {
            Ok(sections) => save_group(&store, order, name, &sections),
            Err(e) => eprintln!("{name} benchmark failed: {e}"),
        }
    }
    let mut md = String::from(
        "# Benchmarks\n\nMeasured by `cargo xtask bench` on this machine (2 cores); every figure is shown beside a\nbaseline measured in the same run. Regenerate with `cargo xtask bench` (or one group:\n`cargo xtask bench <group>`, groups: ",
    );
    md.push_str(&GROUPS.join(", "));
    md.push_str(").\n\nWhat the profiles of the hot paths showed, what was changed, before/after ratios, and\nwhat would close the goals still missed: [PERFORMANCE.md](PERFORMANCE.md).\n");
    let mut all = serde_json::Map::new();
    let mut files: Vec<_> =
        std::fs::read_dir(&store).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
        let text_of = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let title = text_of("title");
        md.push_str(&format!("\n## {}\n\n{}\n", title, text_of("markdown")));
        all.insert(title, v.get("json").cloned().unwrap_or(Value::Null));
    }
    if let Err(e) = std::fs::write(format!("{root}/BENCHMARKS.md"), &md) {
        eprintln!("cannot write BENCHMARKS.md: {e}");
    }
    if let Err(e) = std::fs::write(format!("{root}/target/bench/summary.json"), Value::Object(all).to_string()) {
        eprintln!("cannot write summary.json: {e}");
    }
    eprintln!("{md}");
}

/// The benchmark groups, in report order.
const GROUPS: &[&str] =
    &["scale", "redis-memory", "audit", "micro", "login", "http-verify", "reset-totp", "login-timing"];

/// Replaces the stored sections of one group.
fn save_group(store: &str, order: usize, name: &str, sections: &[Section]) {
    let prefix = format!("{order:02}-{name}-");
    if let Ok(d) = std::fs::read_dir(store) {
        for e in d.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    for (i, s) in sections.iter().enumerate() {
        let v = serde_json::json!({"title": s.title, "markdown": s.markdown, "json": s.json});
        let _ = std::fs::write(format!("{store}/{prefix}{i:02}.json"), v.to_string());
    }
}

/// A markdown table row of a figure.
pub fn row(f: &Figure) -> String {
    format!("| {} | {:.0} | {} | {} | {} |", f.name, f.ops_per_s, us(f.mean), us(f.p50), us(f.p99))
}

/// JSON of figures.
pub fn figures_json(fs: &[Figure]) -> Value {
    Value::from(fs.iter().map(Figure::json).collect::<Vec<_>>())
}
