//! spec/security.md as a checklist, HTTP side: one `sec_NN_<slug>` test per numbered item about the
//! HTTP surface, the `sso` binary and its files (#4's "no time field" half, #13, #18, #20, #24,
//! #30, #41, #45, #48, #49, #62, #72, #74, #75, #79–#83). The core items are in
//! `sso-core/tests/it/security.rs`.
//!
//! Most tests drive the real `sso` binary on SQLite through the harness of `tests/common`; #72
//! serves the real router in-process over stores with a failpoint (a binary cannot be made to lose
//! its database or panic on demand), and #4 and #81 need no running server.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};
use sso_core::config::Config;
use sso_core::crypto::aead::KeyRing;
use sso_core::crypto::totp;
use sso_core::ids::{Cid, UserId};
use sso_core::model::{UserQuery, UserRecord};
use sso_core::secret::{Password, TotpCode};
use sso_core::service::{NewUser, TotpTarget};
use sso_core::store::{EnvelopeField, Stores, UserStore, UserTx};
use sso_core::testing::Fixture;
use sso_core::time::Timestamp;
use sso_core::{Code, Sso, StoreError};

use crate::common::{BIN, PASSWORD, Server, cli, code, free_port, fresh, write_config};

const BOB_PW: &str = "a fine passphrase for tests";

/// The body without its `cid` (two answers that differ only there are "identical but for `cid`").
fn without_cid(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        assert!(m.remove("cid").is_some_and(|c| c.is_string()), "no cid in {v:?}");
    }
    v
}

/// Creates a user through the API (as the super-user `su`) and returns its id.
async fn create(s: &Server, su: &str, username: &str, extra: Value) -> String {
    let mut body = json!({"ust": su, "username": username, "password": BOB_PW, "auto_approve": true});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let r = s.call(Method::POST, "/user", body).await;
    assert_eq!(r.status, 200, "create {username}: {}", r.body);
    r.s("user_id")
}

