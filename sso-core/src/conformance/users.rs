//! `users`: `UserStore` reads and the `UserTx` user writes (spec/storage.md §1 `UserStore`).

use std::collections::HashSet;

use super::*;
use crate::model::{AttrScope, UserPatch};
use crate::store::ConfirmOutcome;

/// Every field written is read back unchanged through `get_by_id`, `get_by_username` and
/// `get_by_confirm_token_hash` (Unicode names, microsecond times, every NULL-able field set).
pub async fn insert_get_round_trip(stores: Stores) {
    let u = user_record("zoë.ñandú-東京");
    insert_user(&stores, &u).await;
    let by_id = stores.users.get_by_id(&u.user_id).await.unwrap().expect("get_by_id finds the user");
    assert_user_eq(&by_id, &u, "get_by_id");
    let by_name = stores.users.get_by_username(&u.username).await.unwrap().expect("get_by_username finds the user");
    assert_user_eq(&by_name, &u, "get_by_username");
    let hash: [u8; 32] = u.confirm_token_hash.clone().unwrap().try_into().unwrap();
    let by_hash =
        stores.users.get_by_confirm_token_hash(&hash).await.unwrap().expect("get_by_confirm_token_hash finds the user");
    assert_user_eq(&by_hash, &u, "get_by_confirm_token_hash");
}

/// A user whose NULL-able fields are all NULL reads back with them NULL; unknown keys read as none.
pub async fn insert_get_round_trip_nulls(stores: Stores) {
    let u = bare_user_record("plain");
    insert_user(&stores, &u).await;
    let got = get_user(&stores, &u.user_id).await;
    assert_user_eq(&got, &u, "get_by_id (NULLs)");
    assert!(stores.users.get_by_id(&new_user_id()).await.unwrap().is_none(), "unknown id must read as None");
    assert!(stores.users.get_by_username("nobody").await.unwrap().is_none(), "unknown username must read as None");
    assert!(
        stores.users.get_by_confirm_token_hash(&random_hash()).await.unwrap().is_none(),
        "unknown confirm-token hash must read as None"
    );
}

/// A second user with a taken username is refused with `Conflict { what: "username" }` and not written.
pub async fn username_unique(stores: Stores) {
    let a = bare_user_record("alice");
    insert_user(&stores, &a).await;
    let b = bare_user_record("alice");
    assert_conflict(try_insert_user(&stores, &b).await, "username", "second insert of username alice");
    assert!(stores.users.get_by_id(&b.user_id).await.unwrap().is_none(), "the refused user must not be written");
    let still = stores.users.get_by_username("alice").await.unwrap().expect("alice");
    assert_eq!(still.user_id, a.user_id, "the first user keeps the username");
}

