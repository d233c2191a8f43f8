//! Password hashing: argon2id PHC strings (new hashes) and verification of Zato's passlib
//! `$pbkdf2-sha512$…` hashes (spec/users.md §5 "Hashing").
//!
//! Stored-hash parameters are parsed here, by hand, so that a hash above a cap fails without any
//! work being done (security.md item 33).

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use crate::crypto::digest::ct_eq;

/// Caps on parameters read from a stored hash.
pub const MAX_ARGON2_M_KIB: u32 = 262_144;
/// See [`MAX_ARGON2_M_KIB`].
pub const MAX_ARGON2_T: u32 = 20;
/// See [`MAX_ARGON2_M_KIB`].
pub const MAX_ARGON2_P: u32 = 16;
/// See [`MAX_ARGON2_M_KIB`].
pub const MAX_PBKDF2_ROUNDS: u32 = 2_000_000;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Parallelism.
    pub p: u32,
}

impl HashParams {
    /// The spec's minimum (and default): m = 19 456 KiB, t = 2, p = 1.
    pub const DEFAULT: HashParams = HashParams { m_kib: 19_456, t: 2, p: 1 };

    /// Whether these are below the recommended minimum.
    pub fn is_weak(&self) -> bool {
        self.m_kib < 19_456 || self.t < 2
    }
}

/// NFKC normalisation of a password (what argon2id hashes are computed over).
pub fn normalize(password: &str) -> Zeroizing<String> {
    Zeroizing::new(password.nfkc().collect())
}

/// argon2id working memories kept for reuse (at most this many; one per concurrent hash).
const KEEP_WORKSPACES: usize = 8;

/// argon2id working memories (`m_kib` blocks of 1 KiB) reused between hashes: allocating and
/// faulting in ~19 MiB of fresh pages per login cost ≈ 20 % of a hash's time, and freed blocks
/// spread over the blocking threads' heaps. The hasher's semaphore bounds how many are in use.
/// Each run overwrites every block it reads, so reuse leaks nothing between hashes.
static WORKSPACES: std::sync::Mutex<Vec<Vec<argon2::Block>>> = std::sync::Mutex::new(Vec::new());

/// Runs argon2id `a` into `out` on a pooled working memory.
fn argon2id_into(a: &Argon2<'_>, params: &Params, pwd: &[u8], salt: &[u8], out: &mut [u8]) -> argon2::Result<()> {
    let mut blocks = WORKSPACES.lock().ok().and_then(|mut v| v.pop()).unwrap_or_default();
    blocks.resize(params.block_count(), argon2::Block::default());
    let r = a.hash_password_into_with_memory(pwd, salt, out, &mut blocks[..]);
    if let Ok(mut v) = WORKSPACES.lock()
        && v.len() < KEEP_WORKSPACES
    {
        v.push(blocks);
    }
    r
}

/// Hashes `password` (already NFKC-normalised) with argon2id and a fresh 16-byte salt, returning
/// the PHC string `$argon2id$v=19$m=…,t=…,p=…$salt$hash`.
pub fn hash_argon2id(normalized: &[u8], params: HashParams, salt: &[u8; 16]) -> Option<String> {
    let p = Params::new(params.m_kib, params.t, params.p, Some(32)).ok()?;
    let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, p.clone());
    let mut out = Zeroizing::new([0u8; 32]);
    argon2id_into(&a, &p, normalized, salt, out.as_mut()).ok()?;
    Some(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_kib,
        params.t,
        params.p,
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out.as_ref())
    ))
}

/// The result of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The password matches; `rehash` is true when the stored hash is PBKDF2 or uses other argon2
    /// parameters than the configured ones.
    Match {
        /// Whether to store a fresh hash.
        rehash: bool,
    },
    /// The password does not match.
    Mismatch,
    /// The stored hash cannot be used (unknown scheme, malformed, above a cap). Counts as a mismatch.
    Unusable,
}

/// A parsed stored hash.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stored {
    Argon2id { params: HashParams, salt: Vec<u8>, hash: Vec<u8> },
    Pbkdf2Sha512 { rounds: u32, salt: Vec<u8>, hash: Vec<u8> },
}

fn ab64_decode(s: &str) -> Option<Vec<u8>> {
    // passlib's "adapted base64": standard alphabet with `.` for `+`, no padding.
    let std: String = s.chars().map(|c| if c == '.' { '+' } else { c }).collect();
    STANDARD_NO_PAD.decode(std.trim_end_matches('=')).ok()
}

fn parse(stored: &str) -> Option<Stored> {
    let mut parts = stored.split('$');
    if !parts.next()?.is_empty() {
        return None;
    }
    match parts.next()? {
        "argon2id" => {
            let v = parts.next()?;
            if v != "v=19" {
                return None;
            }
            let mut m = None;
            let mut t = None;
            let mut p = None;
            for kv in parts.next()?.split(',') {
                let (k, val) = kv.split_once('=')?;
                let n: u32 = val.parse().ok()?;
                match k {
                    "m" => m = Some(n),
                    "t" => t = Some(n),
                    "p" => p = Some(n),
                    _ => return None,
                }
            }
            let salt = STANDARD_NO_PAD.decode(parts.next()?).ok()?;
            let hash = STANDARD_NO_PAD.decode(parts.next()?).ok()?;
            if parts.next().is_some() {
                return None;
            }
            Some(Stored::Argon2id { params: HashParams { m_kib: m?, t: t?, p: p? }, salt, hash })
        }
        "pbkdf2-sha512" => {
            let rounds: u32 = parts.next()?.parse().ok()?;
            let salt = ab64_decode(parts.next()?)?;
            let hash = ab64_decode(parts.next()?)?;
            if parts.next().is_some() {
                return None;
            }
            Some(Stored::Pbkdf2Sha512 { rounds, salt, hash })
        }
        _ => None,
    }
}

