//! Sessions (spec/sessions.md §2–§6): logout, logout-all, revoke, verify, renew, get, list,
//! idle and absolute expiry, renew-on-use and the cleanup pass.

use std::time::Duration;

use sso_core::Code;
use sso_core::audit::Outcome;
use sso_core::ids::SessionId;
use sso_core::model::{ApprovalStatus, AttrScope, SignUpStatus, UserPatch};
use sso_core::secret::{SecretStr, Ust};
use sso_core::service::{AttrInput, AttrTarget, ListTarget, SessionRef, UserUpdate};
use sso_core::testing::{Fixture, ust_text};
use sso_core::time::Timestamp;

use crate::common::*;

const MIN: u64 = 60;

async fn alive(f: &Fixture, ust: &Ust) -> bool {
    match f.sso.user().get_current_user(&f.as_user(ust), false).await {
        Ok(_) => true,
        Err(e) => {
            assert_eq!(e.real_code(), Code::E007001, "{e:?}");
            false
        }
    }
}

async fn expiration(f: &Fixture, ust: &Ust) -> Timestamp {
    f.sso.stores().sessions.get(&ust.session_id().unwrap()).await.unwrap().unwrap().expiration_time
}

// ----- logout ----------------------------------------------------------------------------------

#[tokio::test]
async fn logout_works_in_any_account_state() {
    let f = Fixture::memory().await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let sid = ust.session_id().unwrap();
    f.sso.attr().set(&f.as_user(&ust), AttrTarget::Session(None), AttrInput::new("k", 1.into())).await.unwrap();
    patch(
        &f,
        &alice,
        UserPatch {
            is_locked: Some(true),
            sign_up_status: Some(SignUpStatus::BeforeConfirmation),
            approval_status: Some(ApprovalStatus::Rejected),
            password_expiry: Some(Some(f.sso.now().add_secs(-1))),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(code(f.sso.user().get_current_user(&f.as_user(&ust), false).await), Code::E005002);
    f.sso.user().logout(&f.as_user(&ust)).await.unwrap();
    let r = last(&f, "user.logout");
    assert_rec(&r, "user.logout", Outcome::Success, &[]);
    assert_eq!(r.actor, alice.as_str());
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    assert_eq!(r.target_session_id.as_deref(), Some(sid.as_str()));
    assert_eq!(r.actor_session_id.as_deref(), Some(sid.as_str()));
    let s = f.sso.stores();
    assert!(s.sessions.get(&sid).await.unwrap().is_none(), "record deleted");
    assert!(
        s.session_attrs
            .get_many(AttrScope::Session, sid.as_str(), &["k".into()], f.sso.now())
            .await
            .unwrap()
            .is_empty()
    );
    assert_no_secrets(&f, &[&ust_text(&ust)]);
}

#[tokio::test]
async fn logout_unknown_ust_and_second_logout_give_e007001() {
    let f = Fixture::memory().await;
    let (_alice, ust) = f.user_with_session("alice", false).await;
    let other = f.login("alice", None).await.unwrap().ust;
    for bad in [None, Some(Ust::new("zust-not-a-ust")), Some(Ust::generate().unwrap())] {
        let ctx = match bad {
            Some(u) => f.as_user(&u),
            None => f.anon(),
        };
        let e = f.sso.session().logout(&ctx).await.unwrap_err();
        assert_eq!(e.real_code(), Code::E007001);
        let r = last(&f, "user.logout");
        assert_rec(&r, "user.logout", Outcome::Denied, &["E007001"]);
        assert_eq!(r.actor, "anonymous");
    }
    f.sso.session().logout(&f.as_user(&ust)).await.unwrap();
    assert_eq!(code(f.sso.user().logout(&f.as_user(&ust)).await), Code::E007001, "second logout");
    assert!(alive(&f, &other).await, "other sessions untouched");
    let mut ctx = f.as_user(&other);
    ctx.current_app = "NOPE".into();
    assert_eq!(code(f.sso.user().logout(&ctx).await), Code::E004001);
    assert!(alive(&f, &other).await);
}

#[tokio::test]
async fn logout_of_an_expired_session_gives_e007001() {
    let f = Fixture::memory().await;
    let (_alice, ust) = f.user_with_session("alice", false).await;
    f.clock.advance(secs(60 * MIN));
    let e = f.sso.user().logout(&f.as_user(&ust)).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E007001, "spec/sessions.md §2: unknown or expired UST → E007001");
    assert_rec(&last(&f, "user.logout"), "user.logout", Outcome::Denied, &["E007001"]);
}

// ----- logout_all ------------------------------------------------------------------------------

#[tokio::test]
async fn logout_all_self_with_and_without_keep_current() {
    let f = Fixture::memory().await;
    let (alice, s1) = f.user_with_session("alice", false).await;
    let s2 = f.login("alice", None).await.unwrap().ust;
    let s3 = f.login("alice", None).await.unwrap().ust;
    let (_bob, b1) = f.user_with_session("bob", false).await;
    let n = f.sso.session().logout_all(&f.as_user(&s1), None, true).await.unwrap();
    assert_eq!(n, 2);
    assert!(alive(&f, &s1).await);
    assert!(!alive(&f, &s2).await && !alive(&f, &s3).await);
    assert!(alive(&f, &b1).await, "other users untouched");
    let r = last(&f, "session.logout_all");
    assert_rec(&r, "session.logout_all", Outcome::Success, &[]);
    assert_eq!(r.details["keep_current"], true);
    assert_eq!(r.details["revoked"], 2);
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    // Own id is "self"; without keep_current the caller's session goes too.
    let s4 = f.login("alice", None).await.unwrap().ust;
    let n = f.sso.session().logout_all(&f.as_user(&s1), Some(alice.as_str()), false).await.unwrap();
    assert_eq!(n, 2);
    assert!(!alive(&f, &s1).await && !alive(&f, &s4).await);
    assert!(f.sso.stores().sessions.list_by_user(&alice).await.unwrap().is_empty());
}

#[tokio::test]
async fn logout_all_for_others() {
    let f = Fixture::memory().await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let (alice, a1) = f.user_with_session("alice", false).await;
    let a2 = f.login("alice", None).await.unwrap().ust;
    let (_bob, b1) = f.user_with_session("bob", false).await;
    // A regular user naming another: E005001, nothing revoked.
    let e = f.sso.session().logout_all(&f.as_user(&b1), Some(alice.as_str()), false).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E005001);
    assert_rec(&last(&f, "session.logout_all"), "session.logout_all", Outcome::Denied, &["E005001"]);
    assert!(alive(&f, &a1).await && alive(&f, &a2).await);
    // A super-user: any user (keep_current does not apply to someone else's sessions); unknown → E005001.
    let n = f.sso.session().logout_all(&f.as_user(&su_ust), Some(alice.as_str()), true).await.unwrap();
    assert_eq!(n, 2);
    assert!(!alive(&f, &a1).await && !alive(&f, &a2).await);
    assert!(alive(&f, &su_ust).await && alive(&f, &b1).await);
    let ghost = sso_core::ids::UserId::generate().unwrap();
    assert_eq!(code(f.sso.session().logout_all(&f.as_user(&su_ust), Some(ghost.as_str()), false).await), Code::E005001);
}

