//! The audit trail (spec/audit.md): one record per operation over a scenario, the query API, and
//! the fail-closed rule when a required sink fails.

use sso_core::audit::{AuditQuery, Outcome};
use sso_core::config::{OnFailure, SinkKind};
use sso_core::ids::Cid;
use sso_core::model::ApprovalStatus;
use sso_core::secret::{Password, SecretStr, TotpCode};
use sso_core::service::{AttrInput, AttrTarget, ChangePassword, ListTarget, NewUser, SearchCtx, SignupCtx, UserUpdate};
use sso_core::testing::{Fixture, PASSWORD};
use sso_core::time::NEVER;
use sso_core::{Code, SsoError};

use crate::common::*;

// ----- one record per operation ----------------------------------------------------------------

#[tokio::test]
async fn scenario_yields_the_expected_ordered_records() {
    let f = Fixture::memory().await;
    let (su, su_ust) = f.user_with_session("root-admin", true).await;
    let (bob, bob_ust) = f.user_with_session("bob", false).await;
    let sctx = f.as_user(&su_ust);
    f.audit.clear();
    // Sign-up, confirmation, approval.
    let data = SignupCtx {
        username: "alice".into(),
        password: Password::new(PASSWORD),
        email: Some("alice@example.com".into()),
        app_list: vec!["CRM".into()],
    };
    let token = f.sso.user().signup(&f.anon(), data).await.unwrap();
    f.sso.user().confirm_signup(&f.anon(), &token).await.unwrap();
    let alice = by_name(&f, "alice").await.unwrap().user_id;
    f.sso.user().approve_user(&sctx, alice.as_str()).await.unwrap();
    // Two failed logins, then a password login.
    for _ in 0..2 {
        assert_eq!(code(login_pw(&f, "alice", "wrong-password-x").await), Code::E005001);
    }
    let a1 = f.login("alice", None).await.unwrap().ust;
    // Own reset (generated key) and turning TOTP on.
    let key = f.sso.user().reset_totp_key(&f.as_user(&a1), None, None, None).await.unwrap().unwrap();
    let on = UserUpdate { is_totp_enabled: Some(Some(true)), ..Default::default() };
    f.sso.user().update_current_user(&f.as_user(&a1), on).await.unwrap();
    // TOTP login, then a replay of the same code.
    let c = f.code_now(&key, 0);
    f.login("alice", Some(&c)).await.unwrap();
    assert_eq!(code(f.login("alice", Some(&c)).await), Code::E005001);
    // Admin reset, a refused reset, logout.
    f.sso.user().reset_totp_key(&sctx, Some(&alice), Some(RFC_KEY), None).await.unwrap();
    assert_eq!(code(f.sso.user().reset_totp_key(&f.as_user(&bob_ust), Some(&alice), None, None).await), Code::E008002);
    f.sso.user().logout(&sctx).await.unwrap();

    let recs = f.audit.records();
    let got: Vec<(String, Outcome, Vec<String>)> =
        recs.iter().map(|r| (r.op.to_string(), r.outcome, r.sub_status.clone())).collect();
    let s = |op: &str, o: Outcome, sub: &[&str]| (op.to_owned(), o, sub.iter().map(|x| (*x).to_owned()).collect());
    let expected = vec![
        s("user.signup", Outcome::Success, &[]),
        s("user.confirm_signup", Outcome::Success, &[]),
        s("user.approve_user", Outcome::Success, &[]),
        s("user.login", Outcome::Denied, &["E005001"]),
        s("user.login", Outcome::Denied, &["E005001"]),
        s("user.login", Outcome::Success, &[]),
        s("user.reset_totp_key", Outcome::Success, &[]),
        s("user.update_current_user", Outcome::Success, &[]),
        s("user.login", Outcome::Success, &[]),
        s("user.login", Outcome::Denied, &["E005001"]),
        s("user.reset_totp_key", Outcome::Success, &[]),
        s("user.reset_totp_key", Outcome::Failure, &["E008002"]),
        s("user.logout", Outcome::Success, &[]),
    ];
    assert_eq!(got, expected);
    // Reasons, actors and targets.
    let reasons: Vec<Option<&str>> = recs.iter().map(|r| r.reason.as_deref()).collect();
    assert_eq!(reasons[3], Some("bad_password"));
    assert_eq!(reasons[9], Some("totp_replay"));
    assert_eq!(reasons[11], Some("not_owner"));
    assert!(reasons.iter().enumerate().all(|(i, r)| r.is_some() == [3, 4, 9, 11].contains(&i)));
    assert_eq!(recs[0].actor, "anonymous");
    assert_eq!(recs[0].target_user_id.as_deref(), Some(alice.as_str()));
    assert_eq!(recs[2].actor, su.as_str());
    assert_eq!(recs[3].target_user_id.as_deref(), Some(alice.as_str()), "the user when known");
    assert_eq!(recs[6].actor, alice.as_str());
    assert_eq!(recs[6].details["key_source"], "generated");
    assert_eq!(recs[8].details["totp"], true);
    assert_eq!(recs[10].details["key_source"], "supplied");
    assert_eq!(recs[10].details["sessions_revoked"], 2);
    assert_eq!(recs[11].actor, bob.as_str());
    assert_eq!(recs[12].actor_session_id.as_deref(), Some(su_ust.session_id().unwrap().as_str()));
    // Full field set; unique ids; no secret anywhere.
    let mut ids: Vec<&str> = recs.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), recs.len());
    for r in &recs {
        assert_eq!(r.id.len(), 26, "ULID");
        assert!(r.ts.ends_with('Z') && r.ts.contains('.'), "{}", r.ts);
        assert_eq!(&*r.node, "test");
        assert_eq!((r.current_app.as_str(), r.remote_addr.as_str()), ("CRM", "10.0.0.1"));
        assert_eq!(r.status, if r.outcome == Outcome::Success { "ok" } else { "error" });
        let back = sso_core::audit::AuditRecord::from_json_line(&r.to_json_line()).unwrap();
        assert_eq!(&back, r);
    }
    assert_no_secrets(
        &f,
        &[
            PASSWORD,
            "wrong-password-x",
            key.expose_base32(),
            RFC_KEY,
            &c,
            token.expose(),
            a1.expose(),
            su_ust.expose(),
            bob_ust.expose(),
            "alice@example.com",
        ],
    );
}

