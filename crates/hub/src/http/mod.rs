//! The hub's HTTP surface (axum): `/healthz` (open), `/metrics` and
//! `/api/v1/…` (admin bearer token), and the dashboard at `/`.
//!
//! - [`api`]: the JSON API handlers.
//! - [`dashboard`]: the dashboard page (a static shell; its data comes from
//!   the API with the operator's token, so no data is served unauthenticated).

pub mod api;
pub mod body;
pub mod dashboard;
pub mod mirror_writes;
pub mod mirrors;
pub mod tasks;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};

use crate::hub::HubCore;

pub fn router(core: Arc<HubCore>) -> Router {
    let protected = Router::new()
        .route("/metrics", get(api::metrics))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/workers", get(api::workers))
        .route(
            "/api/v1/invites",
            post(api::create_invite).get(api::list_invites),
        )
        .route("/api/v1/invites/{id}", delete(api::revoke_invite))
        .route("/api/v1/nodes", get(api::list_nodes))
        .route("/api/v1/nodes/{name}", get(api::get_node))
        .route("/api/v1/nodes/{name}/policy", put(api::set_policy))
        .route("/api/v1/nodes/{name}/revoke", post(api::revoke_node))
        .route("/api/v1/mirrors/{node}/files", get(mirrors::list))
        .route(
            "/api/v1/mirrors/{node}/file",
            get(mirrors::cat)
                .delete(mirror_writes::rm)
                .merge(
                    put(mirror_writes::put).layer(axum::extract::DefaultBodyLimit::max(
                        crate::mirror::writes::MAX_PUT_BYTES,
                    )),
                ),
        )
        .route("/api/v1/mirrors/{node}/move", post(mirror_writes::mv))
        .route(
            "/api/v1/mirrors/{node}/conflicts",
            get(mirror_writes::conflicts),
        )
        .route(
            "/api/v1/mirrors/{node}/resolve",
            post(mirror_writes::resolve),
        )
        .route("/api/v1/mirrors/{node}/status", get(mirrors::status))
        .route("/api/v1/mirrors/{node}/wait", get(mirrors::wait))
        .route("/api/v1/mirrors/{node}/verify", post(mirrors::verify))
        .route(
            "/api/v1/mirrors/{node}/immutable",
            get(mirrors::immutable_ls)
                .post(mirrors::immutable_add)
                .delete(mirrors::immutable_rm),
        )
        .route("/api/v1/tasks", post(tasks::run).get(tasks::list))
        .route("/api/v1/tasks/{id}", get(tasks::show))
        .route("/api/v1/tasks/{id}/events", get(tasks::events))
        .route("/api/v1/tasks/{id}/cancel", post(tasks::cancel))
        .layer(axum::extract::DefaultBodyLimit::max(4 << 20))
        .layer(middleware::from_fn_with_state(core.clone(), require_admin));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(dashboard::page))
        .merge(protected)
        .with_state(core)
}

/// Refuses any request without a valid admin bearer token (401, nothing runs).
async fn require_admin(
    State(core): State<Arc<HubCore>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    match core.auth.admin(header, Some(peer.ip())) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}
