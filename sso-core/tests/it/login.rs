//! Login (spec/sessions.md §1): each ordered step, the order between them, and the unknown-user
//! path doing the same hashing work as a wrong password.

use sso_core::audit::Outcome;
use sso_core::config::Config;
use sso_core::crypto::password::{self, HashParams};
use sso_core::ids::UserId;
use sso_core::model::UserPatch;
use sso_core::secret::{Password, TotpCode, TotpKey};
use sso_core::service::{ImportRow, UserUpdate};
use sso_core::testing::{Fixture, PASSWORD, anon_from};
use sso_core::{Code, SsoError};

fn code(r: Result<impl std::fmt::Debug, SsoError>) -> Code {
    r.unwrap_err().real_code()
}

async fn fixture(tune: impl FnOnce(&mut Config)) -> Fixture {
    Fixture::with(sso_core::memory::stores(), tune).await
}

async fn patch(f: &Fixture, id: &UserId, p: UserPatch) {
    let mut tx = f.sso.stores().users.begin().await.unwrap();
    tx.update_user(id, &p).await.unwrap();
    tx.commit().await.unwrap();
}

fn last_login(f: &Fixture) -> sso_core::audit::AuditRecord {
    f.audit.records().into_iter().rfind(|r| r.op == "user.login").unwrap()
}

async fn totp_user(f: &Fixture, name: &str) -> (UserId, TotpKey) {
    let id = f.create_user(name, false).await;
    let key = TotpKey::parse("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
    f.sso.user().reset_totp_key(&f.operator(), Some(&id), Some(key.expose_base32()), None).await.unwrap();
    let upd = UserUpdate { is_totp_enabled: Some(Some(true)), ..Default::default() };
    f.sso.user().update_user_by_id(&f.operator(), id.as_str(), upd).await.unwrap();
    (id, key)
}

async fn login_pw(f: &Fixture, user: &str, pw: &str) -> sso_core::SsoResult<sso_core::service::views::SessionInfo> {
    f.sso.user().login(&f.anon(), user, &Password::new(pw), None, None).await
}

#[tokio::test]
async fn success_returns_a_session_and_audits_it() {
    let f = Fixture::memory().await;
    let id = f.create_user("alice", false).await;
    let s = f.login("alice", None).await.unwrap();
    assert_eq!(s.user_id, id);
    assert_eq!(s.username, "alice");
    assert!(s.ust.is_well_formed());
    assert_eq!(Some(s.session_id.clone()), s.ust.session_id());
    assert_eq!(s.expiration_time, s.creation_time.plus(std::time::Duration::from_secs(3600)));
    let r = last_login(&f);
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(r.target_session_id.as_deref(), Some(s.session_id.as_str()));
    assert_eq!(r.details["username"], "alice");
    assert_eq!(r.details["totp"], false);
}

#[tokio::test]
async fn step1_unknown_app() {
    let f = Fixture::memory().await;
    f.create_user("alice", false).await;
    let mut ctx = f.anon();
    ctx.current_app = "ERP".into();
    let before = f.sso.password_verifications();
    let e = f.sso.user().login(&ctx, "alice", &Password::new(PASSWORD), None, None).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E004001);
    assert_eq!(f.sso.password_verifications(), before, "refused before any hashing");
    let f = fixture(|c| c.apps.inform_if_app_invalid = false).await;
    let mut ctx = f.anon();
    ctx.current_app = "ERP".into();
    assert_eq!(code(f.sso.user().login(&ctx, "x", &Password::new("y"), None, None).await), Code::E005001);
}

#[tokio::test]
async fn step2_empty_credentials() {
    let f = Fixture::memory().await;
    f.create_user("alice", false).await;
    assert_eq!(code(login_pw(&f, "", PASSWORD).await), Code::E005001);
    assert_eq!(code(login_pw(&f, "alice", "").await), Code::E005001);
    assert_eq!(last_login(&f).reason.as_deref(), Some("empty_credentials"));
    assert_eq!(f.sso.password_verifications(), 0);
}

