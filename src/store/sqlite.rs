//! The embedded store: one SQLite file in WAL mode under the data directory.
//!
//! One writer connection writes each [`WriteBatch`] in a single transaction, checkpoints
//! included, so what is stored and how far the processor got never disagree. Readers use a
//! small pool of read-only connections and never block the writer; a separate `serve`
//! process can read the same file while `process` writes it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::{
    CityCount, CitySummary, Fenced, LateCount, PartitionStatus, Stats, Store, StoreError,
    StoredEvent,
};
use crate::model::{
    Checkpoint, City, CityEvent, DeadLetter, EventTime, EventType, LateEvent, Severity,
    SeverityCounts, WindowAggregate, WriteBatch,
};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "citystream.db";
const SCHEMA: &str = include_str!("schema.sql");
/// Bumped whenever `schema.sql` changes in a way an existing file cannot follow.
const SCHEMA_VERSION: i64 = 3;
const CONNECTION_PRAGMAS: &str =
    "PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF;";
/// The writer copies the write-ahead log into the database every 256 pages: 4 MiB, SQLite's
/// default in bytes at the 16 KiB pages `schema.sql` sets. Larger logs make fewer copies but
/// each one stalls the commit it runs in for longer (64 MiB put the alert p99 past 40 ms at
/// 10 000 events/s; 4 MiB keeps it near 12 ms). The log file is cut back to 64 MiB at most.
/// The writer's page cache is 16 MiB (SQLite's default is 2 MiB, 128 pages of 16 KiB): a large
/// batch then no longer spills pages to the log before its commit (5 % more events/s).
const WRITER_PRAGMAS: &str =
    "PRAGMA wal_autocheckpoint = 256; PRAGMA journal_size_limit = 67108864;
    PRAGMA cache_size = -16384;";
const PURGE_CHUNK: i64 = 10_000;
/// Checkpoint rows below the confirmed offset are kept this long anyway: a processor that lost
/// its partition may still get an older commit through (not every broker fences it), and the
/// offset it commits must keep its row.
const CHECKPOINT_GRACE_MS: i64 = 10 * 60 * 1000;
/// The newest event time an expired raw event can have (`?1` is now): see `raw_ttl_spans`.
macro_rules! expiry_horizon {
    () => {
        "?1 - (SELECT coalesce(min(span), 0) FROM raw_ttl_spans)"
    };
}
/// Raw events past their expiry that the purge has not deleted yet, per city, type and
/// severity (`?1` is now): the counts subtract them, so reads never show an expired event. The
/// purge keeps this small, and it reads only the oldest range of the primary key.
const EXPIRED: &str = concat!(
    "SELECT city, event_type, severity, count(*) AS n FROM raw_events
     WHERE ts <= ",
    expiry_horizon!(),
    " AND ttl <= ?1 GROUP BY city, event_type, severity"
);
/// The latest checkpoint of every partition.
const LATEST_CHECKPOINTS: &str = "SELECT source, partition, next_offset, max_event_time,
        replay_offset, replay_max_event_time, final_watermark, updated_at
    FROM checkpoints c WHERE next_offset =
        (SELECT max(next_offset) FROM checkpoints WHERE source = c.source AND partition = c.partition)";

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    readers: r2d2::Pool<SqliteConnectionManager>,
}

