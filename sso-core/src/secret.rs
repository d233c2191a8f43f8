//! Secret values: UST, passwords, TOTP keys and codes, tokens and key material.
//!
//! Each is a newtype whose `Debug` prints `[REDACTED]`, which implements neither `Display` nor
//! `Serialize` nor `PartialEq` (comparisons are constant-time through [`SecretStr::ct_eq`]), and
//! which zeroises its memory on drop (spec/concepts.md §2).

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::{base32, crockford, digest, random};
use crate::error::SsoError;
use crate::ids::SessionId;

/// Behaviour shared by every secret string newtype.
pub trait SecretStr {
    /// The secret text. Call only where the secret must be used or handed over.
    fn expose(&self) -> &str;

    /// Constant-time equality with another secret's text.
    fn ct_eq(&self, other: &str) -> bool {
        digest::ct_eq(self.expose().as_bytes(), other.as_bytes())
    }
}

macro_rules! secret_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name(String);

        impl $name {
            /// Wraps a secret text as received (its syntax is checked where it is used).
            pub fn new(s: impl Into<String>) -> Self {
                $name(s.into())
            }

            /// Whether the text is empty.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl SecretStr for $name {
            fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([REDACTED])"))
            }
        }
    };
}

secret_string!(
    /// A user session token: `zust` + 52 Crockford characters (256 random bits). Held as received;
    /// [`Ust::session_id`] checks its syntax.
    Ust
);
secret_string!(
    /// A password, as the user typed it.
    Password
);
secret_string!(
    /// A TOTP key as supplied by a caller (validated by the operation that receives it).
    TotpKeyText
);
secret_string!(
    /// A TOTP code as received (syntax checked at verification: exactly six ASCII digits).
    TotpCode
);
secret_string!(
    /// A sign-up confirmation token: 32 characters of URL-safe base64 (24 random bytes).
    ConfirmToken
);
secret_string!(
    /// A password-reset token (PRT): 32 Crockford characters, no prefix (160 random bits).
    PrtToken
);
secret_string!(
    /// A password-reset key: `zprtrkey` + 52 Crockford characters (256 random bits).
    ResetKey
);

const UST_PREFIX: &str = "zust";
const RESET_KEY_PREFIX: &str = "zprtrkey";

fn well_formed(s: &str, prefix: &str, chars: usize) -> bool {
    s.len() == prefix.len() + chars
        && s.starts_with(prefix)
        && s.get(prefix.len()..).is_some_and(crockford::is_alphabet)
}

impl Ust {
    /// A fresh UST from the OS CSPRNG.
    pub fn generate() -> Result<Ust, SsoError> {
        let b = random::bytes::<32>()?;
        Ok(Ust(format!("{UST_PREFIX}{}", crockford::encode(&b))))
    }

    /// Whether the text has the UST syntax (`zust` + 52 Crockford characters).
    pub fn is_well_formed(&self) -> bool {
        well_formed(&self.0, UST_PREFIX, 52)
    }

    /// SHA-256 of the UST's ASCII text: the only form a store keeps.
    pub fn hash(&self) -> [u8; 32] {
        digest::sha256(self.0.as_bytes())
    }

    /// The public session id derived from this UST, or `None` when the syntax is wrong
    /// (so a malformed UST never reaches a store).
    pub fn session_id(&self) -> Option<SessionId> {
        if !self.is_well_formed() {
            return None;
        }
        Some(SessionId::from_digest(&digest::sha256_parts(&[b"sso/session-id/v1:", self.0.as_bytes()])))
    }
}

impl ConfirmToken {
    /// A fresh confirmation token.
    pub fn generate() -> Result<ConfirmToken, SsoError> {
        use base64::Engine;
        let b = random::bytes::<24>()?;
        Ok(ConfirmToken(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)))
    }

    /// Whether the text has the token syntax.
    pub fn is_well_formed(&self) -> bool {
        self.0.len() == 32 && self.0.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    /// SHA-256 of the token.
    pub fn hash(&self) -> [u8; 32] {
        digest::sha256(self.0.as_bytes())
    }
}

impl PrtToken {
    /// A fresh password-reset token.
    pub fn generate() -> Result<PrtToken, SsoError> {
        let b = random::bytes::<20>()?;
        Ok(PrtToken(crockford::encode(&b)))
    }

    /// Whether the text has the token syntax.
    pub fn is_well_formed(&self) -> bool {
        self.0.len() == 32 && crockford::is_alphabet(&self.0)
    }

    /// SHA-256 of the token.
    pub fn hash(&self) -> [u8; 32] {
        digest::sha256(self.0.as_bytes())
    }
}

impl ResetKey {
    /// A fresh reset key.
    pub fn generate() -> Result<ResetKey, SsoError> {
        let b = random::bytes::<32>()?;
        Ok(ResetKey(format!("{RESET_KEY_PREFIX}{}", crockford::encode(&b))))
    }

