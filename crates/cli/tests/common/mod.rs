//! Harness for the integration tests: the real `ganglion` binary as hub and
//! node processes, on port 0, in temp dirs. Readiness is always a polled
//! condition with a deadline, never a fixed sleep. Every child process is
//! killed when its guard drops, so a failing test leaves nothing behind.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_ganglion");

/// How long any readiness wait may take before the test fails.
pub const READY: Duration = Duration::from_secs(20);

/// A `ganglion` command with a clean environment (no `GANGLION_*` leaking in
/// from the developer's shell) and quiet logs.
pub fn command() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GANGLION_") {
            c.env_remove(k);
        }
    }
    c.env("GANGLION_LOG", "info").stdin(Stdio::null());
    c
}

/// Runs `ganglion ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    command().args(args).output().expect("running ganglion")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the CONTRACT.md failure shape: non-zero exit and a single
/// `error: …` line on stderr; returns that line.
#[track_caller]
pub fn assert_error(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected failure, got success; stdout: {}",
        stdout(o)
    );
    let err = stderr(o);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(
        errors.len(),
        1,
        "expected exactly one `error: …` line, stderr was:\n{err}"
    );
    let line = errors[0];
    // A cause printed twice ("x: y: y") means an error both displays and
    // chains its source.
    let parts: Vec<&str> = line.split(": ").filter(|p| p.len() > 8).collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(p),
            "the error repeats {p:?}: {line}"
        );
    }
    line.to_owned()
}

