//! sso-store-sqlite tests: the sso-core conformance suite, unchanged, plus SQLite specifics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

use sso_core::store::Stores;
use sso_core::testing::Fixture;
use sso_store_sqlite::{SqliteOptions, SqliteStore};

/// A fresh database in a temporary directory (kept alive for the process).
async fn fresh_store() -> SqliteStore {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.keep().join("sso.db");
    let store = SqliteStore::open(&format!("sqlite://{}", path.display()), &SqliteOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    store
}

async fn fresh() -> Stores {
    fresh_store().await.stores()
}

sso_core::conformance_tests!(fresh);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_login_and_reset_over_sqlite() {
    let f = Fixture::with(fresh().await, |_| {}).await;
    let (id, ust) = f.user_with_session("alice", false).await;
    let key = f.sso.user().reset_totp_key(&f.as_user(&ust), None, None, Some("Phone")).await.unwrap().unwrap();
    let view = f.sso.user().get_current_user(&f.as_user(&ust), true).await.unwrap();
    assert_eq!(view.totp_label, "Phone");
    assert_eq!(view.admin.unwrap().user_id, id);
    assert_eq!(key.expose_base32().len(), 32);
}

#[tokio::test]
async fn migrations_are_idempotent_and_listed() {
    let s = fresh_store().await;
    s.migrate().await.unwrap();
    assert!(s.pending_migrations().await.unwrap().is_empty());
}

mod sinks {
    use std::sync::Arc;

    use sso_core::conformance::audit::AuditFixture;

    /// The sql sink in the users database (the embedded default): records share transactions.
    async fn fresh() -> AuditFixture {
        let store = super::fresh_store().await.with_audit_table("sso_audit");
        let sink = sso_store_sqlite::SqlAuditSink::open(store.clone(), "sso_audit", true).await.unwrap();
        AuditFixture { stores: store.stores(), sink: Arc::new(sink), colocated: true, ages_out: true }
    }

    sso_core::audit_conformance_tests!(fresh);
}
