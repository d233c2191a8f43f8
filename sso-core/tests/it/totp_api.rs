//! `sso.totp()` (spec/totp.md §3, §4, §7, §8): `validate_code` for every target kind, its
//! throttling under concurrency, the enrolment URI, the window table and the replay sequence
//! through the service with the injected clock.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use sso_core::audit::Outcome;
use sso_core::crypto::totp;
use sso_core::ids::UserId;
use sso_core::secret::{TotpCode, TotpKey, Ust};
use sso_core::service::{NewUser, TotpTarget};
use sso_core::testing::{Fixture, PASSWORD};
use sso_core::time::Timestamp;
use sso_core::{CallCtx, Code, SsoError, SsoResult};

use crate::common::*;

const OP: &str = "totp_api.validate_code";

async fn validate(f: &Fixture, ctx: &CallCtx, c: Option<&str>, target: TotpTarget) -> SsoResult<()> {
    let c = c.map(TotpCode::new);
    f.sso.totp().validate_code(ctx, c.as_ref(), target).await
}

/// A user holding the RFC key (TOTP not necessarily enabled).
async fn with_rfc_key(f: &Fixture, name: &str) -> (UserId, TotpKey) {
    let id = f.create_user(name, false).await;
    f.sso.user().reset_totp_key(&f.operator(), Some(&id), Some(RFC_KEY), None).await.unwrap();
    (id, TotpKey::parse(RFC_KEY).unwrap())
}

// ----- validate_code ---------------------------------------------------------------------------

#[tokio::test]
async fn validate_code_every_target_kind_without_a_ust() {
    let f = Fixture::memory().await;
    let (alice, key) = with_rfc_key(&f, "alice").await;
    let ust = f.login("alice", None).await.unwrap().ust;
    let targets =
        [TotpTarget::Ust(ust.clone()), TotpTarget::Username("alice".into()), TotpTarget::UserId(alice.to_string())];
    for (t, kind) in targets.into_iter().zip(["ust", "username", "user_id"]) {
        let good = f.code_now(&key, 0);
        validate(&f, &f.anon(), Some(&good), t).await.unwrap();
        let r = last(&f, OP);
        assert_rec(&r, OP, Outcome::Success, &[]);
        assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
        assert_eq!(r.details["target_kind"], kind);
        assert_eq!(r.details["has_code"], true);
        assert_eq!(r.actor, "anonymous");
        f.clock.advance(secs(30));
    }
    assert_no_secrets(&f, &[&f.code_now(&key, -1), &f.code_now(&key, -2), &f.code_now(&key, -3)]);
    // The stored key is used whether or not TOTP is enabled: alice never enabled it.
    assert!(!record(&f, &alice).await.is_totp_enabled);
}

#[tokio::test]
async fn validate_code_unresolvable_targets() {
    let f = Fixture::memory().await;
    let (_alice, key) = with_rfc_key(&f, "alice").await;
    let pending = NewUser { username: Some("pending".into()), ..Default::default() };
    f.sso.user().create_user(&f.operator(), pending, false).await.unwrap();
    let good = f.code_now(&key, 0);
    for t in [
        TotpTarget::Username("nobody".into()),
        TotpTarget::Username("ALICE".into()),
        TotpTarget::Username("pending".into()),
        TotpTarget::UserId(UserId::generate().unwrap().to_string()),
        TotpTarget::UserId("junk".into()),
    ] {
        assert_eq!(code(validate(&f, &f.anon(), Some(&good), t).await), Code::E005001);
        let r = last(&f, OP);
        assert_rec(&r, OP, Outcome::Denied, &["E005001"]);
        assert_eq!(r.reason.as_deref(), Some("no_such_user"));
    }
    for u in [Ust::generate().unwrap(), Ust::new("junk")] {
        assert_eq!(code(validate(&f, &f.anon(), Some(&good), TotpTarget::Ust(u)).await), Code::E007001);
    }
    // The code was never consumed.
    validate(&f, &f.anon(), Some(&good), TotpTarget::Username("alice".into())).await.unwrap();
}

