//! One behavioural suite, run against every backend (SQLite now; PostgreSQL
//! will add one line to `backends!`).

use std::time::Duration;

use ganglion_core::secret::Purpose;
use ganglion_core::{Capabilities, InviteId, NodeId, NodeName, Policy, Secret, Timestamp};
use ganglion_store::{
    Credential, Error, InviteRefusal, NewInvite, NodeState, Redemption, StatusUpdate, Store,
};

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn name(s: &str) -> NodeName {
    NodeName::parse(s).unwrap()
}

fn invite(secret: &Secret, scope: Option<&str>) -> NewInvite {
    NewInvite {
        id: InviteId::generate(),
        secret_hash: secret.hash(Purpose::Invite),
        name_scope: scope.map(name),
        policy: None,
        created_at: T0,
        expires_at: T0.saturating_add(Duration::from_secs(3600)),
    }
}

fn redemption(secret: &Secret, asked: Option<&str>, now: Timestamp) -> Redemption {
    Redemption {
        invite_hash: secret.hash(Purpose::Invite),
        name: asked.map(name),
        default_name: None,
        node_id: NodeId::generate(),
        credential: Credential {
            hash: Secret::generate().hash(Purpose::NodeCredential),
        },
        capabilities: Capabilities::default(),
        now,
    }
}

/// A node that joined by an unscoped invite.
async fn joined(store: &dyn Store, name: &str) -> ganglion_store::NodeRecord {
    let s = Secret::generate();
    store.create_invite(&invite(&s, None)).await.unwrap();
    store
        .redeem_invite(&redemption(&s, Some(name), T0))
        .await
        .unwrap()
}

async fn redeem_is_single_use(store: &dyn Store) {
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

async fn refusals_write_nothing(store: &dyn Store) {
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

async fn policy_status_and_revocation(store: &dyn Store) {
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
        status: NodeState::Online,
        last_heartbeat: Some(T0),
        peer_addr: Some("127.0.0.1:5000".into()),
        capabilities: Some(caps.clone()),
        at: T0,
    };
    store.update_status(&[up]).await.unwrap();
    let n = store.node_by_name(&node.name).await.unwrap().unwrap();
    assert_eq!(n.status, NodeState::Online);
    assert_eq!(n.last_heartbeat, Some(T0));
    assert_eq!(n.capabilities, Some(caps));
    store.mark_all_offline(T0).await.unwrap();
    let n = store.node_by_name(&node.name).await.unwrap().unwrap();
    assert_eq!(n.status, NodeState::Offline);
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

async fn admin_tokens(store: &dyn Store) {
    let t = Secret::generate().hash(Purpose::AdminToken);
    store.add_admin_token(&t, T0).await.unwrap();
    assert_eq!(store.admin_token_hashes().await.unwrap(), vec![t]);
    assert!(matches!(
        store.add_admin_token(&t, T0).await,
        Err(Error::AlreadyExists { .. })
    ));
}

async fn journal_records_changes_and_late_results(store: &dyn Store) {
    use ganglion_core::TaskId;
    use ganglion_store::{EndApplied, NewTask, StoredOutput, TaskEnd, TaskFilter, TaskStatus};
    let node = joined(store, "n1").await;
    let new = |id: &TaskId| NewTask {
        id: id.clone(),
        node_id: node.id.clone(),
        argv: vec!["echo".into(), "hi".into()],
        cwd: None,
        timeout_ms: Some(1000),
        created_at: T0,
    };
    let done = TaskId::generate();
    store.create_task(&new(&done)).await.unwrap();
    assert!(store.mark_task_running(&done, T0).await.unwrap());
    assert!(
        !store.mark_task_running(&done, T0).await.unwrap(),
        "only pending tasks start"
    );
    let end = TaskEnd {
        id: done.clone(),
        status: TaskStatus::Succeeded,
        exit_code: Some(0),
        error: None,
        output: Some(StoredOutput {
            stdout: b"hi\n".to_vec(),
            stderr: vec![],
            bytes: 3,
            truncated: false,
        }),
        late: false,
        lost: false,
        at: T0,
    };
    assert_eq!(
        store.finish_task(&end).await.unwrap().applied,
        EndApplied::Finished
    );
    assert_eq!(
        store.finish_task(&end).await.unwrap().applied,
        EndApplied::Ignored,
        "a final task stays final"
    );
    let rec = store.get_task(&done).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.exit_code, rec.stdout.as_slice()),
        (TaskStatus::Succeeded, Some(0), &b"hi\n"[..])
    );
    let statuses: Vec<_> = rec.history.iter().map(|h| h.status).collect();
    assert_eq!(
        statuses,
        [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::Succeeded
        ]
    );

    let lost = TaskId::generate();
    store.create_task(&new(&lost)).await.unwrap();
    store.mark_task_running(&lost, T0).await.unwrap();
    let failed = store
        .fail_unfinished_tasks(Some(&node.id), "node lost", T0)
        .await
        .unwrap();
    assert_eq!(failed, vec![lost.clone()]);
    let late = TaskEnd {
        id: lost.clone(),
        late: true,
        ..end.clone()
    };
    assert_eq!(
        store.finish_task(&late).await.unwrap().applied,
        EndApplied::LateResult
    );
    let rec = store.get_task(&lost).await.unwrap().unwrap();
    assert_eq!(rec.status, TaskStatus::Succeeded);
    assert_eq!(
        rec.error.as_deref(),
        Some("node lost"),
        "the disconnection stays on record"
    );
    assert_eq!(rec.history.len(), 4);

    let by_node = TaskFilter {
        node_id: Some(node.id.clone()),
        ..Default::default()
    };
    assert_eq!(store.list_tasks(&by_node).await.unwrap().len(), 2);
    let pending = TaskFilter {
        status: Some(TaskStatus::Pending),
        ..Default::default()
    };
    assert!(store.list_tasks(&pending).await.unwrap().is_empty());
    let missing = store
        .finish_task(&TaskEnd {
            id: TaskId::generate(),
            ..end
        })
        .await;
    assert!(matches!(missing, Err(Error::NotFound { .. })));
}

