//! 256-bit secrets and the hashes that are all the hub ever stores of them.
//!
//! Secrets are high-entropy random values, so a fast hash (BLAKE3) is enough: no
//! password-style stretching is needed. Hash equality is constant-time
//! (`blake3::Hash`'s `PartialEq` is).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

/// A random 256-bit secret: an invite's, a node credential, an admin token.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

/// The BLAKE3 hash of a [`Secret`], tagged by purpose so one kind of secret can
/// never be presented as another.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(blake3::Hash);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("secret is not valid base64url")]
    Encoding,
    #[error("secret has {0} bytes, expected 32")]
    Length(usize),
}

/// What a secret is for; part of the hash input (domain separation).
#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    Invite,
    NodeCredential,
    AdminToken,
}

impl Purpose {
    fn context(self) -> &'static str {
        match self {
            Purpose::Invite => "ganglion 2026 invite secret",
            Purpose::NodeCredential => "ganglion 2026 node credential",
            Purpose::AdminToken => "ganglion 2026 admin token",
        }
    }
}

impl Secret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Parses the base64url (no padding) form produced by [`Secret::encode`].
    pub fn decode(s: &str) -> Result<Self, Error> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|_| Error::Encoding)?;
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| Error::Length(bytes.len()))?;
        Ok(Self(arr))
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    pub fn hash(&self, purpose: Purpose) -> SecretHash {
        SecretHash(blake3::derive_key(purpose.context(), &self.0).into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl SecretHash {
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(blake3::Hash::from_bytes(arr)))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({}…)", &self.0.to_hex()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_hashes_by_purpose() {
        let s = Secret::generate();
        let back = Secret::decode(&s.encode()).unwrap();
        assert_eq!(s, back);
        assert_ne!(s.hash(Purpose::Invite), s.hash(Purpose::NodeCredential));
        assert_eq!(s.hash(Purpose::Invite), back.hash(Purpose::Invite));
        assert!(!format!("{s:?}").contains(&s.encode()));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Secret::decode("not base64!"), Err(Error::Encoding));
        assert_eq!(Secret::decode("AAAA"), Err(Error::Length(3)));
    }
}