// ----- query -----------------------------------------------------------------------------------

#[tokio::test]
async fn query_is_for_super_users_with_filters_and_paging() {
    let f = Fixture::memory().await;
    let (su, su_ust) = f.user_with_session("root-admin", true).await;
    let (alice, a_ust) = f.user_with_session("alice", false).await;
    let sctx = f.as_user(&su_ust);
    // A regular user: E005001, audited.
    let e = f.sso.audit().query(&f.as_user(&a_ust), AuditQuery::default()).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E005001);
    assert_rec(&last(&f, "audit.query"), "audit.query", Outcome::Denied, &["E005001"]);
    assert_eq!(code(f.sso.audit().query(&f.anon(), AuditQuery::default()).await), Code::E007001);
    // Some traffic, one second apart, with known cids.
    let t_start = f.sso.now();
    let mut cids = Vec::new();
    for i in 0..5 {
        f.clock.advance(secs(1));
        let mut ctx = f.anon();
        ctx.cid = Cid::parse(&format!("cid-login-{i}")).unwrap();
        let pw = if i % 2 == 0 { PASSWORD } else { "wrong-password-x" };
        let _ = f.sso.user().login(&ctx, "alice", &Password::new(pw), None, None).await;
        cids.push(ctx.cid.to_string());
    }
    f.clock.advance(secs(1));
    let t_mid = f.sso.now();
    f.sso.user().lock_user(&sctx, alice.as_str()).await.unwrap();
    // cid
    let q = AuditQuery { cid: Some("cid-login-3".into()), ..Default::default() };
    let p = f.sso.audit().query(&sctx, q).await.unwrap();
    assert_eq!(p.records.len(), 1);
    assert_eq!(p.records[0].cid, "cid-login-3");
    assert_eq!(p.records[0].outcome, Outcome::Denied);
    assert!(p.next_before.is_none());
    // op + outcome
    let q = AuditQuery { op: Some("user.login".into()), outcome: Some(Outcome::Denied), ..Default::default() };
    assert_eq!(f.sso.audit().query(&sctx, q).await.unwrap().records.len(), 2);
    // user_id matches the actor or the target.
    let q = AuditQuery { user_id: Some(alice.to_string()), ..Default::default() };
    let p = f.sso.audit().query(&sctx, q).await.unwrap();
    assert!(p.records.iter().any(|r| r.op == "user.lock_user" && r.actor == su.as_str()), "as target");
    assert!(p.records.iter().any(|r| r.op == "audit.query" && r.actor == alice.as_str()), "as actor");
    assert!(p.records.iter().all(|r| r.actor == alice.as_str() || r.target_user_id.as_deref() == Some(alice.as_str())));
    // since / until (inclusive).
    let q = AuditQuery { since: Some(t_mid), ..Default::default() };
    let p = f.sso.audit().query(&sctx, q).await.unwrap();
    assert!(p.records.iter().any(|r| r.op == "user.lock_user"));
    assert!(p.records.iter().all(|r| r.timestamp().unwrap() >= t_mid));
    let q = AuditQuery {
        since: Some(t_start.add_secs(2)),
        until: Some(t_start.add_secs(4)),
        op: Some("user.login".into()),
        ..Default::default()
    };
    let p = f.sso.audit().query(&sctx, q).await.unwrap();
    let got: Vec<&str> = p.records.iter().map(|r| r.cid.as_str()).collect();
    assert_eq!(got, ["cid-login-3", "cid-login-2", "cid-login-1"], "newest first, bounds inclusive");
    // Paging with `before`.
    let q = AuditQuery { op: Some("user.login".into()), limit: 2, ..Default::default() };
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let p = f.sso.audit().query(&sctx, AuditQuery { before: before.clone(), ..q.clone() }).await.unwrap();
        assert!(p.records.len() <= 2);
        seen.extend(p.records.iter().map(|r| r.cid.clone()));
        match p.next_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    let logins_newest_first: Vec<String> = cids.iter().rev().cloned().collect();
    assert_eq!(&seen[..5], &logins_newest_first[..], "pages continue after `before`");
    assert_eq!(seen.len(), 7, "plus the two set-up logins");
    // The query itself is audited (filter names only) and a bad limit refused.
    let r = last(&f, "audit.query");
    assert_rec(&r, "audit.query", Outcome::Success, &[]);
    assert_eq!(r.details["filters"], serde_json::json!(["op", "before"]));
    let q = AuditQuery { limit: 1001, ..Default::default() };
    assert_eq!(code(f.sso.audit().query(&sctx, q).await), Code::E008002);
}

