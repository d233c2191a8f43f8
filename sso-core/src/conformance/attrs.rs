//! `attrs`: `AttrStore`, checked for both scopes (user attributes on `stores.user_attrs`, session
//! attributes on `stores.session_attrs`).

use super::*;
use crate::model::{AttrRecord, AttrScope};
use crate::store::AttrStore;

/// One attribute owner: a user (user scope) or a session (session scope).
struct Owner {
    scope: AttrScope,
    store: Arc<dyn AttrStore>,
    id: String,
}

impl Owner {
    fn what(&self, op: &str) -> String {
        format!("{} scope: {op}", self.scope.as_str())
    }

    async fn get(&self, name: &str, now: Timestamp) -> Option<AttrRecord> {
        let mut v = self.store.get_many(self.scope, &self.id, &[name.to_owned()], now).await.expect("get_many");
        assert!(v.len() <= 1, "{}: get_many returned {} records for one name", self.what("get_many"), v.len());
        v.pop()
    }

    async fn names(&self, now: Timestamp) -> Vec<String> {
        self.store.names(self.scope, &self.id, now).await.expect("names")
    }

    async fn create(&self, items: &[AttrWrite], now: Timestamp) {
        self.store
            .create_many(self.scope, &self.id, items, now)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", self.what("create_many")));
    }
}

/// A user and one of its sessions, each as an owner: `[user scope, session scope]`.
async fn owners(stores: &Stores, tag: &str) -> Vec<Owner> {
    let u = bare_user_record(&format!("attr-owner-{tag}"));
    insert_user(stores, &u).await;
    let s = session_record(&u.user_id, at(86_400));
    stores.sessions.create(&s).await.expect("create session");
    vec![
        Owner { scope: AttrScope::User, store: stores.user_attrs.clone(), id: u.user_id.as_str().to_owned() },
        Owner { scope: AttrScope::Session, store: stores.session_attrs.clone(), id: s.session_id.as_str().to_owned() },
    ]
}

