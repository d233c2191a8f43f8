//! The audit trail as the services use it: building one record per operation, writing it to the
//! configured sinks (required ones awaited, optional ones best effort), and the fail-closed rule
//! (spec/audit.md §2).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

use crate::audit::{AuditError, AuditRecord, AuditSink, Outcome};
use crate::config::OnFailure;
use crate::crypto::random;
use crate::error::{Code, SsoError};
use crate::service::ctx::CallCtx;
use crate::time::Timestamp;

/// Whether an operation reads or changes state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Read-only: successful records never delay or fail the call.
    Read,
    /// Changes state: success only after the record is durably written.
    Write,
}

/// One operation's record under construction.
#[derive(Debug)]
pub(crate) struct Audit {
    pub rec: AuditRecord,
    pub kind: Kind,
    /// The record was written (or deliberately skipped); `finish` does nothing more.
    pub done: bool,
    /// A warning to report on success (login `W003005`).
    pub warning: Option<Code>,
}

impl Audit {
    pub(crate) fn detail(&mut self, key: &str, value: impl Into<Value>) {
        self.rec.details.insert(key.to_owned(), value.into());
    }

    pub(crate) fn target_user(&mut self, id: &crate::ids::UserId) {
        self.rec.target_user_id = Some(id.to_string());
    }

    pub(crate) fn target_session(&mut self, id: &crate::ids::SessionId) {
        self.rec.target_session_id = Some(id.to_string());
    }
}

/// A new ULID string from a time and the OS RNG.
pub(crate) fn new_ulid(now: Timestamp) -> String {
    let ms = u64::try_from(now.as_millis()).unwrap_or(0);
    let rnd = random::u128().unwrap_or_else(|_| u128::from(ms));
    ulid::Ulid::from_parts(ms, rnd).to_string()
}

/// The configured sinks.
pub(crate) struct Trail {
    pub sinks: Vec<Arc<dyn AuditSink>>,
    pub on_failure: OnFailure,
    pub include_reads: bool,
    pub node: String,
    pub failures: AtomicU64,
    pub records: AtomicU64,
}

impl Trail {
    pub(crate) fn start(&self, ctx: &CallCtx, op: &str, kind: Kind, now: Timestamp) -> Audit {
        let actor = match &ctx.operator {
            Some(name) => name.clone(),
            None => "anonymous".to_owned(),
        };
        Audit {
            rec: AuditRecord {
                id: new_ulid(now),
                ts: now.to_rfc3339_micros(),
                node: self.node.clone(),
                cid: ctx.cid.to_string(),
                op: op.to_owned(),
                outcome: Outcome::Success,
                status: "ok".into(),
                sub_status: Vec::new(),
                reason: None,
                actor,
                actor_session_id: None,
                target_user_id: None,
                target_session_id: None,
                current_app: ctx.current_app.clone(),
                remote_addr: ctx.remote_addr.to_string(),
                user_agent: ctx.user_agent.clone(),
                details: Map::new(),
            },
            kind,
            done: false,
            warning: None,
        }
    }

    /// Writes to every sink except `skip` (a sink that already stored the record in the store's
    /// transaction). Returns the first required sink's error.
    pub(crate) async fn write(&self, rec: &AuditRecord, skip_sql: bool) -> Result<(), AuditError> {
        let mut first_err = None;
        for s in &self.sinks {
            if skip_sql && s.name() == "sql" {
                continue;
            }
            match s.write(rec).await {
                Ok(()) => {}
                Err(e) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(sink = s.name(), error = %e, cid = %rec.cid, op = %rec.op, "audit sink write failed");
                    if s.required() && first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        self.records.fetch_add(1, Ordering::Relaxed);
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether a required-sink failure must fail the operation.
    pub(crate) fn fail_closed(&self) -> bool {
        self.on_failure == OnFailure::Fail
    }

    /// Records the outcome of `result` into the record.
    pub(crate) fn set_outcome<T>(a: &mut Audit, result: &Result<T, SsoError>) {
        match result {
            Ok(_) => a.rec.set_result(Ok(a.warning)),
            Err(e) => a.rec.set_result(Err((e.real_code(), e.reason()))),
        }
    }
}