/// 50 concurrent inserts of one username: exactly one succeeds, every other gets `Conflict`.
pub async fn username_unique_concurrent(stores: Stores) {
    let s = shared(&stores);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let u = bare_user_record("racer");
            let r = try_insert_user(&s, &u).await;
            (u.user_id, r)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (id, r) = t.await.expect("insert task panicked");
        match r {
            Ok(()) => winners.push(id),
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("concurrent insert failed with {e:?} instead of Conflict"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of 50 concurrent inserts of one username must win");
    let stored = stores.users.get_by_username("racer").await.unwrap().expect("the winner is stored");
    assert_eq!(stored.user_id, winners[0], "the stored user is the winner");
    let (total, _) = stores.users.search(&crate::model::UserQuery::default(), 0, 100).await.unwrap();
    assert_eq!(total, 1, "only the winner is stored");
}

/// Usernames are compared exactly: `Alice`, `alice` and `alicé` are three users.
pub async fn username_case_sensitive(stores: Stores) {
    let a = bare_user_record("Alice");
    let b = bare_user_record("alice");
    let c = bare_user_record("alicé");
    for u in [&a, &b, &c] {
        insert_user(&stores, u).await;
    }
    for u in [&a, &b, &c] {
        let got = stores.users.get_by_username(&u.username).await.unwrap().expect("exact username lookup");
        assert_eq!(got.user_id, u.user_id, "lookup of {:?} found another user", u.username);
    }
    assert!(stores.users.get_by_username("ALICE").await.unwrap().is_none(), "lookup must be case-sensitive");
    assert!(stores.users.get_by_username("alice ").await.unwrap().is_none(), "lookup must be exact");
}

/// A second user with a taken `user_id` is refused with `Conflict { what: "user_id" }`.
pub async fn user_id_unique(stores: Stores) {
    let a = bare_user_record("first");
    insert_user(&stores, &a).await;
    let mut b = bare_user_record("second");
    b.user_id = a.user_id.clone();
    assert_conflict(try_insert_user(&stores, &b).await, "user_id", "insert with a taken user_id");
    assert!(stores.users.get_by_username("second").await.unwrap().is_none(), "the refused user must not be written");
    assert_eq!(get_user(&stores, &a.user_id).await.username, "first");
}

/// A second user with a taken confirmation-token hash is refused with
/// `Conflict { what: "confirm_token_hash" }`; NULL hashes never conflict.
pub async fn confirm_token_hash_unique(stores: Stores) {
    let a = user_record("one");
    insert_user(&stores, &a).await;
    let mut b = user_record("two");
    b.confirm_token_hash = a.confirm_token_hash.clone();
    assert_conflict(try_insert_user(&stores, &b).await, "confirm_token_hash", "insert with a taken confirm hash");
    assert!(stores.users.get_by_username("two").await.unwrap().is_none(), "the refused user must not be written");
    insert_user(&stores, &bare_user_record("three")).await;
    insert_user(&stores, &bare_user_record("four")).await;
}

/// `update_user` changes exactly the fields present in the patch (`Some(None)` sets NULL).
pub async fn update_present_fields_only(stores: Stores) {
    let u = user_record("patchy");
    insert_user(&stores, &u).await;
    let patch = UserPatch {
        password_hash: Some("$argon2id$new".to_owned()),
        password_last_set: Some(at_us(777_777)),
        password_expiry: Some(None),
        email_enc: Some(None),
        email_idx: Some(None),
        display_name: Some(Some("Ærø Ünïcödé".to_owned())),
        display_name_upper: Some(Some("ÆRØ ÜNÏCÖDÉ".to_owned())),
        middle_name: Some(None),
        middle_name_upper: Some(None),
        is_locked: Some(false),
        locked_time: Some(Some(at_us(888_888))),
        approval_status: Some(ApprovalStatus::Approved),
        sign_up_status: Some(SignUpStatus::Final),
        is_totp_enabled: Some(false),
        totp_label_enc: Some("gAAAAA.new-label".to_owned()),
        ..Default::default()
    };
    let mut tx = begin(&stores).await;
    tx.update_user(&u.user_id, &patch).await.expect("update_user");
    tx.commit().await.expect("commit");
    let mut expected = u.clone();
    patch.apply_to(&mut expected);
    let got = get_user(&stores, &u.user_id).await;
    assert_user_eq(&got, &expected, "after update_user");
    assert_eq!(got.first_name, u.first_name, "fields absent from the patch are kept");
    assert_eq!(got.totp_key_enc, u.totp_key_enc, "fields absent from the patch are kept");
    // An empty patch changes nothing.
    let mut tx = begin(&stores).await;
    tx.update_user(&u.user_id, &UserPatch::default()).await.expect("empty update_user");
    tx.commit().await.expect("commit");
    assert_user_eq(&get_user(&stores, &u.user_id).await, &expected, "after an empty patch");
}

/// A username change moves the user to the new name (and frees the old one); setting the
/// user's own current name is not a conflict.
pub async fn update_username(stores: Stores) {
    let u = bare_user_record("old-name");
    insert_user(&stores, &u).await;
    let mut tx = begin(&stores).await;
    let same = UserPatch { username: Some("old-name".to_owned()), ..Default::default() };
    tx.update_user(&u.user_id, &same).await.expect("setting one's own username is not a conflict");
    let patch = UserPatch { username: Some("nöw-name".to_owned()), ..Default::default() };
    tx.update_user(&u.user_id, &patch).await.expect("rename");
    tx.commit().await.expect("commit");
    assert!(stores.users.get_by_username("old-name").await.unwrap().is_none(), "the old name must be free");
    let got = stores.users.get_by_username("nöw-name").await.unwrap().expect("found by the new name");
    assert_eq!(got.user_id, u.user_id);
    let again = bare_user_record("old-name");
    insert_user(&stores, &again).await;
}

/// Renaming a user to a taken username fails with `Conflict { what: "username" }` and changes nothing.
pub async fn update_username_conflict(stores: Stores) {
    let a = bare_user_record("taken");
    let b = bare_user_record("other");
    insert_user(&stores, &a).await;
    insert_user(&stores, &b).await;
    let mut tx = begin(&stores).await;
    let patch = UserPatch {
        username: Some("taken".to_owned()),
        display_name: Some(Some("must not be written".to_owned())),
        ..Default::default()
    };
    assert_conflict(tx.update_user(&b.user_id, &patch).await, "username", "rename to a taken username");
    drop(tx);
    let got = get_user(&stores, &b.user_id).await;
    assert_eq!(got.username, "other", "the refused rename must not be written");
    assert_eq!(got.display_name, None, "a refused update writes no field");
    assert_eq!(get_user(&stores, &a.user_id).await.username, "taken");
}

/// Updates of a missing user: `update_user`, `update_totp` and `bump_epoch` give `NotFound`.
pub async fn update_missing_user(stores: Stores) {
    let ghost = new_user_id();
    let mut tx = begin(&stores).await;
    let patch = UserPatch { display_name: Some(Some("x".to_owned())), ..Default::default() };
    assert_not_found(tx.update_user(&ghost, &patch).await, "update_user of a missing user");
    assert_not_found(tx.update_totp(&ghost, "k", "l", true).await, "update_totp of a missing user");
    assert_not_found(tx.bump_epoch(&ghost).await, "bump_epoch of a missing user");
    drop(tx);
    assert!(stores.users.get_by_id(&ghost).await.unwrap().is_none(), "no user appears");
}

/// `update_totp` sets key and label, increments `totp_key_gen` and, only when asked,
/// `session_epoch`, returning the new pair.
pub async fn update_totp_bumps_generation(stores: Stores) {
    let u = bare_user_record("totp");
    insert_user(&stores, &u).await;
    let mut tx = begin(&stores).await;
    let r = tx.update_totp(&u.user_id, "key-1", "label-1", false).await.expect("update_totp");
    assert_eq!(r, (u.totp_key_gen + 1, u.session_epoch), "update_totp without bump returns (gen + 1, epoch)");
    let r = tx.update_totp(&u.user_id, "key-2", "label-2", true).await.expect("update_totp with bump");
    assert_eq!(r, (u.totp_key_gen + 2, u.session_epoch + 1), "update_totp with bump returns (gen + 1, epoch + 1)");
    tx.commit().await.expect("commit");
    let got = get_user(&stores, &u.user_id).await;
    assert_eq!(got.totp_key_enc, "key-2");
    assert_eq!(got.totp_label_enc, "label-2");
    assert_eq!(got.totp_key_gen, u.totp_key_gen + 2);
    assert_eq!(got.session_epoch, u.session_epoch + 1);
    let mut rest = got.clone();
    rest.totp_key_enc = u.totp_key_enc.clone();
    rest.totp_label_enc = u.totp_label_enc.clone();
    rest.totp_key_gen = u.totp_key_gen;
    rest.session_epoch = u.session_epoch;
    assert_user_eq(&rest, &u, "update_totp touches only the TOTP columns and the epoch");
}

/// 200 concurrent `update_totp` calls: the final key and label come from the same call,
/// `totp_key_gen` grew by exactly 200 and `session_epoch` by the number of bumping calls.
pub async fn update_totp_concurrent_never_tears(stores: Stores) {
    let u = bare_user_record("contended");
    insert_user(&stores, &u).await;
    let s = shared(&stores);
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let s = s.clone();
        let id = u.user_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = s.users.begin().await.expect("begin");
            let r =
                tx.update_totp(&id, &format!("key-{i}"), &format!("label-{i}"), i % 2 == 0).await.expect("update_totp");
            tx.commit().await.expect("commit");
            r
        }));
    }
    let mut gens = HashSet::new();
    for t in tasks {
        let (g, _) = t.await.expect("update_totp task panicked");
        assert!(gens.insert(g), "two concurrent update_totp calls returned the same generation {g}");
    }
    let got = get_user(&stores, &u.user_id).await;
    assert_eq!(got.totp_key_gen, u.totp_key_gen + 200, "totp_key_gen must grow by exactly 200");
    assert_eq!(got.session_epoch, u.session_epoch + 100, "session_epoch must grow by exactly the 100 bumping calls");
    let k = got.totp_key_enc.strip_prefix("key-").expect("key written by a call");
    let l = got.totp_label_enc.strip_prefix("label-").expect("label written by a call");
    assert_eq!(k, l, "torn write: the final key and label come from different calls");
    let expected_gens: HashSet<u64> = (u.totp_key_gen + 1..=u.totp_key_gen + 200).collect();
    assert_eq!(gens, expected_gens, "each call returns a distinct generation in gen+1..=gen+200");
}

