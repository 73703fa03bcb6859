//! The invite string: everything a machine needs to join a hub, in one pasteable token.
//!
//! Format: `gi1_<base64url(JSON payload)>.<8 hex digits of BLAKE3(payload)>`. The
//! checksum makes a truncated or mistyped invite fail with a clear message instead
//! of a confusing network error.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

const PREFIX: &str = "gi1_";
const MAX_LEN: usize = 4096;

/// A decoded invite: where the hub is, the certificate to pin, and the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteCode {
    /// The hub's advertised gRPC address, `HOST:PORT`.
    pub hub_addr: String,
    /// SHA-256 of the hub certificate (DER), lowercase hex; the node pins it.
    pub cert_sha256: String,
    pub secret: Secret,
}

/// Where an invite is in its life, as seen at some moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InviteState {
    /// Not used, revoked nor expired: it can still be redeemed.
    Pending,
    Used,
    Revoked,
    Expired,
}

impl InviteState {
    pub fn as_str(self) -> &'static str {
        match self {
            InviteState::Pending => "pending",
            InviteState::Used => "used",
            InviteState::Revoked => "revoked",
            InviteState::Expired => "expired",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("invite is empty")]
    Empty,
    #[error("invite is too long")]
    TooLong,
    #[error("not a ganglion invite (it should start with \"gi1_\")")]
    Prefix,
    #[error("invite is truncated or corrupted (checksum mismatch)")]
    Checksum,
    #[error("invite is malformed: {0}")]
    Malformed(&'static str),
}

#[derive(Serialize, Deserialize)]
struct Payload {
    hub: String,
    fp: String,
    secret: String,
}

fn checksum(payload: &[u8]) -> String {
    blake3::hash(payload).to_hex()[..8].to_owned()
}

impl InviteCode {
    pub fn encode(&self) -> String {
        let payload = serde_json::to_vec(&Payload {
            hub: self.hub_addr.clone(),
            fp: self.cert_sha256.clone(),
            secret: self.secret.encode(),
        })
        .expect("payload serialises");
        format!(
            "{PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            checksum(&payload)
        )
    }

    pub fn parse(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(Error::TooLong);
        }
        let body = s.strip_prefix(PREFIX).ok_or(Error::Prefix)?;
        let (b64, sum) = body.rsplit_once('.').ok_or(Error::Checksum)?;
        let payload = URL_SAFE_NO_PAD.decode(b64).map_err(|_| Error::Checksum)?;
        if checksum(&payload) != sum {
            return Err(Error::Checksum);
        }
        let p: Payload =
            serde_json::from_slice(&payload).map_err(|_| Error::Malformed("payload"))?;
        let secret = Secret::decode(&p.secret).map_err(|_| Error::Malformed("secret"))?;
        let fp_ok = p.fp.len() == 64 && p.fp.bytes().all(|b| b.is_ascii_hexdigit());
        if !fp_ok {
            return Err(Error::Malformed("certificate fingerprint"));
        }
        if p.hub.is_empty() || !p.hub.contains(':') {
            return Err(Error::Malformed("hub address"));
        }
        Ok(Self {
            hub_addr: p.hub,
            cert_sha256: p.fp.to_ascii_lowercase(),
            secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InviteCode {
        InviteCode {
            hub_addr: "127.0.0.1:7443".into(),
            cert_sha256: "ab".repeat(32),
            secret: Secret::generate(),
        }
    }

    #[test]
    fn round_trips() {
        let inv = sample();
        assert_eq!(InviteCode::parse(&inv.encode()).unwrap(), inv);
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        let s = sample().encode();
        assert_eq!(InviteCode::parse(""), Err(Error::Empty));
        assert_eq!(InviteCode::parse("hello"), Err(Error::Prefix));
        assert_eq!(InviteCode::parse(&s[..s.len() - 3]), Err(Error::Checksum));
        assert_eq!(InviteCode::parse(&s[..20]), Err(Error::Checksum));
        let mut flipped = s.clone().into_bytes();
        flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            InviteCode::parse(std::str::from_utf8(&flipped).unwrap()),
            Err(Error::Checksum)
        );
        assert_eq!(InviteCode::parse(&"x".repeat(5000)), Err(Error::TooLong));
    }
}