/// Every record of the JSON-lines audit file of a server directory.
fn audit_file(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A code of `key` that is none of the codes the window could accept around now.
fn wrong_code_for(key: &str) -> String {
    let near: Vec<String> = (-2..=2).map(|o| code(key, o)).collect();
    ["000000", "000001", "000002", "000003", "000004", "000005"]
        .into_iter()
        .find(|c| !near.iter().any(|n| n == c))
        .unwrap()
        .to_owned()
}

/// Runs `sso serve` in `dir`, expecting it to exit by itself within 20 s; returns the exit code
/// and standard error.
fn serve_expecting_exit(dir: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (status.code(), String::from_utf8_lossy(&out.stderr).into_owned());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sso serve kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a request that announces `body` (Content-Length) but stops writing a little past the
/// server's 64 KiB limit, then reads the answer: the deterministic form of "a 2 MiB body" (a client
/// still writing megabytes when the server answers early and closes races with the TCP reset).
async fn oversized(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, std::collections::HashMap<String, String>, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         X-Zato-SSO-Current-App: CRM\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let sent = body.len().min(64 * 1024 + 4096);
    tcp.write_all(&body[..sent]).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response: {text:?}"));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, serde_json::from_str(rest.trim()).unwrap_or(Value::String(rest.to_owned())))
}

/// The admin's UST.
async fn admin_ust(s: &Server) -> String {
    s.ust("admin", PASSWORD).await
}

// ===== A. TOTP algorithm ========================================================================

/// security.md #4: "Exact step boundaries; server clock only"
///
/// Injected clock t = 29/30/59/60 → T = 0/1/1/2 (the core verifier, driven here with the injected clock), and no
/// request type has a time field: no route of the table reads one that could reach the verifier.
#[tokio::test]
async fn sec_04_exact_step_boundaries_server_clock_only() {
    assert_eq!([29, 30, 59, 60].map(totp::step_of), [0, 1, 1, 2]);
    let f = Fixture::with(sso_core::memory::stores(), |c| {
        c.totp.window_back = 0;
        c.totp.allow_reuse = true;
    })
    .await;
    let alice = f.create_user("alice", false).await;
    let rfc = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    f.sso.user().reset_totp_key(&f.operator(), Some(&alice), Some(rfc), None).await.unwrap();
    // Codes of steps 0, 1 and 2 of the RFC key: 755224, 287082, 359152.
    for (t, accepted, refused) in
        [(29, "755224", "287082"), (30, "287082", "755224"), (59, "287082", "359152"), (60, "359152", "287082")]
    {
        f.clock.set(Timestamp::from_secs(t));
        let target = || TotpTarget::UserId(alice.to_string());
        f.sso
            .totp()
            .validate_code(&f.anon(), Some(&TotpCode::new(accepted)), target())
            .await
            .unwrap_or_else(|e| panic!("t={t}: {e}"));
        let r = f.sso.totp().validate_code(&f.anon(), Some(&TotpCode::new(refused)), target()).await;
        assert!(r.unwrap_err().is_code(Code::E005001), "t={t}: {refused} is another step");
    }
    // No request field carries a time to the verifier.
    let time_like = |f: &str| {
        let f = f.to_ascii_lowercase();
        ["time", "timestamp", "ts", "now", "t", "step", "counter", "clock", "epoch"].contains(&f.as_str())
            || f.contains("time")
            || f.contains("since")
            || f.contains("until")
            || f.contains("expir")
    };
    let routes = sso_http::api::routes();
    let mut totp_routes = 0;
    for def in &routes {
        // `password_expiry` is the password's own expiry date (set by a super-user), not a time
        // the verifier could read.
        if def.fields.contains(&"password_expiry") {
            assert!(["/user", "/user/password"].contains(&def.path), "{}", def.path);
        }
        let found: Vec<&&str> = def.fields.iter().filter(|f| time_like(f) && **f != "password_expiry").collect();
        if def.fields.contains(&"totp_code") {
            totp_routes += 1;
            assert!(found.is_empty(), "{} verifies codes and reads a time field: {found:?}", def.path);
        }
        for f in found {
            let allowed = (def.path == "/audit" && ["since", "until"].contains(f))
                || (def.path.contains("/attr") && *f == "expiration");
            assert!(allowed, "{} reads a time-like field {f}", def.path);
        }
    }
    assert_eq!(totp_routes, 3, "login, update user (enable TOTP), totp/validate");
}

// ===== B. TOTP verifier =========================================================================

/// security.md #13: "Replay indistinguishable from a wrong code"
///
/// The bodies are identical but for `cid`; the audit reasons are `totp_replay` / `totp_invalid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_13_replay_indistinguishable_from_a_wrong_code() {
    let (dir, _admin, s, _hooks) = fresh("").await;
    let su = admin_ust(&s).await;
    let key = s.call(Method::PATCH, "/user/totp", json!({"ust": su})).await.s("totp_key");
    assert_eq!(s.call(Method::PATCH, "/user", json!({"ust": su, "is_totp_enabled": true})).await.status, 200);
    let good = code(&key, 0);
    assert_eq!(s.login("admin", PASSWORD, Some(&good)).await.status, 200);
    let replay = s.login("admin", PASSWORD, Some(&good)).await;
    let wrong = s.login("admin", PASSWORD, Some(&wrong_code_for(&key))).await;
    assert_eq!((replay.status, wrong.status), (403, 403));
    assert_eq!(without_cid(&replay.body), without_cid(&wrong.body));
    assert_eq!(without_cid(&replay.body), json!({"status": "error", "sub_status": ["E005001"]}));
    assert_ne!(replay.body["cid"], wrong.body["cid"]);
    assert_eq!(replay.headers.get("retry-after"), wrong.headers.get("retry-after"));
    let reasons: Vec<Value> = audit_file(dir.path())
        .into_iter()
        .filter(|r| r["op"] == "user.login" && r["outcome"] == "denied")
        .map(|r| r["reason"].clone())
        .collect();
    assert_eq!(reasons, [json!("totp_replay"), json!("totp_invalid")]);
}

/// security.md #18: "Key shown only when generated"
///
/// A supplied-key reset → no `totp_key`/`totp_uri`; generated → present, `no-store`; reads, search and lists never
/// show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_18_key_shown_only_when_generated() {
    let (_dir, _admin, s, _hooks) = fresh("").await;
    let su = admin_ust(&s).await;
    let bob = create(&s, &su, "bob", json!({})).await;
    let r =
        s.call(Method::PATCH, "/user/totp", json!({"ust": su, "user_id": bob, "totp_key": "KMCLCWN4YPMD2WO3"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(without_cid(&r.body), json!({"status": "ok"}), "a supplied key is never echoed");
    let r = s.call(Method::PATCH, "/user/totp", json!({"ust": su})).await;
    assert_eq!(r.status, 200);
    let key = r.s("totp_key");
    assert!(r.s("totp_uri").contains(&format!("secret={key}")));
    assert_eq!(r.headers["cache-control"], "no-store");
    let r = s.call(Method::PATCH, "/user/totp", json!({"ust": su, "user_id": bob})).await;
    let bob_key = r.s("totp_key");
    let bob_ust = s.ust("bob", BOB_PW).await;
    let bearer = [("authorization", format!("Bearer {su}")), ("x-zato-sso-current-app", "CRM".to_owned())];
    let headers: Vec<(&str, &str)> = bearer.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut reads = vec![
        s.call(Method::GET, "/user", json!({"ust": su})).await,
        s.call(Method::GET, "/user", json!({"ust": su, "user_id": bob})).await,
        s.call(Method::GET, "/user", json!({"ust": bob_ust})).await,
        s.call(Method::GET, "/user/search", json!({"ust": su})).await,
        s.call(Method::GET, "/user/session/list", json!({"ust": su})).await,
        s.call(Method::GET, "/user/linked", json!({"ust": su, "user_id": bob})).await,
        s.call(Method::GET, "/audit", json!({"ust": su, "limit": 1000})).await,
    ];
    reads.push(s.raw(Method::GET, "/zato/sso/user/search?username=bob", vec![], &headers).await);
    for r in &reads {
        assert_eq!(r.status, 200, "{}", r.body);
        let text = r.body.to_string();
        for k in [&key, &bob_key, &"KMCLCWN4YPMD2WO3".to_owned()] {
            assert!(!text.contains(k.as_str()), "a read showed a TOTP key: {text}");
        }
        assert!(!text.contains("\"totp_key\"") && !text.contains("totp_uri"), "{text}");
    }
}

/// security.md #20: "Key readable only during enrolment"
///
/// `GET …/user/totp/uri` works while TOTP is off, `E008001` after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_20_key_readable_only_during_enrolment() {
    let (_dir, _admin, s, _hooks) = fresh("").await;
    let su = admin_ust(&s).await;
    let key = s.call(Method::PATCH, "/user/totp", json!({"ust": su, "totp_label": "Laptop"})).await.s("totp_key");
    let r = s.call(Method::GET, "/user/totp/uri", json!({"ust": su})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.s("totp_uri"), format!("otpauth://totp/sso:Laptop?secret={key}&issuer=sso"));
    assert!(r.s("totp_qr_svg").contains("<svg"));
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(s.call(Method::PATCH, "/user", json!({"ust": su, "is_totp_enabled": true})).await.status, 200);
    let r = s.call(Method::GET, "/user/totp/uri", json!({"ust": su})).await;
    assert_eq!((r.status, r.code()), (403, "E008001".to_owned()));
    assert!(!r.body.to_string().contains(&key));
}

// ===== C. reset_totp_key and account management ================================================

/// security.md #24: "The CLI's unchecked path unreachable from HTTP"
///
/// `Sso::operator_ctx` is not referenced by the HTTP handlers; a body `skip_sec` has no effect; CLI records carry
/// `cli:<os-user>@<host>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_24_cli_unchecked_path_unreachable_from_http() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut callers = Vec::new();
    for dir in [src.clone(), src.join("api"), src.join("cli")] {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "rs") && std::fs::read_to_string(&p).unwrap().contains("operator_ctx")
            {
                callers.push(p.strip_prefix(&src).unwrap().display().to_string());
            }
        }
    }
    assert_eq!(callers, ["cli/mod.rs"], "only the CLI builds an Operator context");
    let (dir, admin, s, _hooks) = fresh("").await;
    let su = admin_ust(&s).await;
    let bob = create(&s, &su, "bob", json!({})).await;
    let bob_ust = s.ust("bob", BOB_PW).await;
    let mut cids = Vec::new();
    for skip in [json!(true), json!("true"), json!(1)] {
        let body = json!({"ust": bob_ust, "user_id": admin, "totp_key": "KMCLCWN4YPMD2WO3", "skip_sec": skip});
        let r = s.call(Method::PATCH, "/user/totp", body).await;
        assert_eq!((r.status, r.code()), (403, "E008002".to_owned()), "skip_sec ignored: {}", r.body);
        cids.push(r.s("cid"));
        let r = s.call(Method::GET, "/user/search", json!({"ust": bob_ust, "skip_sec": skip})).await;
        assert_eq!((r.status, r.code()), (403, "E005001".to_owned()));
        cids.push(r.s("cid"));
        let r = s.call(Method::POST, "/user/lock", json!({"ust": bob_ust, "user_id": admin, "skip_sec": skip})).await;
        assert_eq!(r.status, 403);
        cids.push(r.s("cid"));
    }
    // Each of those calls was audited as bob's, never as an Operator's.
    let recs = audit_file(dir.path());
    for cid in &cids {
        let r = recs.iter().find(|r| r["cid"] == cid.as_str()).unwrap_or_else(|| panic!("no record for {cid}"));
        assert_eq!(r["actor"], json!(bob), "{r}");
    }
    assert_eq!(s.login("admin", PASSWORD, None).await.status, 200, "the admin was neither locked nor given a key");
    let out = cli(dir.path(), &["user", "lock", "bob"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rec = audit_file(dir.path()).into_iter().rfind(|r| r["op"] == "user.lock_user").unwrap();
    let actor = rec["actor"].as_str().unwrap();
    let (user, host) = actor.strip_prefix("cli:").and_then(|a| a.split_once('@')).unwrap_or_else(|| panic!("{actor}"));
    assert!(!user.is_empty() && !host.is_empty() && !host.contains('@'), "{actor}");
    assert_eq!(rec["target_user_id"], json!(bob));
    assert_eq!((rec["remote_addr"].as_str(), rec["current_app"].as_str()), (Some("127.0.0.1"), Some("CRM")));
}

/// security.md #30: "Factor changes notified without secrets"
///
/// The webhook receives `totp_reset` and `password_changed` with no key, label or password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_30_factor_changes_notified_without_secrets() {
    let (_dir, _admin, s, hooks) = fresh("").await;
    let su = admin_ust(&s).await;
    let bob = create(&s, &su, "bob", json!({})).await;
    let label = "Canary label Qx7";
    let key = s.call(Method::PATCH, "/user/totp", json!({"ust": su, "totp_label": label})).await.s("totp_key");
    let r = s
        .call(
            Method::PATCH,
            "/user/totp",
            json!({"ust": su, "user_id": bob, "totp_key": "KMCLCWN4YPMD2WO3", "totp_label": label}),
        )
        .await;
    assert_eq!(r.status, 200);
    let new_pw = "canary new passphrase Qx7";
    let r = s
        .call(Method::PATCH, "/user/password", json!({"ust": su, "old_password": PASSWORD, "new_password": new_pw}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let events = [
        hooks.wait("totp_reset", "admin").await,
        hooks.wait("totp_reset", "bob").await,
        hooks.wait("password_changed", "admin").await,
    ];
    for ev in &events {
        let text = ev.to_string();
        for secret in [key.as_str(), "KMCLCWN4YPMD2WO3", label, "Canary", new_pw, PASSWORD] {
            assert!(!text.contains(secret), "{secret:?} in {text}");
        }
        assert!(ev.get("token").is_none());
        assert!(ev["user_id"].is_string() && ev["ts"].is_string());
    }
}

// ===== D. Passwords =============================================================================

/// security.md #41: "No default accounts; no password on the command line"
///
/// A fresh server has zero users; `create-super-user` reads the password from standard input or a prompt only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_41_no_default_accounts_no_password_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), port, 9, "[store]\nusers = \"sqlite://./sso.db\"\n", "");
    let s = Server::start(dir.path(), port).await;
    let out = cli(dir.path(), &["--output", "json", "user", "list"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), json!([]), "zero users");
    for (user, pw) in [("admin", "admin"), ("admin", PASSWORD), ("root", "root"), ("sso", "sso")] {
        assert_eq!(s.login(user, pw, None).await.status, 403, "{user}/{pw}");
    }
    // No flag takes a password value.
    for cmd in [
        &["user", "create-super-user", "--help"][..],
        &["user", "create", "--help"],
        &["user", "change-password", "--help"],
    ] {
        let help = String::from_utf8_lossy(&cli(dir.path(), cmd, "").stdout).to_string();
        assert!(help.contains("--password-stdin"), "{help}");
        assert!(!help.contains("--password <") && !help.contains("--password="), "{help}");
    }
    let out = cli(dir.path(), &["user", "create-super-user", "root", "--password", "hunter2hunter2"], "");
    assert_eq!(out.status.code(), Some(2), "a password argument is a usage error");
    let out = cli(dir.path(), &["user", "create-super-user", "root"], "");
    assert_eq!(out.status.code(), Some(2), "no terminal, no --password-stdin: refused");
    let out = cli(
        dir.path(),
        &["--output", "json", "user", "create-super-user", "root", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.login("root", PASSWORD, None).await.status, 200);
    let out = cli(dir.path(), &["--output", "json", "user", "list"], "");
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().len(), 1);
}

// ===== E. Brute force and enumeration ===========================================================

/// security.md #45: "No content oracle before the password passes"
///
/// Unknown user, wrong password, empty password, locked/unapproved/unconfirmed user with a wrong password →
/// identical bodies but for `cid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_45_no_content_oracle_before_the_password_passes() {
    let (_dir, _admin, s, _hooks) = fresh("").await;
    let su = admin_ust(&s).await;
    create(&s, &su, "bob", json!({})).await;
    create(&s, &su, "lockie", json!({"is_locked": true})).await;
    create(&s, &su, "unapproved", json!({"auto_approve": false})).await;
    create(&s, &su, "unconfirmed", json!({"sign_up_status": "before_confirmation"})).await;
    let wrong = "not the password at all";
    let answers = [
        s.login("nobody-by-this-name", wrong, None).await,
        s.login("bob", wrong, None).await,
        s.login("bob", "", None).await,
        s.call(Method::POST, "/user/login", json!({"username": "bob", "password": null})).await,
        s.login("lockie", wrong, None).await,
        s.login("unapproved", wrong, None).await,
        s.login("unconfirmed", wrong, None).await,
    ];
    for a in &answers {
        assert_eq!(a.status, 403, "{}", a.body);
        assert_eq!(without_cid(&a.body), json!({"status": "error", "sub_status": ["E005001"]}));
        assert!(a.headers.get("retry-after").is_none());
    }
    // With the password the state shows (per the inform_if_* flags): the oracle needs the password.
    assert_eq!(s.login("lockie", BOB_PW, None).await.code(), "E005002");
    assert_eq!(s.login("unapproved", BOB_PW, None).await.code(), "E005004");
    assert_eq!(s.login("unconfirmed", BOB_PW, None).await.code(), "E005003");
}

