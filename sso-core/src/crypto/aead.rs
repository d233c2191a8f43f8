//! Encryption at rest: XChaCha20-Poly1305 under a key ring with key ids, envelopes bound to their
//! owner and field by AAD, and the HMAC blind index for e-mail lookups (spec/totp.md §6,
//! spec/config.md §4).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use crate::crypto::{digest, random};
use crate::error::SsoError;
use crate::secret::KeySecret;
use crate::time::Timestamp;

const ENVELOPE_PREFIX: &str = "enc1";

/// Why a key ring could not be loaded. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    /// The TOML does not parse or lacks a field.
    #[error("key ring: {0}")]
    Format(String),
    /// `active` does not name a key.
    #[error("key ring: active key {0:?} is not in the ring")]
    NoActive(String),
    /// A key id is malformed or repeated.
    #[error("key ring: invalid or duplicate key id {0:?}")]
    BadId(String),
    /// A secret does not decode to 32 bytes.
    #[error("key ring: key {0:?} does not decode to 32 bytes")]
    BadSecret(String),
}

/// Why an envelope could not be decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecryptError {
    /// The envelope names a key the ring does not hold (the ring may need reloading).
    UnknownKey,
    /// Malformed envelope, wrong AAD or tampered ciphertext.
    Invalid,
}

impl From<DecryptError> for SsoError {
    fn from(e: DecryptError) -> Self {
        tracing::error!(?e, "decryption of a stored envelope failed");
        SsoError::Internal { reason: crate::error::Reason::DecryptFailed }
    }
}

struct RingKey {
    created: String,
    secret: KeySecret,
    cipher: XChaCha20Poly1305,
}

/// The key ring: keys with ids, one active key that encrypts, all keys decrypt, plus the separate
/// `index_key` of the e-mail blind index.
pub struct KeyRing {
    active: String,
    keys: BTreeMap<String, RingKey>,
    index_key: KeySecret,
    /// The key an unfinished `keys rotate` is moving envelopes to (the file's `rotating`).
    rotating: Option<String>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("active", &self.active)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingFile {
    version: u32,
    active: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotating: Option<String>,
    index_key: String,
    keys: Vec<RingFileKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingFileKey {
    id: String,
    created: String,
    secret: String,
}

fn valid_key_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn decode_secret(id: &str, s: &str) -> Result<KeySecret, KeyRingError> {
    let bytes = Zeroizing::new(
        URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| KeyRingError::BadSecret(id.to_owned()))?,
    );
    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyRingError::BadSecret(id.to_owned()))?;
    Ok(KeySecret::from_bytes(arr))
}

fn cipher_for(secret: &KeySecret) -> Option<XChaCha20Poly1305> {
    XChaCha20Poly1305::new_from_slice(secret.expose()).ok()
}

/// A key id derived from a time: `k20261127t101500`.
pub fn key_id_for(now: Timestamp) -> String {
    let z = now.to_zato(); // 2026-11-27T10:15:00[.ffffff]
    let digits: String = z.chars().take(19).filter(|c| c.is_ascii_digit() || *c == 'T').collect();
    format!("k{}", digits.to_ascii_lowercase())
}

impl KeyRing {
    /// A new ring with one active key (id from `now`) and a fresh index key.
    pub fn generate(now: Timestamp) -> Result<KeyRing, SsoError> {
        let mut ring =
            KeyRing { active: String::new(), keys: BTreeMap::new(), index_key: KeySecret::generate()?, rotating: None };
        ring.add_key(now)?;
        Ok(ring)
    }

    /// Adds a fresh key (id from `now`, made unique), makes it active and returns its id.
    pub fn add_key(&mut self, now: Timestamp) -> Result<String, SsoError> {
        let base = key_id_for(now);
        let mut id = base.clone();
        let mut n = 1;
        while self.keys.contains_key(&id) {
            n += 1;
            id = format!("{base}-{n}");
        }
        let secret = KeySecret::generate()?;
        let cipher = cipher_for(&secret).ok_or_else(SsoError::internal)?;
        self.keys.insert(id.clone(), RingKey { created: now.to_rfc3339_micros(), secret, cipher });
        self.active = id.clone();
        Ok(id)
    }

    /// Removes a key that is not active. Returns whether it existed.
    pub fn remove_key(&mut self, id: &str) -> bool {
        id != self.active && self.keys.remove(id).is_some()
    }

