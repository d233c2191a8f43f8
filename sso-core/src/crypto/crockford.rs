//! Crockford base32 as the spec uses it for ids and tokens: alphabet
//! `0123456789abcdefghjkmnpqrstvwxyz` (lower case, no `i l o u`), most-significant bits first,
//! left-padded with zero bits to a whole number of characters, no check symbol.

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Whether each byte is a character of [`ALPHABET`] (a table: this runs on every UST and id).
// Indexing in a const block: an out-of-range index would fail the build, never run.
#[allow(clippy::indexing_slicing)]
const VALID: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        t[ALPHABET[i] as usize] = true;
        i += 1;
    }
    t
};

/// Encodes `bytes` into exactly `ceil(8 * len / 5)` characters.
pub fn encode(bytes: &[u8]) -> String {
    let bits = bytes.len() * 8;
    let chars = bits.div_ceil(5);
    let mut out = String::with_capacity(chars);
    // A bit accumulator that starts with the `pad` leading zero bits; at most 4 + 8 bits wait in it.
    let mut acc: u32 = 0;
    let mut held = chars * 5 - bits;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        held += 8;
        while held >= 5 {
            held -= 5;
            let v = (acc >> held) & 31;
            if let Some(ch) = ALPHABET.get(v as usize) {
                out.push(char::from(*ch));
            }
        }
        acc &= (1 << held) - 1;
    }
    out
}

/// The character of a five-bit value (`v & 31`).
pub(crate) fn char_of(v: u8) -> u8 {
    ALPHABET.get(usize::from(v & 31)).copied().unwrap_or(b'0')
}

/// Whether every character of `s` is in the (lower-case) alphabet.
pub fn is_alphabet(s: &str) -> bool {
    s.bytes().all(|b| VALID.get(usize::from(b)).copied().unwrap_or(false))
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
        assert!(is_alphabet(std::str::from_utf8(ALPHABET).unwrap()));
        assert!(!is_alphabet("ILOU") && !is_alphabet("é") && is_alphabet(""));
    }

    /// The accumulator encoder agrees with a bit-by-bit reference on every length and many values.
    #[test]
    fn encode_matches_the_bitwise_reference() {
        fn reference(bytes: &[u8]) -> String {
            let bits = bytes.len() * 8;
            let chars = bits.div_ceil(5);
            let pad = chars * 5 - bits;
            let bit = |i: usize| if i < pad { 0 } else { (bytes[(i - pad) / 8] >> (7 - ((i - pad) % 8))) & 1 };
            (0..chars)
                .map(|c| {
                    let v = (0..5).fold(0usize, |v, k| (v << 1) | usize::from(bit(c * 5 + k)));
                    char::from(ALPHABET[v])
                })
                .collect()
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..40 {
            for _ in 0..20 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                assert_eq!(encode(&bytes), reference(&bytes), "{bytes:?}");
            }
        }
    }
}
