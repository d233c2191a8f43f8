//! The example runs in CI: it must keep working as the API evolves.
#![allow(clippy::unwrap_used, missing_docs)]

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_walkthrough() {
    let dir = tempfile::tempdir().unwrap();
    let r = sso_example_embedded::run(&dir.path().join("sso.db")).await.unwrap();
    assert_eq!(r.generated_key_len, 32);
    assert!(!r.supplied_key_returned);
    assert!(r.login_with_new_key);
    assert!(r.audit_records >= 7);
}
