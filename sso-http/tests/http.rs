//! sso-http end-to-end tests: the real binary over real HTTP (issue "Must show" of the embedded
//! server), bad input, restart, and the route table against the OpenAPI document.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

mod bruteforce;
mod common;
mod rotation;
mod security;

use common::{PASSWORD, Server, Store, cli, code, fresh, fresh_on};
use reqwest::Method;
use serde_json::{Value, json};

async fn admin_ust(s: &Server) -> String {
    s.ust("admin", PASSWORD).await
}

/// Creates a user through the API and returns its id.
async fn create(s: &Server, su: &str, username: &str, extra: Value) -> String {
    let mut body =
        json!({"ust": su, "username": username, "password": "a fine passphrase for tests", "auto_approve": true});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let r = s.call(Method::POST, "/user", body).await;
    assert_eq!(r.status, 200, "create {username}: {}", r.body);
    r.s("user_id")
}

const BOB_PW: &str = "a fine passphrase for tests";

async fn users_totp_sessions_and_passwords_over_http(store: Store) {
    let Some((_dir, admin_id, s, hooks)) = fresh_on(store, "").await else { return };
    let su = admin_ust(&s).await;

    // --- the seed: own key generated, then TOTP enabled and enforced at login.
    let r = s.call(Method::PATCH, "/user/totp", json!({"ust": su, "totp_label": "Work laptop"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let admin_key = r.s("totp_key");
    assert_eq!(admin_key.len(), 32);
    assert_eq!(r.s("totp_uri"), format!("otpauth://totp/sso:Work%20laptop?secret={admin_key}&issuer=sso"));
    assert_eq!(r.headers["cache-control"], "no-store");
    let r = s.call(Method::PATCH, "/user", json!({"ust": su, "is_totp_enabled": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.login("admin", PASSWORD, None).await;
    assert_eq!((r.status, r.code()), (403, "E005008".into()));
    let admin_code = code(&admin_key, 0);
    let r = s.login("admin", PASSWORD, Some(&admin_code)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let first_su = su.clone();
    let su = r.s("ust");
    assert_eq!(r.s("user_id"), admin_id);

    // --- create, get, update, search.
    let bob = create(&s, &su, "bob", json!({"email": "bob@example.com", "first_name": "Bob"})).await;
    let r = s.call(Method::GET, "/user", json!({"ust": su, "user_id": bob})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.s("username"), "bob");
    assert_eq!(r.s("email"), "bob@example.com");
    assert_eq!(r.s("user_id"), bob);
    assert!(r.body.get("password").is_none() && r.body.get("totp_key").is_none());
    let bob_ust = s.ust("bob", BOB_PW).await;
    let r = s.call(Method::GET, "/user", json!({"ust": bob_ust})).await;
    assert_eq!(r.s("username"), "bob");
    assert!(r.body.get("user_id").is_none(), "regular users see the regular set only: {}", r.body);
    let r = s.call(Method::PATCH, "/user", json!({"ust": su, "user_id": bob, "display_name": "Bobby Tables"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call(Method::PATCH, "/user", json!({"ust": bob_ust, "last_name": "Tables", "middle_name": null})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call(Method::PATCH, "/user", json!({"ust": bob_ust, "is_locked": true})).await;
    assert_eq!((r.status, r.code()), (403, "E008002".into()), "field-level authorisation");
    let r = s
        .raw(
            Method::GET,
            "/zato/sso/user/search?last_name=tab&is_name_exact=false",
            vec![],
            &[("authorization", &format!("Bearer {su}")), ("x-zato-sso-current-app", "CRM")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["total"], 1);
    assert_eq!(r.body["result"][0]["display_name"], "Bobby Tables");

    // --- lock / unlock.
    let r = s.call(Method::POST, "/user/lock", json!({"ust": su, "user_id": bob})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call(Method::GET, "/user", json!({"ust": bob_ust})).await;
    assert_eq!((r.status, r.code()), (403, "E007001".into()), "lock revokes sessions");
    let r = s.login("bob", BOB_PW, None).await;
    assert_eq!((r.status, r.code()), (403, "E005002".into()));
    let r = s.call(Method::DELETE, "/user/lock", json!({"ust": su, "user_id": bob})).await;
    assert_eq!(r.status, 200);
    let bob_ust = s.ust("bob", BOB_PW).await;

    // --- approval.
    let carol = {
        let r = s.call(Method::POST, "/user", json!({"ust": su, "username": "carol", "password": BOB_PW})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["approval_status"], "before_decision");
        r.s("user_id")
    };
    assert_eq!(s.login("carol", BOB_PW, None).await.code(), "E005004");
    assert_eq!(s.call(Method::POST, "/user/approve", json!({"ust": su, "user_id": carol})).await.status, 200);
    let carol_ust = s.ust("carol", BOB_PW).await;
    assert_eq!(s.call(Method::POST, "/user/reject", json!({"ust": su, "user_id": carol})).await.status, 200);
    assert_eq!(s.call(Method::GET, "/user", json!({"ust": carol_ust})).await.code(), "E007001");
    let r = s.call(Method::POST, "/user/approve", json!({"ust": bob_ust, "user_id": carol})).await;
    assert_eq!(r.code(), "E008002", "approval needs a super-user");

    // --- sign-up and confirmation.
    let r = s
        .call(
            Method::POST,
            "/user/signup",
            json!({"username": "dave", "password": BOB_PW, "email": "dave@example.com", "app_list": ["CRM"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.s("confirm_token");
    assert_eq!(s.login("dave", BOB_PW, None).await.code(), "E005003");
    assert_eq!(s.call(Method::PATCH, "/user/signup", json!({"confirm_token": token})).await.status, 200);
    let again = s.call(Method::PATCH, "/user/signup", json!({"confirm_token": token})).await;
    assert_eq!((again.status, again.code(), again.body["status"].clone()), (403, "E005007".into(), json!("error")));
    assert_eq!(s.login("dave", BOB_PW, None).await.code(), "E005004");
    hooks.wait("signup", "dave").await;

    // --- sessions: verify, renew, list, revoke, logout-all, logout.
    let s2 = s.ust("bob", BOB_PW).await;
    let r = s.call(Method::POST, "/user/session", json!({"current_ust": bob_ust, "target_ust": bob_ust})).await;
    assert_eq!(r.body["is_valid"], true, "{}", r.body);
    let r = s.call(Method::PATCH, "/user/session", json!({"ust": bob_ust})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["expiration_time"].is_string());
    let r = s
        .raw(
            Method::GET,
            "/zato/sso/user/session/list",
            vec![],
            &[("authorization", &format!("Bearer {bob_ust}")), ("x-zato-sso-current-app", "CRM")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.body["result"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert!(!r.body.to_string().contains(&bob_ust) && !r.body.to_string().contains(&s2), "no UST in lists");
    let other = list.iter().find(|x| x["is_current"] == false).unwrap()["session_id"].as_str().unwrap().to_owned();
    let r = s.call(Method::GET, "/user/session", json!({"current_ust": bob_ust, "target_session_id": other})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.s("auth_principal"), "bob");
    assert_eq!(s.call(Method::DELETE, "/user/session", json!({"ust": bob_ust, "session_id": other})).await.status, 200);
    assert_eq!(s.call(Method::GET, "/user", json!({"ust": s2})).await.code(), "E007001");
    let s3 = s.ust("bob", BOB_PW).await;
    let r = s.call(Method::POST, "/user/logout/all", json!({"ust": bob_ust, "keep_current": true})).await;
    assert_eq!(r.body["revoked"], 1, "{}", r.body);
    assert_eq!(s.call(Method::GET, "/user", json!({"ust": s3})).await.code(), "E007001");
    assert_eq!(s.call(Method::POST, "/user/logout", json!({"ust": bob_ust})).await.status, 200);
    let r = s.call(Method::POST, "/user/logout", json!({"ust": bob_ust})).await;
    assert_eq!((r.status, r.body["status"].clone()), (200, json!("ok")), "logout always answers ok");
    let r = s.call(Method::POST, "/user/session", json!({"current_ust": su, "target_ust": bob_ust})).await;
    assert_eq!(r.body["is_valid"], false);

    // --- the seed for another user: generated, then supplied; the target's sessions end.
    let bob_ust = s.ust("bob", BOB_PW).await;
    let r = s.call(Method::PATCH, "/user/totp", json!({"ust": su, "user_id": bob})).await;
    assert_eq!(r.status, 200);
    assert!(r.body["totp_key"].is_string() && r.body["totp_uri"].as_str().unwrap().contains("sso:bob?"));
    assert_eq!(s.call(Method::GET, "/user", json!({"ust": bob_ust})).await.code(), "E007001");
    let r =
        s.call(Method::PATCH, "/user/totp", json!({"ust": su, "user_id": bob, "totp_key": "KMCLCWN4YPMD2WO3"})).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.get("totp_key").is_none() && r.body.get("totp_uri").is_none(),
        "supplied keys are not echoed: {}",
        r.body
    );
    assert_eq!(
        s.call(Method::PATCH, "/user", json!({"ust": su, "user_id": bob, "is_totp_enabled": true})).await.status,
        200
    );
    let bob_code = code("KMCLCWN4YPMD2WO3", 0);
    let r = s.login("bob", BOB_PW, Some(&bob_code)).await;
    assert_eq!(r.status, 200, "login with the admin-set key: {}", r.body);
    let bob_ust = r.s("ust");
    // A regular user naming another user: E008002, nothing changed.
    let r = s
        .call(Method::PATCH, "/user/totp", json!({"ust": bob_ust, "user_id": admin_id, "totp_key": "JBSWY3DPEHPK3PXP"}))
        .await;
    assert_eq!((r.status, r.code()), (403, "E008002".into()));
    // Own reset with a supplied key, then TOTP off for the password flows below.
    let r = s.call(Method::PATCH, "/user/totp", json!({"ust": bob_ust, "totp_key": "JBSWY3DPEHPK3PXP"})).await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("totp_key").is_none());
    assert_eq!(
        s.call(Method::PATCH, "/user", json!({"ust": su, "user_id": bob, "is_totp_enabled": false})).await.status,
        200
    );

    // --- password change and the reset-token flow.
    let r = s
        .call(
            Method::PATCH,
            "/user/password",
            json!({"ust": bob_ust, "old_password": BOB_PW, "new_password": "second passphrase here"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.login("bob", BOB_PW, None).await.code(), "E005001");
    s.ust("bob", "second passphrase here").await;
    let r = s.call(Method::POST, "/password/reset", json!({"credential": "bob"})).await;
    assert_eq!(r.status, 200);
    let unknown = s.call(Method::POST, "/password/reset", json!({"credential": "nobody"})).await;
    assert_eq!((unknown.status, unknown.body["status"].clone()), (200, json!("ok")), "no enumeration");
    let event = hooks.wait("password_reset", "bob").await;
    let prt = event["token"].as_str().unwrap().to_owned();
    let r = s.call(Method::PATCH, "/password/reset", json!({"token": prt})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let reset_key = r.s("reset_key");
    assert_eq!(s.call(Method::PATCH, "/password/reset", json!({"token": prt})).await.code(), "E010001", "single use");
    let r = s
        .call(
            Method::DELETE,
            "/password/reset",
            json!({"token": prt, "reset_key": reset_key, "password": "third passphrase here"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.ust("bob", "third passphrase here").await;
    hooks.wait("totp_reset", "bob").await;
    hooks.wait("password_changed", "bob").await;
    for h in hooks.0.lock().unwrap().iter().filter(|h| h["event"] != "password_reset") {
        let t = h.to_string();
        assert!(
            !t.contains("third passphrase") && !t.contains("JBSWY3DP") && !t.contains("KMCLCWN4"),
            "secret in webhook: {t}"
        );
    }

    // --- delete.
    let r = s.call(Method::DELETE, "/user", json!({"ust": su, "user_id": carol})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call(Method::DELETE, "/user", json!({"ust": su, "user_id": carol})).await;
    assert_eq!(r.code(), "E008001", "deleting an unknown user");
    assert_eq!(s.login("carol", BOB_PW, None).await.code(), "E005001");

    // --- the audit trail over REST (super-users only) and through the CLI.
    let r = s
        .raw(
            Method::GET,
            "/zato/sso/audit?op=user.reset_totp_key&limit=100",
            vec![],
            &[("authorization", &format!("Bearer {su}")), ("x-zato-sso-current-app", "CRM")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let resets = r.body["result"].as_array().unwrap();
    assert!(resets.len() >= 5, "{}", r.body);
    assert!(resets.iter().all(|x| x["op"] == "user.reset_totp_key"));
    assert!(
        resets.iter().any(|x| x["outcome"] == "failure" && x["sub_status"][0] == "E008002"),
        "refusals are recorded"
    );
    let bob_now = s.ust("bob", "third passphrase here").await;
    let r = s.call(Method::GET, "/audit", json!({"ust": bob_now})).await;
    assert_eq!((r.status, r.code()), (403, "E005001".into()), "regular users may not read the trail");
    let out = cli(
        _dir.path(),
        &["--output", "json", "audit", "query", "--op", "user.login", "--outcome", "denied", "--limit", "5"],
        "",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!page["records"].as_array().unwrap().is_empty());

    // --- no secret anywhere: audit file, SQL audit table (read back whole), logs, database files.
    let all = s.call(Method::GET, "/audit", json!({"ust": su, "limit": 1000})).await;
    let mut haystack = all.body.to_string();
    haystack.push_str(&common::dir_text(_dir.path()));
    let secrets = [
        PASSWORD,
        BOB_PW,
        "second passphrase here",
        "third passphrase here",
        admin_key.as_str(),
        "KMCLCWN4YPMD2WO3",
        "JBSWY3DPEHPK3PXP",
        &format!("\"{admin_code}\""),
        &format!("\"{bob_code}\""),
        &first_su,
        &su,
        &bob_ust,
        &s2,
        &s3,
        &carol_ust,
        &prt,
        &reset_key,
        &token,
    ];
    for secret in secrets {
        assert!(
            !haystack.contains(secret),
            "a secret leaked into the audit trail, logs or database files: {secret:.4}…"
        );
    }
}

async fn attributes_over_http(store: Store) {
    let Some((_dir, _admin, s, _hooks)) = fresh_on(store, "").await else { return };
    let su = admin_ust(&s).await;
    let bob = create(&s, &su, "bob", json!({})).await;
    let ust = s.ust("bob", BOB_PW).await;
    let p = "/user/attr";
    assert_eq!(
        s.call(Method::POST, p, json!({"ust": ust, "name": "colour", "value": {"fav": "blue"}})).await.status,
        200
    );
    let r = s.call(Method::POST, p, json!({"ust": ust, "name": "colour", "value": 1})).await;
    assert_eq!(r.code(), "E009001");
    let r = s.call(Method::GET, p, json!({"ust": ust, "name": "colour"})).await;
    assert_eq!((r.body["found"].clone(), r.body["value"]["fav"].clone()), (json!(true), json!("blue")));
    assert_eq!(r.body["expiration_time"], "9999-12-31T00:00:00");
    assert_eq!(
        s.call(Method::PUT, p, json!({"ust": ust, "name": "secret", "value": "s3", "encrypt": true})).await.status,
        200
    );
    let r = s.call(Method::GET, p, json!({"ust": ust, "name": "secret", "decrypt": false})).await;
    assert!(r.s("value").starts_with("enc1."), "{}", r.body);
    let r = s.call(Method::GET, p, json!({"ust": ust, "name": "secret"})).await;
    assert_eq!(r.body["value"], "s3");
    assert_eq!(s.call(Method::PATCH, p, json!({"ust": ust, "name": "colour", "value": "red"})).await.status, 200);
    assert_eq!(s.call(Method::PATCH, p, json!({"ust": ust, "name": "missing", "value": 1})).await.code(), "E009002");
    let r = s
        .call(Method::POST, p, json!({"ust": ust, "data": [{"name": "a", "value": 1}, {"name": "colour", "value": 2}]}))
        .await;
    assert_eq!(r.code(), "E009001", "create_many is atomic");
    let r = s.call(Method::GET, "/user/attr/exists", json!({"ust": ust, "data": ["a", "colour"]})).await;
    assert_eq!(r.body["result"], json!({"a": false, "colour": true}));
    let r = s.call(Method::GET, "/user/attr/names", json!({"ust": ust})).await;
    assert_eq!(r.body["result"], json!(["colour", "secret"]));
    assert_eq!(
        s.call(Method::PATCH, "/user/attr/expiry", json!({"ust": ust, "name": "colour", "expiration": 3600}))
            .await
            .status,
        200
    );
    let r = s.call(Method::GET, p, json!({"ust": ust, "data": ["colour", "nope"]})).await;
    assert!(r.body["result"]["colour"]["expiration_time"].as_str().unwrap() < "9999");
    assert!(r.body["result"].get("nope").is_none());
    assert_eq!(s.call(Method::DELETE, p, json!({"ust": ust, "name": "colour"})).await.status, 200);
    assert_eq!(s.call(Method::DELETE, p, json!({"ust": ust, "name": "colour"})).await.code(), "E009002");
    assert_eq!(s.call(Method::GET, p, json!({"ust": ust})).await.code(), "E008003", "neither name nor data");
    assert_eq!(s.call(Method::GET, p, json!({"ust": ust, "name": "x", "data": ["y"]})).await.status, 400);
    // A super-user reads another user's attributes; a regular user cannot.
    let r = s.call(Method::GET, p, json!({"ust": su, "user_id": bob, "name": "secret"})).await;
    assert_eq!(r.body["value"], "s3");
    let other = create(&s, &su, "eve", json!({})).await;
    assert_eq!(s.call(Method::GET, p, json!({"ust": ust, "user_id": other, "name": "x"})).await.code(), "E005001");
    // Session attributes disappear with the session.
    let sp = "/session/attr";
    assert_eq!(
        s.call(Method::POST, sp, json!({"current_ust": ust, "name": "cart", "value": [1, 2]})).await.status,
        200
    );
    let r = s.call(Method::GET, sp, json!({"current_ust": ust, "name": "cart"})).await;
    assert_eq!(r.body["value"], json!([1, 2]));
    let ust2 = s.ust("bob", BOB_PW).await;
    let r = s.call(Method::GET, sp, json!({"current_ust": ust2, "target_ust": ust, "name": "cart"})).await;
    assert_eq!(r.body["found"], true, "own user's other session: {}", r.body);
    assert_eq!(s.call(Method::POST, "/user/logout", json!({"ust": ust})).await.status, 200);
    let r = s.call(Method::GET, sp, json!({"current_ust": ust2, "target_ust": ust, "name": "cart"})).await;
    assert_eq!(r.code(), "E007001");
}

/// A snapshot of the observable store state, read back through the API.
async fn snapshot(s: &Server, su: &str) -> Value {
    let r = s.call(Method::GET, "/user/search", json!({"ust": su, "page_size": 100})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut users = r.body["result"].clone();
    // The super-user's own login times move; everything else must not.
    if let Value::Array(a) = &mut users {
        for u in a.iter_mut() {
            if let Value::Object(m) = u {
                m.remove("cid");
            }
        }
    }
    users
}

async fn bad_input_gets_the_spec_error_and_changes_nothing(store: Store) {
    let Some((_dir, _admin, s, _hooks)) = fresh_on(store, "").await else { return };
    let su = admin_ust(&s).await;
    let bob = create(&s, &su, "bob", json!({})).await;
    let bob_ust = s.ust("bob", BOB_PW).await;
    let before = snapshot(&s, &su).await;
    let app = [("x-zato-sso-current-app", "CRM")];
    // Malformed JSON, non-object bodies.
    for body in [&b"{bad json"[..], b"[1,2]", b"\"str\"", b"null"] {
        let r = s.raw(Method::POST, "/zato/sso/user/login", body.to_vec(), &app).await;
        assert_eq!(r.status, 400, "{body:?}");
        assert_eq!(r.body["details"], "Bad request");
        assert!(r.body["cid"].is_string());
    }
    // Wrong types.
    for body in [
        json!({"username": 123, "password": "x"}),
        json!({"ust": su, "user_id": bob, "is_locked": "maybe"}),
        json!({"ust": su, "page_size": "ten"}),
    ] {
        let path = if body.get("username").is_some() {
            "/user/login"
        } else if body.get("is_locked").is_some() {
            "/user"
        } else {
            "/user/search"
        };
        let method = if path == "/user" { Method::PATCH } else { Method::POST };
        let r = s.call(method, path, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    // Missing required fields.
    assert_eq!(s.call(Method::POST, "/user/login", json!({"username": "bob"})).await.status, 400);
    assert_eq!(s.call(Method::DELETE, "/user", json!({"ust": su})).await.status, 400);
    assert_eq!(s.call(Method::PATCH, "/user/totp", json!({})).await.status, 400);
    let r = s.raw(Method::POST, "/zato/sso/user/login", br#"{"username":"bob","password":"x"}"#.to_vec(), &[]).await;
    assert_eq!(r.status, 400, "current_app missing");
    // Oversize body.
    let big = json!({"ust": su, "username": "x".repeat(70_000)});
    let r = s.raw(Method::POST, "/zato/sso/user", serde_json::to_vec(&big).unwrap(), &app).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.body["details"], "Payload too large");
    // Unknown current_app.
    let mut body = json!({"ust": su, "user_id": bob, "totp_key": "KMCLCWN4YPMD2WO3"});
    body["current_app"] = json!("NOPE");
    let r = s.call(Method::PATCH, "/user/totp", body).await;
    assert_eq!((r.status, r.code()), (403, "E004001".into()));
    // Garbage USTs.
    for garbage in ["", "zust", "zust!!!!", &"z".repeat(500), "gAAAAABalFycY50Budi"] {
        let r = s.call(Method::PATCH, "/user/totp", json!({"ust": garbage, "user_id": bob})).await;
        assert_eq!((r.status, r.code()), (403, "E007001".into()), "{garbage:?}");
        let r = s.call(Method::PATCH, "/user", json!({"ust": garbage, "display_name": "x"})).await;
        assert_eq!(r.code(), "E007001");
    }
    // Secrets in query strings; Bearer conflicting with the body.
    let r = s.raw(Method::GET, &format!("/zato/sso/user?ust={bob_ust}"), vec![], &app).await;
    assert_eq!(r.status, 400);
    let r = s
        .raw(
            Method::GET,
            "/zato/sso/user",
            serde_json::to_vec(&json!({"ust": su})).unwrap(),
            &[("authorization", &format!("Bearer {bob_ust}")), app[0]],
        )
        .await;
    assert_eq!(r.status, 400);
    // Invalid keys and labels change nothing.
    for key in ["JBSWY3DP", "!!!!", "GEZD GNBV GY3T QOJQ"] {
        let r = s.call(Method::PATCH, "/user/totp", json!({"ust": su, "user_id": bob, "totp_key": key})).await;
        assert_eq!(r.code(), "E008002");
    }
    assert_eq!(
        s.call(Method::PATCH, "/user/totp", json!({"ust": su, "user_id": bob, "totp_label": "a:b"})).await.code(),
        "E008002"
    );
    // Unlisted verbs, unknown paths.
    let r = s.raw(Method::PUT, "/zato/sso/user/login/x", vec![], &app).await;
    assert_eq!(r.status, 404);
    let r = s.raw(Method::from_bytes(b"TRACE").unwrap(), "/zato/sso/user", vec![], &app).await;
    assert_eq!(r.status, 405);
    assert_eq!(snapshot(&s, &su).await, before, "nothing changed");
    // The sessions still work.
    assert_eq!(s.call(Method::GET, "/user", json!({"ust": bob_ust})).await.status, 200);
}

async fn restart_keeps_users_keys_and_sessions(store: Store) {
    let Some((dir, _admin, mut s, _hooks)) = fresh_on(store, "").await else { return };
    let su = admin_ust(&s).await;
    create(&s, &su, "bob", json!({})).await;
    let bob_ust = s.ust("bob", BOB_PW).await;
    let r = s.call(Method::PATCH, "/user/totp", json!({"ust": bob_ust})).await;
    let key = r.s("totp_key");
    assert_eq!(s.call(Method::PATCH, "/user", json!({"ust": bob_ust, "is_totp_enabled": true})).await.status, 200);
    let ring = std::fs::read(dir.path().join("sso-keys.toml")).unwrap();
    let status = s.stop();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    let s = Server::start(dir.path(), s.port).await;
    assert_eq!(std::fs::read(dir.path().join("sso-keys.toml")).unwrap(), ring, "key ring reused, not regenerated");
    let err = std::fs::read_to_string(dir.path().join("serve.err")).unwrap();
    assert!(!err.contains("NOTICE: created the key ring"), "no second creation notice");
    assert_eq!(s.call(Method::GET, "/user", json!({"ust": bob_ust})).await.status, 200, "session survived");
    assert_eq!(s.call(Method::GET, "/user", json!({"ust": su})).await.status, 200);
    let r = s.login("bob", BOB_PW, Some(&code(&key, 0))).await;
    assert_eq!(r.status, 200, "TOTP key survived (decrypts with the reused ring): {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_work_against_the_configured_store() {
    let (dir, _admin, s, _hooks) = fresh("").await;
    let d = dir.path();
    let out = cli(d, &["user", "create", "frank", "--random-password", "--email", "frank@example.com"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let pw = text.lines().find_map(|l| l.strip_prefix("password: ")).unwrap().to_owned();
    let frank_ust = s.ust("frank", &pw).await;
    let out = cli(d, &["--output", "json", "user", "reset-totp-key", "frank"], "");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["totp_uri"].as_str().unwrap().starts_with("otpauth://totp/sso:frank?secret="));
    assert_eq!(
        s.call(Method::GET, "/user", json!({"ust": frank_ust})).await.code(),
        "E007001",
        "CLI reset is an admin reset"
    );
    let out = cli(d, &["user", "reset-totp-key", "frank", "--key-stdin"], "KMCLCWN4YPMD2WO3\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    let frank_ust = s.ust("frank", &pw).await;
    let out = cli(d, &["--output", "json", "session", "list", "frank"], "");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&frank_ust));
    let out = cli(d, &["user", "lock", "frank"], "");
    assert!(out.status.success());
    assert_eq!(s.login("frank", &pw, None).await.code(), "E005002");
    assert!(cli(d, &["user", "unlock", "frank"], "").status.success());
    let out =
        cli(d, &["user", "change-password", "frank", "--password-stdin", "--must-change"], "brand new passphrase\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.login("frank", "brand new passphrase", None).await.code(), "E003007");
    let out = cli(d, &["--output", "json", "user", "list", "--name", "fRaN"], "");
    assert!(out.status.success());
    let out = cli(d, &["--output", "json", "session", "revoke", "--user", "admin"], "");
    assert!(out.status.success());
    let out = cli(d, &["user", "delete", "frank"], "");
    assert_eq!(out.status.code(), Some(2), "no --yes without a terminal");
    let out = cli(d, &["user", "delete", "frank", "--yes"], "");
    assert!(out.status.success());
    let out = cli(d, &["user", "delete", "frank", "--yes"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("E008001"));
    let out = cli(d, &["user", "create", "gina"], "");
    assert_eq!(out.status.code(), Some(2), "no password source");
    let out = cli(d, &["config", "check"], "");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("<redacted>"), "webhook secret redacted");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hook-secret"));
    let out = cli(d, &["migrate", "--check"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let out = cli(d, &["keys", "generate"], "");
    assert_eq!(out.status.code(), Some(3), "refuses to overwrite the key ring");
    let audit = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"actor\":\"cli:"), "CLI changes audited as cli:<user>@<host>");
    assert!(!audit.contains(&pw) && !audit.contains("KMCLCWN4YPMD2WO3") && !audit.contains("brand new passphrase"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_exactly_the_routes_served() {
    let (_dir, _admin, s, _hooks) = fresh("").await;
    let r = s.raw(Method::GET, "/openapi.json", vec![], &[]).await;
    assert_eq!(r.status, 200);
    let paths = r.body["paths"].as_object().unwrap();
    let table = sso_http::api::routes();
    assert_eq!(paths.len(), table.len() + 3, "table routes + health, metrics, openapi");
    for (path, item) in paths {
        for (verb, _) in item.as_object().unwrap() {
            let m = Method::from_bytes(verb.to_uppercase().as_bytes()).unwrap();
            let resp = s.raw(m.clone(), path, b"{}".to_vec(), &[("x-zato-sso-current-app", "CRM")]).await;
            assert!(
                resp.status != 404 && resp.status != 405,
                "{verb} {path} is documented but not served ({})",
                resp.status
            );
        }
    }
    // And every served route under the prefix is documented: verbs not in the document get 405.
    for def in &table {
        let path = format!("/zato/sso{}", def.path);
        let doc = &paths[&path];
        for verb in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let documented = doc.get(verb.to_lowercase()).is_some();
            let resp = s
                .raw(
                    Method::from_bytes(verb.as_bytes()).unwrap(),
                    &path,
                    b"{}".to_vec(),
                    &[("x-zato-sso-current-app", "CRM")],
                )
                .await;
            assert_eq!(resp.status == 405, !documented, "{verb} {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_warning_and_throttling_over_http() {
    let (_dir, _admin, s, _hooks) = fresh("[password]\nabout_to_expire_threshold = 800").await;
    let r = s.login("admin", PASSWORD, None).await;
    assert_eq!((r.status, r.body["status"].clone(), r.code()), (200, json!("warning"), "W003005".into()));
    assert!(r.body["ust"].is_string());
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = s.login("admin", "wrong password here", None).await;
        statuses.push(r.status);
        if r.status == 429 {
            assert_eq!(r.code(), "E005001");
            assert!(r.headers.contains_key("retry-after"));
        }
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

/// The REST end-to-end flows on the embedded default, on PostgreSQL, and mixed (PostgreSQL users,
/// Redis sessions and counters).
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Store::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Store::Postgres).await
                }
            )*
        }
        mod mixed {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Store::Mixed).await
                }
            )*
        }
    };
}

on_every_store!(
    users_totp_sessions_and_passwords_over_http,
    attributes_over_http,
    bad_input_gets_the_spec_error_and_changes_nothing,
    restart_keeps_users_keys_and_sessions,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_sessions_epochs_and_throttling() {
    let Some((dir, _admin, a, _hooks)) = fresh_on(Store::Mixed, "").await else { return };
    let (_d2, b) = common::second_node(dir.path()).await;
    let su = admin_ust(&a).await;
    create(&a, &su, "bob", json!({})).await;
    // Log in on A, verify and renew on B.
    let bob = a.ust("bob", BOB_PW).await;
    let r = b.call(Method::POST, "/user/session", json!({"current_ust": bob, "target_ust": bob})).await;
    assert_eq!(r.body["is_valid"], true, "{}", r.body);
    assert_eq!(b.call(Method::PATCH, "/user/session", json!({"ust": bob})).await.status, 200);
    // logout-all on B invalidates the session on A.
    let r = b.call(Method::POST, "/user/logout/all", json!({"ust": bob})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(a.call(Method::GET, "/user", json!({"ust": bob})).await.code(), "E007001");
    // Failed logins counted on A throttle the user on B.
    let mut throttled = false;
    for _ in 0..5 {
        let r = a.login("bob", "not the password at all", None).await;
        throttled |= r.status == 429;
    }
    let r = b.login("bob", BOB_PW, None).await;
    assert!(throttled || r.status == 429, "the user key is shared: {}", r.body);
    assert_eq!(r.status, 429, "blocked on B by failures on A: {}", r.body);
}
