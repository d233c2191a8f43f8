//! Cryptographic building blocks: randomness, encodings, digests, password hashing, the AEAD key
//! ring and TOTP. Everything here is pure (no store access); the services compose it.

pub mod aead;
pub mod base32;
pub mod crockford;
pub mod digest;
pub mod password;
pub mod random;
pub mod totp;
