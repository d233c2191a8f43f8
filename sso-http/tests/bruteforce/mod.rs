//! Brute force over HTTP (issue 7 "Must show"): 1 000 wrong TOTP codes against one user, each from
//! a different client address, in a bounded loop. At most `throttle.totp.lockout_after` codes are
//! evaluated, the rest are refused unevaluated with 429, and every answer says nothing more than
//! `E005001`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{PASSWORD, code, fresh};

const KEY: &str = "KMCLCWN4YPMD2WO3";
const BOB_PW: &str = "a fine passphrase for tests";
const ATTEMPTS: usize = 1000;
/// `throttle.totp.lockout_after` (the default, written out so the test states it).
const LOCKOUT_AFTER: usize = 5;

/// A six-digit code that is none of the codes the server accepts around now.
fn wrong_code() -> String {
    let valid: Vec<String> = (-2..=2).map(|o| code(KEY, o)).collect();
    (0..1_000_000u32).map(|n| format!("{:06}", (n * 7919 + 123_457) % 1_000_000)).find(|c| !valid.contains(c)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_wrong_totp_codes_from_many_addresses_evaluate_at_most_the_limit() {
    let cfg =
        format!("[http]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n[throttle.totp]\nlockout_after = {LOCKOUT_AFTER}\n");
    let (_dir, _admin, s, _hooks) = fresh(&cfg).await;
    let su = s.ust("admin", PASSWORD).await;
    let r = s
        .call(Method::POST, "/user", json!({"ust": su, "username": "bob", "password": BOB_PW, "auto_approve": true}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let bob = r.s("user_id");
    let r = s.call(Method::PATCH, "/user/totp", json!({"ust": su, "user_id": bob, "totp_key": KEY})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call(Method::PATCH, "/user", json!({"ust": su, "user_id": bob, "is_totp_enabled": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let wrong = wrong_code();
    let mut evaluated = 0;
    let mut refused = 0;
    for i in 0..ATTEMPTS {
        let addr = format!("10.{}.{}.{}", i / 65_536, (i / 256) % 256, i % 256 + 1);
        let body = json!({"username": "bob", "password": BOB_PW, "totp_code": wrong, "current_app": "CRM"});
        let r = s
            .raw(
                Method::POST,
                "/zato/sso/user/login",
                serde_json::to_vec(&body).unwrap(),
                &[("x-forwarded-for", addr.as_str()), ("content-type", "application/json")],
            )
            .await;
        // Nothing but the generic refusal, whether the code was evaluated or not.
        assert_eq!(r.body["sub_status"], json!(["E005001"]), "attempt {i}: {}", r.body);
        let keys: Vec<&str> = r.body.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(keys.iter().all(|k| ["cid", "status", "sub_status"].contains(k)), "attempt {i} told more: {keys:?}");
        match r.status {
            429 => {
                refused += 1;
                let after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(after >= 1, "Retry-After in whole seconds");
            }
            _ => evaluated += 1,
        }
    }
    assert!(evaluated >= 1, "the first codes are evaluated");
    assert!(evaluated <= LOCKOUT_AFTER, "{evaluated} codes evaluated, limit {LOCKOUT_AFTER}");
    assert_eq!(evaluated + refused, ATTEMPTS);

    // The trail agrees: as many `totp_invalid` as codes evaluated, refusals audited once per block.
    let auth = format!("Bearer {su}");
    let r = s
        .raw(
            Method::GET,
            "/zato/sso/audit?op=user.login&limit=1000",
            Vec::new(),
            &[("authorization", auth.as_str()), ("x-zato-sso-current-app", "CRM")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let records: Vec<Value> = r.body["result"].as_array().unwrap().clone();
    let reason = |r: &Value| r["reason"].as_str().unwrap_or("").to_owned();
    let invalid = records.iter().filter(|r| reason(r) == "totp_invalid").count();
    let throttled = records.iter().filter(|r| reason(r) == "throttled").count();
    eprintln!(
        "{ATTEMPTS} wrong codes: {evaluated} evaluated, {refused} refused unevaluated; audit: {invalid} totp_invalid, {throttled} throttled"
    );
    assert_eq!(invalid, evaluated, "every evaluated code is audited as totp_invalid");
    assert!(invalid <= LOCKOUT_AFTER);
    // One record per block (of the `totp` key, and of the `user` key, which a login with the right
    // password and a wrong code also counts), not one per refusal.
    assert!((1..20).contains(&throttled), "refusals audited once per block, not 1 000 times: {throttled}");

    // While blocked even the right code is refused unevaluated.
    let r = s.login("bob", BOB_PW, Some(&code(KEY, 0))).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "E005001");
}
