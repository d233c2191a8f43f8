//! `sso keys rotate` on 10 000 users (spec/security.md #74): killed half-way and re-run, nothing
//! is lost or encrypted twice, every TOTP code still verifies, the old key can then be retired and
//! the active one cannot.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::{Value, json};
use sso_core::audit::MemoryAuditSink;
use sso_core::crypto::aead::{KeyRing, aad, envelope_key_id};
use sso_core::ids::{Cid, RemoteAddr, UserId};
use sso_core::secret::{Password, TotpCode, TotpKey};
use sso_core::service::{AttrInput, AttrTarget, NewUser, SessionRef, TotpTarget};
use sso_core::store::{EnvelopeField, Stores};
use sso_core::{CallCtx, Sso};
use sso_store_sqlite::{SqliteOptions, SqliteStore};

use crate::common::{BIN, PASSWORD, cli, code, write_config};

const USERS: usize = 10_000;
const USER_ATTRS: usize = 500;
const SESSIONS: usize = 50;

fn ring_of(dir: &Path) -> KeyRing {
    KeyRing::from_toml(&std::fs::read_to_string(dir.join("sso-keys.toml")).unwrap()).unwrap()
}

async fn stores_of(dir: &Path) -> Stores {
    let url = format!("sqlite://{}", dir.join("sso.db").display());
    let store = SqliteStore::open(&url, &SqliteOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    store.stores()
}

async fn sso_over(stores: Stores, ring: KeyRing) -> Sso {
    let cfg = sso_core::config::Config::for_tests();
    Sso::builder(cfg, stores).key_ring(ring).audit_sink(Arc::new(MemoryAuditSink::new())).build().await.unwrap()
}

fn operator(sso: &Sso) -> CallCtx {
    sso.operator_ctx(Cid::generate(), "rotation-test")
}

/// Every envelope's key id, counted over the users' fields and both attribute scopes.
async fn key_ids(stores: &Stores) -> std::collections::BTreeMap<String, u64> {
    let mut n = std::collections::BTreeMap::new();
    let mut after: Option<UserId> = None;
    loop {
        let page = stores.users.scan_users(after.as_ref(), 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.user_id.clone());
        for u in &page {
            for f in EnvelopeField::ALL {
                if let Some(id) = f.of(u).and_then(envelope_key_id) {
                    *n.entry(id.to_owned()).or_default() += 1;
                }
            }
        }
    }
    for (store, scope) in [
        (&stores.user_attrs, sso_core::model::AttrScope::User),
        (&stores.session_attrs, sso_core::model::AttrScope::Session),
    ] {
        let mut cursor = None;
        loop {
            let (page, next) = store.scan_envelopes(scope, cursor.take(), 1000).await.unwrap();
            for e in page {
                *n.entry(envelope_key_id(&e.value).unwrap().to_owned()).or_default() += 1;
            }
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_on_10_000_users_killed_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 9, 9, "[store]\nusers = \"sqlite://./sso.db\"\n", "[audit]\nsinks = [\"sql\"]\n");
    let old_ring = KeyRing::generate(sso_core::time::Timestamp::from_secs(1_795_000_000)).unwrap();
    let old_key = old_ring.active_id().to_owned();
    sso_http::wiring::write_key_ring(&dir.path().join("sso-keys.toml"), &old_ring).unwrap();

    // 10 000 users (each with a TOTP key, an encrypted e-mail and password hash), 500 encrypted
    // user attributes and 50 sessions with an encrypted session attribute, all under the old key.
    let stores = stores_of(dir.path()).await;
    let sso = sso_over(stores.clone(), KeyRing::from_toml(&old_ring.to_toml()).unwrap()).await;
    let op = operator(&sso);
    let mut users: Vec<(UserId, String)> = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let data = NewUser {
            username: Some(format!("user{i:05}")),
            password: Some(Password::new(PASSWORD)),
            email: Some(format!("user{i:05}@example.org")),
            ..Default::default()
        };
        let view = sso.user().create_user(&op, data, true).await.unwrap();
        let id = view.admin.unwrap().user_id;
        let rec = stores.users.get_by_id(&id).await.unwrap().unwrap();
        let key = old_ring.decrypt_string(&aad::user_field(id.as_str(), "totp_key"), &rec.totp_key_enc).unwrap();
        users.push((id, key.to_string()));
    }
    for (i, (id, _)) in users.iter().take(USER_ATTRS).enumerate() {
        let mut a = AttrInput::new("secret", json!({"n": i}));
        a.encrypt = Some(true);
        sso.attr().create(&op, AttrTarget::User(Some(id.to_string())), a).await.unwrap();
    }
    let anon = CallCtx::new(Cid::generate(), sso.config().apps.default.clone(), RemoteAddr::localhost());
    let mut sessions = Vec::new();
    for i in 0..SESSIONS {
        let s = sso.user().login(&anon, &format!("user{i:05}"), &Password::new(PASSWORD), None, None).await.unwrap();
        let mut a = AttrInput::new("token", json!(format!("session-{i}")));
        a.encrypt = Some(true);
        sso.attr().create(&op, AttrTarget::Session(Some(SessionRef::Ust(s.ust.clone()))), a).await.unwrap();
        sessions.push(s.ust);
    }
    let before = key_ids(&stores).await;
    let total: u64 = before.values().sum();
    assert_eq!(before.get(&old_key), Some(&total), "everything starts under the old key");
    assert_eq!(total, (USERS * 4 + USER_ATTRS + SESSIONS) as u64, "key, label, e-mail and password per user");
    drop(sso);

    // First run: killed (SIGKILL) once about half of the envelopes are done.
    let mut child = Command::new(BIN)
        .args(["keys", "rotate", "--batch-size", "100"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut killed_at = None;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some((done, of)) = line.strip_prefix("re-encrypted ").and_then(|r| r.split_once('/')) {
            let (done, of): (u64, u64) = (done.parse().unwrap(), of.parse().unwrap());
            assert_eq!(of, total, "progress counts every envelope to move");
            if done * 2 >= of {
                child.kill().unwrap();
                killed_at = Some(done);
                break;
            }
        }
    }
    child.wait().unwrap();
    let killed_at = killed_at.expect("the first run printed progress up to half-way");
    let ring = ring_of(dir.path());
    let new_key = ring.active_id().to_owned();
    assert_ne!(new_key, old_key);
    assert_eq!(ring.rotating(), Some(new_key.as_str()), "the ring file marks the rotation unfinished");
    let mid = key_ids(&stores).await;
    assert_eq!(mid.values().sum::<u64>(), total, "no envelope lost by the kill");
    assert!(mid.get(&new_key).copied().unwrap_or(0) >= killed_at, "{mid:?}");
    assert!(mid.get(&old_key).copied().unwrap_or(0) > 0, "killed before the end: {mid:?}");

    // The active key cannot be retired, nor the old one while envelopes use it.
    let r = cli(dir.path(), &["keys", "retire", &old_key], "");
    assert_eq!(r.status.code(), Some(1), "retire of a key in use: {}", String::from_utf8_lossy(&r.stderr));

    // Second run: resumes under the same key (no third key) and finishes.
    let r = cli(dir.path(), &["--output", "json", "keys", "rotate", "--batch-size", "100"], "");
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(0), "resume: {err}");
    assert!(err.contains(&format!("resuming the rotation to {new_key}")), "{err}");
    let doc: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(doc["key_id"], json!(new_key));
    assert_eq!(doc["remaining"], json!(0));
    assert_eq!(doc["reencrypted"].as_u64().unwrap() + mid.get(&new_key).copied().unwrap_or(0), total);
    let ring = ring_of(dir.path());
    assert_eq!(ring.rotating(), None, "finished");
    assert_eq!(ring.key_ids().len(), 2, "one key added over both runs");
    let after = key_ids(&stores).await;
    assert_eq!(after, [(new_key.clone(), total)].into_iter().collect(), "everything under the new key, once");

    // `keys list` counts per key; the old key can now be retired, the active one never.
    let r = cli(dir.path(), &["--output", "json", "keys", "list"], "");
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    let list: Value = serde_json::from_slice(&r.stdout).unwrap();
    let count =
        |id: &str| list.as_array().unwrap().iter().find(|k| k["key_id"] == json!(id)).unwrap()["envelopes"].clone();
    assert_eq!(count(&new_key), json!(total));
    assert_eq!(count(&old_key), json!(0));
    let r = cli(dir.path(), &["keys", "retire", &new_key], "");
    assert_eq!(r.status.code(), Some(1), "the active key is never retired");
    let r = cli(dir.path(), &["keys", "retire", &old_key], "");
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    let ring = ring_of(dir.path());
    assert_eq!(ring.key_ids().len(), 1);

    // With only the new key: every TOTP key decrypts to the same key (not an envelope of an
    // envelope), every code verifies, attributes and passwords read back.
    let sso = sso_over(stores.clone(), ring).await;
    let op = operator(&sso);
    let ring = sso.key_ring();
    for (id, key) in &users {
        let rec = stores.users.get_by_id(id).await.unwrap().unwrap();
        let now = ring.decrypt_string(&aad::user_field(id.as_str(), "totp_key"), &rec.totp_key_enc).unwrap();
        assert_eq!(now.as_str(), key.as_str(), "TOTP key of {id} unchanged");
        TotpKey::parse(key).unwrap();
        let c = TotpCode::new(code(key, 0));
        sso.totp().validate_code(&op, Some(&c), TotpTarget::UserId(id.to_string())).await.unwrap();
    }
    for (i, (id, _)) in users.iter().take(USER_ATTRS).enumerate() {
        let a = sso.attr().get(&op, AttrTarget::User(Some(id.to_string())), "secret", true).await.unwrap().unwrap();
        assert_eq!(a.value, json!({"n": i}));
    }
    for (i, ust) in sessions.iter().enumerate() {
        let t = AttrTarget::Session(Some(SessionRef::Ust(ust.clone())));
        let a = sso.attr().get(&op, t, "token", true).await.unwrap().unwrap();
        assert_eq!(a.value, json!(format!("session-{i}")));
    }
    let anon = CallCtx::new(Cid::generate(), sso.config().apps.default.clone(), RemoteAddr::localhost());
    sso.user().login(&anon, "user09999", &Password::new(PASSWORD), None, None).await.unwrap();
}

#[test]
fn keys_rotate_refuses_an_inline_ring_and_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 9, 9, "[store]\nusers = \"sqlite://./sso.db\"\n", "");
    let r = cli(dir.path(), &["keys", "rotate"], "");
    assert_eq!(r.status.code(), Some(3), "missing ring: {}", String::from_utf8_lossy(&r.stderr));
    let ring = KeyRing::generate(sso_core::time::Timestamp::from_secs(1_795_000_000)).unwrap();
    let r = Command::new(BIN)
        .args(["keys", "rotate"])
        .current_dir(dir.path())
        .env("SSO_CRYPTO__KEY_RING_INLINE", ring.to_toml().as_str())
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(3), "inline ring: {}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stderr).contains("crypto.key_ring_file"));
}