/// security.md #48: "Reset-token creation reveals nothing"
///
/// Known and unknown credentials → identical 200 bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_48_reset_token_creation_reveals_nothing() {
    let (dir, _admin, s, hooks) = fresh("").await;
    let answers = [
        s.call(Method::POST, "/password/reset", json!({"credential": "admin"})).await,
        s.call(Method::POST, "/password/reset", json!({"credential": "nobody-by-this-name"})).await,
        s.call(Method::POST, "/password/reset", json!({"credential": ""})).await,
        s.call(Method::POST, "/password/reset", json!({"credential": "ADMIN"})).await,
    ];
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(without_cid(&a.body), json!({"status": "ok"}));
        assert!(a.headers.get("retry-after").is_none());
    }
    // The known one did create a token (delivered out of band, never in the answer).
    let ev = hooks.wait("password_reset", "admin").await;
    let token = ev["token"].as_str().unwrap();
    assert!(answers.iter().all(|a| !a.body.to_string().contains(token)));
    let found: Vec<Value> = audit_file(dir.path())
        .into_iter()
        .filter(|r| r["op"] == "password_reset.create_token")
        .map(|r| r["details"]["found"].clone())
        .collect();
    assert_eq!(found, [json!(true), json!(false), json!(false), json!(false)]);
}

