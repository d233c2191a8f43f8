//! `service`: the [`Sso`](crate::Sso) facade over the given stores — the behaviours that depend on
//! every store working together (and, for the two-node cases, on all shared state living in them).

use std::time::Duration;

use super::*;
use crate::error::{Code, SsoError};
use crate::secret::{Password, TotpCode, TotpKey, Ust};
use crate::service::{ChangePassword, UserUpdate};
use crate::testing::{Fixture, PASSWORD};

const STEP: Duration = Duration::from_secs(30);

async fn fixture(stores: Stores) -> Fixture {
    Fixture::with(stores, |cfg| {
        // The defaults, spelled out: these cases depend on them.
        cfg.throttle.enabled = true;
        cfg.totp.allow_reuse = false;
        cfg.totp.allow_supplied_key = true;
        cfg.totp.revoke_sessions_on_admin_reset = true;
        cfg.password.revoke_sessions_on_change = true;
    })
    .await
}

/// Turns TOTP on for `id` with `key` (through the Operator).
async fn enable_totp(f: &Fixture, id: &UserId, key: &TotpKey) {
    let op = f.operator();
    let update = UserUpdate { is_totp_enabled: Some(Some(true)), ..Default::default() };
    f.sso.user().update_user_by_id(&op, id.as_str(), update).await.unwrap_or_else(|e| panic!("enable TOTP: {e}"));
    let r = f.sso.user().reset_totp_key(&op, Some(id), Some(key.expose_base32()), None).await;
    assert!(r.unwrap_or_else(|e| panic!("set TOTP key: {e}")).is_none(), "a supplied key is never returned");
}

