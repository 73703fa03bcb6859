//! The sandbox policy and a node's capabilities.

use ganglion_core::{Capabilities, Policy, PolicyMode};

use super::Invalid;
use crate::v1;

impl From<&Policy> for v1::Policy {
    fn from(p: &Policy) -> Self {
        let mode = match p.mode {
            PolicyMode::Strict => v1::PolicyMode::Strict,
            PolicyMode::Permissive => v1::PolicyMode::Permissive,
        };
        v1::Policy {
            mode: mode as i32,
            allow: p.allow.clone(),
            network: p.network,
            allow_shell: p.allow_shell,
            allow_weak_sandbox: p.allow_weak_sandbox,
            version: p.version,
        }
    }
}

impl TryFrom<v1::Policy> for Policy {
    type Error = Invalid;
    fn try_from(p: v1::Policy) -> Result<Self, Invalid> {
        let mode = match v1::PolicyMode::try_from(p.mode) {
            Ok(v1::PolicyMode::Strict) => PolicyMode::Strict,
            Ok(v1::PolicyMode::Permissive) => PolicyMode::Permissive,
            // An unknown or missing mode never widens what a node may do.
            _ => {
                return Err(Invalid {
                    field: "policy.mode",
                    reason: format!("{}", p.mode),
                });
            }
        };
        Ok(Policy {
            mode,
            allow: p.allow,
            network: p.network,
            allow_shell: p.allow_shell,
            allow_weak_sandbox: p.allow_weak_sandbox,
            version: p.version,
        })
    }
}

/// Longest string field accepted in capabilities; they are display-only.
const MAX_FIELD: usize = 256;

fn bounded(s: String) -> String {
    if s.len() <= MAX_FIELD {
        return s;
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl From<&Capabilities> for v1::Capabilities {
    fn from(c: &Capabilities) -> Self {
        v1::Capabilities {
            os: c.os.clone(),
            arch: c.arch.clone(),
            kernel: c.kernel.clone(),
            landlock_abi: c.landlock_abi.unwrap_or(0),
            cores: c.cores,
            memory_bytes: c.memory_bytes,
            version: c.version.clone(),
            protections: c.protections.clone(),
        }
    }
}

impl From<v1::Capabilities> for Capabilities {
    fn from(c: v1::Capabilities) -> Self {
        Capabilities {
            os: bounded(c.os),
            arch: bounded(c.arch),
            kernel: bounded(c.kernel),
            landlock_abi: (c.landlock_abi > 0).then_some(c.landlock_abi),
            cores: c.cores,
            memory_bytes: c.memory_bytes,
            version: bounded(c.version),
            protections: c.protections.into_iter().take(32).map(bounded).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_round_trips_and_unknown_mode_is_refused() {
        let p = Policy {
            allow: vec!["python3".into()],
            network: true,
            ..Policy::strict()
        };
        let back = Policy::try_from(v1::Policy::from(&p)).unwrap();
        assert_eq!(back, p);
        let bad = v1::Policy {
            mode: 0,
            ..v1::Policy::from(&p)
        };
        assert!(Policy::try_from(bad).is_err());
    }

    #[test]
    fn capabilities_are_bounded() {
        let c = v1::Capabilities {
            os: "x".repeat(10_000),
            ..Default::default()
        };
        assert_eq!(Capabilities::from(c).os.len(), MAX_FIELD);
    }
}