/// security.md #49: "Client address from trusted proxies only"
///
/// `X-Forwarded-For` is ignored unless the peer is trusted, then the right-most untrusted hop counts; the audit
/// record and the throttle agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_49_client_address_from_trusted_proxies_only() {
    let app = ("x-zato-sso-current-app", "CRM");
    let body = |user: &str| serde_json::to_vec(&json!({"username": user, "password": "not the password"})).unwrap();
    // An untrusted peer: the header is ignored.
    let (dir, _admin, s, _hooks) = fresh("").await;
    let r =
        s.raw(Method::POST, "/zato/sso/user/login", body("admin"), &[app, ("x-forwarded-for", "203.0.113.9")]).await;
    assert_eq!(r.status, 403);
    let rec = audit_file(dir.path()).into_iter().rfind(|r| r["op"] == "user.login").unwrap();
    assert_eq!(rec["remote_addr"], "127.0.0.1");
    drop(s);
    // A trusted peer: the right-most untrusted hop.
    let extra = "[http]\ntrusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n\
                 [throttle.ip]\nfree_attempts = 2\nlockout_after = 3\n\
                 [throttle.user]\nfree_attempts = 90\nlockout_after = 100\n";
    let (dir, _admin, s, _hooks) = fresh(extra).await;
    let chain = "203.0.113.9, 198.51.100.7, 10.1.1.1";
    for (i, user) in ["u1", "u2", "u3"].iter().enumerate() {
        let r = s.raw(Method::POST, "/zato/sso/user/login", body(user), &[app, ("x-forwarded-for", chain)]).await;
        assert_eq!(r.status, 403, "attempt {i}: {}", r.body);
    }
    let recs: Vec<Value> = audit_file(dir.path()).into_iter().filter(|r| r["op"] == "user.login").collect();
    assert!(recs.iter().all(|r| r["remote_addr"] == "198.51.100.7"), "{recs:?}");
    // The same address is what the ip throttle counted: blocked from it, not from its neighbour.
    let r = s.raw(Method::POST, "/zato/sso/user/login", body("u4"), &[app, ("x-forwarded-for", chain)]).await;
    assert_eq!(r.status, 429, "{}", r.body);
    let r = s.raw(Method::POST, "/zato/sso/user/login", body("u4"), &[app, ("x-forwarded-for", "198.51.100.8")]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let rec = audit_file(dir.path()).into_iter().rfind(|r| r["op"] == "user.login").unwrap();
    assert_eq!(rec["remote_addr"], "198.51.100.8");
}

