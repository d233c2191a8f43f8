//! `reset_totp_key` — the seed operation (spec/totp.md §2, security.md items 7, 17–29).

use std::sync::Arc;

use sso_core::audit::Outcome;
use sso_core::crypto::aead::aad;
use sso_core::ids::UserId;
use sso_core::model::UserRecord;
use sso_core::secret::{SecretStr, TotpKey};
use sso_core::service::UserUpdate;
use sso_core::testing::{Fixture, audit_contains};
use sso_core::{Code, SsoError};

async fn record(f: &Fixture, id: &UserId) -> UserRecord {
    f.sso.stores().users.get_by_id(id).await.unwrap().unwrap()
}

fn stored_key(f: &Fixture, u: &UserRecord) -> String {
    f.sso
        .key_ring()
        .decrypt_string(&aad::user_field(u.user_id.as_str(), "totp_key"), &u.totp_key_enc)
        .unwrap()
        .to_string()
}

fn stored_label(f: &Fixture, u: &UserRecord) -> String {
    f.sso
        .key_ring()
        .decrypt_string(&aad::user_field(u.user_id.as_str(), "totp_label"), &u.totp_label_enc)
        .unwrap()
        .to_string()
}

fn code_of(e: &SsoError) -> Code {
    e.real_code()
}

/// The records of `user.reset_totp_key` so far.
fn reset_records(f: &Fixture) -> Vec<sso_core::audit::AuditRecord> {
    f.audit.records().into_iter().filter(|r| r.op == "user.reset_totp_key").collect()
}

async fn enable_totp(f: &Fixture, id: &UserId) {
    let upd = UserUpdate { is_totp_enabled: Some(Some(true)), ..Default::default() };
    f.sso.user().update_user_by_id(&f.operator(), id.as_str(), upd).await.unwrap();
}

#[tokio::test]
async fn self_reset_without_key_generates_and_returns_160_bits() {
    let f = Fixture::memory().await;
    let (id, ust) = f.user_with_session("alice", false).await;
    let key = f.sso.user().reset_totp_key(&f.as_user(&ust), None, None, None).await.unwrap().expect("generated key");
    assert_eq!(key.expose_base32().len(), 32);
    assert_eq!(key.expose_bytes().len(), 20);
    assert!(key.expose_base32().chars().all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
    let u = record(&f, &id).await;
    assert_eq!(stored_key(&f, &u), key.expose_base32());
    assert_eq!(stored_label(&f, &u), "");
    // `Some("")` means "generate" too.
    let again = f.sso.user().reset_totp_key(&f.as_user(&ust), None, Some(""), None).await.unwrap();
    assert!(again.is_some());
}

#[tokio::test]
async fn self_reset_with_key_returns_none_and_stores_it_normalised() {
    let f = Fixture::memory().await;
    let (id, ust) = f.user_with_session("alice", false).await;
    let r = f.sso.user().reset_totp_key(&f.as_user(&ust), None, Some("jbswy3dpehpk3pxp"), Some("Phone")).await.unwrap();
    assert!(r.is_none(), "a supplied key is never returned");
    let u = record(&f, &id).await;
    assert_eq!(stored_key(&f, &u), "JBSWY3DPEHPK3PXP");
    assert_eq!(stored_label(&f, &u), "Phone");
    let r = reset_records(&f);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].details["key_source"], "supplied");
    assert_eq!(r[0].details["label"], "custom");
}

#[tokio::test]
async fn super_user_resets_another_user_with_and_without_key() {
    let f = Fixture::memory().await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let bob = f.create_user("bob", false).await;
    let ctx = f.as_user(&su_ust);
    let generated = f.sso.user().reset_totp_key(&ctx, Some(&bob), None, Some("Work laptop")).await.unwrap();
    let generated = generated.expect("generated for another user");
    assert_eq!(stored_key(&f, &record(&f, &bob).await), generated.expose_base32());
    let supplied = f.sso.user().reset_totp_key(&ctx, Some(&bob), Some("KMCLCWN4YPMD2WO3"), None).await.unwrap();
    assert!(supplied.is_none());
    let u = record(&f, &bob).await;
    assert_eq!(stored_key(&f, &u), "KMCLCWN4YPMD2WO3");
    assert_eq!(stored_label(&f, &u), "", "no label given → default label");
    for r in reset_records(&f) {
        assert_eq!(r.target_user_id.as_deref(), Some(bob.as_str()));
        assert_eq!(r.outcome, Outcome::Success);
    }
}

