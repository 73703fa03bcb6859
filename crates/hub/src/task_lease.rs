//! The task lease monitor: a supervised worker that fails tasks whose node
//! stays connected but never reports their end, so nothing stays `running`
//! forever.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::tasks::Tasks;
use crate::worker::Periodic;

pub struct TaskLeaseMonitor {
    pub tasks: Arc<Tasks>,
    pub every: Duration,
}

#[async_trait]
impl Periodic for TaskLeaseMonitor {
    fn name(&self) -> &'static str {
        "task-lease-monitor"
    }

    fn period(&self) -> Duration {
        self.every
    }

    async fn tick(&mut self) -> Result<(), String> {
        let now = tokio::time::Instant::now();
        self.tasks
            .expire_leases(now)
            .await
            .map(|_| ())
            .map_err(|e| format!("expiring task leases: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use ganglion_core::{SystemClock, Timestamp};
    use ganglion_store::{SqliteStore, Store, TaskStatus};

    use crate::metrics::Metrics;
    use crate::registry::Registry;
    use crate::tasks::{LEASE_GRACE, TaskEvent, TaskRequest};

    use super::*;

    #[tokio::test]
    async fn a_task_whose_node_never_reports_fails_when_its_lease_runs_out() {
        let store = SqliteStore::in_memory().await.unwrap();
        let node = crate::test_support::joined_node(&store, "n1").await;
        let store: Arc<dyn Store> = Arc::new(store);
        let registry = Registry::new(Metrics::new());
        // A connected node that will never answer.
        let _parts = registry.register(node.id.clone(), node.name.clone(), None, Timestamp(0));
        let tasks = Arc::new(Tasks::new(store.clone(), registry, Arc::new(SystemClock)));
        let spec = TaskRequest {
            argv: vec!["sleep".into(), "1".into()],
            cwd: None,
            env: vec![],
            timeout: Some(Duration::from_secs(10)),
            output_cap: None,
        };
        let (id, mut events) = tasks.submit("n1", spec).await.unwrap();
        let t0 = tokio::time::Instant::now();
        let lease = Duration::from_secs(10) + LEASE_GRACE;
        let early = t0 + lease - Duration::from_secs(1);
        assert_eq!(
            tasks.expire_leases(early).await.unwrap(),
            0,
            "still within its lease"
        );
        assert_eq!(
            tasks
                .expire_leases(t0 + lease + Duration::from_secs(1))
                .await
                .unwrap(),
            1
        );
        let rec = store.get_task(&id).await.unwrap().unwrap();
        assert_eq!(rec.status, TaskStatus::Failed);
        assert!(rec.error.unwrap().contains("lease expired"));
        let mut finished = false;
        while let Ok(e) = events.try_recv() {
            finished |= matches!(e, TaskEvent::Finished(_));
        }
        assert!(finished, "watchers are told");
        assert_eq!(tasks.live_count(), 0);
    }
}