#[tokio::test]
async fn validate_code_with_a_ust_caller() {
    let f = Fixture::memory().await;
    let (alice, key) = with_rfc_key(&f, "alice").await;
    let (bob, _) = with_rfc_key(&f, "bob").await;
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let a1 = f.login("alice", None).await.unwrap().ust;
    let a2 = f.login("alice", None).await.unwrap().ust;
    let b1 = f.login("bob", None).await.unwrap().ust;
    let actx = f.as_user(&a1);
    // The target must be the caller (any of the caller's sessions counts as the caller).
    for t in [TotpTarget::UserId(bob.to_string()), TotpTarget::Username("bob".into()), TotpTarget::Ust(b1.clone())] {
        let e = validate(&f, &actx, Some(&f.code_now(&key, 0)), t).await.unwrap_err();
        assert_eq!(e.real_code(), Code::E005001);
        assert_eq!(last(&f, OP).reason.as_deref(), Some("not_owner"));
        assert_eq!(last(&f, OP).actor, alice.as_str());
    }
    validate(&f, &actx, Some(&f.code_now(&key, 0)), TotpTarget::Ust(a2.clone())).await.unwrap();
    f.clock.advance(secs(30));
    validate(&f, &actx, Some(&f.code_now(&key, 0)), TotpTarget::UserId(alice.to_string())).await.unwrap();
    // A super-user may check anyone's code.
    f.clock.advance(secs(30));
    validate(&f, &f.as_user(&su_ust), Some(&f.code_now(&key, 0)), TotpTarget::Username("bob".into())).await.unwrap();
    // The caller's pipeline comes first.
    let bogus = f.as_user(&Ust::generate().unwrap());
    assert_eq!(code(validate(&f, &bogus, Some("123456"), TotpTarget::Username("alice".into())).await), Code::E007001);
    let mut bad_app = f.as_user(&a1);
    bad_app.current_app = "NOPE".into();
    assert_eq!(code(validate(&f, &bad_app, Some("123456"), TotpTarget::Ust(a1.clone())).await), Code::E004001);
}

