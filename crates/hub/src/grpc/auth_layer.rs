//! Authentication for every gRPC method, as a tower layer in front of the
//! service. Open methods are listed explicitly ([`OPEN_METHODS`]); every other
//! request must carry a valid node credential, checked asynchronously (one
//! indexed lookup under a deadline), or it never reaches a handler.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use ganglion_store::NodeRecord;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use crate::auth::Authenticator;

/// The only methods served without a credential.
pub const OPEN_METHODS: &[&str] = &["/ganglion.v1.Hub/Join"];

/// The node a request was authenticated as, in the request's extensions.
#[derive(Clone, Debug)]
pub struct AuthenticatedNode(pub NodeRecord);

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

/// The peer's IP address, from the connection info tonic attaches.
pub fn peer_ip(ext: &axum::http::Extensions) -> Option<IpAddr> {
    ext.get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.get_ref().remote_addr())
        .or_else(|| ext.get::<TcpConnectInfo>().and_then(|i| i.remote_addr()))
        .map(|a| a.ip())
}

impl<S, B> Service<axum::http::Request<B>> for AuthService<S>
where
    S: Service<axum::http::Request<B>, Response = axum::http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        // The clone is not ready yet; swap so the ready one serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            if OPEN_METHODS.contains(&req.uri().path()) {
                return inner.call(req).await;
            }
            let peer = peer_ip(req.extensions());
            let header = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            match auth.node(header, peer).await {
                Ok(node) => {
                    req.extensions_mut().insert(AuthenticatedNode(node));
                    inner.call(req).await
                }
                Err(e) => {
                    tracing::debug!(?peer, path = req.uri().path(), error = %e, "refused");
                    Ok(tonic::Status::from(e).into_http())
                }
            }
        })
    }
}
