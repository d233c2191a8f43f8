//! Token, id, key, code, time, envelope, PHC-string, otpauth-URI and audit-line parsing: never a
//! panic, and what parses round-trips.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sso_core::audit::AuditRecord;
use sso_core::crypto::aead::{self, KeyRing};
use sso_core::crypto::{password, totp};
use sso_core::ids::{AuthId, Cid, RemoteAddr, SessionId, UserId};
use sso_core::secret::{TotpKey, Ust};
use sso_core::time::Timestamp;

static RING: LazyLock<KeyRing> = LazyLock::new(|| KeyRing::generate(Timestamp::from_secs(1_795_773_600)).unwrap());

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(id) = UserId::parse(s) {
        assert_eq!(id.as_str(), s);
    }
    if let Some(id) = SessionId::parse(s) {
        assert_eq!(id.as_str(), s);
    }
    let _ = AuthId::parse(s);
    if let Some(c) = Cid::parse(s) {
        assert_eq!(c.as_str(), s);
    }
    let _ = RemoteAddr::parse(s);
    let _ = Ust::new(s).is_well_formed();
    if let Ok(k) = TotpKey::parse(s) {
        let again = TotpKey::parse(k.expose_base32()).unwrap();
        assert_eq!(again.expose_bytes(), k.expose_bytes(), "a parsed key re-parses to itself");
    }
    if let Some(t) = Timestamp::parse(s) {
        let _ = t.to_zato();
    }
    let _ = aead::envelope_key_id(s);
    assert!(RING.decrypt("sso/v1/user/zusr/totp_key", s).is_err(), "an envelope nobody made never opens");
    let _ = KeyRing::from_toml(s);
    // TOTP codes: the format check and the constant-time window match never panic.
    if totp::is_well_formed_code(s) {
        let _ = totp::match_step(b"12345678901234567890", s, 59_000_000, 2, 2);
    }
    // PHC / passlib strings are parsed (and their parameters capped) before any hashing work.
    let _ = password::is_current(s, password::HashParams::DEFAULT);
    // otpauth URIs from arbitrary labels stay one URI.
    let mid = (0..=s.len() / 2).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    let (issuer, account) = s.split_at(mid);
    let uri = totp::otpauth_uri(issuer, account, "JBSWY3DPEHPK3PXP");
    assert!(uri.starts_with("otpauth://totp/") && !uri.contains(['\n', '\r', ' ', '#']), "{uri}");
    // Audit lines: what decodes re-encodes to a line that decodes to the same record.
    if let Some(rec) = AuditRecord::from_json_line(s) {
        let line = rec.to_json_line();
        assert!(!line.contains(['\n', '\r', '\u{2028}', '\u{2029}', '\u{85}']), "one line");
        assert_eq!(AuditRecord::from_json_line(&line).as_ref(), Some(&rec));
    }
});
