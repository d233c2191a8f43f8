//! Audit queries (spec/audit.md §5): super-users only; the query is itself audited.

use super::trail::Kind;
use super::{CallCtx, Inner};
use crate::audit::{AuditPage, AuditQuery};
use crate::error::{Code, Reason, SsoError, SsoResult};

/// Audit operations, reached as `sso.audit()`.
#[derive(Clone, Copy)]
pub struct AuditApi<'a> {
    pub(crate) s: &'a Inner,
}

impl AuditApi<'_> {
    /// Queries the trail from `audit.query_sink` (else the first queryable sink); none → `E008001`.
    pub async fn query(&self, ctx: &CallCtx, mut q: AuditQuery) -> SsoResult<AuditPage> {
        let s = self.s;
        let mut a = s.audit(ctx, "audit.query", Kind::Read);
        let r = async {
            s.authenticate(ctx, &mut a, true).await?;
            let mut filters: Vec<&str> = Vec::new();
            for (present, name) in [
                (q.cid.is_some(), "cid"),
                (q.user_id.is_some(), "user_id"),
                (q.op.is_some(), "op"),
                (q.outcome.is_some(), "outcome"),
                (q.since.is_some(), "since"),
                (q.until.is_some(), "until"),
                (q.before.is_some(), "before"),
            ] {
                if present {
                    filters.push(name);
                }
            }
            a.detail("filters", filters);
            if q.limit == 0 {
                q.limit = 100;
            }
            if q.limit > 1000 {
                return Err(SsoError::invalid_input());
            }
            let wanted = &s.cfg.audit.query_sink;
            for sink in &s.trail.sinks {
                if !wanted.is_empty() && sink.name() != wanted {
                    continue;
                }
                match sink.query(&q).await {
                    Ok(Some(page)) => return Ok(page),
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "audit query failed");
                        return Err(SsoError::Unavailable { backend: "audit" });
                    }
                }
            }
            Err(SsoError::code(Code::E008001, Reason::InvalidInput))
        }
        .await;
        s.finish(a, r).await
    }
}
