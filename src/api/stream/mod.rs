//! Live updates over Server-Sent Events: `GET /api/v1/stream`.
//!
//! One poller per process reads the store and publishes what changed to every connected
//! client, so a thousand open dashboards cost the store what one does. It follows the store,
//! not a processor's memory, so a `serve` process separate from the processors streams too. It
//! runs only while a client is connected.
//!
//! Two kinds of message:
//! - **changes** (`alert`, `window`) carry an id `<run>-<seq>`. The last [`REPLAY`] are kept, so
//!   a client that reconnects with `Last-Event-ID` gets what it missed; when they are gone (or
//!   the poller stopped and started again: a new run) it gets a `reset` and reloads from the
//!   REST API. A client more than [`REPLAY`] changes behind gets a `reset` too, never an
//!   unbounded queue.
//! - **snapshots** (`stats`, `health`) have no id: only the latest of each is kept, and a client
//!   gets it when it connects and whenever it changes. However slow a client, they hold one
//!   message each.

mod changes;
mod poller;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt, stream};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

pub use poller::{StreamHealth, StreamWindow};

use super::AppState;
use super::error::ApiError;
use super::params::Params;

/// Changes kept for clients that reconnect, and that a client may fall behind before it is told
/// to reset. One tick publishes at most 8 000 windows (1 000 cities) and 2 000 alerts, each
/// under 1.3 KB, so a client that keeps up never resets and the log holds at most about 21 MB.
pub const REPLAY: usize = 16 * 1024;
const BACKLOG: usize = REPLAY;
/// Clients streaming at once; one more is answered 503.
pub const MAX_STREAMS: usize = 256;
/// How often an idle stream sends a comment, so proxies and the server's idle timeout keep it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a browser waits before it reconnects.
const RETRY: Duration = Duration::from_secs(2);

/// One message, serialized once for every client.
#[derive(Debug)]
struct Message {
    seq: u64,
    /// `<run>-<seq>` for a change; none for a snapshot.
    id: Option<String>,
    event: &'static str,
    data: String,
}

/// What a stream sends: a message, or a `reset` with its reason.
#[derive(Debug)]
enum Item {
    Message(Arc<Message>),
    Reset(&'static str),
}

impl Item {
    fn into_event(self) -> Event {
        match self {
            Item::Message(m) => {
                let event = Event::default().event(m.event);
                let event = match &m.id {
                    Some(id) => event.id(id),
                    None => event,
                };
                event.data(&m.data)
            }
            Item::Reset(reason) => Event::default()
                .event("reset")
                .data(serde_json::json!({ "reason": reason }).to_string()),
        }
    }
}

/// The changes kept for replay, the run they belong to, and whether a poller runs: one lock,
/// so that a client's subscription and the poller's start and stop are never in a race.
struct Log {
    run: u64,
    next_seq: u64,
    kept: VecDeque<Arc<Message>>,
    polling: bool,
}

/// The fan-out between the poller and the clients.
pub struct Hub {
    log: Mutex<Log>,
    changes: broadcast::Sender<Arc<Message>>,
    stats: watch::Sender<Option<Arc<Message>>>,
    health: watch::Sender<Option<Arc<Message>>>,
    streams: Arc<Semaphore>,
    closed: CancellationToken,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            log: Mutex::new(Log {
                // Random, so that an id given out by another process (an earlier one, or
                // another replica) is not taken for one of this process's.
                run: u64::from(rand::random::<u32>()) << 16,
                next_seq: 0,
                kept: VecDeque::new(),
                polling: false,
            }),
            changes: broadcast::channel(BACKLOG).0,
            stats: watch::channel(None).0,
            health: watch::channel(None).0,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            closed: CancellationToken::new(),
        }
    }
}

/// The kinds of snapshot: only the latest of each is kept.
#[derive(Debug, Clone, Copy)]
enum Snapshot {
    Stats,
    Health,
}

