//! The embedded store: one SQLite file in WAL mode under the data directory.
//!
//! - `blocks.rs`, `block.rs`: raw events and alerts are stored in blocks, a city's new events of
//!   one write encoded together, and each raw event's identity in a key of its own.
//! - `write.rs`: one writer connection writes each [`WriteBatch`] in a single transaction,
//!   checkpoints included, so what is stored and how far the processor got never disagree.
//! - `read.rs`: readers use a small pool of read-only connections, on the calling task but
//!   never on the runtime's last worker (see [`SqliteStore::read`]); they never block the
//!   writer, and a separate `serve` process reads the same file while `process` writes it.
//! - `outbox.rs`: the deliveries alerts owe their sinks (`store::outbox`).
//! - `keys.rs`: the API keys (`store::keys`).
//! - `purge.rs`: expired rows are deleted in chunks, the writer free between them.
//! - `checkpointer.rs`: the write-ahead log is copied into the database on a thread of its own.
//! - `migrate.rs`: a file of schema 5 to 9 is brought up to date when it is opened.

mod block;
mod blocks;
mod checkpointer;
mod keys;
mod migrate;
mod outbox;
mod plan;
mod purge;
mod read;
mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OptionalExtension, Row};
use tokio::sync::Semaphore;

use checkpointer::{Checkpointer, LogBounds};

use super::rules::severities_from_letters;
use super::{
    CityCount, CitySummary, DeadLetterKey, Durability, EventKey, Fault, Maintenance, Page,
    PartitionStatus, Properties, Purged, Reader, Sink, Stats, StoreError, StoredAlert, StoredEvent,
    TimeRange, WindowPos, WindowQuery, Written,
};
use crate::model::{
    Checkpoint, City, CityEvent, DeadLetter, EventTime, EventType, LateEvent, Severity,
    SeverityCounts, Span, WindowAggregate, WriteBatch,
};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "citystream.db";
const SCHEMA: &str = include_str!("schema.sql");
/// Bumped whenever `schema.sql` changes; `migrate.rs` brings a file of an older version it
/// knows up to it, and a file of any other version is refused.
const SCHEMA_VERSION: i64 = 10;
/// Settings of the file itself, before any table exists: 16 KiB pages (fewer, shallower trees
/// for a writer that mostly appends: about 10 % more events/s than 4 KiB pages in `citystream
/// bench`; it takes effect when the file is created) and the write-ahead log.
const FILE_PRAGMAS: &str = "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL;";
/// Every connection's settings. The writer's `synchronous` is [`Durability`]'s: `FULL` (a
/// commit returns once the write-ahead log is on disk) until told otherwise.
const CONNECTION_PRAGMAS: &str =
    "PRAGMA busy_timeout = 10000; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;";
/// The writer never copies the write-ahead log into the database itself: the checkpointer's
/// thread does (`checkpointer.rs`). The log file is cut back to 64 MiB at most. The writer's
/// page cache is 8 MiB (SQLite's default is 2 MiB, 128 pages of 16 KiB): a large batch then
/// no longer spills pages to the log before its commit (5 % more events/s than the default;
/// 16 MiB was no faster in `citystream bench`, and `up --rate 10000` peaked 7 MiB higher).
const WRITER_PRAGMAS: &str = "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;
    PRAGMA cache_size = -8192;";
/// A reader's page cache: 1 MiB (SQLite's default is 2 MiB). A read touches the newest pages of
/// an index and a few blocks, which the OS keeps cached too; the pool's connections each hold
/// theirs for as long as the process runs, so this bounds what reads keep.
const READER_PRAGMAS: &str = "PRAGMA query_only = ON; PRAGMA cache_size = -1024;";
/// How long a read waits for a pooled connection before it fails.
const READER_WAIT: Duration = Duration::from_secs(5);

/// Whether opening a store may create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the directory and the file when missing (the writers: `up`, `process`).
    Create,
    /// Refuse to open where no store is (the readers: `serve`), naming the path looked at.
    Existing,
}

/// SQLite-backed store: a [`Sink`], a [`Reader`] and [`Maintenance`].
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    checkpointer: Arc<Checkpointer>,
    readers: r2d2::Pool<SqliteConnectionManager>,
    /// Reads that may run on the async workers at once: one fewer than there are workers
    /// (none on a runtime of one), sized when the first read comes.
    inline: Arc<OnceLock<Option<Arc<Semaphore>>>>,
}

