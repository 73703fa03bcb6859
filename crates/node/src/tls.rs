//! TLS to the hub with a pinned certificate.
//!
//! The node trusts exactly one certificate: the one whose SHA-256 (of the DER
//! encoding) came in the invite. No CA is consulted; a different certificate
//! fails the handshake, and the mismatch is reported precisely.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::Error;

/// SHA-256 of a DER certificate, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug)]
struct PinnedVerifier {
    expected: String,
    provider: Arc<CryptoProvider>,
    /// The fingerprint seen on a mismatch, so the caller can say what happened.
    mismatch: Arc<Mutex<Option<String>>>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity);
        if got == self.expected {
            return Ok(ServerCertVerified::assertion());
        }
        *self.mismatch.lock() = Some(got);
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// How to reach the hub: its address, the pinned fingerprint, and optionally a
/// local address to connect from (benchmarks and tests use other loopback IPs).
#[derive(Clone, Debug)]
pub struct HubTarget {
    pub addr: String,
    pub cert_sha256: String,
    pub bind_ip: Option<IpAddr>,
}

async fn tcp_connect(addr: &str, bind_ip: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let stream = match bind_ip {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let target: SocketAddr = tokio::net::lookup_host(addr)
                .await?
                .find(|a| a.is_ipv4() == ip.is_ipv4())
                .ok_or_else(|| std::io::Error::other("no address of the right family"))?;
            let sock = if ip.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            sock.bind(SocketAddr::new(ip, 0))?;
            sock.connect(target).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a gRPC channel to the hub over pinned TLS. Fails with
/// [`Error::CertificateMismatch`] if the hub presents another certificate.
pub async fn connect(target: &HubTarget) -> Result<Channel, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mismatch = Arc::new(Mutex::new(None));
    let verifier = PinnedVerifier {
        expected: target.cert_sha256.to_ascii_lowercase(),
        provider: provider.clone(),
        mismatch: mismatch.clone(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Hub(format!("tls config: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));

    let t = target.clone();
    let make = tower::service_fn(move |_uri| {
        let connector = connector.clone();
        let t = t.clone();
        async move {
            let tcp = tcp_connect(&t.addr, t.bind_ip).await?;
            // The name is not checked (the certificate is pinned), only sent as SNI.
            let name = ServerName::try_from("ganglion-hub").expect("valid name");
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let endpoint = Endpoint::from_shared(format!("http://{}", target.addr))
        .map_err(|e| Error::Connect {
            addr: target.addr.clone(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        // Larger than HTTP/2's 64 KiB defaults, like the hub's: no stall per
        // window on a fast link (the hub's settings pace the uploads).
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(256 << 10);
    endpoint.connect_with_connector(make).await.map_err(|e| {
        if let Some(got) = mismatch.lock().take() {
            return Error::CertificateMismatch {
                expected: target.cert_sha256.clone(),
                got,
            };
        }
        Error::Connect {
            addr: target.addr.clone(),
            reason: error_chain(&e),
        }
    })
}

/// An error and its sources, joined: transport errors hide the cause otherwise.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
