//! The conformance suite run against the memory stores.
