//! A task as the hub hands it to a node: the one domain form of a dispatch,
//! on both sides of the control stream (`ganglion-proto` converts it).

use std::time::Duration;

use crate::{RelPath, TaskId};

/// A task sent to its node to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    pub id: TaskId,
    pub argv: Vec<String>,
    /// Working directory inside the workspace; the workspace itself when `None`.
    pub cwd: Option<RelPath>,
    pub env: Vec<(String, String)>,
    /// Wall-clock limit from the start; none when `None`.
    pub timeout: Option<Duration>,
    /// Bytes of output the node streams at most.
    pub output_cap: u64,
}
