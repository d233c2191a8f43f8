//! The `sso` binary: see `sso --help` and spec/cli.md.

fn main() {
    std::process::exit(sso_http::cli::main());
}
