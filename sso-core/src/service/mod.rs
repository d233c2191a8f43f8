//! The services that apply policy: the [`Sso`] facade and its APIs. Every rule of who may do what,
//! in which order, with which code, lives here and only here.
//!
//! Each public operation follows one shape: start an audit record, run the checks of its table in
//! order, apply the effect (through a [`UserTx`](crate::store::UserTx) when the users database
//! changes), and finish — exactly one audit record per call, refusals included.

mod attrs;
mod audit_api;
pub mod ctx;
mod hashing;
mod keys;
pub mod metrics;
pub mod notify;
pub mod policy;
mod reset;
mod rotation;
mod sessions;
pub mod throttle;
mod totp;
mod trail;
mod user_cache;
mod users;
pub mod views;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use zeroize::Zeroizing;

pub use attrs::{AttrApi, AttrInput, AttrTarget};
pub use audit_api::AuditApi;
pub use ctx::CallCtx;
pub use reset::{AccessTokenCtx, PasswordResetApi};
pub use rotation::{KeyApi, KeyUsage, Progress, RotationReport};
pub use sessions::{ListTarget, SessionApi, SessionRef};
pub use totp::{TotpApi, TotpTarget, qr_svg, qr_text};
pub use users::{ChangePassword, ImportOutcome, ImportRow, NewUser, SearchCtx, SignupCtx, UserApi, UserUpdate};

use crate::audit::AuditSink;
use crate::config::{Config, ConfigError};
use crate::crypto::aead::{self, KeyRing};
use crate::crypto::password::{self as pw, Verdict};
use crate::error::{Code, Reason, SsoError, SsoResult};
use crate::ids::{Cid, RemoteAddr, SessionId, UserId};
use crate::model::{ApprovalStatus, SessionRecord, SignUpStatus, UserRecord};
use crate::secret::{Password, Ust};
use crate::store::{SessionLookup, Stores, UserTx};
use crate::time::{Clock, SystemClock, Timestamp};
use ctx::{Authn, Caller};
use hashing::Hasher;
use keys::Keys;
use metrics::{Metrics, inc};
use notify::{Event, EventKind, NoNotifier, Notifier, SessionExpiryPolicy, SignupHook, SignupValidator};
use trail::{Audit, Kind, Trail};
use views::{UserAdminView, UserView};

/// Why an [`Sso`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A configuration problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An internal failure (e.g. the OS RNG).
    #[error("{0}")]
    Internal(String),
}

/// Builds an [`Sso`] from a configuration, stores and sinks.
pub struct SsoBuilder {
    cfg: Config,
    stores: Stores,
    sinks: Vec<Arc<dyn AuditSink>>,
    key_ring: Option<KeyRing>,
    key_ring_reloader: Option<keys::Reloader>,
    clock: Arc<dyn Clock>,
    notifier: Arc<dyn Notifier>,
    validators: Vec<Arc<dyn SignupValidator>>,
    hooks: Vec<Arc<dyn SignupHook>>,
    expiry_policy: Option<Arc<dyn SessionExpiryPolicy>>,
    node_id: String,
    inline_read_audit: bool,
}

impl SsoBuilder {
    /// Starts a builder.
    pub fn new(cfg: Config, stores: Stores) -> Self {
        SsoBuilder {
            node_id: cfg.server.node_id.clone(),
            cfg,
            stores,
            sinks: Vec::new(),
            key_ring: None,
            key_ring_reloader: None,
            clock: Arc::new(SystemClock),
            notifier: Arc::new(NoNotifier),
            validators: Vec::new(),
            hooks: Vec::new(),
            expiry_policy: None,
            inline_read_audit: false,
        }
    }

    /// Writes successful reads' records inline, before the call returns, instead of through the
    /// bounded queue of spec/audit.md G5 (tests that inspect the trail right after a call).
    pub fn inline_read_audit(mut self, inline: bool) -> Self {
        self.inline_read_audit = inline;
        self
    }

