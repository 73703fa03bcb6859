//! JSON API handlers: parse, call the hub's parts, shape the answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use ganglion_api as api;
use ganglion_core::{NodeName, Policy, PolicyMode};
use ganglion_store::InviteRecord;

use super::body::JsonBody;
use crate::Error;
use crate::hub::HubCore;
use crate::limits;
use crate::nodes::NodeView;

type Core = State<Arc<HubCore>>;

pub async fn metrics(State(core): Core) -> impl IntoResponse {
    let locks = core.mirrors.locks();
    core.metrics.transfer_locks.set(locks.locks() as i64);
    core.metrics
        .transfers_in_flight
        .set(locks.in_flight() as i64);
    let body = core.metrics.encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

pub async fn status(State(core): Core) -> Json<api::Status> {
    Json(api::Status {
        version: env!("CARGO_PKG_VERSION").into(),
        nodes_online: core.registry.len(),
        workers: core.supervisor.statuses(),
        extra: Default::default(),
    })
}

pub async fn workers(State(core): Core) -> Json<Vec<api::WorkerStatus>> {
    Json(core.supervisor.statuses())
}

pub async fn create_invite(
    State(core): Core,
    JsonBody(req): JsonBody<api::CreateInvite>,
) -> Result<Json<api::InviteCreated>, Error> {
    let name = req
        .name
        .as_deref()
        .map(NodeName::parse)
        .transpose()
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let ttl = req
        .ttl
        .as_deref()
        .map(|t| limits::INVITE_TTL.parse(t))
        .transpose()?;
    let policy = match req.policy {
        Some(PolicyMode::Permissive) => Some(Policy::permissive()),
        Some(PolicyMode::Strict) | None => None,
    };
    let created = core.invites.create(name, ttl, policy).await?;
    Ok(Json(api::InviteCreated {
        id: created.record.id.to_string(),
        invite: created.code,
        expires_at: created.record.expires_at.to_rfc3339(),
    }))
}

fn invite_json(r: &InviteRecord, now: ganglion_core::Timestamp) -> api::Invite {
    api::Invite {
        id: r.id.to_string(),
        name: r.name_scope.as_ref().map(|n| n.to_string()),
        policy: r.policy.as_ref().map(|p| p.mode),
        state: r.state(now),
        created_at: r.created_at.to_rfc3339(),
        expires_at: r.expires_at.to_rfc3339(),
        used_at: r.used_at.map(|t| t.to_rfc3339()),
        used_by: r.used_by.as_ref().map(|n| n.to_string()),
    }
}

pub async fn list_invites(State(core): Core) -> Result<Json<Vec<api::Invite>>, Error> {
    let now = core.clock.now();
    Ok(Json(
        core.invites
            .list()
            .await?
            .iter()
            .map(|r| invite_json(r, now))
            .collect(),
    ))
}

pub async fn revoke_invite(
    State(core): Core,
    Path(id): Path<String>,
) -> Result<Json<api::Invite>, Error> {
    let r = core.invites.revoke(&id).await?;
    Ok(Json(invite_json(&r, core.clock.now())))
}

pub fn node_json(v: &NodeView, mirrors: &crate::mirror::Mirrors) -> api::Node {
    api::Node {
        name: v.record.name.to_string(),
        id: v.record.id.to_string(),
        status: v.state(),
        policy: v.record.policy.mode,
        last_heartbeat: v.last_heartbeat.map(|t| t.to_rfc3339()),
        capabilities: v.record.capabilities.clone(),
        policy_detail: v.record.policy.clone(),
        revoked: v.record.revoked_at.is_some(),
        duplicate: v.duplicate.as_ref().map(|d| api::NodeDuplicate {
            refused_peer: d.refused_peer.map(|p| p.to_string()),
            kept_peer: d.kept_peer.map(|p| p.to_string()),
            at: d.at.to_rfc3339(),
            refused: d.refused,
        }),
        mirror_halted: mirrors.halted_reason(v.record.name.as_str()),
    }
}

pub async fn list_nodes(State(core): Core) -> Result<Json<Vec<api::Node>>, Error> {
    Ok(Json(
        core.nodes
            .list()
            .await?
            .iter()
            .map(|n| node_json(n, &core.mirrors))
            .collect(),
    ))
}

pub async fn get_node(
    State(core): Core,
    Path(name): Path<String>,
) -> Result<Json<api::Node>, Error> {
    Ok(Json(node_json(
        &core.nodes.get(&name).await?,
        &core.mirrors,
    )))
}

pub async fn set_policy(
    State(core): Core,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<api::SetPolicy>,
) -> Result<Json<api::Node>, Error> {
    let mode = req.mode;
    let strict_only =
        !req.allow.is_empty() || req.network || req.allow_shell || req.allow_weak_sandbox;
    if mode == PolicyMode::Permissive && strict_only {
        return Err(Error::InvalidArgument(
            "--allow, --network, --allow-shell and --allow-weak-sandbox apply to strict only"
                .into(),
        ));
    }
    for prog in &req.allow {
        let bad = prog.is_empty() || prog.contains('\0') || prog.len() > 255 || prog.contains(',');
        if bad {
            return Err(Error::InvalidArgument(format!(
                "invalid program name {prog:?}"
            )));
        }
    }
    let policy = Policy {
        mode,
        allow: req.allow,
        network: req.network,
        allow_shell: req.allow_shell,
        allow_weak_sandbox: req.allow_weak_sandbox,
        version: 0,
    };
    Ok(Json(node_json(
        &core.nodes.set_policy(&name, policy).await?,
        &core.mirrors,
    )))
}

pub async fn revoke_node(
    State(core): Core,
    Path(name): Path<String>,
) -> Result<Json<api::Node>, Error> {
    Ok(Json(node_json(
        &core.nodes.revoke(&name).await?,
        &core.mirrors,
    )))
}
