//! `cargo xtask`: the project's automation (CI, benchmarks, fuzzing).
fn main() {}
