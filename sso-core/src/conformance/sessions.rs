//! `sessions`: `SessionStore` (spec/storage.md §1 `SessionStore`).

use std::collections::BTreeSet;

use super::*;
use crate::model::{AttrScope, UserPatch};

/// Inserts a user to own sessions (SQL backends reference it) and returns its id.
async fn owner(stores: &Stores, username: &str) -> UserId {
    let u = bare_user_record(username);
    insert_user(stores, &u).await;
    u.user_id
}

async fn create(stores: &Stores, rec: &SessionRecord) {
    stores.sessions.create(rec).await.unwrap_or_else(|e| panic!("create session: {e}"));
}

async fn ids_of(stores: &Stores, user: &UserId) -> BTreeSet<SessionId> {
    stores.sessions.list_by_user(user).await.expect("list_by_user").into_iter().map(|s| s.session_id).collect()
}

/// A created session reads back unchanged, every field (history, NULLs, microsecond times).
pub async fn create_get(stores: Stores) {
    let u = owner(&stores, "sess").await;
    let full = session_record(&u, at(3600));
    create(&stores, &full).await;
    let got = stores.sessions.get(&full.session_id).await.unwrap().expect("get finds the created session");
    assert_eq!(got, full, "session round trip");
    let mut bare = session_record(&u, at_us(7_200_000_001));
    bare.abs_expiration_time = None;
    bare.user_agent = None;
    bare.history = Vec::new();
    bare.ext_session_id = "zlnk0123456789ABCDEFGHJKMNPQ.caller-ß".to_owned();
    bare.auth_type = "oidc.google".to_owned();
    create(&stores, &bare).await;
    assert_eq!(stores.sessions.get(&bare.session_id).await.unwrap(), Some(bare.clone()), "session with NULLs");
    let listed = stores.sessions.list_by_user(&u).await.unwrap();
    assert_eq!(listed.len(), 2, "the index entry is visible as soon as create returns");
    for s in listed {
        let want = if s.session_id == full.session_id { &full } else { &bare };
        assert_eq!(&s, want, "list_by_user returns whole records");
    }
}

/// Unknown ids: `get` → none, `delete` → false, `set_epoch`/`append_history`/`extend` → false;
/// an unknown user lists nothing and deletes nothing.
pub async fn unknown_id(stores: Stores) {
    let sid = new_session_id();
    assert!(stores.sessions.get(&sid).await.unwrap().is_none(), "get of an unknown id");
    assert!(!stores.sessions.delete(&sid).await.unwrap(), "delete of an unknown id returns false");
    assert!(!stores.sessions.set_epoch(&sid, 5).await.unwrap(), "set_epoch of an unknown id returns false");
    assert!(
        !stores.sessions.append_history(&sid, &history_entry(1), 10).await.unwrap(),
        "append_history of an unknown id"
    );
    assert!(!stores.sessions.extend(&sid, at(10)).await.unwrap(), "extend of an unknown id returns false");
    let user = new_user_id();
    assert!(stores.sessions.list_by_user(&user).await.unwrap().is_empty());
    assert_eq!(stores.sessions.delete_by_user(&user, None).await.unwrap(), 0);
    assert!(stores.sessions.get(&sid).await.unwrap().is_none(), "nothing was created on the way");
}

/// `get_with_user`, where the session store holds users too, answers exactly what `get` then
/// `get_by_id` would (both records whole, the session's own `user_id` and `creation_time` not
/// mixed up with the user's), `NotFound` for an unknown id; otherwise `Unsupported`.
pub async fn get_with_user(stores: Stores) {
    use crate::store::SessionLookup;
    let u = owner(&stores, "joined").await;
    let mut s = session_record(&u, at(3600));
    s.creation_time = at_us(1_234_567);
    create(&stores, &s).await;
    let user = stores.users.get_by_id(&u).await.unwrap().expect("owner");
    match stores.sessions.get_with_user(&s.session_id).await.unwrap() {
        SessionLookup::Unsupported => {
            assert!(
                matches!(stores.sessions.get_with_user(&new_session_id()).await.unwrap(), SessionLookup::Unsupported),
                "a store that cannot join says so for every id"
            );
        }
        SessionLookup::Found(session, found) => {
            assert_eq!(*session, s, "the session, whole");
            assert_eq!(*found, user, "its user, whole");
            // A store may keep what it decoded; a write to either row is seen at once.
            let mut tx = begin(&stores).await;
            let patch = UserPatch { is_locked: Some(true), ..Default::default() };
            tx.update_user(&u, &patch).await.expect("lock");
            tx.commit().await.expect("commit");
            assert!(stores.sessions.extend(&s.session_id, at(7200)).await.unwrap());
            let SessionLookup::Found(session, found) = stores.sessions.get_with_user(&s.session_id).await.unwrap()
            else {
                panic!("the session is still there");
            };
            assert!(found.is_locked, "the user's write is seen");
            assert_eq!(session.expiration_time, at(7200), "the session's write is seen");
            assert_eq!(*found, stores.users.get_by_id(&u).await.unwrap().expect("owner"), "the user, whole");
            assert!(
                matches!(stores.sessions.get_with_user(&new_session_id()).await.unwrap(), SessionLookup::NotFound),
                "unknown id"
            );
        }
        SessionLookup::NotFound => panic!("get_with_user missed an existing session and user"),
    }
}

