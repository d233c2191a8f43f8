//! The whole conformance suite (spec/storage.md §2) against the custom store: the proof that a
//! backend written outside `sso-core`, against its public traits only, is a first-class backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

sso_core::conformance_tests!(sso_example_custom_store::stores_async);

#[test]
fn runs_every_case() {
    // Every group is listed above, so every case of the suite runs here.
    assert!(!sso_core::conformance::CASES.is_empty());
    assert_eq!(sso_core::conformance::GROUPS.len(), 8);
}
