//! Invites: `POST /api/v1/invites` creates one, `GET` lists them,
//! `DELETE /api/v1/invites/{id}` revokes one.

use ganglion_core::PolicyMode;
use ganglion_core::invite::InviteState;
use serde::{Deserialize, Serialize};

/// `POST /api/v1/invites`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateInvite {
    /// The only name the node may take.
    pub name: Option<String>,
    /// A duration such as `1h`; default 1h.
    pub ttl: Option<String>,
    /// The policy the node starts with; default strict.
    pub policy: Option<PolicyMode>,
}

/// The answer to [`CreateInvite`]: the invite string, shown once.
#[derive(Debug, Serialize, Deserialize)]
pub struct InviteCreated {
    pub id: String,
    pub invite: String,
    pub expires_at: String,
}

/// An invite as `invite ls --json` prints it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Invite {
    pub id: String,
    pub name: Option<String>,
    pub policy: Option<PolicyMode>,
    pub state: InviteState,
    pub created_at: String,
    pub expires_at: String,
    pub used_at: Option<String>,
    pub used_by: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pin;

    #[test]
    fn create_invite_takes_the_policy_as_a_word_and_refuses_unknown_fields() {
        pin(
            &CreateInvite {
                name: Some("n1".into()),
                ttl: Some("10m".into()),
                policy: Some(PolicyMode::Permissive),
            },
            r#"{"name":"n1","ttl":"10m","policy":"permissive"}"#,
        );
        pin(
            &CreateInvite::default(),
            r#"{"name":null,"ttl":null,"policy":null}"#,
        );
        let empty: CreateInvite = serde_json::from_str("{}").unwrap();
        assert!(empty.policy.is_none());
        assert!(serde_json::from_str::<CreateInvite>(r#"{"policy":"lax"}"#).is_err());
        assert!(serde_json::from_str::<CreateInvite>(r#"{"tll":"1h"}"#).is_err());
    }

    #[test]
    fn invites_as_contract_md_shows_them() {
        pin(
            &InviteCreated {
                id: "inv_1".into(),
                invite: "gi1_abc.01234567".into(),
                expires_at: "2026-01-01T01:00:00Z".into(),
            },
            r#"{"id":"inv_1","invite":"gi1_abc.01234567","expires_at":"2026-01-01T01:00:00Z"}"#,
        );
        for (state, word) in [
            (InviteState::Pending, "pending"),
            (InviteState::Used, "used"),
            (InviteState::Revoked, "revoked"),
            (InviteState::Expired, "expired"),
        ] {
            assert_eq!(state.as_str(), word);
            pin(
                &Invite {
                    id: "inv_1".into(),
                    name: None,
                    policy: Some(PolicyMode::Strict),
                    state,
                    created_at: "2026-01-01T00:00:00Z".into(),
                    expires_at: "2026-01-01T01:00:00Z".into(),
                    used_at: None,
                    used_by: None,
                },
                &format!(
                    r#"{{"id":"inv_1","name":null,"policy":"strict","state":"{word}","created_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T01:00:00Z","used_at":null,"used_by":null}}"#
                ),
            );
        }
    }
}
