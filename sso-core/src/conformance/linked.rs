//! `linked`: linked external principals (`UserTx` link writes, `LinkedAuthStore` reads).

use super::*;

async fn user(stores: &Stores, name: &str) -> UserId {
    let u = bare_user_record(name);
    insert_user(stores, &u).await;
    u.user_id
}

async fn try_insert_link(stores: &Stores, link: &LinkedAuthRecord) -> StoreResult<()> {
    let mut tx = stores.users.begin().await?;
    tx.insert_link(link).await?;
    tx.commit().await
}

async fn insert_link(stores: &Stores, link: &LinkedAuthRecord) {
    try_insert_link(stores, link).await.unwrap_or_else(|e| panic!("insert_link: {e}"));
}

async fn delete_link(stores: &Stores, user: &UserId, auth_type: &str, auth_username: &str) -> Option<AuthId> {
    let mut tx = begin(stores).await;
    let r = tx.delete_link(user, auth_type, auth_username).await.expect("delete_link");
    tx.commit().await.expect("commit");
    r
}

/// A principal (`auth_type`, `auth_username`) links to one user only:
/// `Conflict { what: "principal" }` for a second link; other types or names are free.
pub async fn principal_unique(stores: Stores) {
    let a = user(&stores, "link-a").await;
    let b = user(&stores, "link-b").await;
    let first = link_record(&a, "basic_auth", "ext-ü", 0);
    insert_link(&stores, &first).await;
    let dup = link_record(&b, "basic_auth", "ext-ü", 1);
    assert_conflict(try_insert_link(&stores, &dup).await, "principal", "second link of one principal");
    let same_user_dup = link_record(&a, "basic_auth", "ext-ü", 2);
    assert_conflict(try_insert_link(&stores, &same_user_dup).await, "principal", "same principal twice for one user");
    assert_eq!(
        stores.links.get_link("basic_auth", "ext-ü").await.unwrap(),
        Some(first.clone()),
        "the first link is kept"
    );
    assert!(stores.links.list_links(&b).await.unwrap().is_empty(), "a refused link is not written");
    insert_link(&stores, &link_record(&b, "oidc.google", "ext-ü", 3)).await;
    insert_link(&stores, &link_record(&b, "basic_auth", "ext-ü-2", 4)).await;
    assert_eq!(stores.links.list_links(&b).await.unwrap().len(), 2);
}

/// `delete_link` returns the deleted link's id, then `None`; the principal can be linked again.
pub async fn delete_returns_id(stores: Stores) {
    let a = user(&stores, "del-a").await;
    let l = link_record(&a, "oidc.github", "octo", 0);
    let other = link_record(&a, "oidc.github", "cat", 1);
    insert_link(&stores, &l).await;
    insert_link(&stores, &other).await;
    assert_eq!(delete_link(&stores, &a, "oidc.github", "octo").await, Some(l.auth_id.clone()), "delete returns the id");
    assert!(stores.links.get_link("oidc.github", "octo").await.unwrap().is_none(), "the link is gone");
    assert_eq!(stores.links.list_links(&a).await.unwrap(), vec![other.clone()], "other links kept");
    assert_eq!(delete_link(&stores, &a, "oidc.github", "octo").await, None, "second delete returns None");
    assert_eq!(delete_link(&stores, &a, "nothing", "here").await, None, "unknown principal");
    insert_link(&stores, &link_record(&a, "oidc.github", "octo", 2)).await;
    // A dropped transaction deletes nothing.
    let mut tx = begin(&stores).await;
    assert!(tx.delete_link(&a, "oidc.github", "cat").await.unwrap().is_some());
    drop(tx);
    assert!(stores.links.get_link("oidc.github", "cat").await.unwrap().is_some(), "rolled-back delete");
}

/// `delete_link` of another user's principal returns `None` and keeps the link.
pub async fn delete_other_users_link(stores: Stores) {
    let a = user(&stores, "owner").await;
    let b = user(&stores, "thief").await;
    let l = link_record(&a, "basic_auth", "shared-name", 0);
    insert_link(&stores, &l).await;
    assert_eq!(delete_link(&stores, &b, "basic_auth", "shared-name").await, None, "another user's link is not deleted");
    assert_eq!(stores.links.get_link("basic_auth", "shared-name").await.unwrap(), Some(l), "the link is kept");
}

/// `list_links` returns the user's links only, oldest first, with every field; `get_link` finds
/// a link by its principal.
pub async fn list_by_user(stores: Stores) {
    let a = user(&stores, "lister").await;
    let b = user(&stores, "other").await;
    let mut l1 = link_record(&a, "oidc.google", "a@example.org", 1_000_001);
    let l2 = link_record(&a, "basic_auth", "a", 5);
    let l3 = link_record(&a, "oidc.github", "ä", 2_000_002);
    l1.is_active = false;
    let lb = link_record(&b, "basic_auth", "b", 0);
    for l in [&l1, &lb, &l3, &l2] {
        insert_link(&stores, l).await;
    }
    assert_eq!(stores.links.list_links(&a).await.unwrap(), vec![l2.clone(), l1.clone(), l3.clone()], "oldest first");
    assert_eq!(stores.links.list_links(&b).await.unwrap(), vec![lb.clone()]);
    assert!(stores.links.list_links(&new_user_id()).await.unwrap().is_empty());
    assert_eq!(stores.links.get_link("oidc.google", "a@example.org").await.unwrap(), Some(l1), "get_link round trip");
    assert_eq!(stores.links.get_link("oidc.github", "ä").await.unwrap(), Some(l3));
    assert!(stores.links.get_link("oidc.github", "a").await.unwrap().is_none(), "type and name together");
}