#[tokio::test]
async fn step3_throttled_before_the_password_is_checked() {
    let f = Fixture::memory().await;
    f.create_user("alice", false).await;
    // user policy: 3 free attempts, then delays; 10 → lockout.
    for _ in 0..4 {
        assert_eq!(code(login_pw(&f, "alice", "wrong-password-x").await), Code::E005001);
    }
    let before = f.sso.password_verifications();
    let e = f.login("alice", None).await.unwrap_err();
    assert!(matches!(e, SsoError::Throttled { .. }), "{e:?}");
    assert_eq!(f.sso.password_verifications(), before, "no password evaluated while blocked");
    // After the delay the right password works and resets the key.
    f.clock.advance(std::time::Duration::from_secs(2));
    f.login("alice", None).await.unwrap();
    for _ in 0..3 {
        let _ = login_pw(&f, "alice", "wrong-password-x").await;
    }
    f.login("alice", None).await.unwrap();
}

#[tokio::test]
async fn step3_unknown_usernames_are_throttled_like_known_ones() {
    let f = Fixture::memory().await;
    f.create_user("alice", false).await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..6 {
        known.push(login_pw(&f, "alice", "wrong-password-x").await.unwrap_err());
        unknown.push(login_pw(&f, "nobody-here", "wrong-password-x").await.unwrap_err());
    }
    let shape = |v: &[SsoError]| v.iter().map(|e| matches!(e, SsoError::Throttled { .. })).collect::<Vec<_>>();
    assert_eq!(shape(&known), shape(&unknown));
    assert!(shape(&known).contains(&true));
}

#[tokio::test]
async fn step5_unknown_user_takes_the_same_hashing_work_as_a_wrong_password() {
    let f = Fixture::memory().await;
    f.create_user("alice", false).await;
    let v0 = f.sso.password_verifications();
    let wrong = login_pw(&f, "alice", "wrong-password-x").await.unwrap_err();
    let v1 = f.sso.password_verifications();
    let unknown = login_pw(&f, "nobody", "wrong-password-x").await.unwrap_err();
    let v2 = f.sso.password_verifications();
    assert_eq!(v1 - v0, 1, "a wrong password is verified once");
    assert_eq!(v2 - v1, 1, "an unknown user runs one dummy verification");
    assert_eq!(wrong, SsoError::not_allowed(sso_core::Reason::BadPassword));
    assert_eq!(unknown, SsoError::not_allowed(sso_core::Reason::UnknownUser));
    assert_eq!(wrong.real_code(), unknown.real_code());
    let recs: Vec<_> = f.audit.records().into_iter().filter(|r| r.op == "user.login").collect();
    assert_eq!(recs[0].reason.as_deref(), Some("bad_password"));
    assert_eq!(recs[1].reason.as_deref(), Some("unknown_user"));
}

#[tokio::test]
async fn step6_totp_missing_wrong_and_replayed() {
    let f = Fixture::memory().await;
    let (_id, key) = totp_user(&f, "alice").await;
    assert_eq!(code(f.login("alice", None).await), Code::E005008);
    assert_eq!(last_login(&f).reason.as_deref(), Some("totp_missing"));
    let good = f.code_now(&key, 0);
    let wrong = if good == "000000" { "000001" } else { "000000" };
    assert_eq!(code(f.login("alice", Some(wrong)).await), Code::E005001);
    assert_eq!(last_login(&f).reason.as_deref(), Some("totp_invalid"));
    f.login("alice", Some(&good)).await.unwrap();
    assert_eq!(last_login(&f).details["totp"], true);
    assert_eq!(code(f.login("alice", Some(&good)).await), Code::E005001);
    assert_eq!(last_login(&f).reason.as_deref(), Some("totp_replay"));
    // A wrong password never reaches the TOTP step.
    let e = f
        .sso
        .user()
        .login(&f.anon(), "alice", &Password::new("nope-nope-nope"), None, Some(&TotpCode::new(&good)))
        .await;
    assert_eq!(last_login(&f).reason.as_deref(), Some("bad_password"));
    assert_eq!(code(e), Code::E005001);
}