#[tokio::test]
async fn validate_code_missing_wrong_malformed_and_replayed() {
    for inform in [true, false] {
        let f = fixture(|c| c.login.inform_if_totp_missing = inform).await;
        let (alice, key) = with_rfc_key(&f, "alice").await;
        let t = || TotpTarget::UserId(alice.to_string());
        let missing = if inform { Code::E005008 } else { Code::E005001 };
        assert_eq!(code(validate(&f, &f.anon(), None, t()).await), missing);
        let r = last(&f, OP);
        assert_eq!(r.details["has_code"], false);
        assert_eq!(r.reason.as_deref(), Some("totp_missing"));
        assert_eq!(code(validate(&f, &f.anon(), Some(""), t()).await), missing);
        let counter = format!("totp:{alice}");
        assert!(
            f.sso.stores().counters.get(&counter, f.sso.now()).await.unwrap().is_none(),
            "a missing code is not counted"
        );
        let good = f.code_now(&key, 0);
        for bad in [wrong_code(&good), "12345", "1234567", "abcdef", " 12345"] {
            assert_eq!(code(validate(&f, &f.anon(), Some(bad), t()).await), Code::E005001, "{bad:?}");
            assert_eq!(last(&f, OP).reason.as_deref(), Some("totp_invalid"));
            f.clock.advance(secs(61));
        }
        let good = f.code_now(&key, 0);
        let (n, _) = f.sso.stores().counters.get(&counter, f.sso.now()).await.unwrap().unwrap();
        assert_eq!(n, 5, "each wrong or malformed code counted on the totp key");
        // The 5th failure locked the key: reset it to go on.
        f.sso.user().unlock_user(&f.operator(), alice.as_str()).await.unwrap();
        validate(&f, &f.anon(), Some(&good), t()).await.unwrap();
        assert!(f.sso.stores().counters.get(&counter, f.sso.now()).await.unwrap().is_none(), "success resets the key");
        assert_eq!(code(validate(&f, &f.anon(), Some(&good), t()).await), Code::E005001);
        assert_eq!(last(&f, OP).reason.as_deref(), Some("totp_replay"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_wrong_codes_evaluate_at_most_lockout_after() {
    let f = Arc::new(
        fixture(|c| {
            c.throttle.totp.lockout_after = 5;
        })
        .await,
    );
    let (alice, key) = with_rfc_key(&f, "alice").await;
    let good = f.code_now(&key, 0);
    let wrong = wrong_code(&good);
    let before = f.sso.metrics().totp_error.load(Relaxed);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let f = f.clone();
        let target =
            if i % 2 == 0 { TotpTarget::UserId(alice.to_string()) } else { TotpTarget::Username("alice".into()) };
        tasks.push(tokio::spawn(async move { validate(&f, &f.anon(), Some(wrong), target).await }));
    }
    let mut throttled = 0;
    for t in tasks {
        match t.await.unwrap() {
            Err(SsoError::Throttled { .. }) => throttled += 1,
            Err(e) => assert_eq!(e.real_code(), Code::E005001),
            Ok(()) => panic!("a wrong code was accepted"),
        }
    }
    let evaluated_audit = f.audit.records().iter().filter(|r| r.reason.as_deref() == Some("totp_invalid")).count();
    let evaluated_metric = f.sso.metrics().totp_error.load(Relaxed) - before;
    assert!((1..=5).contains(&evaluated_audit), "evaluated {evaluated_audit}");
    assert_eq!(evaluated_metric, evaluated_audit as u64);
    assert_eq!(throttled, 100 - evaluated_audit);
    let throttle_records = f.audit.records().iter().filter(|r| r.reason.as_deref() == Some("throttled")).count();
    assert!(throttle_records <= 2, "a refusal storm is audited once per block: {throttle_records}");
    let (n, _) = f.sso.stores().counters.get(&format!("totp:{alice}"), f.sso.now()).await.unwrap().unwrap();
    assert!(n <= 100, "blocked reads are not counted: {n}");
    // The correct code is refused while the key is blocked.
    let r = validate(&f, &f.anon(), Some(&good), TotpTarget::UserId(alice.to_string())).await;
    assert!(is_throttled(&r), "{r:?}");
    // Keep guessing once a second for the rest of ten minutes: still at most 5 evaluated, and
    // the correct code is refused (locked out) at the end.
    for _ in 0..599 {
        f.clock.advance(secs(1));
        let r = validate(&f, &f.anon(), Some("999999"), TotpTarget::UserId(alice.to_string())).await;
        assert!(r.is_err());
    }
    let evaluated = f.audit.records().iter().filter(|r| r.reason.as_deref() == Some("totp_invalid")).count();
    assert!(evaluated <= 5, "evaluated {evaluated} in ten minutes");
    let r = validate(&f, &f.anon(), Some(&f.code_now(&key, 0)), TotpTarget::UserId(alice.to_string())).await;
    assert!(is_throttled(&r), "locked out: {r:?}");
    // unlock_user resets the key.
    f.sso.user().unlock_user(&f.operator(), alice.as_str()).await.unwrap();
    validate(&f, &f.anon(), Some(&f.code_now(&key, 0)), TotpTarget::UserId(alice.to_string())).await.unwrap();
}

// ----- enrolment URI ---------------------------------------------------------------------------

#[tokio::test]
async fn enrolment_uri_while_totp_is_off() {
    let f = fixture(|c| c.totp.issuer = "ACME Co".into()).await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let ctx = f.as_user(&ust);
    let key = f.sso.user().reset_totp_key(&ctx, None, None, None).await.unwrap().unwrap();
    let u = f.sso.totp().enrolment_uri(&ctx).await.unwrap();
    assert_eq!(u.uri, format!("otpauth://totp/ACME%20Co:alice?secret={}&issuer=ACME%20Co", key.expose_base32()));
    assert!(u.qr_svg.contains("<svg") && u.qr_svg.trim_end().ends_with("</svg>"), "an SVG document");
    let r = last(&f, "user.get_totp_uri");
    assert_rec(&r, "user.get_totp_uri", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    // With a label, the account is the label.
    f.sso.user().reset_totp_key(&ctx, None, Some(RFC_KEY), Some("Work Phone")).await.unwrap();
    let u = f.sso.totp().enrolment_uri(&ctx).await.unwrap();
    assert_eq!(u.uri, format!("otpauth://totp/ACME%20Co:Work%20Phone?secret={RFC_KEY}&issuer=ACME%20Co"));
    assert_no_secrets(&f, &[RFC_KEY, key.expose_base32(), "Work Phone", "otpauth"]);
    // After enabling TOTP the key can no longer be read back.
    f.sso
        .user()
        .update_current_user(
            &ctx,
            sso_core::service::UserUpdate { is_totp_enabled: Some(Some(true)), ..Default::default() },
        )
        .await
        .unwrap();
    let e = f.sso.totp().enrolment_uri(&ctx).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E008001);
    assert_rec(&last(&f, "user.get_totp_uri"), "user.get_totp_uri", Outcome::Failure, &["E008001"]);
    assert_eq!(code(f.sso.totp().enrolment_uri(&f.anon()).await), Code::E007001);
}

#[tokio::test]
async fn enrolment_uri_default_issuer_and_username() {
    let f = Fixture::memory().await;
    let data = NewUser {
        username: Some("john.doe@email.com".into()),
        password: Some(sso_core::secret::Password::new(PASSWORD)),
        totp_key: Some(sso_core::secret::TotpKeyText::new("HXDMVJECJJWSRB3HWIZR4IFUGFTMXBOZ")),
        ..Default::default()
    };
    f.sso.user().create_user(&f.operator(), data, true).await.unwrap();
    let ust = f.login("john.doe@email.com", None).await.unwrap().ust;
    let u = f.sso.totp().enrolment_uri(&f.as_user(&ust)).await.unwrap();
    assert_eq!(u.uri, "otpauth://totp/sso:john.doe@email.com?secret=HXDMVJECJJWSRB3HWIZR4IFUGFTMXBOZ&issuer=sso");
}

// ----- test vectors through the service (spec/totp.md §8) -------------------------------------

const T_1111111109: i64 = 1_111_111_109;

/// The RFC key's codes for steps T−2 ..= T+2 at t = 1111111109 (T = 37037036).
fn window_codes() -> [(i64, String); 5] {
    let key = TotpKey::parse(RFC_KEY).unwrap();
    let t = totp::step_of(1_111_111_109);
    assert_eq!(t, 37_037_036);
    let c = |d: i64| (d, totp::code_for_step(key.expose_bytes(), t.saturating_add_signed(d)).to_string());
    let codes = [c(-2), c(-1), c(0), c(1), c(2)];
    // The spec's table.
    assert_eq!(
        codes.iter().take(4).map(|(_, c)| c.as_str()).collect::<Vec<_>>(),
        ["150727", "731029", "081804", "050471"]
    );
    codes
}

#[tokio::test]
async fn window_table_for_every_setting() {
    let codes = window_codes();
    for back in 0..=2u8 {
        for ahead in 0..=2u8 {
            let f = fixture(|c| {
                c.totp.window_back = back;
                c.totp.window_ahead = ahead;
            })
            .await;
            f.clock.set(Timestamp::from_secs(T_1111111109));
            for (d, c) in &codes {
                // A fresh user per code: no replay marker, no throttle state in the way.
                let (id, _) = with_rfc_key(&f, &format!("u{}", d + 2)).await;
                let accepted = -i64::from(back) <= *d && *d <= i64::from(ahead);
                let r = validate(&f, &f.anon(), Some(c), TotpTarget::UserId(id.to_string())).await;
                match (accepted, r) {
                    (true, Ok(())) => {}
                    (false, Err(e)) => assert_eq!(e.real_code(), Code::E005001),
                    (a, r) => panic!("back={back} ahead={ahead} step T{d:+}: expected accepted={a}, got {r:?}"),
                }
            }
        }
    }
}

#[tokio::test]
async fn window_table_the_spec_columns_through_login() {
    // The three columns of the spec's table, through login (TOTP enabled).
    let codes = window_codes();
    for (back, ahead, expect) in
        [(1u8, 0u8, [false, true, true, false]), (0, 0, [false, false, true, false]), (1, 1, [false, true, true, true])]
    {
        let f = fixture(|c| {
            c.totp.window_back = back;
            c.totp.window_ahead = ahead;
        })
        .await;
        f.clock.set(Timestamp::from_secs(T_1111111109));
        for ((d, c), ok) in codes.iter().take(4).zip(expect) {
            let name = format!("u{}", d + 2);
            let id = f.create_user(&name, false).await;
            enable_totp(&f, &id).await;
            let r = f.login(&name, Some(c)).await;
            assert_eq!(r.is_ok(), ok, "back={back} ahead={ahead} step T{d:+}: {:?}", r.err());
        }
    }
}

#[tokio::test]
async fn replay_sequence() {
    let f = Fixture::memory().await;
    f.clock.set(Timestamp::from_secs(T_1111111109));
    let (alice, _) = with_rfc_key(&f, "alice").await;
    let t = || TotpTarget::UserId(alice.to_string());
    validate(&f, &f.anon(), Some("081804"), t()).await.unwrap();
    assert_eq!(code(validate(&f, &f.anon(), Some("081804"), t()).await), Code::E005001);
    assert_eq!(last(&f, OP).reason.as_deref(), Some("totp_replay"));
    assert_eq!(code(validate(&f, &f.anon(), Some("731029"), t()).await), Code::E005001, "T−1 after T");
    assert_eq!(last(&f, OP).reason.as_deref(), Some("totp_replay"));
    f.clock.set(Timestamp::from_secs(1_111_111_111));
    validate(&f, &f.anon(), Some("050471"), t()).await.unwrap();
    // Leading zeros are part of the code.
    f.clock.set(Timestamp::from_secs(T_1111111109));
    let (bob, _) = with_rfc_key(&f, "bob").await;
    let r = validate(&f, &f.anon(), Some("81804"), TotpTarget::UserId(bob.to_string())).await;
    assert_eq!(code(r), Code::E005001, "81804 is malformed");
    validate(&f, &f.anon(), Some("081804"), TotpTarget::UserId(bob.to_string())).await.unwrap();
    // The same sequence through login.
    let g = Fixture::memory().await;
    g.clock.set(Timestamp::from_secs(T_1111111109));
    let id = g.create_user("carol", false).await;
    enable_totp(&g, &id).await;
    g.login("carol", Some("081804")).await.unwrap();
    assert_eq!(code(g.login("carol", Some("081804")).await), Code::E005001);
    assert_eq!(code(g.login("carol", Some("731029")).await), Code::E005001);
    g.clock.set(Timestamp::from_secs(1_111_111_111));
    g.login("carol", Some("050471")).await.unwrap();
}
