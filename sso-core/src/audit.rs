//! The audit record, the sink trait and its query types (spec/audit.md).
//!
//! A record never holds a secret: the builder in the services only ever puts ids, codes, names and
//! flags into it, and every secret type's `Debug` is redacted.

use std::borrow::Cow;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Code, Reason};
use crate::time::Timestamp;

/// The outcome of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// `ok` or `warning`.
    Success,
    /// Authentication, authorisation, throttling or account state.
    Denied,
    /// Input, conflicts, internal, unavailable.
    Failure,
}

impl Outcome {
    /// Wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }

    /// Parses the wire form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Outcome::Success),
            "denied" => Some(Outcome::Denied),
            "failure" => Some(Outcome::Failure),
            _ => None,
        }
    }
}

/// One audit record (spec/audit.md §1). Serialises to the JSON object of the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// ULID.
    pub id: String,
    /// RFC 3339 UTC with microseconds and `Z`.
    pub ts: String,
    /// Node name (shared by every record of a node: cloning it is a reference-count increment).
    pub node: std::sync::Arc<str>,
    /// Correlation id.
    pub cid: String,
    /// Operation name (a constant of the services; owned when read back from a sink).
    pub op: Cow<'static, str>,
    /// `success`, `denied` or `failure`.
    pub outcome: Outcome,
    /// `ok`, `warning` or `error`.
    pub status: Cow<'static, str>,
    /// The real codes.
    pub sub_status: Vec<String>,
    /// Machine-readable detail.
    pub reason: Option<String>,
    /// Caller's user id, `anonymous`, `cli:<user>@<host>` or `system`.
    pub actor: Cow<'static, str>,
    /// Caller's session id.
    pub actor_session_id: Option<String>,
    /// User acted upon.
    pub target_user_id: Option<String>,
    /// Session acted upon.
    pub target_session_id: Option<String>,
    /// As given.
    pub current_app: String,
    /// Effective client address(es).
    pub remote_addr: String,
    /// Truncated to 512 characters.
    pub user_agent: Option<String>,
    /// Op-specific, non-secret keys.
    pub details: Map<String, Value>,
}

impl AuditRecord {
    /// The record time as a [`Timestamp`] (parsed back from `ts`).
    pub fn timestamp(&self) -> Option<Timestamp> {
        Timestamp::parse(&self.ts)
    }

    /// Sets the outcome from an error code (or success).
    pub fn set_result(&mut self, result: Result<Option<Code>, (Code, Reason)>) {
        match result {
            Ok(None) => {
                self.outcome = Outcome::Success;
                self.status = "ok".into();
                self.sub_status.clear();
                self.reason = None;
            }
            Ok(Some(warning)) => {
                self.outcome = Outcome::Success;
                self.status = "warning".into();
                self.sub_status = vec![warning.as_str().into()];
            }
            Err((code, reason)) => {
                self.outcome = if code.is_denial() { Outcome::Denied } else { Outcome::Failure };
                self.status = "error".into();
                self.sub_status = vec![code.as_str().into()];
                self.reason = Some(reason.as_str().into());
            }
        }
    }

    /// Parses a line written by [`AuditRecord::to_json_line`].
    pub fn from_json_line(line: &str) -> Option<AuditRecord> {
        serde_json::from_str(line).ok()
    }

    /// One JSON line (no interior line breaks: JSON escapes CR, LF and control characters, and the
    /// other characters some line readers split on — U+0085, U+2028, U+2029 — are escaped too, so
    /// no value can split or forge a line; spec/audit.md §1).
    pub fn to_json_line(&self) -> String {
        let mut line = Vec::with_capacity(512);
        self.write_json_line(&mut line);
        String::from_utf8(line).unwrap_or_else(|_| String::from("{}"))
    }

    /// The lines of `records`, each ending in `\n`, in one buffer (what a sink writes per batch).
    pub fn json_lines(records: &[AuditRecord]) -> Vec<u8> {
        let mut out = Vec::with_capacity(records.len() * 512);
        for r in records {
            r.write_json_line(&mut out);
            out.push(b'\n');
        }
        out
    }

