//! `counters`: throttle counters and TOTP replay markers (`CounterStore`).

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

/// `record_failure` counts 1, 2, … and returns the failure time it replaced; `get` reads both.
pub async fn record_failure_counts(stores: Stores) {
    let c = &stores.counters;
    let key = "user:0f1e2d3c";
    assert!(c.get(key, at(0)).await.unwrap().is_none(), "an unknown key reads as None");
    assert_eq!(c.record_failure(key, at(0), HOUR).await.unwrap(), (1, None), "first failure");
    let t2 = at_us(1_500_001);
    assert_eq!(
        c.record_failure(key, t2, HOUR).await.unwrap(),
        (2, Some(at(0))),
        "second failure returns the first time"
    );
    assert_eq!(c.get(key, at(3)).await.unwrap(), Some((2, t2)), "get returns the count and last failure time");
    assert_eq!(c.record_failure(key, at(4), HOUR).await.unwrap(), (3, Some(t2)));
}

/// 100 concurrent `record_failure` calls on one key: the count grows by exactly 100 and every
/// call sees a distinct count.
pub async fn record_failure_concurrent(stores: Stores) {
    let s = shared(&stores);
    let mut tasks = Vec::new();
    for i in 0..100i64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.counters.record_failure("ip:10.0.0.1", at_us(i), HOUR).await.expect("record_failure").0
        }));
    }
    let mut seen = BTreeSet::new();
    for t in tasks {
        let n = t.await.expect("task panicked");
        assert!(seen.insert(n), "two concurrent record_failure calls returned the same count {n}");
    }
    assert_eq!(seen, (1..=100).collect(), "counts 1..=100, each once");
    let (n, _) = stores.counters.get("ip:10.0.0.1", at(1)).await.unwrap().expect("the key exists");
    assert_eq!(n, 100, "100 concurrent increments must count exactly 100");
}

/// A key whose TTL has run out restarts at 1 (with no previous failure); each failure moves the
/// expiry to `now + ttl`.
pub async fn ttl_expiry_resets_count(stores: Stores) {
    let c = &stores.counters;
    let ttl = Duration::from_secs(60);
    let key = "totp:zusr0000";
    assert_eq!(c.record_failure(key, at(0), ttl).await.unwrap(), (1, None));
    assert_eq!(c.record_failure(key, at(50), ttl).await.unwrap(), (2, Some(at(0))), "within the TTL");
    assert_eq!(
        c.record_failure(key, at(100), ttl).await.unwrap(),
        (3, Some(at(50))),
        "the TTL runs from the last failure"
    );
    assert_eq!(c.record_failure(key, at(200), ttl).await.unwrap(), (1, None), "an expired key restarts at 1");
    assert_eq!(c.get(key, at(201)).await.unwrap(), Some((1, at(200))));
}

/// `get` of an expired key is None (boundary included).
pub async fn get_expired_is_none(stores: Stores) {
    let c = &stores.counters;
    c.record_failure("user:k", at(0), Duration::from_secs(10)).await.unwrap();
    assert_eq!(c.get("user:k", at_us(9_999_999)).await.unwrap(), Some((1, at(0))), "live just before the TTL ends");
    assert!(c.get("user:k", at(10)).await.unwrap().is_none(), "expired at now + ttl");
    assert!(c.get("user:k", at(1000)).await.unwrap().is_none(), "expired long after");
}

/// `reset` deletes the key (the next failure counts 1); resetting a missing key is fine.
pub async fn reset(stores: Stores) {
    let c = &stores.counters;
    for t in 0..3 {
        c.record_failure("user:r", at(t), HOUR).await.unwrap();
    }
    c.reset("user:r").await.unwrap();
    assert!(c.get("user:r", at(4)).await.unwrap().is_none(), "reset deletes the key");
    assert_eq!(c.record_failure("user:r", at(5), HOUR).await.unwrap(), (1, None), "counting restarts");
    c.reset("user:never-seen").await.expect("reset of a missing key");
    assert!(c.advance_step("totp-step:zusr1:1", 7, at(0), HOUR).await.unwrap());
    c.reset("totp-step:zusr1:1").await.unwrap();
    assert!(c.advance_step("totp-step:zusr1:1", 7, at(1), HOUR).await.unwrap(), "reset clears a marker too");
}

