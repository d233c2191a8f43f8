//! The audit trail as the services use it: building one record per operation, writing it to the
//! configured sinks (required ones awaited, optional ones best effort), and the fail-closed rule
//! (spec/audit.md §2).

use std::borrow::Cow;
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
    /// Boxed: the record (~500 bytes) moves through every operation's futures and into the
    /// read-audit queue; a box moves as one pointer.
    pub rec: Box<AuditRecord>,
    pub kind: Kind,
    /// The record was written (or deliberately skipped); `finish` does nothing more.
    pub done: bool,
    /// A warning to report on success (login `W003005`).
    pub warning: Option<Code>,
    /// The clock's reading when the operation started (the record's `ts`): the session pipeline
    /// uses it as "now" instead of reading the clock again.
    pub now: Timestamp,
}

impl Audit {
    pub(crate) fn detail(&mut self, key: &str, value: impl Into<Value>) {
        self.rec.details.insert(key.to_owned(), value.into());
    }

    pub(crate) fn target_user(&mut self, id: &crate::ids::UserId) {
        self.rec.target_user_id = Some(id.as_str().to_owned());
    }

    pub(crate) fn target_session(&mut self, id: &crate::ids::SessionId) {
        self.rec.target_session_id = Some(id.as_str().to_owned());
    }

    /// The record with its id and time filled in (a read's record gets them only when it is
    /// written; see [`Trail::start`]).
    pub(crate) fn stamped(&mut self) -> &AuditRecord {
        stamp(&mut self.rec, self.now);
        &self.rec
    }
}

/// Gives `rec` its id and time from `now` unless it has them.
fn stamp(rec: &mut AuditRecord, now: Timestamp) {
    if rec.id.is_empty() {
        rec.id = new_ulid(now);
        rec.ts = now.to_rfc3339_micros();
    }
}

/// The last ULID handed out: (millisecond, random part).
static LAST_ULID: std::sync::Mutex<(u64, u128)> = std::sync::Mutex::new((0, 0));

/// A new ULID string, monotonic on this node: the first id of a millisecond takes its random part
/// from the OS RNG, the next ones in the same millisecond increment it (the ULID spec's monotonic
/// mode), so ids of one millisecond sort in issue order and a busy node asks the OS for randomness at most once per
/// millisecond instead of once per record. Audit ids are identifiers, not secrets.
pub(crate) fn new_ulid(now: Timestamp) -> String {
    const RANDOM_BITS: u128 = (1 << 80) - 1;
    let ms = u64::try_from(now.as_millis()).unwrap_or(0);
    let fresh = || random::u128().unwrap_or_else(|_| u128::from(ms)) & RANDOM_BITS;
    let (ms, rnd) = match LAST_ULID.lock() {
        Ok(mut last) => {
            // Same millisecond: increment. Any other (a later one, or an earlier one after the
            // clock was set back): a fresh random part, so the id's time is always `now`.
            let next = if ms == last.0 && last.1 < RANDOM_BITS { (ms, last.1 + 1) } else { (ms, fresh()) };
            *last = next;
            next
        }
        Err(_) => (ms, fresh()),
    };
    ulid::Ulid::from_parts(ms, rnd).to_string()
}