impl SqliteStore {
    /// Opens (creating when needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, OpenMode::Create)
    }

    /// Opens the store in `data_dir`, creating it only when `mode` allows.
    pub fn open_with(data_dir: &Path, mode: OpenMode) -> Result<Self, StoreError> {
        let path = data_dir.join(DB_FILE);
        match mode {
            OpenMode::Create => std::fs::create_dir_all(data_dir).map_err(|source| {
                let doing = format!("creating data directory {}", data_dir.display());
                StoreError::caused(Fault::Down, doing, source)
            })?,
            OpenMode::Existing if !path.is_file() => {
                let shown = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
                return Err(StoreError::new(
                    Fault::Down,
                    format!(
                        "no CityStream store at {}: `up` or `process` create one there; give \
                         the directory they wrote with --data-dir",
                        shown.display()
                    ),
                ));
            }
            OpenMode::Existing => {}
        }
        let mut writer = Connection::open(&path)?;
        writer.execute_batch(CONNECTION_PRAGMAS)?;
        when_not_busy(|| writer.execute_batch(FILE_PRAGMAS))?;
        when_not_busy(|| create_schema(&mut writer, &path))?;
        writer.execute_batch(WRITER_PRAGMAS)?;
        // Room for the statements of a write (about 20, more than rusqlite's default of 16,
        // which an LRU cache met in turn would miss every time), the purge's and the outbox's.
        writer.set_prepared_statement_cache_capacity(64);
        Checkpointer::watch(&writer);
        let manager = SqliteConnectionManager::file(&path).with_init(|c| {
            // Room for every read's statements (a first page and a later one each).
            c.set_prepared_statement_cache_capacity(64);
            c.execute_batch(CONNECTION_PRAGMAS)?;
            c.execute_batch(READER_PRAGMAS)
        });
        // Reads run on the calling task, at most one fewer at once than the runtime has
        // workers (`read`); twice the cores of connections is room for them all, and a few on
        // the blocking pool besides.
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get()) as u32;
        // A local file's connection does not go stale: no test query on every checkout.
        let readers = r2d2::Pool::builder()
            .max_size((cores * 2).max(4))
            .min_idle(Some(1))
            .test_on_check_out(false)
            .connection_timeout(READER_WAIT)
            .build(manager)?;
        Ok(SqliteStore {
            checkpointer: Arc::new(Checkpointer::start(&path, LogBounds::DEFAULT)?),
            path,
            writer: Arc::new(Mutex::new(writer)),
            readers,
            inline: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When the writer's commits reach the disk (what each costs: docs/BENCHMARKS.md).
    pub async fn set_durability(&self, durability: Durability) -> Result<(), StoreError> {
        let level = match durability {
            Durability::EveryCommit => "FULL",
            Durability::SourceReplays => "NORMAL",
        };
        self.with_writer(move |c| Ok(c.pragma_update(None, "synchronous", level)?))
            .await
    }

    /// Runs a read with a pooled read-only connection. Every read is bounded (an index range
    /// with a `LIMIT`, a key lookup, or the counters) and takes tens of microseconds, less
    /// than the two thread switches of a hop to the blocking pool, so it runs on the calling
    /// task, as one of at most the runtime's workers less one: a read stalled by the disk can
    /// never take the last worker (health and every other task keep running), and a read
    /// waits for its turn without blocking. On a runtime of one worker, reads run on the
    /// blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let Some(inline) = self.inline() else {
            let readers = self.readers.clone();
            return tokio::task::spawn_blocking(move || f(&*readers.get()?))
                .await
                .map_err(task_failed)?;
        };
        let _permit = inline
            .acquire_owned()
            .await
            .map_err(|e| StoreError::caused(Fault::Retry, "waiting for a reader", e))?;
        tokio::task::consume_budget().await;
        f(&*self.readers.get()?)
    }

    /// The reads that may run on the async workers, if any may (see [`SqliteStore::read`]).
    fn inline(&self) -> Option<Arc<Semaphore>> {
        self.inline
            .get_or_init(|| {
                let workers = tokio::runtime::Handle::try_current()
                    .ok()?
                    .metrics()
                    .num_workers();
                (workers > 1).then(|| Arc::new(Semaphore::new(workers - 1)))
            })
            .clone()
    }

    async fn with_writer<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let writer = self.writer.clone();
        let checkpointer = self.checkpointer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer
                .lock()
                .map_err(|_| StoreError::new(Fault::Down, "the writer connection is poisoned"))?;
            checkpointer.before_write(&conn)?;
            let done = f(&mut conn);
            checkpointer.after_write();
            done
        })
        .await
        .map_err(task_failed)?
    }

    /// Runs one purge step until it deletes less than a chunk; the writer is free between
    /// chunks.
    async fn purge_all(
        &self,
        now: EventTime,
        chunk: fn(&mut Connection, EventTime) -> Result<u64, StoreError>,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = self.with_writer(move |c| chunk(c, now)).await?;
            total += n;
            if n < purge::PURGE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }
}

