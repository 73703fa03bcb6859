//! Layered hub configuration: flag > `GANGLION_*` environment > TOML file >
//! default. clap resolves flag and environment; this adds the file and the
//! defaults, and prints the result for `--print-config`.
//!
//! Every key of the file, with its flag and variable:
//!
//! | key                | flag                   | variable                       | default          |
//! |--------------------|------------------------|--------------------------------|------------------|
//! | data_dir           | --data-dir             | GANGLION_DATA_DIR              | ./ganglion-data  |
//! | grpc_addr          | --grpc-addr            | GANGLION_GRPC_ADDR             | 127.0.0.1:7443   |
//! | http_addr          | --http-addr            | GANGLION_HTTP_ADDR             | 127.0.0.1:7080   |
//! | advertise_addr     | --advertise-addr       | GANGLION_ADVERTISE_ADDR        | bound gRPC addr  |
//! | tls_cert, tls_key  | --tls-cert, --tls-key  | GANGLION_TLS_CERT, _TLS_KEY    | self-signed      |
//! | heartbeat_interval | --heartbeat-interval   | GANGLION_HEARTBEAT_INTERVAL    | 5s               |
//! | missed_heartbeats  | --missed-heartbeats    | GANGLION_MISSED_HEARTBEATS     | 3                |
//! | handshake_timeout  | --handshake-timeout    | GANGLION_HANDSHAKE_TIMEOUT     | 10s              |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ganglion_core::time::format_duration;
use ganglion_hub::{HubOptions, limits};
use serde::{Deserialize, Serialize};

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
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config {}", path.display()))
}

fn addr(value: &str, what: &str) -> anyhow::Result<SocketAddr> {
    value
        .parse()
        .with_context(|| format!("{what} {value:?} is not an address like 127.0.0.1:7443"))
}

/// Resolves hub options from flags/env, the file, and defaults.
pub fn hub_options(flags: &HubFlags) -> anyhow::Result<HubOptions> {
    let file = match &flags.config {
        Some(p) => read_file(p)?,
        None => FileConfig::default(),
    };
    let data_dir = flags
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    let mut o = HubOptions::new(data_dir);
    if let Some(a) = flags.grpc_addr.as_ref().or(file.grpc_addr.as_ref()) {
        o.grpc_addr = addr(a, "grpc_addr")?;
    }
    if let Some(a) = flags.http_addr.as_ref().or(file.http_addr.as_ref()) {
        o.http_addr = addr(a, "http_addr")?;
    }
    o.advertise_addr = flags.advertise_addr.clone().or(file.advertise_addr);
    if let Some(a) = &o.advertise_addr
        && a.rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
    {
        bail!("advertise_addr {a:?} must be HOST:PORT");
    }
    o.tls_cert = flags.tls_cert.clone().or(file.tls_cert);
    o.tls_key = flags.tls_key.clone().or(file.tls_key);
    if let Some(h) = flags
        .heartbeat_interval
        .as_ref()
        .or(file.heartbeat_interval.as_ref())
    {
        o.heartbeat_interval = limits::HEARTBEAT_INTERVAL.parse(h)?;
    }
    if let Some(m) = flags.missed_heartbeats.or(file.missed_heartbeats) {
        limits::MISSED_HEARTBEATS.check(u64::from(m))?;
        o.missed_heartbeats = m;
    }
    if let Some(h) = flags
        .handshake_timeout
        .as_ref()
        .or(file.handshake_timeout.as_ref())
    {
        o.handshake_timeout = limits::HANDSHAKE_TIMEOUT.parse(h)?;
    }
    Ok(o)
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
}