/// Polls `f` until it returns `Some`, failing the test after `within`.
#[track_caller]
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process that is killed (SIGKILL, after SIGCONT in case it was
/// stopped) and reaped when dropped. stdout/stderr go to files so they can be
/// read after the process exits without any pipe filling up.
pub struct Proc {
    child: Child,
    pub name: String,
    out: PathBuf,
    err: PathBuf,
    exited: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(mut cmd: Command, name: &str, log_dir: &Path) -> Proc {
        std::fs::create_dir_all(log_dir).unwrap();
        let n = std::fs::read_dir(log_dir).unwrap().count();
        let out = log_dir.join(format!("{name}-{n}.out"));
        let err = log_dir.join(format!("{name}-{n}.err"));
        cmd.stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        let child = cmd.spawn().expect("spawning ganglion");
        Proc {
            child,
            name: name.to_owned(),
            out,
            err,
            exited: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// The exit status if the process has ended.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().unwrap();
        }
        self.exited
    }

    /// Waits for the process to end, failing the test after `within`.
    #[track_caller]
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let name = self.name.clone();
        wait_for(&format!("{name} to exit"), within, || self.try_exit())
    }

    /// Waits (bounded) for the process to end and returns what it printed, so
    /// a command that wrongly keeps running fails the test instead of hanging it.
    #[track_caller]
    pub fn finish(mut self, within: Duration) -> Output {
        let status = self.wait_exit(within);
        Output {
            status,
            stdout: std::fs::read(&self.out).unwrap_or_default(),
            stderr: std::fs::read(&self.err).unwrap_or_default(),
        }
    }

    /// Fails the test if the process has ended (with its stderr).
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(s) = self.try_exit() {
            panic!("{} exited ({s}); stderr:\n{}", self.name, self.stderr());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (SIGSTOP) process too.
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `run/endpoints.json` as CONTRACT.md defines it.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub grpc: String,
    pub http: String,
    pub cert_sha256: String,
    pub pid: u32,
}

impl Endpoints {
    pub fn read(data_dir: &Path) -> Option<Endpoints> {
        let text = std::fs::read(data_dir.join("run/endpoints.json")).ok()?;
        let v: Value = serde_json::from_slice(&text).ok()?;
        Some(Endpoints {
            grpc: v["grpc"].as_str()?.to_owned(),
            http: v["http"].as_str()?.to_owned(),
            cert_sha256: v["cert_sha256"].as_str()?.to_owned(),
            pid: u32::try_from(v["pid"].as_u64()?).ok()?,
        })
    }
}

/// One test's sandbox: a temp root holding hub data dirs, node state dirs,
/// workspaces and process logs.
pub struct Scene {
    pub root: tempfile::TempDir,
}

impl Scene {
    pub fn new() -> Scene {
        Scene {
            root: tempfile::Builder::new()
                .prefix("ganglion-it")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    pub fn logs(&self) -> PathBuf {
        self.path("logs")
    }

    /// A fresh workspace dir.
    pub fn workspace(&self, name: &str) -> PathBuf {
        let p = self.path(&format!("ws-{name}"));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Starts a hub on port 0 in `data_dir` (relative to the scene) and waits
    /// until it has published its endpoints.
    pub fn hub(&self, data_dir: &str, extra: &[&str]) -> Hub {
        self.hub_at(data_dir, "127.0.0.1:0", "127.0.0.1:0", extra)
    }

    pub fn hub_at(&self, data_dir: &str, grpc: &str, http: &str, extra: &[&str]) -> Hub {
        let dir = self.path(data_dir);
        // A stale endpoints.json from an earlier run must not count as ready.
        let _ = std::fs::remove_file(dir.join("run/endpoints.json"));
        let mut cmd = command();
        cmd.arg("hub")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--grpc-addr", grpc, "--http-addr", http])
            .args(extra);
        let mut proc = Proc::spawn(cmd, "hub", &self.logs());
        let endpoints = wait_for("the hub's endpoints.json", READY, || {
            if let Some(s) = proc.try_exit() {
                panic!("the hub exited early ({s}):\n{}", proc.stderr());
            }
            Endpoints::read(&dir)
        });
        assert_eq!(
            endpoints.pid,
            proc.pid() as u32,
            "endpoints.json names the hub"
        );
        Hub {
            proc,
            dir,
            endpoints,
        }
    }

    /// `ganglion node join INVITE --workspace ws-NAME --state-dir state-NAME [extra]`
    pub fn join(&self, invite: &str, node: &str, extra: &[&str]) -> Proc {
        let mut cmd = command();
        cmd.args(["node", "join", invite, "--workspace"])
            .arg(self.workspace(node))
            .arg("--state-dir")
            .arg(self.state_dir(node))
            .args(extra);
        Proc::spawn(cmd, &format!("join-{node}"), &self.logs())
    }

    /// `ganglion node start --state-dir state-NAME`
    pub fn start(&self, node: &str) -> Proc {
        let mut cmd = command();
        cmd.args(["node", "start", "--state-dir"])
            .arg(self.state_dir(node));
        Proc::spawn(cmd, &format!("start-{node}"), &self.logs())
    }

    pub fn state_dir(&self, node: &str) -> PathBuf {
        self.path(&format!("state-{node}"))
    }

    /// A join that must fail: runs it (bounded), asserts the one-line error
    /// and that no state dir was created; returns the error line.
    #[track_caller]
    pub fn join_fails(&self, invite: &str, node: &str, extra: &[&str]) -> String {
        let out = self.join(invite, node, extra).finish(READY);
        let line = assert_error(&out);
        assert!(
            !self.state_dir(node).exists(),
            "a failed join created {}",
            self.state_dir(node).display()
        );
        line
    }

    /// A `node start` that must fail (bounded); returns the error line.
    #[track_caller]
    pub fn start_fails(&self, node: &str) -> String {
        assert_error(&self.start(node).finish(READY))
    }
}

/// A running hub process and its data dir.
pub struct Hub {
    pub proc: Proc,
    pub dir: PathBuf,
    pub endpoints: Endpoints,
}

impl Hub {
    /// Runs an operator command against this hub (`--data-dir` appended).
    pub fn cli(&self, args: &[&str]) -> Output {
        command()
            .args(args)
            .arg("--data-dir")
            .arg(&self.dir)
            .output()
            .unwrap()
    }

    /// Like [`Hub::cli`], but the command must succeed; returns its stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "ganglion {args:?} failed: {}",
            stderr(&o)
        );
        stdout(&o)
    }

    /// Runs a `--json` listing and parses the one JSON value on stdout.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    #[track_caller]
    pub fn invite(&self, extra: &[&str]) -> String {
        let mut a = vec!["invite", "create"];
        a.extend_from_slice(extra);
        let out = self.ok(&a);
        let code = out.trim().to_owned();
        assert!(code.starts_with("gi1_"), "not an invite: {out}");
        code
    }

    pub fn nodes(&self) -> Vec<Value> {
        self.json(&["nodes", "ls"]).as_array().unwrap().clone()
    }

    pub fn node(&self, name: &str) -> Option<Value> {
        self.nodes().into_iter().find(|n| n["name"] == name)
    }

    pub fn invites(&self) -> Vec<Value> {
        self.json(&["invite", "ls"]).as_array().unwrap().clone()
    }

    /// Waits until node `name` is listed with `status`; returns its entry.
    #[track_caller]
    pub fn wait_status(&self, name: &str, status: &str, within: Duration) -> Value {
        wait_for(&format!("node {name} {status}"), within, || {
            self.node(name).filter(|n| n["status"] == status)
        })
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// SIGTERM, then the exit status (which must come within 10 s).
    #[track_caller]
    pub fn terminate(&mut self) -> ExitStatus {
        self.proc.signal(libc::SIGTERM);
        self.proc.wait_exit(Duration::from_secs(10))
    }
}

/// A raw HTTP/1.1 request to `addr`; returns the status code and the body.
pub fn http(addr: &str, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp}"));
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, body.to_owned())
}

/// Every regular file under `root`, except those under `skip`.
pub fn files_under(root: &Path, skip: &[&Path]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if skip.iter().any(|s| dir.starts_with(s)) {
            continue;
        }
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let ft = e.file_type().unwrap();
            if skip.iter().any(|s| p.starts_with(s)) {
                continue;
            }
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                out.push(p);
            }
        }
    }
    out
}

/// True if `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// A gRPC client of the hub with `node`'s credential (as the node would
/// dial), for tests that speak the wire protocol themselves.
pub async fn node_client(s: &Scene, hub: &Hub, node: &str) -> ganglion_node::client::HubClient {
    let (_, credential) = ganglion_node::state::StateDir::new(s.state_dir(node))
        .load()
        .unwrap();
    let target = ganglion_node::tls::HubTarget {
        addr: hub.endpoints.grpc.clone(),
        cert_sha256: hub.endpoints.cert_sha256.clone(),
        bind_ip: None,
    };
    let channel = ganglion_node::tls::connect(&target).await.unwrap();
    ganglion_node::client::client(channel, &credential)
}
