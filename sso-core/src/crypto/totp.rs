//! RFC 4226 HOTP / RFC 6238 TOTP codes (via `totp-rs`), the verification window with
//! constant-time comparison, and the `otpauth://` enrolment URI (spec/totp.md §1, §3, §7).
//!
//! The product profile is fixed: HMAC-SHA1, 6 digits, 30-second step, T0 = 0. SHA-256/512 and 7–8
//! digits exist as library functions for the RFC vectors.

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder};
use zeroize::Zeroizing;

/// The TOTP step in seconds.
pub const STEP_SECS: u64 = 30;

/// The HMAC used by a code generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// HMAC-SHA1 (the product profile).
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl Hash {
    fn algorithm(self) -> Algorithm {
        match self {
            Hash::Sha1 => Algorithm::SHA1,
            Hash::Sha256 => Algorithm::SHA256,
            Hash::Sha512 => Algorithm::SHA512,
        }
    }
}

/// The HOTP code for `counter` (RFC 4226), `digits` ∈ 6..=8, zero-padded.
pub fn hotp(key: &[u8], counter: u64, hash: Hash, digits: u8) -> Zeroizing<String> {
    let digits = digits.clamp(6, 8);
    // A step of one second turns `generate(time)` into HOTP with counter = time.
    let t = Builder::new()
        .with_algorithm(hash.algorithm())
        .with_digits(digits)
        .with_secret(key.to_vec())
        .with_step_duration(1)
        .with_skew(0)
        .build_noncompliant();
    Zeroizing::new(t.generate(counter).to_string())
}

/// RFC 4226 §5.3 dynamic truncation of an HMAC value: the offset is the low 4 bits of the **last**
/// byte (whatever the hash), and the result is the 31-bit integer read big-endian at that offset.
/// `None` when the HMAC is too short. (`hotp` gets the same step from `totp-rs`; this exposes it so
/// the truncation vector of spec/totp.md §8 can be reproduced on its own.)
pub fn truncate(hmac: &[u8]) -> Option<u32> {
    let offset = usize::from(hmac.last()? & 0x0f);
    let bytes: [u8; 4] = hmac.get(offset..offset.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes) & 0x7fff_ffff)
}