/// Checks the file's schema version, migrates a file of an older version, and creates what
/// is missing, in one transaction: two processes opening a new data directory at once never
/// see each other's half-made schema.
fn create_schema(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let from = check_schema_version(&tx, path)?;
    tx.execute_batch(SCHEMA)?;
    if let Some(from) = from {
        migrate::from(&tx, from)?;
        tracing::info!(path = %path.display(), from, to = SCHEMA_VERSION, "store migrated");
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Runs `step` again while another process holds the file's lock in a way SQLite's busy
/// timeout does not wait out (a change of journal mode, a first schema racing another), for
/// as long as that timeout.
fn when_not_busy<T, E: Into<StoreError>>(
    mut step: impl FnMut() -> Result<T, E>,
) -> Result<T, StoreError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match step().map_err(Into::into) {
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            done => return done,
        }
    }
}

/// The version a file must be migrated from, if it must. A file written by a build with
/// another layout is refused with a clear message, not misread.
fn check_schema_version(conn: &Connection, path: &Path) -> Result<Option<i64>, StoreError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let existing: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master
         WHERE type = 'table' AND name IN ('raw_events', 'raw_keys')",
        [],
        |r| r.get(0),
    )?;
    match (existing > 0, found) {
        (false, _) | (true, SCHEMA_VERSION) => Ok(None),
        (true, v) if migrate::FROM.contains(&v) => Ok(Some(v)),
        (true, found) => Err(StoreError::new(
            Fault::Down,
            format!(
                "{} was written by another version of CityStream (schema {found}, this build \
                 uses {SCHEMA_VERSION}); move it aside and replay the events into a new data \
                 directory",
                path.display()
            ),
        )),
    }
}

/// The writer's busy error that SQLite's own timeout does not wait out.
fn is_busy(e: &StoreError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<rusqlite::Error>())
        .and_then(rusqlite::Error::sqlite_error_code)
        == Some(rusqlite::ErrorCode::DatabaseBusy)
}

fn task_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::caused(Fault::Retry, "a store task failed", e)
}

/// What the caller can do about an error of SQLite's.
fn fault_of(e: &rusqlite::Error) -> Fault {
    use rusqlite::ErrorCode;
    match e {
        rusqlite::Error::SqliteFailure(e, _) => match e.code {
            ErrorCode::TooBig | ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch => {
                Fault::BadInput
            }
            ErrorCode::CannotOpen
            | ErrorCode::NotADatabase
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::AuthorizationForStatementDenied => Fault::Down,
            _ => Fault::Retry,
        },
        rusqlite::Error::ToSqlConversionFailure(_) => Fault::BadInput,
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => Fault::Down,
        _ => Fault::Retry,
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::caused(fault_of(&e), "sqlite", e)
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        StoreError::caused(Fault::Retry, "sqlite connection pool", e)
    }
}

fn city(s: String) -> Result<City, StoreError> {
    City::parse(s).map_err(StoreError::corrupt)
}

/// A stored type: one the configuration no longer takes still reads.
pub(crate) fn event_type(s: &str) -> Result<EventType, StoreError> {
    EventType::stored(s).map_err(StoreError::corrupt)
}

pub(crate) fn severity(s: &str) -> Result<Severity, StoreError> {
    s.parse().map_err(StoreError::corrupt)
}

/// Columns: event_id, ts, city, event_type, severity, description.
pub(crate) fn event_from_row(row: &Row<'_>) -> Result<CityEvent, StoreError> {
    Ok(CityEvent {
        event_id: row.get(0)?,
        timestamp: EventTime::from_millis(row.get(1)?),
        city: city(row.get(2)?)?,
        event_type: event_type(&row.get::<_, String>(3)?)?,
        severity: severity(&row.get::<_, String>(4)?)?,
        description: row.get(5)?,
    })
}

/// Columns: source, partition, next_offset, max_event_time.
pub(crate) fn checkpoint_from_row(r: &Row<'_>) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        source: r.get(0)?,
        partition: r.get(1)?,
        next_offset: r.get::<_, i64>(2)? as u64,
        max_event_time: r.get::<_, Option<i64>>(3)?.map(EventTime::from_millis),
    })
}

/// Columns: city, span, start, event_type, event_count, severities, low, medium, high, critical.
pub(crate) fn window_from_row(row: &Row<'_>) -> Result<WindowAggregate, StoreError> {
    let severities = severities_from_letters(row.get(5)?)?;
    let mut counts = SeverityCounts::default();
    for (i, s) in Severity::ALL.iter().enumerate() {
        counts.0[s.index()] = row.get::<_, i64>(6 + i)? as u64;
    }
    let start = EventTime::from_millis(row.get(2)?);
    Ok(WindowAggregate {
        city: city(row.get(0)?)?,
        event_type: event_type(&row.get::<_, String>(3)?)?,
        window_start: start,
        window_end: start.saturating_add(Span::from_millis(row.get(1)?)),
        event_count: row.get::<_, i64>(4)? as u64,
        severities,
        severity_counts: counts,
    })
}

