//! The hub's configuration (`ganglion hub`, `ganglion up`).
//!
//! Every key of the file, with its flag and variable (README.md's
//! configuration section lists them too):
//!
//! | key                    | flag                     | variable                        | default          |
//! |------------------------|--------------------------|---------------------------------|------------------|
//! | data_dir               | --data-dir               | GANGLION_DATA_DIR               | ./ganglion-data  |
//! | grpc_addr              | --grpc-addr              | GANGLION_GRPC_ADDR              | 127.0.0.1:7443   |
//! | http_addr              | --http-addr              | GANGLION_HTTP_ADDR              | 127.0.0.1:7080   |
//! | advertise_addr         | --advertise-addr         | GANGLION_ADVERTISE_ADDR         | bound gRPC addr  |
//! | tls_cert, tls_key      | --tls-cert, --tls-key    | GANGLION_TLS_CERT, _TLS_KEY     | self-signed      |
//! | heartbeat_interval     | --heartbeat-interval     | GANGLION_HEARTBEAT_INTERVAL     | 5s               |
//! | missed_heartbeats      | --missed-heartbeats      | GANGLION_MISSED_HEARTBEATS      | 3                |
//! | handshake_timeout      | --handshake-timeout      | GANGLION_HANDSHAKE_TIMEOUT      | 10s              |
//! | hello_deadline         | --hello-deadline         | GANGLION_HELLO_DEADLINE         | 10s              |
//! | auth_deadline          | --auth-deadline          | GANGLION_AUTH_DEADLINE          | 2s               |
//! | auth_failure_burst     | --auth-failure-burst     | GANGLION_AUTH_FAILURE_BURST     | 20               |
//! | auth_failure_refill    | --auth-failure-refill    | GANGLION_AUTH_FAILURE_REFILL    | 2 (per second)   |
//! | task_lease_period      | --task-lease-period      | GANGLION_TASK_LEASE_PERIOD      | 5s               |
//! | transfer_reaper_period | --transfer-reaper-period | GANGLION_TRANSFER_REAPER_PERIOD | 10s              |
//! | orphan_purge_period    | --orphan-purge-period    | GANGLION_ORPHAN_PURGE_PERIOD    | 10m              |
//! | orphan_grace           | --orphan-grace           | GANGLION_ORPHAN_GRACE           | 1day             |

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use ganglion_core::time::format_duration;
use ganglion_hub::{HubOptions, limits};
use serde::{Deserialize, Serialize};

use super::{duration, read_file};
use crate::cli::HubFlags;

pub const DEFAULT_DATA_DIR: &str = "./ganglion-data";

/// The TOML file's shape; unknown keys are an error (typos must not pass silently).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub grpc_addr: Option<String>,
    pub http_addr: Option<String>,
    pub advertise_addr: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub heartbeat_interval: Option<String>,
    pub missed_heartbeats: Option<u32>,
    pub handshake_timeout: Option<String>,
    pub hello_deadline: Option<String>,
    pub auth_deadline: Option<String>,
    pub auth_failure_burst: Option<u32>,
    pub auth_failure_refill: Option<f64>,
    pub task_lease_period: Option<String>,
    pub transfer_reaper_period: Option<String>,
    pub orphan_purge_period: Option<String>,
    pub orphan_grace: Option<String>,
}

fn addr(value: &str, what: &str) -> anyhow::Result<SocketAddr> {
    value
        .parse()
        .with_context(|| format!("{what} {value:?} is not an address like 127.0.0.1:7443"))
}

