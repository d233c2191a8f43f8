//! Randomness from the operating system's CSPRNG. A failure is an error, never a fallback
//! (spec/concepts.md §2; security.md item 78).

use crate::error::SsoError;

/// Fills `buf` from the OS CSPRNG.
pub fn fill(buf: &mut [u8]) -> Result<(), SsoError> {
    getrandom::fill(buf).map_err(|e| {
        tracing::error!(error = %e, "OS random number generator failed");
        SsoError::internal()
    })
}

/// `N` random bytes from the OS CSPRNG.
pub fn bytes<const N: usize>() -> Result<[u8; N], SsoError> {
    let mut b = [0u8; N];
    fill(&mut b)?;
    Ok(b)
}

/// Bytes of OS randomness fetched at once for [`identifier_bytes`].
const ID_BUFFER: usize = 1024;

thread_local! {
    /// This thread's unused OS random bytes for identifiers, and how many are used.
    static ID_RANDOM: std::cell::RefCell<([u8; ID_BUFFER], usize)> =
        const { std::cell::RefCell::new(([0; ID_BUFFER], ID_BUFFER)) };
}

/// `N` random bytes for an identifier that is not a secret (a correlation id): OS CSPRNG bytes
/// like [`bytes`], but served from a per-thread buffer refilled [`ID_BUFFER`] bytes at a time,
/// so a request that needs a fresh cid costs no system call. Never use it for a secret (a
/// token, a key, a salt): those come from [`bytes`], straight from the OS.
pub fn identifier_bytes<const N: usize>() -> Result<[u8; N], SsoError> {
    if N > ID_BUFFER / 4 {
        return bytes::<N>();
    }
    ID_RANDOM.with(|cell| {
        let mut guard = cell.try_borrow_mut().map_err(|_| SsoError::internal())?;
        let (buf, used) = &mut *guard;
        if *used + N > ID_BUFFER {
            fill(buf)?;
            *used = 0;
        }
        let mut out = [0u8; N];
        out.copy_from_slice(buf.get(*used..*used + N).ok_or_else(SsoError::internal)?);
        // Handed-out bytes are wiped: no identifier's bytes linger in the buffer.
        buf.get_mut(*used..*used + N).ok_or_else(SsoError::internal)?.fill(0);
        *used += N;
        Ok(out)
    })
}

/// A random `u128` (e.g. the random part of a ULID).
pub fn u128() -> Result<u128, SsoError> {
    Ok(u128::from_be_bytes(bytes::<16>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_bytes_are_fresh_across_refills() {
        // More draws than one buffer holds: every value differs (96 random bits each).
        let n = 3 * ID_BUFFER / 12;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..n {
            assert!(seen.insert(identifier_bytes::<12>().unwrap()));
        }
        assert!(seen.iter().all(|b| b.iter().any(|x| *x != 0)), "no all-zero (wiped) value is handed out");
    }
}
