//! The part of a STRICT task's rules that depends only on the policy's
//! allowlist (the files it may execute, the Landlock rules of the system):
//! resolved once and reused by the tasks of the next few seconds, so a task
//! start does not resolve and open some fifty paths each time. A package
//! upgrade that replaces an allowlisted program is seen after at most
//! [`TTL`].

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ganglion_core::policy::Policy;

use crate::Error;
use crate::confine::Grants;
use crate::exec_allow::ExecSet;

/// How long prepared rules are reused.
pub(crate) const TTL: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct Prepared {
    pub exec: ExecSet,
    /// `None` without Landlock.
    pub grants: Option<Grants>,
}

/// The allowlist it was made for, when, and what.
type Slot = Option<(Vec<String>, Instant, Arc<Prepared>)>;

#[derive(Debug, Default)]
pub(crate) struct Cache {
    slot: Mutex<Slot>,
}

impl Cache {
    /// The prepared rules for `policy`, with `program` among the executable
    /// files (else made afresh for this task alone).
    pub(crate) fn get(
        &self,
        policy: &Policy,
        program: &Path,
        build: impl FnOnce(&ExecSet) -> Result<Option<Grants>, Error>,
    ) -> Result<Arc<Prepared>, Error> {
        let fresh = |slot: &Slot| {
            slot.as_ref().and_then(|(allow, made, p)| {
                (*allow == policy.allow && made.elapsed() < TTL && p.exec.contains(program))
                    .then(|| p.clone())
            })
        };
        if let Some(p) = fresh(&self.slot.lock().expect("lock")) {
            return Ok(p);
        }
        let exec = ExecSet::resolve(policy, program);
        let grants = build(&exec)?;
        let p = Arc::new(Prepared { exec, grants });
        *self.slot.lock().expect("lock") = Some((policy.allow.clone(), Instant::now(), p.clone()));
        Ok(p)
    }
}
