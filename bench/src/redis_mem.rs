//! Memory per session in Redis: `INFO memory` before and after 100 000 sessions (1 000 users),
//! everything the store keeps per session included (record, per-user index, cleanup bucket).

use std::time::Duration;

use serde_json::json;
use sso_core::model::SessionRecord;
use sso_core::store::SessionStore;
use sso_store_redis::{RedisOptions, RedisStore};

use crate::Section;

fn used(server: &sso_testkit::RedisServer) -> Result<u64, String> {
    let info = server.cli(&["info", "memory"])?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no used_memory in INFO".to_owned())
}

/// Runs the measurement.
pub async fn run() -> Result<Vec<Section>, String> {
    let server = sso_testkit::RedisServer::start()?;
    let redis = RedisStore::open(&server.url(), RedisOptions::default()).await.map_err(|e| e.to_string())?;
    let before = used(&server)?;
    let n: u64 = 100_000;
    let users: Vec<sso_core::ids::UserId> =
        (0..1000).map(|_| sso_core::ids::UserId::generate()).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let now = sso_core::time::Clock::now(&sso_core::time::SystemClock);
    let mut tasks = Vec::new();
    for chunk in 0..16u64 {
        let (redis, users) = (redis.clone(), users.clone());
        tasks.push(tokio::spawn(async move {
            for i in (chunk..n).step_by(16) {
                let ust = sso_core::secret::Ust::generate().map_err(|e| e.to_string())?;
                let rec = SessionRecord {
                    session_id: ust.session_id().ok_or("bad ust")?,
                    ust_hash: ust.hash(),
                    user_id: users.get(usize::try_from(i % 1000).unwrap_or(0)).cloned().ok_or("user")?,
                    creation_time: now,
                    expiration_time: now.plus(Duration::from_secs(3600)),
                    abs_expiration_time: Some(now.plus(Duration::from_secs(12 * 3600))),
                    epoch: 1,
                    remote_addr: "203.0.113.7".into(),
                    user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)".into()),
                    current_app: "CRM".into(),
                    auth_type: "default".into(),
                    auth_principal: "alice".into(),
                    ext_session_id: String::new(),
                    history: Vec::new(),
                };
                redis.create(&rec).await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let after = used(&server)?;
    let per = (after.saturating_sub(before)) / n;
    let md = format!(
        "`INFO memory` `used_memory` before and after creating {n} sessions of 1 000 users: {before} → {after} bytes,\n**{per} bytes per session** (record hash, per-user index entry and cleanup-bucket entry).\n"
    );
    Ok(vec![Section {
        title: "Redis: memory per session".into(),
        markdown: md,
        json: json!({"bytes_per_session": per, "sessions": n, "before": before, "after": after}),
    }])
}
