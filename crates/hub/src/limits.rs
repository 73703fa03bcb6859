//! The hub's input limits, in one place: every duration and size an operator
//! or a node may choose is checked against one of these where it enters
//! (HTTP handler, configuration), and refused with a 400 / InvalidArgument
//! naming the field and the bound. README.md lists them.

use std::time::Duration;

use ganglion_core::limit::{DurationLimit, SizeLimit};

const SECOND: Duration = Duration::from_secs(1);

/// A task's wall-clock timeout (`ganglion run --timeout`).
pub const TASK_TIMEOUT: DurationLimit =
    DurationLimit::new("timeout", SECOND, Duration::from_secs(7 * 24 * 3600));

/// Bytes of output a task may forward (`ganglion run --output-cap`). What the
/// hub keeps in memory and in the journal is bounded apart from this
/// ([`crate::tasks::STORED_OUTPUT_CAP`]); this bounds what a node streams.
pub const OUTPUT_CAP: SizeLimit = SizeLimit::new("output_cap", 0, 1 << 30);

/// How long an invite stays valid (`ganglion invite create --ttl`).
pub const INVITE_TTL: DurationLimit =
    DurationLimit::new("ttl", SECOND, Duration::from_secs(30 * 24 * 3600));

/// How long one `mirror wait` request holds at most; a longer `timeout_ms`
/// is cut to this (the CLI asks again until its own timeout).
pub const MIRROR_WAIT: DurationLimit =
    DurationLimit::new("timeout_ms", Duration::ZERO, Duration::from_secs(60));

/// `ganglion mirror wait --timeout` (seconds), in all.
pub const MIRROR_WAIT_TOTAL: DurationLimit = DurationLimit::new(
    "--timeout",
    Duration::ZERO,
    Duration::from_secs(7 * 24 * 3600),
);

/// The interval between node heartbeats (`--heartbeat-interval`).
pub const HEARTBEAT_INTERVAL: DurationLimit = DurationLimit::new(
    "heartbeat_interval",
    Duration::from_millis(100),
    Duration::from_secs(600),
);

/// Heartbeats a node may miss before it is marked offline (`--missed-heartbeats`).
pub const MISSED_HEARTBEATS: SizeLimit = SizeLimit::new("missed_heartbeats", 1, 100);

/// How long a TLS handshake may take (`GANGLION_HANDSHAKE_TIMEOUT`).
pub const HANDSHAKE_TIMEOUT: DurationLimit = DurationLimit::new(
    "handshake_timeout",
    Duration::from_millis(100),
    Duration::from_secs(300),
);

/// How long a node has to send its hello on a new control stream (`hello_deadline`).
pub const HELLO_DEADLINE: DurationLimit = DurationLimit::new(
    "hello_deadline",
    Duration::from_millis(100),
    Duration::from_secs(300),
);

/// How long a credential lookup may take during a handshake (`auth_deadline`).
pub const AUTH_DEADLINE: DurationLimit = DurationLimit::new(
    "auth_deadline",
    Duration::from_millis(100),
    Duration::from_secs(60),
);

/// Failed handshakes an address may make in a burst (`auth_failure_burst`).
pub const AUTH_FAILURE_BURST: SizeLimit = SizeLimit::new("auth_failure_burst", 1, 1_000_000);

/// Failed handshakes per second an address regains (`auth_failure_refill`):
/// more than zero (a limited address must recover), at most this.
pub const AUTH_FAILURE_REFILL_MAX: f64 = 1_000_000.0;

/// How often the hub looks for tasks whose node went silent (`task_lease_period`).
pub const TASK_LEASE_PERIOD: DurationLimit = DurationLimit::new(
    "task_lease_period",
    Duration::from_millis(100),
    Duration::from_secs(3600),
);

/// How often idle mirror transfers are dropped (`transfer_reaper_period`).
pub const TRANSFER_REAPER_PERIOD: DurationLimit = DurationLimit::new(
    "transfer_reaper_period",
    Duration::from_millis(100),
    Duration::from_secs(3600),
);

/// How often orphaned mirrors are trashed and old trash deleted (`orphan_purge_period`).
pub const ORPHAN_PURGE_PERIOD: DurationLimit = DurationLimit::new(
    "orphan_purge_period",
    SECOND,
    Duration::from_secs(7 * 24 * 3600),
);