#[tokio::test]
async fn query_without_a_queryable_sink_gives_e008001() {
    let f = fixture(|c| {
        c.audit.sinks = vec![SinkKind::Stdout];
        c.audit.query_sink = "stdout".into();
    })
    .await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let e = f.sso.audit().query(&f.as_user(&su_ust), AuditQuery::default()).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E008001);
}

// ----- sink failure ----------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_required_sink_fails_state_changes_and_changes_nothing() {
    let f = Fixture::memory().await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let sctx = f.as_user(&su_ust);
    let (alice, a_ust) = f.user_with_session("alice", false).await;
    let actx = f.as_user(&a_ust);
    let pending = f
        .sso
        .user()
        .create_user(&f.operator(), NewUser { username: Some("pending".into()), ..Default::default() }, false)
        .await
        .unwrap();
    let pending = pending.admin.unwrap().user_id;
    let signup = SignupCtx {
        username: "carol".into(),
        password: Password::new(PASSWORD),
        email: Some("carol@example.com".into()),
        app_list: vec![],
    };
    let token = f.sso.user().signup(&f.anon(), signup).await.unwrap();
    let carol = by_name(&f, "carol").await.unwrap().user_id;
    let before_alice = record(&f, &alice).await;
    let before_carol = record(&f, &carol).await;
    let n_records = f.audit.records().len();
    f.audit.set_failing(true);
    let unavailable = |r: Result<(), SsoError>, what: &str| {
        assert_eq!(r.unwrap_err(), SsoError::Unavailable { backend: "audit" }, "{what}");
    };
    let new_user =
        NewUser { username: Some("dave".into()), password: Some(Password::new(PASSWORD)), ..Default::default() };
    unavailable(f.sso.user().create_user(&sctx, new_user.clone(), true).await.map(|_| ()), "create_user");
    unavailable(f.sso.user().create_super_user(&f.operator(), new_user).await.map(|_| ()), "create_super_user");
    let s2 = SignupCtx {
        username: "erin".into(),
        password: Password::new(PASSWORD),
        email: Some("erin@example.com".into()),
        app_list: vec![],
    };
    unavailable(f.sso.user().signup(&f.anon(), s2).await.map(|_| ()), "signup");
    unavailable(f.sso.user().confirm_signup(&f.anon(), &token).await, "confirm_signup");
    unavailable(f.sso.user().approve_user(&sctx, pending.as_str()).await, "approve_user");
    unavailable(f.sso.user().reject_user(&sctx, alice.as_str()).await, "reject_user");
    unavailable(f.sso.user().lock_user(&sctx, alice.as_str()).await, "lock_user");
    let upd = UserUpdate { display_name: Some(Some("Alice".into())), ..Default::default() };
    unavailable(f.sso.user().update_current_user(&actx, upd).await, "update_current_user");
    let cp = ChangePassword {
        user_id: None,
        old_password: Some(Password::new(PASSWORD)),
        new_password: Password::new("a new passphrase here"),
        password_expiry: None,
        must_change: None,
    };
    unavailable(f.sso.user().change_password(&actx, cp).await, "change_password");
    unavailable(f.sso.user().reset_totp_key(&sctx, Some(&alice), None, None).await.map(|_| ()), "reset_totp_key");
    unavailable(f.sso.user().create_linked_auth(&sctx, alice.as_str(), "jwt", "a", true).await.map(|_| ()), "link");
    unavailable(f.sso.session().logout_all(&sctx, Some(alice.as_str()), false).await.map(|_| ()), "logout_all");
    unavailable(f.sso.password_reset().create_token(&f.anon(), "alice").await, "create_token");
    unavailable(f.login("alice", None).await.map(|_| ()), "login");
    unavailable(f.sso.user().delete_user_by_id(&sctx, alice.as_str()).await, "delete_user_by_id");
    // Refusals keep their real answer.
    let bad = NewUser { username: Some("a b".into()), ..Default::default() };
    assert_eq!(code(f.sso.user().create_user(&sctx, bad, true).await), Code::E001004);
    // Reads still succeed.
    f.sso.user().get_current_user(&actx, true).await.unwrap();
    f.sso.user().get_user_by_id(&sctx, alice.as_str(), true).await.unwrap();
    f.sso.user().search(&sctx, SearchCtx::default()).await.unwrap();
    f.sso.session().get_list(&actx, ListTarget::Own).await.unwrap();
    f.sso.attr().get(&actx, AttrTarget::User(None), "x", true).await.unwrap();
    // Nothing changed, nothing recorded.
    f.audit.set_failing(false);
    assert_eq!(f.audit.records().len(), n_records);
    assert_eq!(record(&f, &alice).await, before_alice);
    assert_eq!(record(&f, &carol).await, before_carol);
    assert_eq!(record(&f, &pending).await.approval_status, ApprovalStatus::BeforeDecision);
    assert!(by_name(&f, "dave").await.is_none() && by_name(&f, "erin").await.is_none());
    assert!(f.notifier.events().iter().all(|e| e.kind != sso_core::service::notify::EventKind::PasswordReset));
    assert_eq!(f.sso.stores().resets.delete_expired_prts(NEVER, 1000).await.unwrap(), 0, "no PRT");
    assert!(f.sso.stores().links.get_link("jwt", "a").await.unwrap().is_none());
    assert_eq!(f.sso.stores().sessions.list_by_user(&alice).await.unwrap().len(), 1, "no new session, none revoked");
    f.sso.user().get_current_user(&actx, false).await.unwrap();
    login_pw(&f, "alice", PASSWORD).await.unwrap();
}

