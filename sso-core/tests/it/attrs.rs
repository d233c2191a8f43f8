//! Attributes (spec/users.md §10) through the service: both scopes, the semantics table, `*_many`
//! atomicity, expiry, encryption and its AAD binding, the limits, authorisation and the audit.

use serde_json::{Value, json};
use sso_core::audit::Outcome;
use sso_core::ids::UserId;
use sso_core::model::{AttrScope, AttrWrite};
use sso_core::secret::{SecretStr, Ust};
use sso_core::service::{AttrInput, AttrTarget, SessionRef};
use sso_core::testing::Fixture;
use sso_core::time::NEVER;
use sso_core::{CallCtx, Code, SsoError};

use crate::common::*;

fn me() -> AttrTarget {
    AttrTarget::User(None)
}

fn sess() -> AttrTarget {
    AttrTarget::Session(None)
}

fn input(name: &str, v: Value) -> AttrInput {
    AttrInput::new(name, v)
}

fn enc(name: &str, v: Value) -> AttrInput {
    AttrInput { encrypt: Some(true), ..AttrInput::new(name, v) }
}

fn expiring(name: &str, v: Value, s: u64) -> AttrInput {
    AttrInput { expiration: Some(s), ..AttrInput::new(name, v) }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

async fn value(f: &Fixture, ctx: &CallCtx, t: AttrTarget, name: &str) -> Option<Value> {
    f.sso.attr().get(ctx, t, name, true).await.unwrap().map(|a| a.value)
}

// ----- semantics, both scopes ------------------------------------------------------------------

async fn semantics(f: &Fixture, ctx: &CallCtx, t: impl Fn() -> AttrTarget) {
    let a = f.sso.attr();
    let t0 = f.sso.now();
    a.create(ctx, t(), input("color", json!("red"))).await.unwrap();
    let e = a.create(ctx, t(), input("color", json!("blue"))).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E009001);
    assert_eq!(value(f, ctx, t(), "color").await, Some(json!("red")));
    f.clock.advance(secs(5));
    // set: upsert; keeps creation_time.
    a.set(ctx, t(), input("color", json!({"rgb": [1, 2, 3]}))).await.unwrap();
    let got = a.get(ctx, t(), "color", true).await.unwrap().unwrap();
    assert_eq!(got.value, json!({"rgb": [1, 2, 3]}));
    assert_eq!(got.creation_time, t0);
    assert_eq!(got.last_modified, f.sso.now());
    assert_eq!(got.expiration_time, NEVER);
    assert!(!got.is_encrypted);
    a.set(ctx, t(), input("size", json!(42))).await.unwrap();
    // update: missing → E009002; replaces the value.
    assert_eq!(code(a.update(ctx, t(), input("missing", json!(1))).await), Code::E009002);
    a.update(ctx, t(), input("size", json!(43))).await.unwrap();
    assert_eq!(value(f, ctx, t(), "size").await, Some(json!(43)));
    // get / get_many / exists / exists_many / names.
    assert!(a.get(ctx, t(), "missing", true).await.unwrap().is_none());
    let m = a.get_many(ctx, t(), &names(&["size", "missing", "color"]), true).await.unwrap();
    assert_eq!(m.keys().cloned().collect::<Vec<_>>(), ["color", "size"]);
    assert!(a.exists(ctx, t(), "size").await.unwrap());
    assert!(!a.exists(ctx, t(), "missing").await.unwrap());
    let ex = a.exists_many(ctx, t(), &names(&["size", "missing"])).await.unwrap();
    assert_eq!(ex.get("size"), Some(&true));
    assert_eq!(ex.get("missing"), Some(&false));
    a.create(ctx, t(), input("aardvark", json!(null))).await.unwrap();
    assert_eq!(a.names(ctx, t()).await.unwrap(), ["aardvark", "color", "size"], "sorted");
    // delete / set_expiry of a missing attribute → E009002.
    assert_eq!(code(a.delete(ctx, t(), "missing").await), Code::E009002);
    assert_eq!(code(a.set_expiry(ctx, t(), "missing", 10).await), Code::E009002);
    a.delete(ctx, t(), "aardvark").await.unwrap();
    assert_eq!(code(a.delete(ctx, t(), "aardvark").await), Code::E009002, "twice");
    assert_eq!(a.names(ctx, t()).await.unwrap(), ["color", "size"]);
}