/// Concurrent journal writes (which the SQLite backend group-commits) each
/// get their own answer: a bad task fails alone, a repeated start or end is
/// applied once, and the returned record is the stored one.
async fn journal_concurrent_writes_answer_each_caller(store: &dyn Store) {
    use futures::future::join_all;
    use ganglion_core::TaskId;
    use ganglion_store::{EndApplied, NewTask, TaskEnd, TaskStatus};
    let node = joined(store, "n1").await;
    let new = |id: &TaskId, node_id: &NodeId| NewTask {
        id: id.clone(),
        node_id: node_id.clone(),
        argv: vec!["true".into()],
        cwd: None,
        timeout_ms: None,
        created_at: T0,
    };
    let ids: Vec<TaskId> = (0..200).map(|_| TaskId::generate()).collect();
    let stranger = NodeId::generate();
    let mut creates: Vec<_> = ids.iter().map(|id| new(id, &node.id)).collect();
    creates.insert(100, new(&TaskId::generate(), &stranger));
    creates.insert(150, new(&ids[3], &node.id));
    let created = join_all(creates.iter().map(|t| store.create_task(t))).await;
    let failed: Vec<usize> = (0..created.len())
        .filter(|i| created[*i].is_err())
        .collect();
    assert_eq!(
        failed,
        [100, 150],
        "only the task of an unknown node and the repeated id fail"
    );
    assert!(matches!(created[150], Err(Error::AlreadyExists { .. })));

    let starts = join_all(
        ids.iter()
            .chain(std::iter::once(&ids[7]))
            .map(|id| store.mark_task_running(id, T0)),
    )
    .await;
    let started = starts.iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(started, 200, "a repeated start is applied once");

    let end = |id: &TaskId, code: i32| TaskEnd {
        id: id.clone(),
        status: if code == 0 {
            TaskStatus::Succeeded
        } else {
            TaskStatus::Failed
        },
        exit_code: Some(code),
        error: None,
        output: None,
        late: false,
        lost: false,
        at: T0,
    };
    let mut ends: Vec<TaskEnd> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| end(id, i as i32 % 3))
        .collect();
    ends.push(end(&ids[9], 5));
    let ended = join_all(ends.iter().map(|e| store.finish_task(e))).await;
    let applied: Vec<EndApplied> = ended.iter().map(|r| r.as_ref().unwrap().applied).collect();
    assert_eq!(
        applied
            .iter()
            .filter(|a| **a == EndApplied::Finished)
            .count(),
        200
    );
    assert_eq!(
        applied[200],
        EndApplied::Ignored,
        "the second end of a task is ignored"
    );
    for (e, r) in ends.iter().zip(&ended).take(200) {
        let r = r.as_ref().unwrap();
        assert_eq!(r.record, store.get_task(&e.id).await.unwrap().unwrap());
        assert_eq!(r.record.exit_code, e.exit_code);
        assert_eq!(r.record.node_name.as_str(), "n1");
        let statuses: Vec<_> = r.record.history.iter().map(|h| h.status).collect();
        assert_eq!(
            statuses,
            [TaskStatus::Pending, TaskStatus::Running, e.status]
        );
    }
}

