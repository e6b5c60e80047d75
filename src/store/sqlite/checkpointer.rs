//! The write-ahead log is copied into the database on a thread of its own, so the writer never
//! waits for that copy or its syncs: the two cores share the work of a write.
//!
//! After each write the writer wakes the checkpointer, which runs a `PASSIVE` checkpoint on its
//! own connection: it copies what it can without blocking the writer or any reader.
//!
//! SQLite starts the log over only at a write whose transaction began with all of the log
//! copied, which a busy writer, beginning its next batch as soon as it commits one, never
//! sees. So once the log is past [`RESTART_LOG_PAGES`], the writer waits for the
//! checkpointer's copy in progress and copies the rest itself (usually the last batch) before
//! it begins: its next commit starts the log over. A reader holding an old snapshot can still
//! keep the log from starting over; past [`MAX_LOG_PAGES`] the writer waits for such readers
//! (a `RESTART` checkpoint, up to the busy timeout) before it writes again, so the log stays
//! bounded and the writer slows down instead.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;

use super::{CONNECTION_PRAGMAS, Fault, StoreError};

/// Pages in the log past which the writer finishes the copy before it writes, so that the log
/// starts over: 64 MiB at 16 KiB pages, a few of the largest batches.
pub(super) const RESTART_LOG_PAGES: u64 = 4_096;
/// Pages in the log past which the writer also waits for readers of old snapshots: 256 MiB.
pub(super) const MAX_LOG_PAGES: u64 = 16_384;

/// The writer's side: wakes the checkpointer, and knows how long the log was at its last look.
pub(super) struct Checkpointer {
    wake: SyncSender<()>,
    shared: Arc<Shared>,
}

/// What the writer and the checkpointer's thread share.
#[derive(Default)]
struct Shared {
    /// Pages in the log at the last checkpoint.
    log_pages: AtomicU64,
    /// Held while a checkpoint runs, so the writer can wait for the thread's.
    running: Mutex<()>,
}

impl Checkpointer {
    /// Starts the thread, with its own connection to `path`. It ends when the writer's side
    /// is dropped.
    pub(super) fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(CONNECTION_PRAGMAS)?;
        let (wake, woken) = sync_channel(1);
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&conn, &woken, &theirs))
            .map_err(|e| StoreError::caused(Fault::Down, "starting the checkpointer", e))?;
        Ok(Checkpointer { wake, shared })
    }

    /// After a commit: one wake-up covers any number of commits before it is taken.
    pub(super) fn wake(&self) {
        match self.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }

    /// Before a write: when the log is long, the writer finishes the copy itself so that its
    /// next commit starts the log over.
    pub(super) fn before_write(&self, writer: &Connection) -> Result<(), StoreError> {
        let pages = self.shared.log_pages.load(Ordering::Relaxed);
        if pages <= RESTART_LOG_PAGES {
            return Ok(());
        }
        let mode = if pages > MAX_LOG_PAGES {
            "RESTART"
        } else {
            "PASSIVE"
        };
        self.shared.checkpoint(writer, mode)
    }
}

impl Shared {
    /// Runs a checkpoint of `mode` once no other of this process runs, and notes the log's
    /// length.
    fn checkpoint(&self, conn: &Connection, mode: &str) -> Result<(), StoreError> {
        let _running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let sql = format!("PRAGMA wal_checkpoint({mode})");
        let (log, copied): (i64, i64) = conn.query_row(&sql, [], |r| Ok((r.get(1)?, r.get(2)?)))?;
        self.log_pages.store(log.max(0) as u64, Ordering::Relaxed);
        tracing::trace!(mode, log, copied, "wal checkpoint");
        Ok(())
    }
}

fn run(conn: &Connection, woken: &Receiver<()>, shared: &Shared) {
    while woken.recv().is_ok() {
        if let Err(e) = shared.checkpoint(conn, "PASSIVE") {
            tracing::warn!(error = %e, "wal checkpoint failed; the next write retries");
        }
    }
}