#[tokio::test]
async fn step6_totp_missing_hidden_when_configured() {
    let f = fixture(|c| c.login.inform_if_totp_missing = false).await;
    totp_user(&f, "alice").await;
    assert_eq!(code(f.login("alice", None).await), Code::E005001);
}

#[tokio::test]
async fn step6_window_accepts_previous_step_and_rejects_next_by_default() {
    let f = Fixture::memory().await;
    let (_id, key) = totp_user(&f, "alice").await;
    let next = f.code_now(&key, 1);
    assert_eq!(code(f.login("alice", Some(&next)).await), Code::E005001);
    let prev = f.code_now(&key, -1);
    f.login("alice", Some(&prev)).await.unwrap();
    // After step T−1 was used, T is still fresh; after T, T−1 is refused.
    let cur = f.code_now(&key, 0);
    f.login("alice", Some(&cur)).await.unwrap();
    f.clock.advance(std::time::Duration::from_secs(30));
    assert_eq!(code(f.login("alice", Some(&cur)).await), Code::E005001, "T−1 after T was used");
}

#[tokio::test]
async fn step6_window_zero_refuses_previous_step() {
    let f = fixture(|c| c.totp.window_back = 0).await;
    let (_id, key) = totp_user(&f, "alice").await;
    assert_eq!(code(f.login("alice", Some(&f.code_now(&key, -1))).await), Code::E005001);
    f.login("alice", Some(&f.code_now(&key, 0))).await.unwrap();
}

#[tokio::test]
async fn step6_malformed_codes_are_refused_and_counted() {
    let f = fixture(|c| {
        c.throttle.totp.free_attempts = 50;
        c.throttle.totp.lockout_after = 60;
        // A right password with a wrong code still counts on the `user` key (reset only on success).
        c.throttle.user.free_attempts = 50;
        c.throttle.user.lockout_after = 60;
    })
    .await;
    let (id, key) = totp_user(&f, "alice").await;
    let good = f.code_now(&key, 0);
    let trimmed = good.trim_start_matches('0').to_owned();
    for bad in [
        format!(" {good}"),
        format!("{good}\n"),
        format!("+{}", &good[1..]),
        "０８１８０４".into(),
        format!("{good}5"),
        trimmed,
    ] {
        if bad == good {
            continue;
        }
        assert_eq!(code(f.login("alice", Some(&bad)).await), Code::E005001, "{bad:?}");
    }
    let (n, _) = f.sso.stores().counters.get(&format!("totp:{id}"), f.sso.now()).await.unwrap().unwrap();
    assert!(n >= 5, "each malformed code counted: {n}");
    f.login("alice", Some(&good)).await.unwrap();
    let left = f.sso.stores().counters.get(&format!("totp:{id}"), f.sso.now()).await.unwrap();
    assert!(left.is_none(), "the successful login clears the counted totp key: {left:?}");
}

#[tokio::test]
async fn step7_app_not_allowed_for_login() {
    let f = fixture(|c| {
        c.apps.all = vec!["CRM".into(), "ERP".into()];
        c.apps.login_allowed = vec!["CRM".into()];
    })
    .await;
    f.create_user("alice", false).await;
    let mut ctx = f.anon();
    ctx.current_app = "ERP".into();
    let e = f.sso.user().login(&ctx, "alice", &Password::new(PASSWORD), None, None).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E004001);
    assert_eq!(last_login(&f).reason.as_deref(), Some("app_not_allowed"));
    // With a wrong password the app rule is not reached: the answer is the generic one.
    let e = f.sso.user().login(&ctx, "alice", &Password::new("wrong-password-x"), None, None).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E005001);
}

#[tokio::test]
async fn step8_address_allow_list() {
    let f = fixture(|c| {
        c.user_address_list.insert("alice".into(), sso_core::config::AddressEntry::List(vec!["10.0.0.0/8".into()]));
        c.user_address_list.insert("bob".into(), sso_core::config::AddressEntry::Any("*".into()));
    })
    .await;
    f.create_user("alice", false).await;
    f.create_user("bob", false).await;
    let outside = anon_from("192.168.1.5");
    let e = f.sso.user().login(&outside, "alice", &Password::new(PASSWORD), None, None).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E005001);
    assert_eq!(last_login(&f).reason.as_deref(), Some("address_not_allowed"));
    f.sso.user().login(&anon_from("10.9.9.9"), "alice", &Password::new(PASSWORD), None, None).await.unwrap();
    f.sso.user().login(&outside, "bob", &Password::new(PASSWORD), None, None).await.unwrap();
    let strict = fixture(|c| c.login.reject_if_not_listed = true).await;
    strict.create_user("carol", false).await;
    assert_eq!(code(strict.login("carol", None).await), Code::E005001);
}