    /// Appends [`AuditRecord::to_json_line`]'s text (without a line break) to `out`: a sink
    /// writing a batch builds all its lines in one buffer.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        let start = out.len();
        if serde_json::to_writer(&mut *out, self).is_err() {
            out.truncate(start);
            out.extend_from_slice(b"{}");
            return;
        }
        // Outside strings serde_json writes ASCII only, so these can only be inside a string value,
        // where the `\uXXXX` escape decodes to the same character. Their UTF-8 encodings start
        // with 0xC2 (U+0085) or 0xE2 (U+2028, U+2029).
        let tail = out.get(start..).unwrap_or_default();
        if !tail.iter().any(|b| matches!(b, 0xC2 | 0xE2)) {
            return;
        }
        let Ok(line) = std::str::from_utf8(tail) else {
            // Cannot happen (serde_json writes UTF-8); never let an unchecked line out.
            out.truncate(start);
            out.extend_from_slice(b"{}");
            return;
        };
        if line.contains(['\u{85}', '\u{2028}', '\u{2029}']) {
            let escaped =
                line.replace('\u{85}', "\\u0085").replace('\u{2028}', "\\u2028").replace('\u{2029}', "\\u2029");
            out.truncate(start);
            out.extend_from_slice(escaped.as_bytes());
        }
    }
}

/// Why a sink failed. The detail is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit sink {sink} failed: {detail}")]
pub struct AuditError {
    /// Sink name.
    pub sink: String,
    /// Description.
    pub detail: String,
}

/// Audit query filters (spec/audit.md §5), all AND-ed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Exact cid.
    pub cid: Option<String>,
    /// Matches `actor` or `target_user_id`.
    pub user_id: Option<String>,
    /// Exact op.
    pub op: Option<String>,
    /// Outcome.
    pub outcome: Option<Outcome>,
    /// Inclusive lower bound.
    pub since: Option<Timestamp>,
    /// Inclusive upper bound.
    pub until: Option<Timestamp>,
    /// 1..=1000 (default 100).
    pub limit: u32,
    /// Continue after this record id (exclusive, newest first).
    pub before: Option<String>,
}

impl AuditQuery {
    /// Whether a record matches the filters (ignoring paging).
    pub fn matches(&self, r: &AuditRecord) -> bool {
        if self.cid.as_ref().is_some_and(|c| c != &r.cid) {
            return false;
        }
        if let Some(u) = &self.user_id
            && &r.actor != u
            && r.target_user_id.as_ref() != Some(u)
        {
            return false;
        }
        if self.op.as_ref().is_some_and(|o| o != &r.op) {
            return false;
        }
        if self.outcome.is_some_and(|o| o != r.outcome) {
            return false;
        }
        let ts = r.timestamp();
        if let (Some(s), Some(t)) = (self.since, ts)
            && t < s
        {
            return false;
        }
        if let (Some(u), Some(t)) = (self.until, ts)
            && t > u
        {
            return false;
        }
        if self.before.as_ref().is_some_and(|b| r.id.as_str() >= b.as_str()) {
            return false;
        }
        true
    }
}

/// A page of records, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    /// Records.
    pub records: Vec<AuditRecord>,
    /// The last record's id when more may follow.
    pub next_before: Option<String>,
}

/// Pages `records` (any order) per `q`: filter, newest first, limit.
pub fn page_of(mut records: Vec<AuditRecord>, q: &AuditQuery) -> AuditPage {
    records.retain(|r| q.matches(r));
    records.sort_by(|a, b| b.id.cmp(&a.id));
    let limit = q.limit.clamp(1, 1000) as usize;
    let more = records.len() > limit;
    records.truncate(limit);
    let next_before = if more { records.last().map(|r| r.id.clone()) } else { None };
    AuditPage { records, next_before }
}