    /// Adds an audit sink (in `audit.sinks` order).
    pub fn audit_sink(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Uses this key ring (default: a fresh in-memory ring, for tests and ephemeral embedders).
    pub fn key_ring(mut self, ring: KeyRing) -> Self {
        self.key_ring = Some(ring);
        self
    }

    /// How to re-read the key ring when an envelope names an unknown key (at most once per 10 s).
    pub fn key_ring_reloader(mut self, f: impl Fn() -> Option<KeyRing> + Send + Sync + 'static) -> Self {
        self.key_ring_reloader = Some(Box::new(f));
        self
    }

    /// Injects a clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the notifier.
    pub fn notifier(mut self, n: Arc<dyn Notifier>) -> Self {
        self.notifier = n;
        self
    }

    /// Adds a sign-up validator.
    pub fn signup_validator(mut self, v: Arc<dyn SignupValidator>) -> Self {
        self.validators.push(v);
        self
    }

    /// Adds a sign-up hook.
    pub fn signup_hook(mut self, h: Arc<dyn SignupHook>) -> Self {
        self.hooks.push(h);
        self
    }

    /// Sets the session expiry policy.
    pub fn session_expiry_policy(mut self, p: Arc<dyn SessionExpiryPolicy>) -> Self {
        self.expiry_policy = Some(p);
        self
    }

    /// The node name written into audit records (default `server.node_id`, else the host name).
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = id.into();
        self
    }

    /// Validates the configuration and builds the instance (computes the login dummy hash).
    pub async fn build(self) -> Result<Sso, BuildError> {
        self.cfg.validate()?;
        if self.cfg.password.allow_weak_hash_params && self.cfg.password.hash_params().is_weak() {
            tracing::warn!(
                "password.allow_weak_hash_params is set: argon2id parameters are below the recommended minimum (tests only)"
            );
        }
        let mut address_list = HashMap::new();
        for (user, entry) in &self.cfg.user_address_list {
            let nets = entry.compile().map_err(|e| ConfigError::new(format!("user_address_list.{user}"), e))?;
            address_list.insert(user.clone(), nets);
        }
        let now = self.clock.now();
        let ring = match self.key_ring {
            Some(r) => r,
            None => KeyRing::generate(now).map_err(|e| BuildError::Internal(e.to_string()))?,
        };
        let hasher = Hasher::new(
            self.cfg.password.hash_params(),
            self.cfg.password.hash_max_concurrent,
            Duration::from_millis(self.cfg.password.hash_queue_timeout_ms),
        );
        let dummy_pw = Password::generate().map_err(|e| BuildError::Internal(e.to_string()))?;
        let dummy_hash = hasher.hash(&dummy_pw).await.map_err(|e| BuildError::Internal(e.to_string()))?;
        let node = if self.node_id.is_empty() { host_name() } else { self.node_id };
        let counters = Arc::new(trail::TrailCounters::default());
        let reads = (!self.inline_read_audit && self.cfg.audit.include_reads && !self.sinks.is_empty())
            .then(|| trail::spawn_read_writer(self.sinks.clone(), counters.clone()));
        let trail = Trail {
            sinks: self.sinks,
            on_failure: self.cfg.audit.on_failure,
            include_reads: self.cfg.audit.include_reads,
            node: node.into(),
            counters,
            reads,
        };
        Ok(Sso {
            inner: Arc::new(Inner {
                joined_lookup: same_object(&self.stores.users, &self.stores.sessions),
                user_cache: user_cache::UserCache::new(self.cfg.session.user_cache_ms),
                stores: self.stores,
                trail,
                keys: Keys::new(ring, self.key_ring_reloader),
                hasher,
                clock: self.clock,
                notifier: self.notifier,
                dummy_hash,
                address_list,
                validators: self.validators,
                hooks: self.hooks,
                expiry_policy: self.expiry_policy,
                metrics: Metrics::default(),
                cfg: self.cfg,
            }),
        })
    }
}

/// The host name, for `server.node_id` and Operator actors.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The SSO facade. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Sso {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sso { .. }")
    }
}

pub(crate) struct Inner {
    pub cfg: Config,
    pub stores: Stores,
    pub trail: Trail,
    pub keys: Keys,
    pub hasher: Hasher,
    pub clock: Arc<dyn Clock>,
    pub notifier: Arc<dyn Notifier>,
    pub dummy_hash: String,
    pub address_list: HashMap<String, Option<Vec<IpNet>>>,
    pub validators: Vec<Arc<dyn SignupValidator>>,
    pub hooks: Vec<Arc<dyn SignupHook>>,
    pub expiry_policy: Option<Arc<dyn SessionExpiryPolicy>>,
    pub metrics: Metrics,
    /// The session store is the user store object too (one database): sessions and their
    /// users are read in one round trip ([`SessionStore::get_with_user`]).
    pub joined_lookup: bool,
    /// `session.user_cache_ms`: the pipeline's per-node cache of user records.
    pub user_cache: user_cache::UserCache,
}