/// A message to the read-audit writer (spec/audit.md G5).
pub(crate) enum ReadMsg {
    /// A successful read's record and its operation's time (the writer fills in the id and
    /// the formatted time).
    Record(Box<AuditRecord>, Timestamp),
    /// Acknowledge once everything queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The bound of the read-audit queue (spec/audit.md G5).
pub(crate) const READ_QUEUE: usize = 10_000;

/// Counters shared by the trail and its read-audit writer.
#[derive(Debug, Default)]
pub(crate) struct TrailCounters {
    pub records: AtomicU64,
    pub failures: AtomicU64,
    pub dropped: AtomicU64,
}

/// Writes one record to every sink (but the `sql` sink when it already stored it in the store's
/// transaction); returns the first required sink's error.
async fn write_all(
    sinks: &[Arc<dyn AuditSink>],
    counters: &TrailCounters,
    rec: &AuditRecord,
    skip_sql: bool,
) -> Result<(), AuditError> {
    let mut first_err = None;
    for s in sinks {
        if skip_sql && s.name() == "sql" {
            continue;
        }
        if let Err(e) = s.write(rec).await {
            counters.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(sink = s.name(), error = %e, cid = %rec.cid, op = %rec.op, "audit sink write failed");
            if s.required() && first_err.is_none() {
                first_err = Some(e);
            }
        }
    }
    counters.records.fetch_add(1, Ordering::Relaxed);
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// At most this many queued read records are written as one batch.
const READ_BATCH: usize = 256;

/// Writes successful reads' records to every sink; failures are counted and logged, never
/// returned (spec/audit.md G5).
async fn write_batch(sinks: &[Arc<dyn AuditSink>], counters: &TrailCounters, recs: &[AuditRecord]) {
    if recs.is_empty() {
        return;
    }
    for s in sinks {
        if let Err(e) = s.write_many(recs).await {
            counters.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(sink = s.name(), error = %e, records = recs.len(), "audit sink batch write failed");
        }
    }
    counters.records.fetch_add(u64::try_from(recs.len()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// Starts the writer of successful reads' records: it drains the bounded queue into the sinks, so
/// a slow or failing sink never delays or fails a read (spec/audit.md G5). Ends when the last
/// sender (the `Sso`) is dropped.
pub(crate) fn spawn_read_writer(
    sinks: Vec<Arc<dyn AuditSink>>,
    counters: Arc<TrailCounters>,
) -> tokio::sync::mpsc::Sender<ReadMsg> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ReadMsg>(READ_QUEUE);
    tokio::spawn(async move {
        // Whatever queued up while the previous batch was written goes out as one batch per
        // sink (one write for the file and stdout sinks); a flush is answered after the records
        // queued before it.
        let mut msgs = Vec::with_capacity(READ_BATCH);
        let mut recs = Vec::with_capacity(READ_BATCH);
        while rx.recv_many(&mut msgs, READ_BATCH).await > 0 {
            for msg in msgs.drain(..) {
                match msg {
                    ReadMsg::Record(mut rec, now) => {
                        stamp(&mut rec, now);
                        recs.push(*rec);
                    }
                    ReadMsg::Flush(ack) => {
                        write_batch(&sinks, &counters, &recs).await;
                        recs.clear();
                        let _ = ack.send(());
                    }
                }
            }
            write_batch(&sinks, &counters, &recs).await;
            recs.clear();
        }
    });
    tx
}

/// The configured sinks.
pub(crate) struct Trail {
    pub sinks: Vec<Arc<dyn AuditSink>>,
    pub on_failure: OnFailure,
    pub include_reads: bool,
    pub node: Arc<str>,
    pub counters: Arc<TrailCounters>,
    /// The read-audit queue (`None`: reads are written inline, as in tests).
    pub reads: Option<tokio::sync::mpsc::Sender<ReadMsg>>,
}

impl Trail {
    /// A new record of `op` at `now`. A read's record gets its id and formatted time later
    /// ([`Audit::stamped`], or the read-audit writer): on the session-verify path that work
    /// (a ULID under a lock, two strings) moves off the call into the background writer.
    pub(crate) fn start(&self, ctx: &CallCtx, op: &'static str, kind: Kind, now: Timestamp) -> Audit {
        let actor = match &ctx.operator {
            Some(name) => Cow::Owned(name.clone()),
            None => Cow::Borrowed("anonymous"),
        };
        let mut a = Audit {
            rec: Box::new(AuditRecord {
                id: String::new(),
                ts: String::new(),
                node: self.node.clone(),
                cid: ctx.cid.as_str().to_owned(),
                op: Cow::Borrowed(op),
                outcome: Outcome::Success,
                status: Cow::Borrowed("ok"),
                sub_status: Vec::new(),
                reason: None,
                actor,
                actor_session_id: None,
                target_user_id: None,
                target_session_id: None,
                current_app: ctx.current_app.clone(),
                remote_addr: ctx.remote_addr.to_text(),
                user_agent: ctx.user_agent.clone(),
                details: Map::new(),
            }),
            kind,
            done: false,
            warning: None,
            now,
        };
        if kind != Kind::Read {
            stamp(&mut a.rec, now);
        }
        a
    }

    /// Writes to every sink except `skip` (a sink that already stored the record in the store's
    /// transaction). Returns the first required sink's error.
    pub(crate) async fn write(&self, rec: &AuditRecord, skip_sql: bool) -> Result<(), AuditError> {
        write_all(&self.sinks, &self.counters, rec, skip_sql).await
    }

    /// Queues a successful read's record (G5); gives it back when there is no queue (write it
    /// inline). A full queue drops the record and counts it in `sso_audit_dropped_total`.
    pub(crate) fn enqueue_read(&self, rec: Box<AuditRecord>, now: Timestamp) -> Option<Box<AuditRecord>> {
        let Some(tx) = &self.reads else { return Some(rec) };
        if tx.try_send(ReadMsg::Record(rec, now)).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        None
    }

    /// Waits until every read record queued so far is written.
    pub(crate) async fn flush(&self) {
        if let Some(tx) = &self.reads {
            let (ack, done) = tokio::sync::oneshot::channel();
            if tx.send(ReadMsg::Flush(ack)).await.is_ok() {
                let _ = done.await;
            }
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