#[tokio::test]
async fn a_failing_sink_outside_transactions_still_answers_503() {
    // Sessions, attributes and counters have no transaction (spec/audit.md §2): the change may
    // stay, but the caller never sees success.
    let f = Fixture::memory().await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let ctx = f.as_user(&ust);
    f.audit.set_failing(true);
    let r = f.sso.attr().set(&ctx, AttrTarget::User(None), AttrInput::new("k", 1.into())).await;
    assert_eq!(r.unwrap_err(), SsoError::Unavailable { backend: "audit" });
    let r = f.sso.session().renew(&ctx).await;
    assert_eq!(r.unwrap_err(), SsoError::Unavailable { backend: "audit" });
    let r = f.sso.user().logout(&ctx).await;
    assert_eq!(r.unwrap_err(), SsoError::Unavailable { backend: "audit" });
    let c = TotpCode::new("123456");
    let r =
        f.sso.totp().validate_code(&f.anon(), Some(&c), sso_core::service::TotpTarget::UserId(alice.to_string())).await;
    assert!(r.is_err());
}

#[tokio::test]
async fn on_failure_log_lets_operations_succeed() {
    let f = fixture(|c| c.audit.on_failure = OnFailure::Log).await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let sctx = f.as_user(&su_ust);
    f.audit.set_failing(true);
    let data = NewUser { username: Some("dave".into()), password: Some(Password::new(PASSWORD)), ..Default::default() };
    let dave = f.sso.user().create_user(&sctx, data, true).await.unwrap().admin.unwrap().user_id;
    let s = f.login("dave", None).await.unwrap();
    f.sso.user().lock_user(&sctx, dave.as_str()).await.unwrap();
    assert!(record(&f, &dave).await.is_locked);
    assert_eq!(code(f.sso.user().get_current_user(&f.as_user(&s.ust), false).await), Code::E007001);
    f.sso.password_reset().create_token(&f.anon(), "dave").await.unwrap();
    assert!(f.sso.render_metrics().lines().any(|l| l.starts_with("sso_audit_failures_total ") && !l.ends_with(" 0")));
    f.audit.set_failing(false);
    assert!(f.audit.records().iter().all(|r| r.op != "user.lock_user"), "nothing reached the failing sink");
}