/// Whether two trait objects are the same object (same data address).
fn same_object<A: ?Sized, B: ?Sized>(a: &Arc<A>, b: &Arc<B>) -> bool {
    std::ptr::eq(Arc::as_ptr(a).cast::<u8>(), Arc::as_ptr(b).cast::<u8>())
}

impl Sso {
    /// Starts a builder.
    pub fn builder(cfg: Config, stores: Stores) -> SsoBuilder {
        SsoBuilder::new(cfg, stores)
    }

    /// User operations (Zato's `self.sso.user`), including login and logout.
    pub fn user(&self) -> UserApi<'_> {
        UserApi { s: &self.inner }
    }

    /// Session operations.
    pub fn session(&self) -> SessionApi<'_> {
        SessionApi { s: &self.inner }
    }

    /// TOTP operations other than `reset_totp_key` (which is `user()`'s, as in Zato).
    pub fn totp(&self) -> TotpApi<'_> {
        TotpApi { s: &self.inner }
    }

    /// Password-reset tokens.
    pub fn password_reset(&self) -> PasswordResetApi<'_> {
        PasswordResetApi { s: &self.inner }
    }

    /// User and session attributes.
    pub fn attr(&self) -> AttrApi<'_> {
        AttrApi { s: &self.inner }
    }

    /// Audit queries.
    pub fn audit(&self) -> AuditApi<'_> {
        AuditApi { s: &self.inner }
    }

    /// Key rotation: envelope counts per key and re-encryption (Operator contexts only).
    pub fn keys(&self) -> KeyApi<'_> {
        KeyApi { s: &self.inner }
    }

    /// The configuration in effect.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// The stores in use.
    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// Counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The metrics in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let i = &self.inner;
        i.metrics.render(
            i.hasher.in_flight.load(Relaxed),
            i.trail.counters.records.load(Relaxed),
            i.trail.counters.failures.load(Relaxed),
            i.trail.counters.dropped.load(Relaxed),
        )
    }

    /// Waits until every queued read record (spec/audit.md G5) has been written to the sinks
    /// (graceful shutdown, tests).
    pub async fn flush_audit(&self) {
        self.inner.trail.flush().await;
    }

    /// How many password verifications this instance has computed (real and dummy alike): the
    /// measure of "the same hashing work" for unknown users.
    pub fn password_verifications(&self) -> u64 {
        self.inner.hasher.verifications.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The current key ring.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.inner.keys.current()
    }

    /// Replaces the key ring (after `keys rotate`, or on SIGHUP).
    pub fn replace_key_ring(&self, ring: KeyRing) {
        self.inner.keys.replace(ring);
    }

    /// The current time of this instance's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// An Operator context (the CLI, Zato's `skip_sec`): authorisation skipped, every other rule
    /// applies, audited with actor `cli:<operator_name>`, `current_app = apps.default` and
    /// `remote_addr = 127.0.0.1`. The HTTP layer never calls this.
    pub fn operator_ctx(&self, cid: Cid, operator_name: &str) -> CallCtx {
        let mut ctx = CallCtx::new(cid, self.inner.cfg.apps.default.clone(), RemoteAddr::localhost());
        ctx.operator = Some(format!("cli:{operator_name}"));
        ctx
    }

    /// Runs one pass of the expiry cleanup (spec/sessions.md §5): expired sessions, user
    /// attributes, PRTs and counters, in batches of 1 000 until none are left. Returns how many
    /// rows went.
    pub async fn cleanup(&self) -> SsoResult<u64> {
        let s = &self.inner.stores;
        let now = self.inner.clock.now();
        let mut total = 0;
        loop {
            let n = s.sessions.delete_expired(now, 1000).await?
                + s.user_attrs.delete_expired(now, 1000).await?
                + s.session_attrs.delete_expired(now, 1000).await?
                + s.resets.delete_expired_prts(now, 1000).await?;
            total += n;
            if n == 0 {
                break;
            }
        }
        total += s.counters.delete_expired(now).await?;
        let retention = self.inner.cfg.audit.sql.retention_days;
        if retention > 0 {
            let cutoff = now.add_secs(-i64::try_from(retention.saturating_mul(86_400)).unwrap_or(i64::MAX));
            for sink in &self.inner.trail.sinks {
                match sink.purge_before(cutoff).await {
                    Ok(n) => total += n,
                    Err(e) => tracing::warn!(error = %e, "audit retention purge failed"),
                }
            }
        }
        Ok(total)
    }

    /// Checks every backend (health endpoint): users, sessions, counters.
    pub async fn health(&self) -> [(&'static str, bool); 3] {
        let s = &self.inner.stores;
        [
            ("users", s.users.ping().await.is_ok()),
            ("sessions", s.sessions.ping().await.is_ok()),
            ("counters", s.counters.ping().await.is_ok()),
        ]
    }
}

