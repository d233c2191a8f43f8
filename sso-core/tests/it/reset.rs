//! Password reset (spec/users.md §6): create_token, access_token, change_password — lookups,
//! single use, lifetimes with the injected clock, effects and the audit trail.

use std::sync::Arc;

use sso_core::audit::Outcome;
use sso_core::config::UserSearchBy;
use sso_core::ids::UserId;
use sso_core::model::{ApprovalStatus, UserPatch};
use sso_core::secret::{Password, PrtToken, ResetKey, SecretStr};
use sso_core::service::NewUser;
use sso_core::service::notify::EventKind;
use sso_core::service::throttle::Key;
use sso_core::testing::{Fixture, PASSWORD};
use sso_core::time::NEVER;
use sso_core::{Code, SsoError};

use crate::common::*;

const NEW_PW: &str = "a brand new passphrase";

async fn user_with_email(f: &Fixture, name: &str, email: &str) -> UserId {
    let data = NewUser {
        username: Some(name.into()),
        password: Some(Password::new(PASSWORD)),
        email: Some(email.into()),
        ..Default::default()
    };
    f.sso.user().create_user(&f.operator(), data, true).await.unwrap().admin.unwrap().user_id
}

/// Tokens handed to the notifier so far.
fn tokens(f: &Fixture) -> Vec<(UserId, PrtToken)> {
    f.notifier
        .events()
        .into_iter()
        .filter(|e| e.kind == EventKind::PasswordReset)
        .map(|e| (e.user_id.clone(), e.token.clone().expect("a password_reset event carries the token")))
        .collect()
}

async fn token_for(f: &Fixture, credential: &str) -> PrtToken {
    let n = tokens(f).len();
    f.sso.password_reset().create_token(&f.anon(), credential).await.unwrap();
    let t = tokens(f);
    assert_eq!(t.len(), n + 1, "one token for {credential:?}");
    t.last().unwrap().1.clone()
}

/// Counts (and removes) every PRT in the store: the memory store has no listing call.
async fn drain_prts(f: &Fixture) -> u64 {
    f.sso.stores().resets.delete_expired_prts(NEVER, 1_000_000).await.unwrap()
}

fn refused(e: &SsoError, c: Code) {
    assert_eq!(e.real_code(), c, "{e:?}");
}

// ----- create_token ----------------------------------------------------------------------------

#[tokio::test]
async fn create_token_empty_or_unknown_credential_writes_nothing() {
    let f = Fixture::memory().await;
    user_with_email(&f, "alice", "alice@example.com").await;
    for cred in ["", "nobody", "alice@example.com", "ALICE"] {
        f.sso.password_reset().create_token(&f.anon(), cred).await.unwrap();
        let r = last(&f, "password_reset.create_token");
        assert_rec(&r, "password_reset.create_token", Outcome::Success, &[]);
        assert_eq!(r.details["found"], false);
        assert_eq!(r.target_user_id, None);
    }
    assert!(tokens(&f).is_empty());
    assert_eq!(drain_prts(&f).await, 0, "no PRT written");
    assert_no_secrets(&f, &["nobody", "alice@example.com", "ALICE"]);
    let mut ctx = f.anon();
    ctx.current_app = "NOPE".into();
    assert_eq!(code(f.sso.password_reset().create_token(&ctx, "alice").await), Code::E004001);
}

#[tokio::test]
async fn create_token_by_username() {
    let f = Fixture::memory().await;
    let alice = user_with_email(&f, "alice", "alice@example.com").await;
    let now = f.sso.now();
    let token = token_for(&f, "alice").await;
    assert!(token.is_well_formed());
    let ev = f.notifier.events().into_iter().find(|e| e.kind == EventKind::PasswordReset).unwrap();
    assert_eq!(ev.user_id, alice);
    assert_eq!(ev.username, "alice");
    assert_eq!(ev.email.as_deref(), Some("alice@example.com"));
    assert_eq!(ev.expiration_time, Some(now.add_secs(1440 * 60)));
    let prt = f.sso.stores().resets.get_prt(&token.hash()).await.unwrap().expect("committed before the reply");
    assert_eq!(prt.user_id, alice);
    assert_eq!(prt.creation_time, now);
    assert_eq!(prt.expiration_time, now.add_secs(1440 * 60));
    assert!(!prt.has_been_accessed && !prt.is_password_reset);
    let cc: serde_json::Value = serde_json::from_str(&prt.creation_ctx).unwrap();
    assert_eq!(cc["current_app"], "CRM");
    let r = last(&f, "password_reset.create_token");
    assert_rec(&r, "password_reset.create_token", Outcome::Success, &[]);
    assert_eq!(r.details["found"], true);
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    assert_no_secrets(&f, &[token.expose(), "alice@example.com"]);
}

