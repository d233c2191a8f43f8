use sso_core::testing::Fixture;
#[tokio::test] async fn smoke() { let f = Fixture::memory().await; let (_id, _ust) = f.user_with_session("alice", false).await; }