impl Inner {
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn audit(&self, ctx: &CallCtx, op: &'static str, kind: Kind) -> Audit {
        self.trail.start(ctx, op, kind, self.now())
    }

    /// Writes the record of a finished operation (unless already written) and applies the
    /// fail-closed rule for state changes outside a transaction.
    pub(crate) async fn finish<T>(&self, mut a: Audit, r: SsoResult<T>) -> SsoResult<T> {
        if a.done {
            return r;
        }
        Trail::set_outcome(&mut a, &r);
        if a.kind == Kind::Read && r.is_ok() {
            if !self.trail.include_reads {
                return r;
            }
            // G5: a successful read never waits for (or fails on) its record.
            match self.trail.enqueue_read(a.rec, a.now) {
                None => return r,
                Some(rec) => a.rec = rec,
            }
        }
        // A record no sink receives (an embedder with no audit sink) is counted, never stamped.
        let rec = if self.trail.sinks.is_empty() { &a.rec } else { a.stamped() };
        let written = self.trail.write(rec, false).await;
        match (written, r) {
            (Err(_), Ok(_)) if a.kind == Kind::Write && self.trail.fail_closed() => {
                tracing::error!(record = %a.rec.to_json_line(), "state changed but its audit record could not be written");
                Err(SsoError::Unavailable { backend: "audit" })
            }
            (_, r) => r,
        }
    }

    /// Marks the record as handled without writing it (throttle refusals after the first).
    pub(crate) fn skip(&self, a: &mut Audit) {
        a.done = true;
    }

    /// Commits a users-database transaction with its audit record: insert in the transaction when
    /// the SQL sink shares the database, write to the other required sinks, then commit
    /// (spec/audit.md §2 "Order of work").
    pub(crate) async fn commit(&self, mut tx: Box<dyn UserTx>, a: &mut Audit) -> SsoResult<()> {
        a.rec.set_result(Ok(a.warning));
        let in_tx = match tx.insert_audit(a.stamped()).await {
            Ok(b) => Some(b),
            Err(e) => {
                self.trail.counters.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(error = %e, "in-transaction audit insert failed");
                None
            }
        };
        let sinks_ok = match in_tx {
            Some(in_tx) => self.trail.write(&a.rec, in_tx).await.is_ok(),
            None => {
                // The co-located sql sink just failed; the other sinks still get the record.
                let _ = self.trail.write(&a.rec, true).await;
                false
            }
        };
        if !sinks_ok && self.trail.fail_closed() {
            drop(tx);
            self.audit_failed(a).await;
            return Err(SsoError::Unavailable { backend: "audit" });
        }
        if let Err(e) = self.commit_users(tx).await {
            let superseded = std::mem::replace(&mut a.rec.id, trail::new_ulid(self.now()));
            a.rec.set_result(Err((Code::E008004, Reason::StoreUnavailable)));
            a.detail("supersedes", superseded);
            let _ = self.trail.write(&a.rec, false).await;
            a.done = true;
            return Err(e.into());
        }
        a.done = true;
        Ok(())
    }

    async fn audit_failed(&self, a: &mut Audit) {
        a.rec.id = trail::new_ulid(self.now());
        a.rec.set_result(Err((Code::E008004, Reason::AuditFailed)));
        let _ = self.trail.write(&a.rec, false).await;
        a.done = true;
    }

    /// Commits a users-database transaction and empties this node's user cache, whatever the
    /// outcome (a failed commit may still have landed). Every commit goes through here.
    pub(crate) async fn commit_users(&self, tx: Box<dyn UserTx>) -> crate::store::StoreResult<()> {
        let committed = tx.commit().await;
        self.user_cache.invalidate();
        committed
    }

    /// Opens a users-database transaction.
    pub(crate) async fn begin(&self) -> SsoResult<Box<dyn UserTx>> {
        Ok(self.stores.users.begin().await.inspect_err(|_| inc(&self.metrics.store_errors))?)
    }

