//! History at scale on SQLite: a store holding a year of windows of many cities, and how long
//! the history read takes through the store's `Reader`.
//!
//! ```sh
//! cargo run --release --example history -- fixture DIR [CITIES] [DAYS]   # 1000 cities, 365 days
//! cargo run --release --example history -- query DIR [RUNS] [CITIES]    # 2000 reads
//! ```
//!
//! The fixture is what a year at the generator's rate gives every city: its default 0.2 events/s
//! over six cities is 120 events an hour per city, 30 per type. Pushing a billion events through
//! the pipeline would take hours, so the fixture writes the `windows` table directly, with the
//! values those events make: the base windows of the last 30 days (their retention), and the
//! hourly and daily rollups of the whole year. The read is the dashboard's 30 days of hours of
//! one city, every type: 2 880 windows, one `Reader::windows` call.

use std::path::Path;
use std::time::Instant;

use citystream::model::{BASE, EventTime, ROLLUPS, Resolution, Span};
use citystream::store::sqlite::SqliteStore;
use citystream::store::{Page, Reader, TimeRange, WindowQuery};
use rusqlite::params;

const TYPES: [&str; 4] = ["construction", "incident", "traffic", "weather"];
/// Events per city, type and hour at the generator's default rate.
const PER_TYPE_HOUR: i64 = 30;

fn city(i: usize) -> String {
    format!("City{i:04}")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize| -> anyhow::Result<usize> {
        Ok(args
            .get(i)
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default))
    };
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("fixture"), Some(dir)) => fixture(Path::new(dir), number(2, 1000)?, number(3, 365)?),
        (Some("query"), Some(dir)) => query(Path::new(dir), number(2, 2000)?, number(3, 1000)?),
        _ => anyhow::bail!(
            "usage: history fixture DIR [CITIES] [DAYS] | history query DIR [RUNS] [CITIES]"
        ),
    }
}

/// The windows of one resolution over `days` before now: (start, events per type).
fn windows(r: Resolution, days: i64, now: EventTime) -> impl Iterator<Item = (i64, i64)> {
    let span = r.span.as_millis();
    let end = r.start_of(now).as_millis();
    let first = end - days * 86_400_000;
    (first / span..=end / span).map(move |n| {
        // 30 an hour: 2 and 3 in turn in the 5-minute windows; whole multiples above.
        let events = match span < 3_600_000 {
            true => 2 + n % 2,
            false => PER_TYPE_HOUR * span / 3_600_000,
        };
        (n * span, events)
    })
}

fn fixture(dir: &Path, cities: usize, days: usize) -> anyhow::Result<()> {
    drop(SqliteStore::open(dir)?);
    let mut conn = rusqlite::Connection::open(dir.join(citystream::store::sqlite::DB_FILE))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;
         DROP INDEX windows_by_expiry;",
    )?;
    let now = EventTime::now();
    let days = i64::try_from(days)?;
    let started = Instant::now();
    let mut rows = 0u64;
    for c in 0..cities {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO windows (city, span, start, event_type, event_count, severities,
                     low, medium, high, critical, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            let name = city(c);
            let resolutions = [(BASE, BASE.retention.as_millis() / 86_400_000)]
                .into_iter()
                .chain(ROLLUPS.map(|r| (r, days)));
            for (r, kept_days) in resolutions {
                for (start, events) in windows(r, kept_days.min(days), now) {
                    let letters: String = "lmhc"
                        .chars()
                        .cycle()
                        .take(events.min(1000) as usize)
                        .collect();
                    let share = |i: i64| events / 4 + i64::from(i < events % 4);
                    let expires = start + r.span.as_millis() + r.retention.as_millis();
                    for t in TYPES {
                        insert.execute(params![
                            name,
                            r.span.as_millis(),
                            start,
                            t,
                            events,
                            letters,
                            share(0),
                            share(1),
                            share(2),
                            share(3),
                            expires
                        ])?;
                        rows += 1;
                    }
                }
            }
            // The city's windows version, as a write would give it.
            tx.execute(
                "INSERT INTO window_versions (city, version) VALUES (?1, ?2)",
                params![name, c as i64 + 1],
            )?;
        }
        tx.commit()?;
        if c % 100 == 99 {
            eprintln!(
                "{} cities, {rows} windows, {:.0} s",
                c + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    // The next write gives a version no city of the fixture has.
    conn.execute(
        "INSERT INTO totals (name, value) VALUES ('window_writes', ?1)
         ON CONFLICT DO UPDATE SET value = excluded.value",
        params![cities as i64],
    )?;
    drop(conn);
    // The expiry index is made once, sorted, by the store's own schema.
    drop(SqliteStore::open(dir)?);
    println!(
        "fixture cities={cities} days={days} windows={rows} seconds={:.0}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn query(dir: &Path, runs: usize, cities: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = SqliteStore::open(dir)?;
        let now = EventTime::now();
        let mut took = Vec::with_capacity(runs);
        let mut windows = 0;
        for run in 0..runs {
            let query = WindowQuery {
                city: city(run * 7919 % cities),
                event_type: None,
                resolution: ROLLUPS[0],
                range: TimeRange::since(now.saturating_sub(Span::from_days(30))),
            };
            let started = Instant::now();
            let read = store.windows(&query, Page::first(3000), now).await?;
            took.push(started.elapsed().as_secs_f64() * 1000.0);
            windows = read.len();
        }
        took.sort_by(f64::total_cmp);
        let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
        println!(
            "history_read windows={windows} runs={runs} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            at(0.5),
            at(0.99),
            took[took.len() - 1]
        );
        Ok(())
    })
}