/// `bump_epoch` increments `session_epoch` by one per call and returns the new value.
pub async fn bump_epoch(stores: Stores) {
    let u = bare_user_record("epoch");
    insert_user(&stores, &u).await;
    let mut tx = begin(&stores).await;
    assert_eq!(tx.bump_epoch(&u.user_id).await.unwrap(), u.session_epoch + 1);
    assert_eq!(tx.bump_epoch(&u.user_id).await.unwrap(), u.session_epoch + 2);
    tx.commit().await.expect("commit");
    let got = get_user(&stores, &u.user_id).await;
    assert_eq!(got.session_epoch, u.session_epoch + 2);
    assert_eq!(got.totp_key_gen, u.totp_key_gen, "bump_epoch leaves totp_key_gen alone");
}

/// `confirm_signup` is a compare-and-set: `Unknown` for an unknown hash, `Confirmed` once (state
/// `final`, confirm time set), then `AlreadyFinal`.
pub async fn confirm_signup_compare_and_set(stores: Stores) {
    let mut u = bare_user_record("signer");
    let hash = random_hash();
    u.sign_up_status = SignUpStatus::BeforeConfirmation;
    u.confirm_token_hash = Some(hash.to_vec());
    insert_user(&stores, &u).await;
    let now = at_us(424_242);
    let mut tx = begin(&stores).await;
    assert_eq!(tx.confirm_signup(&random_hash(), now).await.unwrap(), ConfirmOutcome::Unknown, "unknown hash");
    assert_eq!(
        tx.confirm_signup(&hash, now).await.unwrap(),
        ConfirmOutcome::Confirmed(u.user_id.clone()),
        "first confirm"
    );
    tx.commit().await.expect("commit");
    let got = get_user(&stores, &u.user_id).await;
    assert_eq!(got.sign_up_status, SignUpStatus::Final, "confirmed user is final");
    assert_eq!(got.sign_up_confirm_time, Some(now), "confirm time is set to now");
    let mut tx = begin(&stores).await;
    assert_eq!(
        tx.confirm_signup(&hash, at_us(999_999)).await.unwrap(),
        ConfirmOutcome::AlreadyFinal(u.user_id.clone()),
        "second confirm"
    );
    tx.commit().await.expect("commit");
    assert_eq!(get_user(&stores, &u.user_id).await.sign_up_confirm_time, Some(now), "AlreadyFinal changes nothing");
    // A rolled-back confirmation leaves the user waiting.
    let mut v = bare_user_record("waiter");
    let hash2 = random_hash();
    v.sign_up_status = SignUpStatus::BeforeConfirmation;
    v.confirm_token_hash = Some(hash2.to_vec());
    insert_user(&stores, &v).await;
    let mut tx = begin(&stores).await;
    assert_eq!(tx.confirm_signup(&hash2, now).await.unwrap(), ConfirmOutcome::Confirmed(v.user_id.clone()));
    drop(tx);
    let got = get_user(&stores, &v.user_id).await;
    assert_eq!(got.sign_up_status, SignUpStatus::BeforeConfirmation, "a dropped transaction confirms nothing");
}

