//! [`JournalStore`](ganglion_store::JournalStore): tasks and their history.

use ganglion_core::NodeId;
use ganglion_store::{Error, Store};

use crate::common::{T0, joined};

pub async fn records_changes_and_late_results(store: &dyn Store) {
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
pub async fn concurrent_writes_answer_each_caller(store: &dyn Store) {
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