    // ----- flags and codes -------------------------------------------------------------------

    /// `code` when `flag`, else `E005001` (the flag-selected codes are shown on every endpoint).
    pub(crate) fn flagged(&self, flag: bool, code: Code, reason: Reason) -> SsoError {
        SsoError::code(if flag { code } else { Code::E005001 }, reason)
    }

    /// Step 1 of every operation: `current_app ∈ apps.all`.
    pub(crate) fn check_app(&self, ctx: &CallCtx) -> SsoResult<()> {
        if self.cfg.apps.all.iter().any(|a| a == &ctx.current_app) {
            Ok(())
        } else {
            Err(self.flagged(self.cfg.apps.inform_if_app_invalid, Code::E004001, Reason::AppInvalid))
        }
    }

    // ----- the session-validation pipeline (spec/concepts.md §5) -----------------------------

    /// Runs the pipeline for `ctx.current_ust` (or recognises the Operator) and returns the caller.
    /// `su`: the operation needs a super-user (step 11, `E005001`).
    pub(crate) async fn authenticate(&self, ctx: &CallCtx, a: &mut Audit, su: bool) -> SsoResult<Caller> {
        self.check_app(ctx)?;
        if let Some(op) = &ctx.operator {
            return Ok(Caller::Operator(op.clone()));
        }
        let now = a.now;
        let ust = ctx.current_ust.as_ref().ok_or_else(|| SsoError::code(Code::E007001, Reason::NoSuchSession))?;
        let (session, user) = self.resolve_session(ust, now).await?;
        a.rec.actor = user.user_id.as_str().to_owned().into();
        a.rec.actor_session_id = Some(session.session_id.as_str().to_owned());
        self.check_account(&user, &ctx.remote_addr, now, true)?;
        if su && !user.is_super_user {
            return Err(SsoError::not_allowed(Reason::NotSuperUser));
        }
        let mut session = session;
        if self.cfg.session.renew_on_use
            && let Some(new_exp) = self.renewed_expiration(&session, &user, now)
            && self.stores.sessions.extend(&session.session_id, new_exp).await?
        {
            let s = Arc::make_mut(&mut session);
            s.expiration_time = s.expiration_time.max(new_exp);
        }
        Ok(Caller::Session(Authn { user, session }))
    }

    /// Pipeline steps 2–5: syntax, record and hash, expiry, user and epoch. Every failure is
    /// `E007001`.
    pub(crate) async fn resolve_session(
        &self,
        ust: &Ust,
        now: Timestamp,
    ) -> SsoResult<(Arc<SessionRecord>, Arc<UserRecord>)> {
        let no_session = || SsoError::code(Code::E007001, Reason::NoSuchSession);
        let Some(sid) = ust.session_id() else {
            inc(&self.metrics.invalid_ust);
            return Err(no_session());
        };
        // One joined read when one database holds both — unless the user cache is on, which
        // makes the session alone the only read.
        let (session, user) = if self.joined_lookup && !self.user_cache.enabled() {
            match self.stores.sessions.get_with_user(&sid).await? {
                SessionLookup::Found(session, user) => (session, user),
                SessionLookup::NotFound => return Err(no_session()),
                SessionLookup::Unsupported => self.read_session_then_user(&sid, now).await?.ok_or_else(no_session)?,
            }
        } else {
            self.read_session_then_user(&sid, now).await?.ok_or_else(no_session)?
        };
        if !crate::crypto::digest::ct_eq(&session.ust_hash, &ust.hash()) {
            return Err(no_session());
        }
        if session.is_expired(now) {
            return Err(no_session());
        }
        if session.user_id != user.user_id {
            return Err(no_session());
        }
        if session.epoch != user.session_epoch {
            return Err(no_session());
        }
        Ok((session, user))
    }

    /// The session, then its user: from the per-node cache (`session.user_cache_ms`, when on)
    /// or a second read. Shared records where the store keeps them in memory.
    async fn read_session_then_user(
        &self,
        sid: &SessionId,
        now: Timestamp,
    ) -> SsoResult<Option<(Arc<SessionRecord>, Arc<UserRecord>)>> {
        let Some(session) = self.stores.sessions.get_shared(sid).await? else { return Ok(None) };
        if let Some(user) = self.user_cache.get(&session.user_id, now) {
            return Ok(Some((session, user)));
        }
        let ticket = self.user_cache.ticket();
        let Some(user) = self.stores.users.get_by_id_shared(&session.user_id).await? else { return Ok(None) };
        self.user_cache.put(ticket, &user, now);
        Ok(Some((session, user)))
    }