/// How long a trashed mirror is kept (`orphan_grace`).
pub const ORPHAN_GRACE: DurationLimit = DurationLimit::new(
    "orphan_grace",
    Duration::ZERO,
    Duration::from_secs(365 * 24 * 3600),
);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ganglion_core::time::{ManualClock, SharedClock};
    use ganglion_core::{NodeName, Timestamp};
    use ganglion_store::{JournalStore, SqliteStore};
    use tokio::sync::broadcast::error::TryRecvError;

    use super::*;
    use crate::Error;
    use crate::metrics::Metrics;
    use crate::registry::{ConnectionParts, Registry};
    use crate::tasks::{OutputStream, TaskEvent, TaskRequest, Tasks, WATCH_BUFFER_EVENTS};

    async fn tasks() -> (Arc<SqliteStore>, Tasks, ConnectionParts) {
        let store = Arc::new(SqliteStore::in_memory().await.unwrap());
        let a = crate::test_support::joined_node(store.as_ref(), "a").await;
        let registry = Registry::new(Metrics::default());
        let clock: SharedClock = Arc::new(ManualClock::new(Timestamp(1_000)));
        let tasks = Tasks::new(store.clone(), registry.clone(), clock);
        let conn = registry.register(a.id, NodeName::parse("a").unwrap(), None, Timestamp(0));
        (store, tasks, conn)
    }

    fn spec(timeout: Option<Duration>, output_cap: Option<u64>) -> TaskRequest {
        TaskRequest {
            argv: vec!["true".into()],
            cwd: None,
            env: Vec::new(),
            timeout,
            output_cap,
        }
    }

    /// Issue 12 item 3: the timeout that overflowed the lease arithmetic (and
    /// then every later submission) is refused before anything is journaled;
    /// the largest accepted values are journaled and dispatched.
    #[tokio::test]
    async fn tasks_out_of_range_are_refused_before_the_journal() {
        let (store, tasks, _conn) = tasks().await;
        for s in [
            spec(Some(Duration::from_secs(u64::MAX)), None),
            spec(Some(TASK_TIMEOUT.max + SECOND), None),
            spec(Some(Duration::from_millis(10)), None),
            spec(None, Some(u64::MAX)),
        ] {
            let e = tasks.submit("a", s).await.unwrap_err();
            assert!(matches!(e, Error::OutOfRange(_)), "{e}");
            assert_eq!(e.http_status(), axum::http::StatusCode::BAD_REQUEST);
        }
        assert!(
            store
                .list_tasks(&Default::default())
                .await
                .unwrap()
                .is_empty()
        );
        tasks
            .submit("a", spec(Some(TASK_TIMEOUT.max), Some(OUTPUT_CAP.max)))
            .await
            .unwrap();
        // The lease arithmetic of the longest timeout does not overflow.
        let far = tokio::time::Instant::now() + TASK_TIMEOUT.max * 2;
        assert_eq!(tasks.expire_leases(far).await.unwrap(), 1);
        assert_eq!(tasks.live_count(), 0);
    }

    /// A panic while the live table is locked does not poison it: the next
    /// request goes on.
    #[tokio::test]
    async fn a_panic_holding_the_task_table_does_not_stop_later_tasks() {
        let (_store, tasks, _conn) = tasks().await;
        let tasks = Arc::new(tasks);
        let t = tasks.clone();
        let panicked = std::thread::spawn(move || t.with_live_for_test(|| panic!("boom"))).join();
        assert!(panicked.is_err());
        tasks.submit("a", spec(None, None)).await.unwrap();
        assert_eq!(tasks.live_count(), 1);
    }

    /// Item 8: a watcher that does not read holds the hub to a bounded ring;
    /// it learns how much it missed, then sees the end.
    #[tokio::test]
    async fn a_watcher_that_does_not_read_is_bounded_and_told_what_it_missed() {
        let (_store, tasks, _conn) = tasks().await;
        let (id, mut rx) = tasks.submit("a", spec(None, None)).await.unwrap();
        let node = tasks.node_of_for_test(&id).unwrap();
        let n = WATCH_BUFFER_EVENTS as u64 * 4;
        for seq in 0..n {
            tasks.on_output(&node, &id, seq, OutputStream::Stdout, vec![b'x'; 64 << 10]);
        }
        match rx.try_recv() {
            Err(TryRecvError::Lagged(missed)) => {
                assert_eq!(missed, n - WATCH_BUFFER_EVENTS as u64)
            }
            other => panic!("expected a lag, got {other:?}"),
        }
        let mut kept = 0;
        while let Ok(TaskEvent::Output { .. }) = rx.try_recv() {
            kept += 1;
        }
        assert_eq!(kept, WATCH_BUFFER_EVENTS);
    }
}
