//! Audit throughput: records per second per sink with 4 concurrent writers for a fixed time, the
//! in-memory sink as the baseline measured in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, json};
use sso_core::audit::{AuditRecord, AuditSink, MemoryAuditSink, Outcome};

use crate::Section;

fn record(n: u64) -> AuditRecord {
    let now = sso_core::time::Clock::now(&sso_core::time::SystemClock);
    AuditRecord {
        id: ulid::Ulid::from_parts(u64::try_from(now.as_millis()).unwrap_or(0), u128::from(n)).to_string(),
        ts: now.to_rfc3339_micros(),
        node: "bench".into(),
        cid: format!("{n:024x}"),
        op: "user.login".into(),
        outcome: Outcome::Success,
        status: "ok".into(),
        sub_status: vec![],
        reason: None,
        actor: "zusr0000000000000000000000001".into(),
        actor_session_id: Some("zses0000000000000000000000001".into()),
        target_user_id: Some("zusr0000000000000000000000001".into()),
        target_session_id: None,
        current_app: "CRM".into(),
        remote_addr: "203.0.113.7".into(),
        user_agent: Some("Mozilla/5.0".into()),
        details: Map::new(),
    }
}

async fn measure(sink: Arc<dyn AuditSink>, dur: Duration) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + dur;
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let (sink, count) = (sink.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = w << 40;
            while Instant::now() < deadline {
                if sink.write(&record(n)).await.is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    count.load(Ordering::Relaxed) as f64 / dur.as_secs_f64()
}

/// Runs the measurement on every sink kind.
pub async fn run() -> Result<Vec<Section>, String> {
    let dur = Duration::from_secs(3);
    let dir = std::env::temp_dir().join(format!("sso-bench-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut rows: Vec<(String, f64)> = Vec::new();
    rows.push(("memory (baseline)".into(), measure(Arc::new(MemoryAuditSink::new()), dur).await));
    for (label, fsync) in [("file, fsync = always", true), ("file, fsync = never", false)] {
        let sink = sso_audit::FileSink::open(sso_audit::FileSinkOptions {
            path: dir.join(format!("audit-{fsync}.jsonl")),
            max_size_bytes: 1 << 30,
            max_files: 2,
            fsync,
            required: true,
        })
        .map_err(|e| e.to_string())?;
        rows.push((label.into(), measure(Arc::new(sink), dur).await));
    }
    let sqlite = sso_store_sqlite::SqliteStore::open(
        &format!("sqlite://{}", dir.join("audit.db").display()),
        &sso_store_sqlite::SqliteOptions::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let sink = sso_store_sqlite::SqlAuditSink::open(sqlite, "sso_audit", true).await.map_err(|e| e.to_string())?;
    rows.push(("sql (SQLite)".into(), measure(Arc::new(sink), dur).await));
    let pg = sso_testkit::PgServer::start()?;
    let store =
        sso_store_postgres::PgStore::open(&pg.url("postgres"), &Default::default()).await.map_err(|e| e.to_string())?;
    let sink = sso_store_postgres::SqlAuditSink::open(store, "sso_audit", true).await.map_err(|e| e.to_string())?;
    rows.push(("sql (PostgreSQL, fsync off)".into(), measure(Arc::new(sink), dur).await));
    let redis = sso_testkit::RedisServer::start()?;
    let store = sso_store_redis::RedisStore::open(&redis.url(), Default::default()).await.map_err(|e| e.to_string())?;
    rows.push((
        "redis stream".into(),
        measure(Arc::new(sso_store_redis::RedisAuditSink::new(store, "sso:audit", 1_000_000, true)), dur).await,
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let base = rows.first().map_or(1.0, |r| r.1).max(1.0);
    let mut md = String::from(
        "4 concurrent writers for 3 s per sink; ratio to the in-memory sink of the same run.\n\n| sink | records/s | ratio to memory |\n|---|---|---|\n",
    );
    for (name, rps) in &rows {
        md.push_str(&format!("| {name} | {rps:.0} | {:.4} |\n", rps / base));
    }
    let js: Vec<_> =
        rows.iter().map(|(n, r)| json!({"sink": n, "records_per_s": r, "ratio_to_memory": r / base})).collect();
    Ok(vec![Section { title: "Audit sinks: throughput".into(), markdown: md, json: json!(js) }])
}
