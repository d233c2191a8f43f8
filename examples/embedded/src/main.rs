//! `cargo run -p sso-example-embedded [db-path]`: the embedding walk-through on a SQLite file.

#[tokio::main]
#[allow(clippy::print_stdout)] // printing the report is what this example is for
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "embedded-example.db".into());
    let report = sso_example_embedded::run(std::path::Path::new(&path)).await?;
    println!("{report:#?}");
    Ok(())
}