#[tokio::test]
async fn user_scope_semantics() {
    let f = Fixture::memory().await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    semantics(&f, &f.as_user(&ust), me).await;
    // Own id is "self".
    let ctx = f.as_user(&ust);
    assert_eq!(value(&f, &ctx, AttrTarget::User(Some(alice.to_string())), "size").await, Some(json!(43)));
    // User attributes outlive sessions.
    let other = f.login("alice", None).await.unwrap().ust;
    f.sso.user().logout(&ctx).await.unwrap();
    assert_eq!(value(&f, &f.as_user(&other), me(), "size").await, Some(json!(43)));
}

#[tokio::test]
async fn session_scope_semantics() {
    let f = Fixture::memory().await;
    let (_alice, ust) = f.user_with_session("alice", false).await;
    let ctx = f.as_user(&ust);
    semantics(&f, &ctx, sess).await;
    // The same session named by UST or by id; another session of the same user has its own set.
    let by_ust = AttrTarget::Session(Some(SessionRef::Ust(ust.clone())));
    let by_id = AttrTarget::Session(Some(SessionRef::Id(ust.session_id().unwrap().to_string())));
    assert_eq!(value(&f, &ctx, by_ust, "size").await, Some(json!(43)));
    assert_eq!(value(&f, &ctx, by_id.clone(), "size").await, Some(json!(43)));
    let other = f.login("alice", None).await.unwrap().ust;
    assert!(f.sso.attr().names(&f.as_user(&other), sess()).await.unwrap().is_empty());
    // …and reaches this one by id.
    assert_eq!(value(&f, &f.as_user(&other), by_id.clone(), "size").await, Some(json!(43)));
    // Session attributes disappear with their session.
    f.sso.user().logout(&ctx).await.unwrap();
    assert_eq!(code(f.sso.attr().get(&f.as_user(&other), by_id, "size", true).await), Code::E007001);
}

// ----- atomicity -------------------------------------------------------------------------------

#[tokio::test]
async fn many_calls_are_atomic() {
    let f = Fixture::memory().await;
    let (_alice, ust) = f.user_with_session("alice", false).await;
    let ctx = f.as_user(&ust);
    let a = f.sso.attr();
    for t in [me, sess] {
        a.create(&ctx, t(), input("x", json!(1))).await.unwrap();
        let e = a
            .create_many(&ctx, t(), vec![input("new1", json!(1)), input("x", json!(2)), input("new2", json!(3))])
            .await;
        assert_eq!(code(e), Code::E009001);
        assert_eq!(a.names(&ctx, t()).await.unwrap(), ["x"], "nothing written");
        let e = a.update_many(&ctx, t(), vec![input("x", json!(9)), input("nope", json!(9))]).await;
        assert_eq!(code(e), Code::E009002);
        assert_eq!(value(&f, &ctx, t(), "x").await, Some(json!(1)));
        let e = a.delete_many(&ctx, t(), &names(&["x", "nope"])).await;
        assert_eq!(code(e), Code::E009002);
        assert!(a.exists(&ctx, t(), "x").await.unwrap());
        let e = a.set_expiry_many(&ctx, t(), &[("x".into(), 5), ("nope".into(), 5)]).await;
        assert_eq!(code(e), Code::E009002);
        assert_eq!(a.get(&ctx, t(), "x", true).await.unwrap().unwrap().expiration_time, NEVER);
        let big = json!("z".repeat(70_000));
        let e = a.set_many(&ctx, t(), vec![input("ok", json!(1)), input("big", big)]).await;
        assert_eq!(code(e), Code::E008002);
        assert!(!a.exists(&ctx, t(), "ok").await.unwrap());
        // All good: all written.
        a.create_many(&ctx, t(), vec![input("n1", json!(1)), input("n2", json!(2))]).await.unwrap();
        a.update_many(&ctx, t(), vec![input("n1", json!(10)), input("n2", json!(20))]).await.unwrap();
        assert_eq!(value(&f, &ctx, t(), "n2").await, Some(json!(20)));
        a.set_expiry_many(&ctx, t(), &[("n1".into(), 100), ("n2".into(), 0)]).await.unwrap();
        a.delete_many(&ctx, t(), &names(&["n1", "n2", "x"])).await.unwrap();
        assert!(a.names(&ctx, t()).await.unwrap().is_empty());
    }
}