// ===== F. Sessions ==============================================================================

/// security.md #62: "No tokens in URLs"
///
/// `GET …?ust=…` → 400 (and every other secret field in a query string).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_62_no_tokens_in_urls() {
    let (_dir, _admin, s, _hooks) = fresh("").await;
    let su = admin_ust(&s).await;
    let app = [("x-zato-sso-current-app", "CRM")];
    for (method, path) in [
        (Method::GET, format!("/zato/sso/user?ust={su}")),
        (Method::GET, format!("/zato/sso/user/session/list?current_ust={su}&target_ust={su}")),
        (Method::GET, format!("/zato/sso/user/session?current_ust={su}&target_ust={su}")),
        (Method::POST, "/zato/sso/user/login?username=admin&password=x".to_owned()),
        (Method::POST, "/zato/sso/user/totp/validate?totp_code=123456".to_owned()),
        (Method::PATCH, "/zato/sso/password/reset?token=0000".to_owned()),
        (Method::POST, "/zato/sso/password/reset?credential=admin".to_owned()),
    ] {
        let r = s.raw(method.clone(), &path, vec![], &app).await;
        assert_eq!(r.status, 400, "{method} {path}");
        assert_eq!(r.body["details"], "Bad request");
        assert!(!r.body.to_string().contains(&su));
    }
    // The UST travels in the body or the Authorization header instead.
    let bearer = format!("Bearer {su}");
    let r = s.raw(Method::GET, "/zato/sso/user", vec![], &[app[0], ("authorization", &bearer)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.call(Method::GET, "/user", json!({"ust": su})).await.status, 200);
}

// ===== H. Audit, logging, errors ================================================================

/// Where sec_72's failpoint is: 0 = off, 1 = the database is gone, 2 = the store panics.
struct FlakyUsers {
    inner: Arc<dyn UserStore>,
    mode: AtomicU8,
}