#[tokio::test]
async fn create_token_by_email_and_username_or_email() {
    let f = fixture(|c| c.password_reset.user_search_by = UserSearchBy::Email).await;
    let alice = user_with_email(&f, "alice", "alice@example.com").await;
    assert_eq!(tokens(&f).len(), 0);
    f.sso.password_reset().create_token(&f.anon(), "alice").await.unwrap();
    assert!(tokens(&f).is_empty(), "usernames are not looked up");
    token_for(&f, "ALICE@Example.com").await;
    assert_eq!(tokens(&f)[0].0, alice);
    // Exactly one user must match.
    user_with_email(&f, "dup1", "dup@example.com").await;
    user_with_email(&f, "dup2", "dup@example.com").await;
    f.sso.password_reset().create_token(&f.anon(), "dup@example.com").await.unwrap();
    assert_eq!(tokens(&f).len(), 1);
    assert_eq!(last(&f, "password_reset.create_token").details["found"], false);

    let g = fixture(|c| c.password_reset.user_search_by = UserSearchBy::UsernameOrEmail).await;
    let alice = user_with_email(&g, "alice", "alice@example.com").await;
    // A user whose *username* is alice's e-mail: the username wins.
    let shadow = user_with_email(&g, "alice@example.com", "shadow@example.com").await;
    token_for(&g, "alice").await;
    token_for(&g, "alice@example.com").await;
    token_for(&g, "shadow@example.com").await;
    let owners: Vec<UserId> = tokens(&g).into_iter().map(|(u, _)| u).collect();
    assert_eq!(owners, [alice.clone(), shadow.clone(), shadow]);
}

#[tokio::test]
async fn create_token_finds_approved_users_only() {
    let f = fixture(|c| c.password_reset.user_search_by = UserSearchBy::UsernameOrEmail).await;
    let pending =
        NewUser { username: Some("pending".into()), email: Some("pending@example.com".into()), ..Default::default() };
    f.sso.user().create_user(&f.operator(), pending, false).await.unwrap();
    let rejected = user_with_email(&f, "rejected", "rejected@example.com").await;
    f.sso.user().reject_user(&f.operator(), rejected.as_str()).await.unwrap();
    for cred in ["pending", "pending@example.com", "rejected", "rejected@example.com"] {
        f.sso.password_reset().create_token(&f.anon(), cred).await.unwrap();
        assert_eq!(last(&f, "password_reset.create_token").details["found"], false, "{cred}");
    }
    assert!(tokens(&f).is_empty());
    assert_eq!(drain_prts(&f).await, 0);
}

// ----- access_token ----------------------------------------------------------------------------