/// `delete_user` removes the user with its attributes, links and PRTs, returns whether it
/// existed, and leaves other users' data alone. (Sessions are removed too when co-located; the
/// suite cannot tell, so it does not check them.)
pub async fn delete_cascades(stores: Stores) {
    let u = user_record("doomed");
    let keep = bare_user_record("keeper");
    insert_user(&stores, &u).await;
    insert_user(&stores, &keep).await;
    let prt = prt_record(&u.user_id, at(3600));
    let prt_keep = prt_record(&keep.user_id, at(3600));
    let mut tx = begin(&stores).await;
    tx.insert_prt(&prt).await.unwrap();
    tx.insert_prt(&prt_keep).await.unwrap();
    tx.insert_link(&link_record(&u.user_id, "basic_auth", "doomed-ext", 0)).await.unwrap();
    tx.insert_link(&link_record(&keep.user_id, "basic_auth", "keeper-ext", 0)).await.unwrap();
    tx.commit().await.unwrap();
    let now = at(0);
    for owner in [&u.user_id, &keep.user_id] {
        stores
            .user_attrs
            .create_many(AttrScope::User, owner.as_str(), &[attr("a", "1"), attr("b", "2")], now)
            .await
            .unwrap();
    }

    let mut tx = begin(&stores).await;
    assert!(tx.delete_user(&u.user_id).await.unwrap(), "delete_user of an existing user returns true");
    tx.commit().await.unwrap();

    assert!(stores.users.get_by_id(&u.user_id).await.unwrap().is_none(), "user deleted");
    assert!(stores.users.get_by_username("doomed").await.unwrap().is_none(), "username freed");
    let hash: [u8; 32] = u.confirm_token_hash.clone().unwrap().try_into().unwrap();
    assert!(stores.users.get_by_confirm_token_hash(&hash).await.unwrap().is_none(), "confirm hash freed");
    assert!(stores.resets.get_prt(&prt.token_hash).await.unwrap().is_none(), "PRTs deleted with the user");
    assert!(stores.links.list_links(&u.user_id).await.unwrap().is_empty(), "links deleted with the user");
    assert!(stores.links.get_link("basic_auth", "doomed-ext").await.unwrap().is_none(), "principal freed");
    assert!(
        stores.user_attrs.names(AttrScope::User, u.user_id.as_str(), now).await.unwrap().is_empty(),
        "attributes deleted with the user"
    );

    assert!(stores.users.get_by_id(&keep.user_id).await.unwrap().is_some(), "other user kept");
    assert!(stores.resets.get_prt(&prt_keep.token_hash).await.unwrap().is_some(), "other user's PRT kept");
    assert_eq!(stores.links.list_links(&keep.user_id).await.unwrap().len(), 1, "other user's link kept");
    assert_eq!(
        stores.user_attrs.names(AttrScope::User, keep.user_id.as_str(), now).await.unwrap(),
        names(&["a", "b"]),
        "other user's attributes kept"
    );

    let mut tx = begin(&stores).await;
    assert!(!tx.delete_user(&u.user_id).await.unwrap(), "delete_user of a missing user returns false");
    tx.commit().await.unwrap();
    // The username can be reused.
    insert_user(&stores, &bare_user_record("doomed")).await;
}

