//! Progress of the node's mirror toward the hub, as plain numbers: the mirror
//! worker feeds the model, a [`tokio::sync::watch`] channel carries snapshots,
//! and whoever wants to show them (the CLI's progress bar) renders them. No
//! terminal code here.
//!
//! A *round* starts when changes are pending and ends when the hub has
//! acknowledged all of them. Within a round the totals only grow (new
//! changes add to them) and the done counts only grow: files count as done
//! when the hub acknowledged them (durable there), bytes when uploaded.

/// One snapshot of a round (all zero and `in_sync` between rounds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncProgress {
    pub files_total: u64,
    pub files_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    /// Nothing pending: the hub holds everything.
    pub in_sync: bool,
}

/// Turns "what is still pending" and "bytes sent" into monotonic progress.
#[derive(Clone, Debug, Default)]
pub struct ProgressModel {
    files_total: u64,
    files_left: u64,
    bytes_total: u64,
    bytes_left: u64,
    uploaded: u64,
}

impl ProgressModel {
    /// The changes not yet acknowledged by the hub and their file bytes.
    pub fn pending(&mut self, files_left: u64, bytes_left: u64) {
        if files_left == 0 {
            *self = Self::default();
            return;
        }
        // More left than before: new changes joined the round.
        if files_left > self.files_left {
            self.files_total += files_left - self.files_left;
        }
        if bytes_left > self.bytes_left {
            self.bytes_total += bytes_left - self.bytes_left;
        }
        self.files_left = files_left;
        self.bytes_left = bytes_left;
    }

    /// Bytes of file content sent to the hub.
    pub fn uploaded(&mut self, bytes: u64) {
        if self.files_left > 0 {
            self.uploaded += bytes;
        }
    }

    pub fn snapshot(&self) -> SyncProgress {
        let acked_bytes = self.bytes_total - self.bytes_left;
        SyncProgress {
            files_total: self.files_total,
            files_done: self.files_total - self.files_left,
            bytes_total: self.bytes_total,
            // Uploaded bytes lead the acknowledgements (a large file shows
            // progress while it streams); never past the total.
            bytes_done: acked_bytes.max(self.uploaded).min(self.bytes_total),
            in_sync: self.files_left == 0,
        }
    }
}

/// The model shared by the mirror worker and its upload streams, publishing a
/// snapshot on every change (nothing at all without a receiver).
#[derive(Clone, Debug, Default)]
pub struct ProgressHandle {
    inner: Option<(
        std::sync::Arc<parking_lot::Mutex<ProgressModel>>,
        tokio::sync::watch::Sender<SyncProgress>,
    )>,
}

impl ProgressHandle {
    pub fn new(tx: Option<tokio::sync::watch::Sender<SyncProgress>>) -> Self {
        Self {
            inner: tx.map(|tx| (Default::default(), tx)),
        }
    }

    pub fn pending(&self, files_left: u64, bytes_left: u64) {
        self.update(|m| m.pending(files_left, bytes_left));
    }

    pub fn uploaded(&self, bytes: u64) {
        self.update(|m| m.uploaded(bytes));
    }

    fn update(&self, f: impl FnOnce(&mut ProgressModel)) {
        if let Some((model, tx)) = &self.inner {
            let mut m = model.lock();
            f(&mut m);
            tx.send_replace(m.snapshot());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_counts_up_then_resets_when_in_sync() {
        let mut m = ProgressModel::default();
        assert!(m.snapshot().in_sync);
        m.pending(10, 1000);
        assert_eq!(
            m.snapshot(),
            SyncProgress {
                files_total: 10,
                files_done: 0,
                bytes_total: 1000,
                bytes_done: 0,
                in_sync: false
            }
        );
        m.uploaded(300);
        assert_eq!(m.snapshot().bytes_done, 300);
        m.pending(4, 400); // acknowledged 6 files, 600 bytes
        let s = m.snapshot();
        assert_eq!((s.files_done, s.bytes_done), (6, 600));
        m.pending(0, 0);
        assert_eq!(
            m.snapshot(),
            SyncProgress {
                in_sync: true,
                ..SyncProgress::default()
            }
        );
    }

    #[test]
    fn new_changes_during_a_round_raise_the_totals() {
        let mut m = ProgressModel::default();
        m.pending(5, 50);
        m.pending(3, 30); // 2 done
        m.pending(8, 90); // 5 new files, 60 new bytes
        let s = m.snapshot();
        assert_eq!((s.files_total, s.files_done), (10, 2));
        assert_eq!((s.bytes_total, s.bytes_done), (110, 20));
    }

    #[test]
    fn uploaded_bytes_never_pass_the_total_nor_count_between_rounds() {
        let mut m = ProgressModel::default();
        m.uploaded(99); // in sync: an edit's upload is not a round
        m.pending(1, 10);
        m.uploaded(25); // resent after a failure
        assert_eq!(m.snapshot().bytes_done, 10);
        m.pending(0, 0);
        m.pending(1, 10);
        assert_eq!(m.snapshot().bytes_done, 0);
    }

    #[test]
    fn the_handle_publishes_snapshots() {
        let (tx, rx) = tokio::sync::watch::channel(SyncProgress::default());
        let h = ProgressHandle::new(Some(tx));
        h.pending(2, 20);
        h.uploaded(15);
        assert_eq!(
            *rx.borrow(),
            SyncProgress {
                files_total: 2,
                files_done: 0,
                bytes_total: 20,
                bytes_done: 15,
                in_sync: false
            }
        );
        ProgressHandle::default().pending(1, 1); // no receiver: nothing to do
    }
}