impl SqliteStore {
    /// Opens (creating when needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let writer = Connection::open(&path)?;
        writer.execute_batch(CONNECTION_PRAGMAS)?;
        check_schema_version(&writer, &path)?;
        writer.execute_batch(SCHEMA)?;
        writer.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        writer.execute_batch(WRITER_PRAGMAS)?;
        let manager = SqliteConnectionManager::file(&path).with_init(|c| {
            c.execute_batch(CONNECTION_PRAGMAS)?;
            c.execute_batch("PRAGMA query_only = ON;")
        });
        // One connection per runtime worker (reads run on the worker; see `read`), and at
        // least four.
        let workers = std::thread::available_parallelism().map_or(4, |n| n.get()) as u32;
        let readers = r2d2::Pool::builder()
            .max_size(workers.max(4))
            .min_idle(Some(1))
            .build(manager)?;
        Ok(SqliteStore {
            path,
            writer: Arc::new(Mutex::new(writer)),
            readers,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs a read on the calling task. Every read is bounded (an index range with a `LIMIT`, a
    /// key lookup, or the counters) and takes tens of microseconds on a warm cache; handing it to
    /// the blocking pool cost two thread switches per request, more than the query itself. The
    /// pool has more connections than the runtime has workers, so a read never waits for one.
    /// Each read spends a unit of the task's cooperative budget, so a loop of reads still lets
    /// the other tasks of its worker run.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError>,
    {
        tokio::task::consume_budget().await;
        f(&*self.readers.get()?)
    }

    async fn with_writer<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer
                .lock()
                .map_err(|_| StoreError::Task("writer connection poisoned".into()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

/// A file written by a build with another layout is refused with a clear message, not misread.
fn check_schema_version(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let existing: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'raw_events'",
        [],
        |r| r.get(0),
    )?;
    if existing > 0 && found != SCHEMA_VERSION {
        return Err(StoreError::SchemaVersion {
            path: path.display().to_string(),
            found,
            expected: SCHEMA_VERSION,
        });
    }
    Ok(())
}

fn write_batch(conn: &mut Connection, batch: &WriteBatch) -> Result<Fenced, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut behind = Vec::new();
    {
        // Window values of a partition only move forward: a writer whose position is behind
        // the stored one (a processor that lost its partition and has not noticed yet) keeps
        // its inserts, which are idempotent, but not its windows or checkpoint.
        let mut position = tx.prepare_cached(
            "SELECT max(next_offset) FROM checkpoints WHERE source = ?1 AND partition = ?2",
        )?;
        for c in &batch.checkpoints {
            let stored: Option<i64> =
                position.query_row(params![c.source, c.partition], |r| r.get(0))?;
            if stored.is_some_and(|s| s > c.next_offset as i64) {
                tracing::warn!(source = %c.source, partition = c.partition, stored,
                    ours = c.next_offset,
                    "a newer writer owns this partition; its window values stay");
                metrics::counter!("citystream_stale_writes_fenced_total").increment(1);
                behind.push(c.partition);
            }
        }

        let mut raw = tx.prepare_cached(
            "INSERT INTO raw_events (event_id, ts, city, event_type, severity, description, ttl)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
        )?;
        let mut raw_counts: HashMap<(&str, EventType, Severity), i64> = HashMap::new();
        let mut spans: Vec<i64> = Vec::new();
        for r in &batch.raw {
            let e = &r.event;
            let inserted = raw.execute(params![
                e.event_id,
                e.timestamp.as_millis(),
                e.city.as_str(),
                e.event_type.as_str(),
                e.severity.as_str(),
                e.description,
                r.ttl.as_millis(),
            ])?;
            let span = r.ttl.as_millis() - e.timestamp.as_millis();
            if !spans.contains(&span) {
                spans.push(span);
            }
            if inserted > 0 {
                *raw_counts
                    .entry((e.city.as_str(), e.event_type, e.severity))
                    .or_default() += 1;
            }
        }
        let mut count_raw = tx.prepare_cached(
            "INSERT INTO raw_counts (city, event_type, severity, events) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO UPDATE SET events = events + excluded.events",
        )?;
        for ((city, event_type, severity), n) in raw_counts {
            count_raw.execute(params![city, event_type.as_str(), severity.as_str(), n])?;
        }
        let mut span =
            tx.prepare_cached("INSERT OR IGNORE INTO raw_ttl_spans (span) VALUES (?1)")?;
        for s in spans {
            span.execute(params![s])?;
        }

        let mut alert = tx.prepare_cached(
            "INSERT INTO alerts (city, ts, event_id, event_type, severity, description)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )?;
        let mut alert_counts = SeverityCounts::default();
        for e in &batch.alerts {
            let inserted = alert.execute(params![
                e.city.as_str(),
                e.timestamp.as_millis(),
                e.event_id,
                e.event_type.as_str(),
                e.severity.as_str(),
                e.description,
            ])?;
            if inserted > 0 {
                alert_counts.add(e.severity);
            }
        }
        let mut count_alerts = tx.prepare_cached(
            "INSERT INTO alert_counts (severity, alerts) VALUES (?1, ?2)
             ON CONFLICT DO UPDATE SET alerts = alerts + excluded.alerts",
        )?;
        for s in Severity::ALL {
            let n = alert_counts.get(s);
            if n > 0 {
                count_alerts.execute(params![s.as_str(), n as i64])?;
            }
        }

        let mut window = tx.prepare_cached(
            "INSERT INTO aggregations (partition_key, city, event_type, window_start, window_end,
                 event_count, severities, low, medium, high, critical, partition)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (partition_key) DO UPDATE SET
                 event_count = excluded.event_count, severities = excluded.severities,
                 low = excluded.low, medium = excluded.medium, high = excluded.high,
                 critical = excluded.critical, partition = excluded.partition",
        )?;
        for w in batch
            .windows
            .iter()
            .filter(|w| !behind.contains(&w.partition))
        {
            let c = w.severity_counts;
            window.execute(params![
                w.partition_key(),
                w.city.as_str(),
                w.event_type.as_str(),
                w.window_start.as_millis(),
                w.window_end.as_millis(),
                w.event_count as i64,
                severities_text(&w.severities),
                c.get(Severity::Low) as i64,
                c.get(Severity::Medium) as i64,
                c.get(Severity::High) as i64,
                c.get(Severity::Critical) as i64,
                w.partition,
            ])?;
        }

        let mut late = tx.prepare_cached(
            "INSERT INTO late_events (event_id, ts, city, event_type, severity, description,
                 watermark, partition, offset)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
        )?;
        let mut late_counts: HashMap<(&str, EventType), i64> = HashMap::new();
        for l in &batch.late {
            let e = &l.event;
            let inserted = late.execute(params![
                e.event_id,
                e.timestamp.as_millis(),
                e.city.as_str(),
                e.event_type.as_str(),
                e.severity.as_str(),
                e.description,
                l.watermark.as_millis(),
                l.partition,
                l.offset as i64,
            ])?;
            if inserted > 0 {
                *late_counts
                    .entry((e.city.as_str(), e.event_type))
                    .or_default() += 1;
            }
        }
        let mut count_late = tx.prepare_cached(
            "INSERT INTO late_counts (city, event_type, late_events) VALUES (?1, ?2, ?3)
             ON CONFLICT DO UPDATE SET late_events = late_events + excluded.late_events",
        )?;
        for ((city, event_type), n) in late_counts {
            count_late.execute(params![city, event_type.as_str(), n])?;
        }

        let mut dead = tx.prepare_cached(
            "INSERT INTO dead_letters (source, partition, offset, kind, reason, payload_prefix,
                 payload_len, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
        )?;
        let mut dead_counts: HashMap<&str, i64> = HashMap::new();
        for d in &batch.dead_letters {
            let inserted = dead.execute(params![
                d.source,
                d.partition,
                d.offset as i64,
                d.kind,
                d.reason,
                d.payload_prefix(),
                d.payload_len as i64,
                d.received_at.as_millis(),
            ])?;
            if inserted > 0 {
                *dead_counts.entry(d.kind.as_str()).or_default() += 1;
            }
        }
        let mut count_dead = tx.prepare_cached(
            "INSERT INTO dead_letter_counts (kind, dead_letters) VALUES (?1, ?2)
             ON CONFLICT DO UPDATE SET dead_letters = dead_letters + excluded.dead_letters",
        )?;
        for (kind, n) in dead_counts {
            count_dead.execute(params![kind, n])?;
        }

        let mut checkpoint = tx.prepare_cached(
            "INSERT INTO checkpoints (source, partition, replay_offset, replay_max_event_time,
                 next_offset, max_event_time, final_watermark, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (source, partition, replay_offset) DO UPDATE SET
                 next_offset = excluded.next_offset, max_event_time = excluded.max_event_time,
                 final_watermark = excluded.final_watermark, updated_at = excluded.updated_at",
        )?;
        let mut prune = tx.prepare_cached(
            "DELETE FROM checkpoints
             WHERE source = ?1 AND partition = ?2 AND replay_offset < ?3 AND updated_at < ?4",
        )?;
        let now = EventTime::now().as_millis();
        for c in batch
            .checkpoints
            .iter()
            .filter(|c| !behind.contains(&c.partition))
        {
            checkpoint.execute(params![
                c.source,
                c.partition,
                c.replay_offset as i64,
                c.replay_max_event_time.map(EventTime::as_millis),
                c.next_offset as i64,
                c.max_event_time.map(EventTime::as_millis),
                c.final_watermark.map(EventTime::as_millis),
                now,
            ])?;
            if let Some(floor) = batch.checkpoint_floor.get(&c.partition) {
                let floor = (*floor).min(c.replay_offset) as i64;
                prune.execute(params![
                    c.source,
                    c.partition,
                    floor,
                    now - CHECKPOINT_GRACE_MS
                ])?;
            }
        }
    }
    tx.commit()?;
    Ok(behind)
}

/// Deletes up to [`PURGE_CHUNK`] expired raw events and takes them off the counts, in one
/// transaction.
fn purge_chunk(conn: &mut Connection, now: EventTime) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut purged: HashMap<(String, String, String), i64> = HashMap::new();
    let mut total = 0u64;
    {
        let mut delete = tx.prepare_cached(concat!(
            "DELETE FROM raw_events WHERE (ts, event_id) IN
                     (SELECT ts, event_id FROM raw_events WHERE ts <= ",
            expiry_horizon!(),
            " AND ttl <= ?1 LIMIT ?2)
                 RETURNING city, event_type, severity"
        ))?;
        let mut rows = delete.query(params![now.as_millis(), PURGE_CHUNK])?;
        while let Some(row) = rows.next()? {
            *purged
                .entry((row.get(0)?, row.get(1)?, row.get(2)?))
                .or_default() += 1;
            total += 1;
        }
    }
    {
        let mut uncount = tx.prepare_cached(
            "UPDATE raw_counts SET events = events - ?4
             WHERE city = ?1 AND event_type = ?2 AND severity = ?3",
        )?;
        for ((city, event_type, severity), n) in &purged {
            uncount.execute(params![city, event_type, severity, n])?;
        }
    }
    tx.commit()?;
    Ok(total)
}

/// A window's severities as stored: one letter per event in arrival order (`l`, `m`, `h`, `c`).
/// A window holds up to `--severities-cap` of them and is rewritten at every batch that touches
/// it, so the column is kept small and cheap to read back.
const SEVERITY_LETTERS: [u8; 4] = [b'l', b'm', b'h', b'c'];

fn severities_text(severities: &[Severity]) -> String {
    severities
        .iter()
        .map(|s| char::from(SEVERITY_LETTERS[s.index()]))
        .collect()
}

fn severities_from_text(text: &str) -> Result<Vec<Severity>, StoreError> {
    let mut severities = Vec::with_capacity(text.len());
    for b in text.bytes() {
        severities.push(match b {
            b'l' => Severity::Low,
            b'm' => Severity::Medium,
            b'h' => Severity::High,
            b'c' => Severity::Critical,
            other => return Err(corrupt(format!("severity letter {:?}", char::from(other)))),
        });
    }
    Ok(severities)
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn city(s: String) -> Result<City, StoreError> {
    City::parse(s).map_err(corrupt)
}

fn event_type(s: &str) -> Result<EventType, StoreError> {
    s.parse().map_err(corrupt)
}

fn severity(s: &str) -> Result<Severity, StoreError> {
    s.parse().map_err(corrupt)
}

/// Columns: event_id, ts, city, event_type, severity, description.
fn event_from_row(row: &Row<'_>) -> Result<CityEvent, StoreError> {
    Ok(CityEvent {
        event_id: row.get(0)?,
        timestamp: EventTime::from_millis(row.get(1)?),
        city: city(row.get(2)?)?,
        event_type: event_type(&row.get::<_, String>(3)?)?,
        severity: severity(&row.get::<_, String>(4)?)?,
        description: row.get(5)?,
    })
}

/// Columns: source, partition, next_offset, max_event_time, replay_offset,
/// replay_max_event_time, final_watermark.
fn checkpoint_from_row(r: &Row<'_>) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        source: r.get(0)?,
        partition: r.get(1)?,
        next_offset: r.get::<_, i64>(2)? as u64,
        max_event_time: r.get::<_, Option<i64>>(3)?.map(EventTime::from_millis),
        replay_offset: r.get::<_, i64>(4)? as u64,
        replay_max_event_time: r.get::<_, Option<i64>>(5)?.map(EventTime::from_millis),
        final_watermark: r.get::<_, Option<i64>>(6)?.map(EventTime::from_millis),
    })
}

const WINDOW_COLUMNS: &str = "city, event_type, window_start, window_end, event_count, severities,
    low, medium, high, critical, partition";

fn window_from_row(row: &Row<'_>) -> Result<WindowAggregate, StoreError> {
    let severities = severities_from_text(&row.get::<_, String>(5)?)?;
    let mut counts = SeverityCounts::default();
    for (i, s) in Severity::ALL.iter().enumerate() {
        counts.0[s.index()] = row.get::<_, i64>(6 + i)? as u64;
    }
    Ok(WindowAggregate {
        city: city(row.get(0)?)?,
        event_type: event_type(&row.get::<_, String>(1)?)?,
        window_start: EventTime::from_millis(row.get(2)?),
        window_end: EventTime::from_millis(row.get(3)?),
        event_count: row.get::<_, i64>(4)? as u64,
        severities,
        severity_counts: counts,
        partition: row.get::<_, i64>(10)? as u32,
    })
}

fn collect<T>(
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
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn write(&self, batch: Arc<WriteBatch>) -> Result<Fenced, StoreError> {
        if batch.is_empty() {
            return Ok(Fenced::new());
        }
        self.with_writer(move |conn| write_batch(conn, &batch))
            .await
    }

    async fn checkpoints(&self, source: &str) -> Result<Vec<Checkpoint>, StoreError> {
        let source = source.to_owned();
        self.read(move |c| {
            let sql = format!("{LATEST_CHECKPOINTS} AND source = ?1 ORDER BY partition");
            let mut stmt = c.prepare_cached(&sql)?;
            collect(&mut stmt, params![source], checkpoint_from_row)
        })
        .await
    }

    async fn checkpoint_at(
        &self,
        source: &str,
        partition: u32,
        replay_offset: u64,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let source = source.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT source, partition, next_offset, max_event_time, replay_offset,
                     replay_max_event_time, final_watermark
                 FROM checkpoints WHERE source = ?1 AND partition = ?2 AND replay_offset = ?3",
            )?;
            let mut rows = collect(
                &mut stmt,
                params![source, partition, replay_offset as i64],
                checkpoint_from_row,
            )?;
            Ok(rows.pop())
        })
        .await
    }

    async fn pipeline_status(&self) -> Result<Vec<PartitionStatus>, StoreError> {
        self.read(|c| {
            let sql = format!("{LATEST_CHECKPOINTS} ORDER BY source, partition");
            let mut stmt = c.prepare_cached(&sql)?;
            collect(&mut stmt, [], |r| {
                Ok(PartitionStatus {
                    checkpoint: checkpoint_from_row(r)?,
                    updated_at: EventTime::from_millis(r.get(7)?),
                })
            })
        })
        .await
    }

    async fn windows_ending_after(&self, t: EventTime) -> Result<Vec<WindowAggregate>, StoreError> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {WINDOW_COLUMNS} FROM aggregations WHERE window_end > ?1 ORDER BY window_start"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            collect(&mut stmt, params![t.as_millis()], window_from_row)
        })
        .await
    }

    async fn recent_events(
        &self,
        city: &str,
        limit: usize,
        now: EventTime,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let city = city.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT event_id, ts, city, event_type, severity, description, ttl FROM raw_events
                 WHERE city = ?1 AND ttl > ?2 ORDER BY ts DESC, event_id DESC LIMIT ?3",
            )?;
            collect(
                &mut stmt,
                params![city, now.as_millis(), limit as i64],
                |r| {
                    Ok(StoredEvent {
                        event: event_from_row(r)?,
                        ttl: r.get::<_, i64>(6)?.div_euclid(1000),
                    })
                },
            )
        })
        .await
    }

    async fn city_summary(&self, city: &str, now: EventTime) -> Result<CitySummary, StoreError> {
        let city = city.to_owned();
        self.read(move |c| {
            let mut summary = CitySummary::default();
            let mut stmt = c.prepare_cached(&format!(
                "SELECT event_type, severity, sum(n) FROM (
                     SELECT event_type, severity, events AS n FROM raw_counts WHERE city = ?2
                     UNION ALL
                     SELECT event_type, severity, -n FROM ({EXPIRED}) WHERE city = ?2)
                 GROUP BY event_type, severity"
            ))?;
            let mut rows = stmt.query(params![now.as_millis(), city])?;
            while let Some(row) = rows.next()? {
                let n = row.get::<_, i64>(2)? as u64;
                if n == 0 {
                    continue;
                }
                let t = event_type(&row.get::<_, String>(0)?)?;
                let s = severity(&row.get::<_, String>(1)?)?;
                summary.total_events += n;
                *summary.by_type.entry(t).or_default() += n;
                summary.by_severity.0[s.index()] += n;
            }
            summary.late_events =
                c.prepare_cached(
                    "SELECT coalesce(sum(late_events), 0) FROM late_counts WHERE city = ?1",
                )?
                .query_row(params![city], |r| r.get::<_, i64>(0))? as u64;
            Ok(summary)
        })
        .await
    }

    async fn alerts(
        &self,
        city: Option<&str>,
        since: EventTime,
        limit: usize,
    ) -> Result<Vec<CityEvent>, StoreError> {
        let city = city.map(str::to_owned);
        self.read(move |c| {
            const COLUMNS: &str = "event_id, ts, city, event_type, severity, description";
            match city {
                Some(city) => {
                    let mut stmt = c.prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM alerts WHERE city = ?1 AND ts >= ?2
                         ORDER BY ts DESC, event_id DESC LIMIT ?3"
                    ))?;
                    collect(
                        &mut stmt,
                        params![city, since.as_millis(), limit as i64],
                        event_from_row,
                    )
                }
                None => {
                    let mut stmt = c.prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM alerts WHERE ts >= ?1
                         ORDER BY ts DESC, event_id DESC LIMIT ?2"
                    ))?;
                    collect(
                        &mut stmt,
                        params![since.as_millis(), limit as i64],
                        event_from_row,
                    )
                }
            }
        })
        .await
    }

    async fn cities(&self, now: EventTime) -> Result<Vec<CityCount>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT city, sum(n) AS total FROM (
                     SELECT city, events AS n FROM raw_counts
                     UNION ALL
                     SELECT city, -n FROM ({EXPIRED}))
                 GROUP BY city HAVING total > 0 ORDER BY total DESC, city ASC"
            ))?;
            collect(&mut stmt, params![now.as_millis()], |r| {
                Ok(CityCount {
                    city: r.get(0)?,
                    total_events: r.get::<_, i64>(1)? as u64,
                })
            })
        })
        .await
    }

    async fn aggregations(
        &self,
        city: &str,
        event_type: Option<EventType>,
        limit: usize,
    ) -> Result<Vec<WindowAggregate>, StoreError> {
        let city = city.to_owned();
        self.read(move |c| match event_type {
            Some(t) => {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {WINDOW_COLUMNS} FROM aggregations WHERE city = ?1 AND event_type = ?2
                     ORDER BY window_start DESC LIMIT ?3"
                ))?;
                collect(
                    &mut stmt,
                    params![city, t.as_str(), limit as i64],
                    window_from_row,
                )
            }
            None => {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {WINDOW_COLUMNS} FROM aggregations WHERE city = ?1
                     ORDER BY window_start DESC, event_type DESC LIMIT ?2"
                ))?;
                collect(&mut stmt, params![city, limit as i64], window_from_row)
            }
        })
        .await
    }

    async fn stats(&self, now: EventTime) -> Result<Stats, StoreError> {
        self.read(move |c| {
            let mut stats = Stats {
                total_events: c
                    .prepare_cached(&format!(
                        "SELECT (SELECT coalesce(sum(events), 0) FROM raw_counts)
                              - (SELECT coalesce(sum(n), 0) FROM ({EXPIRED}))"
                    ))?
                    .query_row(params![now.as_millis()], |r| r.get::<_, i64>(0))?
                    as u64,
                ..Stats::default()
            };
            let mut stmt = c.prepare_cached("SELECT severity, alerts FROM alert_counts")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let s = severity(&row.get::<_, String>(0)?)?;
                stats.alerts.0[s.index()] = row.get::<_, i64>(1)? as u64;
            }
            let mut stmt = c.prepare_cached(
                "SELECT city, event_type, late_events FROM late_counts
                 WHERE late_events > 0 ORDER BY city, event_type",
            )?;
            stats.late_by_city_type = collect(&mut stmt, [], |r| {
                Ok(LateCount {
                    city: r.get(0)?,
                    event_type: event_type(&r.get::<_, String>(1)?)?,
                    late_events: r.get::<_, i64>(2)? as u64,
                })
            })?;
            stats.late_events = stats.late_by_city_type.iter().map(|l| l.late_events).sum();
            let mut stmt = c.prepare_cached(
                "SELECT kind, dead_letters FROM dead_letter_counts WHERE dead_letters > 0",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let n = row.get::<_, i64>(1)? as u64;
                stats.dead_letters += n;
                stats.dead_letters_by_kind.insert(row.get(0)?, n);
            }
            Ok(stats)
        })
        .await
    }

    async fn late_events(
        &self,
        city: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LateEvent>, StoreError> {
        let city = city.map(str::to_owned);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT event_id, ts, city, event_type, severity, description, watermark,
                     partition, offset
                 FROM late_events WHERE ?1 IS NULL OR city = ?1
                 ORDER BY ts DESC, event_id DESC LIMIT ?2",
            )?;
            collect(&mut stmt, params![city, limit as i64], |r| {
                Ok(LateEvent {
                    event: event_from_row(r)?,
                    watermark: EventTime::from_millis(r.get(6)?),
                    partition: r.get(7)?,
                    offset: r.get::<_, i64>(8)? as u64,
                })
            })
        })
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT source, partition, offset, kind, reason, payload_prefix, payload_len,
                     received_at
                 FROM dead_letters
                 ORDER BY received_at DESC, source DESC, partition DESC, offset DESC LIMIT ?1",
            )?;
            collect(&mut stmt, params![limit as i64], |r| {
                Ok(DeadLetter {
                    source: r.get(0)?,
                    partition: r.get(1)?,
                    offset: r.get::<_, i64>(2)? as u64,
                    kind: r.get(3)?,
                    reason: r.get(4)?,
                    payload: Bytes::from(r.get::<_, Vec<u8>>(5)?),
                    payload_len: r.get::<_, i64>(6)? as usize,
                    received_at: EventTime::from_millis(r.get(7)?),
                })
            })
        })
        .await
    }

    async fn purge_expired(&self, now: EventTime) -> Result<u64, StoreError> {
        self.with_writer(move |c| {
            let mut total = 0u64;
            loop {
                let n = purge_chunk(c, now)?;
                total += n;
                if n < PURGE_CHUNK as u64 {
                    return Ok(total);
                }
            }
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .optional()?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_round_trip_through_their_letters() {
        let all = [
            Severity::Critical,
            Severity::Low,
            Severity::High,
            Severity::Medium,
            Severity::Low,
        ];
        assert_eq!(severities_text(&all), "clhml");
        assert_eq!(
            severities_from_text(&severities_text(&all)).ok(),
            Some(all.to_vec())
        );
        assert!(severities_from_text("lmx").is_err());
    }
}