    /// Parses the key-ring TOML (spec/config.md §4).
    pub fn from_toml(text: &str) -> Result<KeyRing, KeyRingError> {
        let file: RingFile = toml::from_str(text).map_err(|e| KeyRingError::Format(e.message().to_owned()))?;
        if file.version != 1 {
            return Err(KeyRingError::Format(format!("unsupported version {}", file.version)));
        }
        let mut keys = BTreeMap::new();
        for k in file.keys {
            if !valid_key_id(&k.id) || keys.contains_key(&k.id) {
                return Err(KeyRingError::BadId(k.id));
            }
            let secret = decode_secret(&k.id, &k.secret)?;
            let cipher = cipher_for(&secret).ok_or_else(|| KeyRingError::BadSecret(k.id.clone()))?;
            keys.insert(k.id, RingKey { created: k.created, secret, cipher });
        }
        if !keys.contains_key(&file.active) {
            return Err(KeyRingError::NoActive(file.active));
        }
        if file.rotating.as_ref().is_some_and(|r| !keys.contains_key(r)) {
            return Err(KeyRingError::Format("`rotating` does not name a key".to_owned()));
        }
        let index_key = decode_secret("index_key", &file.index_key)?;
        Ok(KeyRing { active: file.active, keys, index_key, rotating: file.rotating })
    }

    /// Serialises the ring to its TOML file form (this text holds the secrets).
    pub fn to_toml(&self) -> Zeroizing<String> {
        let file = RingFile {
            version: 1,
            active: self.active.clone(),
            rotating: self.rotating.clone(),
            index_key: URL_SAFE_NO_PAD.encode(self.index_key.expose()),
            keys: self
                .keys
                .iter()
                .map(|(id, k)| RingFileKey {
                    id: id.clone(),
                    created: k.created.clone(),
                    secret: URL_SAFE_NO_PAD.encode(k.secret.expose()),
                })
                .collect(),
        };
        let body = toml::to_string(&file).unwrap_or_default();
        Zeroizing::new(format!(
            "# sso key ring. Keep secret (mode 0600) and back it up: without it encrypted data cannot be read.\n{body}"
        ))
    }

    /// The key an unfinished rotation is moving envelopes to, if one was started and not finished
    /// (`sso keys rotate` resumes it instead of adding another key).
    pub fn rotating(&self) -> Option<&str> {
        self.rotating.as_deref()
    }

    /// Marks (`Some(id)`) or clears (`None`) an unfinished rotation.
    pub fn set_rotating(&mut self, id: Option<String>) {
        self.rotating = id;
    }

    /// Whether the ring holds a key with this id.
    pub fn has_key(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// The active key's id.
    pub fn active_id(&self) -> &str {
        &self.active
    }

    /// Every key id with its creation time, in id order.
    pub fn key_ids(&self) -> Vec<(String, String)> {
        self.keys.iter().map(|(id, k)| (id.clone(), k.created.clone())).collect()
    }

    /// Encrypts `plaintext` under the active key with `aad`, returning the envelope text
    /// `enc1.<key_id>.<base64url(nonce ‖ ciphertext ‖ tag)>`.
    pub fn encrypt(&self, aad: &str, plaintext: &[u8]) -> Result<String, SsoError> {
        let key = self.keys.get(&self.active).ok_or_else(SsoError::internal)?;
        let nonce_bytes = random::bytes::<24>()?;
        let nonce = XNonce::from(nonce_bytes);
        let ct = key
            .cipher
            .encrypt(&nonce, Payload { msg: plaintext, aad: aad.as_bytes() })
            .map_err(|_| SsoError::internal())?;
        let mut blob = Vec::with_capacity(24 + ct.len());
        blob.extend_from_slice(&nonce_bytes);
        blob.extend_from_slice(&ct);
        Ok(format!("{ENVELOPE_PREFIX}.{}.{}", self.active, URL_SAFE_NO_PAD.encode(blob)))
    }

    /// Decrypts an envelope made with the same `aad`.
    pub fn decrypt(&self, aad: &str, envelope: &str) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let (key_id, blob) = split_envelope(envelope).ok_or(DecryptError::Invalid)?;
        let key = self.keys.get(key_id).ok_or(DecryptError::UnknownKey)?;
        let blob = URL_SAFE_NO_PAD.decode(blob).map_err(|_| DecryptError::Invalid)?;
        if blob.len() < 24 + 16 {
            return Err(DecryptError::Invalid);
        }
        let (n, ct) = blob.split_at(24);
        let nonce = XNonce::try_from(n).map_err(|_| DecryptError::Invalid)?;
        key.cipher
            .decrypt(&nonce, Payload { msg: ct, aad: aad.as_bytes() })
            .map(Zeroizing::new)
            .map_err(|_| DecryptError::Invalid)
    }