/// `find_by_email_idx` returns every user with that blind index and no other.
pub async fn email_idx_lookup(stores: Stores) {
    let mut a = bare_user_record("mail-a");
    let mut b = bare_user_record("mail-b");
    let mut c = bare_user_record("mail-c");
    a.email_idx = Some("idx-shared".to_owned());
    b.email_idx = Some("idx-shared".to_owned());
    c.email_idx = Some("idx-other".to_owned());
    a.email_enc = Some("enc-a".to_owned());
    for u in [&a, &b, &c] {
        insert_user(&stores, u).await;
    }
    insert_user(&stores, &bare_user_record("no-mail")).await;
    let mut found: Vec<UserId> =
        stores.users.find_by_email_idx("idx-shared").await.unwrap().into_iter().map(|u| u.user_id).collect();
    found.sort();
    let mut want = vec![a.user_id.clone(), b.user_id.clone()];
    want.sort();
    assert_eq!(found, want, "find_by_email_idx(idx-shared)");
    let other = stores.users.find_by_email_idx("idx-other").await.unwrap();
    assert_eq!(other.len(), 1);
    assert_user_eq(&other[0], &c, "find_by_email_idx returns whole records");
    assert!(stores.users.find_by_email_idx("idx-none").await.unwrap().is_empty(), "unknown index");
    assert!(stores.users.find_by_email_idx("IDX-SHARED").await.unwrap().is_empty(), "the index is compared exactly");
}