#[tokio::test]
async fn step9_locked_only_after_the_password() {
    let f = Fixture::memory().await;
    let (su, su_ust) = f.user_with_session("root-admin", true).await;
    let _ = su;
    let alice = f.create_user("alice", false).await;
    f.sso.user().lock_user(&f.as_user(&su_ust), alice.as_str()).await.unwrap();
    assert_eq!(code(f.login("alice", None).await), Code::E005002);
    assert_eq!(code(login_pw(&f, "alice", "wrong-password-x").await), Code::E005001, "no state without the password");
    let hidden = fixture(|c| c.login.inform_if_locked = false).await;
    let id = hidden.create_user("alice", false).await;
    patch(&hidden, &id, UserPatch { is_locked: Some(true), ..Default::default() }).await;
    assert_eq!(code(hidden.login("alice", None).await), Code::E005001);
}

#[tokio::test]
async fn step10_and_11_signup_and_approval_state() {
    let f = Fixture::memory().await;
    let id = f.create_user("alice", false).await;
    patch(
        &f,
        &id,
        UserPatch { sign_up_status: Some(sso_core::model::SignUpStatus::BeforeConfirmation), ..Default::default() },
    )
    .await;
    assert_eq!(code(f.login("alice", None).await), Code::E005003);
    patch(&f, &id, UserPatch { sign_up_status: Some(sso_core::model::SignUpStatus::Final), ..Default::default() })
        .await;
    patch(
        &f,
        &id,
        UserPatch { approval_status: Some(sso_core::model::ApprovalStatus::BeforeDecision), ..Default::default() },
    )
    .await;
    assert_eq!(code(f.login("alice", None).await), Code::E005004);
    assert_eq!(code(login_pw(&f, "alice", "wrong-password-x").await), Code::E005001);
    // Order: locked (9) before not confirmed (10) before not approved (11).
    patch(
        &f,
        &id,
        UserPatch {
            is_locked: Some(true),
            sign_up_status: Some(sso_core::model::SignUpStatus::BeforeConfirmation),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(code(f.login("alice", None).await), Code::E005002);
}

#[tokio::test]
async fn step12_expired_password() {
    let f = Fixture::memory().await;
    let id = f.create_user("alice", false).await;
    let past = f.sso.now().add_secs(-10);
    patch(&f, &id, UserPatch { password_expiry: Some(Some(past)), ..Default::default() }).await;
    assert_eq!(code(f.login("alice", None).await), Code::E005001, "hidden by default");
    assert_eq!(last_login(&f).sub_status, ["E005001"]);
    assert_eq!(last_login(&f).reason.as_deref(), Some("password_expired"));
    let shown = fixture(|c| c.password.inform_if_expired = true).await;
    let id = shown.create_user("alice", false).await;
    patch(&shown, &id, UserPatch { password_expiry: Some(Some(past)), ..Default::default() }).await;
    assert_eq!(code(shown.login("alice", None).await), Code::E003004);
}

#[tokio::test]
async fn step13_about_to_expire_table() {
    for (inform, log_in, expect) in [
        (true, true, Ok(true)),
        (false, true, Ok(false)),
        (true, false, Err(Code::E003006)),
        (false, false, Err(Code::E005001)),
    ] {
        let f = fixture(|c| {
            c.password.inform_if_about_to_expire = inform;
            c.password.log_in_if_about_to_expire = log_in;
        })
        .await;
        let id = f.create_user("alice", false).await;
        let soon = f.sso.now().add_secs(86_400 * 5);
        patch(&f, &id, UserPatch { password_expiry: Some(Some(soon)), ..Default::default() }).await;
        match (f.login("alice", None).await, expect) {
            (Ok(s), Ok(w)) => {
                assert_eq!(s.has_w_about_to_exp, w);
                if w {
                    assert_eq!(last_login(&f).status, "warning");
                    assert_eq!(last_login(&f).sub_status, ["W003005"]);
                }
            }
            (Err(e), Err(c)) => assert_eq!(e.real_code(), c),
            (r, e) => panic!("{inform} {log_in}: {r:?} vs {e:?}"),
        }
    }
}

#[tokio::test]
async fn step14_must_change() {
    let f = Fixture::memory().await;
    let id = f.create_user("alice", false).await;
    let other = f.login("alice", None).await.unwrap().ust;
    patch(&f, &id, UserPatch { password_must_change: Some(true), ..Default::default() }).await;
    assert_eq!(code(f.login("alice", None).await), Code::E003007);
    // An invalid new password refuses the login and keeps the old password (difference 17).
    let bad = Password::new("short");
    let e = f.sso.user().login(&f.anon(), "alice", &Password::new(PASSWORD), Some(&bad), None).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E003002);
    let same = Password::new(PASSWORD);
    let e = f.sso.user().login(&f.anon(), "alice", &Password::new(PASSWORD), Some(&same), None).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E003001);
    // A good one logs in, changes the password and ends the other sessions.
    let new = Password::new("a brand new passphrase");
    let s = f.sso.user().login(&f.anon(), "alice", &Password::new(PASSWORD), Some(&new), None).await.unwrap();
    assert_eq!(last_login(&f).details["password_changed"], true);
    f.sso.user().get_current_user(&f.as_user(&s.ust), false).await.unwrap();
    assert_eq!(code(f.sso.user().get_current_user(&f.as_user(&other), false).await), Code::E007001);
    assert_eq!(code(f.login("alice", None).await), Code::E005001, "old password gone");
    f.sso.user().login(&f.anon(), "alice", &new, None, None).await.unwrap();
    let hidden = fixture(|c| c.password.inform_if_must_be_changed = false).await;
    let id = hidden.create_user("bob", false).await;
    patch(&hidden, &id, UserPatch { password_must_change: Some(true), ..Default::default() }).await;
    assert_eq!(code(hidden.login("bob", None).await), Code::E005001);
}

