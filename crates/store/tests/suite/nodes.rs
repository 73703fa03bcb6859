//! [`NodeStore`](ganglion_store::NodeStore): invites, nodes, credentials,
//! admin tokens.

use std::time::Duration;

use ganglion_core::secret::Purpose;
use ganglion_core::{Capabilities, InviteId, Policy, Secret};
use ganglion_store::{Error, InviteRefusal, NodeStatus, StatusUpdate, Store};

use crate::common::{T0, invite, joined, name, redemption};

pub async fn redeem_is_single_use(store: &dyn Store) {
    let s = Secret::generate();
    store.create_invite(&invite(&s, None)).await.unwrap();
    let r = redemption(&s, Some("n1"), T0);
    let node = store.redeem_invite(&r).await.unwrap();
    assert_eq!(node.name.as_str(), "n1");
    assert_eq!(node.policy, Policy::strict(), "a fresh node is strict");
    let found = store
        .node_by_credential(&r.credential.hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, node.id);
    let again = store.redeem_invite(&redemption(&s, Some("n2"), T0)).await;
    assert!(
        matches!(again, Err(Error::Invite(InviteRefusal::Used))),
        "{again:?}"
    );
    assert!(store.node_by_name(&name("n2")).await.unwrap().is_none());
    let inv = &store.list_invites().await.unwrap()[0];
    assert_eq!(inv.used_by.as_ref(), Some(&node.id));
}

pub async fn refusals_write_nothing(store: &dyn Store) {
    let expired = Secret::generate();
    store.create_invite(&invite(&expired, None)).await.unwrap();
    let late = T0.saturating_add(Duration::from_secs(3601));
    let e = store
        .redeem_invite(&redemption(&expired, Some("a"), late))
        .await;
    assert!(
        matches!(e, Err(Error::Invite(InviteRefusal::Expired(_)))),
        "{e:?}"
    );

    let scoped = Secret::generate();
    store
        .create_invite(&invite(&scoped, Some("web")))
        .await
        .unwrap();
    let e = store
        .redeem_invite(&redemption(&scoped, Some("db"), T0))
        .await;
    assert!(
        matches!(e, Err(Error::Invite(InviteRefusal::NameScope { .. }))),
        "{e:?}"
    );
    // The scoped invite is still usable by the right name after a refusal.
    let node = store
        .redeem_invite(&redemption(&scoped, None, T0))
        .await
        .unwrap();
    assert_eq!(node.name.as_str(), "web");

    let taken = Secret::generate();
    store.create_invite(&invite(&taken, None)).await.unwrap();
    let e = store
        .redeem_invite(&redemption(&taken, Some("web"), T0))
        .await;
    assert!(
        matches!(e, Err(Error::Invite(InviteRefusal::NameTaken(_)))),
        "{e:?}"
    );
    let inv = store.list_invites().await.unwrap();
    let inv = inv
        .iter()
        .find(|i| i.used_at.is_none() && i.revoked_at.is_none())
        .unwrap();
    assert_eq!(
        inv.state(T0).as_str(),
        "pending",
        "a refused redemption leaves the invite unused"
    );

    let revoked = Secret::generate();
    let rec = store.create_invite(&invite(&revoked, None)).await.unwrap();
    store.revoke_invite(&rec.id, T0).await.unwrap();
    let e = store
        .redeem_invite(&redemption(&revoked, Some("x"), T0))
        .await;
    assert!(
        matches!(e, Err(Error::Invite(InviteRefusal::Revoked))),
        "{e:?}"
    );

    let unknown = store
        .redeem_invite(&redemption(&Secret::generate(), Some("y"), T0))
        .await;
    assert!(
        matches!(unknown, Err(Error::Invite(InviteRefusal::Unknown))),
        "{unknown:?}"
    );
    let missing = store.revoke_invite(&InviteId::generate(), T0).await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
    assert_eq!(store.list_nodes().await.unwrap().len(), 1);
}

pub async fn policy_status_and_revocation(store: &dyn Store) {
    let node = joined(store, "n1").await;
    let p = store
        .set_policy(&node.name, &Policy::permissive())
        .await
        .unwrap();
    assert_eq!(p.policy.mode, ganglion_core::PolicyMode::Permissive);
    assert_eq!(p.policy.version, node.policy.version + 1);

    let caps = Capabilities {
        os: "linux".into(),
        cores: 2,
        ..Default::default()
    };
    let up = StatusUpdate {
        node_id: node.id.clone(),
        status: NodeStatus::Online,
        last_heartbeat: Some(T0),
        peer_addr: Some("127.0.0.1:5000".into()),
        capabilities: Some(caps.clone()),
        at: T0,
    };
    store.update_status(&[up]).await.unwrap();
    let n = store.node_by_name(&node.name).await.unwrap().unwrap();
    assert_eq!(n.status, NodeStatus::Online);
    assert_eq!(n.last_heartbeat, Some(T0));
    assert_eq!(n.capabilities, Some(caps));
    store.mark_all_offline(T0).await.unwrap();
    let n = store.node_by_name(&node.name).await.unwrap().unwrap();
    assert_eq!(n.status, NodeStatus::Offline);
    assert_eq!(
        n.last_heartbeat,
        Some(T0),
        "offline keeps the last heartbeat"
    );

    let r = store.revoke_node(&node.name, T0).await.unwrap();
    assert_eq!(r.revoked_at, Some(T0));
    let missing = store.revoke_node(&name("ghost"), T0).await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
}

pub async fn admin_tokens(store: &dyn Store) {
    let t = Secret::generate().hash(Purpose::AdminToken);
    store.add_admin_token(&t, T0).await.unwrap();
    assert_eq!(store.admin_token_hashes().await.unwrap(), vec![t]);
    assert!(matches!(
        store.add_admin_token(&t, T0).await,
        Err(Error::AlreadyExists { .. })
    ));
}
