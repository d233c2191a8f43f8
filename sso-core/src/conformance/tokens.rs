//! `tokens`: password-reset tokens (`UserTx` PRT writes, `PasswordResetStore` reads).

use super::*;

async fn user(stores: &Stores, name: &str) -> UserId {
    let u = bare_user_record(name);
    insert_user(stores, &u).await;
    u.user_id
}

async fn insert_prt(stores: &Stores, prt: &PrtRecord) {
    let mut tx = begin(stores).await;
    tx.insert_prt(prt).await.unwrap_or_else(|e| panic!("insert_prt: {e}"));
    tx.commit().await.expect("commit");
}

async fn get_prt(stores: &Stores, hash: &[u8; 32]) -> PrtRecord {
    stores.resets.get_prt(hash).await.expect("get_prt").expect("the PRT exists")
}

async fn mark_accessed(
    stores: &Stores,
    hash: &[u8; 32],
    key: &[u8; 32],
    exp: Timestamp,
    now: Timestamp,
    ctx: &str,
) -> bool {
    let mut tx = begin(stores).await;
    let r = tx.mark_prt_accessed(hash, key, exp, now, ctx).await.expect("mark_prt_accessed");
    tx.commit().await.expect("commit");
    r
}

async fn mark_used(stores: &Stores, hash: &[u8; 32], now: Timestamp, ctx: &str) -> bool {
    let mut tx = begin(stores).await;
    let r = tx.mark_prt_used(hash, now, ctx).await.expect("mark_prt_used");
    tx.commit().await.expect("commit");
    r
}

