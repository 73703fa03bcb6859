//! What a task passes to its program: argv and environment checks, and the
//! scrubbed environment of a STRICT task.

use std::path::Path;

use ganglion_core::limit::{MAX_COMMAND_BYTES, command_bytes};

use crate::sandbox::STRICT_PATH;
use crate::{Error, TaskSpec};

/// Environment variables never passed to a STRICT task: they steer the dynamic
/// loader, libc or shells (glibc's "unsecure" list, plus the fixed ones).
const DANGEROUS_ENV: &[&str] = &[
    "GCONV_PATH",
    "GETCONF_DIR",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_TRACE",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TZDIR",
    "BASH_ENV",
    "ENV",
    "IFS",
    "PATH",
    "HOME",
    "TMPDIR",
];

pub(crate) fn check_args(spec: &TaskSpec) -> Result<(), Error> {
    if spec.argv.is_empty() {
        return Err(Error::EmptyArgv);
    }
    // Size first: a huge command line is refused before any copy or scan.
    let size = command_bytes(
        spec.argv.iter().map(String::as_str),
        spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    if size > MAX_COMMAND_BYTES {
        return Err(Error::ArgumentsTooLarge {
            size,
            max: MAX_COMMAND_BYTES,
        });
    }
    let has_nul = |s: &String| s.as_bytes().contains(&0);
    if spec.argv.iter().any(has_nul) || spec.env.iter().any(|(k, v)| has_nul(k) || has_nul(v)) {
        return Err(Error::NulByte);
    }
    if let Some((k, _)) = spec
        .env
        .iter()
        .find(|(k, _)| k.is_empty() || k.contains('='))
    {
        return Err(Error::InvalidEnvName { name: k.clone() });
    }
    Ok(())
}

pub(crate) fn strict_env(extra: &[(String, String)], temp: Option<&Path>) -> Vec<(String, String)> {
    let temp = temp
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/nonexistent".into());
    let mut env = vec![
        ("PATH".to_owned(), STRICT_PATH.to_owned()),
        ("HOME".to_owned(), temp.clone()),
        ("TMPDIR".to_owned(), temp),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
    ];
    for (k, v) in extra {
        if k.starts_with("LD_") || DANGEROUS_ENV.contains(&k.as_str()) {
            tracing::debug!(name = %k, "environment variable dropped by the strict policy");
            continue;
        }
        env.push((k.clone(), v.clone()));
    }
    env
}