async fn immutable_patterns(store: &dyn Store) {
    let node = joined(store, "n1").await;
    assert!(
        store
            .add_immutable(&node.id, "secrets/**", T0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .add_immutable(&node.id, "secrets/**", T0)
            .await
            .unwrap(),
        "added once"
    );
    assert!(store.add_immutable(&node.id, "*.lock", T0).await.unwrap());
    assert_eq!(store.immutable_patterns(&node.id).await.unwrap().len(), 2);
    assert!(store.remove_immutable(&node.id, "*.lock").await.unwrap());
    assert!(!store.remove_immutable(&node.id, "*.lock").await.unwrap());
    assert_eq!(
        store.immutable_patterns(&node.id).await.unwrap(),
        vec!["secrets/**".to_owned()]
    );
}

macro_rules! backends {
    ($($backend:ident => $open:expr;)*) => {$(
        mod $backend {
            use super::*;
            #[tokio::test] async fn redeem_is_single_use() { let (s, _d) = $open; super::redeem_is_single_use(&s).await }
            #[tokio::test] async fn refusals_write_nothing() { let (s, _d) = $open; super::refusals_write_nothing(&s).await }
            #[tokio::test] async fn policy_status_and_revocation() { let (s, _d) = $open; super::policy_status_and_revocation(&s).await }
            #[tokio::test] async fn admin_tokens() { let (s, _d) = $open; super::admin_tokens(&s).await }
            #[tokio::test] async fn immutable_patterns() { let (s, _d) = $open; super::immutable_patterns(&s).await }
            #[tokio::test] async fn journal_records_changes_and_late_results() { let (s, _d) = $open; super::journal_records_changes_and_late_results(&s).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn journal_concurrent_writes_answer_each_caller() { let (s, _d) = $open; super::journal_concurrent_writes_answer_each_caller(&s).await }
        }
    )*};
}

async fn sqlite() -> (ganglion_store::SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = ganglion_store::SqliteStore::open(&dir.path().join("hub.db"))
        .await
        .unwrap();
    (store, dir)
}

backends! {
    sqlite_file => sqlite().await;
}

/// The lookups on hot paths use indexes, not table scans.
#[tokio::test]
async fn hot_lookups_use_indexes() {
    let (store, _dir) = sqlite().await;
    let plans = [
        (
            "SELECT node_id FROM node_credentials WHERE hash = x'00'",
            "node_credentials",
        ),
        (
            "SELECT id FROM invites WHERE secret_hash = x'00'",
            "invites",
        ),
        ("SELECT id FROM nodes WHERE name = 'a'", "nodes"),
        (
            "SELECT hash FROM node_credentials WHERE node_id = 'a'",
            "node_credentials",
        ),
        (
            "SELECT id FROM tasks WHERE node_id = 'a' ORDER BY created_at DESC",
            "tasks",
        ),
        ("SELECT id FROM tasks WHERE status = 'running'", "tasks"),
    ];
    for (sql, table) in plans {
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(store.pool())
                .await
                .unwrap();
        let detail = rows
            .iter()
            .map(|r| r.3.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        assert!(
            detail.contains("USING INDEX")
                || detail.contains("USING PRIMARY KEY")
                || detail.contains("USING COVERING INDEX"),
            "{table}: {detail}"
        );
    }
}