#[tokio::test]
async fn access_token_once() {
    let f = Fixture::memory().await;
    let alice = f.create_user("alice", false).await;
    let token = token_for(&f, "alice").await;
    f.clock.advance(secs(60));
    let now = f.sso.now();
    let acc = f.sso.password_reset().access_token(&f.anon(), &token).await.unwrap();
    assert_eq!(acc.user_id, alice);
    assert!(acc.reset_key.is_well_formed());
    let prt = f.sso.stores().resets.get_prt(&token.hash()).await.unwrap().unwrap();
    assert!(prt.has_been_accessed);
    assert_eq!(prt.access_time, Some(now));
    assert_eq!(prt.reset_key_hash, Some(acc.reset_key.hash()));
    assert_eq!(prt.reset_key_exp_time, Some(now.add_secs(1800)));
    let r = last(&f, "password_reset.access_token");
    assert_rec(&r, "password_reset.access_token", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    // Again, or with an unknown or malformed token: E010001, shown to unauthenticated callers.
    for t in [token.clone(), PrtToken::generate().unwrap(), PrtToken::new("junk")] {
        let e = f.sso.password_reset().access_token(&f.anon(), &t).await.unwrap_err();
        refused(&e, Code::E010001);
        assert_eq!(e.unauthenticated_code(), Code::E010001);
        assert_rec(
            &last(&f, "password_reset.access_token"),
            "password_reset.access_token",
            Outcome::Denied,
            &["E010001"],
        );
    }
    assert_no_secrets(&f, &[token.expose(), acc.reset_key.expose()]);
}

#[tokio::test]
async fn access_token_expires_after_valid_for() {
    let f = fixture(|c| c.password_reset.valid_for = 10).await;
    f.create_user("alice", false).await;
    let token = token_for(&f, "alice").await;
    f.clock.advance(secs(10 * 60 - 1));
    let t2 = token_for(&f, "alice").await;
    f.clock.advance(secs(1));
    refused(&f.sso.password_reset().access_token(&f.anon(), &token).await.unwrap_err(), Code::E010001);
    f.sso.password_reset().access_token(&f.anon(), &t2).await.unwrap();
}

#[tokio::test]
async fn access_token_checks_the_account_state() {
    let f = Fixture::memory().await;
    let alice = f.create_user("alice", false).await;
    let token = token_for(&f, "alice").await;
    patch(&f, &alice, UserPatch { is_locked: Some(true), ..Default::default() }).await;
    let e = f.sso.password_reset().access_token(&f.anon(), &token).await.unwrap_err();
    refused(&e, Code::E005002);
    patch(
        &f,
        &alice,
        UserPatch { is_locked: Some(false), approval_status: Some(ApprovalStatus::Rejected), ..Default::default() },
    )
    .await;
    refused(&f.sso.password_reset().access_token(&f.anon(), &token).await.unwrap_err(), Code::E005004);
    // Expiry of the password is not checked.
    patch(
        &f,
        &alice,
        UserPatch {
            approval_status: Some(ApprovalStatus::Approved),
            password_expiry: Some(Some(f.sso.now().add_secs(-1))),
            ..Default::default()
        },
    )
    .await;
    f.sso.password_reset().access_token(&f.anon(), &token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn access_token_exactly_once_under_concurrency() {
    let f = Arc::new(Fixture::memory().await);
    f.create_user("alice", false).await;
    let token = token_for(&f, "alice").await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (f, token) = (f.clone(), token.clone());
        tasks.push(tokio::spawn(async move { f.sso.password_reset().access_token(&f.anon(), &token).await }));
    }
    let mut keys = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => keys.push(a.reset_key),
            Err(e) => refused(&e, Code::E010001),
        }
    }
    assert_eq!(keys.len(), 1, "exactly one caller wins");
    let prt = f.sso.stores().resets.get_prt(&token.hash()).await.unwrap().unwrap();
    assert_eq!(prt.reset_key_hash, Some(keys[0].hash()), "the stored key is the winner's");
    let recs = records(&f, "password_reset.access_token");
    assert_eq!(recs.len(), 20);
    assert_eq!(recs.iter().filter(|r| r.outcome == Outcome::Success).count(), 1);
}

// ----- change_password -------------------------------------------------------------------------