/// Verifies `password` against a stored PHC / passlib string. argon2id hashes are checked against
/// the NFKC-normalised password, PBKDF2 hashes against the raw password (as Zato hashed it).
/// This is the expensive call: run it on a blocking thread.
pub fn verify(stored: &str, password: &str, configured: HashParams) -> Verdict {
    let Some(parsed) = parse(stored) else {
        return Verdict::Unusable;
    };
    match parsed {
        Stored::Argon2id { params, salt, hash } => {
            if params.m_kib > MAX_ARGON2_M_KIB
                || params.t > MAX_ARGON2_T
                || params.p > MAX_ARGON2_P
                || !(4..=64).contains(&hash.len())
                || salt.len() < 8
            {
                return Verdict::Unusable;
            }
            let Ok(p) = Params::new(params.m_kib, params.t, params.p, Some(hash.len())) else {
                return Verdict::Unusable;
            };
            let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, p.clone());
            let normalized = normalize(password);
            let mut out = Zeroizing::new(vec![0u8; hash.len()]);
            if argon2id_into(&a, &p, normalized.as_bytes(), &salt, &mut out).is_err() {
                return Verdict::Unusable;
            }
            if ct_eq(&out, &hash) {
                Verdict::Match { rehash: params != configured || hash.len() != 32 }
            } else {
                Verdict::Mismatch
            }
        }
        Stored::Pbkdf2Sha512 { rounds, salt, hash } => {
            if rounds == 0 || rounds > MAX_PBKDF2_ROUNDS || hash.len() != 64 {
                return Verdict::Unusable;
            }
            let mut out = Zeroizing::new([0u8; 64]);
            pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password.as_bytes(), &salt, rounds, out.as_mut());
            if ct_eq(out.as_ref(), &hash) { Verdict::Match { rehash: true } } else { Verdict::Mismatch }
        }
    }
}

/// Whether `stored` is an argon2id PHC string with exactly `params` (used to decide re-hashing
/// without computing anything).
pub fn is_current(stored: &str, params: HashParams) -> bool {
    matches!(parse(stored), Some(Stored::Argon2id { params: p, .. }) if p == params)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEAK: HashParams = HashParams { m_kib: 64, t: 1, p: 1 };

    #[test]
    fn argon2id_round_trip() {
        let pw = normalize("correct horse battery staple");
        let h = hash_argon2id(pw.as_bytes(), WEAK, &[7u8; 16]).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert_eq!(verify(&h, "correct horse battery staple", WEAK), Verdict::Match { rehash: false });
        assert_eq!(verify(&h, "wrong", WEAK), Verdict::Mismatch);
        assert_eq!(verify(&h, "correct horse battery staple", HashParams::DEFAULT), Verdict::Match { rehash: true });
        assert!(is_current(&h, WEAK));
    }

    #[test]
    fn nfkc_equivalent_passwords_match() {
        let decomposed = "cafe\u{301}-password";
        let precomposed = "caf\u{e9}-password";
        let h = hash_argon2id(normalize(decomposed).as_bytes(), WEAK, &[1u8; 16]).unwrap();
        assert!(matches!(verify(&h, precomposed, WEAK), Verdict::Match { .. }));
    }

    #[test]
    fn zato_pbkdf2_hashes_verify() {
        // Generated with passlib: pbkdf2_sha512.using(rounds=1000, salt=b'0123456789abcdef').hash('päss word')
        let h = "$pbkdf2-sha512$1000$MDEyMzQ1Njc4OWFiY2RlZg$KOCO/21UWEDSBOvxUdfKEkgS96SW7Vi0S2wNZHjbIsBQ7Fyki4Gnpu6pq3rRaqaQ.kQrEZ4S7tMa0OkQ0obAQQ";
        assert_eq!(verify(h, "p\u{e4}ss word", WEAK), Verdict::Match { rehash: true });
        assert_eq!(verify(h, "pass word", WEAK), Verdict::Mismatch);
    }

    #[test]
    fn capped_parameters_fail_without_work() {
        let h = "$argon2id$v=19$m=4194304,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let start = std::time::Instant::now();
        assert_eq!(verify(h, "x", WEAK), Verdict::Unusable);
        assert!(start.elapsed() < std::time::Duration::from_millis(500));
        let h = "$pbkdf2-sha512$99999999$MDEyMzQ1Njc4OWFiY2RlZg$KOCO/21UWEDSBOvxUdfKEkgS96SW7Vi0S2wNZHjbIsBQ7Fyki4Gnpu6pq3rRaqaQ.kQrEZ4S7tMa0OkQ0obAQQ";
        assert_eq!(verify(h, "x", WEAK), Verdict::Unusable);
    }

    #[test]
    fn garbage_is_unusable() {
        for s in ["", "$", "plain", "$argon2i$v=19$m=64,t=1,p=1$AAAA$AAAA", "$argon2id$v=16$m=64,t=1,p=1$AAAA$AAAA"] {
            assert_eq!(verify(s, "x", WEAK), Verdict::Unusable, "{s}");
        }
    }
}
