//! The example sinks plugged into a real `Sso` over the memory stores: records arrive with the right
//! ops and no secret; a full or closed channel fails state changes closed (and changes nothing)
//! when the sink is required, and does not when it is optional or `audit.on_failure = "log"`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use sso_core::audit::{AuditRecord, AuditSink, Outcome};
use sso_core::config::{Config, OnFailure};
use sso_core::ids::{Cid, RemoteAddr, UserId};
use sso_core::secret::{Password, SecretStr, Ust};
use sso_core::service::NewUser;
use sso_core::{CallCtx, Code, Sso, SsoError, SsoResult};
use sso_example_custom_audit_sink::ChannelSink;
use tokio::sync::mpsc;

const PASSWORD: &str = "correct horse battery staple";
const WRONG: &str = "not the right password";

async fn sso_with(sink: impl AuditSink + 'static, tune: impl FnOnce(&mut Config)) -> Sso {
    let mut cfg = Config::for_tests();
    tune(&mut cfg);
    Sso::builder(cfg, sso_core::memory::stores()).audit_sink(Arc::new(sink)).node_id("example").build().await.unwrap()
}

fn anon() -> CallCtx {
    CallCtx::new(Cid::generate(), "CRM", RemoteAddr::parse("192.0.2.1").unwrap())
}

fn operator(sso: &Sso) -> CallCtx {
    sso.operator_ctx(Cid::generate(), "example@host")
}

async fn create(sso: &Sso, name: &str) -> SsoResult<UserId> {
    let data = NewUser { username: Some(name.into()), password: Some(Password::new(PASSWORD)), ..Default::default() };
    Ok(sso.user().create_user(&operator(sso), data, true).await?.admin.unwrap().user_id)
}

async fn login(sso: &Sso, name: &str) -> SsoResult<Ust> {
    Ok(sso.user().login(&anon(), name, &Password::new(PASSWORD), None, None).await?.ust)
}

fn drain(rx: &mut mpsc::Receiver<String>) -> Vec<String> {
    let mut v = Vec::new();
    while let Ok(line) = rx.try_recv() {
        v.push(line);
    }
    v
}

fn unavailable<T: std::fmt::Debug>(r: SsoResult<T>) {
    assert_eq!(r.unwrap_err(), SsoError::Unavailable { backend: "audit" });
}

#[tokio::test]
async fn records_arrive_as_json_lines_with_the_right_ops_and_no_secret() {
    let (sink, mut rx) = ChannelSink::new(64);
    let sso = sso_with(sink, |_| {}).await;
    let alice = create(&sso, "alice").await.unwrap();
    let ust = login(&sso, "alice").await.unwrap();
    let refused = sso.user().login(&anon(), "alice", &Password::new(WRONG), None, None).await;
    assert_eq!(refused.unwrap_err().real_code(), Code::E005001);
    let ctx = anon().with_ust(ust.clone());
    let key = sso.user().reset_totp_key(&ctx, None, None, Some("Alice phone")).await.unwrap().unwrap();

    let lines = drain(&mut rx);
    let recs: Vec<AuditRecord> = lines.iter().map(|l| AuditRecord::from_json_line(l).unwrap()).collect();
    let ops: Vec<(&str, Outcome)> = recs.iter().map(|r| (r.op.as_ref(), r.outcome)).collect();
    assert_eq!(
        ops,
        [
            ("user.create_user", Outcome::Success),
            ("user.login", Outcome::Success),
            ("user.login", Outcome::Denied),
            ("user.reset_totp_key", Outcome::Success),
        ]
    );
    assert!(recs.iter().all(|r| &*r.node == "example" && r.target_user_id.as_deref() == Some(alice.as_str())));
    assert_eq!(recs[0].actor, "cli:example@host");
    assert_eq!(recs[2].reason.as_deref(), Some("bad_password"));
    assert_eq!(recs[3].actor, alice.as_str());
    assert_eq!(recs[3].details["key_source"], "generated");
    for line in &lines {
        assert!(!line.contains('\n'), "one line per record");
        for secret in [PASSWORD, WRONG, ust.expose(), key.expose_base32(), "Alice phone"] {
            assert!(!line.contains(secret), "a secret leaked into {line}");
        }
    }
}

