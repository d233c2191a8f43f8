//! User operations (spec/users.md §2–§12): create, sign-up and approval, reads, search, updates,
//! locking, deletion, passwords, linked authentication and import — each check in its table's
//! order, with its code and its one audit record.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sso_core::audit::{MemoryAuditSink, Outcome};
use sso_core::crypto::aead::aad;
use sso_core::ids::UserId;
use sso_core::model::{ApprovalStatus, AttrScope, AttrWrite, SignUpStatus};
use sso_core::secret::{ConfirmToken, Password, SecretStr, TotpCode, TotpKeyText};
use sso_core::service::notify::{CollectingNotifier, EventKind, SignupData, SignupValidator};
use sso_core::service::{
    ChangePassword, ImportOutcome, ImportRow, NewUser, SearchCtx, SignupCtx, UserUpdate, views::UserView,
};
use sso_core::testing::{Fixture, PASSWORD, T0};
use sso_core::time::{ManualClock, Timestamp};
use sso_core::{CallCtx, Code, Sso, SsoError};

use crate::common::*;

const DAY: i64 = 86_400;

fn new_user(name: &str) -> NewUser {
    NewUser { username: Some(name.to_owned()), password: Some(Password::new(PASSWORD)), ..Default::default() }
}

async fn su_ctx(f: &Fixture) -> (UserId, CallCtx) {
    let (su, ust) = f.user_with_session("root-admin", true).await;
    (su, f.as_user(&ust))
}

async fn user_count(f: &Fixture) -> u64 {
    let q = SearchCtx { page_size: Some(100), ..Default::default() };
    f.sso.user().search(&f.operator(), q).await.unwrap().total
}

// ----- create_user ---------------------------------------------------------------------------

#[tokio::test]
async fn create_user_checks_run_in_table_order() {
    let f = Fixture::memory().await;
    let (_su, ctx) = su_ctx(&f).await;
    f.create_user("alice", false).await;
    let before = user_count(&f).await;
    let long_email = format!("{}@b.c", "a".repeat(125));
    let cases: Vec<(NewUser, Code)> = vec![
        // 2. present, non-empty, no control characters (control before whitespace).
        (NewUser { username: None, ..new_user("x") }, Code::E001001),
        (new_user(""), Code::E001001),
        (new_user("a\u{7}b"), Code::E001001),
        (new_user("a\tb"), Code::E001001),
        // 3. whitespace, then length.
        (new_user("a b"), Code::E001004),
        (new_user(&format!("a b{}", "c".repeat(200))), Code::E001004),
        (new_user(&"a".repeat(129)), Code::E001003),
        // 4. unused (before the e-mail rules).
        (NewUser { email: Some("not an e-mail".into()), ..new_user("alice") }, Code::E001002),
        // 5. e-mail: whitespace, length, one `@` / control characters.
        (NewUser { email: Some("a b@example.com".into()), ..new_user("bob") }, Code::E002004),
        (NewUser { email: Some(format!(" {long_email}")), ..new_user("bob") }, Code::E002004),
        (NewUser { email: Some(" bob@example.com".into()), ..new_user("bob") }, Code::E002004),
        (NewUser { email: Some(long_email.clone()), ..new_user("bob") }, Code::E002003),
        (NewUser { email: Some("bob.example.com".into()), ..new_user("bob") }, Code::E002001),
        (NewUser { email: Some("bob@@example.com".into()), ..new_user("bob") }, Code::E002001),
        (NewUser { email: Some("bob\u{1}@example.com".into()), ..new_user("bob") }, Code::E002001),
        // 5 before 6.
        (
            NewUser { email: Some("nope".into()), password: Some(Password::new("short")), ..new_user("bob") },
            Code::E002001,
        ),
        // 6. the password policy.
        (NewUser { password: Some(Password::new("short")), ..new_user("bob") }, Code::E003002),
        (NewUser { password: Some(Password::new("x".repeat(257))), ..new_user("bob") }, Code::E003003),
        (NewUser { password: Some(Password::new("my password is long")), ..new_user("bob") }, Code::E003001),
        (NewUser { password: Some(Password::new("ILoveYou")), ..new_user("bob") }, Code::E003001),
        (NewUser { password: Some(Password::new("bobby-the-great-1")), ..new_user("bobby") }, Code::E003001),
        // 6 before 7.
        (
            NewUser {
                password: Some(Password::new("short")),
                totp_key: Some(TotpKeyText::new("!!!!")),
                ..new_user("bob")
            },
            Code::E003002,
        ),
        // 7. key, 8. label, 9. sign_up_status.
        (NewUser { totp_key: Some(TotpKeyText::new("!!!!")), ..new_user("bob") }, Code::E008002),
        (NewUser { totp_key: Some(TotpKeyText::new("JBSWY3DP")), ..new_user("bob") }, Code::E008002),
        (NewUser { totp_label: Some("a:b".into()), ..new_user("bob") }, Code::E008002),
        (NewUser { totp_label: Some("tab\there".into()), ..new_user("bob") }, Code::E008002),
        (NewUser { sign_up_status: Some("confirmed".into()), ..new_user("bob") }, Code::E008002),
    ];
    let n = cases.len() + records(&f, "user.create_user").len();
    for (i, (data, expected)) in cases.into_iter().enumerate() {
        let e = f.sso.user().create_user(&ctx, data, true).await.unwrap_err();
        assert_eq!(e.real_code(), expected, "case {i}");
        let r = last(&f, "user.create_user");
        assert_rec(&r, "user.create_user", outcome_of(expected), &[expected.as_str()]);
        assert_eq!(r.target_user_id, None, "case {i}");
    }
    assert_eq!(records(&f, "user.create_user").len(), n, "one record per call");
    assert_eq!(user_count(&f).await, before, "nothing was created");
    assert!(by_name(&f, "bob").await.is_none());
    assert_no_secrets(&f, &["ILoveYou", "my password is long", "bob@example.com", "JBSWY3DP"]);
}

#[tokio::test]
async fn create_user_needs_a_super_user() {
    let f = Fixture::memory().await;
    let (_alice, ust) = f.user_with_session("alice", false).await;
    let e = f.sso.user().create_user(&f.as_user(&ust), new_user("bob"), true).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E005001);
    let r = last(&f, "user.create_user");
    assert_rec(&r, "user.create_user", Outcome::Denied, &["E005001"]);
    assert_eq!(r.reason.as_deref(), Some("not_super_user"));
    // The pipeline comes before the input checks.
    let e = f.sso.user().create_user(&f.as_user(&ust), new_user(""), true).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E005001);
    assert_eq!(code(f.sso.user().create_user(&f.anon(), new_user("bob"), true).await), Code::E007001);
    assert!(by_name(&f, "bob").await.is_none());
}

#[tokio::test]
async fn create_user_refuses_supplied_keys_when_not_allowed() {
    let f = fixture(|c| c.totp.allow_supplied_key = false).await;
    let data = NewUser { totp_key: Some(TotpKeyText::new("JBSWY3DPEHPK3PXP")), ..new_user("bob") };
    assert_eq!(code(f.sso.user().create_user(&f.operator(), data, true).await), Code::E008002);
    assert!(by_name(&f, "bob").await.is_none());
}

#[tokio::test]
async fn create_user_defaults() {
    let f = Fixture::memory().await;
    let (su, ctx) = su_ctx(&f).await;
    f.clock.advance(secs(10));
    let now = f.sso.now();
    let data = NewUser {
        username: Some("alice".into()),
        password: None,
        email: Some("Alice@Example.com".into()),
        first_name: Some("Alice".into()),
        middle_name: Some(String::new()),
        last_name: Some("Smith".into()),
        ..Default::default()
    };
    let v = f.sso.user().create_user(&ctx, data, false).await.unwrap();
    assert_eq!(v.username, "alice");
    assert_eq!(v.email.as_deref(), Some("Alice@Example.com"), "returned decrypted");
    assert_eq!(v.display_name.as_deref(), Some("Alice Smith"), "first middle last without blanks");
    assert_eq!(v.middle_name, None, "empty names are NULL");
    assert!(!v.is_totp_enabled);
    assert_eq!(v.totp_label, "");
    let a = v.admin.clone().expect("the super-user view is returned");
    assert_eq!(a.approval_status, ApprovalStatus::BeforeDecision, "signup.is_approval_needed = true");
    assert!(a.is_approval_needed);
    assert_eq!(a.approval_status_mod_by, su.as_str());
    assert_eq!(a.approval_status_mod_time, now);
    assert_eq!(a.sign_up_status, SignUpStatus::Final);
    assert_eq!(a.sign_up_time, now);
    assert!(a.password_is_set, "a generated password is still a set password");
    assert_eq!(a.password_last_set, now);
    assert_eq!(a.password_expiry, Some(now.add_secs(730 * DAY)));
    assert!(!a.password_must_change);
    assert!(!a.is_locked && a.locked_time.is_none() && a.locked_by.is_none());
    assert!(!a.is_super_user && a.is_active && !a.is_internal);
    let cc: serde_json::Value = serde_json::from_str(&a.creation_ctx).unwrap();
    assert_eq!(cc["via"], "api");
    assert_eq!(cc["current_app"], "CRM");
    assert_eq!(cc["remote_addr"], "10.0.0.1");
    let rec = record(&f, &a.user_id).await;
    assert!(!rec.is_super_user);
    assert!(rec.email_enc.as_deref().is_some_and(|e| !e.contains("Example")), "e-mail encrypted at rest");
    assert!(rec.email_idx.is_some());
    // The generated password is nobody's: after approval the fixture password is wrong.
    f.sso.user().approve_user(&ctx, a.user_id.as_str()).await.unwrap();
    assert_eq!(code(f.login("alice", None).await), Code::E005001);
    assert_eq!(last(&f, "user.login").reason.as_deref(), Some("bad_password"));
    // The audit record.
    let r = records(&f, "user.create_user").pop().unwrap();
    assert_rec(&r, "user.create_user", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(a.user_id.as_str()));
    assert_eq!(r.actor, su.as_str());
    assert_eq!(r.details["via"], "api");
    assert_eq!(r.details["auto_approve"], false);
    assert_no_secrets(&f, &["Alice@Example.com", "alice@example.com"]);
}

#[tokio::test]
async fn create_user_approval_follows_auto_approve_and_config() {
    let f = Fixture::memory().await;
    let (_su, ctx) = su_ctx(&f).await;
    let v = f.sso.user().create_user(&ctx, new_user("alice"), true).await.unwrap();
    assert_eq!(v.admin.unwrap().approval_status, ApprovalStatus::Approved, "auto_approve");
    f.login("alice", None).await.unwrap();
    let g = fixture(|c| c.signup.is_approval_needed = false).await;
    let v = g.sso.user().create_user(&g.operator(), new_user("bob"), false).await.unwrap();
    let a = v.admin.unwrap();
    assert_eq!(a.approval_status, ApprovalStatus::Approved, "approval not needed");
    assert_eq!(a.approval_status_mod_by, "auto", "Operator callers record `auto`");
    let cc: serde_json::Value = serde_json::from_str(&a.creation_ctx).unwrap();
    assert_eq!(cc["via"], "cli");
    assert_eq!(last(&g, "user.create_user").details["via"], "cli");
    assert_eq!(last(&g, "user.create_user").actor, "cli:tester@host");
}

