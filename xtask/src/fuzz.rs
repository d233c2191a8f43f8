//! `cargo xtask fuzz [--secs N] [target…]`: the cargo-fuzz targets of `fuzz/`, each for `N` seconds
//! (default 60), on nightly (installed with rustup when missing) with cargo-fuzz (installed with
//! `cargo install` when missing). Not part of CI.
//!
//! Each target runs over a working corpus in `fuzz/target/corpus/<target>` (new inputs go there)
//! seeded from the committed `fuzz/corpus/<target>`. The executions, the crash artifacts found in
//! `fuzz/artifacts/<target>` and the coverage of each run are printed and written to
//! `target/fuzz/summary.json`; the command fails when a target crashed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const TARGETS: &[&str] = &["rest_request", "tokens", "config"];

fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn ensure_tools() -> Result<(), String> {
    if !have("cargo", &["+nightly", "--version"]) {
        crate::run("nightly", "rustup", &["toolchain", "install", "nightly", "--profile", "minimal"], &[])?;
    }
    if !have("cargo", &["fuzz", "--version"]) {
        crate::run("cargo-fuzz", "cargo", &["install", "cargo-fuzz", "--locked"], &[])?;
    }
    Ok(())
}

/// The figures of one run, from libFuzzer's closing lines.
#[derive(Default)]
struct Outcome {
    runs: u64,
    secs: u64,
    cov: u64,
    crashed: bool,
}

fn run_target(target: &str, secs: u64) -> Result<Outcome, String> {
    let work = format!("fuzz/target/corpus/{target}");
    std::fs::create_dir_all(&work).map_err(|e| format!("{work}: {e}"))?;
    let seeds = format!("corpus/{target}");
    let max = format!("-max_total_time={secs}");
    let work_rel = format!("target/corpus/{target}");
    let args = [
        "+nightly",
        "fuzz",
        "run",
        "-O",
        target,
        work_rel.as_str(),
        seeds.as_str(),
        "--",
        max.as_str(),
        "-rss_limit_mb=4096",
        "-timeout=10",
        "-print_final_stats=1",
    ];
    eprintln!("==> fuzz {target}: cargo {}", args.join(" "));
    let mut child = Command::new("cargo")
        .args(args)
        .current_dir("fuzz")
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    let mut out = Outcome::default();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            // "Done 338091 runs in 21 second(s)"
            if let Some(rest) = line.strip_prefix("Done ") {
                let w: Vec<&str> = rest.split_whitespace().collect();
                out.runs = w.first().and_then(|n| n.parse().ok()).unwrap_or(0);
                out.secs = w.get(3).and_then(|n| n.parse().ok()).unwrap_or(0);
            }
            if let Some(i) = line.find("cov: ") {
                out.cov = line
                    .get(i + 5..)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(out.cov);
            }
            if line.contains("ERROR: libFuzzer") || line.contains("panicked at") || line.contains("SUMMARY: ") {
                out.crashed = true;
            }
            if line.starts_with("Done ") || out.crashed || line.contains("panicked") || line.starts_with("==") {
                eprintln!("{line}");
            }
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        out.crashed = true;
    }
    Ok(out)
}

fn artifacts(target: &str) -> usize {
    std::fs::read_dir(format!("fuzz/artifacts/{target}"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("crash-")).count())
        .unwrap_or(0)
}

/// Runs the fuzz targets.
pub fn fuzz(args: &[String]) -> Result<(), String> {
    let mut secs = 60u64;
    let mut chosen: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => secs = it.next().and_then(|s| s.parse().ok()).ok_or("--secs takes a number of seconds")?,
            t if TARGETS.contains(&t) => chosen.push(t),
            other => return Err(format!("unknown fuzz target {other:?}; targets: {}", TARGETS.join(", "))),
        }
    }
    if chosen.is_empty() {
        chosen = TARGETS.to_vec();
    }
    ensure_tools()?;
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for t in chosen {
        let before = artifacts(t);
        let o = run_target(t, secs)?;
        let crashes = artifacts(t).saturating_sub(before);
        if o.crashed || crashes > 0 {
            failed.push(t);
        }
        eprintln!("<== fuzz {t}: {} runs in {} s, coverage {}, {} new crash artifacts", o.runs, o.secs, o.cov, crashes);
        rows.push(format!(
            "{{\"target\":\"{t}\",\"runs\":{},\"secs\":{},\"cov\":{},\"crashed\":{},\"new_crash_artifacts\":{crashes}}}",
            o.runs, o.secs, o.cov, o.crashed
        ));
    }
    let _ = std::fs::create_dir_all("target/fuzz");
    let _ = std::fs::write("target/fuzz/summary.json", format!("[{}]\n", rows.join(",")));
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzz targets crashed: {} (see fuzz/artifacts)", failed.join(", ")))
    }
}