    /// Pipeline steps 6–10: address, lock, sign-up, approval and (when `expiry`) password expiry.
    pub(crate) fn check_account(
        &self,
        user: &UserRecord,
        remote: &RemoteAddr,
        now: Timestamp,
        expiry: bool,
    ) -> SsoResult<()> {
        if !self.address_allowed(&user.username, remote) {
            return Err(SsoError::not_allowed(Reason::AddressNotAllowed));
        }
        if user.is_locked {
            return Err(self.flagged(self.cfg.login.inform_if_locked, Code::E005002, Reason::Locked));
        }
        if user.sign_up_status != SignUpStatus::Final {
            return Err(self.flagged(self.cfg.login.inform_if_not_confirmed, Code::E005003, Reason::NotConfirmed));
        }
        if user.approval_status != ApprovalStatus::Approved {
            return Err(self.flagged(self.cfg.login.inform_if_not_approved, Code::E005004, Reason::NotApproved));
        }
        if expiry && user.password_expiry.is_some_and(|e| e <= now) {
            return Err(self.flagged(self.cfg.password.inform_if_expired, Code::E003004, Reason::PasswordExpired));
        }
        Ok(())
    }

    /// The address allow-list (spec/concepts.md §7).
    pub(crate) fn address_allowed(&self, username: &str, remote: &RemoteAddr) -> bool {
        match self.address_list.get(username) {
            Some(None) => true,
            Some(Some(nets)) => {
                let ip = remote.client();
                nets.iter().any(|n| n.contains(&ip))
            }
            None => !self.cfg.login.reject_if_not_listed,
        }
    }

    /// The idle lifetime for a new or renewed session.
    pub(crate) fn session_expiry(&self, app: &str, user: &UserRecord) -> Duration {
        self.expiry_policy
            .as_ref()
            .and_then(|p| p.expiry(app, &user.user_id, &user.username))
            .unwrap_or_else(|| Duration::from_secs(self.cfg.session.expiry.saturating_mul(60)))
    }

    /// `min(max(expiration, now + expiry), creation + max_lifetime)`, or `None` if unchanged.
    pub(crate) fn renewed_expiration(&self, s: &SessionRecord, user: &UserRecord, now: Timestamp) -> Option<Timestamp> {
        let mut exp = s.expiration_time.max(now.plus(self.session_expiry(&s.current_app, user)));
        if let Some(abs) = s.abs_expiration_time {
            exp = exp.min(abs);
        }
        (exp > s.expiration_time).then_some(exp)
    }

    // ----- revocation (spec/sessions.md §6) --------------------------------------------------

    /// After a committed epoch bump: keeps `keep` valid (sets its epoch) and deletes the other
    /// records. Failures are logged; they cannot revive a session (the epoch already moved).
    pub(crate) async fn revoke_after_commit(&self, user_id: &UserId, new_epoch: u64, keep: Option<&SessionId>) -> u64 {
        if let Some(k) = keep
            && let Err(e) = self.stores.sessions.set_epoch(k, new_epoch).await
        {
            tracing::warn!(error = %e, "could not carry the current session over a revoke-all");
        }
        match self.stores.sessions.delete_by_user(user_id, keep).await {
            Ok(n) => {
                metrics::add(&self.metrics.sessions_revoked, n);
                n
            }
            Err(e) => {
                inc(&self.metrics.store_errors);
                tracing::warn!(error = %e, "session records of a revoked user could not be deleted");
                0
            }
        }
    }

    /// The user's sessions valid at `now` under the current epoch.
    pub(crate) async fn live_sessions(&self, user: &UserRecord, now: Timestamp) -> SsoResult<Vec<SessionRecord>> {
        let mut v = self.stores.sessions.list_by_user(&user.user_id).await?;
        v.retain(|s| !s.is_expired(now) && s.epoch == user.session_epoch);
        Ok(v)
    }

    // ----- secrets at rest ---------------------------------------------------------------------

    pub(crate) fn encrypt_field(&self, user_id: &UserId, field: &str, plaintext: &str) -> SsoResult<String> {
        self.keys.encrypt(&aead::aad::user_field(user_id.as_str(), field), plaintext.as_bytes())
    }

