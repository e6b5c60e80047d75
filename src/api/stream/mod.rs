//! Live updates over Server-Sent Events: `GET /api/v1/stream`.
//!
//! One poller per process reads the store and publishes what changed (new alerts, changed
//! windows, a stats and a health tick) to every connected client, so a thousand open dashboards
//! cost the store what one does. It follows the store, not a processor's memory, so a `serve`
//! process separate from the processors streams too. It runs only while a client is connected.
//!
//! Every message carries an id `<run>-<seq>`. The last [`REPLAY`] messages are kept, so a client
//! that reconnects with `Last-Event-ID` gets what it missed; when they are gone (or the poller
//! stopped and started again, a new run) it gets a `reset` and reloads from the REST API. A
//! client too slow to keep up gets a `reset` too, never an unbounded queue.

mod poller;
mod watch;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt, stream};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

pub use poller::{StreamHealth, StreamWindow};

use super::AppState;
use super::error::ApiError;
use crate::model::EventTime;

/// Messages kept for clients that reconnect, and that a client may fall behind before it is
/// told to reset: more than one tick can publish (the windows of every watched city, and four
/// reads of alerts), so a client that keeps up never resets.
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
    /// `<run>-<seq>`.
    id: String,
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
            Item::Message(m) => Event::default().event(m.event).id(&m.id).data(&m.data),
            Item::Reset(reason) => Event::default()
                .event("reset")
                .data(serde_json::json!({ "reason": reason }).to_string()),
        }
    }
}

/// Messages kept for replay, and the run they belong to.
struct Log {
    run: u64,
    next_seq: u64,
    kept: VecDeque<Arc<Message>>,
}

/// The fan-out between the poller and the clients.
pub struct Hub {
    log: Mutex<Log>,
    sender: broadcast::Sender<Arc<Message>>,
    polling: AtomicBool,
    streams: Arc<Semaphore>,
    closed: CancellationToken,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            log: Mutex::new(Log {
                // Runs count up from the time the process started, so an id given out by an
                // earlier process is never taken for one of this process's.
                run: EventTime::now().as_millis().unsigned_abs(),
                next_seq: 0,
                kept: VecDeque::new(),
            }),
            sender: broadcast::channel(BACKLOG).0,
            polling: AtomicBool::new(false),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            closed: CancellationToken::new(),
        }
    }
}

/// What a new client gets first: the messages it missed, or a reset.
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

impl Hub {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes one message to every client and keeps it for replay.
    fn publish(&self, event: &'static str, data: &impl Serialize) {
        let data = match serde_json::to_string(data) {
            Ok(data) => data,
            Err(error) => {
                tracing::error!(%error, event, "stream message not serializable");
                return;
            }
        };
        let mut log = self.log();
        let message = Arc::new(Message {
            seq: log.next_seq,
            id: format!("{}-{}", log.run, log.next_seq),
            event,
            data,
        });
        log.next_seq += 1;
        if log.kept.len() == REPLAY {
            log.kept.pop_front();
        }
        log.kept.push_back(message.clone());
        // No receiver is fine: nobody is listening right now.
        let _ = self.sender.send(message);
    }

    /// Starts a new run: ids of an earlier run cannot be resumed, since nothing was watched in
    /// between.
    fn new_run(&self) {
        let mut log = self.log();
        log.run += 1;
        log.kept.clear();
    }