// ----- expiry ----------------------------------------------------------------------------------

#[tokio::test]
async fn expired_attributes_behave_as_absent() {
    let f = Fixture::memory().await;
    let (_alice, ust) = f.user_with_session("alice", false).await;
    let ctx = f.as_user(&ust);
    let a = f.sso.attr();
    a.create(&ctx, me(), expiring("temp", json!("t"), 10)).await.unwrap();
    let got = a.get(&ctx, me(), "temp", true).await.unwrap().unwrap();
    assert_eq!(got.expiration_time, f.sso.now().add_secs(10));
    a.create(&ctx, me(), input("perm", json!("p"))).await.unwrap();
    a.set_expiry(&ctx, me(), "perm", 20).await.unwrap();
    f.clock.advance(secs(10));
    assert!(a.get(&ctx, me(), "temp", true).await.unwrap().is_none());
    assert!(!a.exists(&ctx, me(), "temp").await.unwrap());
    assert_eq!(a.names(&ctx, me()).await.unwrap(), ["perm"]);
    assert_eq!(code(a.update(&ctx, me(), input("temp", json!(1))).await), Code::E009002);
    assert_eq!(code(a.delete(&ctx, me(), "temp").await), Code::E009002);
    assert_eq!(code(a.set_expiry(&ctx, me(), "temp", 0).await), Code::E009002);
    a.create(&ctx, me(), input("temp", json!("again"))).await.unwrap();
    assert_eq!(value(&f, &ctx, me(), "temp").await, Some(json!("again")));
    // set_expiry 0 = never; update without expiration keeps it, with one replaces it.
    a.set_expiry(&ctx, me(), "perm", 0).await.unwrap();
    f.clock.advance(secs(30));
    assert!(a.exists(&ctx, me(), "perm").await.unwrap());
    a.update(&ctx, me(), expiring("perm", json!("p2"), 5)).await.unwrap();
    a.update(&ctx, me(), input("perm", json!("p3"))).await.unwrap();
    assert_eq!(a.get(&ctx, me(), "perm", true).await.unwrap().unwrap().expiration_time, f.sso.now().add_secs(5));
    f.clock.advance(secs(5));
    assert!(!a.exists(&ctx, me(), "perm").await.unwrap());
}

// ----- encryption ------------------------------------------------------------------------------

#[tokio::test]
async fn encrypted_attributes() {
    let f = Fixture::memory().await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let ctx = f.as_user(&ust);
    let a = f.sso.attr();
    let secret = json!({"card": "CANARY-4111-1111"});
    a.create(&ctx, me(), enc("pay", secret.clone())).await.unwrap();
    let got = a.get(&ctx, me(), "pay", true).await.unwrap().unwrap();
    assert_eq!(got.value, secret);
    assert!(got.is_encrypted);
    let raw = a.get(&ctx, me(), "pay", false).await.unwrap().unwrap();
    let envelope = raw.value.as_str().expect("decrypt = false returns the envelope string").to_owned();
    assert!(envelope.starts_with("enc1."), "{envelope}");
    assert!(!envelope.contains("CANARY"));
    let stored = f
        .sso
        .stores()
        .user_attrs
        .get_many(AttrScope::User, alice.as_str(), &names(&["pay"]), f.sso.now())
        .await
        .unwrap();
    assert_eq!(stored[0].value, envelope);
    // update without `encrypt` keeps the encryption.
    a.update(&ctx, me(), input("pay", json!("CANARY-2"))).await.unwrap();
    let got = a.get(&ctx, me(), "pay", true).await.unwrap().unwrap();
    assert!(got.is_encrypted);
    assert_eq!(got.value, json!("CANARY-2"));
    // set replaces the encryption choice.
    a.set(&ctx, me(), input("pay", json!("plain"))).await.unwrap();
    assert!(!a.get(&ctx, me(), "pay", false).await.unwrap().unwrap().is_encrypted);
    // Session scope too.
    a.set(&ctx, sess(), enc("tok", json!("CANARY-3"))).await.unwrap();
    assert_eq!(value(&f, &ctx, sess(), "tok").await, Some(json!("CANARY-3")));
    assert!(a.get(&ctx, sess(), "tok", false).await.unwrap().unwrap().value.as_str().unwrap().starts_with("enc1."));
    assert_no_secrets(&f, &["CANARY"]);
}

