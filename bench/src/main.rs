//! `sso-bench`: measures sso's hot paths and its scaling, each figure beside a baseline measured in
//! the same run, and writes `BENCHMARKS.md` and `target/bench/summary.json`.
//!
//! Run it with `cargo xtask bench` (release build, real servers started on loopback).

mod audit_sinks;
mod redis_mem;
mod scale;

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
    let mut sections = Vec::new();
    if only.is_none_or(|o| o == "scale") {
        match scale::run().await {
            Ok(s) => sections.extend(s),
            Err(e) => eprintln!("scale benchmark failed: {e}"),
        }
    }
    if only.is_none_or(|o| o == "redis-memory") {
        match redis_mem::run().await {
            Ok(s) => sections.extend(s),
            Err(e) => eprintln!("redis memory benchmark failed: {e}"),
        }
    }
    if only.is_none_or(|o| o == "audit") {
        match audit_sinks::run().await {
            Ok(s) => sections.extend(s),
            Err(e) => eprintln!("audit benchmark failed: {e}"),
        }
    }
    let mut md = String::from(
        "# Benchmarks\n\nMeasured by `cargo xtask bench` on this machine (2 cores); every figure is shown beside a\nbaseline measured in the same run. Regenerate with `cargo xtask bench`.\n",
    );
    let mut all = serde_json::Map::new();
    for s in &sections {
        md.push_str(&format!("\n## {}\n\n{}\n", s.title, s.markdown));
        all.insert(s.title.clone(), s.json.clone());
    }
    let root = std::env::var("SSO_BENCH_OUT").unwrap_or_else(|_| ".".into());
    let _ = std::fs::create_dir_all(format!("{root}/target/bench"));
    if let Err(e) = std::fs::write(format!("{root}/BENCHMARKS.md"), &md) {
        eprintln!("cannot write BENCHMARKS.md: {e}");
    }
    if let Err(e) = std::fs::write(format!("{root}/target/bench/summary.json"), Value::Object(all).to_string()) {
        eprintln!("cannot write summary.json: {e}");
    }
    eprintln!("{md}");
}

/// A markdown table row of a figure.
pub fn row(f: &Figure) -> String {
    format!("| {} | {:.0} | {} | {} | {} |", f.name, f.ops_per_s, us(f.mean), us(f.p50), us(f.p99))
}

/// JSON of figures.
pub fn figures_json(fs: &[Figure]) -> Value {
    Value::from(fs.iter().map(Figure::json).collect::<Vec<_>>())
}
