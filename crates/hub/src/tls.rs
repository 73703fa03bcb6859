//! The hub's TLS identity. On first start the hub makes a self-signed
//! certificate (rcgen) unless one is configured; invites carry the SHA-256 of
//! its DER encoding, which nodes pin.

use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::Error;
use crate::datadir::{DataDir, write_atomic};

#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// SHA-256 of the leaf certificate's DER, lowercase hex.
    pub cert_sha256: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_sha256", &self.cert_sha256)
            .finish()
    }
}

/// SHA-256 of a DER certificate, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl TlsIdentity {
    /// Loads the configured pair, or the hub's own (making it on first start).
    pub async fn load_or_create(
        dir: &DataDir,
        configured: Option<(&Path, &Path)>,
        hostnames: Vec<String>,
    ) -> Result<Self, Error> {
        let (cert_path, key_path) = match configured {
            Some((c, k)) => (c.to_path_buf(), k.to_path_buf()),
            None => (dir.tls_dir().join("hub.crt"), dir.tls_dir().join("hub.key")),
        };
        if configured.is_none() && !tokio::fs::try_exists(&cert_path).await? {
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            names.extend(hostnames.into_iter().filter(|h| !h.is_empty()));
            names.dedup();
            let certified = rcgen::generate_simple_self_signed(names)
                .map_err(|e| Error::Tls(format!("generating certificate: {e}")))?;
            write_atomic(
                key_path.clone(),
                certified.signing_key.serialize_pem().into_bytes(),
                0o600,
            )
            .await?;
            write_atomic(cert_path.clone(), certified.cert.pem().into_bytes(), 0o644).await?;
            tracing::info!(path = %cert_path.display(), "generated a self-signed certificate");
        }
        let cert_pem = tokio::fs::read(&cert_path).await?;
        let key_pem = tokio::fs::read(&key_path).await?;
        let leaf = CertificateDer::pem_slice_iter(&cert_pem)
            .next()
            .ok_or_else(|| Error::Tls(format!("no certificate in {}", cert_path.display())))?
            .map_err(|e| Error::Tls(format!("{}: {e}", cert_path.display())))?;
        let cert_sha256 = fingerprint(&leaf);
        Ok(Self {
            cert_pem,
            key_pem,
            cert_sha256,
        })
    }
}