/// Whether the session of `ust` is valid (checked by reading the current user).
async fn session_ok(f: &Fixture, ust: &Ust) -> Result<(), SsoError> {
    f.sso.user().get_current_user(&f.as_user(ust), false).await.map(|_| ())
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(r: Result<T, SsoError>, code: Code, what: &str) {
    match r {
        Err(e) if e.is_code(code) => {}
        other => panic!("{what}: expected {code}, got {other:?}"),
    }
}

/// A password login opens a valid session; with TOTP on, a login needs a valid current code.
pub async fn login_password_and_totp(stores: Stores) {
    let f = fixture(stores).await;
    let id = f.create_user("tess", false).await;
    let s = f.login("tess", None).await.unwrap_or_else(|e| panic!("password login: {e}"));
    assert_eq!(s.user_id, id);
    session_ok(&f, &s.ust).await.unwrap_or_else(|e| panic!("the new session must be valid: {e}"));
    let rec = f.sso.stores().sessions.get(&s.session_id).await.unwrap().expect("the session is stored");
    assert_eq!(rec.user_id, id);

    let key = TotpKey::generate().unwrap();
    enable_totp(&f, &id, &key).await;
    f.clock.advance(STEP);
    let missing = f.login("tess", None).await;
    assert!(missing.is_err(), "a login without a code must fail once TOTP is on: {missing:?}");
    let valid = [f.code_now(&key, 0), f.code_now(&key, -1)];
    let wrong_code = ["000000", "111111", "222222"].into_iter().find(|c| !valid.iter().any(|v| v == c)).unwrap();
    let wrong = f.login("tess", Some(wrong_code)).await.map(|_| ());
    assert_code(wrong, Code::E005001, "login with a wrong code");
    let ok =
        f.login("tess", Some(&f.code_now(&key, 0))).await.unwrap_or_else(|e| panic!("login with a valid code: {e}"));
    session_ok(&f, &ok.ust).await.unwrap_or_else(|e| panic!("the TOTP session must be valid: {e}"));
    f.clock.advance(STEP);
    let prev = f.login("tess", Some(&f.code_now(&key, -1))).await;
    assert_code(prev.map(|_| ()), Code::E005001, "the previous step's code was already used");
}

/// `reset_totp_key` on oneself: without a key it returns the generated one (which then works for
/// login), with a supplied key it returns `None` (and the supplied key works).
pub async fn reset_totp_key_self(stores: Stores) {
    let f = fixture(stores).await;
    let (id, ust) = f.user_with_session("sam", false).await;
    let me = f.as_user(&ust);
    let generated =
        f.sso.user().reset_totp_key(&me, None, None, None).await.unwrap_or_else(|e| panic!("own reset: {e}"));
    let key = generated.expect("a generated key is returned");
    let op = f.operator();
    let update = UserUpdate { is_totp_enabled: Some(Some(true)), ..Default::default() };
    f.sso.user().update_user_by_id(&op, id.as_str(), update).await.unwrap();
    session_ok(&f, &ust).await.unwrap_or_else(|e| panic!("an own reset keeps the session: {e}"));
    f.clock.advance(STEP);
    f.login("sam", Some(&f.code_now(&key, 0))).await.unwrap_or_else(|e| panic!("login with the generated key: {e}"));

    let supplied = TotpKey::generate().unwrap();
    let r = f.sso.user().reset_totp_key(&me, None, Some(supplied.expose_base32()), Some("my phone")).await;
    assert!(r.unwrap_or_else(|e| panic!("own reset with a key: {e}")).is_none(), "a supplied key is not returned");
    f.clock.advance(STEP);
    let old = f.login("sam", Some(&f.code_now(&key, 0))).await;
    assert_code(old.map(|_| ()), Code::E005001, "the replaced key no longer works");
    f.clock.advance(STEP);
    f.login("sam", Some(&f.code_now(&supplied, 0)))
        .await
        .unwrap_or_else(|e| panic!("login with the supplied key: {e}"));
    let stored = f.sso.stores().users.get_by_id(&id).await.unwrap().unwrap();
    assert!(stored.totp_key_gen >= 2, "each reset bumps the key generation");
}

/// A super-user resets another user's key: the target's sessions are revoked (`E007001`) and a
/// login with a code of the key the super-user set works.
pub async fn reset_totp_key_admin(stores: Stores) {
    let f = fixture(stores).await;
    let (_, root) = f.user_with_session("root", true).await;
    let bob = f.create_user("bob", false).await;
    let k0 = TotpKey::generate().unwrap();
    enable_totp(&f, &bob, &k0).await;
    let bob_session = f.login("bob", Some(&f.code_now(&k0, 0))).await.unwrap_or_else(|e| panic!("bob login: {e}"));
    session_ok(&f, &bob_session.ust).await.unwrap();

    let k1 = TotpKey::generate().unwrap();
    let r = f.sso.user().reset_totp_key(&f.as_user(&root), Some(&bob), Some(k1.expose_base32()), None).await;
    assert!(r.unwrap_or_else(|e| panic!("admin reset: {e}")).is_none(), "a supplied key is not returned");
    assert_code(session_ok(&f, &bob_session.ust).await, Code::E007001, "the target's session after an admin reset");
    session_ok(&f, &root).await.unwrap_or_else(|e| panic!("the super-user's own session is kept: {e}"));

    f.clock.advance(STEP);
    let old = f.login("bob", Some(&f.code_now(&k0, 0))).await;
    assert_code(old.map(|_| ()), Code::E005001, "a code of the old key");
    f.clock.advance(STEP);
    let s =
        f.login("bob", Some(&f.code_now(&k1, 0))).await.unwrap_or_else(|e| panic!("login with the admin-set key: {e}"));
    session_ok(&f, &s.ust).await.unwrap();
}

/// The same TOTP code cannot be used twice (`E005001`), even within its window.
pub async fn replay_refused(stores: Stores) {
    let f = fixture(stores).await;
    let id = f.create_user("ray", false).await;
    let key = TotpKey::generate().unwrap();
    enable_totp(&f, &id, &key).await;
    let code = f.code_now(&key, 0);
    f.login("ray", Some(&code)).await.unwrap_or_else(|e| panic!("first use of the code: {e}"));
    let again = f.login("ray", Some(&code)).await;
    assert_code(again.map(|_| ()), Code::E005001, "second use of the same code");
    let t = f
        .sso
        .totp()
        .validate_code(
            &f.operator(),
            Some(&TotpCode::new(code.clone())),
            crate::service::TotpTarget::UserId(id.to_string()),
        )
        .await;
    assert_code(t, Code::E005001, "validate_code of a used code");
    f.clock.advance(STEP);
    f.login("ray", Some(&f.code_now(&key, 0))).await.unwrap_or_else(|e| panic!("the next step's code: {e}"));
}

/// Failed logins counted on one instance throttle the user on another instance over the same stores.
pub async fn throttling_shared_by_nodes(stores: Stores) {
    let a = fixture(stores.clone()).await;
    let b = a.second_node(stores).await;
    a.create_user("tina", false).await;
    let wrong = Password::new("not the password at all");
    let mut blocked = false;
    for _ in 0..30 {
        match a.sso.user().login(&a.anon(), "tina", &wrong, None, None).await {
            Err(SsoError::Throttled { .. }) => {
                blocked = true;
                break;
            }
            Err(_) => {}
            Ok(_) => panic!("a wrong password logged in"),
        }
    }
    assert!(blocked, "node A never throttled repeated wrong passwords");
    match b.sso.user().login(&b.anon(), "tina", &Password::new(PASSWORD), None, None).await {
        Err(SsoError::Throttled { .. }) => {}
        other => panic!("node B must see node A's throttle state, got {other:?}"),
    }
}

/// Sessions opened on one instance are valid on the other; revoke-all through the second
/// instance invalidates them on the first.
pub async fn revoke_all_visible_on_second_node(stores: Stores) {
    let a = fixture(stores.clone()).await;
    let b = a.second_node(stores).await;
    let (_, ust_a) = a.user_with_session("dana", false).await;
    let s_b = b.login("dana", None).await.unwrap_or_else(|e| panic!("login on node B: {e}"));
    session_ok(&b, &ust_a).await.unwrap_or_else(|e| panic!("node A's session on node B: {e}"));
    session_ok(&a, &s_b.ust).await.unwrap_or_else(|e| panic!("node B's session on node A: {e}"));
    let (_, other) = a.user_with_session("olga", false).await;

    let n = b
        .sso
        .session()
        .logout_all(&b.as_user(&s_b.ust), None, false)
        .await
        .unwrap_or_else(|e| panic!("logout_all: {e}"));
    assert_eq!(n, 2, "both of dana's sessions are revoked");
    assert_code(session_ok(&a, &ust_a).await, Code::E007001, "node A after revoke-all on node B");
    assert_code(session_ok(&a, &s_b.ust).await, Code::E007001, "node A, the caller's session");
    assert_code(session_ok(&b, &ust_a).await, Code::E007001, "node B after revoke-all on node B");
    session_ok(&a, &other).await.unwrap_or_else(|e| panic!("another user's session is kept: {e}"));
    let again = a.login("dana", None).await.unwrap_or_else(|e| panic!("a new login after revoke-all: {e}"));
    session_ok(&b, &again.ust).await.unwrap_or_else(|e| panic!("the new session is valid on node B: {e}"));
}

/// A password change revokes the user's other sessions and keeps the one it was made through.
pub async fn password_change_revokes_other_sessions(stores: Stores) {
    let f = fixture(stores).await;
    let (_, current) = f.user_with_session("pat", false).await;
    let other = f.login("pat", None).await.unwrap_or_else(|e| panic!("second login: {e}")).ust;
    let new_password = "a brand new stapled horse 42";
    let change = ChangePassword {
        user_id: None,
        old_password: Some(Password::new(PASSWORD)),
        new_password: Password::new(new_password),
        password_expiry: None,
        must_change: None,
    };
    f.sso.user().change_password(&f.as_user(&current), change).await.unwrap_or_else(|e| panic!("change_password: {e}"));
    session_ok(&f, &current).await.unwrap_or_else(|e| panic!("the current session is kept: {e}"));
    assert_code(session_ok(&f, &other).await, Code::E007001, "another session after a password change");
    let old = f.login("pat", None).await;
    assert_code(old.map(|_| ()), Code::E005001, "login with the old password");
    f.sso
        .user()
        .login(&f.anon(), "pat", &Password::new(new_password), None, None)
        .await
        .unwrap_or_else(|e| panic!("login with the new password: {e}"));
}

/// With `session.user_cache_ms` on, the pipeline reads the session alone and the user from the
/// node's cache: sessions stay valid, a change made through this node applies to its next call,
/// and a revoke-all made through another node applies once the cached entry has expired.
pub async fn user_cache_pipeline(stores: Stores) {
    let a = Fixture::with(stores.clone(), |cfg| cfg.session.user_cache_ms = 2_000).await;
    let b = a.second_node(stores).await;
    let (id, ust) = a.user_with_session("cora", false).await;
    for _ in 0..3 {
        session_ok(&a, &ust).await.unwrap_or_else(|e| panic!("cached pipeline: {e}"));
        assert!(a.sso.session().verify(&a.as_user(&ust), &ust).await.unwrap_or(false), "verify, cached user");
    }
    let shown = |f: &Fixture| {
        let (sso, ctx) = (f.sso.clone(), f.as_user(&ust));
        async move { sso.user().get_current_user(&ctx, false).await.map(|v| v.display_name) }
    };
    let rename = UserUpdate { display_name: Some(Some("Cora".into())), ..Default::default() };
    a.sso.user().update_user_by_id(&a.operator(), id.as_str(), rename).await.unwrap_or_else(|e| panic!("rename: {e}"));
    assert_eq!(shown(&a).await.ok().flatten().as_deref(), Some("Cora"), "a write through this node applies at once");

    let on_b = b.login("cora", None).await.unwrap_or_else(|e| panic!("login on node B: {e}"));
    b.sso
        .session()
        .logout_all(&b.as_user(&on_b.ust), None, false)
        .await
        .unwrap_or_else(|e| panic!("logout_all on node B: {e}"));
    assert_code(session_ok(&b, &ust).await, Code::E007001, "node B after its own revoke-all");
    a.clock.advance(Duration::from_millis(2_000));
    assert_code(session_ok(&a, &ust).await, Code::E007001, "node A once its cached entry expired");
}