pub(crate) fn collect<T>(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    f: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(f(row)?);
    }
    Ok(out)
}

#[async_trait]
impl Sink for SqliteStore {
    fn properties(&self) -> Properties {
        Properties {
            atomic_batches: true,
            linger: Duration::from_millis(5),
        }
    }

    async fn write(&self, batch: Arc<WriteBatch>) -> Result<Written, StoreError> {
        if batch.is_empty() {
            return Ok(Written::default());
        }
        self.with_writer(move |conn| write::write_batch(conn, &batch))
            .await
    }

    async fn checkpoint(
        &self,
        source: &str,
        partition: u32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let source = source.to_owned();
        self.read(move |c| read::checkpoint(c, &source, partition))
            .await
    }

    async fn checkpoints(&self, source: &str) -> Result<Vec<Checkpoint>, StoreError> {
        let source = source.to_owned();
        self.read(move |c| read::checkpoints(c, &source)).await
    }

    async fn events_since(
        &self,
        since: EventTime,
        limit: usize,
    ) -> Result<Vec<CityEvent>, StoreError> {
        self.read(move |c| read::events_since(c, since, limit))
            .await
    }
}

#[async_trait]
impl Reader for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .optional()?;
            Ok(())
        })
        .await
    }

    async fn pipeline_status(&self, limit: usize) -> Result<Vec<PartitionStatus>, StoreError> {
        self.read(move |c| read::pipeline_status(c, limit)).await
    }

    async fn recent_events(
        &self,
        city: &str,
        range: TimeRange,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let city = city.to_owned();
        self.read(move |c| read::recent_events(c, &city, range, &page, now))
            .await
    }

    async fn city_summary(&self, city: &str, now: EventTime) -> Result<CitySummary, StoreError> {
        let city = city.to_owned();
        self.read(move |c| read::city_summary(c, &city, now)).await
    }

    async fn alerts(
        &self,
        city: Option<&str>,
        range: TimeRange,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        let city = city.map(str::to_owned);
        self.read(move |c| read::alerts(c, city.as_deref(), range, &page, now))
            .await
    }

    async fn cities(
        &self,
        page: Page<String>,
        now: EventTime,
    ) -> Result<Vec<CityCount>, StoreError> {
        self.read(move |c| read::cities(c, &page, now)).await
    }

    async fn windows(
        &self,
        query: &WindowQuery,
        page: Page<WindowPos>,
        now: EventTime,
    ) -> Result<Vec<WindowAggregate>, StoreError> {
        let query = query.clone();
        self.read(move |c| read::windows(c, &query, &page, now))
            .await
    }

    async fn windows_version(&self, city: &str) -> Result<Option<u64>, StoreError> {
        let city = city.to_owned();
        self.read(move |c| read::windows_version(c, &city)).await
    }

    async fn stats(&self, now: EventTime) -> Result<Stats, StoreError> {
        self.read(move |c| read::stats(c, now)).await
    }

    async fn late_events(
        &self,
        city: Option<&str>,
        range: TimeRange,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<LateEvent>, StoreError> {
        let city = city.map(str::to_owned);
        self.read(move |c| read::late_events(c, city.as_deref(), range, &page, now))
            .await
    }

    async fn dead_letters(
        &self,
        page: Page<DeadLetterKey>,
        now: EventTime,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(move |c| read::dead_letters(c, &page, now)).await
    }
}

#[async_trait]
impl Maintenance for SqliteStore {
    async fn purge_expired(&self, now: EventTime) -> Result<Purged, StoreError> {
        Ok(Purged {
            raw: self.purge_all(now, purge::raw_chunk).await?,
            alerts: self.purge_all(now, purge::alert_chunk).await?,
            windows: self.purge_all(now, purge::window_chunk).await?,
            late: self.purge_all(now, purge::late_chunk).await?,
            dead_letters: self.purge_all(now, purge::dead_letter_chunk).await?,
            deliveries: self.purge_all(now, purge::delivery_chunk).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synchronous(store: &SqliteStore) -> i64 {
        let writer = store.writer.lock().unwrap();
        writer
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    /// Commits sync to disk (`FULL`, 2) until the store is told that its source replays
    /// (`NORMAL`, 1).
    #[tokio::test]
    async fn commits_are_on_disk_before_they_return_unless_the_source_replays() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(synchronous(&store), 2);
        store
            .set_durability(Durability::SourceReplays)
            .await
            .unwrap();
        assert_eq!(synchronous(&store), 1);
        store.set_durability(Durability::EveryCommit).await.unwrap();
        assert_eq!(synchronous(&store), 2);
    }
}
