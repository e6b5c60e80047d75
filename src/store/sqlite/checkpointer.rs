//! The write-ahead log is copied into the database on a thread of its own, so the writer never
//! waits for that copy or its syncs: the two cores share the work of a write.
//!
//! After each write the writer wakes the checkpointer, which runs a `PASSIVE` checkpoint on its
//! own connection: it copies what it can without blocking the writer or any reader. The writer
//! learns the log's length from its own commit (SQLite's write-ahead-log hook), so its bounds
//! hold however late the checkpointer's thread runs.
//!
//! SQLite starts the log over only at a write whose transaction began with all of the log
//! copied, which a busy writer, beginning its next batch as soon as it commits one, never
//! sees. So once the log is past [`LogBounds::restart`] pages, the writer waits for the
//! checkpointer's copy in progress and copies the rest itself (usually the last batch) before
//! it begins: its next commit starts the log over. A reader holding an old snapshot can still
//! keep the log from starting over; past [`LogBounds::max`] pages the writer waits for such
//! readers to finish (a `RESTART` checkpoint, up to the busy timeout) before each write: every
//! read is bounded, so the log stays bounded, and the writer slows down instead.

use std::cell::Cell;
use std::os::raw::c_int;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use rusqlite::hooks::Wal;

use super::{CONNECTION_PRAGMAS, Fault, StoreError};

/// How long the log may grow, in pages.
#[derive(Debug, Clone, Copy)]
pub(super) struct LogBounds {
    /// Past this the writer finishes the copy before it writes, so that the log starts over.
    pub restart: u64,
    /// Past this the writer also waits for readers of old snapshots.
    pub max: u64,
}

impl LogBounds {
    /// 64 MiB and 256 MiB at 16 KiB pages: a few of the largest batches, and four times that.
    pub(super) const DEFAULT: LogBounds = LogBounds {
        restart: 4_096,
        max: 16_384,
    };
}

/// The writer's side: wakes the checkpointer, and knows how long the log was at its last look.
pub(super) struct Checkpointer {
    wake: SyncSender<()>,
    shared: Arc<Shared>,
    bounds: LogBounds,
}

/// What the writer and the checkpointer's thread share.
#[derive(Default)]
struct Shared {
    /// Pages in the log after the last commit or checkpoint.
    log_pages: AtomicU64,
    /// Held while a checkpoint runs, so the writer can wait for the thread's.
    running: Mutex<()>,
}

impl Checkpointer {
    /// Starts the thread, with its own connection to `path`. It ends when the writer's side
    /// is dropped.
    pub(super) fn start(path: &Path, bounds: LogBounds) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(CONNECTION_PRAGMAS)?;
        let (wake, woken) = sync_channel(1);
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&conn, &woken, &theirs))
            .map_err(|e| StoreError::caused(Fault::Down, "starting the checkpointer", e))?;
        Ok(Checkpointer {
            wake,
            shared,
            bounds,
        })
    }

    /// Makes `writer` report the log's length after each of its commits ([`Self::after_write`]
    /// reads it on the same thread).
    pub(super) fn watch(writer: &Connection) {
        writer.wal_hook(Some(note_log_pages));
    }

    /// After a write on this thread: notes the log's length if the write committed, and wakes
    /// the thread (one wake-up covers any number of commits before it is taken).
    pub(super) fn after_write(&self) {
        if let Some(pages) = COMMITTED_LOG_PAGES.take() {
            self.shared.log_pages.store(pages, Ordering::Relaxed);
        }
        match self.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }

    /// Before a write: when the log is long, the writer finishes the copy itself so that its
    /// next commit starts the log over.
    pub(super) fn before_write(&self, writer: &Connection) -> Result<(), StoreError> {
        COMMITTED_LOG_PAGES.set(None);
        let pages = self.shared.log_pages.load(Ordering::Relaxed);
        if pages <= self.bounds.restart {
            return Ok(());
        }
        let mode = if pages > self.bounds.max {
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

thread_local! {
    /// The log's length after the last commit of a watched writer on this thread.
    static COMMITTED_LOG_PAGES: Cell<Option<u64>> = const { Cell::new(None) };
}

/// SQLite calls this right after a commit, on the committing thread.
fn note_log_pages(_: &Wal, pages: c_int) -> rusqlite::Result<()> {
    COMMITTED_LOG_PAGES.set(Some(pages.max(0) as u64));
    Ok(())
}

fn run(conn: &Connection, woken: &Receiver<()>, shared: &Shared) {
    while woken.recv().is_ok() {
        if let Err(e) = shared.checkpoint(conn, "PASSIVE") {
            tracing::warn!(error = %e, "wal checkpoint failed; the next write retries");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    fn open(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(CONNECTION_PRAGMAS).unwrap();
        conn
    }

    /// One write as the store's writer makes it: the check before, the note after.
    fn write(writer: &Connection, checkpointer: &Checkpointer, rows: i64) {
        checkpointer.before_write(writer).unwrap();
        writer
            .execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 INSERT INTO t (v) SELECT randomblob(1000) FROM n",
                [rows],
            )
            .unwrap();
        checkpointer.after_write();
    }

    /// A writer as the store opens it, on a file of 4 KiB pages.
    fn writer(path: &Path) -> Connection {
        let writer = open(path);
        writer
            .execute_batch(
                "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;
                 PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (v BLOB);",
            )
            .unwrap();
        Checkpointer::watch(&writer);
        writer
    }

    /// A file in a fresh directory, its writer, and a checkpointer of `bounds` for it.
    struct Fixture {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        writer: Connection,
        checkpointer: Checkpointer,
    }

    fn fixture(bounds: LogBounds) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = writer(&path);
        let checkpointer = Checkpointer::start(&path, bounds).unwrap();
        Fixture {
            _dir: dir,
            path,
            writer,
            checkpointer,
        }
    }

    fn log_bytes(path: &Path) -> u64 {
        std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len())
    }

    /// A writer that writes without a pause still sees its log start over: the file never
    /// grows past the restart bound and a write or two.
    #[test]
    fn a_busy_writer_keeps_the_log_short() {
        let bounds = LogBounds {
            restart: 64,
            max: 1024,
        };
        let Fixture {
            path,
            writer,
            checkpointer,
            _dir: _kept,
        } = fixture(bounds);
        // About 40 pages a write, 20 000 in all; the log starts over at the write after the
        // one that took it past the bound.
        for _ in 0..500 {
            write(&writer, &checkpointer, 150);
        }
        let stored: i64 = writer
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 500 * 150);
        let most = (bounds.restart + 2 * 45) * PAGE;
        assert!(log_bytes(&path) <= most, "{} > {most}", log_bytes(&path));
    }

    /// A reader holding a snapshot keeps the log from starting over; once it is done, the
    /// next writes start it over.
    #[test]
    fn a_reader_of_an_old_snapshot_holds_the_log_until_it_is_done() {
        let Fixture {
            path,
            writer,
            checkpointer,
            _dir: _kept,
        } = fixture(LogBounds {
            restart: 64,
            max: 100_000,
        });
        write(&writer, &checkpointer, 10);
        let reader = open(&path);
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM t;")
            .unwrap();
        for _ in 0..20 {
            write(&writer, &checkpointer, 150);
        }
        let held = log_bytes(&path);
        assert!(
            held > 20 * 35 * PAGE,
            "the log grew while the snapshot was held: {held}"
        );
        reader.execute_batch("COMMIT").unwrap();
        // The file keeps its length; the log starts over at its head, so it grows no more.
        for _ in 0..20 {
            write(&writer, &checkpointer, 150);
        }
        assert_eq!(log_bytes(&path), held);
    }
}