impl FlakyUsers {
    fn check(&self) -> Result<(), StoreError> {
        match self.mode.load(Relaxed) {
            1 => Err(StoreError::unavailable("connection refused: database stopped (password=db-secret)")),
            2 => panic!("injected panic: SELECT secret FROM users"),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl UserStore for FlakyUsers {
    async fn begin(&self) -> Result<Box<dyn UserTx>, StoreError> {
        self.check()?;
        self.inner.begin().await
    }
    async fn get_by_id(&self, user_id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.check()?;
        self.inner.get_by_id(user_id).await
    }
    async fn get_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        self.check()?;
        self.inner.get_by_username(username).await
    }
    async fn get_by_confirm_token_hash(&self, hash: &[u8; 32]) -> Result<Option<UserRecord>, StoreError> {
        self.check()?;
        self.inner.get_by_confirm_token_hash(hash).await
    }
    async fn find_by_email_idx(&self, idx: &str) -> Result<Vec<UserRecord>, StoreError> {
        self.check()?;
        self.inner.find_by_email_idx(idx).await
    }
    async fn search(&self, q: &UserQuery, offset: u64, limit: u64) -> Result<(u64, Vec<UserRecord>), StoreError> {
        self.check()?;
        self.inner.search(q, offset, limit).await
    }
    async fn scan_users(&self, after: Option<&UserId>, limit: u64) -> Result<Vec<UserRecord>, StoreError> {
        self.check()?;
        self.inner.scan_users(after, limit).await
    }
    async fn replace_envelope(
        &self,
        user_id: &UserId,
        field: EnvelopeField,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.replace_envelope(user_id, field, old, new).await
    }
}

/// security.md #72: "Generic errors, last-resort handler"
///
/// The database gone mid-request → 503 plain body; an injected panic → 500 plain body, and the server keeps
/// serving. (The real router and handlers, served in-process over stores with a failpoint.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_72_generic_errors_last_resort_handler() {
    let mem = sso_core::memory::stores();
    let users = Arc::new(FlakyUsers { inner: mem.users.clone(), mode: AtomicU8::new(0) });
    let sso = Sso::builder(Config::for_tests(), Stores { users: users.clone(), ..mem }).build().await.unwrap();
    let op = sso.operator_ctx(Cid::generate(), "tester@host");
    let nu = NewUser { username: Some("alice".into()), password: Some(Password::new(PASSWORD)), ..Default::default() };
    sso.user().create_user(&op, nu, true).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = sso_http::api::router(sso_http::api::App::new(sso));
    tokio::spawn(sso_http::api::serve(listener, router, std::future::pending()));
    let s = Server { _dir: std::env::temp_dir(), port, child: None, client: reqwest::Client::new() };
    let ok = s.login("alice", PASSWORD, None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let ust = ok.s("ust");
    for (mode, status, details) in [(1u8, 503, "Service unavailable"), (2, 500, "Internal error")] {
        users.mode.store(mode, Relaxed);
        for r in [s.login("alice", PASSWORD, None).await, s.call(Method::GET, "/user", json!({"ust": ust})).await] {
            assert_eq!(r.status, status, "{}", r.body);
            let cid = r.body["cid"].as_str().unwrap().to_owned();
            assert_eq!(
                r.body,
                json!({"result": "Error", "cid": cid, "details": details}),
                "a plain body, nothing else"
            );
            assert_eq!(r.headers["cache-control"], "no-store");
            if status == 503 {
                assert_eq!(r.headers["retry-after"], "1");
            }
        }
        users.mode.store(0, Relaxed);
        assert_eq!(s.call(Method::GET, "/user", json!({"ust": ust})).await.status, 200, "still serving");
    }
    assert_eq!(s.login("alice", PASSWORD, None).await.status, 200);
}

// ===== I. Cryptography and keys =================================================================

/// security.md #74: "Key ring rotation and retirement; fail closed"
///
/// `keys rotate` after an interrupted run resumes under the same key: nothing lost or encrypted twice and the codes
/// verify; retiring a key in use (or the active one) is refused; a missing ring → exit 3. (The 10 000-user
/// kill-and-resume run is `tests/rotation`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_74_key_ring_rotation_and_retirement_fail_closed() {
    let (dir, _admin, mut s, _hooks) = fresh("").await;
    let d = dir.path();
    let su = admin_ust(&s).await;
    let key = s.call(Method::PATCH, "/user/totp", json!({"ust": su})).await.s("totp_key");
    assert_eq!(s.call(Method::PATCH, "/user", json!({"ust": su, "is_totp_enabled": true})).await.status, 200);
    for i in 0..5 {
        create(&s, &su, &format!("user{i}"), json!({"email": format!("user{i}@example.org")})).await;
    }
    let list = |d: &Path| -> Value {
        let out = cli(d, &["--output", "json", "keys", "list"], "");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let count = |l: &Value, id: &str| {
        l.as_array().unwrap().iter().find(|k| k["key_id"] == id).map(|k| k["envelopes"].as_u64().unwrap())
    };
    let ring_path = d.join("sso-keys.toml");
    let mut ring = KeyRing::from_toml(&std::fs::read_to_string(&ring_path).unwrap()).unwrap();
    let old = ring.active_id().to_owned();
    let total = count(&list(d), &old).unwrap();
    assert!(total >= 6 * 3, "{total}");
    // A run killed right after it wrote the new ring: new key active, nothing moved yet.
    let new = ring.add_key(Timestamp::from_secs(2_000_000_000)).unwrap();
    ring.set_rotating(Some(new.clone()));
    sso_http::wiring::write_key_ring(&ring_path, &ring).unwrap();
    assert_eq!(count(&list(d), &old), Some(total));
    let r = cli(d, &["keys", "retire", &old], "");
    assert_eq!(r.status.code(), Some(1), "a key in use is not retired: {}", String::from_utf8_lossy(&r.stderr));
    let r = cli(d, &["keys", "retire", &new], "");
    assert_eq!(r.status.code(), Some(1), "nor the active key");
    let r = cli(d, &["--output", "json", "keys", "rotate", "--batch-size", "2"], "");
    let err = String::from_utf8_lossy(&r.stderr).to_string();
    assert_eq!(r.status.code(), Some(0), "{err}");
    assert!(err.contains(&format!("resuming the rotation to {new}")), "{err}");
    let after = list(d);
    assert_eq!(
        (count(&after, &old), count(&after, &new)),
        (Some(0), Some(total)),
        "nothing lost, nothing twice: {after}"
    );
    let ring = KeyRing::from_toml(&std::fs::read_to_string(&ring_path).unwrap()).unwrap();
    assert_eq!((ring.key_ids().len(), ring.rotating()), (2, None));
    // The running server meets the new key id, re-reads the ring; passwords and codes verify.
    let r = s.login("admin", PASSWORD, Some(&code(&key, 0))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.ust("user3", BOB_PW).await.len(), 56);
    assert_eq!(cli(d, &["keys", "retire", &old], "").status.code(), Some(0));
    // Fail closed: without the ring the server refuses to start.
    assert!(s.stop().success());
    std::fs::rename(&ring_path, d.join("ring.bak")).unwrap();
    let (status, err) = serve_expecting_exit(d);
    assert_eq!(status, Some(3), "{err}");
    assert!(err.contains("crypto.key_ring_file"), "{err}");
    assert!(!ring_path.exists(), "no new ring is made over existing data");
}

/// security.md #75: "Protected key ring file"
///
/// Created 0600; a group-readable file → a warning at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_75_protected_key_ring_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), port, 9, "[store]\nusers = \"sqlite://./sso.db\"\n", "");
    let out = cli(dir.path(), &["user", "create-super-user", "admin", "--password-stdin"], &format!("{PASSWORD}\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("created the key ring"));
    let ring = dir.path().join("sso-keys.toml");
    assert_eq!(std::fs::metadata(&ring).unwrap().permissions().mode() & 0o777, 0o600, "created 0600");
    std::fs::set_permissions(&ring, std::fs::Permissions::from_mode(0o640)).unwrap();
    let s = Server::start(dir.path(), port).await;
    assert_eq!(s.login("admin", PASSWORD, None).await.status, 200);
    let log = std::fs::read_to_string(dir.path().join("serve.err")).unwrap();
    assert!(log.contains("readable by group or others"), "{log}");
}

// ===== J. HTTP surface ==========================================================================

/// security.md #79: "`Cache-Control: no-store` everywhere"
///
/// Present on every response under the prefix: every route × verb (served or 405), 200, 400, 403, 404, 413 and 429
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_79_cache_control_no_store_everywhere() {
    let (_dir, _admin, s, _hooks) = fresh("").await;
    let su = admin_ust(&s).await;
    let app = ("x-zato-sso-current-app", "CRM");
    let bearer = format!("Bearer {su}");
    let mut seen = std::collections::BTreeSet::new();
    let mut check = |r: &crate::common::Resp, what: &str| {
        assert_eq!(r.headers.get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"), "{what}");
        assert_eq!(r.headers["x-content-type-options"], "nosniff", "{what}");
        assert!(r.headers.contains_key("x-zato-cid"), "{what}");
        seen.insert(r.status);
    };
    for def in sso_http::api::routes() {
        for verb in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let path = format!("/zato/sso{}", def.path);
            let m = Method::from_bytes(verb.as_bytes()).unwrap();
            let r = s.raw(m.clone(), &path, b"{}".to_vec(), &[app, ("authorization", &bearer)]).await;
            check(&r, &format!("{verb} {path}"));
            let r = s.raw(m, &path, b"{}".to_vec(), &[app]).await;
            check(&r, &format!("{verb} {path} anonymous"));
        }
    }
    check(&s.raw(Method::POST, "/zato/sso/user/login", b"{bad".to_vec(), &[app]).await, "400");
    check(&s.raw(Method::GET, "/zato/sso/no/such/path", vec![], &[app]).await, "404");
    for _ in 0..6 {
        let r = s.login("admin", "not the password at all", None).await;
        check(&r, "login refusal");
    }
    check(&s.login("admin", PASSWORD, None).await, "throttled");
    let (status, headers, _) = oversized(s.port, "POST", "/zato/sso/user/login", &vec![b'x'; 2 << 20]).await;
    assert_eq!((status, headers.get("cache-control").map(String::as_str)), (413, Some("no-store")));
    seen.insert(413);
    for status in [200, 400, 403, 404, 405, 413, 429] {
        assert!(seen.contains(&status), "no {status} answer was checked: {seen:?}");
    }
}

/// A snapshot of the users, read back through the API.
async fn users_snapshot(s: &Server, su: &str) -> Value {
    let r = s.call(Method::GET, "/user/search", json!({"ust": su, "page_size": 100})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["result"].clone()
}

/// security.md #80: "Bad input refused cleanly"
///
/// Malformed JSON, wrong types, missing fields → 400; 2 MiB → 413; snapshots unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_80_bad_input_refused_cleanly() {
    let (_dir, _admin, s, _hooks) = fresh("").await;
    let su = admin_ust(&s).await;
    let bob = create(&s, &su, "bob", json!({})).await;
    let before = users_snapshot(&s, &su).await;
    let app = [("x-zato-sso-current-app", "CRM")];
    let mut answers = Vec::new();
    for body in [&b"{bad json"[..], b"[1,2]", b"\"str\"", b"null", b"{\"username\": \"bob\",}", b"\xff\xfe"] {
        answers.push(s.raw(Method::POST, "/zato/sso/user/login", body.to_vec(), &app).await);
    }
    for (method, path, body) in [
        (Method::POST, "/user/login", json!({"username": 123, "password": "x"})),
        (Method::POST, "/user/login", json!({"username": "bob", "password": ["x"]})),
        (Method::PATCH, "/user", json!({"ust": su, "user_id": bob, "is_locked": "maybe"})),
        (Method::PATCH, "/user", json!({"ust": su, "user_id": bob, "display_name": {"a": 1}})),
        (Method::GET, "/user/search", json!({"ust": su, "page_size": "ten"})),
        (Method::PATCH, "/user/totp", json!({"ust": su, "user_id": bob, "totp_key": 12345})),
        (Method::POST, "/user/login", json!({"username": "bob"})),
        (Method::POST, "/user/login", json!({"password": BOB_PW})),
        (Method::DELETE, "/user", json!({"ust": su})),
        (Method::PATCH, "/user/totp", json!({})),
        (Method::PATCH, "/user/password", json!({"ust": su})),
    ] {
        answers.push(s.call(method, path, body).await);
    }
    answers
        .push(s.raw(Method::POST, "/zato/sso/user/login", br#"{"username":"bob","password":"x"}"#.to_vec(), &[]).await);
    for r in &answers {
        assert_eq!(r.status, 400, "{}", r.body);
        let cid = r.body["cid"].as_str().unwrap().to_owned();
        assert_eq!(r.body, json!({"result": "Error", "cid": cid, "details": "Bad request"}));
    }
    let big = json!({"ust": su, "user_id": bob, "display_name": "x".repeat(2 << 20)});
    for body in [serde_json::to_vec(&big).unwrap(), vec![b'{'; 2 << 20]] {
        let (status, headers, answer) = oversized(s.port, "PATCH", "/zato/sso/user", &body).await;
        assert_eq!(status, 413, "{answer}");
        assert_eq!(answer["details"], "Payload too large");
        assert_eq!(headers.get("cache-control").map(String::as_str), Some("no-store"));
    }
    assert_eq!(users_snapshot(&s, &su).await, before, "nothing changed");
}

/// security.md #81: "No accidental cleartext"
///
/// `0.0.0.0` without TLS or `behind_tls_proxy` → start-up error.
#[test]
fn sec_81_no_accidental_cleartext() {
    let with = |listen: &str, proxy: bool| {
        let mut c = Config::default();
        c.server.listen = listen.into();
        c.server.behind_tls_proxy = proxy;
        sso_http::server::check_listen(&c)
    };
    for listen in ["0.0.0.0:17010", "[::]:17010", "10.1.2.3:17010", "192.0.2.10:80"] {
        assert_eq!(with(listen, false).unwrap_err().key, "server.listen", "{listen}");
        with(listen, true).unwrap_or_else(|e| panic!("{listen} behind a TLS proxy: {e}"));
    }
    for listen in ["127.0.0.1:17010", "[::1]:17010"] {
        with(listen, false).unwrap_or_else(|e| panic!("{listen}: {e}"));
    }
    // The binary refuses to start, with exit code 3 and the key named.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(
        dir.path(),
        port,
        9,
        "[store]\nusers = \"sqlite://./sso.db\"\n",
        &format!("[server]\nlisten = \"0.0.0.0:{port}\"\n"),
    );
    let (status, err) = serve_expecting_exit(dir.path());
    assert_eq!(status, Some(3), "{err}");
    assert!(err.contains("server.listen") && err.contains("behind_tls_proxy"), "{err}");
}

/// security.md #82: "Unlisted verbs refused"
///
/// `TRACE`/`PUT /zato/sso/user` → 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_82_unlisted_verbs_refused() {
    let (_dir, _admin, s, _hooks) = fresh("").await;
    let su = admin_ust(&s).await;
    let app = [("x-zato-sso-current-app", "CRM")];
    let body = serde_json::to_vec(&json!({"ust": su, "username": "mallory", "password": BOB_PW})).unwrap();
    for (verb, path) in [
        ("TRACE", "/zato/sso/user"),
        ("PUT", "/zato/sso/user"),
        ("OPTIONS", "/zato/sso/user"),
        ("GET", "/zato/sso/user/totp"),
        ("PUT", "/zato/sso/user/lock"),
        ("DELETE", "/zato/sso/user/signup"),
    ] {
        let r = s.raw(Method::from_bytes(verb.as_bytes()).unwrap(), path, body.clone(), &app).await;
        assert_eq!(r.status, 405, "{verb} {path}");
        let cid = r.body["cid"].as_str().unwrap().to_owned();
        assert_eq!(r.body, json!({"result": "Error", "cid": cid, "details": "Method not allowed"}));
        assert!(r.headers.contains_key("allow"), "{verb} {path}: Allow header");
    }
    let r = s.call(Method::GET, "/user/search", json!({"ust": su, "username": "mallory"})).await;
    assert_eq!(r.body["total"], 0, "the PUT created nothing");
}

/// security.md #83: "Strict mode"
///
/// `reject_unknown_fields = true`: `{"skip_sec": true}` → 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_83_strict_mode() {
    let (_dir, admin, s, _hooks) = fresh("[http]\nreject_unknown_fields = true\n").await;
    let su = admin_ust(&s).await;
    for (method, path, body) in [
        (Method::POST, "/user/login", json!({"username": "admin", "password": PASSWORD, "skip_sec": true})),
        (Method::PATCH, "/user/totp", json!({"ust": su, "user_id": admin, "skip_sec": true})),
        (Method::GET, "/user", json!({"ust": su, "skip_sec": true})),
        (Method::GET, "/user", json!({"ust": su, "is_super_user": true})),
        (Method::POST, "/password/reset", json!({"credential": "admin", "skip_sec": true})),
    ] {
        let r = s.call(method.clone(), path, body).await;
        assert_eq!(r.status, 400, "{method} {path}: {}", r.body);
        assert_eq!(r.body["details"], "Bad request");
    }
    // Known fields only: served as usual.
    assert_eq!(s.call(Method::GET, "/user", json!({"ust": su})).await.status, 200);
    assert_eq!(s.call(Method::PATCH, "/user/totp", json!({"ust": su, "user_id": admin})).await.status, 200);
}
