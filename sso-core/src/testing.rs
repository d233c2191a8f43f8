//! Test support (feature `conformance`): an `Sso` over given stores with an injected clock, an
//! in-memory audit sink and a collecting notifier, plus helpers for the common set-ups. Used by the
//! conformance suite, by this crate's tests and by backend crates.

// Test support: a failed fixture step is a failed test, so panicking is the right answer here.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use crate::audit::MemoryAuditSink;
use crate::config::Config;
use crate::crypto::totp;
use crate::ids::{Cid, RemoteAddr};
use crate::secret::{Password, SecretStr, TotpCode, TotpKey, Ust};
use crate::service::notify::CollectingNotifier;
use crate::service::views::SessionInfo;
use crate::service::{CallCtx, NewUser, Sso};
use crate::store::Stores;
use crate::time::{ManualClock, Timestamp};

/// A password every default policy accepts.
pub const PASSWORD: &str = "correct horse battery staple";

/// The start time of every fixture clock: 2100-01-01T00:00:00Z (a step boundary + 0 s). Far in
/// the future on purpose: the Redis session store sets key expiry (`PEXPIREAT`) from a record's
/// logical deadline, so a fixture clock behind the real one would let Redis drop a fresh test
/// session at once (a fixed start of 2026-11-27T10:00Z did exactly that to every Redis service
/// case once the real clock passed 11:00 that day).
pub const T0: i64 = 4_102_444_800;

/// An `Sso` with its observable parts.
pub struct Fixture {
    /// The instance.
    pub sso: Sso,
    /// Its clock (starts at [`T0`]).
    pub clock: ManualClock,
    /// Every audit record written.
    pub audit: Arc<MemoryAuditSink>,
    /// Every notification.
    pub notifier: Arc<CollectingNotifier>,
}

impl Fixture {
    /// A fixture over `stores` with `Config::for_tests()` changed by `tune`.
    pub async fn with(stores: Stores, tune: impl FnOnce(&mut Config)) -> Fixture {
        Self::with_clock(stores, ManualClock::new(Timestamp::from_secs(T0)), tune).await
    }

    /// As [`Fixture::with`] with a given clock (two instances can share one).
    pub async fn with_clock(stores: Stores, clock: ManualClock, tune: impl FnOnce(&mut Config)) -> Fixture {
        let mut cfg = Config::for_tests();
        tune(&mut cfg);
        let audit = Arc::new(MemoryAuditSink::new());
        let notifier = Arc::new(CollectingNotifier::default());
        let sso = Sso::builder(cfg, stores)
            .clock(Arc::new(clock.clone()))
            .audit_sink(audit.clone())
            .notifier(notifier.clone())
            .node_id("test")
            .inline_read_audit(true)
            .build()
            .await
            .unwrap_or_else(|e| panic!("fixture build failed: {e}"));
        Fixture { sso, clock, audit, notifier }
    }

    /// A fixture over fresh memory stores and the test configuration.
    pub async fn memory() -> Fixture {
        Self::with(crate::memory::stores(), |_| {}).await
    }

    /// A second instance over the same stores and key ring (another "node").
    pub async fn second_node(&self, stores: Stores) -> Fixture {
        let cfg = self.sso.config().clone();
        let audit = Arc::new(MemoryAuditSink::new());
        let notifier = Arc::new(CollectingNotifier::default());
        let ring = crate::crypto::aead::KeyRing::from_toml(&self.sso.key_ring().to_toml())
            .unwrap_or_else(|e| panic!("ring copy failed: {e}"));
        let sso = Sso::builder(cfg, stores)
            .clock(Arc::new(self.clock.clone()))
            .audit_sink(audit.clone())
            .notifier(notifier.clone())
            .key_ring(ring)
            .node_id("test-2")
            .build()
            .await
            .unwrap_or_else(|e| panic!("fixture build failed: {e}"));
        Fixture { sso, clock: self.clock.clone(), audit, notifier }
    }

    /// An anonymous context from 10.0.0.1 through `CRM`.
    pub fn anon(&self) -> CallCtx {
        anon_from("10.0.0.1")
    }

    /// A context carrying `ust`.
    pub fn as_user(&self, ust: &Ust) -> CallCtx {
        self.anon().with_ust(ust.clone())
    }

    /// The Operator (CLI) context.
    pub fn operator(&self) -> CallCtx {
        self.sso.operator_ctx(Cid::generate(), "tester@host")
    }

    /// Creates an approved user (through the Operator) and returns its id.
    pub async fn create_user(&self, username: &str, super_user: bool) -> crate::ids::UserId {
        let data = NewUser {
            username: Some(username.to_owned()),
            password: Some(Password::new(PASSWORD)),
            ..Default::default()
        };
        let ctx = self.operator();
        let view = if super_user {
            self.sso.user().create_super_user(&ctx, data).await
        } else {
            self.sso.user().create_user(&ctx, data, true).await
        }
        .unwrap_or_else(|e| panic!("create {username}: {e}"));
        view.admin.map(|a| a.user_id).unwrap_or_else(|| panic!("no admin view"))
    }

    /// Logs in with the fixture password (and an optional code).
    pub async fn login(&self, username: &str, code: Option<&str>) -> crate::SsoResult<SessionInfo> {
        let code = code.map(TotpCode::new);
        self.sso.user().login(&self.anon(), username, &Password::new(PASSWORD), None, code.as_ref()).await
    }

    /// Creates a user and logs in; returns (user id, UST).
    pub async fn user_with_session(&self, username: &str, super_user: bool) -> (crate::ids::UserId, Ust) {
        let id = self.create_user(username, super_user).await;
        let s = self.login(username, None).await.unwrap_or_else(|e| panic!("login {username}: {e}"));
        (id, s.ust)
    }

    /// The code of `key` at the fixture clock's current step (+ `offset` steps).
    pub fn code_now(&self, key: &TotpKey, offset: i64) -> String {
        let t = self.clock_secs();
        let step = totp::step_of(t).saturating_add_signed(offset);
        totp::code_for_step(key.expose_bytes(), step).to_string()
    }

    /// The fixture clock in Unix seconds.
    pub fn clock_secs(&self) -> u64 {
        use crate::time::Clock;
        u64::try_from(self.clock.now().as_secs()).unwrap_or(0)
    }

    /// The ops of the audit records so far, in order.
    pub fn ops(&self) -> Vec<String> {
        self.audit.records().into_iter().map(|r| r.op.into_owned()).collect()
    }
}

/// An anonymous context from `ip` through `CRM`.
pub fn anon_from(ip: &str) -> CallCtx {
    let addr = RemoteAddr::parse(ip).unwrap_or_else(RemoteAddr::localhost);
    CallCtx::new(Cid::generate(), "CRM", addr)
}

/// Whether any audit record, serialised, contains `needle`.
pub fn audit_contains(f: &Fixture, needle: &str) -> bool {
    f.audit.records().iter().any(|r| r.to_json_line().contains(needle))
}

/// A helper so tests can expose a UST's text in assertions.
pub fn ust_text(u: &Ust) -> String {
    u.expose().to_owned()
}
