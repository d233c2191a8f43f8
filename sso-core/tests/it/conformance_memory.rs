//! The conformance suite run against the memory stores.

use sso_core::store::Stores;

async fn fresh() -> Stores {
    sso_core::memory::stores()
}

sso_core::conformance_tests!(fresh);

mod sinks {
    use std::sync::Arc;

    use sso_core::conformance::audit::AuditFixture;

    async fn fresh() -> AuditFixture {
        AuditFixture {
            stores: sso_core::memory::stores(),
            sink: Arc::new(sso_core::audit::MemoryAuditSink::new()),
            colocated: false,
            ages_out: true,
        }
    }

    sso_core::audit_conformance_tests!(fresh);
}