#[tokio::test]
async fn change_password_effects() {
    let f = Fixture::memory().await;
    let alice = f.create_user("alice", false).await;
    let key = enable_totp(&f, &alice).await;
    let s1 = f.login("alice", Some(&f.code_now(&key, 0))).await.unwrap().ust;
    // Three wrong passwords on the user key.
    for _ in 0..3 {
        assert_eq!(code(login_pw(&f, "alice", "wrong-password-x").await), Code::E005001);
    }
    assert!(f.sso.stores().counters.get(&Key::user("alice").key, f.sso.now()).await.unwrap().is_some());
    let token = token_for(&f, "alice").await;
    let acc = f.sso.password_reset().access_token(&f.anon(), &token).await.unwrap();
    f.clock.advance(secs(120));
    let now = f.sso.now();
    f.sso.password_reset().change_password(&f.anon(), &token, &acc.reset_key, &Password::new(NEW_PW)).await.unwrap();
    let r = last(&f, "password_reset.change_password");
    assert_rec(&r, "password_reset.change_password", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    let u = record(&f, &alice).await;
    assert!(!u.password_must_change);
    assert_eq!(u.password_last_set, now);
    assert_eq!(u.password_expiry, Some(now.add_secs(730 * 86_400)));
    assert!(u.is_totp_enabled, "TOTP stays as it was");
    let prt = f.sso.stores().resets.get_prt(&token.hash()).await.unwrap().unwrap();
    assert!(prt.is_password_reset);
    assert_eq!(prt.password_reset_time, Some(now));
    // All sessions revoked; the user key reset; the next login still needs a code.
    assert_eq!(code(f.sso.user().get_current_user(&f.as_user(&s1), false).await), Code::E007001);
    assert!(f.sso.stores().counters.get(&Key::user("alice").key, f.sso.now()).await.unwrap().is_none());
    assert_eq!(code(login_pw(&f, "alice", NEW_PW).await), Code::E005008);
    f.clock.advance(secs(30));
    let c = sso_core::secret::TotpCode::new(f.code_now(&key, 0));
    f.sso.user().login(&f.anon(), "alice", &Password::new(NEW_PW), None, Some(&c)).await.unwrap();
    assert!(f.notifier.events().iter().any(|e| e.kind == EventKind::PasswordChanged && e.user_id == alice));
    // Single use.
    let e = f
        .sso
        .password_reset()
        .change_password(&f.anon(), &token, &acc.reset_key, &Password::new("yet another passphrase"))
        .await
        .unwrap_err();
    refused(&e, Code::E010001);
    assert_no_secrets(&f, &[token.expose(), acc.reset_key.expose(), NEW_PW, PASSWORD]);
}

#[tokio::test]
async fn change_password_refusals() {
    let f = Fixture::memory().await;
    let alice = f.create_user("alice", false).await;
    f.create_user("bob", false).await;
    let token = token_for(&f, "alice").await;
    let other = token_for(&f, "bob").await;
    let pw = Password::new(NEW_PW);
    // Not accessed yet.
    let e = f
        .sso
        .password_reset()
        .change_password(&f.anon(), &token, &ResetKey::generate().unwrap(), &pw)
        .await
        .unwrap_err();
    refused(&e, Code::E010001);
    let acc = f.sso.password_reset().access_token(&f.anon(), &token).await.unwrap();
    let other_acc = f.sso.password_reset().access_token(&f.anon(), &other).await.unwrap();
    let before = record(&f, &alice).await;
    for (t, k) in [
        (&token, ResetKey::generate().unwrap()),
        (&token, ResetKey::new("junk")),
        (&token, other_acc.reset_key.clone()),
        (&PrtToken::generate().unwrap(), acc.reset_key.clone()),
        (&PrtToken::new("junk"), acc.reset_key.clone()),
    ] {
        let e = f.sso.password_reset().change_password(&f.anon(), t, &k, &pw).await.unwrap_err();
        refused(&e, Code::E010001);
        assert_eq!(e.unauthenticated_code(), Code::E010001);
        let r = last(&f, "password_reset.change_password");
        assert_rec(&r, "password_reset.change_password", Outcome::Denied, &["E010001"]);
    }
    // The password policy, shown per password.inform_if_invalid (default true).
    let e = f
        .sso
        .password_reset()
        .change_password(&f.anon(), &token, &acc.reset_key, &Password::new("short"))
        .await
        .unwrap_err();
    refused(&e, Code::E003002);
    assert_eq!(e.unauthenticated_code(), Code::E003002);
    assert_rec(
        &last(&f, "password_reset.change_password"),
        "password_reset.change_password",
        Outcome::Failure,
        &["E003002"],
    );
    // The account state (pipeline steps 6–9).
    patch(&f, &alice, UserPatch { is_locked: Some(true), ..Default::default() }).await;
    refused(
        &f.sso.password_reset().change_password(&f.anon(), &token, &acc.reset_key, &pw).await.unwrap_err(),
        Code::E005002,
    );
    patch(&f, &alice, UserPatch { is_locked: Some(false), ..Default::default() }).await;
    assert_eq!(record(&f, &alice).await.password_hash, before.password_hash, "nothing changed so far");
    // Refusals burnt nothing: the right key still works once.
    f.sso.password_reset().change_password(&f.anon(), &token, &acc.reset_key, &pw).await.unwrap();
    login_pw(&f, "alice", NEW_PW).await.unwrap();
    let mut ctx = f.anon();
    ctx.current_app = "NOPE".into();
    let e = f.sso.password_reset().change_password(&ctx, &other, &other_acc.reset_key, &pw).await.unwrap_err();
    refused(&e, Code::E004001);
}

#[tokio::test]
async fn reset_key_lifetime() {
    let f = Fixture::memory().await;
    f.create_user("alice", false).await;
    let pw = Password::new(NEW_PW);
    // password_change_session_duration (1800 s) after access.
    let token = token_for(&f, "alice").await;
    let acc = f.sso.password_reset().access_token(&f.anon(), &token).await.unwrap();
    f.clock.advance(secs(1800));
    refused(
        &f.sso.password_reset().change_password(&f.anon(), &token, &acc.reset_key, &pw).await.unwrap_err(),
        Code::E010001,
    );
    let token = token_for(&f, "alice").await;
    let acc = f.sso.password_reset().access_token(&f.anon(), &token).await.unwrap();
    f.clock.advance(secs(1799));
    f.sso.password_reset().change_password(&f.anon(), &token, &acc.reset_key, &pw).await.unwrap();
    // …but never past the PRT's own expiration.
    let g = fixture(|c| c.password_reset.valid_for = 10).await;
    g.create_user("bob", false).await;
    let token = token_for(&g, "bob").await;
    g.clock.advance(secs(5 * 60));
    let acc = g.sso.password_reset().access_token(&g.anon(), &token).await.unwrap();
    let prt = g.sso.stores().resets.get_prt(&token.hash()).await.unwrap().unwrap();
    assert_eq!(prt.reset_key_exp_time, Some(prt.expiration_time));
    g.clock.advance(secs(5 * 60));
    refused(
        &g.sso.password_reset().change_password(&g.anon(), &token, &acc.reset_key, &pw).await.unwrap_err(),
        Code::E010001,
    );
}
