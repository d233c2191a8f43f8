//! Public identifiers (not secrets): user, session, linked-auth and audit ids, correlation ids
//! and client addresses.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::crypto::{crockford, random};
use crate::error::SsoError;

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $min:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// Parses an id: the prefix followed by `$min..=26` Crockford characters.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?;
                if (($min)..=26).contains(&rest.len()) && crockford::is_alphabet(rest) {
                    Some($name(s.to_owned()))
                } else {
                    None
                }
            }

            /// A fresh id: the prefix and 128 random bits as 26 Crockford characters.
            pub fn generate() -> Result<Self, SsoError> {
                let b = random::bytes::<16>()?;
                Ok($name(format!("{}{}", $prefix, crockford::encode(&b))))
            }

            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $name::parse(&s).ok_or_else(|| format!("invalid {}", stringify!($name)))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
    };
}

prefixed_id!(
    /// A user id: `zusr` + 26 Crockford characters (imported Zato ids: 1..=26).
    UserId, "zusr", 1
);
prefixed_id!(
    /// A public session id: `zses` + 26 Crockford characters, derived one-way from the UST.
    SessionId, "zses", 26
);
prefixed_id!(
    /// A linked-auth id: `zlnk` + 26 Crockford characters.
    AuthId, "zlnk", 26
);

impl SessionId {
    /// The session id of a UST whose domain-separated SHA-256 is `digest`: the prefix and the
    /// digest's first 16 bytes in Crockford (26 characters, so always a valid id).
    pub(crate) fn from_digest(digest: &[u8; 32]) -> SessionId {
        // 128 bits as 26 five-bit characters, most significant first, left-padded with two zero
        // bits: character i holds bits 125 - 5i .. 130 - 5i (the first one only three of them).
        let mut first = [0u8; 16];
        first.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
        let v = u128::from_be_bytes(first);
        let mut id = [0u8; 30];
        let (prefix, chars) = id.split_at_mut(4);
        prefix.copy_from_slice(Self::PREFIX.as_bytes());
        for (i, c) in chars.iter_mut().enumerate() {
            // `& 31` keeps the index below 32, the alphabet's length.
            *c = crockford::char_of((v >> (125 - 5 * i)) as u8 & 31);
        }
        SessionId(std::str::from_utf8(&id).unwrap_or_default().to_owned())
    }
}

/// A correlation id: 1..=64 characters of `[A-Za-z0-9._:-]`. Never used for decisions.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Cid(String);

impl Cid {
    /// Parses a caller-supplied cid.
    pub fn parse(s: &str) -> Option<Cid> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        ok.then(|| Cid(s.to_owned()))
    }

    /// A fresh cid: 24 lower-case hex characters (96 random bits, [`random::identifier_bytes`]).
    /// Falls back to a time-based value only if the OS RNG fails (a cid is not a secret).
    pub fn generate() -> Cid {
        match random::identifier_bytes::<12>() {
            Ok(b) => Cid(crate::crypto::digest::hex(&b)),
            Err(_) => {
                let t = crate::time::Clock::now(&crate::time::SystemClock).as_micros();
                Cid(format!("{t:024x}"))
            }
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The end user's address: one or more IP addresses, the first being the client.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RemoteAddr(Vec<IpAddr>);

impl RemoteAddr {
    /// A single address.
    pub fn single(ip: IpAddr) -> Self {
        RemoteAddr(vec![ip])
    }

    /// From a non-empty list.
    pub fn from_list(ips: Vec<IpAddr>) -> Option<Self> {
        (!ips.is_empty()).then_some(RemoteAddr(ips))
    }

    /// Parses `"a, b, c"`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut v = Vec::new();
        for part in s.split(',') {
            v.push(part.trim().parse::<IpAddr>().ok()?);
        }
        Self::from_list(v)
    }

    /// The client (first) address.
    pub fn client(&self) -> IpAddr {
        self.0.first().copied().unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }

    /// All addresses.
    pub fn all(&self) -> &[IpAddr] {
        &self.0
    }

    /// `127.0.0.1`, for CLI operations.
    pub fn localhost() -> Self {
        RemoteAddr(vec![IpAddr::from([127, 0, 0, 1])])
    }

    /// The same text as `Display` (`a,b`), with IPv4 octets written by hand: every audit record
    /// carries it, and the `fmt` path was a visible share of a session verify's profile.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(15 * self.0.len() + self.0.len());
        for (i, ip) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            match ip {
                IpAddr::V4(v4) => {
                    for (j, o) in v4.octets().into_iter().enumerate() {
                        if j > 0 {
                            s.push('.');
                        }
                        if o >= 100 {
                            s.push(char::from(b'0' + o / 100));
                        }
                        if o >= 10 {
                            s.push(char::from(b'0' + (o / 10) % 10));
                        }
                        s.push(char::from(b'0' + o % 10));
                    }
                }
                IpAddr::V6(v6) => {
                    use std::fmt::Write as _;
                    let _ = write!(s, "{v6}");
                }
            }
        }
        s
    }
}

impl fmt::Display for RemoteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, ip) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{ip}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RemoteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteAddr({self})")
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn to_text_matches_display() {
        for text in ["0.0.0.0", "9.10.99.100", "255.255.255.255", "10.0.0.1,::1", "2001:db8::7,192.168.1.20", "1.2.3.4"]
        {
            let a = RemoteAddr::parse(text).expect("parses");
            assert_eq!(a.to_text(), a.to_string(), "{text}");
        }
    }

    use super::*;

    #[test]
    fn user_ids() {
        let u = UserId::generate().unwrap();
        assert_eq!(u.as_str().len(), 30);
        assert!(UserId::parse(u.as_str()).is_some());
        assert!(UserId::parse("zusrpdjpsqjqa8jdv533zh0pv8tcm").is_some()); // Zato's 25-char id
        assert!(UserId::parse("zusr").is_none());
        assert!(UserId::parse("zusrILOU").is_none());
        assert!(UserId::parse("xusr0000").is_none());
        assert!(SessionId::parse("zses0").is_none());
    }

    #[test]
    fn cids() {
        assert!(Cid::parse("fb4d81d5a850ba675e065ddd").is_some());
        assert!(Cid::parse("a b").is_none());
        assert!(Cid::parse(&"a".repeat(65)).is_none());
        assert_eq!(Cid::generate().as_str().len(), 24);
    }

    #[test]
    fn remote_addrs() {
        let r = RemoteAddr::parse("10.0.0.1, ::1").unwrap();
        assert_eq!(r.to_string(), "10.0.0.1,::1");
        assert!(RemoteAddr::parse("nope").is_none());
    }
}
