//! `search`: `UserStore::search` semantics and ordering (spec/users.md §4), identical on every
//! backend. The store receives criteria already upper-cased by the core.

use super::*;
use crate::model::{NameField, UserPatch, UserQuery};

/// Runs `q` and returns the usernames of the whole result, in order, checking the total.
async fn usernames(stores: &Stores, q: &UserQuery) -> Vec<String> {
    let (total, page) = stores.users.search(q, 0, 1000).await.expect("search");
    assert_eq!(total, page.len() as u64, "total must count every match ({q:?})");
    page.into_iter().map(|u| u.username).collect()
}

/// Usernames sorted, for set comparisons.
fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn q_names(names: &[(NameField, &str)], exact: bool, or: bool) -> UserQuery {
    UserQuery {
        names: names.iter().map(|(f, v)| (*f, (*v).to_owned())).collect(),
        names_exact: exact,
        names_or: or,
        ..Default::default()
    }
}

async fn insert_named(
    stores: &Stores,
    username: &str,
    display: Option<&str>,
    first: Option<&str>,
    last: Option<&str>,
) -> UserRecord {
    let u = with_names(bare_user_record(username), display, first, last);
    insert_user(stores, &u).await;
    u
}

/// Exact name matching on the upper-cased columns: a criterion upper-cased by the core matches
/// whatever case the name was written in, non-ASCII letters included; partial values do not match.
pub async fn exact_name_case_insensitive(stores: Stores) {
    insert_named(&stores, "emile", Some("Émile Zola"), Some("émile"), Some("Zola")).await;
    insert_named(&stores, "strasse", Some("straße"), Some("Jörg"), Some("Straße")).await;
    insert_named(&stores, "plain", Some("Emile Zola"), Some("Emile"), Some("Zola")).await;
    let up = |s: &str| s.to_uppercase();
    let r = usernames(&stores, &q_names(&[(NameField::DisplayName, &up("émile zola"))], true, false)).await;
    assert_eq!(r, ["emile"], "exact, non-ASCII, case-insensitive display_name");
    let r = usernames(&stores, &q_names(&[(NameField::FirstName, &up("JÖRG"))], true, false)).await;
    assert_eq!(r, ["strasse"], "exact first_name");
    let r = usernames(&stores, &q_names(&[(NameField::LastName, &up("straße"))], true, false)).await;
    assert_eq!(r, ["strasse"], "ß upper-cases to SS on both sides");
    let r = usernames(&stores, &q_names(&[(NameField::LastName, "ZOLA")], true, false)).await;
    assert_eq!(sorted(r), ["emile", "plain"], "exact last_name");
    let r = usernames(&stores, &q_names(&[(NameField::DisplayName, "ÉMILE")], true, false)).await;
    assert!(r.is_empty(), "exact matching does not match a prefix: {r:?}");
    let r = usernames(&stores, &q_names(&[(NameField::MiddleName, "ÉMILE")], true, false)).await;
    assert!(r.is_empty(), "a NULL column never matches: {r:?}");
}

/// Substring name matching (`names_exact = false`), non-ASCII included.
pub async fn substring_name(stores: Stores) {
    insert_named(&stores, "emile", Some("Émile Zola"), None, None).await;
    insert_named(&stores, "joerg", Some("Jörg Müller"), None, None).await;
    insert_named(&stores, "miller", Some("Ann Miller"), None, None).await;
    insert_named(&stores, "anon", None, None, None).await;
    let sub = |v: &'static str| q_names(&[(NameField::DisplayName, v)], false, false);
    assert_eq!(usernames(&stores, &sub("MILE")).await, ["emile"], "substring inside a word");
    assert_eq!(usernames(&stores, &sub("ÖRG MÜ")).await, ["joerg"], "non-ASCII substring across a space");
    assert_eq!(sorted(usernames(&stores, &sub("LLER")).await), ["joerg", "miller"], "suffix");
    assert!(usernames(&stores, &sub("ZZZ")).await.is_empty());
}