#[tokio::test]
async fn an_envelope_copied_to_another_owner_fails_to_decrypt() {
    let f = Fixture::memory().await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let (bob, bob_ust) = f.user_with_session("bob", false).await;
    let ctx = f.as_user(&ust);
    f.sso.attr().create(&ctx, me(), enc("pay", json!("CANARY-A"))).await.unwrap();
    let s = f.sso.stores();
    let now = f.sso.now();
    let rec = s.user_attrs.get_many(AttrScope::User, alice.as_str(), &names(&["pay"]), now).await.unwrap().remove(0);
    let copy = |name: &str| AttrWrite {
        name: name.into(),
        value: rec.value.clone(),
        is_encrypted: true,
        expiration_time: None,
    };
    s.user_attrs.set_many(AttrScope::User, bob.as_str(), &[copy("pay")], now).await.unwrap();
    s.user_attrs.set_many(AttrScope::User, alice.as_str(), &[copy("pay2")], now).await.unwrap();
    let e = f.sso.attr().get(&f.as_user(&bob_ust), me(), "pay", true).await.unwrap_err();
    assert!(matches!(e, SsoError::Internal { .. }), "{e:?}");
    let r = last(&f, "attr.get");
    assert_eq!(r.reason.as_deref(), Some("decrypt_failed"));
    assert_eq!(r.outcome, Outcome::Failure);
    // Another name of the same owner is another AAD too.
    assert!(matches!(f.sso.attr().get(&ctx, me(), "pay2", true).await.unwrap_err(), SsoError::Internal { .. }));
    // Without decryption the envelope is just text.
    assert!(f.sso.attr().get(&f.as_user(&bob_ust), me(), "pay", false).await.unwrap().is_some());
    // A session envelope copied to another session fails as well.
    let other = f.login("alice", None).await.unwrap().ust;
    f.sso.attr().create(&ctx, sess(), enc("t", json!("CANARY-S"))).await.unwrap();
    let sid = ust.session_id().unwrap();
    let rec = s.session_attrs.get_many(AttrScope::Session, sid.as_str(), &names(&["t"]), now).await.unwrap().remove(0);
    let w = AttrWrite { name: "t".into(), value: rec.value, is_encrypted: true, expiration_time: None };
    s.session_attrs.set_many(AttrScope::Session, other.session_id().unwrap().as_str(), &[w], now).await.unwrap();
    assert!(matches!(
        f.sso.attr().get(&f.as_user(&other), sess(), "t", true).await.unwrap_err(),
        SsoError::Internal { .. }
    ));
}

// ----- input limits ----------------------------------------------------------------------------