    /// Decrypts an envelope holding UTF-8 text.
    pub fn decrypt_string(&self, aad: &str, envelope: &str) -> Result<Zeroizing<String>, DecryptError> {
        let bytes = self.decrypt(aad, envelope)?;
        let s = std::str::from_utf8(&bytes).map_err(|_| DecryptError::Invalid)?;
        Ok(Zeroizing::new(s.to_owned()))
    }

    /// The e-mail blind index: hex HMAC-SHA256(index_key, lowercase(NFKC(trim(email)))).
    pub fn email_index(&self, email: &str) -> String {
        let norm: String = email.trim().nfkc().collect::<String>().to_lowercase();
        digest::hex(&digest::hmac_sha256(self.index_key.expose(), norm.as_bytes()))
    }
}

/// The key id of an envelope, if the text is one.
pub fn envelope_key_id(envelope: &str) -> Option<&str> {
    split_envelope(envelope).map(|(id, _)| id)
}

/// Whether `text` looks like an envelope.
pub fn is_envelope(text: &str) -> bool {
    split_envelope(text).is_some()
}

fn split_envelope(envelope: &str) -> Option<(&str, &str)> {
    let rest = envelope.strip_prefix(ENVELOPE_PREFIX)?.strip_prefix('.')?;
    let (id, blob) = rest.split_once('.')?;
    valid_key_id(id).then_some((id, blob))
}

/// AAD strings (spec/totp.md §6).
pub mod aad {
    /// `sso/v1/user/<user_id>/<field>` for `totp_key`, `totp_label`, `email`, `password`.
    pub fn user_field(user_id: &str, field: &str) -> String {
        format!("sso/v1/user/{user_id}/{field}")
    }

    /// `sso/v1/attr/user/<user_id>/<name>`.
    pub fn user_attr(user_id: &str, name: &str) -> String {
        format!("sso/v1/attr/user/{user_id}/{name}")
    }

    /// `sso/v1/attr/session/<session_id>/<name>`.
    pub fn session_attr(session_id: &str, name: &str) -> String {
        format!("sso/v1/attr/session/{session_id}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::generate(Timestamp::from_secs(1_795_000_000)).unwrap()
    }

    #[test]
    fn round_trip_and_binding() {
        let r = ring();
        let a = r.encrypt("sso/v1/user/zusr1/totp_key", b"SECRET").unwrap();
        let b = r.encrypt("sso/v1/user/zusr1/totp_key", b"SECRET").unwrap();
        assert_ne!(a, b, "nonces must differ");
        assert!(!a.contains("SECRET"));
        assert_eq!(&*r.decrypt("sso/v1/user/zusr1/totp_key", &a).unwrap(), b"SECRET");
        assert_eq!(r.decrypt("sso/v1/user/zusr2/totp_key", &a), Err(DecryptError::Invalid));
        assert_eq!(r.decrypt("sso/v1/user/zusr1/totp_label", &a), Err(DecryptError::Invalid));
    }

    #[test]
    fn tampering_is_detected() {
        let r = ring();
        let env = r.encrypt("x", b"hello").unwrap();
        let mut chars: Vec<char> = env.chars().collect();
        let last = chars.len() - 1;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        let bad: String = chars.into_iter().collect();
        assert!(r.decrypt("x", &bad).is_err());
        assert_eq!(r.decrypt("x", "enc1.nokey.AAAA"), Err(DecryptError::UnknownKey));
        assert_eq!(r.decrypt("x", "plain"), Err(DecryptError::Invalid));
    }

    #[test]
    fn toml_round_trip_and_rotation() {
        let mut r = ring();
        let env = r.encrypt("x", b"v").unwrap();
        let old = r.active_id().to_owned();
        let new = r.add_key(Timestamp::from_secs(1_795_000_000)).unwrap();
        assert_ne!(old, new);
        let text = r.to_toml();
        let r2 = KeyRing::from_toml(&text).unwrap();
        assert_eq!(r2.active_id(), new);
        assert_eq!(&*r2.decrypt("x", &env).unwrap(), b"v");
        assert_eq!(envelope_key_id(&env), Some(old.as_str()));
        assert_eq!(r.email_index(" Alice@Example.com"), r2.email_index("alice@example.com"));
        assert!(!format!("{r2:?}").contains(&*text));
    }

    #[test]
    fn bad_rings_are_refused() {
        assert!(matches!(KeyRing::from_toml("nope"), Err(KeyRingError::Format(_))));
        let text = "version = 1\nactive = \"k1\"\nindex_key = \"AAAA\"\nkeys = []\n";
        assert!(matches!(KeyRing::from_toml(text), Err(KeyRingError::NoActive(_))));
    }

    #[test]
    fn key_ids_look_right() {
        let t = Timestamp::parse("2026-11-27T10:15:00").unwrap();
        assert_eq!(key_id_for(t), "k20261127t101500");
    }
}
