//! RFC 4648 base32 (alphabet `A–Z2–7`) for TOTP keys, with the validation rules of spec/totp.md §5.

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Encodes bytes as upper-case base32 without padding.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buf: u32 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            let idx = ((buf >> bits) & 31) as usize;
            if let Some(c) = ALPHABET.get(idx) {
                out.push(char::from(*c));
            }
        }
    }
    if bits > 0 {
        let idx = ((buf << (5 - bits)) & 31) as usize;
        if let Some(c) = ALPHABET.get(idx) {
            out.push(char::from(*c));
        }
    }
    out
}

fn value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a')),
        b'2'..=b'7' => Some(u32::from(c - b'2') + 26),
        _ => None,
    }
}

/// Why a supplied key was refused. Never carries the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A character outside `A–Z a–z 2–7` (or misplaced `=`).
    #[error("TOTP key: a character outside the base32 alphabet")]
    Alphabet,
    /// Not 16..=128 characters, or an impossible base32 length.
    #[error("TOTP key: not 80..=640 bits of base32")]
    Length,
}

/// Validates a supplied TOTP key (spec/totp.md §5) and returns its stored form (upper case, no
/// padding) and its decoded bytes. Unused trailing bits are ignored.
pub fn parse_key(input: &str) -> Result<(String, Vec<u8>), KeyError> {
    if input.len() > 1024 {
        return Err(KeyError::Length);
    }
    let body = input.trim_end_matches('=');
    let padding = input.len() - body.len();
    if padding > 0 && !input.len().is_multiple_of(8) {
        return Err(KeyError::Alphabet);
    }
    if padding > 6 {
        return Err(KeyError::Alphabet);
    }
    let n = body.len();
    if !(16..=128).contains(&n) {
        return Err(KeyError::Length);
    }
    if !matches!(n % 8, 0 | 2 | 4 | 5 | 7) {
        return Err(KeyError::Length);
    }
    let mut out = Vec::with_capacity(n * 5 / 8);
    let mut buf: u32 = 0;
    let mut bits = 0u32;
    for &c in body.as_bytes() {
        let v = value(c).ok_or(KeyError::Alphabet)?;
        buf = ((buf << 5) | v) & 0xFFFF;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buf >> bits) & 0xFF) as u8);
        }
    }
    if !(10..=80).contains(&out.len()) {
        return Err(KeyError::Length);
    }
    Ok((body.to_ascii_uppercase(), out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn spec_vectors() {
        assert_eq!(encode(b"12345678901234567890"), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(encode(b"12345678901234567890123456789012"), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA");
        let (stored, bytes) = parse_key("JBSWY3DPEHPK3PXP").unwrap();
        assert_eq!(stored, "JBSWY3DPEHPK3PXP");
        assert_eq!(hex(&bytes), "48656c6c6f21deadbeef");
        let (_, bytes) = parse_key("KMCLCWN4YPMD2WO3").unwrap();
        assert_eq!(hex(&bytes), "5304b159bcc3d83d59db");
        let (_, bytes) = parse_key("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA").unwrap();
        assert_eq!(bytes, b"12345678901234567890123456789012");
    }

    #[test]
    fn lower_case_and_padding_normalise() {
        let (stored, _) = parse_key("jbswy3dpehpk3pxp").unwrap();
        assert_eq!(stored, "JBSWY3DPEHPK3PXP");
        let (stored, bytes) = parse_key("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA====").unwrap();
        assert_eq!(stored.len(), 52);
        assert_eq!(bytes.len(), 32);
    }

    #[test]
    fn spec_rejections() {
        for bad in [
            "!!!!",
            "JBSWY3DP",
            "GEZD GNBV GY3T QOJQ",
            "GEZDGNBVGY3TQOJ1",
            "GEZDGNBVGY3TQOJQ\n",
            "GEZDGNBVGY3TQOJQ=",
            "GEZDGNBVGY3TQOJQG",
            "",
        ] {
            assert!(parse_key(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_key(&"A".repeat(10_000)).is_err());
        assert!(parse_key(&"A".repeat(129)).is_err());
        assert!(parse_key(&"A".repeat(128)).is_ok());
    }

    #[test]
    fn round_trip() {
        for len in 10..=80usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let enc = encode(&bytes);
            let (_, dec) = parse_key(&enc).unwrap();
            assert_eq!(dec, bytes);
        }
    }
}