#[tokio::test]
async fn create_user_with_lock_totp_and_sign_up_status() {
    let f = Fixture::memory().await;
    let (su, ctx) = su_ctx(&f).await;
    let now = f.sso.now();
    let data = NewUser {
        is_locked: Some(true),
        password_must_change: Some(true),
        sign_up_status: Some("before_confirmation".into()),
        is_totp_enabled: Some(true),
        totp_key: Some(TotpKeyText::new("jbswy3dpehpk3pxp")),
        totp_label: Some("MyLabelX1".into()),
        ..new_user("alice")
    };
    let v = f.sso.user().create_user(&ctx, data, true).await.unwrap();
    let a = v.admin.clone().unwrap();
    assert!(a.is_locked);
    assert_eq!(a.locked_time, Some(now));
    assert_eq!(a.locked_by.as_deref(), Some(su.as_str()));
    assert!(a.password_must_change);
    assert_eq!(a.sign_up_status, SignUpStatus::BeforeConfirmation);
    assert!(v.is_totp_enabled);
    assert_eq!(v.totp_label, "MyLabelX1");
    let rec = record(&f, &a.user_id).await;
    let ring = f.sso.key_ring();
    let key = ring.decrypt_string(&aad::user_field(a.user_id.as_str(), "totp_key"), &rec.totp_key_enc).unwrap();
    assert_eq!(key.as_str(), "JBSWY3DPEHPK3PXP", "stored upper case");
    assert_no_secrets(&f, &["JBSWY3DPEHPK3PXP", "jbswy3dpehpk3pxp", "MyLabelX1", PASSWORD]);
}

#[tokio::test]
async fn create_super_user_forces_final_and_approved() {
    let f = Fixture::memory().await;
    let data = NewUser { sign_up_status: Some("before_confirmation".into()), ..new_user("boss") };
    let v = f.sso.user().create_super_user(&f.operator(), data).await.unwrap();
    let a = v.admin.unwrap();
    assert!(a.is_super_user);
    assert_eq!(a.sign_up_status, SignUpStatus::Final);
    assert_eq!(a.approval_status, ApprovalStatus::Approved);
    let r = last(&f, "user.create_super_user");
    assert_rec(&r, "user.create_super_user", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(a.user_id.as_str()));
    // The new super-user is usable at once, and can create another.
    let ust = f.login("boss", None).await.unwrap().ust;
    f.sso.user().create_super_user(&f.as_user(&ust), new_user("boss2")).await.unwrap();
    // A regular user cannot.
    let (_alice, alice) = f.user_with_session("alice", false).await;
    let e = f.sso.user().create_super_user(&f.as_user(&alice), new_user("boss3")).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E005001);
    assert_rec(&last(&f, "user.create_super_user"), "user.create_super_user", Outcome::Denied, &["E005001"]);
    assert!(by_name(&f, "boss3").await.is_none());
}

// ----- signup ----------------------------------------------------------------------------------

fn signup_data(username: &str, email: Option<&str>) -> SignupCtx {
    SignupCtx {
        username: username.to_owned(),
        password: Password::new(PASSWORD),
        email: email.map(str::to_owned),
        app_list: vec!["CRM".into()],
    }
}

async fn signup_err(f: &Fixture, ctx: &CallCtx, data: SignupCtx) -> SsoError {
    let n = records(f, "user.signup").len();
    let e = f.sso.user().signup(ctx, data).await.unwrap_err();
    let r = last(f, "user.signup");
    assert_eq!(records(f, "user.signup").len(), n + 1);
    assert_rec(&r, "user.signup", outcome_of(e.real_code()), &[e.real_code().as_str()]);
    e
}

/// A fixture with sign-up validators (the `Fixture` helper has no hook for them).
async fn fixture_with_validators(
    tune: impl FnOnce(&mut sso_core::config::Config),
    validators: Vec<Arc<dyn SignupValidator>>,
) -> Fixture {
    let mut cfg = sso_core::config::Config::for_tests();
    tune(&mut cfg);
    let clock = ManualClock::new(Timestamp::from_secs(T0));
    let audit = Arc::new(MemoryAuditSink::new());
    let notifier = Arc::new(CollectingNotifier::default());
    let mut b = Sso::builder(cfg, sso_core::memory::stores())
        .clock(Arc::new(clock.clone()))
        .audit_sink(audit.clone())
        .notifier(notifier.clone())
        .node_id("test");
    for v in validators {
        b = b.signup_validator(v);
    }
    let sso = b.build().await.unwrap();
    Fixture { sso, clock, audit, notifier }
}

#[tokio::test]
async fn signup_row1_current_app() {
    let f = Fixture::memory().await;
    let mut ctx = f.anon();
    ctx.current_app = "NOPE".into();
    let e = signup_err(&f, &ctx, signup_data("alice", Some("alice@example.com"))).await;
    assert_eq!((e.real_code(), e.unauthenticated_code()), (Code::E004001, Code::E004001));
    let f = fixture(|c| c.apps.inform_if_app_invalid = false).await;
    let e = signup_err(&f, &ctx, signup_data("alice", Some("alice@example.com"))).await;
    assert_eq!((e.real_code(), e.unauthenticated_code()), (Code::E005001, Code::E005001));
}

#[tokio::test]
async fn signup_row2_and_row3_apps() {
    let tune = |c: &mut sso_core::config::Config| {
        c.apps.all = vec!["CRM".into(), "ERP".into()];
        c.apps.signup_allowed = vec!["CRM".into()];
    };
    let f = fixture(tune).await;
    let mut erp = f.anon();
    erp.current_app = "ERP".into();
    let e = signup_err(&f, &erp, signup_data("alice", Some("alice@example.com"))).await;
    assert_eq!((e.real_code(), e.unauthenticated_code()), (Code::E004002, Code::E004002));
    // Row 3: each app_list entry in apps.all, then in the sign-up set.
    let mut d = signup_data("alice", Some("alice@example.com"));
    d.app_list = vec!["CRM".into(), "NOPE".into()];
    assert_eq!(signup_err(&f, &f.anon(), d).await.real_code(), Code::E004001);
    let mut d = signup_data("alice", Some("alice@example.com"));
    d.app_list = vec!["ERP".into(), "NOPE".into()];
    assert_eq!(signup_err(&f, &f.anon(), d).await.real_code(), Code::E004002);
    // Row 2 comes before row 3.
    let mut d = signup_data("alice", Some("alice@example.com"));
    d.app_list = vec!["NOPE".into()];
    assert_eq!(signup_err(&f, &erp, d).await.real_code(), Code::E004002);
    // Hidden codes when apps.inform_if_app_invalid = false.
    let g = fixture(|c| {
        tune(c);
        c.apps.inform_if_app_invalid = false;
    })
    .await;
    let e = signup_err(&g, &erp, signup_data("alice", Some("alice@example.com"))).await;
    assert_eq!((e.real_code(), e.unauthenticated_code()), (Code::E005001, Code::E005001));
    // Empty signup_allowed means every app of apps.all.
    let h = fixture(|c| c.apps.all = vec!["CRM".into(), "ERP".into()]).await;
    let mut erp = h.anon();
    erp.current_app = "ERP".into();
    let mut d = signup_data("alice", Some("alice@example.com"));
    d.app_list = vec!["CRM".into(), "ERP".into()];
    h.sso.user().signup(&erp, d).await.unwrap();
}

#[tokio::test]
async fn signup_row4_username_and_email_taken() {
    for encrypt_email in [true, false] {
        let f = fixture(|c| c.crypto.encrypt_email = encrypt_email).await;
        // An unapproved user's name counts too.
        let data = NewUser { email: Some("bob@example.com".into()), ..new_user("bob") };
        f.sso.user().create_user(&f.operator(), data, false).await.unwrap();
        let e = signup_err(&f, &f.anon(), signup_data("bob", Some("new@example.com"))).await;
        assert_eq!((e.real_code(), e.unauthenticated_code()), (Code::E001002, Code::E005001));
        // E-mail through the blind index: case does not matter.
        let e = signup_err(&f, &f.anon(), signup_data("robert", Some("BOB@Example.COM"))).await;
        assert_eq!((e.real_code(), e.unauthenticated_code()), (Code::E002002, Code::E005001));
        // Username before e-mail; both before the username syntax (row 5).
        let e = signup_err(&f, &f.anon(), signup_data("bob", Some("bob@example.com"))).await;
        assert_eq!(e.real_code(), Code::E001002);
        let e = signup_err(&f, &f.anon(), signup_data("r o b", Some("bob@example.com"))).await;
        assert_eq!(e.real_code(), Code::E002002);
    }
    let f = fixture(|c| {
        c.signup.inform_if_user_exists = true;
        c.signup.inform_if_email_exists = true;
    })
    .await;
    let data = NewUser { email: Some("bob@example.com".into()), ..new_user("bob") };
    f.sso.user().create_user(&f.operator(), data, true).await.unwrap();
    let e = signup_err(&f, &f.anon(), signup_data("bob", Some("x@example.com"))).await;
    assert_eq!(e.unauthenticated_code(), Code::E001002);
    let e = signup_err(&f, &f.anon(), signup_data("robert", Some("bob@example.com"))).await;
    assert_eq!(e.unauthenticated_code(), Code::E002002);
}

#[tokio::test]
async fn signup_row5_username_syntax_and_reject_list() {
    for inform in [false, true] {
        let f = fixture(|c| c.signup.inform_if_user_invalid = inform).await;
        for (name, expected) in [
            ("", Code::E001001),
            ("al\u{7}ice", Code::E001001),
            ("al ice", Code::E001004),
            (&*"a".repeat(129), Code::E001003),
            ("myAdmin1", Code::E001001),
            ("ROOTbeer", Code::E001001),
            ("the-sso-guy", Code::E001001),
        ] {
            let e = signup_err(&f, &f.anon(), signup_data(name, Some("ok@example.com"))).await;
            assert_eq!(e.real_code(), expected, "{name:?}");
            assert_eq!(e.unauthenticated_code(), if inform { expected } else { Code::E005001 }, "{name:?}");
        }
        // Row 5 before row 6.
        let mut d = signup_data("al ice", Some("ok@example.com"));
        d.password = Password::new("short");
        assert_eq!(signup_err(&f, &f.anon(), d).await.real_code(), Code::E001004);
    }
}

#[tokio::test]
async fn signup_row6_password_policy() {
    let f = Fixture::memory().await;
    let mut d = signup_data("alice", Some("alice@example.com"));
    d.password = Password::new("short");
    let e = signup_err(&f, &f.anon(), d).await;
    assert_eq!((e.real_code(), e.unauthenticated_code()), (Code::E003002, Code::E003002), "shown by default");
    let mut d = signup_data("alice", Some("alice@example.com"));
    d.password = Password::new("alice in wonderland");
    assert_eq!(signup_err(&f, &f.anon(), d).await.real_code(), Code::E003001);
    // Row 6 before row 7.
    let mut d = signup_data("alice", None);
    d.password = Password::new("short");
    assert_eq!(signup_err(&f, &f.anon(), d).await.real_code(), Code::E003002);
    let g = fixture(|c| c.password.inform_if_invalid = false).await;
    let mut d = signup_data("alice", Some("alice@example.com"));
    d.password = Password::new("short");
    let e = signup_err(&g, &g.anon(), d).await;
    assert_eq!((e.real_code(), e.unauthenticated_code()), (Code::E003002, Code::E005001));
    assert_no_secrets(&f, &["short", "alice in wonderland"]);
}