/// `extend` sets `max(current, new)`: forwards moves, backwards is a no-op that still returns true.
pub async fn extend_never_backwards(stores: Stores) {
    let u = owner(&stores, "ext").await;
    let s = session_record(&u, at(100));
    create(&stores, &s).await;
    let exp = |stores: Stores, sid: SessionId| async move {
        stores.sessions.get(&sid).await.unwrap().unwrap().expiration_time
    };
    assert!(stores.sessions.extend(&s.session_id, at_us(200_000_001)).await.unwrap(), "extend forwards");
    assert_eq!(
        exp(stores.clone(), s.session_id.clone()).await,
        at_us(200_000_001),
        "moved forwards to the microsecond"
    );
    assert!(
        stores.sessions.extend(&s.session_id, at(150)).await.unwrap(),
        "extend backwards still reports the session"
    );
    assert_eq!(exp(stores.clone(), s.session_id.clone()).await, at_us(200_000_001), "never moves backwards");
    assert!(stores.sessions.extend(&s.session_id, at_us(200_000_001)).await.unwrap(), "extend to the same time");
    let got = stores.sessions.get(&s.session_id).await.unwrap().unwrap();
    assert_eq!(SessionRecord { expiration_time: s.expiration_time, ..got }, s, "extend changes only expiration_time");
}

/// `extend` of a missing id returns false and creates nothing.
pub async fn extend_missing(stores: Stores) {
    let u = owner(&stores, "ext-miss").await;
    let s = session_record(&u, at(100));
    assert!(!stores.sessions.extend(&s.session_id, at(200)).await.unwrap(), "extend of a missing id returns false");
    assert!(stores.sessions.get(&s.session_id).await.unwrap().is_none(), "extend must not create a record");
    create(&stores, &s).await;
    stores.sessions.delete(&s.session_id).await.unwrap();
    assert!(!stores.sessions.extend(&s.session_id, at(300)).await.unwrap(), "extend of a deleted id returns false");
    assert!(stores.sessions.get(&s.session_id).await.unwrap().is_none(), "extend must not resurrect a record");
}

/// `set_epoch` sets the epoch (up or down) and nothing else.
pub async fn set_epoch(stores: Stores) {
    let u = owner(&stores, "epoch").await;
    let s = session_record(&u, at(100));
    create(&stores, &s).await;
    assert!(stores.sessions.set_epoch(&s.session_id, 42).await.unwrap());
    let got = stores.sessions.get(&s.session_id).await.unwrap().unwrap();
    assert_eq!(got.epoch, 42);
    assert_eq!(SessionRecord { epoch: s.epoch, ..got }, s, "set_epoch changes only the epoch");
    assert!(stores.sessions.set_epoch(&s.session_id, 1).await.unwrap());
    assert_eq!(stores.sessions.get(&s.session_id).await.unwrap().unwrap().epoch, 1);
}

/// `delete` removes the record and its index entry; a second delete returns false.
pub async fn delete_idempotent(stores: Stores) {
    let u = owner(&stores, "del").await;
    let a = session_record(&u, at(100));
    let b = session_record(&u, at(100));
    create(&stores, &a).await;
    create(&stores, &b).await;
    assert!(stores.sessions.delete(&a.session_id).await.unwrap(), "first delete returns true");
    assert!(stores.sessions.get(&a.session_id).await.unwrap().is_none(), "deleted record is gone");
    assert!(!stores.sessions.delete(&a.session_id).await.unwrap(), "second delete returns false");
    assert_eq!(ids_of(&stores, &u).await, BTreeSet::from([b.session_id.clone()]), "index entry removed");
    assert!(stores.sessions.get(&b.session_id).await.unwrap().is_some(), "the other session is kept");
}