#[tokio::test]
async fn a_full_required_channel_fails_state_changes_and_changes_nothing() {
    let (sink, mut rx) = ChannelSink::new(2);
    let sso = sso_with(sink, |_| {}).await;
    let alice = create(&sso, "alice").await.unwrap();
    let ust = login(&sso, "alice").await.unwrap();
    // The channel (2 slots) is now full.
    let before = sso.stores().users.get_by_id(&alice).await.unwrap().unwrap();
    let ctx = anon().with_ust(ust.clone());
    unavailable(sso.user().reset_totp_key(&ctx, None, None, None).await);
    unavailable(create(&sso, "bob").await);
    unavailable(login(&sso, "alice").await);
    unavailable(sso.user().lock_user(&operator(&sso), alice.as_str()).await);
    // Nothing changed: same key, no bob, no new session, not locked.
    assert_eq!(sso.stores().users.get_by_id(&alice).await.unwrap().unwrap(), before);
    assert!(sso.stores().users.get_by_username("bob").await.unwrap().is_none());
    assert_eq!(sso.stores().sessions.list_by_user(&alice).await.unwrap().len(), 1);
    // A refusal is still answered with its real code (nothing changed).
    let refused = sso.user().login(&anon(), "alice", &Password::new(WRONG), None, None).await;
    assert_eq!(refused.unwrap_err().real_code(), Code::E005001);
    // Once the consumer catches up, the same calls succeed.
    assert_eq!(drain(&mut rx).len(), 2);
    assert!(sso.user().reset_totp_key(&ctx, None, None, None).await.unwrap().is_some());
    let ops: Vec<String> =
        drain(&mut rx).iter().map(|l| AuditRecord::from_json_line(l).unwrap().op.into_owned()).collect();
    assert_eq!(ops, ["user.reset_totp_key"]);
}

#[tokio::test]
async fn a_closed_required_channel_fails_state_changes_and_changes_nothing() {
    let (sink, rx) = ChannelSink::new(16);
    let sso = sso_with(sink, |_| {}).await;
    let alice = create(&sso, "alice").await.unwrap();
    let ust = login(&sso, "alice").await.unwrap();
    drop(rx);
    let before = sso.stores().users.get_by_id(&alice).await.unwrap().unwrap();
    let ctx = anon().with_ust(ust);
    unavailable(sso.user().reset_totp_key(&ctx, None, Some("JBSWY3DPEHPK3PXP"), None).await);
    unavailable(create(&sso, "bob").await);
    unavailable(login(&sso, "alice").await);
    assert_eq!(sso.stores().users.get_by_id(&alice).await.unwrap().unwrap(), before);
    assert!(sso.stores().users.get_by_username("bob").await.unwrap().is_none());
    assert_eq!(sso.stores().sessions.list_by_user(&alice).await.unwrap().len(), 1);
}

#[tokio::test]
async fn with_on_failure_log_a_closed_channel_does_not_block_operations() {
    let (sink, rx) = ChannelSink::new(16);
    let sso = sso_with(sink, |c| c.audit.on_failure = OnFailure::Log).await;
    drop(rx);
    let alice = create(&sso, "alice").await.unwrap();
    let ust = login(&sso, "alice").await.unwrap();
    let key = sso.user().reset_totp_key(&anon().with_ust(ust), None, None, None).await.unwrap();
    assert!(key.is_some());
    assert!(sso.stores().users.get_by_id(&alice).await.unwrap().is_some());
    let failures = sso.render_metrics();
    assert!(failures.lines().any(|l| l.starts_with("sso_audit_failures_total ") && !l.ends_with(" 0")), "{failures}");
}

#[tokio::test]
async fn an_optional_sink_never_fails_an_operation() {
    let (sink, mut rx) = ChannelSink::new(1);
    let sink = sink.with_required(false).with_name("best-effort");
    assert!(!sink.required());
    assert_eq!(sink.name(), "best-effort");
    let sso = sso_with(sink, |_| {}).await;
    create(&sso, "alice").await.unwrap();
    // Full from here on: records are dropped, operations go on.
    let ust = login(&sso, "alice").await.unwrap();
    sso.user().reset_totp_key(&anon().with_ust(ust), None, None, None).await.unwrap();
    assert_eq!(drain(&mut rx).len(), 1);
}

