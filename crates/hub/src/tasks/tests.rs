//! The task table's unit tests.

use ganglion_core::time::ManualClock;
use ganglion_core::{NodeId, NodeName, Timestamp};
use ganglion_store::{JournalStore, SqliteStore, TaskStatus};

use super::*;
use crate::metrics::Metrics;

async fn node(store: &SqliteStore, name: &str) -> NodeId {
    crate::test_support::joined_node(store, name).await.id
}

fn report(end: NodeEnd, late: bool) -> NodeReport {
    NodeReport {
        end,
        output_bytes: 3,
        output_truncated: false,
        late,
    }
}

/// Output, starts and results for tasks a node was never given (another
/// node's, or unknown ids, late or not) change nothing and reach no watcher.
#[tokio::test]
async fn reports_for_tasks_a_node_was_not_given_are_ignored() {
    let store = Arc::new(SqliteStore::in_memory().await.unwrap());
    let (a, b) = (node(&store, "a").await, node(&store, "b").await);
    let registry = Registry::new(Metrics::default());
    let clock: SharedClock = Arc::new(ManualClock::new(Timestamp(1_000)));
    let tasks = Tasks::new(store.clone(), registry.clone(), clock.clone());
    let na = NodeName::parse("a").unwrap();
    let _conn_a = registry.register(a.clone(), na, None, Timestamp(0));
    let spec = TaskRequest {
        argv: vec!["true".into()],
        cwd: None,
        env: Vec::new(),
        timeout: None,
        output_cap: None,
    };
    let (id, mut rx) = tasks.submit("a", spec).await.unwrap();

    // Node b reports on a's task; then both report on a task that does not exist.
    let unknown = TaskId::generate();
    for (node, task) in [(&b, &id), (&a, &unknown), (&b, &unknown)] {
        tasks.on_started(node, task, 42).await.unwrap();
        tasks.on_output(node, task, 0, OutputStream::Stdout, b"bad".to_vec());
        tasks
            .on_finished(node, task, report(NodeEnd::Exited(0), false))
            .await
            .unwrap();
        tasks
            .on_finished(node, task, report(NodeEnd::Exited(0), true))
            .await
            .unwrap();
    }
    assert!(rx.try_recv().is_err(), "a watcher saw a foreign report");
    let rec = store.get_task(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TaskStatus::Pending);
    assert!(rec.stdout.is_empty());
    assert_eq!(tasks.live_count(), 1);
    assert!(store.get_task(&unknown).await.unwrap().is_none());

    // The owner's reports still count; a result it marks late for a task
    // the hub never failed settles it as usual.
    tasks.on_started(&a, &id, 7).await.unwrap();
    tasks.on_output(&a, &id, 0, OutputStream::Stdout, b"ok\n".to_vec());
    tasks
        .on_finished(&a, &id, report(NodeEnd::Exited(0), true))
        .await
        .unwrap();
    let rec = store.get_task(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TaskStatus::Succeeded);
    assert_eq!(rec.stdout, b"ok\n");
    assert_eq!(tasks.live_count(), 0);
    assert!(matches!(rx.try_recv(), Ok(TaskEvent::Started { pid: 7 })));
    assert!(matches!(
        rx.try_recv(),
        Ok(TaskEvent::Output { seq: 0, .. })
    ));
    assert!(matches!(rx.try_recv(), Ok(TaskEvent::Finished(_))));
}

/// A journal whose writer failed refuses a submission at once with an error
/// that says so (503), instead of hanging or losing the task.
#[tokio::test]
async fn a_failed_journal_writer_refuses_submissions_clearly() {
    let store = Arc::new(SqliteStore::in_memory().await.unwrap());
    let a = node(&store, "a").await;
    let registry = Registry::new(Metrics::default());
    let clock: SharedClock = Arc::new(ManualClock::new(Timestamp(1_000)));
    let tasks = Tasks::new(store.clone(), registry.clone(), clock);
    let _conn = registry.register(a, NodeName::parse("a").unwrap(), None, Timestamp(0));
    store.inject_journal_panic();
    for _ in 0..2 {
        let spec = TaskRequest {
            argv: vec!["true".into()],
            cwd: None,
            env: Vec::new(),
            timeout: None,
            output_cap: None,
        };
        let e = tasks.submit("a", spec).await.unwrap_err();
        assert_eq!(e.http_status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            e.to_string(),
            "the task journal's writer failed (panicked: injected fault); restart the hub"
        );
    }
    assert_eq!(tasks.live_count(), 0, "nothing half-submitted stays");
    assert_eq!(
        store.journal_writer(),
        ganglion_store::WriterState::Failed("panicked: injected fault".into())
    );
}