/// `list_by_user` returns exactly that user's sessions.
pub async fn list_by_user_only_own(stores: Stores) {
    let a = owner(&stores, "list-a").await;
    let b = owner(&stores, "list-b").await;
    let c = owner(&stores, "list-c").await;
    let mut want_a = BTreeSet::new();
    let mut want_b = BTreeSet::new();
    for i in 0..3 {
        let s = session_record(&a, at(100 + i));
        want_a.insert(s.session_id.clone());
        create(&stores, &s).await;
        if i < 2 {
            let s = session_record(&b, at(100 + i));
            want_b.insert(s.session_id.clone());
            create(&stores, &s).await;
        }
    }
    assert_eq!(ids_of(&stores, &a).await, want_a, "user a's sessions");
    assert_eq!(ids_of(&stores, &b).await, want_b, "user b's sessions");
    assert!(ids_of(&stores, &c).await.is_empty(), "a user without sessions lists none");
    for s in stores.sessions.list_by_user(&a).await.unwrap() {
        assert_eq!(s.user_id, a, "list_by_user returned another user's session");
    }
}

/// `delete_by_user` deletes the user's sessions except the one named, returns the count, and
/// leaves other users' sessions alone.
pub async fn delete_by_user(stores: Stores) {
    let a = owner(&stores, "dbu-a").await;
    let b = owner(&stores, "dbu-b").await;
    let mut a_ids = Vec::new();
    for i in 0..4 {
        let s = session_record(&a, at(100 + i));
        a_ids.push(s.session_id.clone());
        create(&stores, &s).await;
    }
    let sb = session_record(&b, at(100));
    create(&stores, &sb).await;
    let keep = a_ids[1].clone();
    // Attributes go with their sessions.
    stores.session_attrs.create_many(AttrScope::Session, a_ids[0].as_str(), &[attr("x", "1")], at(0)).await.unwrap();

    assert_eq!(stores.sessions.delete_by_user(&a, Some(&keep)).await.unwrap(), 3, "deletes all but the exception");
    assert_eq!(ids_of(&stores, &a).await, BTreeSet::from([keep.clone()]), "only the exception is left");
    for id in a_ids.iter().filter(|i| **i != keep) {
        assert!(stores.sessions.get(id).await.unwrap().is_none(), "deleted sessions are gone");
    }
    assert!(
        stores.session_attrs.names(AttrScope::Session, a_ids[0].as_str(), at(0)).await.unwrap().is_empty(),
        "the attributes of deleted sessions are gone"
    );
    assert!(stores.sessions.get(&sb.session_id).await.unwrap().is_some(), "another user's session is kept");

    assert_eq!(
        stores.sessions.delete_by_user(&a, Some(&sb.session_id)).await.unwrap(),
        1,
        "an exception of another user protects nothing of this one"
    );
    assert!(ids_of(&stores, &a).await.is_empty());
    assert!(stores.sessions.get(&sb.session_id).await.unwrap().is_some(), "…and is not deleted either");
    assert_eq!(stores.sessions.delete_by_user(&a, None).await.unwrap(), 0, "nothing left to delete");
    assert_eq!(stores.sessions.delete_by_user(&b, None).await.unwrap(), 1);
    assert!(ids_of(&stores, &b).await.is_empty());
}

/// An expired session is still returned by `get` and `list_by_user` (the core decides validity)
/// and reads as expired.
pub async fn expired_readable(stores: Stores) {
    let u = owner(&stores, "expired").await;
    let idle = session_record(&u, at(10));
    let mut abs = session_record(&u, at(1000));
    abs.abs_expiration_time = Some(at(15));
    let live = session_record(&u, at(1000));
    for s in [&idle, &abs, &live] {
        create(&stores, s).await;
    }
    let now = at(20);
    let got = stores.sessions.get(&idle.session_id).await.unwrap().expect("an expired session is still readable");
    assert_eq!(got, idle);
    assert!(got.is_expired(now));
    let got =
        stores.sessions.get(&abs.session_id).await.unwrap().expect("a session past its absolute limit is readable");
    assert!(got.is_expired(now));
    let listed = stores.sessions.list_by_user(&u).await.unwrap();
    assert_eq!(listed.len(), 3, "list_by_user returns expired sessions too");
    let expired: BTreeSet<SessionId> =
        listed.iter().filter(|s| s.is_expired(now)).map(|s| s.session_id.clone()).collect();
    assert_eq!(expired, BTreeSet::from([idle.session_id.clone(), abs.session_id.clone()]), "listed as expired");
}