/// `create_many` of a name that exists unexpired gives `Conflict { what: "attr" }` and keeps the value.
pub async fn create_conflict(stores: Stores) {
    for o in owners(&stores, "a").await {
        o.create(&[attr("color", r#""blue""#)], at(0)).await;
        assert_conflict(
            o.store.create_many(o.scope, &o.id, &[attr("color", r#""red""#)], at(1)).await,
            "attr",
            &o.what("second create of one name"),
        );
        let got = o.get("color", at(2)).await.expect("the first value is kept");
        assert_eq!(got.value, r#""blue""#, "{}", o.what("a refused create writes nothing"));
        assert_eq!(got.creation_time, at(0));
    }
}

/// `create_many` is all-or-nothing: one existing name among several writes none of them.
pub async fn create_many_atomic(stores: Stores) {
    for o in owners(&stores, "b").await {
        o.create(&[attr("a", "1")], at(0)).await;
        let r = o.store.create_many(o.scope, &o.id, &[attr("b", "2"), attr("a", "x"), attr("c", "3")], at(1)).await;
        assert_conflict(r, "attr", &o.what("create_many with one duplicate"));
        assert_eq!(o.names(at(2)).await, names(&["a"]), "{}", o.what("nothing of a refused create_many is written"));
        o.create(&[attr("b", "2"), attr("c", "3")], at(3)).await;
        assert_eq!(o.names(at(4)).await, names(&["a", "b", "c"]));
    }
}

/// `update_many` with one missing name gives `NotFound` and writes nothing; a full update changes
/// value, flag and `last_modified` and keeps `creation_time`.
pub async fn update_many_missing_none_written(stores: Stores) {
    for o in owners(&stores, "c").await {
        o.create(&[attr("a", "1"), attr("b", "2")], at(0)).await;
        let r = o.store.update_many(o.scope, &o.id, &[attr("a", "10"), attr("missing", "x")], at(1)).await;
        assert_not_found(r, &o.what("update_many with a missing name"));
        assert_eq!(o.get("a", at(2)).await.unwrap().value, "1", "{}", o.what("a refused update_many writes nothing"));
        assert!(o.get("missing", at(2)).await.is_none(), "{}", o.what("update_many does not create"));
        let mut a10 = attr("a", "10");
        a10.is_encrypted = true;
        o.store.update_many(o.scope, &o.id, &[a10, attr("b", "20")], at_us(3_000_007)).await.unwrap();
        let a = o.get("a", at(4)).await.unwrap();
        assert_eq!(
            a,
            AttrRecord {
                name: "a".into(),
                value: "10".into(),
                is_encrypted: true,
                creation_time: at(0),
                last_modified: at_us(3_000_007),
                expiration_time: None,
            },
            "{}",
            o.what("after update_many")
        );
        assert_eq!(o.get("b", at(4)).await.unwrap().value, "20");
    }
}

/// `update_many` with `expiration_time: None` keeps the expiry; `Some(x)` sets it (NULL included).
pub async fn update_keeps_or_sets_expiry(stores: Stores) {
    for o in owners(&stores, "d").await {
        o.create(&[attr_exp("a", "1", at(100))], at(0)).await;
        let keep = AttrWrite { expiration_time: None, ..attr("a", "2") };
        o.store.update_many(o.scope, &o.id, &[keep], at(1)).await.unwrap();
        let a = o.get("a", at(2)).await.unwrap();
        assert_eq!((a.value.as_str(), a.expiration_time), ("2", Some(at(100))), "{}", o.what("None keeps the expiry"));
        o.store.update_many(o.scope, &o.id, &[attr_exp("a", "3", at(200))], at(3)).await.unwrap();
        assert_eq!(
            o.get("a", at(150)).await.unwrap().expiration_time,
            Some(at(200)),
            "{}",
            o.what("Some sets the expiry")
        );
        o.store.update_many(o.scope, &o.id, &[attr("a", "4")], at(4)).await.unwrap();
        let a = o.get("a", at(500)).await.expect("Some(None) removes the expiry");
        assert_eq!((a.value.as_str(), a.expiration_time), ("4", None));
    }
}

/// `set_many` upserts: replaces value, flag and expiry, keeps `creation_time` of a live attribute.
pub async fn set_keeps_creation_time(stores: Stores) {
    for o in owners(&stores, "e").await {
        o.store.set_many(o.scope, &o.id, &[attr("a", "1")], at(0)).await.unwrap();
        let a = o.get("a", at(1)).await.expect("set_many creates");
        assert_eq!((a.creation_time, a.last_modified), (at(0), at(0)));
        let mut w = attr_exp("a", "gAAAA.env", at(500));
        w.is_encrypted = true;
        o.store.set_many(o.scope, &o.id, &[w, attr("b", "new")], at_us(5_000_003)).await.unwrap();
        let a = o.get("a", at(6)).await.unwrap();
        assert_eq!(
            a,
            AttrRecord {
                name: "a".into(),
                value: "gAAAA.env".into(),
                is_encrypted: true,
                creation_time: at(0),
                last_modified: at_us(5_000_003),
                expiration_time: Some(at(500)),
            },
            "{}",
            o.what("set_many keeps creation_time and replaces the rest")
        );
        assert_eq!(o.get("b", at(6)).await.unwrap().creation_time, at_us(5_000_003));
        o.store.set_many(o.scope, &o.id, &[attr("a", "plain")], at(7)).await.unwrap();
        let a = o.get("a", at(600)).await.expect("set_many with no expiry removes it");
        assert_eq!(
            (a.value.as_str(), a.is_encrypted, a.expiration_time, a.creation_time),
            ("plain", false, None, at(0))
        );
    }
}

/// An attribute is invisible from its expiry on (boundary included): reads skip it, updates,
/// deletes and expiry changes say `NotFound`, and `create_many` may create the name again.
pub async fn expiry_hides_and_allows_recreate(stores: Stores) {
    for o in owners(&stores, "f").await {
        o.create(&[attr_exp("a", "old", at(10)), attr("b", "kept")], at(0)).await;
        assert!(o.get("a", at_us(9_999_999)).await.is_some(), "{}", o.what("visible before its expiry"));
        let now = at(10);
        assert!(o.get("a", now).await.is_none(), "{}", o.what("hidden at its expiry"));
        assert_eq!(o.names(now).await, names(&["b"]), "{}", o.what("names skip expired"));
        assert_not_found(
            o.store.update_many(o.scope, &o.id, &[attr("a", "x")], now).await,
            &o.what("update of expired"),
        );
        assert_not_found(o.store.delete_many(o.scope, &o.id, &names(&["a"]), now).await, &o.what("delete of expired"));
        assert_not_found(
            o.store.set_expiry_many(o.scope, &o.id, &[("a".to_owned(), None)], now).await,
            &o.what("set_expiry of expired"),
        );
        o.create(&[attr("a", "new")], now).await;
        let a = o.get("a", at(1000)).await.expect("re-created");
        assert_eq!(
            (a.value.as_str(), a.creation_time, a.expiration_time),
            ("new", now, None),
            "{}",
            o.what("re-created")
        );
    }
}

/// `names` lists unexpired names only, sorted byte-wise.
pub async fn names_sorted_without_expired(stores: Stores) {
    for o in owners(&stores, "g").await {
        o.create(&[attr("b", "1"), attr("é", "1"), attr("a", "1"), attr_exp("c", "1", at(5)), attr("Z", "1")], at(0))
            .await;
        assert_eq!(o.names(at(1)).await, names(&["Z", "a", "b", "c", "é"]), "{}", o.what("names before expiry"));
        assert_eq!(o.names(at(6)).await, names(&["Z", "a", "b", "é"]), "{}", o.what("names after expiry"));
    }
}

/// `get_many` returns the unexpired attributes among the names asked for, skipping missing and
/// expired ones, with every field.
pub async fn get_many_skips_missing_and_expired(stores: Stores) {
    for o in owners(&stores, "h").await {
        let mut c = attr_exp("c", r#"{"k":[1,2,"ü"]}"#, at(1000));
        c.is_encrypted = true;
        o.create(&[attr("a", "1"), attr_exp("b", "2", at(5)), c, attr("d", "4")], at_us(1)).await;
        let mut got = o.store.get_many(o.scope, &o.id, &names(&["a", "b", "missing", "c"]), at(6)).await.unwrap();
        got.sort_by(|x, y| x.name.cmp(&y.name));
        let rec = |name: &str, value: &str, enc: bool, exp: Option<Timestamp>| AttrRecord {
            name: name.into(),
            value: value.into(),
            is_encrypted: enc,
            creation_time: at_us(1),
            last_modified: at_us(1),
            expiration_time: exp,
        };
        assert_eq!(
            got,
            vec![rec("a", "1", false, None), rec("c", r#"{"k":[1,2,"ü"]}"#, true, Some(at(1000)))],
            "{}",
            o.what("get_many")
        );
        assert!(o.store.get_many(o.scope, &o.id, &[], at(6)).await.unwrap().is_empty(), "no names, no records");
    }
}

/// `delete_many` with one missing name gives `NotFound` and deletes nothing.
pub async fn delete_many_atomic(stores: Stores) {
    for o in owners(&stores, "i").await {
        o.create(&[attr("a", "1"), attr("b", "2"), attr("c", "3")], at(0)).await;
        assert_not_found(
            o.store.delete_many(o.scope, &o.id, &names(&["a", "missing"]), at(1)).await,
            &o.what("delete_many with a missing name"),
        );
        assert_eq!(
            o.names(at(1)).await,
            names(&["a", "b", "c"]),
            "{}",
            o.what("a refused delete_many deletes nothing")
        );
        o.store.delete_many(o.scope, &o.id, &names(&["a", "c"]), at(2)).await.unwrap();
        assert_eq!(o.names(at(3)).await, names(&["b"]));
        o.create(&[attr("a", "again")], at(4)).await;
    }
}

/// `set_expiry_many` sets expiries (NULL included); one missing name → `NotFound`, nothing written.
pub async fn set_expiry_many(stores: Stores) {
    for o in owners(&stores, "j").await {
        o.create(&[attr("a", "1"), attr_exp("b", "2", at(50))], at(0)).await;
        let r = o
            .store
            .set_expiry_many(o.scope, &o.id, &[("a".to_owned(), Some(at(10))), ("missing".to_owned(), None)], at(1))
            .await;
        assert_not_found(r, &o.what("set_expiry_many with a missing name"));
        assert_eq!(o.get("a", at(20)).await.map(|a| a.expiration_time), Some(None), "{}", o.what("nothing written"));
        o.store
            .set_expiry_many(
                o.scope,
                &o.id,
                &[("a".to_owned(), Some(at_us(10_000_001))), ("b".to_owned(), None)],
                at(2),
            )
            .await
            .unwrap();
        let a = o.get("a", at(3)).await.unwrap();
        assert_eq!((a.value.as_str(), a.expiration_time), ("1", Some(at_us(10_000_001))), "{}", o.what("expiry set"));
        assert!(o.get("a", at_us(10_000_001)).await.is_none(), "{}", o.what("the new expiry applies"));
        assert_eq!(o.get("b", at(1000)).await.map(|b| b.expiration_time), Some(None), "{}", o.what("expiry removed"));
    }
}

/// Owners do not share attributes: the same name under two owners is two attributes.
pub async fn owners_isolated(stores: Stores) {
    let first = owners(&stores, "k1").await;
    let second = owners(&stores, "k2").await;
    for (o1, o2) in first.iter().zip(second.iter()) {
        o1.create(&[attr("shared", "one")], at(0)).await;
        o2.create(&[attr("shared", "two")], at(0)).await;
        assert_eq!(o1.get("shared", at(1)).await.unwrap().value, "one");
        assert_eq!(o2.get("shared", at(1)).await.unwrap().value, "two");
        o1.store.delete_many(o1.scope, &o1.id, &names(&["shared"]), at(2)).await.unwrap();
        assert!(o1.get("shared", at(3)).await.is_none());
        assert_eq!(o2.get("shared", at(3)).await.unwrap().value, "two", "{}", o2.what("another owner's delete"));
    }
    // A user's attributes and its session's attributes are distinct too.
    let both = owners(&stores, "k3").await;
    both[0].create(&[attr("n", "user")], at(0)).await;
    both[1].create(&[attr("n", "session")], at(0)).await;
    assert_eq!(both[0].get("n", at(1)).await.unwrap().value, "user");
    assert_eq!(both[1].get("n", at(1)).await.unwrap().value, "session");
}

/// Deleting a session deletes its attributes (and nothing of its user's).
pub async fn session_attrs_removed_with_session(stores: Stores) {
    let os = owners(&stores, "l").await;
    let (user, session) = (&os[0], &os[1]);
    user.create(&[attr("u", "1")], at(0)).await;
    session.create(&[attr("a", "1"), attr_exp("b", "2", at(500))], at(0)).await;
    let sid = SessionId::parse(&session.id).unwrap();
    assert!(stores.sessions.delete(&sid).await.unwrap());
    assert!(session.names(at(1)).await.is_empty(), "session attributes deleted with their session");
    assert!(session.get("a", at(1)).await.is_none());
    assert_eq!(user.names(at(1)).await, names(&["u"]), "the user's attributes are kept");
}

/// `is_encrypted` and the value text round-trip exactly.
pub async fn encrypted_flag_round_trip(stores: Stores) {
    for o in owners(&stores, "m").await {
        let mut enc = attr("secret", "gAAAAABk-envelope_ü/+==");
        enc.is_encrypted = true;
        let plain = attr("plain", r#"{"nested":{"list":[1,2.5,null,true,"ß"]}, "spaced" : 1 }"#);
        o.create(&[enc, plain], at(0)).await;
        let s = o.get("secret", at(1)).await.unwrap();
        assert!(s.is_encrypted, "{}", o.what("is_encrypted = true round trip"));
        assert_eq!(s.value, "gAAAAABk-envelope_ü/+==");
        let p = o.get("plain", at(1)).await.unwrap();
        assert!(!p.is_encrypted, "{}", o.what("is_encrypted = false round trip"));
        assert_eq!(p.value, r#"{"nested":{"list":[1,2.5,null,true,"ß"]}, "spaced" : 1 }"#, "value text kept exactly");
    }
}

/// `delete_expired` physically deletes at most `limit` expired attributes and no live one.
pub async fn delete_expired(stores: Stores) {
    // One scope at a time: a backend may serve both scopes with one object.
    for o in owners(&stores, "n").await {
        o.create(
            &[attr_exp("a", "1", at(5)), attr_exp("b", "2", at(10)), attr("c", "3"), attr_exp("d", "4", at(100))],
            at(0),
        )
        .await;
        let now = at(10);
        assert_eq!(o.store.delete_expired(now, 1).await.unwrap(), 1, "{}", o.what("at most `limit` deleted"));
        assert_eq!(o.store.delete_expired(now, 100).await.unwrap(), 1, "{}", o.what("the other expired one"));
        assert_eq!(o.store.delete_expired(now, 100).await.unwrap(), 0, "{}", o.what("nothing left"));
        assert_eq!(o.names(at(0)).await, names(&["c", "d"]), "{}", o.what("expired ones physically gone"));
    }
}

/// Key rotation: `scan_envelopes` pages through every encrypted attribute of a scope (and no plain
/// one) until it returns no cursor; `replace_envelope` is a compare-and-set of the value.
pub async fn scan_and_replace_envelopes(stores: Stores) {
    let mut per_scope: Vec<Vec<Owner>> = vec![Vec::new(), Vec::new()];
    for tag in ["o1", "o2", "o3"] {
        for (i, o) in owners(&stores, tag).await.into_iter().enumerate() {
            let mut items = vec![attr("plain", "1")];
            for n in 0..3 {
                let mut a = attr(&format!("enc{n}"), &format!("env-{tag}-{n}"));
                a.is_encrypted = true;
                items.push(a);
            }
            o.create(&items, at(0)).await;
            per_scope[i].push(o);
        }
    }
    for owners in &per_scope {
        let first = &owners[0];
        let mut want: Vec<(String, String, String)> = Vec::new();
        for o in owners {
            for n in 0..3 {
                want.push((o.id.clone(), format!("enc{n}"), format!("env-{}-{n}", &o.id)));
            }
        }
        // The scan: every encrypted attribute at least once, pages of any size, then no cursor.
        let mut seen = std::collections::BTreeSet::new();
        let mut cursor = None;
        for _ in 0..100 {
            let (page, next) = first.store.scan_envelopes(first.scope, cursor.take(), 2).await.expect("scan_envelopes");
            for e in page {
                assert_ne!(e.name, "plain", "{}", first.what("scan_envelopes returned a plain attribute"));
                seen.insert((e.owner, e.name, e.value));
            }
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let seen: Vec<(String, String, String)> = seen.into_iter().collect();
        let mut want_sorted: Vec<(String, String, String)> =
            want.iter().map(|(o, n, _)| (o.clone(), n.clone(), String::new())).collect();
        want_sorted.sort();
        let mut seen_keys: Vec<(String, String, String)> =
            seen.iter().map(|(o, n, _)| (o.clone(), n.clone(), String::new())).collect();
        seen_keys.sort();
        assert_eq!(seen_keys, want_sorted, "{}", first.what("scan_envelopes covers every encrypted attribute"));

        // Compare-and-set.
        let (owner, name, value) = &seen[0];
        let s = first.store.clone();
        assert!(
            s.replace_envelope(first.scope, owner, name, value, "rotated").await.unwrap(),
            "{}",
            first.what("replace_envelope with the stored value")
        );
        assert!(
            !s.replace_envelope(first.scope, owner, name, value, "again").await.unwrap(),
            "{}",
            first.what("replace_envelope with a stale value changes nothing")
        );
        assert!(
            !s.replace_envelope(first.scope, owner, "missing", value, "x").await.unwrap(),
            "{}",
            first.what("replace_envelope of a missing attribute")
        );
        let o = owners.iter().find(|o| &o.id == owner).unwrap();
        let got = o.get(name, at(1)).await.unwrap();
        assert_eq!(got.value, "rotated");
        assert!(got.is_encrypted, "{}", first.what("a replaced envelope stays encrypted"));
    }
}