#[tokio::test]
async fn regular_user_naming_another_user_gets_e008002_and_changes_nothing() {
    let f = Fixture::memory().await;
    let (_alice, ust) = f.user_with_session("alice", false).await;
    let bob = f.create_user("bob", false).await;
    let before = record(&f, &bob).await;
    let e = f.sso.user().reset_totp_key(&f.as_user(&ust), Some(&bob), None, None).await.unwrap_err();
    assert_eq!(code_of(&e), Code::E008002);
    assert_eq!(record(&f, &bob).await, before, "target unchanged");
    // A random, unknown id gives exactly the same answer (no existence oracle, item 22).
    let ghost = UserId::generate().unwrap();
    let e2 = f.sso.user().reset_totp_key(&f.as_user(&ust), Some(&ghost), None, None).await.unwrap_err();
    assert_eq!(e, e2);
    let recs = reset_records(&f);
    assert_eq!(recs.len(), 2);
    // `denied` is defined by code (spec/audit.md §1): E008002 records as `failure`.
    assert!(recs.iter().all(|r| r.outcome == Outcome::Failure && r.sub_status == ["E008002"]));
}

#[tokio::test]
async fn regular_user_naming_themselves_is_allowed() {
    let f = Fixture::memory().await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let key = f.sso.user().reset_totp_key(&f.as_user(&ust), Some(&alice), None, None).await.unwrap();
    assert!(key.is_some());
    // The session survives an own reset.
    f.sso.user().get_current_user(&f.as_user(&ust), false).await.unwrap();
}

#[tokio::test]
async fn super_user_naming_unknown_user_gets_e005001_and_nothing_is_written() {
    let f = Fixture::memory().await;
    let (su, su_ust) = f.user_with_session("root-admin", true).await;
    let before = record(&f, &su).await;
    let ghost = UserId::generate().unwrap();
    let e = f.sso.user().reset_totp_key(&f.as_user(&su_ust), Some(&ghost), None, None).await.unwrap_err();
    assert_eq!(code_of(&e), Code::E005001);
    assert_eq!(record(&f, &su).await, before);
    // A malformed id is treated like an unknown one.
    let e = f.sso.user().reset_totp_key_for(&f.as_user(&su_ust), Some("not-an-id"), None, None).await.unwrap_err();
    assert_eq!(code_of(&e), Code::E005001);
    let recs = reset_records(&f);
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r.sub_status == ["E005001"] && r.reason.as_deref() == Some("no_such_user")));
}

#[tokio::test]
async fn invalid_keys_get_e008002_and_change_nothing() {
    let f = Fixture::memory().await;
    let (id, ust) = f.user_with_session("alice", false).await;
    let before = record(&f, &id).await;
    let long = "A".repeat(10_000);
    for bad in ["!!!!", "JBSWY3DP", "GEZD GNBV GY3T QOJQ", "GEZDGNBVGY3TQOJ1", "GEZDGNBVGY3TQOJQ\n", long.as_str()] {
        let e = f.sso.user().reset_totp_key(&f.as_user(&ust), None, Some(bad), None).await.unwrap_err();
        assert_eq!(code_of(&e), Code::E008002, "{bad:?}");
        assert!(!format!("{e} {e:?}").contains(bad.trim()) || bad.len() < 5, "error must not echo the key");
    }
    assert_eq!(record(&f, &id).await, before, "user row unchanged");
    assert_eq!(reset_records(&f).len(), 6, "each refusal audited");
    // 80 bits exactly is valid.
    assert!(
        f.sso.user().reset_totp_key(&f.as_user(&ust), None, Some("JBSWY3DPEHPK3PXP"), None).await.unwrap().is_none()
    );
}

#[tokio::test]
async fn invalid_labels_get_e008002() {
    let f = Fixture::memory().await;
    let (id, ust) = f.user_with_session("alice", false).await;
    let before = record(&f, &id).await;
    for bad in ["a:b", "tab\there", &"x".repeat(257)] {
        let e = f.sso.user().reset_totp_key(&f.as_user(&ust), None, None, Some(bad)).await.unwrap_err();
        assert_eq!(code_of(&e), Code::E008002, "{bad:?}");
    }
    assert_eq!(record(&f, &id).await, before);
}

#[tokio::test]
async fn empty_label_selects_the_default_label() {
    let f = Fixture::memory().await;
    let (id, ust) = f.user_with_session("alice", false).await;
    f.sso.user().reset_totp_key(&f.as_user(&ust), None, None, Some("Custom")).await.unwrap();
    assert_eq!(stored_label(&f, &record(&f, &id).await), "Custom");
    f.sso.user().reset_totp_key(&f.as_user(&ust), None, None, Some("")).await.unwrap();
    assert_eq!(stored_label(&f, &record(&f, &id).await), "");
    let view = f.sso.user().get_current_user(&f.as_user(&ust), false).await.unwrap();
    assert_eq!(view.totp_label, "", "the default label reads as empty");
    assert_eq!(reset_records(&f)[1].details["label"], "default");
}