/// What a new client gets first: the changes it missed, or a reset.
#[derive(Debug)]
enum Catchup {
    Nothing,
    Replay(Vec<Arc<Message>>),
    Reset(&'static str),
}

impl Catchup {
    fn items(self) -> Vec<Item> {
        match self {
            Catchup::Nothing => Vec::new(),
            Catchup::Replay(missed) => missed.into_iter().map(Item::Message).collect(),
            Catchup::Reset(reason) => vec![Item::Reset(reason)],
        }
    }
}

/// A new client's subscription.
struct Subscription {
    changes: broadcast::Receiver<Arc<Message>>,
    catchup: Catchup,
    /// The run this client started: the caller spawns its poller.
    start_poller: Option<u64>,
}

impl Hub {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn serialize(event: &'static str, data: &impl Serialize) -> Option<String> {
        serde_json::to_string(data)
            .inspect_err(|error| tracing::error!(%error, event, "stream message not serializable"))
            .ok()
    }

    /// Publishes a change to every client and keeps it for replay.
    fn publish(&self, event: &'static str, data: &impl Serialize) {
        let Some(data) = Self::serialize(event, data) else {
            return;
        };
        let mut log = self.log();
        let message = Arc::new(Message {
            seq: log.next_seq,
            id: Some(format!("{}-{}", log.run, log.next_seq)),
            event,
            data,
        });
        log.next_seq += 1;
        if log.kept.len() == REPLAY {
            log.kept.pop_front();
        }
        log.kept.push_back(message.clone());
        // No receiver is fine: nobody is listening right now.
        let _ = self.changes.send(message);
    }

    /// Replaces the latest snapshot of its kind.
    fn snapshot(&self, kind: Snapshot, data: &impl Serialize) {
        let (event, sender) = match kind {
            Snapshot::Stats => ("stats", &self.stats),
            Snapshot::Health => ("health", &self.health),
        };
        let Some(data) = Self::serialize(event, data) else {
            return;
        };
        let message = Arc::new(Message {
            seq: 0,
            id: None,
            event,
            data,
        });
        sender.send_replace(Some(message));
    }

    /// Subscribes a client that last saw `last_event_id`, and starts a poller (a new run: ids
    /// of an earlier run cannot be resumed, since nothing was watched in between) unless one
    /// runs or the server is shutting down.
    fn subscribe(&self, last_event_id: Option<&str>) -> Subscription {
        let mut log = self.log();
        let start_poller = (!log.polling && !self.closed.is_cancelled()).then(|| {
            log.polling = true;
            log.run += 1;
            log.kept.clear();
            self.stats.send_replace(None);
            self.health.send_replace(None);
            log.run
        });
        let changes = self.changes.subscribe();
        let catchup = match last_event_id {
            None => Catchup::Nothing,
            Some(last) => Self::catchup(&log, last),
        };
        Subscription {
            changes,
            catchup,
            start_poller,
        }
    }

    fn catchup(log: &Log, last: &str) -> Catchup {
        let resumable = parse_id(last).filter(|&(run, seq)| {
            let oldest = log.kept.front().map_or(log.next_seq, |m| m.seq);
            run == log.run && seq < log.next_seq && seq + 1 >= oldest
        });
        match resumable {
            Some((_, seq)) => {
                Catchup::Replay(log.kept.iter().filter(|m| m.seq > seq).cloned().collect())
            }
            None => Catchup::Reset("cannot resume from this Last-Event-ID"),
        }
    }

    /// Whether the poller should go on: while a client is subscribed and the server is not
    /// shutting down. When not, it is marked stopped under the same lock that subscriptions
    /// take, so the next client starts a new one.
    fn keep_polling(&self) -> bool {
        let mut log = self.log();
        let wanted = self.changes.receiver_count() > 0 && !self.closed.is_cancelled();
        log.polling = wanted;
        wanted
    }

    /// Ends every stream (the server is shutting down).
    pub fn close(&self) {
        self.closed.cancel();
    }
}

fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (run, seq) = id.split_once('-')?;
    Some((run.parse().ok()?, seq.parse().ok()?))
}

