//! The node's configuration (`ganglion node join|start`).
//!
//! Every key of the file, with its flag and variable (README.md's
//! configuration section lists them too):
//!
//! | key                 | flag                  | variable                     | default         |
//! |---------------------|-----------------------|------------------------------|-----------------|
//! | state_dir           | --state-dir           | GANGLION_STATE_DIR           | ./ganglion-node |
//! | report_grace        | --report-grace        | GANGLION_REPORT_GRACE        | 1m              |
//! | reconnect_delay     | --reconnect-delay     | GANGLION_RECONNECT_DELAY     | 50ms            |
//! | reconnect_delay_max | --reconnect-delay-max | GANGLION_RECONNECT_DELAY_MAX | 30s             |

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use ganglion_core::limit::DurationLimit;
use ganglion_core::time::format_duration;
use serde::{Deserialize, Serialize};

use super::{duration, read_file};
use crate::cli::NodeFlags;

pub const DEFAULT_STATE_DIR: &str = "./ganglion-node";

/// How long tasks keep running while the node cannot report them.
pub const REPORT_GRACE: DurationLimit = DurationLimit::new(
    "report_grace",
    Duration::from_secs(1),
    Duration::from_secs(7 * 24 * 3600),
);

/// The first wait before reconnecting (it doubles up to the maximum).
pub const RECONNECT_DELAY: DurationLimit = DurationLimit::new(
    "reconnect_delay",
    Duration::from_millis(1),
    Duration::from_secs(60),
);

/// The longest wait between reconnection attempts.
pub const RECONNECT_DELAY_MAX: DurationLimit = DurationLimit::new(
    "reconnect_delay_max",
    Duration::from_millis(100),
    Duration::from_secs(3600),
);

/// The node's settings, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub state_dir: PathBuf,
    pub report_grace: Duration,
    pub reconnect_delay: Duration,
    pub reconnect_delay_max: Duration,
}

impl Default for NodeConfig {
    /// The same values as the node's own defaults (`AgentOptions::new`).
    fn default() -> Self {
        Self {
            state_dir: DEFAULT_STATE_DIR.into(),
            report_grace: Duration::from_secs(60),
            reconnect_delay: Duration::from_millis(50),
            reconnect_delay_max: Duration::from_secs(30),
        }
    }
}

/// The TOML file's shape; unknown keys are an error (typos must not pass silently).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub state_dir: Option<PathBuf>,
    pub report_grace: Option<String>,
    pub reconnect_delay: Option<String>,
    pub reconnect_delay_max: Option<String>,
}

/// Resolves the node's settings from flags/env, the file, and defaults.
pub fn node_config(flags: &NodeFlags) -> anyhow::Result<NodeConfig> {
    let file: FileConfig = read_file(flags.config.as_deref())?;
    let mut c = NodeConfig::default();
    if let Some(d) = flags.state_dir.clone().or(file.state_dir) {
        c.state_dir = d;
    }
    let fields = [
        (
            &flags.report_grace,
            &file.report_grace,
            REPORT_GRACE,
            &mut c.report_grace,
        ),
        (
            &flags.reconnect_delay,
            &file.reconnect_delay,
            RECONNECT_DELAY,
            &mut c.reconnect_delay,
        ),
        (
            &flags.reconnect_delay_max,
            &file.reconnect_delay_max,
            RECONNECT_DELAY_MAX,
            &mut c.reconnect_delay_max,
        ),
    ];
    for (flag, file, limit, value) in fields {
        if let Some(d) = duration(flag.as_ref(), file.as_ref(), limit)? {
            *value = d;
        }
    }
    if c.reconnect_delay > c.reconnect_delay_max {
        bail!(
            "reconnect_delay {} is more than reconnect_delay_max {}",
            format_duration(c.reconnect_delay),
            format_duration(c.reconnect_delay_max)
        );
    }
    Ok(c)
}

/// The effective configuration, as a TOML file that would reproduce it.
pub fn print(c: &NodeConfig) -> String {
    let file = FileConfig {
        state_dir: Some(c.state_dir.clone()),
        report_grace: Some(format_duration(c.report_grace)),
        reconnect_delay: Some(format_duration(c.reconnect_delay)),
        reconnect_delay_max: Some(format_duration(c.reconnect_delay_max)),
    };
    toml::to_string(&file).expect("serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(
            &dir,
            "state_dir = \"/srv/node\"\nreport_grace = \"5m\"\nreconnect_delay = \"1s\"\n",
        );
        let flags = NodeFlags {
            config: Some(path),
            report_grace: Some("2s".into()),
            ..Default::default()
        };
        let c = node_config(&flags).unwrap();
        assert_eq!(
            c.state_dir,
            PathBuf::from("/srv/node"),
            "file beats default"
        );
        assert_eq!(c.report_grace, Duration::from_secs(2), "flag beats file");
        assert_eq!(c.reconnect_delay, Duration::from_secs(1), "file");
        assert_eq!(c.reconnect_delay_max, Duration::from_secs(30), "default");
        assert_eq!(
            node_config(&NodeFlags::default()).unwrap(),
            NodeConfig::default()
        );
    }

    #[test]
    fn the_printed_config_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let flags = NodeFlags {
            reconnect_delay_max: Some("2m".into()),
            ..Default::default()
        };
        let c = node_config(&flags).unwrap();
        let printed = print(&c);
        assert!(
            printed.contains("reconnect_delay_max = \"2m\""),
            "{printed}"
        );
        assert!(printed.contains("report_grace = \"1m\""), "{printed}");
        let again = NodeFlags {
            config: Some(file(&dir, &printed)),
            ..Default::default()
        };
        assert_eq!(node_config(&again).unwrap(), c);
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let flags = NodeFlags {
            config: Some(file(&dir, "state_dri = \"x\"\n")),
            ..Default::default()
        };
        let e = format!("{:#}", node_config(&flags).unwrap_err());
        assert!(
            e.contains("unknown field") && e.contains("state_dri"),
            "{e}"
        );
        for bad in [
            NodeFlags {
                report_grace: Some("soon".into()),
                ..Default::default()
            },
            NodeFlags {
                report_grace: Some("30d".into()),
                ..Default::default()
            },
            NodeFlags {
                reconnect_delay: Some("1m".into()),
                reconnect_delay_max: Some("10s".into()),
                ..Default::default()
            },
        ] {
            assert!(node_config(&bad).is_err(), "{bad:?}");
        }
    }
}
