//! The one reader of the store behind every stream: alerts every half second, windows, stats
//! and health every two. It stops when the last client has gone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use utoipa::ToSchema;

use super::Hub;
use super::watch::{AlertWatch, WindowWatch};
use crate::api::AppState;
use crate::api::body::{AlertBody, HealthStatus, Reachable, StatsBody};
use crate::api::handlers::{check_health, stats_body};
use crate::model::{City, EventTime, EventType, SeverityCounts, Span, WindowAggregate};
use crate::store::{Page, StoreError};

/// How often new alerts are looked for: an alert shows within this of being stored.
const ALERT_EVERY: Duration = Duration::from_millis(500);
/// Windows, stats and health are read every this many alert reads (2 s).
const TICK_EVERY: u32 = 4;
/// Alerts further back than this from now are not streamed (they are in `/alerts`).
const ALERT_LOOKBACK: Span = Span::from_mins(60);
/// Most alerts one read looks at; more new ones between two reads than this are only in
/// `/alerts`.
const ALERT_READ: usize = 500;
/// Most cities whose windows are watched (the first by name).
pub const WATCHED_CITIES: usize = 1000;
/// Windows read per city: the newest two of each type.
const WINDOWS_PER_CITY: usize = 2 * EventType::ALL.len();
/// Cities read at once.
const CITY_READS: usize = 8;

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

#[derive(Serialize)]
struct StreamStats {
    #[serde(flatten)]
    stats: StatsBody,
    events_per_second: Option<f64>,
}

fn ticks(every: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// Whether to read again: while a client is connected and the server is not shutting down.
/// The first read runs before the client that started the poller has subscribed.
fn wanted(state: &AppState, n: u32) -> bool {
    let hub = &state.stream;
    let alone = n > 0 && hub.sender.receiver_count() == 0;
    !alone && !hub.closed.is_cancelled()
}

/// Starts the poller unless it runs.
pub fn ensure_running(state: &AppState) {
    let hub = &state.stream;
    if hub.polling.swap(true, Ordering::AcqRel) {
        return;
    }
    hub.new_run();
    let mut poller = Poller {
        state: state.clone(),
        alerts: AlertWatch::default(),
        windows: WindowWatch::default(),
        last_total: None,
    };
    tokio::spawn(async move { poller.run().await });
}

struct Poller {
    state: AppState,
    alerts: AlertWatch,
    windows: WindowWatch,
    /// The total of events at the previous stats tick, for the rate.
    last_total: Option<(Instant, u64)>,
}

impl Poller {
    fn hub(&self) -> &Arc<Hub> {
        &self.state.stream
    }

    /// Reads until the last client has gone. Health has a loop of its own, so that a store
    /// that hangs on the other reads is reported within a tick.
    async fn run(&mut self) {
        let health = health_loop(self.state.clone());
        tokio::select! {
            () = self.read_loop() => {}
            () = health => {}
        }
        self.hub().polling.store(false, Ordering::Release);
        // A client that came between the last check and the flag would wait for nobody.
        if self.hub().sender.receiver_count() > 0 {
            ensure_running(&self.state);
        }
    }

    async fn read_loop(&mut self) {
        let mut every = ticks(ALERT_EVERY);
        for n in 0u32.. {
            every.tick().await;
            if !wanted(&self.state, n) {
                return;
            }
            self.poll_alerts().await;
            if n % TICK_EVERY == 0 {
                self.poll_windows().await;
                self.poll_stats().await;
            }
        }
    }

    async fn poll_alerts(&mut self) {
        let now = EventTime::now();
        let since = now.saturating_sub(ALERT_LOOKBACK);
        let read = self
            .state
            .store
            .alerts(None, since, Page::first(ALERT_READ), now)
            .await;
        match read {
            Ok(read) => {
                for alert in self.alerts.update(&read, ALERT_READ) {
                    self.hub().publish("alert", &AlertBody::from(&alert));
                }
            }
            Err(error) => tracing::debug!(%error, "stream: reading alerts failed"),
        }
    }

    async fn poll_windows(&mut self) {
        match self.read_windows().await {
            Ok(read) => {
                for w in self.windows.update(read, self.state.window) {
                    self.hub().publish("window", &stream_window(w));
                }
            }
            Err(error) => tracing::debug!(%error, "stream: reading windows failed"),
        }
    }

    /// The newest windows of every watched city.
    async fn read_windows(&self) -> Result<Vec<WindowAggregate>, StoreError> {
        let store = &self.state.store;
        let now = EventTime::now();
        let cities = store.cities(Page::first(WATCHED_CITIES), now).await?;
        let per_city: Vec<Vec<WindowAggregate>> = stream::iter(cities)
            .map(|c| async move {
                let page = Page::first(WINDOWS_PER_CITY);
                store.aggregations(&c.city, None, page, now).await
            })
            .buffer_unordered(CITY_READS)
            .try_collect()
            .await?;
        Ok(per_city.into_iter().flatten().collect())
    }

    async fn poll_stats(&mut self) {
        let stats = match stats_body(&self.state, EventTime::now()).await {
            Ok(stats) => stats,
            Err(error) => return tracing::debug!(%error, "stream: reading stats failed"),
        };
        let now = Instant::now();
        let total = stats.total_events_processed;
        let events_per_second = self.last_total.map(|(then, before)| {
            total.saturating_sub(before) as f64 / now.duration_since(then).as_secs_f64()
        });
        self.last_total = Some((now, total));
        let stats = StreamStats {
            stats,
            events_per_second,
        };
        self.hub().publish("stats", &stats);
    }
}

/// Publishes health every tick while clients want it.
async fn health_loop(state: AppState) {
    let mut every = ticks(ALERT_EVERY * TICK_EVERY);
    for n in 0u32.. {
        every.tick().await;
        if !wanted(&state, n) {
            return;
        }
        poll_health(&state).await;
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
    state.stream.publish("health", &health);
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