/// Resolves hub options from flags/env, the file, and defaults.
pub fn hub_options(flags: &HubFlags) -> anyhow::Result<HubOptions> {
    let file: FileConfig = read_file(flags.config.as_deref())?;
    let data_dir = flags
        .data_dir
        .clone()
        .or(file.data_dir.clone())
        .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    let mut o = HubOptions::new(data_dir);
    if let Some(a) = flags.grpc_addr.as_ref().or(file.grpc_addr.as_ref()) {
        o.grpc_addr = addr(a, "grpc_addr")?;
    }
    if let Some(a) = flags.http_addr.as_ref().or(file.http_addr.as_ref()) {
        o.http_addr = addr(a, "http_addr")?;
    }
    o.advertise_addr = flags.advertise_addr.clone().or(file.advertise_addr.clone());
    if let Some(a) = &o.advertise_addr
        && a.rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
    {
        bail!("advertise_addr {a:?} must be HOST:PORT");
    }
    o.tls_cert = flags.tls_cert.clone().or(file.tls_cert.clone());
    o.tls_key = flags.tls_key.clone().or(file.tls_key.clone());
    let heartbeat = flags.heartbeat_interval.as_ref();
    if let Some(d) = duration(
        heartbeat,
        file.heartbeat_interval.as_ref(),
        limits::HEARTBEAT_INTERVAL,
    )? {
        o.heartbeat_interval = d;
    }
    if let Some(m) = flags.missed_heartbeats.or(file.missed_heartbeats) {
        limits::MISSED_HEARTBEATS.check(u64::from(m))?;
        o.missed_heartbeats = m;
    }
    let handshake = flags.handshake_timeout.as_ref();
    if let Some(d) = duration(
        handshake,
        file.handshake_timeout.as_ref(),
        limits::HANDSHAKE_TIMEOUT,
    )? {
        o.handshake_timeout = d;
    }
    let hello = flags.hello_deadline.as_ref();
    if let Some(d) = duration(hello, file.hello_deadline.as_ref(), limits::HELLO_DEADLINE)? {
        o.hello_deadline = d;
    }
    auth(flags, &file, &mut o)?;
    workers(flags, &file, &mut o)?;
    Ok(o)
}

/// The credential check and the per-address failure limiter.
fn auth(flags: &HubFlags, file: &FileConfig, o: &mut HubOptions) -> anyhow::Result<()> {
    let deadline = flags.auth_deadline.as_ref();
    if let Some(d) = duration(deadline, file.auth_deadline.as_ref(), limits::AUTH_DEADLINE)? {
        o.auth_deadline = d;
    }
    if let Some(b) = flags.auth_failure_burst.or(file.auth_failure_burst) {
        limits::AUTH_FAILURE_BURST.check(u64::from(b))?;
        o.auth_failure_burst = b;
    }
    if let Some(r) = flags.auth_failure_refill.or(file.auth_failure_refill) {
        // NaN fails both comparisons, so it is refused too.
        if !(r > 0.0 && r <= limits::AUTH_FAILURE_REFILL_MAX) {
            bail!(
                "auth_failure_refill {r} must be more than 0 and at most {}",
                limits::AUTH_FAILURE_REFILL_MAX
            );
        }
        o.auth_failure_refill_per_s = r;
    }
    Ok(())
}

/// How often the background workers run.
fn workers(flags: &HubFlags, file: &FileConfig, o: &mut HubOptions) -> anyhow::Result<()> {
    let periods = [
        (
            &flags.task_lease_period,
            &file.task_lease_period,
            limits::TASK_LEASE_PERIOD,
            &mut o.task_lease_period,
        ),
        (
            &flags.transfer_reaper_period,
            &file.transfer_reaper_period,
            limits::TRANSFER_REAPER_PERIOD,
            &mut o.transfer_reaper_period,
        ),
        (
            &flags.orphan_purge_period,
            &file.orphan_purge_period,
            limits::ORPHAN_PURGE_PERIOD,
            &mut o.orphan_purge_period,
        ),
        (
            &flags.orphan_grace,
            &file.orphan_grace,
            limits::ORPHAN_GRACE,
            &mut o.orphan_grace,
        ),
    ];
    for (flag, file, limit, value) in periods {
        if let Some(d) = duration(flag.as_ref(), file.as_ref(), limit)? {
            *value = d;
        }
    }
    Ok(())
}

