//! The `redis` audit sink (spec/audit.md §4): `XADD <stream> MAXLEN ~ <maxlen> * r <json>`, for
//! shipping to other systems; queryable by time range with filtering; the stream keeps about
//! `maxlen` records.

use async_trait::async_trait;
use sso_core::audit::{AuditError, AuditPage, AuditQuery, AuditRecord, AuditSink};
use sso_core::time::Timestamp;

use crate::RedisStore;

/// Audit records in a Redis stream.
#[derive(Debug, Clone)]
pub struct RedisAuditSink {
    store: RedisStore,
    stream: String,
    maxlen: u64,
    required: bool,
}

fn err(e: impl std::fmt::Display) -> AuditError {
    AuditError { sink: "redis".into(), detail: e.to_string() }
}

type Entries = Vec<(String, Vec<(String, String)>)>;

impl RedisAuditSink {
    /// A sink on `stream` (over the store's connection; the stream key is not prefixed).
    pub fn new(store: RedisStore, stream: &str, maxlen: u64, required: bool) -> Self {
        RedisAuditSink { store, stream: stream.to_owned(), maxlen, required }
    }
}

#[async_trait]
impl AuditSink for RedisAuditSink {
    fn name(&self) -> &str {
        "redis"
    }

    fn required(&self) -> bool {
        self.required
    }

    async fn write(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let cmd = redis::cmd("XADD")
            .arg(&self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.maxlen)
            .arg("*")
            .arg("r")
            .arg(record.to_json_line())
            .clone();
        let _: String = self.store.conn.cmd(&cmd, self.store.op_timeout()).await.map_err(err)?;
        Ok(())
    }

    async fn query(&self, q: &AuditQuery) -> Result<Option<AuditPage>, AuditError> {
        // Stream ids are arrival times; records are written within moments of their `ts`, so the
        // scan (newest first) stops an hour of slack before `since`. Filters apply to the records.
        let limit = q.limit.clamp(1, 1000) as usize;
        let stop_ms = q.since.map(|t| t.as_millis().saturating_sub(3_600_000));
        let mut end = "+".to_owned();
        let mut found = Vec::new();
        'scan: loop {
            let cmd = redis::cmd("XREVRANGE").arg(&self.stream).arg(&end).arg("-").arg("COUNT").arg(1000).clone();
            let entries: Entries = self.store.conn.cmd(&cmd, self.store.op_timeout()).await.map_err(err)?;
            let Some(last_id) = entries.last().map(|(id, _)| id.clone()) else { break };
            for (id, fields) in &entries {
                let arrived: i64 = id.split('-').next().and_then(|m| m.parse().ok()).unwrap_or(i64::MAX);
                if stop_ms.is_some_and(|s| arrived < s) {
                    break 'scan;
                }
                let Some((_, json)) = fields.iter().find(|(k, _)| k == "r") else { continue };
                if let Some(r) = AuditRecord::from_json_line(json).filter(|r| q.matches(r)) {
                    found.push(r);
                }
            }
            if found.len() > limit || entries.len() < 1000 {
                break;
            }
            end = format!("({last_id}");
        }
        Ok(Some(sso_core::audit::page_of(found, q)))
    }

    async fn purge_before(&self, _ts: Timestamp) -> Result<u64, AuditError> {
        // A stream keeps about `audit.redis.maxlen` records (trimmed on every XADD); age-based
        // retention applies to SQL sinks (spec/audit.md §4).
        Ok(0)
    }
}