    /// Whether the text has the reset-key syntax.
    pub fn is_well_formed(&self) -> bool {
        well_formed(&self.0, RESET_KEY_PREFIX, 52)
    }

    /// SHA-256 of the key.
    pub fn hash(&self) -> [u8; 32] {
        digest::sha256(self.0.as_bytes())
    }
}

impl Password {
    /// A random password nobody learns (32 characters of URL-safe base64, 192 bits).
    pub fn generate() -> Result<Password, SsoError> {
        use base64::Engine;
        let b = random::bytes::<24>()?;
        Ok(Password(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)))
    }
}

/// A TOTP key: stored form (RFC 4648 base32, upper case, no padding) plus its decoded bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TotpKey {
    base32: String,
    bytes: Vec<u8>,
    issuer: String,
    account: String,
}

impl fmt::Debug for TotpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpKey([REDACTED])")
    }
}

impl TotpKey {
    /// 20 fresh bytes from the OS CSPRNG (160 bits, 32 base32 characters).
    pub fn generate() -> Result<TotpKey, SsoError> {
        let b = random::bytes::<20>()?;
        Ok(TotpKey { base32: base32::encode(&b), bytes: b.to_vec(), issuer: String::new(), account: String::new() })
    }

    /// Validates a supplied key (spec/totp.md §5). The error carries no part of the key.
    pub fn parse(input: &str) -> Result<TotpKey, base32::KeyError> {
        let (base32, bytes) = base32::parse_key(input)?;
        Ok(TotpKey { base32, bytes, issuer: String::new(), account: String::new() })
    }

    /// The key as base32 text (upper case, no padding).
    pub fn expose_base32(&self) -> &str {
        &self.base32
    }

    /// The decoded key bytes.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The `otpauth://` enrolment URI (spec/totp.md §7) for `issuer` and `account`.
    pub fn otpauth_uri_for(&self, issuer: &str, account: &str) -> String {
        crate::crypto::totp::otpauth_uri(issuer, account, &self.base32)
    }

    /// The enrolment URI with the issuer and account chosen by the operation that returned this key
    /// (`reset_totp_key`: the new label, else the target's username).
    pub fn otpauth_uri(&self) -> String {
        let issuer = if self.issuer.is_empty() { "sso" } else { &self.issuer };
        self.otpauth_uri_for(issuer, &self.account)
    }

    /// Sets the issuer and account used by [`TotpKey::otpauth_uri`].
    pub fn with_uri(mut self, issuer: &str, account: &str) -> Self {
        self.issuer = issuer.to_owned();
        self.account = account.to_owned();
        self
    }
}

/// Raw key material (key-ring secrets, index key). 32 bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct KeySecret([u8; 32]);

impl KeySecret {
    /// Wraps 32 bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        KeySecret(b)
    }

    /// 32 fresh bytes from the OS CSPRNG.
    pub fn generate() -> Result<Self, SsoError> {
        Ok(KeySecret(random::bytes::<32>()?))
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let u = Ust::new("zustsecret");
        assert_eq!(format!("{u:?}"), "Ust([REDACTED])");
        let k = TotpKey::parse("JBSWY3DPEHPK3PXP").unwrap();
        assert!(!format!("{k:?}").contains("JBSW"));
        let p = Password::new("hunter2hunter2");
        assert!(!format!("{p:?}").contains("hunter"));
    }

    #[test]
    fn ust_syntax_and_session_id() {
        let u = Ust::generate().unwrap();
        assert!(u.is_well_formed());
        assert_eq!(u.expose().len(), 56);
        let sid = u.session_id().unwrap();
        assert!(sid.as_str().starts_with("zses"));
        assert_eq!(sid.as_str().len(), 30);
        assert_eq!(u.session_id(), u.session_id());
        // The spec's derivation (concepts.md §2), spelled out the slow way.
        let h = digest::sha256(format!("sso/session-id/v1:{}", u.expose()).as_bytes());
        assert_eq!(sid.as_str(), format!("zses{}", crockford::encode(&h[..16])));
        assert_eq!(Some(sid.clone()), SessionId::parse(sid.as_str()));
        assert!(Ust::new("zust").session_id().is_none());
        assert!(Ust::new(format!("zust{}", "I".repeat(52))).session_id().is_none());
    }

    #[test]
    fn tokens_are_well_formed() {
        assert!(ConfirmToken::generate().unwrap().is_well_formed());
        assert!(PrtToken::generate().unwrap().is_well_formed());
        assert!(ResetKey::generate().unwrap().is_well_formed());
        assert_eq!(Password::generate().unwrap().expose().len(), 32);
        assert_eq!(TotpKey::generate().unwrap().expose_base32().len(), 32);
    }
}