/// A transaction dropped without `commit` leaves nothing behind (inserts, updates, PRTs, links).
pub async fn tx_rollback_on_drop(stores: Stores) {
    let existing = bare_user_record("existing");
    insert_user(&stores, &existing).await;
    let fresh = bare_user_record("phantom");
    let prt = prt_record(&existing.user_id, at(60));
    {
        let mut tx = begin(&stores).await;
        tx.insert_user(&fresh).await.unwrap();
        let patch = UserPatch { display_name: Some(Some("changed".to_owned())), ..Default::default() };
        tx.update_user(&existing.user_id, &patch).await.unwrap();
        tx.update_totp(&existing.user_id, "k", "l", true).await.unwrap();
        tx.insert_prt(&prt).await.unwrap();
        tx.insert_link(&link_record(&existing.user_id, "oidc.google", "phantom@example.org", 0)).await.unwrap();
        drop(tx);
    }
    assert!(stores.users.get_by_id(&fresh.user_id).await.unwrap().is_none(), "rolled-back insert must not persist");
    assert!(stores.users.get_by_username("phantom").await.unwrap().is_none(), "rolled-back insert must not persist");
    assert_user_eq(&get_user(&stores, &existing.user_id).await, &existing, "rolled-back updates must not persist");
    assert!(stores.resets.get_prt(&prt.token_hash).await.unwrap().is_none(), "rolled-back PRT must not persist");
    assert!(stores.links.list_links(&existing.user_id).await.unwrap().is_empty(), "rolled-back link must not persist");
    // And a committed one with several writes lands whole.
    let mut tx = begin(&stores).await;
    tx.insert_user(&fresh).await.unwrap();
    tx.bump_epoch(&existing.user_id).await.unwrap();
    tx.commit().await.unwrap();
    assert!(stores.users.get_by_id(&fresh.user_id).await.unwrap().is_some());
    assert_eq!(get_user(&stores, &existing.user_id).await.session_epoch, existing.session_epoch + 1);
}

/// Reads inside a transaction see its own uncommitted writes.
pub async fn tx_reads_own_writes(stores: Stores) {
    let u = bare_user_record("reader");
    let mut tx = begin(&stores).await;
    assert!(tx.get_user(&u.user_id).await.unwrap().is_none());
    tx.insert_user(&u).await.unwrap();
    let got = tx.get_user(&u.user_id).await.unwrap().expect("the transaction sees its insert");
    assert_user_eq(&got, &u, "get_user inside the transaction");
    tx.bump_epoch(&u.user_id).await.unwrap();
    assert_eq!(tx.get_user(&u.user_id).await.unwrap().unwrap().session_epoch, u.session_epoch + 1);
    tx.commit().await.unwrap();
    assert_eq!(get_user(&stores, &u.user_id).await.session_epoch, u.session_epoch + 1);
}

/// Key rotation: `scan_users` pages through every user in id order.
pub async fn scan_users_in_id_order(stores: Stores) {
    let mut ids = Vec::new();
    for i in 0..7 {
        let u = bare_user_record(&format!("scan-{i}"));
        ids.push(u.user_id.clone());
        insert_user(&stores, &u).await;
    }
    ids.sort();
    let mut got = Vec::new();
    let mut after: Option<UserId> = None;
    loop {
        let page = stores.users.scan_users(after.as_ref(), 3).await.unwrap();
        assert!(page.len() <= 3, "scan_users returns at most `limit` users");
        let Some(last) = page.last() else { break };
        after = Some(last.user_id.clone());
        got.extend(page.into_iter().map(|u| u.user_id));
    }
    assert_eq!(got, ids, "scan_users visits every user once, in id order");
}

/// Key rotation: `replace_envelope` is a compare-and-set of one field.
pub async fn replace_envelope_compare_and_set(stores: Stores) {
    use crate::store::EnvelopeField;
    let u = user_record("envelope");
    insert_user(&stores, &u).await;
    let users = &stores.users;
    for field in EnvelopeField::ALL {
        let old = field.of(&u).unwrap().to_owned();
        let new = format!("rotated-{}", field.column());
        assert!(!users.replace_envelope(&u.user_id, field, "stale", &new).await.unwrap(), "{field:?}: stale value");
        assert!(users.replace_envelope(&u.user_id, field, &old, &new).await.unwrap(), "{field:?}: current value");
        let now = get_user(&stores, &u.user_id).await;
        assert_eq!(field.of(&now), Some(new.as_str()), "{field:?}: replaced");
    }
    let after = get_user(&stores, &u.user_id).await;
    assert_eq!(after.username, u.username, "other fields untouched");
    assert_eq!(after.totp_key_gen, u.totp_key_gen, "replace_envelope is not a TOTP change");
    assert!(!users.replace_envelope(&new_user_id(), EnvelopeField::TotpKey, "a", "b").await.unwrap(), "missing user");
    let bare = bare_user_record("no-email");
    insert_user(&stores, &bare).await;
    if bare.email_enc.is_none() {
        assert!(!users.replace_envelope(&bare.user_id, EnvelopeField::Email, "", "x").await.unwrap(), "NULL email");
    }
}
