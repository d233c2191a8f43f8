//! Crockford base32 as the spec uses it for ids and tokens: alphabet
//! `0123456789abcdefghjkmnpqrstvwxyz` (lower case, no `i l o u`), most-significant bits first,
//! left-padded with zero bits to a whole number of characters, no check symbol.

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Encodes `bytes` into exactly `ceil(8 * len / 5)` characters.
pub fn encode(bytes: &[u8]) -> String {
    let bits = bytes.len() * 8;
    let chars = bits.div_ceil(5);
    let pad = chars * 5 - bits;
    let mut out = String::with_capacity(chars);
    // A bit cursor over `pad` leading zero bits followed by `bytes`.
    let bit_at = |i: usize| -> u8 {
        if i < pad {
            return 0;
        }
        let j = i - pad;
        bytes.get(j / 8).map_or(0, |b| (b >> (7 - (j % 8))) & 1)
    };
    for c in 0..chars {
        let mut v = 0usize;
        for k in 0..5 {
            v = (v << 1) | usize::from(bit_at(c * 5 + k));
        }
        if let Some(ch) = ALPHABET.get(v) {
            out.push(char::from(*ch));
        }
    }
    out
}

/// Whether every character of `s` is in the (lower-case) alphabet.
pub fn is_alphabet(s: &str) -> bool {
    s.bytes().all(|b| ALPHABET.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_the_spec() {
        assert_eq!(encode(&[0u8; 16]).len(), 26);
        assert_eq!(encode(&[0u8; 32]).len(), 52);
        assert_eq!(encode(&[0u8; 20]).len(), 32);
    }

    #[test]
    fn msb_first_left_padded() {
        assert_eq!(encode(&[0xff]), "7z");
        assert_eq!(encode(&[0x00, 0x01]), "0001");
        assert_eq!(encode(&[0xff; 5]), "zzzzzzzz");
        assert!(is_alphabet(&encode(&[0xab; 32])));
        assert!(!is_alphabet("zusr"));
    }
}
