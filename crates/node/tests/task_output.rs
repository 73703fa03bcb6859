//! A task's output reaches the runtime with backpressure (issue 12 item 8):
//! while nobody reads the runner's events, a task writing far more than the
//! node's buffers waits on its pipe instead of growing the node's memory,
//! another task's refusal still arrives at once, and once the events are read
//! the whole output arrives in order, before the task's end.

use std::time::Duration;

use ganglion_core::{Dispatch, NodeEnd, Policy, TaskId};
use ganglion_node::tasks::{Executor, RunnerEvent, TASK_EVENTS, TaskRunner};
use ganglion_sandbox::{Sandbox, SandboxOptions};

/// What the task writes: far more than any buffer on its way.
const WRITTEN: u64 = 32 << 20;
/// Largest chunk the sandbox reads from a pipe.
const CHUNK: u64 = 64 * 1024;
/// What may leave the task while nobody reads: the sandbox's buffer (16
/// chunks), the task's channel, a chunk in the hands of each of the two
/// readers on the way, and the pipe itself (64 KiB); twice that for slack.
const BOUND: u64 = 2 * (16 + TASK_EVENTS as u64 + 2 + 1) * CHUNK;

/// Bytes the process has written so far (`None` once it is gone).
fn written_by(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))?
        .trim()
        .parse()
        .ok()
}

/// Whether the process sleeps in a pipe write (or the kernel hides where it
/// sleeps: "0").
fn waits_on_pipe(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/wchan"))
        .is_ok_and(|w| w.contains("pipe_write") || w.trim() == "0")
}

fn dispatch(id: &str, argv: &[&str]) -> Dispatch {
    Dispatch {
        id: TaskId::from_string(id).expect("valid id"),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        cwd: None,
        env: Vec::new(),
        timeout: Some(Duration::from_secs(120)),
        output_cap: WRITTEN,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waits_on_its_pipe_while_its_output_is_not_read() {
    let base = tempfile::tempdir().expect("temp dir");
    for d in ["ws", "state", "tmp"] {
        std::fs::create_dir(base.path().join(d)).expect("mkdir");
    }
    let opts = SandboxOptions::new(
        base.path().join("ws"),
        base.path().join("state"),
        base.path().join("tmp"),
    );
    let sandbox = Sandbox::new(opts).expect("sandbox");
    let (runner, mut events) = TaskRunner::new(Executor::Sandbox(sandbox), "n1".into());
    let count = WRITTEN.to_string();
    let argv = ["head", "-c", count.as_str(), "/dev/zero"];
    runner.start(dispatch("a", &argv), &Policy::permissive(), 1);
    let pid = match events.recv().await {
        Some(RunnerEvent::Started { id, pid, .. }) if id == "a" => pid,
        other => panic!("expected the start of a, got {other:?}"),
    };

    // Nobody reads: the task writes until the buffers are full, then waits
    // in a pipe write (seen 10 polls in a row with nothing written between).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (mut last, mut same) = (0, 0);
    while same < 10 {
        let now = written_by(pid).unwrap_or_else(|| {
            panic!("the task wrote everything ({WRITTEN} bytes) and ended while nobody read")
        });
        assert!(
            now <= BOUND,
            "the task wrote {now} bytes while nobody read (bound {BOUND})"
        );
        same = if now == last && waits_on_pipe(pid) {
            same + 1
        } else {
            0
        };
        last = now;
        assert!(tokio::time::Instant::now() < deadline, "still writing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(last > 0, "the task wrote nothing");

    // Another task's refusal does not queue behind a's output.
    runner.refuse("b".into(), 1, 126, "refused".into());
    match events.recv().await {
        Some(RunnerEvent::Finished { id, .. }) if id == "b" => {}
        other => panic!("expected b's refusal first, got {other:?}"),
    }

    // Reading again: all of a's output in order, then its end.
    let mut next_seq = 0;
    let mut received = 0u64;
    loop {
        match events.recv().await.expect("the runner is alive") {
            RunnerEvent::Output { id, seq, data, .. } => {
                assert_eq!((id.as_str(), seq), ("a", next_seq));
                next_seq += 1;
                received += data.len() as u64;
            }
            RunnerEvent::Finished {
                id,
                end,
                output_bytes,
                output_truncated,
                ..
            } => {
                assert_eq!(id, "a");
                assert_eq!(end, NodeEnd::Exited(0));
                assert_eq!((output_bytes, output_truncated), (WRITTEN, false));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, WRITTEN, "all of the output, before the end");
    assert_eq!(runner.running(), 0);
}