// ----- G5: successful reads through a bounded queue --------------------------------------------

mod read_queue {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use sso_core::Sso;
    use sso_core::audit::{AuditError, AuditRecord, AuditSink};
    use sso_core::config::Config;
    use sso_core::ids::{Cid, RemoteAddr};
    use sso_core::secret::Password;
    use sso_core::service::NewUser;
    use sso_core::testing::PASSWORD;
    use sso_core::{CallCtx, SsoError};

    /// A required sink that blocks while `held`, or fails while `failing`, counting what it wrote.
    #[derive(Default)]
    struct GateSink {
        held: AtomicBool,
        failing: AtomicBool,
        written: AtomicU64,
    }

    #[async_trait::async_trait]
    impl AuditSink for GateSink {
        fn name(&self) -> &str {
            "gate"
        }
        fn required(&self) -> bool {
            true
        }
        async fn write(&self, _: &AuditRecord) -> Result<(), AuditError> {
            while self.held.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err(AuditError { sink: "gate".into(), detail: "failing".into() });
            }
            self.written.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// An `Sso` auditing into `sink`, with user `reader` logged in: the caller's context and UST.
    async fn world(sink: Arc<dyn AuditSink>) -> (Sso, CallCtx, sso_core::secret::Ust) {
        let sso = Sso::builder(Config::for_tests(), sso_core::memory::stores()).audit_sink(sink).build().await.unwrap();
        let op = sso.operator_ctx(Cid::generate(), "t");
        let data =
            NewUser { username: Some("reader".into()), password: Some(Password::new(PASSWORD)), ..Default::default() };
        sso.user().create_user(&op, data, true).await.unwrap();
        let anon = CallCtx::new(Cid::generate(), sso.config().apps.default.clone(), RemoteAddr::localhost());
        let s = sso.user().login(&anon, "reader", &Password::new(PASSWORD), None, None).await.unwrap();
        let mut ctx = anon.clone();
        ctx.current_ust = Some(s.ust.clone());
        (sso, ctx, s.ust)
    }