/// `delete_expired` deletes at most `limit` sessions expired at `now` (idle deadline or absolute
/// limit reached, boundary included) with their attributes and index entries, and nothing else.
pub async fn delete_expired(stores: Stores) {
    let u = owner(&stores, "cleanup").await;
    let e1 = session_record(&u, at(10));
    let e2 = session_record(&u, at(50));
    let mut e3 = session_record(&u, at(1000));
    e3.abs_expiration_time = Some(at(15));
    let live = session_record(&u, at(1000));
    let mut live_no_abs = session_record(&u, at(51));
    live_no_abs.abs_expiration_time = None;
    for s in [&e1, &e2, &e3, &live, &live_no_abs] {
        create(&stores, s).await;
    }
    stores
        .session_attrs
        .create_many(AttrScope::Session, e1.session_id.as_str(), &[attr("a", "1")], at(0))
        .await
        .unwrap();
    stores
        .session_attrs
        .create_many(AttrScope::Session, live.session_id.as_str(), &[attr("a", "1")], at(0))
        .await
        .unwrap();
    let now = at(50);
    assert_eq!(stores.sessions.delete_expired(now, 2).await.unwrap(), 2, "at most `limit` deleted");
    assert_eq!(stores.sessions.delete_expired(now, 100).await.unwrap(), 1, "the rest of the expired ones");
    assert_eq!(stores.sessions.delete_expired(now, 100).await.unwrap(), 0, "nothing expired left");
    for s in [&e1, &e2, &e3] {
        assert!(stores.sessions.get(&s.session_id).await.unwrap().is_none(), "expired session deleted");
    }
    assert_eq!(
        ids_of(&stores, &u).await,
        BTreeSet::from([live.session_id.clone(), live_no_abs.session_id.clone()]),
        "index entries of deleted sessions removed, live ones kept"
    );
    assert!(
        stores.session_attrs.names(AttrScope::Session, e1.session_id.as_str(), at(0)).await.unwrap().is_empty(),
        "attributes deleted with their session"
    );
    assert_eq!(
        stores.session_attrs.names(AttrScope::Session, live.session_id.as_str(), at(0)).await.unwrap(),
        names(&["a"]),
        "a live session keeps its attributes"
    );
}

/// `append_history` appends in order and keeps only the newest `max` entries.
pub async fn history_cap(stores: Stores) {
    let u = owner(&stores, "hist").await;
    let s = session_record(&u, at(100));
    create(&stores, &s).await;
    let hist =
        |stores: Stores, sid: SessionId| async move { stores.sessions.get(&sid).await.unwrap().unwrap().history };
    assert!(stores.sessions.append_history(&s.session_id, &history_entry(3), 3).await.unwrap());
    assert_eq!(
        hist(stores.clone(), s.session_id.clone()).await,
        vec![history_entry(1), history_entry(2), history_entry(3)]
    );
    assert!(stores.sessions.append_history(&s.session_id, &history_entry(4), 3).await.unwrap());
    assert_eq!(
        hist(stores.clone(), s.session_id.clone()).await,
        vec![history_entry(2), history_entry(3), history_entry(4)],
        "the oldest entry is dropped at the cap"
    );
    assert!(stores.sessions.append_history(&s.session_id, &history_entry(5), 2).await.unwrap());
    assert_eq!(
        hist(stores.clone(), s.session_id.clone()).await,
        vec![history_entry(4), history_entry(5)],
        "a lower cap keeps only the newest entries"
    );
    let got = stores.sessions.get(&s.session_id).await.unwrap().unwrap();
    assert_eq!(SessionRecord { history: s.history.clone(), ..got }, s, "append_history changes only the history");
}

/// 100 sessions of one user are all listed (and deleted) through the per-user index, and other
/// users' sessions are neither listed nor touched.
pub async fn many_sessions_of_one_user(stores: Stores) {
    let a = owner(&stores, "many").await;
    let b = owner(&stores, "few-b").await;
    let c = owner(&stores, "few-c").await;
    let mut want = BTreeSet::new();
    let mut others = Vec::new();
    for i in 0..100 {
        let s = session_record(&a, at(1000 + i));
        want.insert(s.session_id.clone());
        create(&stores, &s).await;
        if i % 40 == 0 {
            for o in [&b, &c] {
                let s = session_record(o, at(1000 + i));
                create(&stores, &s).await;
                others.push(s);
            }
        }
    }
    assert_eq!(ids_of(&stores, &a).await, want, "all 100 sessions listed");
    assert_eq!(ids_of(&stores, &b).await.len(), 3);
    assert_eq!(ids_of(&stores, &c).await.len(), 3);
    assert_eq!(stores.sessions.delete_by_user(&a, None).await.unwrap(), 100);
    assert!(ids_of(&stores, &a).await.is_empty());
    for s in &others {
        assert_eq!(
            stores.sessions.get(&s.session_id).await.unwrap().as_ref(),
            Some(s),
            "other users' sessions untouched"
        );
    }
}
