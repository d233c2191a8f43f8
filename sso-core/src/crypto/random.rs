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

/// A random `u128` (e.g. the random part of a ULID).
pub fn u128() -> Result<u128, SsoError> {
    Ok(u128::from_be_bytes(bytes::<16>()?))
}
