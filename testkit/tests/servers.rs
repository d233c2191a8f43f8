//! The kit starts and stops real servers.
#![allow(clippy::unwrap_used, missing_docs)]

#[test]
fn postgres_starts_stops_and_restarts() {
    let mut pg = sso_testkit::PgServer::start().unwrap();
    pg.create_db("probe").unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_ok());
    pg.stop_immediate().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_err());
    pg.start_again().unwrap();
    pg.create_db("probe2").unwrap();
}
