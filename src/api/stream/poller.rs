//! The one reader of the store behind every stream, in three loops so that a slow read of one
//! kind never holds up another: alerts every half second; windows and stats every two seconds;
//! health every two seconds. It stops when the last client has gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use utoipa::ToSchema;

use super::changes::{AlertWatch, WindowWatch};
use super::{Hub, Snapshot};
use crate::api::AppState;
use crate::api::body::{HealthStatus, Reachable, StatsBody, StoredAlertBody};
use crate::api::handlers::{check_health, stats_body};
use crate::model::{City, EventTime, EventType, SeverityCounts, Span, WindowAggregate};
use crate::store::{CityCount, Page, StoreError, TimeRange, WindowQuery};

/// How often new alerts are looked for: an alert shows within this of being stored.
const ALERT_EVERY: Duration = Duration::from_millis(500);
/// How often windows, stats and health are read.
const TICK: Duration = Duration::from_secs(2);
/// Alerts further back than this from now are not streamed (they are in `/alerts`).
const ALERT_LOOKBACK: Span = Span::from_mins(60);
/// The alerts a read looks at: the newest this many by event time. The stream keeps them
/// current; an alert stored below them (far out of order, or one of more than this many new
/// ones between two reads) is in `/alerts` only.
const ALERT_READ: usize = 500;
/// Most cities whose windows are watched (the first by name).
const WATCHED_CITIES: usize = 1000;
/// The watched cities are listed again every this many ticks (cities come rarely), and every
/// tick while there are none.
const CITIES_EVERY: u32 = 5;
/// Windows read per city: its newest two of each type taken.
fn windows_per_city() -> usize {
    2 * EventType::all().len()
}
/// Cities read at once.
const CITY_READS: usize = 8;
/// Partitions whose checkpoints make the processing rate.
const RATE_PARTITIONS: usize = 256;

/// A window whose counts changed.
#[derive(Serialize, ToSchema)]
pub struct StreamWindow {
    pub city: City,
    pub event_type: EventType,
    pub window_start: EventTime,
    pub window_end: EventTime,
    pub event_count: u64,
    pub severity_counts: SeverityCounts,
}

/// The pipeline's health, every two seconds.
#[derive(Serialize, ToSchema)]
pub struct StreamHealth {
    pub status: HealthStatus,
    pub store: StreamStore,
    /// At most the 256 most recently updated partitions.
    pub partitions: Vec<StreamPartition>,
    pub checked_at: EventTime,
}

#[derive(Serialize, ToSchema)]
pub struct StreamStore {
    pub backend: &'static str,
    pub status: Reachable,
}

#[derive(Serialize, ToSchema)]
pub struct StreamPartition {
    pub source: String,
    pub partition: u32,
    pub next_offset: u64,
    pub watermark: Option<EventTime>,
    /// How far the watermark trails the wall clock, in milliseconds.
    pub watermark_lag_ms: Option<i64>,
    pub updated_at: EventTime,
}

/// `/stats`, and how fast the processors go.
#[derive(Serialize)]
struct StreamStats {
    #[serde(flatten)]
    stats: StatsBody,
    /// Records (events, repeats and dead letters) the processors checkpointed per second since
    /// the previous tick; `null` on the first.
    records_per_second: Option<f64>,
}

/// Starts the poller of `run`, which a subscription just began.
pub fn spawn(state: &AppState, run: u64) {
    let state = state.clone();
    tokio::spawn(async move {
        let _stopped = Stopped {
            hub: state.stream.clone(),
            run,
        };
        let mut alerts = AlertWatch::default();
        // The first read learns what is there before anything else is read.
        poll_alerts(&state, &mut alerts).await;
        tokio::select! {
            () = alert_loop(&state, alerts) => {}
            () = tick_loop(&state) => {}
            () = health_loop(&state) => {}
        }
    });
}

/// Marks the poller of `run` stopped however its task ends, a panic included, so that the next
/// client starts another.
struct Stopped {
    hub: Arc<Hub>,
    run: u64,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let mut log = self.hub.log();
        if log.run == self.run {
            log.polling = false;
        }
    }
}

