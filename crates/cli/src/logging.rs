//! Logs: `tracing` to stderr (stdout is for command output). `GANGLION_LOG`
//! sets the filter (default `info`); `GANGLION_LOG_FORMAT=json` writes JSON lines.
//!
//! Logging never stops the process: lines are handed to a writer thread
//! through a bounded queue ([`LOG_QUEUE_LINES`]); when stderr is slow or
//! stuck (a full pipe) lines beyond that are dropped and counted, and write
//! errors (a full disk: ENOSPC, EIO, `2>/dev/full`) are ignored. So a SIGTERM
//! is always handled and a full log disk cannot panic the hub.

use std::io::Write;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Log lines queued for stderr at most; more are dropped.
pub const LOG_QUEUE_LINES: usize = 16_384;

/// Writes to stderr and reports success whatever happens: there is nowhere
/// to report a failure to write a log line.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Installs the subscriber. Keep the guard until the end of `main`: dropping
/// it flushes what is queued (waiting at most about a second).
pub fn init() -> WorkerGuard {
    let filter = EnvFilter::try_from_env("GANGLION_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("GANGLION_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("ganglion-log")
        .finish(Stderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Its default prints write failures with `eprintln!`, which panics
        // when stderr cannot be written.
        .log_internal_errors(false)
        .with_writer(writer);
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    guard
}