/// Several name criteria combine with AND by default and with OR when `names_or`.
pub async fn name_op_and_or(stores: Stores) {
    insert_named(&stores, "ab", None, Some("Anna"), Some("Berg")).await;
    insert_named(&stores, "ac", None, Some("Anna"), Some("Cole")).await;
    insert_named(&stores, "xb", None, Some("Xena"), Some("Berg")).await;
    insert_named(&stores, "xy", None, Some("Xena"), Some("Young")).await;
    let crit = [(NameField::FirstName, "ANNA"), (NameField::LastName, "BERG")];
    assert_eq!(usernames(&stores, &q_names(&crit, true, false)).await, ["ab"], "AND");
    assert_eq!(sorted(usernames(&stores, &q_names(&crit, true, true)).await), ["ab", "ac", "xb"], "OR");
    let crit = [(NameField::FirstName, "NN"), (NameField::LastName, "OL")];
    assert_eq!(usernames(&stores, &q_names(&crit, false, false)).await, ["ac"], "AND substring");
    assert_eq!(sorted(usernames(&stores, &q_names(&crit, false, true)).await), ["ab", "ac"], "OR substring");
}

/// The name result is AND-ed with the e-mail index, sign-up status and approval status.
pub async fn and_with_filters(stores: Stores) {
    let mut a = with_names(bare_user_record("a"), Some("Kim"), None, None);
    a.email_idx = Some("idx-1".to_owned());
    let mut b = with_names(bare_user_record("b"), Some("Kim"), None, None);
    b.email_idx = Some("idx-2".to_owned());
    b.sign_up_status = SignUpStatus::BeforeConfirmation;
    let mut c = with_names(bare_user_record("c"), Some("Kim"), None, None);
    c.email_idx = Some("idx-1".to_owned());
    c.approval_status = ApprovalStatus::BeforeDecision;
    let mut d = with_names(bare_user_record("d"), Some("Lee"), None, None);
    d.email_idx = Some("idx-1".to_owned());
    for u in [&a, &b, &c, &d] {
        insert_user(&stores, u).await;
    }
    let kim = q_names(&[(NameField::DisplayName, "KIM")], true, false);
    let q = UserQuery { email_idx: Some("idx-1".to_owned()), ..kim.clone() };
    assert_eq!(sorted(usernames(&stores, &q).await), ["a", "c"], "names AND email");
    let q = UserQuery { sign_up_status: Some(SignUpStatus::BeforeConfirmation), ..kim.clone() };
    assert_eq!(usernames(&stores, &q).await, ["b"], "names AND sign_up_status");
    let q = UserQuery { approval_status: Some(ApprovalStatus::Approved), ..kim.clone() };
    assert_eq!(sorted(usernames(&stores, &q).await), ["a", "b"], "names AND approval_status");
    let q = UserQuery {
        email_idx: Some("idx-1".to_owned()),
        sign_up_status: Some(SignUpStatus::Final),
        approval_status: Some(ApprovalStatus::Approved),
        ..Default::default()
    };
    assert_eq!(sorted(usernames(&stores, &q).await), ["a", "d"], "filters without names");
    let q = UserQuery { names_or: true, email_idx: Some("idx-2".to_owned()), ..kim };
    assert_eq!(usernames(&stores, &q).await, ["b"], "OR applies to names only, filters still AND");
}

/// `user_id` wins over every other criterion, then `username` (exact, case-sensitive) over the rest.
pub async fn precedence_user_id_username(stores: Stores) {
    let a = insert_named(&stores, "Alice", Some("Alpha"), None, None).await;
    let b = insert_named(&stores, "bob", Some("Beta"), None, None).await;
    let beta = q_names(&[(NameField::DisplayName, "BETA")], true, false);
    let q = UserQuery {
        user_id: Some(a.user_id.clone()),
        username: Some("bob".to_owned()),
        email_idx: Some("nothing-has-this".to_owned()),
        sign_up_status: Some(SignUpStatus::BeforeConfirmation),
        ..beta.clone()
    };
    assert_eq!(usernames(&stores, &q).await, ["Alice"], "user_id wins over everything");
    let q = UserQuery { user_id: Some(new_user_id()), username: Some("bob".to_owned()), ..Default::default() };
    assert!(
        usernames(&stores, &q).await.is_empty(),
        "an unknown user_id matches nothing even with a matching username"
    );
    let q = UserQuery {
        username: Some("Alice".to_owned()),
        approval_status: Some(ApprovalStatus::Rejected),
        ..beta.clone()
    };
    assert_eq!(usernames(&stores, &q).await, ["Alice"], "username wins over names and filters");
    let q = UserQuery { username: Some("alice".to_owned()), ..Default::default() };
    assert!(usernames(&stores, &q).await.is_empty(), "username is case-sensitive");
    let r = stores.users.search(&beta, 0, 10).await.unwrap().1;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].user_id, b.user_id, "names alone match by name");
}

