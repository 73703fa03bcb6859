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
