//! Layered configuration, the same for the hub and the node: flag >
//! `GANGLION_*` environment > TOML file (`--config FILE`) > default. clap
//! resolves flag and environment; this adds the file and the defaults, checks
//! every value against its bound, and prints the result for `--print-config`
//! as a TOML file that would reproduce it. Unknown keys in a file are an
//! error (a typo must not pass silently).
//!
//! - [`hub`]: `ganglion hub` and `ganglion up`.
//! - [`node`]: `ganglion node join|start`.

pub mod hub;
pub mod node;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use ganglion_core::limit::DurationLimit;
use serde::de::DeserializeOwned;

pub use hub::{DEFAULT_DATA_DIR, hub_options, print};
pub use node::{NodeConfig, node_config};

/// Reads a TOML file of shape `T`, or `T::default()` when there is none.
fn read_file<T: DeserializeOwned + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config {}", path.display()))
}

/// The flag (or its variable) if given, else the file's value; checked
/// against its bound. `None` when neither says anything.
fn duration(
    flag: Option<&String>,
    file: Option<&String>,
    limit: DurationLimit,
) -> anyhow::Result<Option<Duration>> {
    Ok(flag.or(file).map(|v| limit.parse(v)).transpose()?)
}