// ----- revoke ----------------------------------------------------------------------------------

#[tokio::test]
async fn revoke_by_session_id() {
    let f = Fixture::memory().await;
    let (alice, a1) = f.user_with_session("alice", false).await;
    let a2 = f.login("alice", None).await.unwrap();
    let (bob, b1) = f.user_with_session("bob", false).await;
    let b1_sid = b1.session_id().unwrap();
    let ctx = f.as_user(&a1);
    // A foreign id, a missing one and a malformed one all look alike.
    let foreign = f.sso.session().revoke(&ctx, b1_sid.as_str()).await.unwrap_err();
    let missing =
        f.sso.session().revoke(&ctx, Ust::generate().unwrap().session_id().unwrap().as_str()).await.unwrap_err();
    let malformed = f.sso.session().revoke(&ctx, "zses???").await.unwrap_err();
    assert_eq!(foreign.real_code(), Code::E007001);
    assert_eq!(foreign, missing);
    assert_eq!(foreign, malformed);
    let r = last(&f, "session.revoke");
    assert_rec(&r, "session.revoke", Outcome::Denied, &["E007001"]);
    assert!(alive(&f, &b1).await);
    // Own other session.
    f.sso.session().revoke(&ctx, a2.session_id.as_str()).await.unwrap();
    assert!(!alive(&f, &a2.ust).await);
    assert!(alive(&f, &a1).await);
    let r = last(&f, "session.revoke");
    assert_rec(&r, "session.revoke", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    assert_eq!(r.target_session_id.as_deref(), Some(a2.session_id.as_str()));
    // A super-user revokes anyone's.
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    f.sso.session().revoke(&f.as_user(&su_ust), b1_sid.as_str()).await.unwrap();
    assert!(!alive(&f, &b1).await);
    assert_eq!(last(&f, "session.revoke").target_user_id.as_deref(), Some(bob.as_str()));
    // Revoking one's current session is a logout.
    f.sso.session().revoke(&ctx, a1.session_id().unwrap().as_str()).await.unwrap();
    assert!(!alive(&f, &a1).await);
}

#[tokio::test]
async fn revoke_of_an_expired_session_gives_e007001() {
    let f = Fixture::memory().await;
    let (_alice, a1) = f.user_with_session("alice", false).await;
    f.clock.advance(secs(60 * MIN));
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let sid = a1.session_id().unwrap();
    assert!(f.sso.stores().sessions.get(&sid).await.unwrap().is_some(), "the record is still there");
    assert_eq!(code(f.sso.session().revoke(&f.as_user(&su_ust), sid.as_str()).await), Code::E007001);
}

// ----- verify ----------------------------------------------------------------------------------

#[tokio::test]
async fn verify_rules() {
    let f = Fixture::memory().await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let (alice, a1) = f.user_with_session("alice", false).await;
    let a2 = f.login("alice", None).await.unwrap().ust;
    let (_bob, b1) = f.user_with_session("bob", false).await;
    let actx = f.as_user(&a1);
    // A regular user: own UST only.
    assert!(f.sso.session().verify(&actx, &a1).await.unwrap());
    let r = last(&f, "session.verify");
    assert_rec(&r, "session.verify", Outcome::Success, &[]);
    assert_eq!(r.details["is_valid"], true);
    assert_eq!(r.target_session_id.as_deref(), Some(a1.session_id().unwrap().as_str()));
    for other in [&a2, &b1, &Ust::generate().unwrap()] {
        assert_eq!(code(f.sso.session().verify(&actx, other).await), Code::E005001);
    }
    assert_rec(&last(&f, "session.verify"), "session.verify", Outcome::Denied, &["E005001"]);
    // A super-user: any target; an invalid one is `false`, not an error.
    let sctx = f.as_user(&su_ust);
    assert!(f.sso.session().verify(&sctx, &b1).await.unwrap());
    assert!(!f.sso.session().verify(&sctx, &Ust::generate().unwrap()).await.unwrap());
    assert!(!f.sso.session().verify(&sctx, &Ust::new("garbage")).await.unwrap());
    assert_eq!(last(&f, "session.verify").details["is_valid"], false);
    patch(&f, &alice, UserPatch { is_locked: Some(true), ..Default::default() }).await;
    assert!(!f.sso.session().verify(&sctx, &a2).await.unwrap(), "steps 6–10 apply to the target");
    patch(&f, &alice, UserPatch { is_locked: Some(false), ..Default::default() }).await;
    assert!(f.sso.session().verify(&sctx, &a2).await.unwrap());
    f.sso.session().logout(&f.as_user(&a2)).await.unwrap();
    assert!(!f.sso.session().verify(&sctx, &a2).await.unwrap());
    // The caller's pipeline still applies.
    assert_eq!(code(f.sso.session().verify(&f.anon(), &b1).await), Code::E007001);
}

#[tokio::test]
async fn verify_never_renews_the_target() {
    let f = fixture(|c| c.session.renew_on_use = true).await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let (_alice, a1) = f.user_with_session("alice", false).await;
    let before = expiration(&f, &a1).await;
    f.clock.advance(secs(30 * MIN));
    assert!(f.sso.session().verify(&f.as_user(&su_ust), &a1).await.unwrap());
    assert_eq!(expiration(&f, &a1).await, before);
    f.clock.advance(secs(30 * MIN));
    assert!(!f.sso.session().verify(&f.as_user(&su_ust), &a1).await.unwrap(), "expired at its old deadline");
}

// ----- renew -----------------------------------------------------------------------------------

#[tokio::test]
async fn renew_moves_the_idle_deadline_within_the_absolute_limit() {
    let f = fixture(|c| {
        c.session.expiry = 60;
        c.session.max_lifetime = 90;
    })
    .await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let t0 = f.sso.now();
    assert_eq!(expiration(&f, &ust).await, t0.add_secs(3600));
    f.clock.advance(secs(20 * MIN));
    let exp = f.sso.session().renew(&f.as_user(&ust)).await.unwrap();
    assert_eq!(exp, t0.add_secs(80 * 60));
    assert_eq!(expiration(&f, &ust).await, exp);
    let r = last(&f, "session.renew");
    assert_rec(&r, "session.renew", Outcome::Success, &[]);
    assert_eq!(r.details["expiration_time"], exp.to_zato());
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    assert_eq!(r.target_session_id.as_deref(), Some(ust.session_id().unwrap().as_str()));
    f.clock.advance(secs(30 * MIN));
    let exp = f.sso.session().renew(&f.as_user(&ust)).await.unwrap();
    assert_eq!(exp, t0.add_secs(90 * 60), "capped at creation + max_lifetime");
    f.clock.advance(secs(20 * MIN));
    let exp = f.sso.session().renew(&f.as_user(&ust)).await.unwrap();
    assert_eq!(exp, t0.add_secs(90 * 60), "never past the absolute limit");
    f.clock.advance(secs(20 * MIN));
    assert_eq!(code(f.sso.session().renew(&f.as_user(&ust)).await), Code::E007001);
    assert!(!alive(&f, &ust).await);
}

#[tokio::test]
async fn renew_history_is_bounded_by_history_max() {
    let f = fixture(|c| c.session.history_max = 2).await;
    let (_alice, ust) = f.user_with_session("alice", false).await;
    let t0 = f.sso.now();
    for _ in 0..3 {
        f.clock.advance(secs(MIN));
        f.sso.session().renew(&f.as_user(&ust).with_user_agent("Renewer/1")).await.unwrap();
    }
    let list = f.sso.session().get_list(&f.as_user(&ust), ListTarget::Own).await.unwrap();
    let h = &list[0].session_state_change_list;
    assert_eq!(h.len(), 3, "login entry + history_max renewals");
    assert_eq!((h[0].ctx_source.as_str(), h[0].idx, h[0].timestamp_utc), ("login", 1, t0));
    assert_eq!((h[1].ctx_source.as_str(), h[1].idx, h[1].timestamp_utc), ("renew", 2, t0.add_secs(120)));
    assert_eq!((h[2].ctx_source.as_str(), h[2].idx, h[2].timestamp_utc), ("renew", 3, t0.add_secs(180)));
    assert_eq!(h[2].user_agent.as_deref(), Some("Renewer/1"));
    // history_max = 0 (default): only the login entry.
    let g = Fixture::memory().await;
    let (_b, bust) = g.user_with_session("bob", false).await;
    g.sso.session().renew(&g.as_user(&bust)).await.unwrap();
    let list = g.sso.session().get_list(&g.as_user(&bust), ListTarget::Own).await.unwrap();
    assert_eq!(list[0].session_state_change_list.len(), 1);
}

// ----- get -------------------------------------------------------------------------------------

#[tokio::test]
async fn get_by_ust_and_by_id() {
    let f = Fixture::memory().await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let (_alice, a1) = f.user_with_session("alice", false).await;
    let a2 = f.login("alice", None).await.unwrap();
    let (bob, b1) = f.user_with_session("bob", false).await;
    let actx = f.as_user(&a1);
    let v = f.sso.session().get(&actx, SessionRef::Ust(a1.clone())).await.unwrap();
    assert_eq!(v.session_id, a1.session_id().unwrap());
    assert_eq!((v.auth_type.as_str(), v.auth_principal.as_str()), ("default", "alice"));
    assert_eq!((v.current_app.as_str(), v.remote_addr.as_str()), ("CRM", "10.0.0.1"));
    let v = f.sso.session().get(&actx, SessionRef::Id(a2.session_id.to_string())).await.unwrap();
    assert_eq!(v.session_id, a2.session_id);
    assert_eq!(v.expiration_time, a2.expiration_time);
    // Foreign targets look like missing ones.
    let b1_sid = b1.session_id().unwrap().to_string();
    for target in [
        SessionRef::Ust(b1.clone()),
        SessionRef::Id(b1_sid.clone()),
        SessionRef::Id("garbage".into()),
        SessionRef::Ust(Ust::generate().unwrap()),
    ] {
        assert_eq!(code(f.sso.session().get(&actx, target).await), Code::E007001);
    }
    assert_rec(&last(&f, "session.get"), "session.get", Outcome::Denied, &["E007001"]);
    // A super-user sees anyone's.
    let v = f.sso.session().get(&f.as_user(&su_ust), SessionRef::Id(b1_sid.clone())).await.unwrap();
    assert_eq!(v.auth_principal, "bob");
    let r = last(&f, "session.get");
    assert_rec(&r, "session.get", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(bob.as_str()));
    assert_eq!(r.target_session_id.as_deref(), Some(b1_sid.as_str()));
    // Expired or logged-out targets: E007001.
    f.sso.user().logout(&f.as_user(&b1)).await.unwrap();
    assert_eq!(code(f.sso.session().get(&f.as_user(&su_ust), SessionRef::Id(b1_sid)).await), Code::E007001);
}

// ----- get_list --------------------------------------------------------------------------------

#[tokio::test]
async fn get_list_newest_first_without_usts() {
    let f = Fixture::memory().await;
    let (alice, a1) = f.user_with_session("alice", false).await;
    f.clock.advance(secs(10));
    let a2 = f.login("alice", None).await.unwrap().ust;
    f.clock.advance(secs(10));
    let pw = sso_core::secret::Password::new(sso_core::testing::PASSWORD);
    let a3 = f.sso.user().login(&anon_ua(&f), "alice", &pw, None, None).await.unwrap().ust;
    f.clock.advance(secs(10));
    let list = f.sso.session().get_list(&f.as_user(&a2), ListTarget::Own).await.unwrap();
    let ids: Vec<SessionId> = list.iter().map(|i| i.view.session_id.clone()).collect();
    assert_eq!(ids, [a3.session_id().unwrap(), a2.session_id().unwrap(), a1.session_id().unwrap()], "newest first");
    let current: Vec<bool> = list.iter().map(|i| i.is_current).collect();
    assert_eq!(current, [false, true, false]);
    let first = &list[0];
    assert_eq!(first.session_state_change_list.len(), 1);
    let login = &first.session_state_change_list[0];
    assert_eq!((login.ctx_source.as_str(), login.idx), ("login", 1));
    assert_eq!(login.user_agent.as_deref(), Some("Tester/2"));
    assert_eq!(login.timestamp_utc, first.view.creation_time);
    assert_eq!(first.ext_session_id, "");
    let json = serde_json::to_string(&list).unwrap();
    for u in [&a1, &a2, &a3] {
        assert!(!json.contains(u.expose()), "a list never hands out a UST");
    }
    let r = last(&f, "session.get_list");
    assert_rec(&r, "session.get_list", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    // Revoked and expired sessions are not listed.
    f.sso.user().logout(&f.as_user(&a3)).await.unwrap();
    f.clock.advance(secs(60 * MIN - 25));
    let list = f.sso.session().get_list(&f.as_user(&a2), ListTarget::Own).await.unwrap();
    assert_eq!(list.len(), 1, "a1 expired, a3 logged out");
    assert!(list[0].is_current);
    assert_no_secrets(&f, &[a1.expose(), a2.expose(), a3.expose()]);
}

fn anon_ua(f: &Fixture) -> sso_core::CallCtx {
    f.anon().with_user_agent("Tester/2")
}

#[tokio::test]
async fn get_list_targets() {
    let f = Fixture::memory().await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let (alice, a1) = f.user_with_session("alice", false).await;
    let a2 = f.login("alice", None).await.unwrap().ust;
    let (bob, b1) = f.user_with_session("bob", false).await;
    let actx = f.as_user(&a1);
    assert_eq!(f.sso.session().get_list(&actx, ListTarget::Ust(a2.clone())).await.unwrap().len(), 2);
    assert_eq!(f.sso.session().get_list(&actx, ListTarget::User(alice.to_string())).await.unwrap().len(), 2);
    assert_eq!(code(f.sso.session().get_list(&actx, ListTarget::User(bob.to_string())).await), Code::E005001);
    assert_eq!(code(f.sso.session().get_list(&actx, ListTarget::Ust(b1.clone())).await), Code::E005001);
    assert_eq!(code(f.sso.session().get_list(&actx, ListTarget::Ust(Ust::generate().unwrap())).await), Code::E007001);
    assert_eq!(code(f.sso.session().get_list(&actx, ListTarget::Ust(Ust::new("junk"))).await), Code::E007001);
    let sctx = f.as_user(&su_ust);
    let l = f.sso.session().get_list(&sctx, ListTarget::User(bob.to_string())).await.unwrap();
    assert_eq!(l.len(), 1);
    assert!(!l[0].is_current);
    let l = f.sso.session().get_list(&sctx, ListTarget::Ust(a1.clone())).await.unwrap();
    assert_eq!(l.len(), 2);
    let ghost = sso_core::ids::UserId::generate().unwrap();
    assert_eq!(code(f.sso.session().get_list(&sctx, ListTarget::User(ghost.to_string())).await), Code::E005001);
    assert_eq!(code(f.sso.session().get_list(&sctx, ListTarget::User("junk".into())).await), Code::E005001);
    assert_rec(&last(&f, "session.get_list"), "session.get_list", Outcome::Denied, &["E005001"]);
}

// ----- expiry ----------------------------------------------------------------------------------

#[tokio::test]
async fn idle_expiry() {
    let f = Fixture::memory().await;
    let (_alice, ust) = f.user_with_session("alice", false).await;
    f.clock.advance(secs(60 * MIN - 1));
    assert!(alive(&f, &ust).await, "calls do not renew by default");
    f.clock.advance(secs(1));
    assert!(!alive(&f, &ust).await, "now ≥ expiration_time");
    assert_eq!(code(f.sso.session().renew(&f.as_user(&ust)).await), Code::E007001, "too late to renew");
}

#[tokio::test]
async fn absolute_expiry_beats_renewals() {
    let f = fixture(|c| {
        c.session.expiry = 60;
        c.session.max_lifetime = 120;
    })
    .await;
    let (_alice, ust) = f.user_with_session("alice", false).await;
    for _ in 0..5 {
        f.clock.advance(secs(23 * MIN));
        f.sso.session().renew(&f.as_user(&ust)).await.unwrap();
    }
    f.clock.advance(secs(4 * MIN + 59));
    assert!(alive(&f, &ust).await);
    f.clock.advance(secs(1));
    assert!(!alive(&f, &ust).await, "creation + max_lifetime reached");
}

#[tokio::test]
async fn renew_on_use_extends_every_call() {
    let f = fixture(|c| c.session.renew_on_use = true).await;
    let (_alice, ust) = f.user_with_session("alice", false).await;
    for _ in 0..4 {
        f.clock.advance(secs(50 * MIN));
        assert!(alive(&f, &ust).await);
        assert_eq!(expiration(&f, &ust).await, f.sso.now().add_secs(3600));
    }
    f.clock.advance(secs(60 * MIN));
    assert!(!alive(&f, &ust).await);
    // Still capped by the absolute limit (12 h by default).
    let (_bob, b) = f.user_with_session("bob", false).await;
    let created = f.sso.now();
    for _ in 0..14 {
        f.clock.advance(secs(50 * MIN));
        assert!(alive(&f, &b).await);
    }
    assert_eq!(expiration(&f, &b).await, created.add_secs(720 * 60));
    f.clock.advance(secs(50 * MIN));
    assert!(!alive(&f, &b).await, "past 720 minutes");
}

// ----- cleanup ---------------------------------------------------------------------------------

#[tokio::test]
async fn cleanup_removes_expired_sessions_attributes_and_prts() {
    let f = Fixture::memory().await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let sid = ust.session_id().unwrap();
    let ctx = f.as_user(&ust);
    f.sso.attr().set(&ctx, AttrTarget::Session(None), AttrInput::new("s", 1.into())).await.unwrap();
    let mut short = AttrInput::new("short", 2.into());
    short.expiration = Some(10);
    f.sso.attr().set(&ctx, AttrTarget::User(None), short).await.unwrap();
    f.sso.attr().set(&ctx, AttrTarget::User(None), AttrInput::new("keep", 3.into())).await.unwrap();
    f.sso.password_reset().create_token(&f.anon(), "alice").await.unwrap();
    let prt = f.notifier.events().into_iter().find_map(|e| e.token).unwrap();
    let s = f.sso.stores();
    assert_eq!(f.sso.cleanup().await.unwrap(), 0, "nothing expired yet");
    f.clock.advance(secs(25 * 60 * MIN));
    let (_bob, fresh) = f.user_with_session("bob", false).await;
    let n = f.sso.cleanup().await.unwrap();
    assert!(n >= 3, "the session (with its attribute), the user attribute and the PRT: {n}");
    assert!(s.sessions.get(&sid).await.unwrap().is_none());
    assert!(s.resets.get_prt(&prt.hash()).await.unwrap().is_none());
    let far_past = Timestamp::from_secs(0);
    assert!(
        s.session_attrs.get_many(AttrScope::Session, sid.as_str(), &["s".into()], far_past).await.unwrap().is_empty()
    );
    let left = s
        .user_attrs
        .get_many(AttrScope::User, alice.as_str(), &["short".into(), "keep".into()], far_past)
        .await
        .unwrap();
    assert_eq!(left.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["keep"]);
    assert!(alive(&f, &fresh).await, "live sessions stay");
    assert_eq!(f.sso.cleanup().await.unwrap(), 0, "idempotent");
}

// ----- session.user_cache_ms (spec/concepts.md §5) ----------------------------------------------

/// With the per-node user cache on, a change made through this node applies to the very next
/// call; a change made elsewhere (another node, or straight in the store) applies once the
/// cached entry is older than `user_cache_ms`.
#[tokio::test]
async fn user_cache_sees_own_writes_at_once_and_others_after_its_lifetime() {
    let stores = sso_core::memory::stores();
    let a = Fixture::with(stores.clone(), |c| c.session.user_cache_ms = 5_000).await;
    let b = a.second_node(stores).await;
    let (_, admin) = a.user_with_session("admin", true).await;
    let (alice, ust) = a.user_with_session("alice", false).await;
    let shown = |f: &Fixture, ust: &Ust| {
        let ctx = f.as_user(ust);
        let sso = f.sso.clone();
        async move { sso.user().get_current_user(&ctx, false).await.unwrap().display_name }
    };
    let rename = |f: &Fixture, admin: &Ust, name: &str| {
        let (ctx, sso, id) = (f.as_user(admin), f.sso.clone(), alice.to_string());
        let data = UserUpdate { display_name: Some(Some(name.to_owned())), ..Default::default() };
        async move { sso.user().update_user_by_id(&ctx, &id, data).await.unwrap() }
    };
    assert_eq!(shown(&a, &ust).await, None, "cached on node A now");

    // Through node A: applies to A's next call.
    rename(&a, &admin, "one").await;
    assert_eq!(shown(&a, &ust).await.as_deref(), Some("one"));

    // Through node B: node A answers from its cache until the entry is 5 s old.
    rename(&b, &admin, "two").await;
    assert_eq!(shown(&b, &ust).await.as_deref(), Some("two"));
    assert_eq!(shown(&a, &ust).await.as_deref(), Some("one"), "node A has not read node B's write yet");
    a.clock.advance(Duration::from_millis(4_999));
    assert_eq!(shown(&a, &ust).await.as_deref(), Some("one"), "still within the lifetime");
    a.clock.advance(Duration::from_millis(1));
    assert_eq!(shown(&a, &ust).await.as_deref(), Some("two"));

    // Locking through node A (it revokes the sessions) ends the session on A at once.
    a.sso.user().lock_user(&a.as_user(&admin), alice.as_str()).await.unwrap();
    assert!(!alive(&a, &ust).await);
    a.sso.user().unlock_user(&a.as_user(&admin), alice.as_str()).await.unwrap();
    let ust = a.login("alice", None).await.unwrap().ust;
    assert!(alive(&a, &ust).await);

    // A revoke-all through node A ends the session on A at once (the epoch moved).
    let ust2 = a.login("alice", None).await.unwrap().ust;
    assert!(alive(&a, &ust2).await);
    a.sso.session().logout_all(&a.as_user(&ust2), None, false).await.unwrap();
    assert!(!alive(&a, &ust).await);
    assert!(!alive(&a, &ust2).await);
}

/// Off by default: a change straight in the store applies to the next call.
#[tokio::test]
async fn without_user_cache_every_call_reads_the_user() {
    let f = Fixture::memory().await;
    assert_eq!(f.sso.config().session.user_cache_ms, 0);
    let (alice, ust) = f.user_with_session("alice", false).await;
    assert!(alive(&f, &ust).await);
    patch(&f, &alice, UserPatch { is_locked: Some(true), ..Default::default() }).await;
    assert_eq!(code(f.sso.user().get_current_user(&f.as_user(&ust), false).await), Code::E005002);
}