/// The effective configuration, as a TOML file that would reproduce it.
pub fn print(o: &HubOptions) -> String {
    let file = FileConfig {
        data_dir: Some(o.data_dir.clone()),
        grpc_addr: Some(o.grpc_addr.to_string()),
        http_addr: Some(o.http_addr.to_string()),
        advertise_addr: o.advertise_addr.clone(),
        tls_cert: o.tls_cert.clone(),
        tls_key: o.tls_key.clone(),
        heartbeat_interval: Some(format_duration(o.heartbeat_interval)),
        missed_heartbeats: Some(o.missed_heartbeats),
        handshake_timeout: Some(format_duration(o.handshake_timeout)),
        hello_deadline: Some(format_duration(o.hello_deadline)),
        auth_deadline: Some(format_duration(o.auth_deadline)),
        auth_failure_burst: Some(o.auth_failure_burst),
        auth_failure_refill: Some(o.auth_failure_refill_per_s),
        task_lease_period: Some(format_duration(o.task_lease_period)),
        transfer_reaper_period: Some(format_duration(o.transfer_reaper_period)),
        orphan_purge_period: Some(format_duration(o.orphan_purge_period)),
        orphan_grace: Some(format_duration(o.orphan_grace)),
    };
    toml::to_string(&file).expect("serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "grpc_addr = \"127.0.0.1:9000\"\nhttp_addr = \"127.0.0.1:9001\"\n",
        )
        .unwrap();
        let flags = HubFlags {
            config: Some(path.clone()),
            http_addr: Some("127.0.0.1:9999".into()),
            ..Default::default()
        };
        let o = hub_options(&flags).unwrap();
        assert_eq!(
            o.grpc_addr.to_string(),
            "127.0.0.1:9000",
            "file beats default"
        );
        assert_eq!(o.http_addr.to_string(), "127.0.0.1:9999", "flag beats file");
        assert_eq!(o.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let printed = print(&o);
        assert!(
            printed.contains("grpc_addr = \"127.0.0.1:9000\""),
            "{printed}"
        );
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, "grpc_adr = \"x\"\n").unwrap();
        let flags = HubFlags {
            config: Some(path),
            ..Default::default()
        };
        assert!(format!("{:#}", hub_options(&flags).unwrap_err()).contains("unknown field"));
        let flags = HubFlags {
            grpc_addr: Some("nope".into()),
            ..Default::default()
        };
        assert!(hub_options(&flags).is_err());
        let flags = HubFlags {
            heartbeat_interval: Some("soon".into()),
            ..Default::default()
        };
        assert!(hub_options(&flags).is_err());
    }

    #[test]
    fn the_hubs_tunables_are_keys_with_todays_defaults() {
        let o = hub_options(&HubFlags::default()).unwrap();
        let d = HubOptions::new(DEFAULT_DATA_DIR.into());
        assert_eq!(o.auth_deadline, d.auth_deadline);
        assert_eq!(o.task_lease_period, std::time::Duration::from_secs(5));
        let printed = print(&o);
        for line in [
            "auth_deadline = \"2s\"",
            "auth_failure_burst = 20",
            "auth_failure_refill = 2.0",
            "task_lease_period = \"5s\"",
            "transfer_reaper_period = \"10s\"",
            "orphan_purge_period = \"10m\"",
            "orphan_grace = \"1day\"",
            "hello_deadline = \"10s\"",
        ] {
            assert!(printed.contains(line), "{line} in {printed}");
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "auth_deadline = \"500ms\"\nauth_failure_burst = 5\nauth_failure_refill = 0.5\n\
             task_lease_period = \"1s\"\norphan_grace = \"2h\"\nhello_deadline = \"3s\"\n",
        )
        .unwrap();
        let flags = HubFlags {
            config: Some(path.clone()),
            orphan_grace: Some("3h".into()),
            ..Default::default()
        };
        let o = hub_options(&flags).unwrap();
        assert_eq!(o.auth_deadline, std::time::Duration::from_millis(500));
        assert_eq!(o.auth_failure_burst, 5);
        assert_eq!(o.auth_failure_refill_per_s, 0.5);
        assert_eq!(o.task_lease_period, std::time::Duration::from_secs(1));
        assert_eq!(o.hello_deadline, std::time::Duration::from_secs(3));
        assert_eq!(
            o.orphan_grace,
            std::time::Duration::from_secs(3 * 3600),
            "flag beats file"
        );
        // What --print-config prints reads back to the same configuration.
        std::fs::write(&path, print(&o)).unwrap();
        let again = hub_options(&HubFlags {
            config: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(print(&again), print(&o));
    }

    #[test]
    fn refuses_tunables_out_of_bounds() {
        for flags in [
            HubFlags {
                auth_failure_refill: Some(0.0),
                ..Default::default()
            },
            HubFlags {
                auth_failure_refill: Some(f64::NAN),
                ..Default::default()
            },
            HubFlags {
                auth_failure_burst: Some(0),
                ..Default::default()
            },
            HubFlags {
                auth_deadline: Some("2h".into()),
                ..Default::default()
            },
            HubFlags {
                task_lease_period: Some("never".into()),
                ..Default::default()
            },
            HubFlags {
                hello_deadline: Some("10ms".into()),
                ..Default::default()
            },
        ] {
            assert!(hub_options(&flags).is_err(), "{flags:?}");
        }
    }
}
