//! `cargo xtask`: the project's automation, in plain Rust with no dependencies.
//!
//! * `cargo xtask ci` — everything CI runs: formatting, lints, doc tests, then every test with
//!   `cargo nextest` (its closing `Summary` line is the last thing printed).
//!
//! Each step prints what it runs; the first failure stops the run with a non-zero exit code.

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
    let env: &[(&str, &str)] = &[("CI", "true"), ("CI_REQUIRE_SERVICES", "1")];
    run("format", "cargo", &["fmt", "--all", "--", "--check"], env)?;
    run("lints", "cargo", &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"], env)?;
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

fn usage() -> String {
    "usage: cargo xtask <ci>".to_owned()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
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