/// The time counter `T = floor(unix_seconds / 30)`.
pub fn step_of(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// The TOTP code at `unix_secs` (RFC 6238, T0 = 0, 30 s).
pub fn totp_at(key: &[u8], unix_secs: u64, hash: Hash, digits: u8) -> Zeroizing<String> {
    hotp(key, step_of(unix_secs), hash, digits)
}

/// The product-profile code (SHA1, 6 digits) for `step`.
pub fn code_for_step(key: &[u8], step: u64) -> Zeroizing<String> {
    hotp(key, step, Hash::Sha1, 6)
}

/// Whether `code` has the only accepted syntax: exactly six ASCII digits.
pub fn is_well_formed_code(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

/// Checks `code` against every step of `now_step - back ..= now_step + ahead`, comparing each in
/// constant time with no early exit, and returns the highest matching step.
/// A malformed code returns `None` without computing anything.
pub fn match_step(key: &[u8], code: &str, now_step: u64, back: u8, ahead: u8) -> Option<u64> {
    if !is_well_formed_code(code) {
        return None;
    }
    let first = now_step.saturating_sub(u64::from(back));
    let last = now_step.saturating_add(u64::from(ahead));
    let mut matched: Option<u64> = None;
    for step in first..=last {
        let candidate = code_for_step(key, step);
        let eq: bool = candidate.as_bytes().ct_eq(code.as_bytes()).into();
        if eq {
            matched = Some(step);
        }
    }
    matched
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `otpauth://totp/<issuer>:<account>?secret=<KEY>&issuer=<issuer>`, issuer and account
/// percent-encoded; `algorithm`, `digits` and `period` omitted (they are the defaults).
pub fn otpauth_uri(issuer: &str, account: &str, key_base32: &str) -> String {
    let i = percent_encode(issuer);
    format!("otpauth://totp/{i}:{}?secret={key_base32}&issuer={i}", percent_encode(account))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K20: &[u8] = b"12345678901234567890";
    const K32: &[u8] = b"12345678901234567890123456789012";
    const K64: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    #[test]
    fn rfc4226_hotp_table() {
        let expected =
            ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"];
        for (c, e) in expected.iter().enumerate() {
            assert_eq!(hotp(K20, c as u64, Hash::Sha1, 6).as_str(), *e, "counter {c}");
        }
    }

    #[test]
    fn rfc6238_all_three_algorithms() {
        let rows: [(u64, &str, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936", "287082"),
            (1111111109, "07081804", "68084774", "25091201", "081804"),
            (1111111111, "14050471", "67062674", "99943326", "050471"),
            (1234567890, "89005924", "91819424", "93441116", "005924"),
            (2000000000, "69279037", "90698825", "38618901", "279037"),
            (20000000000, "65353130", "77737706", "47863826", "353130"),
        ];
        for (t, s1, s256, s512, six) in rows {
            assert_eq!(totp_at(K20, t, Hash::Sha1, 8).as_str(), s1, "sha1 {t}");
            assert_eq!(totp_at(K32, t, Hash::Sha256, 8).as_str(), s256, "sha256 {t}");
            assert_eq!(totp_at(K64, t, Hash::Sha512, 8).as_str(), s512, "sha512 {t}");
            assert_eq!(totp_at(K20, t, Hash::Sha1, 6).as_str(), six, "profile {t}");
        }
        // Negative control: SHA256 with the 20-byte key.
        assert_eq!(totp_at(K20, 59, Hash::Sha256, 8).as_str(), "32247374");
    }

    #[test]
    fn step_boundaries() {
        assert_eq!(step_of(29), 0);
        assert_eq!(step_of(30), 1);
        assert_eq!(step_of(59), 1);
        assert_eq!(step_of(60), 2);
        assert_eq!(step_of(1111111109), 37037036);
    }

    #[test]
    fn zato_test_key() {
        let (_, key) = crate::crypto::base32::parse_key("KMCLCWN4YPMD2WO3").unwrap();
        for (t, code) in [(59, "091507"), (1111111109, "771955"), (1234567890, "940889"), (2000000000, "138287")] {
            assert_eq!(totp_at(&key, t, Hash::Sha1, 6).as_str(), code);
        }
    }

    #[test]
    fn window_table() {
        let t = step_of(1111111109);
        let cases = [("150727", t - 2), ("731029", t - 1), ("081804", t), ("050471", t + 1)];
        for (code, step) in cases {
            assert_eq!(code_for_step(K20, step).as_str(), code);
        }
        // default: back 1, ahead 0
        assert_eq!(match_step(K20, "150727", t, 1, 0), None);
        assert_eq!(match_step(K20, "731029", t, 1, 0), Some(t - 1));
        assert_eq!(match_step(K20, "081804", t, 1, 0), Some(t));
        assert_eq!(match_step(K20, "050471", t, 1, 0), None);
        // back 0
        assert_eq!(match_step(K20, "731029", t, 0, 0), None);
        assert_eq!(match_step(K20, "081804", t, 0, 0), Some(t));
        // ahead 1
        assert_eq!(match_step(K20, "731029", t, 1, 1), Some(t - 1));
        assert_eq!(match_step(K20, "050471", t, 1, 1), Some(t + 1));
        assert_eq!(match_step(K20, "150727", t, 1, 1), None);
    }

    #[test]
    fn malformed_codes_never_match() {
        let t = step_of(1111111109);
        for bad in ["81804", " 081804", "081804\n", "+81804", "０８１８０４", "0818045", ""] {
            assert_eq!(match_step(K20, bad, t, 2, 2), None, "{bad:?}");
        }
    }

    #[test]
    fn enrolment_uri_example() {
        assert_eq!(
            otpauth_uri("ACME Co", "john.doe@email.com", "HXDMVJECJJWSRB3HWIZR4IFUGFTMXBOZ"),
            "otpauth://totp/ACME%20Co:john.doe@email.com?secret=HXDMVJECJJWSRB3HWIZR4IFUGFTMXBOZ&issuer=ACME%20Co"
        );
    }
}
