//! Digests and constant-time comparison: SHA-256 for token storage, HMAC-SHA256 for the e-mail
//! blind index.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let out = Sha256::digest(data);
    let mut a = [0u8; 32];
    a.copy_from_slice(&out);
    a
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    if let Ok(mut mac) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        mac.update(data);
        a.copy_from_slice(&mac.finalize().into_bytes());
    }
    a
}

/// SHA-256 of the concatenation of `parts` (no intermediate buffer).
pub fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let mut a = [0u8; 32];
    a.copy_from_slice(&h.finalize());
    a
}

/// Constant-time equality of two byte strings (lengths are not secret). The differences are
/// OR-folded eight bytes at a time with no branch on the data, and the fold is compared with
/// `subtle` (one optimisation barrier for the whole comparison instead of one per byte).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (wa.remainder(), wb.remainder());
    let mut diff = 0u64;
    for (x, y) in wa.zip(wb) {
        let mut xw = [0u8; 8];
        let mut yw = [0u8; 8];
        xw.copy_from_slice(x);
        yw.copy_from_slice(y);
        diff |= u64::from_ne_bytes(xw) ^ u64::from_ne_bytes(yw);
    }
    for (x, y) in ta.iter().zip(tb) {
        diff |= u64::from(x ^ y);
    }
    bool::from(diff.ct_eq(&0))
}

/// Lower-case hex (one digit per nibble: `write!("{:02x}")` per byte cost ≈ 1 % of the
/// server under a verify load, where every request without a cid gets a fresh one).
pub fn hex(bytes: &[u8]) -> String {
    let digit = |n: u8| char::from_digit(u32::from(n), 16).unwrap_or('0');
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(digit(b >> 4));
        s.push(digit(b & 0x0f));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_value() {
        assert_eq!(hex(&sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn hex_of_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let want: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), want);
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        // Every length around the 8-byte words, a difference at every position.
        for len in 0..40usize {
            let a: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert!(ct_eq(&a, &a.clone()));
            for i in 0..len {
                let mut b = a.clone();
                b[i] ^= 0x80;
                assert!(!ct_eq(&a, &b), "len {len}, byte {i}");
            }
        }
        assert_eq!(sha256_parts(&[b"a", b"", b"bc"]), sha256(b"abc"));
    }
}
