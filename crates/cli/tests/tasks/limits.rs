//! Issue 12, items 3 and 8: bounded input (a timeout that overflowed and
//! poisoned the hub's task table), and bounded memory for output and file
//! reads (the cap bounds what is stored, not what is held).

use std::io::Write as _;

use super::*;

/// Item 3: `--timeout 18446744073709551615s` is refused with the field and
/// the maximum, as are other out-of-range values; the hub keeps working.
#[test]
fn out_of_range_durations_and_sizes_are_refused_and_the_hub_keeps_working() {
    let m = Mesh::new(&[], &[]);
    let o = m.run(&["--timeout", "18446744073709551615s"], &["sleep", "100"]);
    let line = assert_error(&o);
    assert!(
        line.contains("timeout") && line.contains("maximum of 7days"),
        "{line}"
    );
    let o = m.run(&["--output-cap", "8589934592"], &["true"]);
    let line = assert_error(&o);
    assert!(
        line.contains("output_cap 8589934592") && line.contains("1073741824"),
        "{line}"
    );
    // Over HTTP: 400, naming the field.
    for body in [
        json!({"node": "n1", "argv": ["true"], "timeout": "18446744073709551615s"}),
        json!({"node": "n1", "argv": ["true"], "timeout": "8d"}),
        json!({"node": "n1", "argv": ["true"], "output_cap": u64::MAX}),
    ] {
        let ev = Events::open(&m.hub.endpoints.http, &m.auth(), &body.to_string());
        assert_eq!(ev.status, 400, "{body}: {}", ev.body);
        assert!(ev.body.contains("maximum"), "{}", ev.body);
    }
    let line = assert_error(&m.hub.cli(&["invite", "create", "--ttl", "31d"]));
    assert!(line.contains("ttl") && line.contains("30days"), "{line}");
    let line =
        assert_error(
            &m.hub
                .cli(&["mirror", "wait", "n1", "--timeout", "18446744073709551615"]),
        );
    assert!(line.contains("--timeout"), "{line}");
    assert!(m.tasks().is_empty(), "nothing was journaled");

    // The biggest accepted values work, and so does every run after.
    let o = m.run(
        &["--timeout", "7d", "--output-cap", "1073741824"],
        &["echo", "ok"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "ok\n");
    // Past the lease monitor's first rounds (every 5 s) the hub still runs tasks.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(6) {
        let o = m.run(&[], &["echo", "again"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

/// Item 8: 400 MiB of output with the largest cap, watched by a client that
/// does not read: the hub's memory stays bounded, the watcher is told what
/// it missed, and the journal holds exactly the stored cap.
#[test]
fn a_slow_watcher_cannot_make_the_hub_hold_a_tasks_output() {
    let m = Mesh::new(&[], &[]);
    let hub_pid = m.hub.endpoints.pid;
    let rss_before = kib(hub_pid, "VmRSS:");
    let (mut ev, id, _) = m.start(
        &["head", "-c", "400M", "/dev/zero"],
        json!({"output_cap": 1u64 << 30}),
    );
    // Not reading `ev` until the task has ended.
    let done = wait_task(&m, &id, "the task to end", Duration::from_secs(60), |t| {
        t["status"] != "running" && t["status"] != "pending"
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output_bytes"], 400u64 << 20, "{done}");
    assert_eq!(
        done["output_truncated"], true,
        "only the stored output is cut"
    );
    let stored = STANDARD
        .decode(done["stdout_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(stored.len(), 1 << 20, "the journal keeps exactly 1 MiB");
    // The ring (8 MiB), the node's HTTP/2 windows (16 MiB) and the allocator's
    // slack, far below the 400 MiB the hub used to hold.
    let hwm = kib(hub_pid, "VmHWM:");
    assert!(
        hwm < rss_before + 128 * 1024,
        "hub peak RSS {hwm} KiB (was {rss_before} KiB before 400 MiB of output)"
    );

    // The late reader gets what the hub kept, is told what it skipped, and
    // sees the end.
    let mut skipped = 0;
    let mut received = 0;
    let task = loop {
        let e = ev.next().expect("a finished event");
        match e["event"].as_str().unwrap() {
            "output" => {
                skipped += e["skipped"].as_u64().unwrap_or(0);
                received += output(&e).1.len();
            }
            "finished" => break e["task"].clone(),
            _ => {}
        }
    };
    assert_eq!(task["status"], "succeeded");
    assert!(skipped > 0, "the watcher was not told it fell behind");
    assert!(received < 400 << 20, "{received}");
}

/// Item 8: `mirror cat` of a large file streams it from disk: identical
/// bytes, and the hub's peak memory does not grow by the file's size.
#[test]
fn mirror_cat_of_a_large_file_streams_it() {
    let m = Mesh::new(&[], &[]);
    let hub_pid = m.hub.endpoints.pid;
    let size: usize = 300 << 20;
    {
        let mut f = std::fs::File::create(m.ws().join("big.bin")).unwrap();
        let mut block = vec![0u8; 1 << 20];
        for i in 0..(size >> 20) {
            block
                .iter_mut()
                .enumerate()
                .for_each(|(j, b)| *b = (i * 31 + j) as u8);
            f.write_all(&block).unwrap();
        }
    }
    // The whole file in the mirror (the node may upload an early version first).
    wait_for(
        "the mirror to hold all of big.bin",
        Duration::from_secs(120),
        || {
            let ls = m.hub.json(&["mirror", "ls", "n1"]);
            let whole = ls
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["path"] == "big.bin" && e["size"].as_u64() == Some(size as u64));
            let o = m.hub.cli(&["mirror", "wait", "n1", "--timeout", "1"]);
            (whole && o.status.success()).then_some(())
        },
    );
    // Forget the peak of the upload: measure the read alone.
    std::fs::write(format!("/proc/{hub_pid}/clear_refs"), "5").unwrap();
    let rss_before = kib(hub_pid, "VmRSS:");

    let out = m.scene.path("cat.out");
    let st = command()
        .args(["mirror", "cat", "n1", "big.bin", "--data-dir"])
        .arg(&m.hub.dir)
        .stdout(std::fs::File::create(&out).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let hwm = kib(hub_pid, "VmHWM:");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), size as u64);
    assert_eq!(
        blake3::hash(&std::fs::read(&out).unwrap()),
        blake3::hash(&std::fs::read(m.ws().join("big.bin")).unwrap()),
        "identical bytes"
    );
    assert!(
        hwm < rss_before + 64 * 1024,
        "hub peak RSS {hwm} KiB while serving 300 MiB (was {rss_before} KiB)"
    );
}