    pub(crate) fn decrypt_field(&self, user_id: &UserId, field: &str, envelope: &str) -> SsoResult<Zeroizing<String>> {
        self.keys.decrypt_string(&aead::aad::user_field(user_id.as_str(), field), envelope)
    }

    /// The stored form of an e-mail: envelope (or plaintext) and blind index.
    pub(crate) fn store_email(&self, user_id: &UserId, email: &str) -> SsoResult<(String, String)> {
        let idx = self.keys.current().email_index(email);
        let stored =
            if self.cfg.crypto.encrypt_email { self.encrypt_field(user_id, "email", email)? } else { email.to_owned() };
        Ok((stored, idx))
    }

    /// The plaintext e-mail of a record.
    pub(crate) fn email_of(&self, u: &UserRecord) -> SsoResult<Option<String>> {
        match &u.email_enc {
            None => Ok(None),
            Some(e) if aead::is_envelope(e) => Ok(Some(self.decrypt_field(&u.user_id, "email", e)?.to_string())),
            Some(e) => Ok(Some(e.clone())),
        }
    }

    /// The stored form of a PHC string (encrypted when `crypto.encrypt_password`).
    pub(crate) fn store_password_hash(&self, user_id: &UserId, phc: &str) -> SsoResult<String> {
        if self.cfg.crypto.encrypt_password { self.encrypt_field(user_id, "password", phc) } else { Ok(phc.to_owned()) }
    }

    /// The PHC string of a record.
    pub(crate) fn password_hash_of(&self, u: &UserRecord) -> SsoResult<String> {
        if aead::is_envelope(&u.password_hash) {
            Ok(self.decrypt_field(&u.user_id, "password", &u.password_hash)?.to_string())
        } else {
            Ok(u.password_hash.clone())
        }
    }

    /// Hashes a new password into its stored form.
    pub(crate) async fn new_password_hash(&self, user_id: &UserId, password: &Password) -> SsoResult<String> {
        let phc = self.hasher.hash(password).await?;
        self.store_password_hash(user_id, &phc)
    }

    /// Verifies a password against a record; `Ok(None)` when wrong.
    pub(crate) async fn verify_password(&self, u: &UserRecord, password: &Password) -> SsoResult<Option<bool>> {
        let phc = self.password_hash_of(u)?;
        Ok(match self.hasher.verify(phc, password).await? {
            Verdict::Match { rehash } => Some(rehash),
            Verdict::Mismatch | Verdict::Unusable => None,
        })
    }

    /// Runs the dummy verification (same work as a real one) and discards the result.
    pub(crate) async fn verify_dummy(&self, password: &Password) -> SsoResult<()> {
        let _ = self.hasher.verify(self.dummy_hash.clone(), password).await?;
        Ok(())
    }

    /// Whether a stored hash should be upgraded to the configured argon2id parameters.
    pub(crate) fn needs_rehash(&self, u: &UserRecord) -> bool {
        self.password_hash_of(u).map(|phc| !pw::is_current(&phc, self.hasher.params())).unwrap_or(false)
    }

    // ----- views -----------------------------------------------------------------------------

    /// The view of `u`: the regular set, plus the super-user set when `admin`.
    pub(crate) fn view(&self, u: &UserRecord, admin: bool) -> SsoResult<UserView> {
        let label = self.decrypt_field(&u.user_id, "totp_label", &u.totp_label_enc)?;
        Ok(UserView {
            username: u.username.clone(),
            email: self.email_of(u)?,
            display_name: u.display_name.clone(),
            first_name: u.first_name.clone(),
            middle_name: u.middle_name.clone(),
            last_name: u.last_name.clone(),
            is_totp_enabled: u.is_totp_enabled,
            totp_label: label.to_string(),
            admin: admin.then(|| UserAdminView::of(u)),
        })
    }

    // ----- notifications -----------------------------------------------------------------------

    pub(crate) fn notify(&self, ctx: &CallCtx, kind: EventKind, u: &UserRecord, actor: Option<String>) {
        let email = self.email_of(u).ok().flatten();
        self.notifier.notify(Event {
            kind,
            ts: self.now(),
            cid: ctx.cid.to_string(),
            current_app: ctx.current_app.clone(),
            remote_addr: ctx.remote_addr.to_string(),
            user_id: u.user_id.clone(),
            username: u.username.clone(),
            email,
            actor,
            token: None,
            expiration_time: None,
        });
    }
}
