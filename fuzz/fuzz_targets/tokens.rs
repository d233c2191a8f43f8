//! Token, id, key, code, time and envelope parsing: never a panic, and what parses round-trips.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sso_core::crypto::aead::{self, KeyRing};
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
});