#[tokio::test]
async fn stored_key_decrypts_and_ciphertexts_differ_per_user() {
    let f = Fixture::memory().await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let a = f.create_user("alice", false).await;
    let b = f.create_user("bob", false).await;
    let ctx = f.as_user(&su_ust);
    for id in [&a, &b] {
        f.sso.user().reset_totp_key(&ctx, Some(id), Some("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"), None).await.unwrap();
    }
    let (ra, rb) = (record(&f, &a).await, record(&f, &b).await);
    assert_eq!(stored_key(&f, &ra), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    assert_eq!(stored_key(&f, &rb), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    assert_ne!(ra.totp_key_enc, rb.totp_key_enc);
    assert!(!ra.totp_key_enc.contains("GEZDGNBV"));
    // A's envelope in B's row fails to decrypt (bound by AAD): decrypt_failed, never "wrong code".
    let ring = f.sso.key_ring();
    assert!(ring.decrypt(&aad::user_field(b.as_str(), "totp_key"), &ra.totp_key_enc).is_err());
}

#[tokio::test]
async fn one_audit_record_per_call_without_the_key_or_label() {
    let f = Fixture::memory().await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let (_alice, alice_ust) = f.user_with_session("alice", false).await;
    let bob = f.create_user("bob", false).await;
    f.audit.clear();
    let generated =
        f.sso.user().reset_totp_key(&f.as_user(&alice_ust), None, None, Some("SecretLabel1")).await.unwrap().unwrap();
    f.sso
        .user()
        .reset_totp_key(&f.as_user(&su_ust), Some(&bob), Some("KMCLCWN4YPMD2WO3"), Some("SecretLabel2"))
        .await
        .unwrap();
    let _ = f
        .sso
        .user()
        .reset_totp_key(&f.as_user(&alice_ust), Some(&bob), Some("JBSWY3DPEHPK3PXP"), None)
        .await
        .unwrap_err();
    let _ = f.sso.user().reset_totp_key(&f.as_user(&alice_ust), None, Some("JBSWY3DP"), None).await.unwrap_err();
    let recs = f.audit.records();
    assert_eq!(recs.len(), 4, "exactly one record per call: {:?}", f.ops());
    assert!(recs.iter().all(|r| r.op == "user.reset_totp_key"));
    for secret in
        [generated.expose_base32(), "KMCLCWN4YPMD2WO3", "JBSWY3DPEHPK3PXP", "JBSWY3DP", "SecretLabel1", "SecretLabel2"]
    {
        assert!(!audit_contains(&f, secret), "{secret} leaked into the audit trail");
    }
    assert_eq!(recs[0].outcome, Outcome::Success);
    assert_eq!(recs[0].details["key_source"], "generated");
    assert_eq!(recs[1].details["key_source"], "supplied");
    assert_eq!(recs[2].outcome, Outcome::Failure);
    assert_eq!(recs[2].reason.as_deref(), Some("not_owner"));
    assert_eq!(recs[3].outcome, Outcome::Failure);
    assert_eq!(recs[3].sub_status, ["E008002"]);
    for r in &recs {
        assert_eq!(r.current_app, "CRM");
        assert_eq!(r.remote_addr, "10.0.0.1");
        assert!(r.ts.ends_with('Z'));
    }
}

#[tokio::test]
async fn admin_reset_revokes_the_targets_sessions_own_reset_keeps_the_callers() {
    let f = Fixture::memory().await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let bob = f.create_user("bob", false).await;
    let mut bob_usts = Vec::new();
    for _ in 0..3 {
        bob_usts.push(f.login("bob", None).await.unwrap().ust);
    }
    f.sso.user().reset_totp_key(&f.as_user(&su_ust), Some(&bob), None, None).await.unwrap();
    for u in &bob_usts {
        let e = f.sso.user().get_current_user(&f.as_user(u), false).await.unwrap_err();
        assert_eq!(code_of(&e), Code::E007001);
    }
    let rec = reset_records(&f).pop().unwrap();
    assert_eq!(rec.details["sessions_revoked"], 3);
    assert!(f.sso.stores().sessions.list_by_user(&bob).await.unwrap().is_empty(), "records deleted");
    // Own reset through one of three sessions: all three stay valid by default.
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(f.login("bob", None).await.unwrap().ust);
    }
    f.sso.user().reset_totp_key(&f.as_user(&mine[0]), None, None, None).await.unwrap();
    for u in &mine {
        f.sso.user().get_current_user(&f.as_user(u), false).await.unwrap();
    }
}

#[tokio::test]
async fn own_reset_can_revoke_other_sessions_when_configured() {
    let f = Fixture::with(sso_core::memory::stores(), |c| c.totp.revoke_other_sessions_on_self_reset = true).await;
    f.create_user("bob", false).await;
    let a = f.login("bob", None).await.unwrap().ust;
    let b = f.login("bob", None).await.unwrap().ust;
    f.sso.user().reset_totp_key(&f.as_user(&a), None, None, None).await.unwrap();
    f.sso.user().get_current_user(&f.as_user(&a), false).await.unwrap();
    assert_eq!(code_of(&f.sso.user().get_current_user(&f.as_user(&b), false).await.unwrap_err()), Code::E007001);
}

#[tokio::test]
async fn admin_reset_keeps_sessions_when_configured_off() {
    let f = Fixture::with(sso_core::memory::stores(), |c| c.totp.revoke_sessions_on_admin_reset = false).await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let (bob, bob_ust) = f.user_with_session("bob", false).await;
    f.sso.user().reset_totp_key(&f.as_user(&su_ust), Some(&bob), None, None).await.unwrap();
    f.sso.user().get_current_user(&f.as_user(&bob_ust), false).await.unwrap();
}

#[tokio::test]
async fn new_key_kills_the_old_one_and_replay_state_restarts() {
    let f = Fixture::memory().await;
    let (id, ust) = f.user_with_session("alice", false).await;
    enable_totp(&f, &id).await;
    let old = TotpKey::parse("JBSWY3DPEHPK3PXP").unwrap();
    f.sso.user().reset_totp_key(&f.as_user(&ust), None, Some(old.expose_base32()), None).await.unwrap();
    let code = f.code_now(&old, 0);
    f.login("alice", Some(&code)).await.unwrap();
    // Reset to a new key: the same step's code of the new key works once; the old key's code fails.
    let new = f.sso.user().reset_totp_key(&f.as_user(&ust), None, None, None).await.unwrap().unwrap();
    let old_code = f.code_now(&old, 0);
    assert_eq!(code_of(&f.login("alice", Some(&old_code)).await.unwrap_err()), Code::E005001);
    let new_code = f.code_now(&new, 0);
    f.login("alice", Some(&new_code)).await.unwrap();
    assert_eq!(code_of(&f.login("alice", Some(&new_code)).await.unwrap_err()), Code::E005001, "replay");
}

#[tokio::test]
async fn key_set_by_a_super_user_works_for_login() {
    let f = Fixture::memory().await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let bob = f.create_user("bob", false).await;
    enable_totp(&f, &bob).await;
    f.sso.user().reset_totp_key(&f.as_user(&su_ust), Some(&bob), Some("KMCLCWN4YPMD2WO3"), None).await.unwrap();
    let code = f.code_now(&TotpKey::parse("KMCLCWN4YPMD2WO3").unwrap(), 0);
    let s = f.login("bob", Some(&code)).await.unwrap();
    assert_eq!(s.user_id, bob);
}

#[tokio::test]
async fn supplied_keys_can_be_forbidden() {
    let f = Fixture::with(sso_core::memory::stores(), |c| c.totp.allow_supplied_key = false).await;
    let (id, ust) = f.user_with_session("alice", false).await;
    let before = record(&f, &id).await;
    let e = f.sso.user().reset_totp_key(&f.as_user(&ust), None, Some("JBSWY3DPEHPK3PXP"), None).await.unwrap_err();
    assert_eq!(code_of(&e), Code::E008002);
    assert_eq!(record(&f, &id).await, before);
    assert!(f.sso.user().reset_totp_key(&f.as_user(&ust), None, None, None).await.unwrap().is_some());
}

#[tokio::test]
async fn own_reset_may_require_a_fresh_session() {
    let f = Fixture::with(sso_core::memory::stores(), |c| c.totp.self_reset_max_session_age_s = 300).await;
    let (id, ust) = f.user_with_session("alice", false).await;
    let before = record(&f, &id).await;
    f.clock.advance(std::time::Duration::from_secs(301));
    let e = f.sso.user().reset_totp_key(&f.as_user(&ust), None, None, None).await.unwrap_err();
    assert_eq!(code_of(&e), Code::E005009);
    assert_eq!(record(&f, &id).await, before);
    let fresh = f.login("alice", None).await.unwrap().ust;
    assert!(f.sso.user().reset_totp_key(&f.as_user(&fresh), None, None, None).await.unwrap().is_some());
}

#[tokio::test]
async fn pipeline_failures_come_first() {
    let f = Fixture::memory().await;
    let (_id, ust) = f.user_with_session("alice", false).await;
    // Unknown app: step 1.
    let mut ctx = f.as_user(&ust);
    ctx.current_app = "NOPE".into();
    assert_eq!(code_of(&f.sso.user().reset_totp_key(&ctx, None, Some("!!!"), None).await.unwrap_err()), Code::E004001);
    // Bad UST: step 2.
    let bogus = sso_core::secret::Ust::generate().unwrap();
    let e = f.sso.user().reset_totp_key(&f.as_user(&bogus), None, Some("!!!"), None).await.unwrap_err();
    assert_eq!(code_of(&e), Code::E007001);
    // No UST at all.
    assert_eq!(code_of(&f.sso.user().reset_totp_key(&f.anon(), None, None, None).await.unwrap_err()), Code::E007001);
}

#[tokio::test]
async fn demoted_super_user_can_no_longer_reset_others() {
    let f = Fixture::memory().await;
    let (su, su_ust) = f.user_with_session("root-admin", true).await;
    let bob = f.create_user("bob", false).await;
    let mut tx = f.sso.stores().users.begin().await.unwrap();
    let patch = sso_core::model::UserPatch { is_super_user: Some(false), ..Default::default() };
    tx.update_user(&su, &patch).await.unwrap();
    tx.commit().await.unwrap();
    let e = f.sso.user().reset_totp_key(&f.as_user(&su_ust), Some(&bob), None, None).await.unwrap_err();
    assert_eq!(code_of(&e), Code::E008002);
}

#[tokio::test]
async fn operator_must_name_a_target_and_is_audited_as_cli() {
    let f = Fixture::memory().await;
    let bob = f.create_user("bob", false).await;
    let e = f.sso.user().reset_totp_key(&f.operator(), None, None, None).await.unwrap_err();
    assert_eq!(code_of(&e), Code::E008002);
    assert!(f.sso.user().reset_totp_key(&f.operator(), Some(&bob), None, None).await.unwrap().is_some());
    let r = reset_records(&f).pop().unwrap();
    assert_eq!(r.actor, "cli:tester@host");
    assert_eq!(r.remote_addr, "127.0.0.1");
}

#[tokio::test]
async fn reset_does_not_touch_is_totp_enabled_nor_the_callers_session() {
    let f = Fixture::memory().await;
    let (id, ust) = f.user_with_session("alice", false).await;
    f.sso.user().reset_totp_key(&f.as_user(&ust), None, None, None).await.unwrap();
    let u = record(&f, &id).await;
    assert!(!u.is_totp_enabled);
    assert_eq!(u.totp_key_gen, 2);
    f.sso.user().get_current_user(&f.as_user(&ust), false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_resets_never_mix_key_and_label() {
    let f = Arc::new(Fixture::memory().await);
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let bob = f.create_user("bob", false).await;
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let f = f.clone();
        let ust = su_ust.clone();
        let bob = bob.clone();
        tasks.push(tokio::spawn(async move {
            let key = sso_core::crypto::base32::encode(&[u8::try_from(i % 251).unwrap(); 10]);
            let label = format!("label-{}", sso_core::crypto::base32::encode(&[u8::try_from(i % 251).unwrap(); 10]));
            f.sso.user().reset_totp_key(&f.as_user(&ust), Some(&bob), Some(&key), Some(&label)).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let u = record(&f, &bob).await;
    let key = stored_key(&f, &u);
    assert_eq!(stored_label(&f, &u), format!("label-{key}"), "key and label come from the same call");
    assert_eq!(u.totp_key_gen, 201);
    assert_eq!(reset_records(&f).len(), 200, "every call audited");
}

#[tokio::test]
async fn debug_of_returned_key_is_redacted() {
    let f = Fixture::memory().await;
    let (_id, ust) = f.user_with_session("alice", false).await;
    let key = f.sso.user().reset_totp_key(&f.as_user(&ust), None, None, None).await.unwrap();
    let dbg = format!("{key:?}");
    assert!(!dbg.contains(key.as_ref().unwrap().expose_base32()));
    assert!(dbg.contains("REDACTED"));
    let uri = key.unwrap().otpauth_uri();
    assert!(uri.starts_with("otpauth://totp/sso:alice?secret="), "{uri}");
    let _ = SecretStr::expose(&sso_core::secret::Ust::new("x"));
}
