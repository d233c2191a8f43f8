//! The `sso` binary: see `sso --help` and spec/cli.md.

/// mimalloc instead of glibc malloc: the request paths allocate many small, short-lived
/// buffers, which glibc serves slower and, with one arena per thread, returns to the OS late
/// (RSS grew to ~0.5 GiB after a burst of argon2id logins). See BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(sso_http::cli::main());
}
