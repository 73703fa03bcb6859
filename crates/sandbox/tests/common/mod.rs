//! Shared fixture: a sandbox in a temp dir, and helpers to run a task to the end.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ganglion_core::policy::Policy;
use ganglion_sandbox::{
    Outcome, OutputChunk, RunningTask, Sandbox, SandboxOptions, Stream, TaskSpec,
};
use tempfile::TempDir;

/// Test-only helper binary (see `src/bin/test_helper.rs`).
pub const HELPER: &str = env!("CARGO_BIN_EXE_ganglion-sandbox-test-helper");

pub struct Fixture {
    pub base: TempDir,
    pub sandbox: Sandbox,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// `base/ws` is the workspace, `base/state` the state dir (holding a file
    /// `secret`), `base/tmp` the temp root.
    pub fn with(tweak: impl FnOnce(&mut SandboxOptions)) -> Self {
        let base = tempfile::tempdir().unwrap();
        for d in ["ws", "state", "tmp"] {
            std::fs::create_dir(base.path().join(d)).unwrap();
        }
        std::fs::write(base.path().join("state/secret"), "node credential").unwrap();
        let mut opts = SandboxOptions::new(
            base.path().join("ws"),
            base.path().join("state"),
            base.path().join("tmp"),
        );
        opts.cancel_grace = Duration::from_millis(500);
        tweak(&mut opts);
        let sandbox = Sandbox::new(opts).unwrap();
        Fixture { base, sandbox }
    }

    pub fn ws(&self) -> PathBuf {
        self.base.path().join("ws")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.base.path().join(rel)
    }

    pub async fn run(&self, spec: TaskSpec, policy: &Policy) -> Run {
        let task = self.sandbox.start(spec, policy).unwrap();
        collect(task).await
    }
}

pub fn spec(argv: &[&str]) -> TaskSpec {
    TaskSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        timeout: Some(Duration::from_secs(60)),
        output_cap: 1 << 20,
        ..TaskSpec::default()
    }
}

/// STRICT, with the helper allowed by absolute path.
pub fn strict_with_helper() -> Policy {
    Policy {
        allow: vec![HELPER.to_owned()],
        ..Policy::strict()
    }
}

pub struct Run {
    pub chunks: Vec<OutputChunk>,
    pub outcome: Outcome,
}

impl Run {
    pub fn stream(&self, s: Stream) -> String {
        let bytes: Vec<u8> = self
            .chunks
            .iter()
            .filter(|c| c.stream == s)
            .flat_map(|c| c.data.clone())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
    pub fn stdout(&self) -> String {
        self.stream(Stream::Stdout)
    }
    pub fn stderr(&self) -> String {
        self.stream(Stream::Stderr)
    }
}

pub async fn collect(mut task: RunningTask) -> Run {
    let mut rx = task.take_output().unwrap();
    let reader = tokio::spawn(async move {
        let mut chunks = Vec::new();
        while let Some(c) = rx.recv().await {
            chunks.push(c);
        }
        chunks
    });
    let outcome = task.wait().await;
    Run {
        chunks: reader.await.unwrap(),
        outcome,
    }
}

/// Whether `pid` is gone or a zombie (dead, waiting for a reaper that may not
/// exist in this container).
pub fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

pub fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}