    fn metric(sso: &Sso, name: &str) -> u64 {
        sso.render_metrics()
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(u64::MAX)
    }

    /// A read returns before its record is written; the record follows; a flush waits for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_do_not_wait_for_their_record() {
        let sink = Arc::new(GateSink::default());
        let (sso, ctx, ust) = world(sink.clone()).await;
        let before = sink.written.load(Ordering::SeqCst);
        sink.held.store(true, Ordering::SeqCst);
        // The sink blocks: the read still answers at once.
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), sso.session().verify(&ctx, &ust)).await;
        assert!(r.unwrap().unwrap(), "verify answered while the sink was blocked");
        sink.held.store(false, Ordering::SeqCst);
        sso.flush_audit().await;
        assert_eq!(sink.written.load(Ordering::SeqCst), before + 1, "the read's record was written after it");
    }

    /// A queued read's record gets its id and time in the background writer: a ULID of the
    /// call's millisecond and the call's time, like every other record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_read_records_are_stamped_with_the_call_time() {
        let sink = Arc::new(sso_core::audit::MemoryAuditSink::new());
        let (sso, ctx, ust) = world(sink.clone()).await;
        let before = sso_core::time::Clock::now(&sso_core::time::SystemClock);
        assert!(sso.session().verify(&ctx, &ust).await.unwrap());
        let after = sso_core::time::Clock::now(&sso_core::time::SystemClock);
        sso.flush_audit().await;
        let records = sink.records();
        let rec = records.iter().rev().find(|r| r.op == "session.verify").expect("the verify's record");
        let ts = rec.timestamp().expect("an RFC 3339 time");
        assert!(before <= ts && ts <= after, "the call's time");
        let id: ulid::Ulid = rec.id.parse().expect("a ULID");
        assert_eq!(id.timestamp_ms() as i64, ts.as_millis(), "the id's millisecond is the record's");
        let login = records.iter().find(|r| r.op == "user.login").expect("the login's record");
        assert!(login.id < rec.id, "ids sort in issue order");
    }

    /// A failing required sink fails writes but never a read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_sink_never_fails_a_read() {
        let sink = Arc::new(GateSink::default());
        let (sso, ctx, ust) = world(sink.clone()).await;
        sink.failing.store(true, Ordering::SeqCst);
        assert!(sso.session().verify(&ctx, &ust).await.unwrap());
        let op = sso.operator_ctx(Cid::generate(), "t");
        let err = sso.user().lock_user(&op, "zusr0000000000000000000000").await.unwrap_err();
        assert!(matches!(err, SsoError::Validation { .. } | SsoError::Unavailable { .. }));
        sso.flush_audit().await;
        assert!(metric(&sso, "sso_audit_failures_total") >= 1);
    }

    /// Overflow drops records (counted in `sso_audit_dropped_total`), never blocks the call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overflow_drops_and_counts() {
        let sink = Arc::new(GateSink::default());
        let (sso, ctx, ust) = world(sink.clone()).await;
        sink.held.store(true, Ordering::SeqCst);
        let n = 10_000 + 500;
        for _ in 0..n {
            assert!(sso.session().verify(&ctx, &ust).await.unwrap());
        }
        let dropped = metric(&sso, "sso_audit_dropped_total");
        // The queue holds 10 000; the writer, blocked in the sink, holds the one batch it took
        // before blocking (at most 256 records: how many depends on how fast the reads came).
        assert!((500 - 256..=500).contains(&dropped), "dropped {dropped}");
        sink.held.store(false, Ordering::SeqCst);
        sso.flush_audit().await;
    }
}
