//! Accepting connections so that unauthenticated peers cannot exhaust the
//! hub's file descriptors (or its attention).
//!
//! - An accept error (EMFILE, ENFILE, ENOBUFS, …) never ends a server: it is
//!   logged (once a second at most) and accepting resumes after a pause.
//! - gRPC: the hub does the TLS handshake itself, at most
//!   [`AcceptLimits::max_handshakes`] at once (over that, the newest
//!   connection is closed at once) and each within
//!   [`AcceptLimits::handshake_timeout`], so connections that never finish a
//!   handshake (a slow ClientHello) hold a bounded number of descriptors for
//!   a bounded time.
//! - HTTP: at most [`AcceptLimits::max_http`] connections at once (newest
//!   closed over that), and a connection must send the head of its first
//!   request within the handshake timeout (a slowloris is closed; a request
//!   the hub then takes long to answer, like `mirror wait`, is not).
//!
//! Both caps default to a quarter of `RLIMIT_NOFILE` each, so descriptors
//! stay free for nodes, the store and the mirrors whatever peers do.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::metrics::Metrics;

/// How the hub accepts connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptLimits {
    /// How long a TLS handshake (gRPC) or a first HTTP request may take.
    pub handshake_timeout: Duration,
    /// TLS handshakes in progress at once.
    pub max_handshakes: usize,
    /// HTTP connections open at once.
    pub max_http: usize,
}

impl AcceptLimits {
    /// Caps derived from the process's open-file limit (a quarter each).
    pub fn from_fd_limit(handshake_timeout: Duration) -> Self {
        let fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(1 << 20);
        let quarter = usize::try_from(fds / 4).unwrap_or(usize::MAX);
        Self {
            handshake_timeout,
            max_handshakes: quarter.clamp(8, 1024),
            max_http: quarter.clamp(8, 4096),
        }
    }
}

/// Pause after an accept error before accepting again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Accepts the next connection, riding out errors.
async fn accept(
    listener: &TcpListener,
    what: &'static str,
    last_log: &mut Option<Instant>,
) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                return (tcp, peer);
            }
            Err(e) => {
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(server = what, error = %e, "accept error; retrying");
                    *last_log = Some(Instant::now());
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Counts connections closed for being over a cap, logged at most once a second.
struct Refusals {
    count: AtomicU64,
}

impl Refusals {
    fn refuse(&self, what: &'static str, metrics: &Metrics, last_log: &mut Option<Instant>) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        metrics.connection_refused(what);
        if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(
                server = what,
                refused = n,
                "too many connections in progress; closed the newest"
            );
            *last_log = Some(Instant::now());
        }
    }
}

/// gRPC's incoming connections: TLS streams whose handshake finished in
/// time. Accepting stops when the stream is dropped (the server stopped).
pub fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: AcceptLimits,
    metrics: Metrics,
) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
        let refusals = Refusals {
            count: AtomicU64::new(0),
        };
        let (mut error_log, mut refusal_log) = (None, None);
        loop {
            let (tcp, peer) = tokio::select! {
                c = accept(&listener, "grpc", &mut error_log) => c,
                _ = tx.closed() => break,
            };
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                drop(tcp);
                refusals.refuse("grpc", &metrics, &mut refusal_log);
                continue;
            };
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            let in_progress = metrics.handshakes_in_progress.clone();
            in_progress.inc();
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await;
                drop(permit);
                in_progress.dec();
                match handshake {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The HTTP listener, capped (see the module docs).
pub struct HttpListener {
    listener: TcpListener,
    limits: AcceptLimits,
    open: Arc<Semaphore>,
    refusals: Refusals,
    metrics: Metrics,
    error_log: Option<Instant>,
    refusal_log: Option<Instant>,
}

impl HttpListener {
    pub fn new(listener: TcpListener, limits: AcceptLimits, metrics: Metrics) -> Self {
        Self {
            listener,
            limits,
            open: Arc::new(Semaphore::new(limits.max_http)),
            refusals: Refusals {
                count: AtomicU64::new(0),
            },
            metrics,
            error_log: None,
            refusal_log: None,
        }
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = HttpConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, peer) = accept(&self.listener, "http", &mut self.error_log).await;
            match self.open.clone().try_acquire_owned() {
                Ok(permit) => {
                    let deadline = tokio::time::sleep(self.limits.handshake_timeout);
                    let conn = HttpConnection {
                        tcp,
                        first_request: Some(Box::pin(deadline)),
                        tail: Vec::with_capacity(4),
                        _permit: permit,
                    };
                    return (conn, peer);
                }
                Err(_) => {
                    drop(tcp);
                    self.refusals
                        .refuse("http", &self.metrics, &mut self.refusal_log);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted HTTP connection: holds its place under the cap, and until
/// the head of its first request has arrived (the blank line ending it) or
/// the hub has written to it, its reads time out at the deadline.
pub struct HttpConnection {
    tcp: TcpStream,
    first_request: Option<Pin<Box<Sleep>>>,
    /// The last bytes read before the head ended (at most 3 kept).
    tail: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

/// Whether `tail` (the last bytes seen) followed by `new` contains the blank
/// line that ends an HTTP/1 request head; `tail` keeps the last 3 bytes.
fn head_ended(tail: &mut Vec<u8>, new: &[u8]) -> bool {
    const END: &[u8] = b"\r\n\r\n";
    tail.extend_from_slice(&new[..new.len().min(END.len())]);
    let ended =
        tail.windows(END.len()).any(|w| w == END) || new.windows(END.len()).any(|w| w == END);
    if new.len() >= END.len() - 1 {
        tail.clear();
        tail.extend_from_slice(&new[new.len() - (END.len() - 1)..]);
    } else {
        // tail now holds the old bytes and all of `new`: keep its last 3.
        let drop = tail.len().saturating_sub(END.len() - 1);
        tail.drain(..drop);
    }
    ended
}

impl AsyncRead for HttpConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(deadline) = self.first_request.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete request before the deadline",
            )));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if self.first_request.is_some() && matches!(read, Poll::Ready(Ok(()))) {
            let this = &mut *self;
            if head_ended(&mut this.tail, &buf.filled()[before..]) {
                this.first_request = None;
            }
        }
        read
    }
}

impl AsyncWrite for HttpConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.first_request = None;
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.first_request = None;
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The rustls configuration of the gRPC server: the hub's certificate, HTTP/2.
pub fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptor, crate::Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |e: &dyn std::fmt::Display| crate::Error::Tls(e.to_string());
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| tls(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::head_ended;

    #[test]
    fn the_end_of_a_request_head_is_found_across_reads() {
        let mut tail = Vec::new();
        assert!(!head_ended(&mut tail, b"GET / HTTP/1.1\r\nHost: x\r"));
        assert!(head_ended(&mut tail, b"\n\r\n"));
        let mut tail = Vec::new();
        for (i, b) in b"GET / HTTP/1.1\r\n\r\n".iter().enumerate() {
            assert_eq!(head_ended(&mut tail, &[*b]), i == 17, "{i}");
        }
        let mut tail = Vec::new();
        assert!(!head_ended(&mut tail, b"\x16\x03\x01\x02\x00"));
        assert!(!head_ended(&mut tail, b""));
    }
}