/// `GET /api/v1/stream`: Server-Sent Events.
#[utoipa::path(get, path = "/api/v1/stream", tag = "operations",
    params(
        ("Last-Event-ID" = Option<String>, Header,
            description = "The id of the last change received; what was missed is sent first, or a `reset`"),
        ("timeout_seconds" = Option<u32>, Query, minimum = 1, maximum = 3600,
            description = "End the stream after this many seconds (default: never; a client \
                reconnects with `Last-Event-ID`)"),
    ),
    responses(
        (status = 200, content_type = "text/event-stream",
            description = "Server-Sent Events, each as its schema says. Changes, each with an \
                id for `Last-Event-ID`: `alert` (an item of `/alerts`, as it is stored, among \
                the newest 500 by event time) and `window` (a `StreamWindow` whose counts \
                changed: each city's current and previous window). Snapshots, without id, on \
                connecting and every 2 s: `stats` (the `/stats` body plus \
                `records_per_second`) and `health` (a `StreamHealth`). And `reset`: reload \
                everything from the REST API.",
            body = StreamEvent),
        (status = 400, description = "A bad `timeout_seconds`", body = super::body::ErrorBody),
        (status = 503, description = "Too many streams open", body = super::body::ErrorBody),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Params,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let lifetime = match params.has("timeout_seconds") {
        true => Some(params.int("timeout_seconds", 0, 1..=3600)?),
        false => None,
    };
    let hub = state.stream.clone();
    let permit = hub
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyStreams(MAX_STREAMS))?;
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let subscription = hub.subscribe(last);
    if let Some(run) = subscription.start_poller {
        poller::spawn(&state, run);
    }
    let items = stream::iter(subscription.catchup.items())
        .chain(live(subscription.changes, permit))
        .boxed();
    let ended = async move {
        match lifetime {
            Some(secs) => tokio::time::sleep(Duration::from_secs(u64::from(secs))).await,
            None => std::future::pending().await,
        }
    };
    let items = stream::select_all([
        items,
        latest(hub.stats.subscribe()).boxed(),
        latest(hub.health.subscribe()).boxed(),
    ])
    .take_until(hub.closed.clone().cancelled_owned())
    .take_until(ended);
    let opening = Event::default().retry(RETRY).comment("citystream");
    let events = stream::once(async { opening }).chain(items.map(Item::into_event));
    Ok(Sse::new(events.map(Ok)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One event of the stream as the Server-Sent Events format carries it (what a validator
/// checks each event against).
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "describes the events; `Item::into_event` makes them"
)]
pub struct StreamEvent {
    /// What the event is.
    event: StreamEventName,
    /// The event's body as JSON: an alert, a `StreamWindow`, the stats, a `StreamHealth`, or
    /// `{"reason": …}` for a reset.
    #[schema(content_media_type = "application/json")]
    data: String,
    /// A change's id, `<run>-<seq>`, for `Last-Event-ID`; snapshots have none.
    #[schema(pattern = "^[0-9]+-[0-9]+$")]
    id: Option<String>,
}

/// The names of the stream's events.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "describes the events")]
pub enum StreamEventName {
    Alert,
    Window,
    Stats,
    Health,
    Reset,
}

/// The changes published from now on; a client that fell behind gets a `reset` and goes on
/// from the oldest change still kept. The permit is held for as long as the stream lives.
fn live(
    receiver: broadcast::Receiver<Arc<Message>>,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Item> {
    stream::unfold((receiver, permit), |(mut receiver, permit)| async move {
        let item = match receiver.recv().await {
            Ok(message) => Item::Message(message),
            Err(broadcast::error::RecvError::Lagged(_)) => Item::Reset("fell behind"),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((item, (receiver, permit)))
    })
}

/// The latest snapshot now (if there is one), then each new one.
fn latest(mut receiver: watch::Receiver<Option<Arc<Message>>>) -> impl Stream<Item = Item> {
    receiver.mark_changed();
    stream::unfold(receiver, |mut receiver| async move {
        loop {
            receiver.changed().await.ok()?;
            let current = receiver.borrow_and_update().clone();
            if let Some(message) = current {
                return Some((Item::Message(message), receiver));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(catchup: Catchup) -> Option<Vec<u64>> {
        match catchup {
            Catchup::Replay(m) => Some(m.iter().map(|m| m.seq).collect()),
            Catchup::Nothing | Catchup::Reset(_) => None,
        }
    }

    #[test]
    fn a_client_resumes_from_its_last_id_while_the_changes_are_kept() {
        let hub = Hub::default();
        assert!(hub.subscribe(None).start_poller.is_some());
        let run = hub.log().run;
        for n in 0..5 {
            hub.publish("alert", &n);
        }
        let id = |seq: &str| format!("{run}-{seq}");
        assert_eq!(
            seqs(hub.subscribe(Some(&id("2"))).catchup),
            Some(vec![3, 4])
        );
        assert_eq!(seqs(hub.subscribe(Some(&id("4"))).catchup), Some(vec![]));
        assert!(matches!(hub.subscribe(None).catchup, Catchup::Nothing));
        let earlier = format!("{}-2", run - 1);
        for bad in [&earlier, &id("5"), "1", "x-y", &id("18446744073709551615")] {
            let catchup = hub.subscribe(Some(bad)).catchup;
            assert!(matches!(catchup, Catchup::Reset(_)), "{bad}");
        }
    }

    #[test]
    fn the_poller_starts_with_the_first_client_and_a_new_run_after_it_stopped() {
        let hub = Hub::default();
        let first = hub.subscribe(None);
        assert!(first.start_poller.is_some());
        assert!(
            hub.subscribe(None).start_poller.is_none(),
            "one poller at a time"
        );
        assert!(hub.keep_polling(), "a client is subscribed");
        let run = hub.log().run;
        hub.publish("alert", &1);
        drop(first);
        assert!(!hub.keep_polling(), "nobody is subscribed");
        let again = hub.subscribe(Some(&format!("{run}-0")));
        assert!(again.start_poller.is_some());
        assert!(
            matches!(again.catchup, Catchup::Reset(_)),
            "nothing was watched meanwhile"
        );
        hub.close();
        assert!(!hub.keep_polling());
        drop(again);
        assert!(
            hub.subscribe(None).start_poller.is_none(),
            "no poller after shutdown"
        );
    }

    #[test]
    fn replay_keeps_a_bounded_log() {
        let hub = Hub::default();
        let _first = hub.subscribe(None);
        let run = hub.log().run;
        for n in 0..REPLAY + 10 {
            hub.publish("alert", &n);
        }
        assert_eq!(hub.log().kept.len(), REPLAY);
        // The oldest kept is seq 10: a client that saw 9 misses nothing; one that saw 8 did.
        let replayed = seqs(hub.subscribe(Some(&format!("{run}-9"))).catchup);
        assert_eq!(replayed.map(|s| s.len()), Some(REPLAY));
        let too_old = hub.subscribe(Some(&format!("{run}-8"))).catchup;
        assert!(matches!(too_old, Catchup::Reset(_)));
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_the_backlog_gets_a_reset_then_goes_on() {
        let hub = Hub::default();
        let subscription = hub.subscribe(None);
        let permit = hub.streams.clone().try_acquire_owned().unwrap();
        for n in 0..BACKLOG + 5 {
            hub.publish("alert", &n);
        }
        let items: Vec<Item> = live(subscription.changes, permit).take(2).collect().await;
        assert!(matches!(items[0], Item::Reset("fell behind")), "{items:?}");
        // It goes on from the oldest change still in the backlog.
        assert!(
            matches!(&items[1], Item::Message(m) if m.seq == 5),
            "{items:?}"
        );
    }

    #[tokio::test]
    async fn snapshots_keep_only_the_latest_for_a_slow_client() {
        let hub = Hub::default();
        let mut stats = Box::pin(latest(hub.stats.subscribe()));
        for n in 0..1000 {
            hub.snapshot(Snapshot::Stats, &n);
        }
        let Some(Item::Message(m)) = stats.next().await else {
            panic!("a snapshot")
        };
        assert_eq!(m.data, "999");
        assert!(m.id.is_none());
    }
}