#[tokio::test]
async fn input_limits() {
    let f = fixture(|c| {
        c.attr.max_per_call = 3;
        c.attr.max_value_bytes = 100;
    })
    .await;
    let (_alice, ust) = f.user_with_session("alice", false).await;
    let ctx = f.as_user(&ust);
    let a = f.sso.attr();
    let four: Vec<AttrInput> = (0..4).map(|i| input(&format!("a{i}"), json!(i))).collect();
    assert_eq!(code(a.set_many(&ctx, me(), four).await), Code::E008002, "max_per_call");
    assert_eq!(code(a.get_many(&ctx, me(), &names(&["a", "b", "c", "d"]), true).await), Code::E008002);
    let three: Vec<AttrInput> = (0..3).map(|i| input(&format!("a{i}"), json!(i))).collect();
    a.set_many(&ctx, me(), three).await.unwrap();
    // The serialised value: 100 bytes pass, 101 do not.
    a.set(&ctx, me(), input("v", json!("x".repeat(98)))).await.unwrap();
    assert_eq!(code(a.set(&ctx, me(), input("v", json!("x".repeat(99)))).await), Code::E008002);
    assert_eq!(code(a.create(&ctx, sess(), input("v", json!("x".repeat(99)))).await), Code::E008002);
    // Names: 1..=191 characters, no control characters, no name twice in one call.
    for bad in ["", "a\u{0}b", "tab\there", &"n".repeat(192)] {
        assert_eq!(code(a.set(&ctx, me(), input(bad, json!(1))).await), Code::E008002, "{bad:?}");
    }
    a.set(&ctx, me(), input(&"é".repeat(191), json!(1))).await.unwrap();
    let dup = vec![input("d", json!(1)), input("d", json!(2))];
    assert_eq!(code(a.create_many(&ctx, me(), dup).await), Code::E008002);
    assert!(!a.exists(&ctx, me(), "d").await.unwrap());
    assert_eq!(code(a.delete_many(&ctx, me(), &names(&["a0", "a0"])).await), Code::E008002);
    assert!(a.exists(&ctx, me(), "a0").await.unwrap());
    // Neither name nor data: E008003.
    assert_eq!(code(a.create_many(&ctx, me(), Vec::new()).await), Code::E008003);
    assert_eq!(code(a.get_many(&ctx, me(), &[], true).await), Code::E008003);
    assert_rec(&last(&f, "attr.get_many"), "attr.get_many", Outcome::Failure, &["E008003"]);
}

// ----- authorisation ---------------------------------------------------------------------------

#[tokio::test]
async fn who_may_touch_whose_attributes() {
    let f = Fixture::memory().await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let (_alice, ust) = f.user_with_session("alice", false).await;
    let (bob, bob_ust) = f.user_with_session("bob", false).await;
    let actx = f.as_user(&ust);
    let sctx = f.as_user(&su_ust);
    let a = f.sso.attr();
    f.sso.attr().set(&f.as_user(&bob_ust), me(), input("b", json!(1))).await.unwrap();
    f.sso.attr().set(&f.as_user(&bob_ust), sess(), input("bs", json!(1))).await.unwrap();
    // User scope: a regular user naming another user → E005001.
    let bob_t = || AttrTarget::User(Some(bob.to_string()));
    assert_eq!(code(a.get(&actx, bob_t(), "b", true).await), Code::E005001);
    assert_eq!(code(a.set(&actx, bob_t(), input("b", json!(2))).await), Code::E005001);
    assert_eq!(code(a.names(&actx, bob_t()).await), Code::E005001);
    assert_rec(&last(&f, "attr.names"), "attr.names", Outcome::Denied, &["E005001"]);
    // The target check (2) comes before the input checks (3).
    assert_eq!(code(a.set(&actx, bob_t(), input("", json!(2))).await), Code::E005001);
    assert_eq!(code(a.create_many(&actx, bob_t(), Vec::new()).await), Code::E005001);
    // Super-users: anyone's; an unknown user → E005001.
    a.set(&sctx, bob_t(), input("b", json!(2))).await.unwrap();
    assert_eq!(value(&f, &f.as_user(&bob_ust), me(), "b").await, Some(json!(2)));
    let ghost = AttrTarget::User(Some(UserId::generate().unwrap().to_string()));
    assert_eq!(code(a.get(&sctx, ghost, "b", true).await), Code::E005001);
    // Session scope: a foreign, missing or expired session → E007001 for regular users.
    let bob_sid = bob_ust.session_id().unwrap().to_string();
    for t in [
        AttrTarget::Session(Some(SessionRef::Id(bob_sid.clone()))),
        AttrTarget::Session(Some(SessionRef::Ust(bob_ust.clone()))),
        AttrTarget::Session(Some(SessionRef::Ust(Ust::generate().unwrap()))),
        AttrTarget::Session(Some(SessionRef::Id("zses-junk".into()))),
    ] {
        assert_eq!(code(a.get(&actx, t.clone(), "bs", true).await), Code::E007001);
        assert_eq!(code(a.set(&actx, t.clone(), input("bs", json!(9))).await), Code::E007001);
        assert_eq!(code(a.set(&actx, t, input("", json!(9))).await), Code::E007001, "before the input checks");
    }
    let bob_s = AttrTarget::Session(Some(SessionRef::Id(bob_sid.clone())));
    assert_eq!(value(&f, &sctx, bob_s.clone(), "bs").await, Some(json!(1)), "super-users reach any session");
    let r = last(&f, "attr.get");
    assert_eq!(r.target_user_id.as_deref(), Some(bob.as_str()));
    assert_eq!(r.target_session_id.as_deref(), Some(bob_sid.as_str()));
    f.clock.advance(secs(3600));
    let (_su2, su2) = f.user_with_session("root-admin2", true).await;
    assert_eq!(code(a.get(&f.as_user(&su2), bob_s, "bs", true).await), Code::E007001, "expired session");
}