#[tokio::test]
async fn a_send_timeout_waits_for_room() {
    let (sink, mut rx) = ChannelSink::new(1);
    let sso = sso_with(sink.with_send_timeout(Duration::from_secs(5)), |_| {}).await;
    create(&sso, "alice").await.unwrap();
    // The channel is full; a consumer frees it shortly after the next write starts waiting.
    let consumer = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 2 {
            got.push(rx.recv().await.unwrap());
        }
        got
    });
    login(&sso, "alice").await.unwrap();
    let got = consumer.await.unwrap();
    let ops: Vec<String> = got.iter().map(|l| AuditRecord::from_json_line(l).unwrap().op.into_owned()).collect();
    assert_eq!(ops, ["user.create_user", "user.login"]);

    // Nobody drains: the write gives up after the timeout and the change is refused.
    let (sink, _rx) = ChannelSink::new(1);
    let sso = sso_with(sink.with_send_timeout(Duration::from_millis(50)), |_| {}).await;
    create(&sso, "alice").await.unwrap();
    unavailable(create(&sso, "bob").await);
    assert!(sso.stores().users.get_by_username("bob").await.unwrap().is_none());
}

#[cfg(unix)]
mod syslog {
    use sso_example_custom_audit_sink::SyslogSink;
    use tokio::net::UnixDatagram;

    use super::*;

    async fn recv(sock: &UnixDatagram) -> String {
        let mut buf = vec![0u8; 256 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf)).await.unwrap().unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    /// Splits `<PRI>1 TS HOST APP PROCID MSGID - \u{FEFF}MSG` into its header fields and message.
    fn parse(datagram: &str) -> (Vec<String>, AuditRecord) {
        let (header, msg) = datagram.split_once(" - \u{FEFF}").unwrap();
        let fields = header.split(' ').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(fields.len(), 6, "{header}");
        (fields, AuditRecord::from_json_line(msg).unwrap())
    }

    #[tokio::test]
    async fn records_arrive_as_rfc5424_datagrams_and_a_missing_socket_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let sso = sso_with(SyslogSink::new(&path).with_app_name("sso example"), |_| {}).await;
        let alice = create(&sso, "alice").await.unwrap();
        let ust = login(&sso, "alice").await.unwrap();
        let refused = sso.user().login(&anon(), "alice", &Password::new(WRONG), None, None).await;
        assert!(refused.is_err());
        let pid = std::process::id().to_string();
        for (pri, op, outcome) in [
            ("<86>1", "user.create_user", Outcome::Success),
            ("<86>1", "user.login", Outcome::Success),
            ("<85>1", "user.login", Outcome::Denied),
        ] {
            let datagram = recv(&server).await;
            for secret in [PASSWORD, WRONG, ust.expose()] {
                assert!(!datagram.contains(secret), "a secret leaked into {datagram}");
            }
            let (h, rec) = parse(&datagram);
            assert_eq!(h[0], pri, "authpriv (10) × 8 + severity");
            assert_eq!(h[1], rec.ts);
            assert!(h[1].ends_with('Z'));
            assert_eq!(
                (h[2].as_str(), h[3].as_str(), h[4].as_str(), h[5].as_str()),
                ("example", "ssoexample", pid.as_str(), op)
            );
            assert_eq!((rec.op.as_ref(), rec.outcome), (op, outcome));
            assert_eq!(rec.target_user_id.as_deref(), Some(alice.as_str()));
        }
        // The receiver goes away: a required sink fails state changes closed.
        drop(server);
        std::fs::remove_file(&path).unwrap();
        unavailable(create(&sso, "bob").await);
        assert!(sso.stores().users.get_by_username("bob").await.unwrap().is_none());
        // …and an optional one does not.
        let sso = sso_with(SyslogSink::new(&path).with_required(false), |_| {}).await;
        create(&sso, "bob").await.unwrap();
    }
}
