//! The conformance suite (spec/storage.md §2). Filled by the conformance work.
