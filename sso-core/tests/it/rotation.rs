//! Key rotation through `sso.keys()` (spec/totp.md §6): Operator only, compare-and-set, counts
//! per key, the retire rule. The 10 000-user run with a kill and a resume is in sso-http's tests.

use serde_json::json;
use sso_core::crypto::aead::{KeyRing, aad, envelope_key_id};
use sso_core::service::{AttrInput, AttrTarget, Progress};
use sso_core::testing::Fixture;
use sso_core::time::Timestamp;
use sso_core::{Code, Reason};

fn copy(r: &KeyRing) -> KeyRing {
    KeyRing::from_toml(&r.to_toml()).unwrap()
}

/// Adds a key to the fixture's ring and makes it active; returns (old id, new id).
fn add_key(f: &Fixture) -> (String, String) {
    let mut ring = copy(&f.sso.key_ring());
    let old = ring.active_id().to_owned();
    let new = ring.add_key(Timestamp::from_secs(1_900_000_000)).unwrap();
    ring.set_rotating(Some(new.clone()));
    f.sso.replace_key_ring(ring);
    (old, new)
}

#[tokio::test]
async fn reencrypt_moves_every_envelope_and_keeps_every_secret() {
    let f = Fixture::memory().await;
    let op = f.operator();
    let mut ids = Vec::new();
    for i in 0..25 {
        let id = f.create_user(&format!("rot{i}"), false).await;
        let mut a = AttrInput::new("secret", json!(i));
        a.encrypt = Some(true);
        f.sso.attr().create(&op, AttrTarget::User(Some(id.to_string())), a).await.unwrap();
        ids.push(id);
    }
    let ring = f.sso.key_ring();
    let mut keys = Vec::new();
    for id in &ids {
        let u = f.sso.stores().users.get_by_id(id).await.unwrap().unwrap();
        keys.push(ring.decrypt_string(&aad::user_field(id.as_str(), "totp_key"), &u.totp_key_enc).unwrap().to_string());
    }
    let (old, new) = add_key(&f);
    let before = f.sso.keys().usage(&op, 7).await.unwrap();
    assert_eq!(before.of(&new), 0);
    let total = before.of(&old);
    assert!(total >= 25 * 3, "TOTP key, label and password per user, plus attributes: {before:?}");

    let mut seen: Vec<Progress> = Vec::new();
    let report = f.sso.keys().reencrypt(&op, 7, &mut |p| seen.push(p)).await.unwrap();
    assert_eq!(report.key_id, new);
    assert_eq!(report.reencrypted, total);
    assert_eq!((report.remaining, report.raced, report.undecryptable), (0, 0, 0));
    assert!(seen.len() > 3, "progress after every batch");
    assert!(seen.windows(2).all(|w| w[0].reencrypted <= w[1].reencrypted));
    assert_eq!(seen.last().map(|p| (p.reencrypted, p.total)), Some((total, total)));
    let after = f.sso.keys().usage(&op, 1000).await.unwrap();
    assert_eq!(after.of(&new), total);
    assert_eq!(after.not_under(&new), 0);

    // A second run finds nothing to do.
    let again = f.sso.keys().reencrypt(&op, 7, &mut |_| {}).await.unwrap();
    assert_eq!(again.reencrypted, 0);

    // Without the old key everything still reads back, unchanged.
    let mut ring = copy(&f.sso.key_ring());
    assert!(ring.remove_key(&old));
    f.sso.replace_key_ring(ring);
    let ring = f.sso.key_ring();
    for (id, key) in ids.iter().zip(&keys) {
        let u = f.sso.stores().users.get_by_id(id).await.unwrap().unwrap();
        assert_eq!(envelope_key_id(&u.totp_key_enc), Some(new.as_str()));
        let now = ring.decrypt_string(&aad::user_field(id.as_str(), "totp_key"), &u.totp_key_enc).unwrap();
        assert_eq!(now.as_str(), key, "re-encrypted once, to the same key");
    }
    for (i, id) in ids.iter().enumerate() {
        let a = f.sso.attr().get(&op, AttrTarget::User(Some(id.to_string())), "secret", true).await.unwrap().unwrap();
        assert_eq!(a.value, json!(i));
    }
    f.login("rot3", None).await.unwrap();
    assert!(f.ops().contains(&"keys.rotate".to_owned()), "audited");
    let rec = f.audit.records().into_iter().find(|r| r.op == "keys.rotate").unwrap();
    assert_eq!(rec.details["key_id"], json!(new));
    assert_eq!(rec.details["reencrypted"], json!(total));
}

#[tokio::test]
async fn retire_refuses_the_active_key_and_keys_in_use() {
    let f = Fixture::memory().await;
    let op = f.operator();
    f.create_user("r1", false).await;
    let (old, new) = add_key(&f);
    let err = f.sso.keys().check_retire(&op, &old, 100).await.unwrap_err();
    assert_eq!((err.real_code(), err.reason()), (Code::E008001, Reason::Conflict), "in use");
    let err = f.sso.keys().check_retire(&op, &new, 100).await.unwrap_err();
    assert_eq!((err.real_code(), err.reason()), (Code::E008001, Reason::InvalidInput), "active");
    let err = f.sso.keys().check_retire(&op, "k-unknown", 100).await.unwrap_err();
    assert_eq!(err.reason(), Reason::NotFound);
    f.sso.keys().reencrypt(&op, 100, &mut |_| {}).await.unwrap();
    f.sso.keys().check_retire(&op, &old, 100).await.unwrap();
    let retires: Vec<_> = f.audit.records().into_iter().filter(|r| r.op == "keys.retire").collect();
    assert_eq!(retires.len(), 4, "every check audited");
    assert!(retires.iter().all(|r| r.details.get("key_id").is_some()));
}

#[tokio::test]
async fn only_the_operator_may_rotate() {
    let f = Fixture::memory().await;
    let (_, ust) = f.user_with_session("root", true).await;
    let ctx = f.as_user(&ust);
    add_key(&f);
    assert!(f.sso.keys().reencrypt(&ctx, 100, &mut |_| {}).await.is_err());
    assert!(f.sso.keys().usage(&ctx, 100).await.is_err());
    assert!(f.sso.keys().check_retire(&ctx, "x", 100).await.is_err());
}

#[tokio::test]
async fn a_concurrent_change_is_never_overwritten() {
    let f = Fixture::memory().await;
    let op = f.operator();
    let id = f.create_user("racer", false).await;
    let (_, new) = add_key(&f);
    // The user's key changes (under the new key) between a scan and its write: the compare-and-set
    // of the stale envelope fails and the new value stays.
    let u = f.sso.stores().users.get_by_id(&id).await.unwrap().unwrap();
    let generated = f.sso.user().reset_totp_key_for(&op, Some(id.as_str()), None, None).await.unwrap().unwrap();
    let replaced = f
        .sso
        .stores()
        .users
        .replace_envelope(&id, sso_core::store::EnvelopeField::TotpKey, &u.totp_key_enc, "stale-write")
        .await
        .unwrap();
    assert!(!replaced, "a stale envelope is not replaced");
    f.sso.keys().reencrypt(&op, 100, &mut |_| {}).await.unwrap();
    let now = f.sso.stores().users.get_by_id(&id).await.unwrap().unwrap();
    assert_eq!(envelope_key_id(&now.totp_key_enc), Some(new.as_str()));
    let key = f.sso.key_ring().decrypt_string(&aad::user_field(id.as_str(), "totp_key"), &now.totp_key_enc).unwrap();
    assert_eq!(key.as_str(), generated.expose_base32());
}