/// Order: `display_name` with NULLs first, then `username`, strings compared byte-wise.
pub async fn order_bytewise_nulls_first(stores: Stores) {
    // Inserted out of order on purpose.
    insert_named(&stores, "émile", Some("Émile"), None, None).await;
    insert_named(&stores, "zed", Some("Zed"), None, None).await;
    insert_named(&stores, "null-b", None, None, None).await;
    insert_named(&stores, "lower", Some("alice"), None, None).await;
    insert_named(&stores, "Null-c", None, None, None).await;
    insert_named(&stores, "asa", Some("Åsa"), None, None).await;
    insert_named(&stores, "null-a", None, None, None).await;
    insert_named(&stores, "Zed2", Some("Zed"), None, None).await;
    insert_named(&stores, "zed1", Some("Zed"), None, None).await;
    insert_named(&stores, "upper", Some("Alice"), None, None).await;
    let r = usernames(&stores, &UserQuery::default()).await;
    assert_eq!(
        r,
        ["Null-c", "null-a", "null-b", "upper", "Zed2", "zed", "zed1", "lower", "asa", "émile"],
        "search order: display_name (NULL first) then username, byte-wise"
    );
}

/// `total` counts every match; pages are `offset .. offset + limit`; a page past the end is empty.
pub async fn totals_and_pages(stores: Stores) {
    for i in 0..7 {
        insert_named(&stores, &format!("user-{i}"), Some(&format!("Name {i}")), None, None).await;
    }
    insert_named(&stores, "other", Some("Other"), None, None).await;
    let q = q_names(&[(NameField::DisplayName, "NAME")], false, false);
    let mut seen = Vec::new();
    for (offset, len) in [(0u64, 3usize), (3, 3), (6, 1), (7, 0), (30, 0)] {
        let (total, page) = stores.users.search(&q, offset, 3).await.unwrap();
        assert_eq!(total, 7, "total at offset {offset}");
        assert_eq!(page.len(), len, "page length at offset {offset}");
        seen.extend(page.into_iter().map(|u| u.username));
    }
    let want: Vec<String> = (0..7).map(|i| format!("user-{i}")).collect();
    assert_eq!(seen, want, "pages are consecutive slices of the ordered result");
    let (total, page) = stores.users.search(&q, 0, 0).await.unwrap();
    assert_eq!((total, page.len()), (7, 0), "limit 0 counts without returning rows");
    let (total, page) =
        stores.users.search(&q_names(&[(NameField::DisplayName, "NOPE")], true, false), 0, 10).await.unwrap();
    assert_eq!((total, page.len()), (0, 0), "no match: total 0, empty page");
}

/// `%` and `_` in criteria are literal characters, never wildcards.
pub async fn wildcards_literal(stores: Stores) {
    insert_named(&stores, "percent", None, None, Some("100%")).await;
    insert_named(&stores, "hundred", None, None, Some("1000")).await;
    insert_named(&stores, "under", None, None, Some("A_B")).await;
    insert_named(&stores, "axb", None, None, Some("AXB")).await;
    insert_named(&stores, "back", None, None, Some("A\\B")).await;
    let sub = |v: &'static str| q_names(&[(NameField::LastName, v)], false, false);
    let exact = |v: &'static str| q_names(&[(NameField::LastName, v)], true, false);
    assert_eq!(usernames(&stores, &sub("%")).await, ["percent"], "% is literal in substring matching");
    assert_eq!(usernames(&stores, &sub("0%")).await, ["percent"]);
    assert_eq!(usernames(&stores, &sub("_")).await, ["under"], "_ is literal in substring matching");
    assert_eq!(usernames(&stores, &sub("A_")).await, ["under"]);
    assert_eq!(usernames(&stores, &exact("A_B")).await, ["under"], "_ is literal in exact matching");
    assert_eq!(usernames(&stores, &exact("100%")).await, ["percent"], "% is literal in exact matching");
    assert!(usernames(&stores, &exact("100_")).await.is_empty(), "_ matches no other character");
    assert_eq!(usernames(&stores, &sub("\\")).await, ["back"], "backslash is literal too");
}