/// Where audit records go (spec/storage.md §1 `AuditSink`).
#[async_trait]
pub trait AuditSink: Send + Sync {
    /// The sink's name (`stdout`, `file`, `sql`, `redis`, or an embedder's).
    fn name(&self) -> &str;

    /// Whether a failure of this sink fails state-changing operations.
    fn required(&self) -> bool;

    /// Writes one record and returns after its durable acknowledgement.
    async fn write(&self, record: &AuditRecord) -> Result<(), AuditError>;

    /// Writes several records (the background writer of successful reads hands over whatever
    /// queued up, spec/audit.md G5). Sinks that can write a batch in one go override it; the
    /// default writes them one by one, stopping at the first error.
    async fn write_many(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        for r in records {
            self.write(r).await?;
        }
        Ok(())
    }

    /// Queries records; `Ok(None)` means the sink is not queryable.
    async fn query(&self, q: &AuditQuery) -> Result<Option<AuditPage>, AuditError> {
        let _ = q;
        Ok(None)
    }

    /// Deletes records older than `ts`, returning how many went.
    async fn purge_before(&self, ts: Timestamp) -> Result<u64, AuditError> {
        let _ = ts;
        Ok(0)
    }
}

/// An in-memory, queryable sink (tests and `memory://` deployments). Can be told to fail.
#[derive(Debug, Default)]
pub struct MemoryAuditSink {
    records: std::sync::Mutex<Vec<AuditRecord>>,
    failing: std::sync::atomic::AtomicBool,
}

impl MemoryAuditSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record written, oldest first.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Makes every later write fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forgets every record.
    pub fn clear(&self) {
        if let Ok(mut r) = self.records.lock() {
            r.clear();
        }
    }
}

#[async_trait]
impl AuditSink for MemoryAuditSink {
    fn name(&self) -> &str {
        "memory"
    }

    fn required(&self) -> bool {
        true
    }

    async fn write(&self, record: &AuditRecord) -> Result<(), AuditError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(AuditError { sink: "memory".into(), detail: "failing on purpose".into() });
        }
        self.records
            .lock()
            .map_err(|_| AuditError { sink: "memory".into(), detail: "poisoned".into() })?
            .push(record.clone());
        Ok(())
    }

    async fn query(&self, q: &AuditQuery) -> Result<Option<AuditPage>, AuditError> {
        Ok(Some(page_of(self.records(), q)))
    }

    async fn purge_before(&self, ts: Timestamp) -> Result<u64, AuditError> {
        let mut r = self.records.lock().map_err(|_| AuditError { sink: "memory".into(), detail: "poisoned".into() })?;
        let before = r.len();
        r.retain(|x| x.timestamp().is_none_or(|t| t >= ts));
        Ok((before - r.len()) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conformance suite's record with `user_agent`.
    fn rec(user_agent: &str) -> AuditRecord {
        let ts = crate::time::Timestamp::from_micros(1_795_000_000_000_000);
        let mut r =
            crate::conformance::audit::record(0, ts, "c", "session.verify", "anonymous", None, Outcome::Success);
        r.user_agent = Some(user_agent.into());
        r
    }

    /// Lines appended to one buffer: each escaped on its own, the ones before it untouched.
    #[test]
    fn lines_appended_to_a_buffer_are_escaped_one_by_one() {
        let mut buf = b"already here \xE2\x80\xA8\n".to_vec();
        let plain = rec("é agent");
        let evil = rec("a\u{2028}b\u{2029}c\u{85}d");
        plain.write_json_line(&mut buf);
        buf.push(b'\n');
        evil.write_json_line(&mut buf);
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], "already here \u{2028}", "earlier content is not rewritten");
        assert_eq!(lines[1], plain.to_json_line());
        assert_eq!(lines[2], evil.to_json_line());
        assert!(!lines[2].contains(['\u{85}', '\u{2028}', '\u{2029}']));
        assert_eq!(AuditRecord::from_json_line(lines[2]), Some(evil));
    }
}
