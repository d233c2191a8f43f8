//! The SQL audit sink's table (spec/audit.md §4), shared by SQLite and PostgreSQL: DDL per dialect,
//! the insert, row mapping and the query filter.

use serde_json::{Map, Value};
use sso_core::StoreError;
use sso_core::audit::{AuditQuery, AuditRecord, Outcome};
use sso_core::time::Timestamp;

use crate::{RowRead, Val, placeholders};

/// Which SQL dialect a table is created for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// SQLite (times as µs, JSON as text).
    Sqlite,
    /// PostgreSQL (`timestamptz`, `jsonb`).
    Postgres,
}

/// The columns, in [`audit_values`] order.
pub const AUDIT_COLUMNS: &[&str] = &[
    "id",
    "ts",
    "node",
    "cid",
    "op",
    "outcome",
    "status",
    "sub_status",
    "reason",
    "actor",
    "actor_session_id",
    "target_user_id",
    "target_session_id",
    "current_app",
    "remote_addr",
    "user_agent",
    "details",
];

/// Whether `t` is a plain identifier (table names come from configuration).
pub fn valid_table(t: &str) -> bool {
    !t.is_empty() && t.len() <= 63 && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `CREATE TABLE IF NOT EXISTS` and its indexes (on `ts`, `cid`, (`actor`, `ts`),
/// (`target_user_id`, `ts`), (`op`, `ts`)).
pub fn create_table_sql(table: &str, flavor: Flavor) -> Vec<String> {
    let (text, key, ts, json, strict) = match flavor {
        Flavor::Sqlite => ("TEXT", "TEXT", "INTEGER", "TEXT", " STRICT"),
        Flavor::Postgres => ("text", "text COLLATE \"C\"", "timestamptz", "jsonb", ""),
    };
    let mut v = vec![format!(
        "CREATE TABLE IF NOT EXISTS {table} (id {key} NOT NULL PRIMARY KEY, ts {ts} NOT NULL, node {text} NOT NULL, \
         cid {text} NOT NULL, op {text} NOT NULL, outcome {text} NOT NULL, status {text} NOT NULL, \
         sub_status {text} NOT NULL, reason {text}, actor {text} NOT NULL, actor_session_id {text}, \
         target_user_id {text}, target_session_id {text}, current_app {text} NOT NULL, remote_addr {text} NOT NULL, \
         user_agent {text}, details {json} NOT NULL){strict}"
    )];
    for (name, cols) in
        [("ts", "ts"), ("cid", "cid"), ("actor", "actor, ts"), ("target", "target_user_id, ts"), ("op", "op, ts")]
    {
        v.push(format!("CREATE INDEX IF NOT EXISTS {table}_{name} ON {table} ({cols})"));
    }
    v
}

/// `INSERT INTO <table> (…) VALUES (…)`.
pub fn insert_sql(table: &str) -> String {
    format!("INSERT INTO {table} ({}) VALUES ({})", AUDIT_COLUMNS.join(", "), placeholders(AUDIT_COLUMNS.len(), 1))
}

/// The values of a record, in [`AUDIT_COLUMNS`] order.
pub fn audit_values(r: &AuditRecord) -> Vec<Val> {
    vec![
        Val::text(&r.id),
        Val::Ts(Some(r.timestamp().unwrap_or_default())),
        Val::text(&r.node),
        Val::text(&r.cid),
        Val::text(&r.op),
        Val::text(r.outcome.as_str()),
        Val::text(&r.status),
        Val::text(&r.sub_status.join(",")),
        Val::Text(r.reason.clone()),
        Val::text(&r.actor),
        Val::Text(r.actor_session_id.clone()),
        Val::Text(r.target_user_id.clone()),
        Val::Text(r.target_session_id.clone()),
        Val::text(&r.current_app),
        Val::text(&r.remote_addr),
        Val::Text(r.user_agent.clone()),
        Val::Json(Some(Value::Object(r.details.clone()).to_string())),
    ]
}

/// Decodes a row.
pub fn audit_from_row(r: &impl RowRead) -> Result<AuditRecord, StoreError> {
    let details: Map<String, Value> = match serde_json::from_str(&r.json("details")?) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let sub = r.text("sub_status")?;
    Ok(AuditRecord {
        id: r.text("id")?,
        ts: r.ts("ts")?.to_rfc3339_micros(),
        node: r.text("node")?.into(),
        cid: r.text("cid")?,
        op: r.text("op")?.into(),
        outcome: Outcome::parse(&r.text("outcome")?).ok_or_else(|| StoreError::corrupt("audit outcome"))?,
        status: r.text("status")?.into(),
        sub_status: if sub.is_empty() { Vec::new() } else { sub.split(',').map(str::to_owned).collect() },
        reason: r.opt_text("reason")?,
        actor: r.text("actor")?.into(),
        actor_session_id: r.opt_text("actor_session_id")?,
        target_user_id: r.opt_text("target_user_id")?,
        target_session_id: r.opt_text("target_session_id")?,
        current_app: r.text("current_app")?,
        remote_addr: r.text("remote_addr")?,
        user_agent: r.opt_text("user_agent")?,
        details,
    })
}

/// `SELECT … WHERE … ORDER BY id DESC LIMIT limit+1` (one more than asked, to know whether more
/// follow) and its values.
pub fn query_sql(table: &str, q: &AuditQuery) -> (String, Vec<Val>) {
    let mut conds = Vec::new();
    let mut vals = Vec::new();
    let mut push = |cond: &dyn Fn(usize) -> String, v: Val, vals: &mut Vec<Val>| {
        vals.push(v);
        conds.push(cond(vals.len()));
    };
    if let Some(c) = &q.cid {
        push(&|i| format!("cid = ${i}"), Val::text(c), &mut vals);
    }
    if let Some(u) = &q.user_id {
        push(&|i| format!("(actor = ${i} OR target_user_id = ${i})"), Val::text(u), &mut vals);
    }
    if let Some(o) = &q.op {
        push(&|i| format!("op = ${i}"), Val::text(o), &mut vals);
    }
    if let Some(o) = q.outcome {
        push(&|i| format!("outcome = ${i}"), Val::text(o.as_str()), &mut vals);
    }
    if let Some(s) = q.since {
        push(&|i| format!("ts >= ${i}"), Val::Ts(Some(s)), &mut vals);
    }
    if let Some(u) = q.until {
        push(&|i| format!("ts <= ${i}"), Val::Ts(Some(u)), &mut vals);
    }
    if let Some(b) = &q.before {
        push(&|i| format!("id < ${i}"), Val::text(b), &mut vals);
    }
    let clause = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
    let limit = q.limit.clamp(1, 1000) + 1;
    (format!("SELECT * FROM {table}{clause} ORDER BY id DESC LIMIT {limit}"), vals)
}

/// `DELETE FROM <table> WHERE ts < $1`.
pub fn purge_sql(table: &str) -> String {
    format!("DELETE FROM {table} WHERE ts < $1")
}

/// Turns `limit + 1` rows into a page.
pub fn page(mut records: Vec<AuditRecord>, q: &AuditQuery) -> sso_core::audit::AuditPage {
    let limit = q.limit.clamp(1, 1000) as usize;
    let more = records.len() > limit;
    records.truncate(limit);
    let next_before = if more { records.last().map(|r| r.id.clone()) } else { None };
    sso_core::audit::AuditPage { records, next_before }
}

/// The timestamp bound of a purge.
pub fn purge_value(ts: Timestamp) -> Val {
    Val::Ts(Some(ts))
}