#[tokio::test]
async fn signup_row7_email_rules() {
    let long = format!("{}@example.com", "a".repeat(120));
    for inform in [false, true] {
        let f = fixture(|c| c.signup.inform_if_email_invalid = inform).await;
        for (email, expected) in [
            (None, Code::E002005),
            (Some("al ice@example.com"), Code::E002004),
            (Some(" alice@example.com"), Code::E002004),
            (Some(long.as_str()), Code::E002003),
            (Some("alice.example.com"), Code::E002001),
            (Some("alice@sso.example.com"), Code::E002001),
            (Some("Alice@ZATO.example.com"), Code::E002001),
        ] {
            let e = signup_err(&f, &f.anon(), signup_data("alice", email)).await;
            assert_eq!(e.real_code(), expected, "{email:?}");
            assert_eq!(e.unauthenticated_code(), if inform { expected } else { Code::E005001 }, "{email:?}");
        }
        assert!(by_name(&f, "alice").await.is_none());
    }
    // Not required: no e-mail is fine.
    let f = fixture(|c| c.signup.is_email_required = false).await;
    f.sso.user().signup(&f.anon(), signup_data("alice", None)).await.unwrap();
}

struct RejectEve(Arc<AtomicUsize>);

impl SignupValidator for RejectEve {
    fn validate(&self, d: &SignupData<'_>) -> Result<(), Code> {
        self.0.fetch_add(1, Ordering::SeqCst);
        assert!(!d.password.is_empty());
        if d.username.starts_with("eve") { Err(Code::E001001) } else { Ok(()) }
    }
}

struct RejectAll;

impl SignupValidator for RejectAll {
    fn validate(&self, _: &SignupData<'_>) -> Result<(), Code> {
        Err(Code::E008002)
    }
}

#[tokio::test]
async fn signup_row8_validators_run_last_and_in_order() {
    let calls = Arc::new(AtomicUsize::new(0));
    let f = fixture_with_validators(|_| {}, vec![Arc::new(RejectEve(calls.clone())), Arc::new(RejectAll)]).await;
    // Every built-in check comes first: the validators are not even called.
    let e = signup_err(&f, &f.anon(), signup_data("eve", Some("bad"))).await;
    assert_eq!(e.real_code(), Code::E002001);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // First validator refuses: its code, with the code table's visibility (E001001 is hidden by default).
    let e = signup_err(&f, &f.anon(), signup_data("eve", Some("eve@example.com"))).await;
    assert_eq!((e.real_code(), e.unauthenticated_code()), (Code::E001001, Code::E005001));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Second validator refuses when the first passes.
    let e = signup_err(&f, &f.anon(), signup_data("alice", Some("alice@example.com"))).await;
    assert_eq!(e.real_code(), Code::E008002);
    assert_eq!(e.unauthenticated_code(), Code::E005001, "authenticated-only codes are hidden");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(by_name(&f, "eve").await.is_none() && by_name(&f, "alice").await.is_none());
    let g = fixture_with_validators(
        |c| c.signup.inform_if_user_invalid = true,
        vec![Arc::new(RejectEve(Arc::new(AtomicUsize::new(0))))],
    )
    .await;
    let e = signup_err(&g, &g.anon(), signup_data("eve", Some("eve@example.com"))).await;
    assert_eq!(e.unauthenticated_code(), Code::E001001);
    g.sso.user().signup(&g.anon(), signup_data("alice", Some("alice@example.com"))).await.unwrap();
}

#[tokio::test]
async fn signup_effects() {
    let f = Fixture::memory().await;
    f.clock.advance(secs(5));
    let now = f.sso.now();
    let token = f.sso.user().signup(&f.anon(), signup_data("alice", Some("alice@example.com"))).await.unwrap();
    assert!(token.is_well_formed());
    let u = by_name(&f, "alice").await.unwrap();
    assert_eq!(u.sign_up_status, SignUpStatus::BeforeConfirmation);
    assert_eq!(u.approval_status, ApprovalStatus::BeforeDecision);
    assert_eq!(u.approval_status_mod_by, "auto");
    assert_eq!(u.sign_up_time, now);
    assert_eq!(u.confirm_token_hash.as_deref(), Some(&token.hash()[..]));
    assert!(!u.is_super_user);
    let cc: serde_json::Value = serde_json::from_str(&u.creation_ctx).unwrap();
    assert_eq!(cc["via"], "signup");
    let ev = f.notifier.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind, EventKind::Signup);
    assert_eq!(ev[0].user_id, u.user_id);
    let r = last(&f, "user.signup");
    assert_rec(&r, "user.signup", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(u.user_id.as_str()));
    assert_eq!(r.details["username"], "alice");
    assert_eq!(r.details["app_list"], serde_json::json!(["CRM"]));
    assert_eq!(r.actor, "anonymous");
    assert_no_secrets(&f, &[PASSWORD, "alice@example.com", token.expose()]);
    // Not confirmed, not approved: the right password still cannot log in.
    assert_eq!(code(f.login("alice", None).await), Code::E005003);
    let g = fixture(|c| c.signup.is_approval_needed = false).await;
    g.sso.user().signup(&g.anon(), signup_data("bob", Some("bob@example.com"))).await.unwrap();
    assert_eq!(by_name(&g, "bob").await.unwrap().approval_status, ApprovalStatus::Approved);
}

// ----- confirm_signup --------------------------------------------------------------------------

