//! Login timing (spec/security.md #38, issue 7): an unknown user, a wrong password and a locked
//! user must cost the same hashing work, so their response times do not tell them apart. 2 000
//! attempts of each, interleaved, in process on the memory store with throttling off (it would
//! block the run); the figure is the spread of the three medians as a share of the median.
//!
//! The argon2id cost is lowered (4 MiB, 1 pass) so a run takes seconds: with less hashing time,
//! any non-hashing difference (store lookups, the locked check) shows up *more*, not less.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sso_core::audit::MemoryAuditSink;
use sso_core::config::Config;
use sso_core::ids::{Cid, RemoteAddr};
use sso_core::secret::Password;
use sso_core::service::NewUser;
use sso_core::{CallCtx, Sso};

use crate::Section;

const ATTEMPTS: usize = 2000;
const PASSWORD: &str = "correct horse battery staple";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Runs the measurement.
pub async fn run() -> Result<Vec<Section>, String> {
    let mut cfg = Config::for_tests();
    cfg.throttle.enabled = false;
    cfg.password.allow_weak_hash_params = true;
    cfg.password.argon2_memory_kib = 4096;
    cfg.password.argon2_iterations = 1;
    cfg.password.argon2_parallelism = 1;
    let sso = Sso::builder(cfg, sso_core::memory::stores())
        .audit_sink(Arc::new(MemoryAuditSink::new()))
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let op = sso.operator_ctx(Cid::generate(), "bench");
    for name in ["alice", "locked"] {
        let data =
            NewUser { username: Some(name.into()), password: Some(Password::new(PASSWORD)), ..Default::default() };
        let v = sso.user().create_user(&op, data, true).await.map_err(|e| e.to_string())?;
        if name == "locked" {
            let id = v.admin.map(|a| a.user_id).ok_or("no admin view")?;
            sso.user().lock_user(&op, id.as_str()).await.map_err(|e| e.to_string())?;
        }
    }
    let ctx = CallCtx::new(Cid::generate(), sso.config().apps.default.clone(), RemoteAddr::localhost());
    // (label, username, password); every one of them must be refused.
    let cases: [(&str, &str, &str); 3] = [
        ("unknown user", "nobody-here", PASSWORD),
        ("wrong password", "alice", "not the password at all"),
        ("locked user (right password)", "locked", PASSWORD),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(ATTEMPTS); cases.len()];
    // Warm-up, then the attempts interleaved so drift affects every case alike.
    for (_, user, pw) in &cases {
        let _ = sso.user().login(&ctx, user, &Password::new(*pw), None, None).await;
    }
    for _ in 0..ATTEMPTS {
        for (i, (label, user, pw)) in cases.iter().enumerate() {
            let pw = Password::new(*pw);
            let t = Instant::now();
            let r = sso.user().login(&ctx, user, &pw, None, None).await;
            let took = t.elapsed();
            if r.is_ok() {
                return Err(format!("{label}: the login succeeded"));
            }
            if let Some(s) = samples.get_mut(i) {
                s.push(took);
            }
        }
    }
    let medians: Vec<Duration> = samples.into_iter().map(median).collect();
    let lo = medians.iter().min().copied().unwrap_or_default();
    let hi = medians.iter().max().copied().unwrap_or_default();
    let spread = hi.saturating_sub(lo);
    let share = spread.as_secs_f64() / lo.as_secs_f64().max(1e-9);
    let mut md = format!(
        "{ATTEMPTS} refused logins of each kind, interleaved, in process (memory store, throttling off,\n\
         argon2id 4 MiB / 1 pass / 1 lane). Baseline: the fastest median of the three.\n\n\
         | attempt | median (µs) | ratio to the fastest median |\n|---|---|---|\n"
    );
    let mut rows = Vec::new();
    for ((label, _, _), m) in cases.iter().zip(&medians) {
        let ratio = m.as_secs_f64() / lo.as_secs_f64().max(1e-9);
        md.push_str(&format!("| {label} | {:.1} | {ratio:.3} |\n", m.as_secs_f64() * 1e6));
        rows.push(json!({"attempt": label, "median_us": m.as_secs_f64() * 1e6, "ratio": ratio}));
    }
    md.push_str(&format!(
        "\nDifference of medians (largest − smallest): **{:.1} µs = {:.2} %** of the fastest median.\n",
        spread.as_secs_f64() * 1e6,
        share * 100.0
    ));
    Ok(vec![Section {
        title: "Login timing: unknown user, wrong password, locked user".into(),
        markdown: md,
        json: json!({"attempts": ATTEMPTS, "rows": rows, "spread_us": spread.as_secs_f64() * 1e6, "spread_share": share}),
    }])
}