// ----- audit -----------------------------------------------------------------------------------

#[tokio::test]
async fn audit_records_name_attributes_but_never_values() {
    let f = Fixture::memory().await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let ctx = f.as_user(&ust);
    let a = f.sso.attr();
    f.audit.clear();
    a.create(&ctx, me(), AttrInput { expiration: Some(60), encrypt: Some(true), ..input("k1", json!("CANARY-1")) })
        .await
        .unwrap();
    a.set_many(&ctx, sess(), vec![input("k2", json!({"v": "CANARY-2"})), input("k3", json!(["CANARY-3"]))])
        .await
        .unwrap();
    a.update(&ctx, me(), input("k1", json!("CANARY-4"))).await.unwrap();
    a.get(&ctx, me(), "k1", true).await.unwrap();
    a.get_many(&ctx, sess(), &names(&["k2", "k3"]), true).await.unwrap();
    a.exists(&ctx, me(), "k1").await.unwrap();
    a.exists_many(&ctx, me(), &names(&["k1"])).await.unwrap();
    a.names(&ctx, me()).await.unwrap();
    a.set_expiry(&ctx, me(), "k1", 5).await.unwrap();
    a.set_expiry_many(&ctx, sess(), &[("k2".into(), 5)]).await.unwrap();
    a.delete(&ctx, me(), "k1").await.unwrap();
    a.delete_many(&ctx, sess(), &names(&["k2", "k3"])).await.unwrap();
    let _ = a.create(&ctx, me(), input("k9", json!("x".repeat(70_000) + "CANARY-5"))).await.unwrap_err();
    let ops = f.ops();
    assert_eq!(
        ops,
        [
            "attr.create",
            "attr.set_many",
            "attr.update",
            "attr.get",
            "attr.get_many",
            "attr.exists",
            "attr.exists_many",
            "attr.names",
            "attr.set_expiry",
            "attr.set_expiry_many",
            "attr.delete",
            "attr.delete_many",
            "attr.create",
        ],
        "one record per call"
    );
    let recs = f.audit.records();
    assert_eq!(recs[0].details["scope"], "user");
    assert_eq!(recs[0].details["names"], json!(["k1"]));
    assert_eq!(recs[0].details["encrypt"], true);
    assert_eq!(recs[0].details["expiration"], 60);
    assert_eq!(recs[0].target_user_id.as_deref(), Some(alice.as_str()));
    assert_eq!(recs[1].details["scope"], "session");
    assert_eq!(recs[1].details["names"], json!(["k2", "k3"]));
    assert_eq!(recs[1].target_session_id.as_deref(), Some(ust.session_id().unwrap().as_str()));
    assert_rec(&recs[12], "attr.create", Outcome::Failure, &["E008002"]);
    assert_no_secrets(&f, &["CANARY", ust.expose()]);
}