/// No criteria: every user, whatever its approval and sign-up state.
pub async fn no_criteria_returns_all(stores: Stores) {
    let mut a = bare_user_record("approved");
    a.approval_status = ApprovalStatus::Approved;
    let mut b = bare_user_record("rejected");
    b.approval_status = ApprovalStatus::Rejected;
    let mut c = bare_user_record("waiting");
    c.sign_up_status = SignUpStatus::BeforeConfirmation;
    let mut d = user_record("locked");
    d.is_locked = true;
    for u in [&a, &b, &c, &d] {
        insert_user(&stores, u).await;
    }
    let r = usernames(&stores, &UserQuery::default()).await;
    assert_eq!(sorted(r), ["approved", "locked", "rejected", "waiting"]);
    let (total, page) = stores.users.search(&UserQuery::default(), 0, 2).await.unwrap();
    assert_eq!((total, page.len()), (4, 2));
}

/// Substring search follows every change: names set at insert, changed, cleared and the user
/// deleted; values of one, two and many characters; quotes and query-language words in a value
/// are plain text (backends with a name index keep it in step with the rows).
pub async fn substring_follows_changes(stores: Stores) {
    let a = insert_named(&stores, "ann", Some("Ann \"Q\" Smith-Jones"), Some("Ann"), Some("Smith-Jones")).await;
    let b = insert_named(&stores, "bob", Some("Bob AND OR NEAR*"), Some("Bob"), Some("Near")).await;
    let sub = |f: NameField, v: &str| q_names(&[(f, v)], false, false);
    assert_eq!(usernames(&stores, &sub(NameField::LastName, "JONES")).await, ["ann"]);
    assert_eq!(usernames(&stores, &sub(NameField::LastName, "H-J")).await, ["ann"], "punctuation inside");
    assert_eq!(usernames(&stores, &sub(NameField::DisplayName, "\"Q\"")).await, ["ann"], "quotes are text");
    assert_eq!(usernames(&stores, &sub(NameField::DisplayName, "AND OR")).await, ["bob"], "operators are text");
    assert_eq!(usernames(&stores, &sub(NameField::DisplayName, "NEAR*")).await, ["bob"]);
    assert_eq!(sorted(usernames(&stores, &sub(NameField::FirstName, "B")).await), ["bob"], "one character");
    assert_eq!(usernames(&stores, &sub(NameField::FirstName, "NN")).await, ["ann"], "two characters");
    assert!(usernames(&stores, &sub(NameField::FirstName, "JONES")).await.is_empty(), "another field");

    let mut tx = begin(&stores).await;
    let patch = UserPatch {
        last_name: Some(Some("Brown".into())),
        last_name_upper: Some(Some("BROWN".into())),
        first_name: Some(None),
        first_name_upper: Some(None),
        ..Default::default()
    };
    tx.update_user(&a.user_id, &patch).await.expect("update names");
    tx.commit().await.expect("commit");
    assert!(usernames(&stores, &sub(NameField::LastName, "JONES")).await.is_empty(), "old name gone");
    assert_eq!(usernames(&stores, &sub(NameField::LastName, "ROW")).await, ["ann"], "new name found");
    assert!(usernames(&stores, &sub(NameField::FirstName, "ANN")).await.is_empty(), "cleared name gone");

    let mut tx = begin(&stores).await;
    assert!(tx.delete_user(&b.user_id).await.expect("delete"));
    tx.commit().await.expect("commit");
    assert!(usernames(&stores, &sub(NameField::DisplayName, "AND OR")).await.is_empty(), "deleted user gone");
    let c = insert_named(&stores, "carl", Some("Carl"), Some("Carl"), Some("Near")).await;
    assert_eq!(usernames(&stores, &sub(NameField::LastName, "NEA")).await, ["carl"], "new user after a delete");
    assert_eq!(get_user(&stores, &c.user_id).await.username, "carl");
}