#[tokio::test]
async fn confirm_signup_codes_and_effect() {
    let f = Fixture::memory().await;
    let token = f.sso.user().signup(&f.anon(), signup_data("alice", Some("alice@example.com"))).await.unwrap();
    let id = by_name(&f, "alice").await.unwrap().user_id;
    for bad in [ConfirmToken::new("x"), ConfirmToken::new(""), ConfirmToken::generate().unwrap()] {
        let e = f.sso.user().confirm_signup(&f.anon(), &bad).await.unwrap_err();
        assert_eq!((e.real_code(), e.unauthenticated_code()), (Code::E005006, Code::E005006));
        let r = last(&f, "user.confirm_signup");
        assert_rec(&r, "user.confirm_signup", Outcome::Denied, &["E005006"]);
        assert_eq!(r.target_user_id, None);
    }
    let mut ctx = f.anon();
    ctx.current_app = "NOPE".into();
    assert_eq!(code(f.sso.user().confirm_signup(&ctx, &token).await), Code::E004001);
    assert_eq!(record(&f, &id).await.sign_up_status, SignUpStatus::BeforeConfirmation);
    f.clock.advance(secs(60));
    f.sso.user().confirm_signup(&f.anon(), &token).await.unwrap();
    let u = record(&f, &id).await;
    assert_eq!(u.sign_up_status, SignUpStatus::Final);
    assert_eq!(u.sign_up_confirm_time, Some(f.sso.now()));
    let r = last(&f, "user.confirm_signup");
    assert_rec(&r, "user.confirm_signup", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(id.as_str()));
    let e = f.sso.user().confirm_signup(&f.anon(), &token).await.unwrap_err();
    assert_eq!((e.real_code(), e.unauthenticated_code()), (Code::E005007, Code::E005007));
    let r = last(&f, "user.confirm_signup");
    assert_rec(&r, "user.confirm_signup", Outcome::Denied, &["E005007"]);
    assert_eq!(r.target_user_id.as_deref(), Some(id.as_str()));
    assert_no_secrets(&f, &[token.expose()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_confirmations_give_one_ok() {
    let f = Arc::new(Fixture::memory().await);
    let token = f.sso.user().signup(&f.anon(), signup_data("alice", Some("alice@example.com"))).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (f, token) = (f.clone(), token.clone());
        tasks.push(tokio::spawn(async move { f.sso.user().confirm_signup(&f.anon(), &token).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => assert_eq!(e.real_code(), Code::E005007),
        }
    }
    assert_eq!(ok, 1);
    let recs = records(&f, "user.confirm_signup");
    assert_eq!(recs.len(), 16);
    assert_eq!(recs.iter().filter(|r| r.outcome == Outcome::Success).count(), 1);
}

// ----- approve / reject ------------------------------------------------------------------------

#[tokio::test]
async fn approve_and_reject() {
    let f = Fixture::memory().await;
    let (su, ctx) = su_ctx(&f).await;
    let (_reg, reg_ust) = f.user_with_session("carol", false).await;
    let v = f.sso.user().create_user(&ctx, new_user("alice"), false).await.unwrap();
    let alice = v.admin.unwrap().user_id;
    // A regular user: E008002 (a super-user-only key), nothing changed.
    let e = f.sso.user().approve_user(&f.as_user(&reg_ust), alice.as_str()).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E008002);
    assert_rec(&last(&f, "user.approve_user"), "user.approve_user", Outcome::Failure, &["E008002"]);
    assert_eq!(code(f.sso.user().reject_user(&f.as_user(&reg_ust), alice.as_str()).await), Code::E008002);
    assert_eq!(record(&f, &alice).await.approval_status, ApprovalStatus::BeforeDecision);
    // Unknown (or malformed) target: E005001.
    let ghost = UserId::generate().unwrap();
    assert_eq!(code(f.sso.user().approve_user(&ctx, ghost.as_str()).await), Code::E005001);
    assert_eq!(code(f.sso.user().reject_user(&ctx, "nope").await), Code::E005001);
    assert_rec(&last(&f, "user.reject_user"), "user.reject_user", Outcome::Denied, &["E005001"]);
    // Approve: status, who and when; idempotent.
    f.clock.advance(secs(30));
    f.sso.user().approve_user(&ctx, alice.as_str()).await.unwrap();
    let u = record(&f, &alice).await;
    assert_eq!(u.approval_status, ApprovalStatus::Approved);
    assert_eq!(u.approval_status_mod_by, su.as_str());
    assert_eq!(u.approval_status_mod_time, f.sso.now());
    f.sso.user().approve_user(&ctx, alice.as_str()).await.unwrap();
    let r = last(&f, "user.approve_user");
    assert_rec(&r, "user.approve_user", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    // Reject revokes every session.
    let a1 = f.login("alice", None).await.unwrap().ust;
    let a2 = f.login("alice", None).await.unwrap().ust;
    f.sso.user().reject_user(&ctx, alice.as_str()).await.unwrap();
    assert_eq!(last(&f, "user.reject_user").details["sessions_revoked"], 2);
    for u in [&a1, &a2] {
        assert_eq!(code(f.sso.user().get_current_user(&f.as_user(u), false).await), Code::E007001);
    }
    assert!(f.sso.stores().sessions.list_by_user(&alice).await.unwrap().is_empty());
    assert_eq!(record(&f, &alice).await.approval_status, ApprovalStatus::Rejected);
    f.sso.user().reject_user(&ctx, alice.as_str()).await.unwrap();
    assert_eq!(last(&f, "user.reject_user").details["sessions_revoked"], 0);
    assert_eq!(code(f.login("alice", None).await), Code::E005004);
    f.sso.user().approve_user(&ctx, alice.as_str()).await.unwrap();
    f.login("alice", None).await.unwrap();
}

// ----- reads -----------------------------------------------------------------------------------

#[tokio::test]
async fn get_current_user_views() {
    let f = Fixture::memory().await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let v = f.sso.user().get_current_user(&f.as_user(&ust), false).await.unwrap();
    assert_eq!(v.username, "alice");
    assert!(v.admin.is_none(), "regular callers see the regular set");
    let v = f.sso.user().get_current_user(&f.as_user(&ust), true).await.unwrap();
    assert_eq!(v.admin.unwrap().user_id, alice, "return_all_attrs shows every non-secret field");
    let r = last(&f, "user.get_current_user");
    assert_rec(&r, "user.get_current_user", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    assert_eq!(r.details["return_all_attrs"], true);
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    assert!(f.sso.user().get_current_user(&f.as_user(&su_ust), false).await.unwrap().admin.is_some());
    // No session: E007001, audited as anonymous.
    assert_eq!(code(f.sso.user().get_current_user(&f.anon(), false).await), Code::E007001);
    let r = last(&f, "user.get_current_user");
    assert_rec(&r, "user.get_current_user", Outcome::Denied, &["E007001"]);
    assert_eq!(r.actor, "anonymous");
}

#[tokio::test]
async fn get_user_by_id_regular_and_super_user() {
    let f = Fixture::memory().await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let bob = f.create_user("bob", false).await;
    let ctx = f.as_user(&ust);
    // Own id is "self".
    let v = f.sso.user().get_user_by_id(&ctx, alice.as_str(), false).await.unwrap();
    assert_eq!(v.username, "alice");
    assert!(v.admin.is_none());
    assert!(f.sso.user().get_user_by_id(&ctx, alice.as_str(), true).await.unwrap().admin.is_some());
    // Another user or an unknown one: the same E005001.
    let e1 = f.sso.user().get_user_by_id(&ctx, bob.as_str(), false).await.unwrap_err();
    let e2 = f.sso.user().get_user_by_id(&ctx, UserId::generate().unwrap().as_str(), false).await.unwrap_err();
    assert_eq!(e1.real_code(), Code::E005001);
    assert_eq!(e1, e2);
    let r = last(&f, "user.get_user_by_id");
    assert_rec(&r, "user.get_user_by_id", Outcome::Denied, &["E005001"]);
    assert_eq!(r.reason.as_deref(), Some("not_owner"));
    // Super-users: the full view of anyone; unknown → E005001.
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    let sctx = f.as_user(&su_ust);
    let v = f.sso.user().get_user_by_id(&sctx, bob.as_str(), false).await.unwrap();
    assert_eq!(v.admin.unwrap().user_id, bob);
    let r = last(&f, "user.get_user_by_id");
    assert_eq!(r.target_user_id.as_deref(), Some(bob.as_str()));
    for ghost in [UserId::generate().unwrap().to_string(), "garbage".to_owned()] {
        assert_eq!(code(f.sso.user().get_user_by_id(&sctx, &ghost, true).await), Code::E005001);
        assert_eq!(last(&f, "user.get_user_by_id").reason.as_deref(), Some("no_such_user"));
    }
}

#[tokio::test]
async fn get_user_by_username_is_operator_only() {
    let f = Fixture::memory().await;
    let alice = f.create_user("alice", false).await;
    let v = f.sso.user().get_user_by_username(&f.operator(), "alice").await.unwrap().unwrap();
    assert_eq!(v.admin.unwrap().user_id, alice, "all fields");
    assert!(f.sso.user().get_user_by_username(&f.operator(), "nobody").await.unwrap().is_none());
    let (_su, su_ust) = f.user_with_session("root-admin", true).await;
    assert_eq!(code(f.sso.user().get_user_by_username(&f.as_user(&su_ust), "alice").await), Code::E005001);
    let r = last(&f, "user.get_user_by_username");
    assert_rec(&r, "user.get_user_by_username", Outcome::Denied, &["E005001"]);
}

// ----- search ----------------------------------------------------------------------------------

async fn search_world() -> (Fixture, CallCtx) {
    let f = Fixture::memory().await;
    let (_su, ctx) = su_ctx(&f).await;
    let op = f.operator();
    let mk = |name: &str, first: Option<&str>, last: Option<&str>, email: Option<&str>| NewUser {
        first_name: first.map(str::to_owned),
        last_name: last.map(str::to_owned),
        email: email.map(str::to_owned),
        ..new_user(name)
    };
    f.sso
        .user()
        .create_user(&op, mk("alice", Some("Zoë"), Some("Smith"), Some("alice@example.com")), true)
        .await
        .unwrap();
    f.sso.user().create_user(&op, mk("bob", Some("Bob"), Some("Smith"), Some("bob@example.com")), true).await.unwrap();
    f.sso.user().create_user(&op, mk("carol", Some("Carol"), Some("Jones%"), None), true).await.unwrap();
    f.sso.user().create_user(&op, mk("dave", None, None, None), true).await.unwrap();
    f.sso.user().create_user(&op, mk("erin", Some("Erin"), None, None), false).await.unwrap();
    (f, ctx)
}

async fn names_of(f: &Fixture, ctx: &CallCtx, q: SearchCtx) -> Vec<String> {
    f.sso.user().search(ctx, q).await.unwrap().result.into_iter().map(|v| v.username).collect()
}

fn id_of(v: &UserView) -> UserId {
    v.admin.as_ref().unwrap().user_id.clone()
}

#[tokio::test]
async fn search_order_and_precedence() {
    let (f, ctx) = search_world().await;
    // No criteria: everyone, display_name (NULL first), then username.
    assert_eq!(names_of(&f, &ctx, SearchCtx::default()).await, ["dave", "root-admin", "bob", "carol", "erin", "alice"]);
    let all = f.sso.user().search(&ctx, SearchCtx::default()).await.unwrap();
    assert!(all.result.iter().all(|v| v.admin.is_some()), "super-user views");
    let bob = id_of(all.result.iter().find(|v| v.username == "bob").unwrap());
    // user_id wins over everything else.
    let q = SearchCtx {
        user_id: Some(bob.to_string()),
        username: Some("alice".into()),
        last_name: Some("Jones%".into()),
        approval_status: Some("before_decision".into()),
        ..Default::default()
    };
    assert_eq!(names_of(&f, &ctx, q).await, ["bob"]);
    let q = SearchCtx { user_id: Some("garbage".into()), ..Default::default() };
    assert!(names_of(&f, &ctx, q).await.is_empty());
    // Then username (exact, case-sensitive), all else ignored.
    let q = SearchCtx { username: Some("alice".into()), first_name: Some("Bob".into()), ..Default::default() };
    assert_eq!(names_of(&f, &ctx, q).await, ["alice"]);
    let q = SearchCtx { username: Some("ALICE".into()), ..Default::default() };
    assert!(names_of(&f, &ctx, q).await.is_empty());
}

#[tokio::test]
async fn search_names_email_and_enums() {
    let (f, ctx) = search_world().await;
    let q = |first: Option<&str>, last: Option<&str>, exact: Option<bool>, op: Option<&str>| SearchCtx {
        first_name: first.map(str::to_owned),
        last_name: last.map(str::to_owned),
        is_name_exact: exact,
        name_op: op.map(str::to_owned),
        ..Default::default()
    };
    // Upper-cased comparison, non-ASCII included; exact by default.
    assert_eq!(names_of(&f, &ctx, q(Some("zoë"), None, None, None)).await, ["alice"]);
    assert_eq!(names_of(&f, &ctx, q(Some("ZOË"), None, None, None)).await, ["alice"]);
    assert!(names_of(&f, &ctx, q(Some("zo"), None, None, None)).await.is_empty());
    assert_eq!(names_of(&f, &ctx, q(Some("oë"), None, Some(false), None)).await, ["alice"]);
    assert_eq!(names_of(&f, &ctx, q(None, Some("smith"), None, None)).await, ["bob", "alice"]);
    // `%` and `_` are literal.
    assert_eq!(names_of(&f, &ctx, q(None, Some("%"), Some(false), None)).await, ["carol"]);
    assert!(names_of(&f, &ctx, q(None, Some("_"), Some(false), None)).await.is_empty());
    assert!(names_of(&f, &ctx, q(None, Some("S%H"), Some(false), None)).await.is_empty());
    // name_op.
    assert!(names_of(&f, &ctx, q(Some("bob"), Some("jones%"), None, Some("and"))).await.is_empty());
    assert_eq!(names_of(&f, &ctx, q(Some("bob"), Some("jones%"), None, Some("or"))).await, ["bob", "carol"]);
    // E-mail: exact, case-insensitive, AND-ed with the names.
    let e = |email: &str, last: Option<&str>| SearchCtx {
        email: Some(email.into()),
        last_name: last.map(str::to_owned),
        ..Default::default()
    };
    assert_eq!(names_of(&f, &ctx, e("ALICE@example.COM", None)).await, ["alice"]);
    assert!(names_of(&f, &ctx, e("alice@example", None)).await.is_empty());
    assert!(names_of(&f, &ctx, e("alice@example.com", Some("Jones%"))).await.is_empty());
    assert_eq!(names_of(&f, &ctx, e("alice@example.com", Some("smith"))).await, ["alice"]);
    // Enum filters.
    let a = SearchCtx { approval_status: Some("before_decision".into()), ..Default::default() };
    assert_eq!(names_of(&f, &ctx, a).await, ["erin"]);
    let s = SearchCtx { sign_up_status: Some("before_confirmation".into()), ..Default::default() };
    assert!(names_of(&f, &ctx, s).await.is_empty());
    for bad in [
        SearchCtx { sign_up_status: Some("done".into()), ..Default::default() },
        SearchCtx { approval_status: Some("maybe".into()), ..Default::default() },
        SearchCtx { name_op: Some("xor".into()), ..Default::default() },
    ] {
        assert_eq!(code(f.sso.user().search(&ctx, bad).await), Code::E008002);
        assert_rec(&last(&f, "user.search"), "user.search", Outcome::Failure, &["E008002"]);
    }
    // The record names the criteria, never their values.
    f.sso.user().search(&ctx, e("alice@example.com", Some("smith"))).await.unwrap();
    let r = last(&f, "user.search");
    assert_rec(&r, "user.search", Outcome::Success, &[]);
    let mut crit: Vec<String> =
        r.details["criteria"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    crit.sort();
    assert_eq!(crit, ["email", "last_name"]);
    assert_eq!(r.details["total"], 1);
    assert_no_secrets(&f, &["alice@example.com"]);
}

#[tokio::test]
async fn search_pagination() {
    let (f, ctx) = search_world().await;
    let page = |cur: Option<i64>, size: Option<i64>| SearchCtx { cur_page: cur, page_size: size, ..Default::default() };
    let p = f.sso.user().search(&ctx, page(Some(1), Some(4))).await.unwrap();
    assert_eq!((p.total, p.num_pages, p.page_size, p.cur_page), (6, 2, 4, 1));
    assert_eq!((p.has_prev_page, p.has_next_page, p.prev_page, p.next_page), (false, true, None, Some(2)));
    assert_eq!(p.result.len(), 4);
    let p = f.sso.user().search(&ctx, page(Some(2), Some(4))).await.unwrap();
    assert_eq!((p.has_prev_page, p.has_next_page, p.prev_page, p.next_page), (true, false, Some(1), None));
    assert_eq!(p.result.iter().map(|v| v.username.as_str()).collect::<Vec<_>>(), ["erin", "alice"]);
    let p = f.sso.user().search(&ctx, page(Some(3), Some(4))).await.unwrap();
    assert!(p.result.is_empty(), "a page past the end is empty");
    assert_eq!((p.total, p.cur_page, p.has_prev_page, p.has_next_page), (6, 3, true, false));
    for (cur, size, eff_cur, eff_size) in
        [(Some(0), Some(0), 1, 50), (Some(-3), Some(-5), 1, 50), (None, None, 1, 50), (None, Some(1000), 1, 100)]
    {
        let p = f.sso.user().search(&ctx, page(cur, size)).await.unwrap();
        assert_eq!((p.cur_page, p.page_size, p.num_pages), (eff_cur, eff_size, 1), "{cur:?} {size:?}");
    }
    let none = SearchCtx { username: Some("nobody".into()), ..Default::default() };
    let p = f.sso.user().search(&ctx, none).await.unwrap();
    assert_eq!((p.total, p.num_pages, p.has_next_page, p.next_page), (0, 0, false, None));
    // max_page_size caps both the default and a requested size.
    let g = fixture(|c| {
        c.search.default_page_size = 2;
        c.search.max_page_size = 3;
    })
    .await;
    for n in ["a1", "a2", "a3", "a4"] {
        g.create_user(n, false).await;
    }
    let op = g.operator();
    let p = g.sso.user().search(&op, page(None, None)).await.unwrap();
    assert_eq!((p.page_size, p.num_pages, p.result.len()), (2, 2, 2));
    let p = g.sso.user().search(&op, page(None, Some(10))).await.unwrap();
    assert_eq!((p.page_size, p.num_pages, p.result.len()), (3, 2, 3));
}

#[tokio::test]
async fn search_is_for_super_users_only() {
    let (f, _ctx) = search_world().await;
    let (_c, ust) = f.user_with_session("zed", false).await;
    let e = f.sso.user().search(&f.as_user(&ust), SearchCtx::default()).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E005001);
    assert_rec(&last(&f, "user.search"), "user.search", Outcome::Denied, &["E005001"]);
}

// ----- update ----------------------------------------------------------------------------------

#[tokio::test]
async fn update_checks_in_order() {
    let f = Fixture::memory().await;
    let (_su, sctx) = su_ctx(&f).await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let bob = f.create_user("bob", false).await;
    let ctx = f.as_user(&ust);
    let before = record(&f, &alice).await;
    let name = |n: &str| UserUpdate { display_name: Some(Some(n.into())), ..Default::default() };
    // 2. a regular user naming another user: E008002 (even with empty data: before check 4).
    assert_eq!(code(f.sso.user().update_user_by_id(&ctx, bob.as_str(), name("B")).await), Code::E008002);
    assert_eq!(code(f.sso.user().update_user_by_id(&ctx, bob.as_str(), UserUpdate::default()).await), Code::E008002);
    assert_rec(&last(&f, "user.update_user_by_id"), "user.update_user_by_id", Outcome::Failure, &["E008002"]);
    // 3. a super-user naming an unknown user: E005001.
    let ghost = UserId::generate().unwrap();
    assert_eq!(code(f.sso.user().update_user_by_id(&sctx, ghost.as_str(), UserUpdate::default()).await), Code::E005001);
    // 4. no key: E008003.
    let e = f.sso.user().update_current_user(&ctx, UserUpdate::default()).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E008003);
    assert_rec(&last(&f, "user.update_current_user"), "user.update_current_user", Outcome::Failure, &["E008003"]);
    // 5. keys not allowed for regular users (own id is "self"), before the value checks.
    for upd in [
        UserUpdate { is_locked: Some(Some(false)), ..Default::default() },
        UserUpdate { approval_status: Some(Some("approved".into())), ..Default::default() },
        UserUpdate { password_expiry: Some(Some("2999-01-01".into())), ..Default::default() },
        UserUpdate { password_must_change: Some(Some(false)), ..Default::default() },
        UserUpdate { sign_up_status: Some(Some("final".into())), ..Default::default() },
        UserUpdate { username: Some(Some("a b".into())), is_locked: Some(Some(true)), ..Default::default() },
    ] {
        assert_eq!(code(f.sso.user().update_current_user(&ctx, upd.clone()).await), Code::E008002);
        assert_eq!(code(f.sso.user().update_user_by_id(&ctx, alice.as_str(), upd).await), Code::E008002);
    }
    // 6. values.
    for (upd, expected) in [
        (UserUpdate { username: Some(None), ..Default::default() }, Code::E008002),
        (UserUpdate { username: Some(Some("a b".into())), ..Default::default() }, Code::E001004),
        (UserUpdate { username: Some(Some(String::new())), ..Default::default() }, Code::E001001),
        (UserUpdate { username: Some(Some("x".repeat(129))), ..Default::default() }, Code::E001003),
        (UserUpdate { email: Some(Some("a b@example.com".into())), ..Default::default() }, Code::E002004),
        (UserUpdate { email: Some(Some(" a@example.com".into())), ..Default::default() }, Code::E002004),
        (UserUpdate { email: Some(Some(format!("{}@e.com", "a".repeat(130)))), ..Default::default() }, Code::E002003),
        (UserUpdate { email: Some(Some("a@b@c".into())), ..Default::default() }, Code::E002001),
        (UserUpdate { totp_label: Some(Some("a:b".into())), ..Default::default() }, Code::E008002),
        // 6 before 7: the username syntax before the conflict.
        (
            UserUpdate { username: Some(Some("bob".into())), email: Some(Some("x".into())), ..Default::default() },
            Code::E002001,
        ),
        // 7. the new username is free.
        (UserUpdate { username: Some(Some("bob".into())), ..Default::default() }, Code::E001002),
    ] {
        assert_eq!(code(f.sso.user().update_current_user(&ctx, upd).await), expected);
        assert_rec(
            &last(&f, "user.update_current_user"),
            "user.update_current_user",
            outcome_of(expected),
            &[expected.as_str()],
        );
    }
    // Super-user value rules: the super-user-only keys may not be null and must parse.
    for upd in [
        UserUpdate { is_locked: Some(None), ..Default::default() },
        UserUpdate { password_expiry: Some(None), ..Default::default() },
        UserUpdate { password_expiry: Some(Some("tomorrow".into())), ..Default::default() },
        UserUpdate { password_must_change: Some(None), ..Default::default() },
        UserUpdate { sign_up_status: Some(Some("done".into())), ..Default::default() },
        UserUpdate { approval_status: Some(None), ..Default::default() },
        UserUpdate { approval_status: Some(Some("maybe".into())), ..Default::default() },
    ] {
        assert_eq!(code(f.sso.user().update_user_by_id(&sctx, alice.as_str(), upd).await), Code::E008002);
    }
    assert_eq!(record(&f, &alice).await, before, "no refusal changed anything");
}

#[tokio::test]
async fn update_effects_and_null_rules() {
    let f = Fixture::memory().await;
    let (su, sctx) = su_ctx(&f).await;
    let data = NewUser {
        email: Some("alice@example.com".into()),
        first_name: Some("Alice".into()),
        totp_label: Some("Phone1".into()),
        ..new_user("alice")
    };
    let alice = f.sso.user().create_user(&f.operator(), data, true).await.unwrap().admin.unwrap().user_id;
    let ust = f.login("alice", None).await.unwrap().ust;
    let ctx = f.as_user(&ust);
    let upd = UserUpdate {
        email: Some(Some("New@Example.com".into())),
        first_name: Some(Some("Älice".into())),
        display_name: Some(None),
        totp_label: Some(None),
        is_totp_enabled: Some(Some(true)),
        ..Default::default()
    };
    f.sso.user().update_current_user(&ctx, upd).await.unwrap();
    let v = f.sso.user().get_current_user(&ctx, false).await.unwrap();
    assert_eq!(v.email.as_deref(), Some("New@Example.com"));
    assert_eq!(v.first_name.as_deref(), Some("Älice"));
    assert_eq!(v.display_name, None);
    assert_eq!(v.totp_label, "", "null label = the default label");
    assert!(v.is_totp_enabled);
    let u = record(&f, &alice).await;
    assert_eq!(u.first_name_upper.as_deref(), Some("ÄLICE"));
    assert_eq!(u.email_idx.as_deref(), Some(f.sso.key_ring().email_index("new@example.com").as_str()));
    let r = last(&f, "user.update_current_user");
    assert_rec(&r, "user.update_current_user", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    let mut keys: Vec<&str> = r.details["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["display_name", "email", "first_name", "is_totp_enabled", "totp_label"]);
    assert_no_secrets(&f, &["New@Example.com", "new@example.com", "Phone1"]);
    // Null e-mail clears it (and its index); renaming to one's own name is no conflict.
    let upd = UserUpdate { email: Some(None), username: Some(Some("alice".into())), ..Default::default() };
    f.sso.user().update_user_by_id(&ctx, alice.as_str(), upd).await.unwrap();
    let u = record(&f, &alice).await;
    assert!(u.email_enc.is_none() && u.email_idx.is_none());
    // A super-user: approval change records who and when; leaving `approved` revokes sessions.
    f.clock.advance(secs(7));
    let upd = UserUpdate { approval_status: Some(Some("before_decision".into())), ..Default::default() };
    f.sso.user().update_user_by_id(&sctx, alice.as_str(), upd).await.unwrap();
    let u = record(&f, &alice).await;
    assert_eq!(u.approval_status, ApprovalStatus::BeforeDecision);
    assert_eq!(u.approval_status_mod_by, su.as_str());
    assert_eq!(u.approval_status_mod_time, f.sso.now());
    assert_eq!(last(&f, "user.update_user_by_id").details["sessions_revoked"], 1);
    assert_eq!(code(f.sso.user().get_current_user(&ctx, false).await), Code::E007001);
    let upd = UserUpdate {
        approval_status: Some(Some("approved".into())),
        password_must_change: Some(Some(true)),
        password_expiry: Some(Some("2999-01-02T03:04:05".into())),
        ..Default::default()
    };
    f.sso.user().update_user_by_id(&sctx, alice.as_str(), upd).await.unwrap();
    let u = record(&f, &alice).await;
    assert!(u.password_must_change);
    assert_eq!(u.password_expiry, Timestamp::parse("2999-01-02T03:04:05"));
}

#[tokio::test]
async fn update_lock_revokes_sessions() {
    let f = Fixture::memory().await;
    let (su, sctx) = su_ctx(&f).await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    f.clock.advance(secs(3));
    let upd = UserUpdate { is_locked: Some(Some(true)), ..Default::default() };
    f.sso.user().update_user_by_id(&sctx, alice.as_str(), upd).await.unwrap();
    let u = record(&f, &alice).await;
    assert!(u.is_locked);
    assert_eq!(u.locked_time, Some(f.sso.now()));
    assert_eq!(u.locked_by.as_deref(), Some(su.as_str()));
    assert_eq!(last(&f, "user.update_user_by_id").details["sessions_revoked"], 1);
    assert!(f.sso.stores().sessions.list_by_user(&alice).await.unwrap().is_empty());
    // Unlocking through update lets the user back in, but the old session stays dead.
    let upd = UserUpdate { is_locked: Some(Some(false)), ..Default::default() };
    f.sso.user().update_user_by_id(&sctx, alice.as_str(), upd).await.unwrap();
    assert_eq!(code(f.sso.user().get_current_user(&f.as_user(&ust), false).await), Code::E007001);
    f.login("alice", None).await.unwrap();
}

#[tokio::test]
async fn update_require_code_to_enable() {
    for inform in [true, false] {
        let f = fixture(|c| {
            c.totp.require_code_to_enable = true;
            c.login.inform_if_totp_missing = inform;
        })
        .await;
        let (alice, ust) = f.user_with_session("alice", false).await;
        let ctx = f.as_user(&ust);
        f.sso.user().reset_totp_key(&ctx, None, Some(RFC_KEY), None).await.unwrap();
        let key = sso_core::secret::TotpKey::parse(RFC_KEY).unwrap();
        let on = |c: Option<&str>| UserUpdate {
            is_totp_enabled: Some(Some(true)),
            totp_code: c.map(TotpCode::new),
            ..Default::default()
        };
        let e = f.sso.user().update_current_user(&ctx, on(None)).await.unwrap_err();
        assert_eq!(e.real_code(), if inform { Code::E005008 } else { Code::E005001 });
        assert_eq!(code(f.sso.user().update_current_user(&ctx, on(Some(""))).await), e.real_code());
        let good = f.code_now(&key, 0);
        let e = f.sso.user().update_current_user(&ctx, on(Some(wrong_code(&good)))).await.unwrap_err();
        assert_eq!(e.real_code(), Code::E005001);
        assert_eq!(last(&f, "user.update_current_user").reason.as_deref(), Some("totp_invalid"));
        assert!(!record(&f, &alice).await.is_totp_enabled);
        f.sso.user().update_current_user(&ctx, on(Some(&good))).await.unwrap();
        assert!(record(&f, &alice).await.is_totp_enabled);
        assert_no_secrets(&f, &[&good]);
        // A super-user enabling it for someone else needs no code.
        let (_su, sctx) = su_ctx(&f).await;
        let bob = f.create_user("bob", false).await;
        let upd = UserUpdate { is_totp_enabled: Some(Some(true)), ..Default::default() };
        f.sso.user().update_user_by_id(&sctx, bob.as_str(), upd).await.unwrap();
        assert!(record(&f, &bob).await.is_totp_enabled);
    }
}

// ----- lock / unlock ---------------------------------------------------------------------------

#[tokio::test]
async fn lock_and_unlock() {
    let f = Fixture::memory().await;
    let (su, sctx) = su_ctx(&f).await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let (_bob, bob_ust) = f.user_with_session("bob", false).await;
    // Regular callers and unknown targets: E005001.
    assert_eq!(code(f.sso.user().lock_user(&f.as_user(&bob_ust), alice.as_str()).await), Code::E005001);
    assert_eq!(code(f.sso.user().unlock_user(&f.as_user(&bob_ust), alice.as_str()).await), Code::E005001);
    let ghost = UserId::generate().unwrap();
    assert_eq!(code(f.sso.user().lock_user(&sctx, ghost.as_str()).await), Code::E005001);
    assert_rec(&last(&f, "user.lock_user"), "user.lock_user", Outcome::Denied, &["E005001"]);
    assert!(!record(&f, &alice).await.is_locked);
    f.clock.advance(secs(4));
    f.sso.user().lock_user(&sctx, alice.as_str()).await.unwrap();
    let u = record(&f, &alice).await;
    assert!(u.is_locked);
    assert_eq!(u.locked_time, Some(f.sso.now()));
    assert_eq!(u.locked_by.as_deref(), Some(su.as_str()));
    assert_eq!(code(f.sso.user().get_current_user(&f.as_user(&ust), false).await), Code::E007001);
    let r = last(&f, "user.lock_user");
    assert_rec(&r, "user.lock_user", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    assert_eq!(r.details["sessions_revoked"], 1);
    assert!(f.notifier.events().iter().any(|e| e.kind == EventKind::UserLocked && e.user_id == alice));
    f.sso.user().lock_user(&sctx, alice.as_str()).await.unwrap();
    assert_eq!(code(f.login("alice", None).await), Code::E005002);
    f.clock.advance(secs(4));
    f.sso.user().unlock_user(&sctx, alice.as_str()).await.unwrap();
    let u = record(&f, &alice).await;
    assert!(!u.is_locked);
    assert_eq!(u.locked_time, Some(f.sso.now()));
    assert_eq!(u.locked_by.as_deref(), Some(su.as_str()));
    assert_rec(&last(&f, "user.unlock_user"), "user.unlock_user", Outcome::Success, &[]);
    f.sso.user().unlock_user(&sctx, alice.as_str()).await.unwrap();
    f.login("alice", None).await.unwrap();
}

#[tokio::test]
async fn unlock_clears_the_user_throttle_key() {
    let f = fixture(|c| {
        c.throttle.user.free_attempts = 3;
        c.throttle.user.lockout_after = 4;
    })
    .await;
    let (_su, sctx) = su_ctx(&f).await;
    let alice = f.create_user("alice", false).await;
    for _ in 0..4 {
        assert_eq!(code(login_pw(&f, "alice", "wrong-password-x").await), Code::E005001);
    }
    let e = f.login("alice", None).await.unwrap_err();
    assert!(matches!(e, SsoError::Throttled { .. }), "{e:?}");
    f.clock.advance(secs(60));
    assert!(matches!(f.login("alice", None).await.unwrap_err(), SsoError::Throttled { .. }), "still locked out");
    f.sso.user().unlock_user(&sctx, alice.as_str()).await.unwrap();
    f.login("alice", None).await.unwrap();
}

#[tokio::test]
async fn unlock_clears_the_totp_throttle_key() {
    let f = Fixture::memory().await;
    let (_su, sctx) = su_ctx(&f).await;
    let alice = f.create_user("alice", false).await;
    let key = enable_totp(&f, &alice).await;
    for _ in 0..5 {
        let good = f.code_now(&key, 0);
        assert_eq!(code(f.login("alice", Some(wrong_code(&good))).await), Code::E005001);
        f.clock.advance(secs(61));
    }
    let good = f.code_now(&key, 0);
    assert!(matches!(f.login("alice", Some(&good)).await.unwrap_err(), SsoError::Throttled { .. }));
    f.sso.user().unlock_user(&sctx, alice.as_str()).await.unwrap();
    f.login("alice", Some(&good)).await.unwrap();
}

// ----- delete ----------------------------------------------------------------------------------

#[tokio::test]
async fn delete_checks() {
    let f = Fixture::memory().await;
    let (su, sctx) = su_ctx(&f).await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let bob = f.create_user("bob", false).await;
    // Regular users: E005001 (pipeline SU).
    assert_eq!(code(f.sso.user().delete_user_by_id(&f.as_user(&ust), bob.as_str()).await), Code::E005001);
    assert_eq!(code(f.sso.user().delete_user_by_username(&f.as_user(&ust), "bob").await), Code::E005001);
    // Unknown (or malformed) targets and oneself: E008001.
    let ghost = UserId::generate().unwrap();
    for id in [ghost.as_str(), "garbage", su.as_str()] {
        assert_eq!(code(f.sso.user().delete_user_by_id(&sctx, id).await), Code::E008001, "{id}");
        assert_rec(&last(&f, "user.delete_user_by_id"), "user.delete_user_by_id", Outcome::Failure, &["E008001"]);
    }
    for name in ["nobody", "root-admin"] {
        assert_eq!(code(f.sso.user().delete_user_by_username(&sctx, name).await), Code::E008001);
        let r = last(&f, "user.delete_user_by_username");
        assert_rec(&r, "user.delete_user_by_username", Outcome::Failure, &["E008001"]);
        assert_eq!(r.details["username"], name);
    }
    assert!(by_name(&f, "root-admin").await.is_some() && by_name(&f, "bob").await.is_some());
    // By id and by username.
    f.sso.user().delete_user_by_id(&sctx, bob.as_str()).await.unwrap();
    let r = last(&f, "user.delete_user_by_id");
    assert_rec(&r, "user.delete_user_by_id", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(bob.as_str()));
    assert_eq!(r.details["username"], "bob");
    f.sso.user().delete_user_by_username(&sctx, "alice").await.unwrap();
    let r = last(&f, "user.delete_user_by_username");
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    assert!(by_name(&f, "alice").await.is_none() && by_name(&f, "bob").await.is_none());
    assert_eq!(code(f.sso.user().get_current_user(&f.as_user(&ust), false).await), Code::E007001);
    assert_eq!(code(f.sso.user().delete_user_by_id(&sctx, bob.as_str()).await), Code::E008001, "twice");
}

#[tokio::test]
async fn delete_cascades_and_a_recreated_username_inherits_nothing() {
    let f = Fixture::memory().await;
    let (_su, sctx) = su_ctx(&f).await;
    let alice = f.create_user("alice", false).await;
    f.sso.user().reset_totp_key(&f.operator(), Some(&alice), Some(RFC_KEY), None).await.unwrap();
    let key = sso_core::secret::TotpKey::parse(RFC_KEY).unwrap();
    let ust = f.login("alice", None).await.unwrap().ust;
    let other = f.login("alice", None).await.unwrap();
    let actx = f.as_user(&ust);
    use sso_core::service::{AttrInput, AttrTarget};
    f.sso
        .attr()
        .create(&actx, AttrTarget::User(None), AttrInput::new("color", serde_json::json!("red")))
        .await
        .unwrap();
    f.sso.attr().create(&actx, AttrTarget::Session(None), AttrInput::new("tab", serde_json::json!(1))).await.unwrap();
    f.sso.user().create_linked_auth(&sctx, alice.as_str(), "jwt", "alice@idp", true).await.unwrap();
    f.sso.password_reset().create_token(&f.anon(), "alice").await.unwrap();
    let prt = f.notifier.events().into_iter().find_map(|e| e.token).unwrap();
    let target = || sso_core::service::TotpTarget::UserId(alice.to_string());
    let good = TotpCode::new(f.code_now(&key, 0));
    f.sso.totp().validate_code(&f.anon(), Some(&good), target()).await.unwrap();
    let marker = format!("totp-step:{alice}:{}", record(&f, &alice).await.totp_key_gen);
    assert!(f.sso.stores().counters.get(&marker, f.sso.now()).await.unwrap().is_some(), "replay marker set");
    let bad = TotpCode::new("abc");
    assert_eq!(code(f.sso.totp().validate_code(&f.anon(), Some(&bad), target()).await), Code::E005001);
    assert!(f.sso.stores().counters.get(&format!("totp:{alice}"), f.sso.now()).await.unwrap().is_some());
    let owner_sid = ust.session_id().unwrap();
    f.sso.user().delete_user_by_id(&sctx, alice.as_str()).await.unwrap();
    let s = f.sso.stores();
    let now = f.sso.now();
    assert!(s.user_attrs.get_many(AttrScope::User, alice.as_str(), &["color".into()], now).await.unwrap().is_empty());
    assert!(
        s.session_attrs
            .get_many(AttrScope::Session, owner_sid.as_str(), &["tab".into()], now)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.links.get_link("jwt", "alice@idp").await.unwrap().is_none());
    assert!(s.resets.get_prt(&prt.hash()).await.unwrap().is_none());
    assert!(s.sessions.list_by_user(&alice).await.unwrap().is_empty());
    assert!(s.sessions.get(&other.session_id).await.unwrap().is_none());
    assert!(s.counters.get(&format!("totp:{alice}"), now).await.unwrap().is_none(), "totp key deleted");
    assert!(s.counters.get(&marker, now).await.unwrap().is_none(), "replay marker deleted");
    // Same username again: a new user, no old session, link or attribute.
    let (alice2, ust2) = f.user_with_session("alice", false).await;
    assert_ne!(alice2, alice);
    assert_eq!(code(f.sso.user().get_current_user(&actx, false).await), Code::E007001);
    let list = f.sso.session().get_list(&f.as_user(&ust2), sso_core::service::ListTarget::Own).await.unwrap();
    assert_eq!(list.len(), 1);
    assert!(f.sso.user().get_linked_auth_list(&f.as_user(&ust2), None).await.unwrap().is_empty());
    let a2 = f.as_user(&ust2);
    assert!(f.sso.attr().get(&a2, AttrTarget::User(None), "color", true).await.unwrap().is_none());
    // Writing an attribute straight into the store for the deleted id still fails (no owner).
    let w = AttrWrite { name: "x".into(), value: "1".into(), is_encrypted: false, expiration_time: None };
    assert!(s.user_attrs.set_many(AttrScope::User, alice.as_str(), &[w], now).await.is_err());
}

// ----- change_password / set_password ----------------------------------------------------------

fn cp(user_id: Option<&str>, old: Option<&str>, new: &str) -> ChangePassword {
    ChangePassword {
        user_id: user_id.map(str::to_owned),
        old_password: old.map(Password::new),
        new_password: Password::new(new),
        password_expiry: None,
        must_change: None,
    }
}

const NEW_PW: &str = "a completely new passphrase";

#[tokio::test]
async fn change_password_checks_in_order() {
    let f = Fixture::memory().await;
    let (_su, sctx) = su_ctx(&f).await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let bob = f.create_user("bob", false).await;
    let ctx = f.as_user(&ust);
    let before = record(&f, &alice).await;
    // 2. regular naming another user: E008002 (before the old-password check).
    assert_eq!(code(f.sso.user().change_password(&ctx, cp(Some(bob.as_str()), None, NEW_PW)).await), Code::E008002);
    // 3. super-user naming an unknown user.
    let ghost = UserId::generate().unwrap();
    let e = f.sso.user().change_password(&sctx, cp(Some(ghost.as_str()), None, NEW_PW)).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E005001);
    // 4. own password: old_password present and non-empty (own id counts as self).
    let v0 = f.sso.password_verifications();
    for data in [cp(None, None, NEW_PW), cp(None, Some(""), NEW_PW), cp(Some(alice.as_str()), None, NEW_PW)] {
        assert_eq!(code(f.sso.user().change_password(&ctx, data).await), Code::E005001);
    }
    assert_eq!(f.sso.password_verifications(), v0, "nothing verified");
    // 5. wrong old password.
    assert_eq!(code(f.sso.user().change_password(&ctx, cp(None, Some("wrong-old-pw"), NEW_PW)).await), Code::E005001);
    assert_eq!(last(&f, "user.change_password").reason.as_deref(), Some("bad_password"));
    // 6. the policy, then new ≠ old.
    assert_eq!(code(f.sso.user().change_password(&ctx, cp(None, Some(PASSWORD), "short")).await), Code::E003002);
    assert_eq!(
        code(f.sso.user().change_password(&ctx, cp(None, Some(PASSWORD), "alice-is-here-now")).await),
        Code::E003001
    );
    assert_eq!(code(f.sso.user().change_password(&ctx, cp(None, Some(PASSWORD), PASSWORD)).await), Code::E003001);
    // Every refusal audited, nothing changed.
    let recs = records(&f, "user.change_password");
    assert_eq!(recs.len(), 9);
    assert!(recs.iter().all(|r| r.status == "error"));
    assert_eq!(record(&f, &alice).await, before);
    assert_no_secrets(&f, &[PASSWORD, NEW_PW, "wrong-old-pw", "alice-is-here-now"]);
}

#[tokio::test]
async fn change_password_old_password_guesses_are_throttled() {
    let f = Fixture::memory().await;
    let (_alice, ust) = f.user_with_session("alice", false).await;
    let ctx = f.as_user(&ust);
    for _ in 0..4 {
        assert_eq!(
            code(f.sso.user().change_password(&ctx, cp(None, Some("wrong-old-pw"), NEW_PW)).await),
            Code::E005001
        );
    }
    let v = f.sso.password_verifications();
    let e = f.sso.user().change_password(&ctx, cp(None, Some(PASSWORD), NEW_PW)).await.unwrap_err();
    assert!(matches!(e, SsoError::Throttled { .. }), "{e:?}");
    assert_eq!(f.sso.password_verifications(), v, "not evaluated while blocked");
    assert_eq!(last(&f, "user.change_password").reason.as_deref(), Some("throttled"));
    // Login shares the key.
    assert!(matches!(f.login("alice", None).await.unwrap_err(), SsoError::Throttled { .. }));
    f.clock.advance(secs(2));
    f.sso.user().change_password(&ctx, cp(None, Some(PASSWORD), NEW_PW)).await.unwrap();
    // Success reset the key: three free failures again.
    for _ in 0..3 {
        assert_eq!(code(login_pw(&f, "alice", "wrong-password-x").await), Code::E005001);
    }
}

#[tokio::test]
async fn change_password_effects_for_regular_users() {
    let f = Fixture::memory().await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let other = f.login("alice", None).await.unwrap().ust;
    f.clock.advance(secs(9));
    let now = f.sso.now();
    let mut data = cp(None, Some(PASSWORD), NEW_PW);
    data.must_change = Some(true);
    data.password_expiry = Some(3);
    f.sso.user().change_password(&f.as_user(&ust), data).await.unwrap();
    let u = record(&f, &alice).await;
    assert!(!u.password_must_change, "ignored for regular users");
    assert_eq!(u.password_expiry, Some(now.add_secs(730 * DAY)), "ignored for regular users");
    assert_eq!(u.password_last_set, now);
    // The current session is kept, the other one revoked.
    f.sso.user().get_current_user(&f.as_user(&ust), false).await.unwrap();
    assert_eq!(code(f.sso.user().get_current_user(&f.as_user(&other), false).await), Code::E007001);
    let r = last(&f, "user.change_password");
    assert_rec(&r, "user.change_password", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    assert_eq!(r.details["sessions_revoked"], 1);
    assert_eq!(r.details["must_change"], false);
    assert!(f.notifier.events().iter().any(|e| e.kind == EventKind::PasswordChanged && e.user_id == alice));
    assert_eq!(code(f.login("alice", None).await), Code::E005001, "old password gone");
    login_pw(&f, "alice", NEW_PW).await.unwrap();
    assert_no_secrets(&f, &[PASSWORD, NEW_PW]);
}

#[tokio::test]
async fn change_password_by_a_super_user() {
    let f = Fixture::memory().await;
    let (su, su_ust) = f.user_with_session("root-admin", true).await;
    let sctx = f.as_user(&su_ust);
    let (bob, bob_ust) = f.user_with_session("bob", false).await;
    let now = f.sso.now();
    // For someone else: no old password, must_change and expiry honoured, all sessions revoked.
    let mut data = cp(Some(bob.as_str()), None, NEW_PW);
    data.must_change = Some(true);
    data.password_expiry = Some(5);
    f.sso.user().change_password(&sctx, data).await.unwrap();
    let u = record(&f, &bob).await;
    assert!(u.password_must_change);
    assert_eq!(u.password_expiry, Some(now.add_secs(5 * DAY)));
    assert_eq!(code(f.sso.user().get_current_user(&f.as_user(&bob_ust), false).await), Code::E007001);
    let r = last(&f, "user.change_password");
    assert_eq!(r.details["must_change"], true);
    assert_eq!(r.details["expiry_days"], 5);
    assert_eq!(r.details["sessions_revoked"], 1);
    // Own password: the old one is required, must_change honoured too.
    assert_eq!(code(f.sso.user().change_password(&sctx, cp(Some(su.as_str()), None, NEW_PW)).await), Code::E005001);
    let mut data = cp(None, Some(PASSWORD), NEW_PW);
    data.must_change = Some(true);
    f.sso.user().change_password(&sctx, data).await.unwrap();
    assert!(record(&f, &su).await.password_must_change);
    f.sso.user().get_current_user(&sctx, false).await.unwrap();
}

#[tokio::test]
async fn set_password_is_operator_only() {
    let f = Fixture::memory().await;
    let (_su, sctx) = su_ctx(&f).await;
    let (bob, bob_ust) = f.user_with_session("bob", false).await;
    let pw = Password::new(NEW_PW);
    let e = f.sso.user().set_password(&sctx, &bob, &pw, false, None).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E005001);
    assert_rec(&last(&f, "user.set_password"), "user.set_password", Outcome::Denied, &["E005001"]);
    let e = f.sso.user().set_password(&f.operator(), &bob, &Password::new("short"), false, None).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E003002);
    f.sso.user().set_password(&f.operator(), &bob, &pw, true, Some(2)).await.unwrap();
    let u = record(&f, &bob).await;
    assert!(u.password_must_change);
    assert_eq!(u.password_expiry, Some(f.sso.now().add_secs(2 * DAY)));
    assert_eq!(code(f.sso.user().get_current_user(&f.as_user(&bob_ust), false).await), Code::E007001);
    let r = last(&f, "user.set_password");
    assert_rec(&r, "user.set_password", Outcome::Success, &[]);
    assert_eq!(r.actor, "cli:tester@host");
    assert_eq!(r.target_user_id.as_deref(), Some(bob.as_str()));
    assert_no_secrets(&f, &[NEW_PW]);
}

// ----- linked auth -----------------------------------------------------------------------------

#[tokio::test]
async fn linked_auth_create_list_get_and_delete() {
    let f = Fixture::memory().await;
    let (_su, sctx) = su_ctx(&f).await;
    let (alice, ust) = f.user_with_session("alice", false).await;
    let bob = f.create_user("bob", false).await;
    let actx = f.as_user(&ust);
    // create: super-users only; unknown user; syntax; duplicate principal.
    assert_eq!(code(f.sso.user().create_linked_auth(&actx, alice.as_str(), "jwt", "a", true).await), Code::E005001);
    let ghost = UserId::generate().unwrap();
    assert_eq!(code(f.sso.user().create_linked_auth(&sctx, ghost.as_str(), "jwt", "a", true).await), Code::E005001);
    for (t, u) in [("Basic", "a"), ("1jwt", "a"), ("jwt", ""), ("jwt", "a\u{0}b")] {
        assert_eq!(code(f.sso.user().create_linked_auth(&sctx, alice.as_str(), t, u, true).await), Code::E008002);
    }
    let (uid, auth_id) =
        f.sso.user().create_linked_auth(&sctx, alice.as_str(), "oidc.google", "a-123", true).await.unwrap();
    assert_eq!(uid, alice);
    let r = last(&f, "user.create_linked_auth");
    assert_rec(&r, "user.create_linked_auth", Outcome::Success, &[]);
    assert_eq!(r.details["auth_type"], "oidc.google");
    assert_eq!(r.details["auth_id"], auth_id.as_str());
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    for target in [&alice, &bob] {
        let e =
            f.sso.user().create_linked_auth(&sctx, target.as_str(), "oidc.google", "a-123", true).await.unwrap_err();
        assert_eq!(e.real_code(), Code::E008001, "a principal maps to at most one user");
    }
    f.sso.user().create_linked_auth(&sctx, bob.as_str(), "basic_auth", "bob", false).await.unwrap();
    // list: self, super-user for others.
    let mine = f.sso.user().get_linked_auth_list(&actx, None).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!((mine[0].auth_type.as_str(), mine[0].auth_username.as_str()), ("oidc.google", "a-123"));
    assert_eq!(f.sso.user().get_linked_auth_list(&actx, Some(alice.as_str())).await.unwrap().len(), 1);
    assert_eq!(code(f.sso.user().get_linked_auth_list(&actx, Some(bob.as_str())).await), Code::E005001);
    assert_eq!(code(f.sso.user().get_linked_auth_list(&sctx, Some(ghost.as_str())).await), Code::E005001);
    let bl = f.sso.user().get_linked_auth_list(&sctx, Some(bob.as_str())).await.unwrap();
    assert!(!bl[0].is_active);
    // get_user_by_linked_auth: the linked user, not the caller; only active links.
    let v = f.sso.user().get_user_by_linked_auth(&sctx, "oidc.google", "a-123").await.unwrap();
    assert_eq!(v.username, "alice");
    assert_eq!(v.admin.unwrap().user_id, alice);
    assert_eq!(code(f.sso.user().get_user_by_linked_auth(&actx, "oidc.google", "a-123").await), Code::E005001);
    assert_eq!(code(f.sso.user().get_user_by_linked_auth(&sctx, "basic_auth", "bob").await), Code::E005001);
    assert_eq!(code(f.sso.user().get_user_by_linked_auth(&sctx, "jwt", "nobody").await), Code::E005001);
    // delete: super-users only; no such link for that user → E008001.
    assert_eq!(
        code(f.sso.user().delete_linked_auth(&actx, alice.as_str(), "oidc.google", "a-123").await),
        Code::E005001
    );
    assert_eq!(code(f.sso.user().delete_linked_auth(&sctx, bob.as_str(), "oidc.google", "a-123").await), Code::E008001);
    let gone = f.sso.user().delete_linked_auth(&sctx, alice.as_str(), "oidc.google", "a-123").await.unwrap();
    assert_eq!(gone, auth_id);
    assert_eq!(
        code(f.sso.user().delete_linked_auth(&sctx, alice.as_str(), "oidc.google", "a-123").await),
        Code::E008001
    );
    assert!(f.sso.user().get_linked_auth_list(&actx, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn login_linked_and_link_deletion_revoke_only_that_links_sessions() {
    let f = Fixture::memory().await;
    let (_su, sctx) = su_ctx(&f).await;
    let alice = f.create_user("alice", false).await;
    let (_, a_id) = f.sso.user().create_linked_auth(&sctx, alice.as_str(), "jwt", "alice@idp", true).await.unwrap();
    f.sso.user().create_linked_auth(&sctx, alice.as_str(), "oidc.google", "g-1", true).await.unwrap();
    f.sso.user().create_linked_auth(&sctx, alice.as_str(), "basic_auth", "off", false).await.unwrap();
    let pw = f.login("alice", None).await.unwrap();
    let a1 = f.sso.user().login_linked(&f.anon(), "jwt", "alice@idp", None, None).await.unwrap();
    let a2 = f.sso.user().login_linked(&f.anon(), "jwt", "alice@idp", Some("ext-7"), None).await.unwrap();
    let b1 = f.sso.user().login_linked(&f.anon(), "oidc.google", "g-1", None, None).await.unwrap();
    assert_eq!(a1.user_id, alice);
    let r = last(&f, "user.login_linked");
    assert_rec(&r, "user.login_linked", Outcome::Success, &[]);
    assert_eq!(r.target_user_id.as_deref(), Some(alice.as_str()));
    let s = f.sso.stores().sessions.get(&a2.session_id).await.unwrap().unwrap();
    assert_eq!((s.auth_type.as_str(), s.auth_principal.as_str()), ("jwt", "alice@idp"));
    assert_eq!(s.ext_session_id, format!("{a_id}.ext-7"));
    let s = f.sso.stores().sessions.get(&a1.session_id).await.unwrap().unwrap();
    assert_eq!(s.ext_session_id, a_id.as_str());
    let s = f.sso.stores().sessions.get(&pw.session_id).await.unwrap().unwrap();
    assert_eq!((s.auth_type.as_str(), s.ext_session_id.as_str()), ("default", ""));
    // Inactive or unknown links: E005001.
    assert_eq!(code(f.sso.user().login_linked(&f.anon(), "basic_auth", "off", None, None).await), Code::E005001);
    assert_eq!(code(f.sso.user().login_linked(&f.anon(), "jwt", "mallory", None, None).await), Code::E005001);
    // Deleting link A revokes a1 and a2 only.
    f.sso.user().delete_linked_auth(&sctx, alice.as_str(), "jwt", "alice@idp").await.unwrap();
    for u in [&a1.ust, &a2.ust] {
        assert_eq!(code(f.sso.user().get_current_user(&f.as_user(u), false).await), Code::E007001);
    }
    for u in [&pw.ust, &b1.ust] {
        f.sso.user().get_current_user(&f.as_user(u), false).await.unwrap();
    }
    assert_eq!(code(f.sso.user().login_linked(&f.anon(), "jwt", "alice@idp", None, None).await), Code::E005001);
}

#[tokio::test]
async fn login_linked_enforces_totp_and_account_state() {
    let f = Fixture::memory().await;
    let (_su, sctx) = su_ctx(&f).await;
    let alice = f.create_user("alice", false).await;
    f.sso.user().create_linked_auth(&sctx, alice.as_str(), "jwt", "alice@idp", true).await.unwrap();
    let key = enable_totp(&f, &alice).await;
    let e = f.sso.user().login_linked(&f.anon(), "jwt", "alice@idp", None, None).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E005008);
    assert_eq!(last(&f, "user.login_linked").reason.as_deref(), Some("totp_missing"));
    let good = f.code_now(&key, 0);
    let bad = TotpCode::new(wrong_code(&good));
    assert_eq!(code(f.sso.user().login_linked(&f.anon(), "jwt", "alice@idp", None, Some(&bad)).await), Code::E005001);
    assert_eq!(last(&f, "user.login_linked").reason.as_deref(), Some("totp_invalid"));
    let good = TotpCode::new(good);
    f.sso.user().login_linked(&f.anon(), "jwt", "alice@idp", None, Some(&good)).await.unwrap();
    assert_eq!(last(&f, "user.login_linked").details["totp"], true);
    assert_eq!(code(f.sso.user().login_linked(&f.anon(), "jwt", "alice@idp", None, Some(&good)).await), Code::E005001);
    assert_eq!(last(&f, "user.login_linked").reason.as_deref(), Some("totp_replay"));
    f.sso.user().lock_user(&sctx, alice.as_str()).await.unwrap();
    f.clock.advance(secs(30));
    let next = TotpCode::new(f.code_now(&key, 0));
    let e = f.sso.user().login_linked(&f.anon(), "jwt", "alice@idp", None, Some(&next)).await.unwrap_err();
    assert_eq!(e.real_code(), Code::E005002);
}

#[tokio::test]
async fn login_linked_success_resets_the_totp_key() {
    let f = Fixture::memory().await;
    let (_su, sctx) = su_ctx(&f).await;
    let alice = f.create_user("alice", false).await;
    f.sso.user().create_linked_auth(&sctx, alice.as_str(), "jwt", "alice@idp", true).await.unwrap();
    let key = enable_totp(&f, &alice).await;
    let linked = |c: &str| {
        let c = TotpCode::new(c);
        let f = &f;
        async move { f.sso.user().login_linked(&f.anon(), "jwt", "alice@idp", None, Some(&c)).await }
    };
    let good = f.code_now(&key, 0);
    for _ in 0..3 {
        assert_eq!(code(linked(wrong_code(&good)).await), Code::E005001);
    }
    linked(&good).await.unwrap();
    // A successful TOTP check resets the key (spec/concepts.md §8): three failures are free again.
    for _ in 0..3 {
        assert_eq!(code(linked(wrong_code(&good)).await), Code::E005001);
    }
}

// ----- import ----------------------------------------------------------------------------------

const PBKDF2: &str = "$pbkdf2-sha512$1000$MDEyMzQ1Njc4OWFiY2RlZg$KOCO/21UWEDSBOvxUdfKEkgS96SW7Vi0S2wNZHjbIsBQ7Fyki4Gnpu6pq3rRaqaQ.kQrEZ4S7tMa0OkQ0obAQQ";

#[tokio::test]
async fn import_users_skips_existing_ids_and_usernames() {
    let f = Fixture::memory().await;
    let existing = f.create_user("alice", false).await;
    let id1 = UserId::generate().unwrap();
    let row = |id: &str, name: &str| ImportRow {
        user_id: id.to_owned(),
        username: name.to_owned(),
        password: PBKDF2.to_owned(),
        email: Some("legacy@example.com".into()),
        totp_label: Some("<default-label>".into()),
        ..Default::default()
    };
    let rows = vec![
        row(id1.as_str(), "legacy"),
        row(existing.as_str(), "someone-else"),
        row(UserId::generate().unwrap().as_str(), "alice"),
        ImportRow { password: "plain".into(), ..row(UserId::generate().unwrap().as_str(), "plain") },
    ];
    f.audit.clear();
    let out = f.sso.user().import_users(&f.operator(), rows).await.unwrap();
    assert_eq!(out[0], ImportOutcome::Imported(id1.clone()));
    assert!(matches!(&out[1], ImportOutcome::Skipped(w) if w.contains("user_id")), "{out:?}");
    assert!(matches!(&out[2], ImportOutcome::Skipped(w) if w.contains("username")), "{out:?}");
    assert!(matches!(&out[3], ImportOutcome::Skipped(_)), "{out:?}");
    let recs = records(&f, "user.import_user");
    assert_eq!(recs.len(), 4, "one record per row");
    assert_eq!(f.audit.records().len(), 4);
    let skipped: Vec<bool> = recs.iter().map(|r| r.details["skipped"].as_bool().unwrap()).collect();
    assert_eq!(skipped, [false, true, true, true]);
    assert_eq!(recs[0].details["username"], "legacy");
    assert_eq!(recs[0].target_user_id.as_deref(), Some(id1.as_str()));
    assert!(recs.iter().all(|r| r.actor == "cli:tester@host"));
    let u = record(&f, &id1).await;
    assert_eq!(u.username, "legacy");
    assert_eq!(f.sso.user().get_user_by_username(&f.operator(), "legacy").await.unwrap().unwrap().totp_label, "");
    assert_eq!(record(&f, &existing).await.username, "alice", "existing row untouched");
    assert_no_secrets(&f, &[PBKDF2, "legacy@example.com"]);
    // Only the Operator may import; the refusal is audited once.
    let (_su, sctx) = su_ctx(&f).await;
    let n = records(&f, "user.import_user").len();
    let rows = vec![row(UserId::generate().unwrap().as_str(), "x"), row(UserId::generate().unwrap().as_str(), "y")];
    assert_eq!(code(f.sso.user().import_users(&sctx, rows).await), Code::E005001);
    assert_eq!(records(&f, "user.import_user").len(), n + 1);
    assert_rec(&last(&f, "user.import_user"), "user.import_user", Outcome::Denied, &["E005001"]);
    assert!(by_name(&f, "x").await.is_none());
}