    /// A receiver of what is published from now on, and what `last_event_id` missed before.
    fn subscribe(
        &self,
        last_event_id: Option<&str>,
    ) -> (broadcast::Receiver<Arc<Message>>, Catchup) {
        let log = self.log();
        let receiver = self.sender.subscribe();
        let Some(last) = last_event_id else {
            return (receiver, Catchup::Nothing);
        };
        let resumable = parse_id(last).filter(|&(run, seq)| {
            let oldest = log.kept.front().map_or(log.next_seq, |m| m.seq);
            run == log.run && seq < log.next_seq && seq + 1 >= oldest
        });
        let catchup = match resumable {
            Some((_, seq)) => {
                Catchup::Replay(log.kept.iter().filter(|m| m.seq > seq).cloned().collect())
            }
            None => Catchup::Reset("cannot resume from this Last-Event-ID"),
        };
        (receiver, catchup)
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
    params(("Last-Event-ID" = Option<String>, Header,
        description = "The id of the last message received; what was missed is sent first, or a `reset`")),
    responses(
        (status = 200, content_type = "text/event-stream",
            description = "Events `alert` (an item of `/alerts`, as each is stored), `window` \
                (a `StreamWindow` whose counts changed: the newest two windows of each city and \
                type), `stats` (the `/stats` body plus `events_per_second`, every 2 s), `health` \
                (a `StreamHealth`, every 2 s) and `reset` (reload everything from the REST API). \
                Each but `reset` has an id for `Last-Event-ID`.",
            body = String),
        (status = 503, description = "Too many streams open", body = super::body::ErrorBody),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let hub = state.stream.clone();
    let permit = hub
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyStreams(MAX_STREAMS))?;
    poller::ensure_running(&state);
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let (receiver, catchup) = hub.subscribe(last);
    let opening = Event::default().retry(RETRY).comment("citystream");
    let items = stream::iter(catchup.items())
        .chain(live(receiver, permit))
        .take_until(hub.closed.clone().cancelled_owned());
    let events = stream::once(async { opening }).chain(items.map(Item::into_event));
    Ok(Sse::new(events.map(Ok)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// What is published from now on; a client that fell behind gets a `reset` and goes on from
/// the newest. The permit is held for as long as the stream lives.
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
    fn a_client_resumes_from_its_last_id_while_the_messages_are_kept() {
        let hub = Hub::default();
        hub.new_run();
        let run = hub.log().run;
        for n in 0..5 {
            hub.publish("stats", &n);
        }
        let id = |seq: &str| format!("{run}-{seq}");
        assert_eq!(seqs(hub.subscribe(Some(&id("2"))).1), Some(vec![3, 4]));
        assert_eq!(seqs(hub.subscribe(Some(&id("4"))).1), Some(vec![]));
        assert!(matches!(hub.subscribe(None).1, Catchup::Nothing));
        let earlier = format!("{}-2", run - 1);
        for bad in [&earlier, &id("5"), "1", "x-y", &id("18446744073709551615")] {
            let catchup = hub.subscribe(Some(bad)).1;
            assert!(matches!(catchup, Catchup::Reset(_)), "{bad}");
        }
        hub.new_run();
        assert!(matches!(hub.subscribe(Some(&id("4"))).1, Catchup::Reset(_)));
    }

    #[test]
    fn replay_keeps_a_bounded_log() {
        let hub = Hub::default();
        let run = hub.log().run;
        for n in 0..REPLAY + 10 {
            hub.publish("stats", &n);
        }
        assert_eq!(hub.log().kept.len(), REPLAY);
        // The oldest kept is seq 10: a client that saw 9 misses nothing; one that saw 8 did.
        let replayed = seqs(hub.subscribe(Some(&format!("{run}-9"))).1);
        assert_eq!(replayed.map(|s| s.len()), Some(REPLAY));
        let too_old = hub.subscribe(Some(&format!("{run}-8"))).1;
        assert!(matches!(too_old, Catchup::Reset(_)));
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_the_backlog_gets_a_reset_then_goes_on() {
        let hub = Hub::default();
        let (receiver, _) = hub.subscribe(None);
        let permit = hub.streams.clone().try_acquire_owned().unwrap();
        for n in 0..BACKLOG + 5 {
            hub.publish("stats", &n);
        }
        let items: Vec<Item> = live(receiver, permit).take(2).collect().await;
        assert!(matches!(items[0], Item::Reset("fell behind")), "{items:?}");
        // It goes on from the oldest message still in the backlog.
        assert!(
            matches!(&items[1], Item::Message(m) if m.seq == 5),
            "{items:?}"
        );
    }
}
