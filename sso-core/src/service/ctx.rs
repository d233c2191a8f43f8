//! The call context every operation takes first (spec/concepts.md §1), and the callers derived
//! from it.

use std::sync::Arc;

use crate::ids::{Cid, RemoteAddr, SessionId, UserId};
use crate::model::{SessionRecord, UserRecord};
use crate::secret::Ust;

/// What Zato passed to every call: `cid`, `current_ust`, `current_app`, `remote_addr`,
/// `user_agent`, plus the login-body metadata an application may claim for its end user.
#[derive(Debug, Clone)]
pub struct CallCtx {
    /// Correlation id.
    pub cid: Cid,
    /// The caller's UST (`None` for unauthenticated operations).
    pub current_ust: Option<Ust>,
    /// The application the end user acts through (checked against `apps.all` by every operation).
    pub current_app: String,
    /// The end user's address as seen by the transport.
    pub remote_addr: RemoteAddr,
    /// Truncated to 512 characters, control characters replaced by U+FFFD.
    pub user_agent: Option<String>,
    /// Address claimed in a login body (believed only for `apps.login_metadata_allowed`).
    pub claimed_remote_addr: Option<RemoteAddr>,
    /// User agent claimed in a login body (same rule).
    pub claimed_user_agent: Option<String>,
    pub(crate) operator: Option<String>,
}

/// Truncates to 512 characters and replaces control characters by U+FFFD.
pub fn sanitize_user_agent(ua: &str) -> String {
    ua.chars().take(512).map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect()
}

impl CallCtx {
    /// A context for an end-user call.
    pub fn new(cid: Cid, current_app: impl Into<String>, remote_addr: RemoteAddr) -> Self {
        CallCtx {
            cid,
            current_ust: None,
            current_app: current_app.into(),
            remote_addr,
            user_agent: None,
            claimed_remote_addr: None,
            claimed_user_agent: None,
            operator: None,
        }
    }

    /// With the caller's UST.
    pub fn with_ust(mut self, ust: Ust) -> Self {
        self.current_ust = Some(ust);
        self
    }

    /// With a user agent (sanitised).
    pub fn with_user_agent(mut self, ua: &str) -> Self {
        self.user_agent = Some(sanitize_user_agent(ua));
        self
    }

    /// With metadata claimed in a login body.
    pub fn with_claimed(mut self, remote_addr: Option<RemoteAddr>, user_agent: Option<&str>) -> Self {
        self.claimed_remote_addr = remote_addr;
        self.claimed_user_agent = user_agent.map(sanitize_user_agent);
        self
    }

    /// Whether this is an Operator (CLI) context.
    pub fn is_operator(&self) -> bool {
        self.operator.is_some()
    }
}

/// Who is calling, as derived by the pipeline.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// The CLI (`cli:<os-user>@<host>`): authorisation skipped, still audited.
    Operator(String),
    /// A valid session.
    Session(Authn),
}

/// A caller's validated session and its user record (read at this call).
#[derive(Debug, Clone)]
pub(crate) struct Authn {
    pub user: Arc<UserRecord>,
    pub session: Arc<SessionRecord>,
}

impl Caller {
    pub(crate) fn user_id(&self) -> Option<&UserId> {
        match self {
            Caller::Session(a) => Some(&a.user.user_id),
            Caller::Operator(_) => None,
        }
    }

    pub(crate) fn session_id(&self) -> Option<&SessionId> {
        match self {
            Caller::Session(a) => Some(&a.session.session_id),
            Caller::Operator(_) => None,
        }
    }

    /// Super-users and the Operator may act on anyone.
    pub(crate) fn is_super(&self) -> bool {
        match self {
            Caller::Session(a) => a.user.is_super_user,
            Caller::Operator(_) => true,
        }
    }

    /// The name written as `locked_by`, `approval_status_mod_by`.
    pub(crate) fn actor_name(&self) -> String {
        match self {
            Caller::Session(a) => a.user.user_id.to_string(),
            Caller::Operator(name) => name.strip_prefix("cli:").unwrap_or(name).to_owned(),
        }
    }

    pub(crate) fn session_user(&self) -> Option<&Authn> {
        match self {
            Caller::Session(a) => Some(a),
            Caller::Operator(_) => None,
        }
    }
}
