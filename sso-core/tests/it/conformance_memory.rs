//! The conformance suite run against the memory stores.

use sso_core::store::Stores;

async fn fresh() -> Stores {
    sso_core::memory::stores()
}

sso_core::conformance_tests!(fresh);