/// A PRT reads back unchanged (every field, fresh and fully used); unknown hashes read as none.
pub async fn prt_insert_get(stores: Stores) {
    let u = user(&stores, "prt").await;
    let fresh = prt_record(&u, at(3600));
    let used = PrtRecord {
        has_been_accessed: true,
        access_time: Some(at_us(1_000_001)),
        access_ctx: Some(r#"{"remote_addr":"10.0.0.9","user_agent":"ü"}"#.to_owned()),
        reset_key_hash: Some(random_hash()),
        reset_key_exp_time: Some(at_us(1_800_000_002)),
        is_password_reset: true,
        password_reset_time: Some(at_us(2_000_003)),
        password_reset_ctx: Some(r#"{"remote_addr":"10.0.0.10"}"#.to_owned()),
        ..prt_record(&u, at(7200))
    };
    insert_prt(&stores, &fresh).await;
    insert_prt(&stores, &used).await;
    assert_prt_eq(&get_prt(&stores, &fresh.token_hash).await, &fresh, "fresh PRT");
    assert_prt_eq(&get_prt(&stores, &used.token_hash).await, &used, "used PRT");
    assert!(stores.resets.get_prt(&random_hash()).await.unwrap().is_none(), "unknown hash reads as None");
}

/// A second PRT with a taken token hash gives `Conflict { what: "token_hash" }`.
pub async fn prt_token_hash_unique(stores: Stores) {
    let u = user(&stores, "prt-u1").await;
    let v = user(&stores, "prt-u2").await;
    let a = prt_record(&u, at(3600));
    insert_prt(&stores, &a).await;
    let b = PrtRecord { token_hash: a.token_hash, user_id: v, ..prt_record(&u, at(60)) };
    let mut tx = begin(&stores).await;
    assert_conflict(tx.insert_prt(&b).await, "token_hash", "insert of a taken token hash");
    drop(tx);
    assert_prt_eq(&get_prt(&stores, &a.token_hash).await, &a, "the first PRT is kept");
}

/// 20 concurrent `mark_prt_accessed` calls on one token: exactly one gets `true`, and the record
/// holds that caller's reset-key hash, expiry, time and context.
pub async fn mark_accessed_once_concurrent(stores: Stores) {
    let u = user(&stores, "racer").await;
    let prt = prt_record(&u, at(3600));
    insert_prt(&stores, &prt).await;
    let s = shared(&stores);
    let mut tasks = Vec::new();
    for i in 0..20i64 {
        let s = s.clone();
        let hash = prt.token_hash;
        tasks.push(tokio::spawn(async move {
            let key = random_hash();
            let ctx = format!(r#"{{"remote_addr":"10.0.0.{i}"}}"#);
            let now = at_us(1_000_000 + i);
            let exp = at(1800 + i);
            let mut tx = s.users.begin().await.expect("begin");
            let won = tx.mark_prt_accessed(&hash, &key, exp, now, &ctx).await.expect("mark_prt_accessed");
            tx.commit().await.expect("commit");
            (won, key, exp, now, ctx)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let r = t.await.expect("task panicked");
        if r.0 {
            winners.push(r);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of 20 concurrent mark_prt_accessed calls must win");
    let (_, key, exp, now, ctx) = winners.pop().unwrap();
    let got = get_prt(&stores, &prt.token_hash).await;
    let want = PrtRecord {
        has_been_accessed: true,
        access_time: Some(now),
        access_ctx: Some(ctx),
        reset_key_hash: Some(key),
        reset_key_exp_time: Some(exp),
        ..prt.clone()
    };
    assert_prt_eq(&got, &want, "the winner's access is recorded");
}

/// `mark_prt_used` succeeds once, only after `mark_prt_accessed`; a used token cannot be accessed again.
pub async fn mark_used_once(stores: Stores) {
    let u = user(&stores, "user").await;
    let prt = prt_record(&u, at(3600));
    insert_prt(&stores, &prt).await;
    assert!(!mark_used(&stores, &prt.token_hash, at(1), r#"{"n":0}"#).await, "unaccessed token cannot be used");
    assert_prt_eq(&get_prt(&stores, &prt.token_hash).await, &prt, "a refused mark_prt_used writes nothing");
    let key = random_hash();
    assert!(mark_accessed(&stores, &prt.token_hash, &key, at(600), at(2), r#"{"n":1}"#).await);
    assert!(mark_used(&stores, &prt.token_hash, at_us(3_000_003), r#"{"n":2}"#).await, "first use");
    assert!(!mark_used(&stores, &prt.token_hash, at(4), r#"{"n":3}"#).await, "second use refused");
    assert!(
        !mark_accessed(&stores, &prt.token_hash, &random_hash(), at(600), at(5), r#"{"n":4}"#).await,
        "no second access"
    );
    let want = PrtRecord {
        has_been_accessed: true,
        access_time: Some(at(2)),
        access_ctx: Some(r#"{"n":1}"#.to_owned()),
        reset_key_hash: Some(key),
        reset_key_exp_time: Some(at(600)),
        is_password_reset: true,
        password_reset_time: Some(at_us(3_000_003)),
        password_reset_ctx: Some(r#"{"n":2}"#.to_owned()),
        ..prt.clone()
    };
    assert_prt_eq(&get_prt(&stores, &prt.token_hash).await, &want, "after use");
    assert!(!mark_used(&stores, &random_hash(), at(6), "{}").await, "unknown token");
    assert!(!mark_accessed(&stores, &random_hash(), &key, at(600), at(6), "{}").await, "unknown token");
}

/// `mark_prt_accessed` refuses a token from its expiration time on (boundary included).
pub async fn expired_token_refused(stores: Stores) {
    let u = user(&stores, "late").await;
    let prt = prt_record(&u, at(100));
    insert_prt(&stores, &prt).await;
    assert!(
        !mark_accessed(&stores, &prt.token_hash, &random_hash(), at(200), at(100), "{}").await,
        "expired at its expiration time"
    );
    assert!(!mark_accessed(&stores, &prt.token_hash, &random_hash(), at(200), at(150), "{}").await, "expired after it");
    assert_prt_eq(&get_prt(&stores, &prt.token_hash).await, &prt, "a refused access writes nothing");
    assert!(
        mark_accessed(&stores, &prt.token_hash, &random_hash(), at(200), at_us(99_999_999), "{}").await,
        "valid just before"
    );
}

/// A compare-and-set in a dropped transaction leaves the token as it was.
pub async fn mark_rolled_back(stores: Stores) {
    let u = user(&stores, "rollback").await;
    let prt = prt_record(&u, at(3600));
    insert_prt(&stores, &prt).await;
    let mut tx = begin(&stores).await;
    assert!(tx.mark_prt_accessed(&prt.token_hash, &random_hash(), at(60), at(1), "{}").await.unwrap());
    drop(tx);
    assert_prt_eq(&get_prt(&stores, &prt.token_hash).await, &prt, "rolled-back access");
    assert!(
        mark_accessed(&stores, &prt.token_hash, &random_hash(), at(60), at(2), "{}").await,
        "can still be accessed"
    );
}

/// Deleting a user deletes its PRTs and no one else's.
pub async fn prts_removed_with_user(stores: Stores) {
    let u = user(&stores, "gone").await;
    let v = user(&stores, "stays").await;
    let p1 = prt_record(&u, at(3600));
    let p2 = prt_record(&u, at(7200));
    let p3 = prt_record(&v, at(3600));
    for p in [&p1, &p2, &p3] {
        insert_prt(&stores, p).await;
    }
    let mut tx = begin(&stores).await;
    assert!(tx.delete_user(&u).await.unwrap());
    tx.commit().await.unwrap();
    assert!(stores.resets.get_prt(&p1.token_hash).await.unwrap().is_none());
    assert!(stores.resets.get_prt(&p2.token_hash).await.unwrap().is_none());
    assert!(stores.resets.get_prt(&p3.token_hash).await.unwrap().is_some(), "other user's PRT kept");
}

/// `delete_expired_prts` deletes at most `limit` PRTs whose expiration time has passed (boundary
/// included), accessed or not, and no live one.
pub async fn delete_expired_prts(stores: Stores) {
    let u = user(&stores, "cleanup").await;
    let e1 = prt_record(&u, at(10));
    let e2 = PrtRecord { has_been_accessed: true, access_time: Some(at(5)), ..prt_record(&u, at(20)) };
    let e3 = prt_record(&u, at(25));
    let l1 = prt_record(&u, at(30));
    let l2 = prt_record(&u, at(1000));
    for p in [&e1, &e2, &e3, &l1, &l2] {
        insert_prt(&stores, p).await;
    }
    let now = at(25);
    assert_eq!(stores.resets.delete_expired_prts(now, 2).await.unwrap(), 2, "at most `limit`");
    assert_eq!(stores.resets.delete_expired_prts(now, 100).await.unwrap(), 1, "the rest");
    assert_eq!(stores.resets.delete_expired_prts(now, 100).await.unwrap(), 0, "nothing left");
    for p in [&e1, &e2, &e3] {
        assert!(stores.resets.get_prt(&p.token_hash).await.unwrap().is_none(), "expired PRT deleted");
    }
    for p in [&l1, &l2] {
        assert!(stores.resets.get_prt(&p.token_hash).await.unwrap().is_some(), "live PRT kept");
    }
}