/// Keys are independent.
pub async fn keys_independent(stores: Stores) {
    let c = &stores.counters;
    for t in 0..3 {
        c.record_failure("user:a", at(t), HOUR).await.unwrap();
    }
    c.record_failure("user:b", at(0), HOUR).await.unwrap();
    c.record_failure("ip:2001:db8::/64", at(0), HOUR).await.unwrap();
    assert_eq!(c.get("user:a", at(5)).await.unwrap().map(|x| x.0), Some(3));
    assert_eq!(c.get("user:b", at(5)).await.unwrap().map(|x| x.0), Some(1));
    c.reset("user:a").await.unwrap();
    assert_eq!(c.get("user:b", at(5)).await.unwrap().map(|x| x.0), Some(1), "reset of one key leaves the others");
    assert_eq!(c.get("ip:2001:db8::/64", at(5)).await.unwrap().map(|x| x.0), Some(1));
}

/// `advance_step` is monotonic: a higher step is accepted, an equal or lower one refused.
pub async fn advance_step_monotonic(stores: Stores) {
    let c = &stores.counters;
    let key = "totp-step:zusrABC:3";
    assert!(c.advance_step(key, 5, at(0), HOUR).await.unwrap(), "first step accepted");
    assert!(!c.advance_step(key, 5, at(1), HOUR).await.unwrap(), "equal step refused");
    assert!(!c.advance_step(key, 4, at(2), HOUR).await.unwrap(), "lower step refused");
    assert!(c.advance_step(key, 6, at(3), HOUR).await.unwrap(), "higher step accepted");
    assert!(!c.advance_step(key, 5, at(4), HOUR).await.unwrap(), "a lower step stays refused");
    assert!(c.advance_step("totp-step:zusrABC:4", 1, at(5), HOUR).await.unwrap(), "another key is independent");
    assert!(c.advance_step(key, 59_000_000_000, at(6), HOUR).await.unwrap(), "large steps");
}

/// 32 concurrent `advance_step` calls with the same step: exactly one is accepted.
pub async fn advance_step_concurrent(stores: Stores) {
    let s = shared(&stores);
    let mut tasks = Vec::new();
    for i in 0..32i64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.counters.advance_step("totp-step:zusrX:1", 1_234_567, at_us(i), HOUR).await.expect("advance_step")
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        if t.await.expect("task panicked") {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1, "exactly one of 32 concurrent advance_step calls with one step must be accepted");
    assert!(stores.counters.advance_step("totp-step:zusrX:1", 1_234_568, at(1), HOUR).await.unwrap());
}

/// The marker lives for its TTL: inside it the step stays refused; after it (boundary included)
/// the same or even a lower step is accepted again.
pub async fn advance_step_after_ttl(stores: Stores) {
    let c = &stores.counters;
    let ttl = Duration::from_secs(90);
    let key = "totp-step:zusrT:1";
    assert!(c.advance_step(key, 10, at(0), ttl).await.unwrap());
    assert!(!c.advance_step(key, 10, at(89), ttl).await.unwrap(), "refused within the TTL");
    assert!(c.advance_step(key, 10, at(90), ttl).await.unwrap(), "accepted again once the marker expired");
    assert!(!c.advance_step(key, 10, at(100), ttl).await.unwrap(), "the accepted step starts a new TTL");
    assert!(c.advance_step(key, 3, at(1000), ttl).await.unwrap(), "a lower step after expiry is accepted");
}

/// `delete_expired` (which may do nothing on backends with native TTLs) never removes a live key.
pub async fn delete_expired_keeps_live(stores: Stores) {
    let c = &stores.counters;
    c.record_failure("user:short", at(0), Duration::from_secs(10)).await.unwrap();
    c.record_failure("user:long", at(0), Duration::from_secs(1000)).await.unwrap();
    assert!(c.advance_step("totp-step:zusrL:1", 9, at(0), Duration::from_secs(1000)).await.unwrap());
    let n = c.delete_expired(at(20)).await.unwrap();
    assert!(n <= 1, "delete_expired removed {n} keys, only one had expired");
    assert!(c.get("user:short", at(20)).await.unwrap().is_none());
    assert_eq!(c.get("user:long", at(20)).await.unwrap(), Some((1, at(0))), "a live counter survives");
    assert!(
        !c.advance_step("totp-step:zusrL:1", 9, at(20), Duration::from_secs(1000)).await.unwrap(),
        "a live marker survives"
    );
}
