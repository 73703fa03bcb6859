//! `ganglion invite create|ls|revoke`

use std::process::ExitCode;

use ganglion_api as api;

use super::{out, print_json};
use crate::cli::InviteCommand;
use crate::client::ApiClient;

pub async fn run(cmd: InviteCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        InviteCommand::Create {
            name,
            ttl,
            policy,
            json,
            hub,
        } => {
            let body = api::CreateInvite {
                name,
                ttl,
                policy: policy.map(Into::into),
            };
            let created: api::InviteCreated = ApiClient::locate(&hub)?
                .post("/api/v1/invites", &body)
                .await?;
            if json {
                print_json(&serde_json::json!({
                    "invite": created.invite,
                    "expires_at": created.expires_at,
                    "id": created.id,
                }))?;
            } else {
                out(&created.invite);
            }
        }
        InviteCommand::Ls { json, hub } => {
            let invites: Vec<api::Invite> = ApiClient::locate(&hub)?.get("/api/v1/invites").await?;
            if json {
                print_json(&invites)?;
            } else {
                out(format!(
                    "{:<22} {:<9} {:<16} {:<24}",
                    "ID", "STATE", "NAME", "EXPIRES"
                ));
                for i in invites {
                    let name = i.name.unwrap_or_else(|| "-".into());
                    out(format!(
                        "{:<22} {:<9} {:<16} {:<24}",
                        i.id,
                        i.state.as_str(),
                        name,
                        i.expires_at
                    ));
                }
            }
        }
        InviteCommand::Revoke { id, hub } => {
            let path = format!("/api/v1/invites/{}", encode(&id));
            let _: api::Invite = ApiClient::locate(&hub)?.delete(&path).await?;
            out(format!("invite {id} revoked"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes a path segment (ids and names are plain, but input is not trusted).
pub fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