#[tokio::test]
async fn step15_zato_pbkdf2_hashes_are_upgraded_at_login() {
    let f = fixture(|c| c.crypto.encrypt_password = false).await;
    // passlib: pbkdf2_sha512.using(rounds=1000, salt=b'0123456789abcdef').hash('päss word')
    let row = ImportRow {
        user_id: "zusrpdjpsqjqa8jdv533zh0pv8tcm".into(),
        username: "legacy".into(),
        password: "$pbkdf2-sha512$1000$MDEyMzQ1Njc4OWFiY2RlZg$KOCO/21UWEDSBOvxUdfKEkgS96SW7Vi0S2wNZHjbIsBQ7Fyki4Gnpu6pq3rRaqaQ.kQrEZ4S7tMa0OkQ0obAQQ".into(),
        ..Default::default()
    };
    let out = f.sso.user().import_users(&f.operator(), vec![row]).await.unwrap();
    assert!(matches!(out[0], sso_core::service::ImportOutcome::Imported(_)), "{out:?}");
    let id = UserId::parse("zusrpdjpsqjqa8jdv533zh0pv8tcm").unwrap();
    // A wrong password leaves the hash alone.
    let _ = f.sso.user().login(&f.anon(), "legacy", &Password::new("pass word"), None, None).await.unwrap_err();
    let u = f.sso.stores().users.get_by_id(&id).await.unwrap().unwrap();
    assert!(u.password_hash.starts_with("$pbkdf2-sha512$"));
    f.sso.user().login(&f.anon(), "legacy", &Password::new("p\u{e4}ss word"), None, None).await.unwrap();
    assert_eq!(last_login(&f).details["rehashed"], true);
    let u = f.sso.stores().users.get_by_id(&id).await.unwrap().unwrap();
    assert!(u.password_hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{}", &u.password_hash[..20]);
    assert!(matches!(
        password::verify(&u.password_hash, "p\u{e4}ss word", HashParams { m_kib: 64, t: 1, p: 1 }),
        password::Verdict::Match { rehash: false }
    ));
    f.sso.user().login(&f.anon(), "legacy", &Password::new("p\u{e4}ss word"), None, None).await.unwrap();
    assert_eq!(last_login(&f).details["rehashed"], false);
}

#[tokio::test]
async fn step16_success_resets_the_user_key() {
    let f = Fixture::memory().await;
    f.create_user("alice", false).await;
    for _ in 0..3 {
        let _ = login_pw(&f, "alice", "wrong-password-x").await;
    }
    f.login("alice", None).await.unwrap();
    // Three more failures are free again.
    for _ in 0..3 {
        assert_eq!(code(login_pw(&f, "alice", "wrong-password-x").await), Code::E005001);
    }
}

#[tokio::test]
async fn step17_per_user_cap_revokes_the_oldest() {
    let f = fixture(|c| c.session.max_per_user = 3).await;
    f.create_user("alice", false).await;
    let mut usts = Vec::new();
    for _ in 0..3 {
        usts.push(f.login("alice", None).await.unwrap().ust);
        f.clock.advance(std::time::Duration::from_secs(1));
    }
    let fourth = f.login("alice", None).await.unwrap().ust;
    assert_eq!(code(f.sso.user().get_current_user(&f.as_user(&usts[0]), false).await), Code::E007001);
    for u in [&usts[1], &usts[2], &fourth] {
        f.sso.user().get_current_user(&f.as_user(u), false).await.unwrap();
    }
    assert_eq!(last_login(&f).details["sessions_revoked"], 1);
}

#[tokio::test]
async fn absolute_lifetime_caps_the_first_expiration() {
    let f = fixture(|c| {
        c.session.expiry = 60;
        c.session.max_lifetime = 30;
    })
    .await;
    f.create_user("alice", false).await;
    let s = f.login("alice", None).await.unwrap();
    assert_eq!(s.expiration_time, s.creation_time.plus(std::time::Duration::from_secs(1800)));
}

#[tokio::test]
async fn login_metadata_is_believed_only_for_listed_apps() {
    let f = fixture(|c| {
        c.apps.all = vec!["CRM".into(), "GW".into()];
        c.apps.login_allowed = vec!["CRM".into(), "GW".into()];
        c.apps.login_metadata_allowed = vec!["GW".into()];
    })
    .await;
    let id = f.create_user("alice", false).await;
    let claimed = sso_core::ids::RemoteAddr::parse("203.0.113.7").unwrap();
    let crm = f.anon().with_claimed(Some(claimed.clone()), Some("Claimed/1.0"));
    f.sso.user().login(&crm, "alice", &Password::new(PASSWORD), None, None).await.unwrap();
    let mut gw = f.anon().with_claimed(Some(claimed), Some("Claimed/1.0"));
    gw.current_app = "GW".into();
    f.sso.user().login(&gw, "alice", &Password::new(PASSWORD), None, None).await.unwrap();
    let mut sessions = f.sso.stores().sessions.list_by_user(&id).await.unwrap();
    sessions.sort_by_key(|s| s.current_app.clone());
    assert_eq!(sessions[0].current_app, "CRM");
    assert_eq!(sessions[0].remote_addr, "10.0.0.1");
    assert_eq!(sessions[1].remote_addr, "203.0.113.7");
    assert_eq!(sessions[1].user_agent.as_deref(), Some("Claimed/1.0"));
}

#[tokio::test]
async fn failed_audit_compensates_the_new_session() {
    let f = Fixture::memory().await;
    let id = f.create_user("alice", false).await;
    f.audit.set_failing(true);
    let e = f.login("alice", None).await.unwrap_err();
    assert_eq!(e, SsoError::Unavailable { backend: "audit" });
    assert!(f.sso.stores().sessions.list_by_user(&id).await.unwrap().is_empty());
    f.audit.set_failing(false);
    f.login("alice", None).await.unwrap();
}
