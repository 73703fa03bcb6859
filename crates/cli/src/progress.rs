//! The node's sync progress bar (indicatif) on a terminal: files and bytes
//! acknowledged by the hub, rate and ETA, while the first sync after start
//! runs. Only when stderr is a terminal: nothing in logs, pipes or tests.

use std::io::IsTerminal;
use std::time::Duration;

use ganglion_node::progress::SyncProgress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

/// A progress channel for the node's mirror, and the task drawing it, when
/// stderr is a terminal.
pub fn for_terminal() -> Option<watch::Sender<SyncProgress>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let (tx, rx) = watch::channel(SyncProgress {
        in_sync: true,
        ..SyncProgress::default()
    });
    tokio::spawn(render(rx));
    Some(tx)
}

/// Draws rounds until the first one completes (the initial sync); later
/// rounds are single edits, which a bar would only flash.
async fn render(mut rx: watch::Receiver<SyncProgress>) {
    let style = ProgressStyle::with_template(
        "{spinner} mirror {msg} {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    // Hidden until a round starts.
    let bar = ProgressBar::hidden();
    bar.set_style(style);
    let mut started = false;
    while rx.changed().await.is_ok() {
        let p = *rx.borrow_and_update();
        if p.in_sync {
            if started {
                break;
            }
            continue;
        }
        if !started {
            started = true;
            bar.reset_elapsed();
            bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
            bar.enable_steady_tick(Duration::from_millis(250));
        }
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
        bar.set_message(format!("{}/{} files", p.files_done, p.files_total));
    }
    bar.finish_and_clear();
}