fn ticks(every: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

async fn alert_loop(state: &AppState, mut alerts: AlertWatch) {
    let mut every = ticks(ALERT_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        if !state.stream.keep_polling() {
            return;
        }
        poll_alerts(state, &mut alerts).await;
    }
}

async fn poll_alerts(state: &AppState, alerts: &mut AlertWatch) {
    let now = EventTime::now();
    let since = TimeRange::since(now.saturating_sub(ALERT_LOOKBACK));
    let page = Page::first(ALERT_READ);
    match state.store.alerts(None, since, page, now).await {
        Ok(read) => {
            for alert in alerts.update(&read, ALERT_READ) {
                state
                    .stream
                    .publish("alert", &StoredAlertBody::from(&alert));
            }
        }
        Err(error) => tracing::debug!(error = %error.report(), "stream: reading alerts failed"),
    }
}

/// Windows and stats, with what they remember between ticks.
async fn tick_loop(state: &AppState) {
    let mut every = ticks(TICK);
    let mut windows = WindowWatch::default();
    let mut cities = Vec::new();
    let mut rate = Rate::default();
    for n in 0u32.. {
        every.tick().await;
        if !state.stream.keep_polling() {
            return;
        }
        if n % CITIES_EVERY == 0 || cities.is_empty() {
            match list_cities(state).await {
                Ok(listed) => cities = listed,
                Err(error) => {
                    tracing::debug!(error = %error.report(), "stream: listing cities failed")
                }
            }
        }
        poll_windows(state, &cities, &mut windows).await;
        poll_stats(state, &mut rate).await;
    }
}

async fn list_cities(state: &AppState) -> Result<Vec<CityCount>, StoreError> {
    let page = Page::first(WATCHED_CITIES);
    state.store.cities(page, EventTime::now()).await
}

async fn poll_windows(state: &AppState, cities: &[CityCount], windows: &mut WindowWatch) {
    match read_windows(state, cities).await {
        Ok(read) => {
            for w in windows.update(read, state.resolutions.base().span) {
                state.stream.publish("window", &stream_window(w));
            }
        }
        Err(error) => tracing::debug!(error = %error.report(), "stream: reading windows failed"),
    }
}

/// The newest windows of every watched city.
async fn read_windows(
    state: &AppState,
    cities: &[CityCount],
) -> Result<Vec<WindowAggregate>, StoreError> {
    let store = &state.store;
    let now = EventTime::now();
    let base = state.resolutions.base();
    // Owned names: a future borrowing the list would not be `Send` for every lifetime.
    let names: Vec<String> = cities.iter().map(|c| c.city.clone()).collect();
    let per_city: Vec<Vec<WindowAggregate>> = stream::iter(names)
        .map(|city| async move {
            let query = WindowQuery {
                city,
                event_type: None,
                resolution: base,
                range: TimeRange::ALL,
            };
            store
                .windows(&query, Page::first(windows_per_city()), now)
                .await
        })
        .buffer_unordered(CITY_READS)
        .try_collect()
        .await?;
    Ok(per_city.into_iter().flatten().collect())
}

fn stream_window(w: WindowAggregate) -> StreamWindow {
    StreamWindow {
        city: w.city,
        event_type: w.event_type,
        window_start: w.window_start,
        window_end: w.window_end,
        event_count: w.event_count,
        severity_counts: w.severity_counts,
    }
}

async fn poll_stats(state: &AppState, rate: &mut Rate) {
    let stats = match stats_body(state, EventTime::now()).await {
        Ok(stats) => stats,
        Err(error) => return tracing::debug!(%error, "stream: reading stats failed"),
    };
    let records_per_second = match state.store.pipeline_status(RATE_PARTITIONS).await {
        Ok(partitions) => rate.update(partitions.into_iter().map(|p| {
            (
                (p.checkpoint.source, p.checkpoint.partition),
                p.checkpoint.next_offset,
            )
        })),
        Err(error) => {
            tracing::debug!(error = %error.report(), "stream: reading checkpoints failed");
            None
        }
    };
    let stats = StreamStats {
        stats,
        records_per_second,
    };
    state.stream.snapshot(Snapshot::Stats, &stats);
}

/// Each partition's (source, number) next offset.
type Offsets = HashMap<(String, u32), u64>;

/// The processing rate, from how far the partitions' checkpoints moved between two reads.
#[derive(Default)]
struct Rate {
    last: Option<(Instant, Offsets)>,
}

impl Rate {
    /// Takes each partition's next offset now; returns records per second since the last call
    /// over the partitions both reads hold.
    fn update(&mut self, offsets: impl Iterator<Item = ((String, u32), u64)>) -> Option<f64> {
        let now = Instant::now();
        let offsets: Offsets = offsets.collect();
        let rate = self.last.as_ref().map(|(then, before)| {
            let moved: u64 = offsets
                .iter()
                .filter_map(|(key, next)| before.get(key).map(|b| next.saturating_sub(*b)))
                .sum();
            moved as f64 / now.duration_since(*then).as_secs_f64().max(1e-3)
        });
        self.last = Some((now, offsets));
        rate
    }
}

/// Publishes health every tick while clients want it.
async fn health_loop(state: &AppState) {
    let mut every = ticks(TICK);
    loop {
        every.tick().await;
        if !state.stream.keep_polling() {
            return;
        }
        poll_health(state).await;
    }
}

async fn poll_health(state: &AppState) {
    let body = check_health(state).await;
    let now = body.timestamp;
    let health = StreamHealth {
        status: body.status,
        store: StreamStore {
            backend: body.store.backend,
            status: body.store.status,
        },
        partitions: body
            .pipeline
            .partitions
            .into_iter()
            .map(|p| StreamPartition {
                watermark_lag_ms: p.watermark.map(|w| now.as_millis() - w.as_millis()),
                source: p.source,
                partition: p.partition,
                next_offset: p.next_offset,
                watermark: p.watermark,
                updated_at: p.updated_at,
            })
            .collect(),
        checked_at: now,
    };
    state.stream.snapshot(Snapshot::Health, &health);
}
