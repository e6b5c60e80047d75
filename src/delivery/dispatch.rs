//! The dispatcher: one loop per sink takes the sink's due deliveries from the outbox, at most
//! `concurrency` at a time, sends them, and records what came of each. A sink never waits for
//! another: a slow or dead one holds only its own slots, and what it has not taken stays in
//! the outbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::DeliveryConfig;
use super::send::{Answer, send};
use crate::model::alerting::{Alerting, SinkConfig, redact_url};
use crate::model::{EventTime, Span};
use crate::store::outbox::{Attempted, Outbox, Outcome, Pending};

/// How long a failing store call waits before it is tried again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Delivers the outbox to the sinks of the rules in force until `cancel`.
pub struct Dispatcher {
    pub outbox: Arc<dyn Outbox>,
    pub config: DeliveryConfig,
    pub rules: watch::Receiver<Arc<Alerting>>,
    /// Bumped when deliveries were stored: due at once.
    pub stored: watch::Receiver<u64>,
}

impl Dispatcher {
    /// Runs a loop per sink; when the sinks change, the loops are started again.
    pub async fn run(mut self, cancel: CancellationToken) {
        let client = match self.config.client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "no HTTP client: alerts stay in the outbox");
                return cancel.cancelled().await;
            }
        };
        tokio::spawn(backlog_gauge(
            self.outbox.clone(),
            self.config,
            self.rules.clone(),
            cancel.clone(),
        ));
        loop {
            let sinks = self.rules.borrow_and_update().sinks.clone();
            let generation = cancel.child_token();
            let mut loops = JoinSet::new();
            for sink in sinks {
                let sink_loop = SinkLoop {
                    outbox: self.outbox.clone(),
                    client: client.clone(),
                    config: self.config,
                    sink,
                    stored: self.stored.clone(),
                    gone: false,
                };
                loops.spawn(sink_loop.run(generation.clone()));
            }
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = self.rules.changed() => {}
            }
            generation.cancel();
            while loops.join_next().await.is_some() {}
            if cancel.is_cancelled() {
                return;
            }
        }
    }
}

/// One sink's loop.
struct SinkLoop {
    outbox: Arc<dyn Outbox>,
    client: reqwest::Client,
    config: DeliveryConfig,
    sink: SinkConfig,
    stored: watch::Receiver<u64>,
    /// It answered 410 Gone: what it is owed fails without being sent.
    gone: bool,
}

impl SinkLoop {
    async fn run(mut self, cancel: CancellationToken) {
        tracing::info!(sink = %self.sink.name, url = %redact_url(&self.sink.url),
            format = self.sink.format.as_str(), "delivering alerts");
        let mut in_flight: JoinSet<(Pending, Answer)> = JoinSet::new();
        let mut poll = tokio::time::interval(self.config.poll);
        // Once the processor is gone (a finished input), only the poll finds what is due.
        let mut woken = true;
        // The outbox is read when deliveries were stored, at each poll, and when half the
        // slots are free: not after every answer.
        let mut look = true;
        loop {
            let free = self.config.concurrency.saturating_sub(in_flight.len());
            if free > 0 && (look || free * 2 >= self.config.concurrency) {
                self.take(free, &mut in_flight).await;
                look = false;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(done) = in_flight.join_next() => {
                    let mut answers = vec![done];
                    while let Some(more) = in_flight.try_join_next() {
                        answers.push(more);
                    }
                    self.record(answers.into_iter().filter_map(Result::ok).collect()).await;
                }
                changed = self.stored.changed(), if free > 0 && woken => {
                    woken = changed.is_ok();
                    look = true;
                }
                _ = poll.tick() => look = true,
            }
        }
        // Sends under way are dropped; their leases end and they are due again.
        in_flight.abort_all();
    }

    /// Takes up to `free` due deliveries and starts sending them.
    async fn take(&mut self, free: usize, in_flight: &mut JoinSet<(Pending, Answer)>) {
        let now = EventTime::now();
        let lease_until = now.saturating_add(Span::from(self.config.lease()));
        let due = match self
            .outbox
            .take_due(&self.sink.name, now, lease_until, free)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(sink = %self.sink.name, error = %e.report(), "outbox unavailable");
                tokio::time::sleep(STORE_RETRY).await;
                return;
            }
        };
        for d in due {
            if self.gone {
                let answer = Answer::Gone;
                in_flight.spawn(async move { (d, answer) });
                continue;
            }
            let client = self.client.clone();
            let sink = self.sink.clone();
            in_flight.spawn(async move {
                let answer = send(&client, &sink, &d).await;
                (d, answer)
            });
        }
    }

    /// Records answers until the store takes them: an attempt is never forgotten.
    async fn record(&mut self, answers: Vec<(Pending, Answer)>) {
        let now = EventTime::now();
        let attempts: Vec<Attempted> = answers.iter().map(|(d, a)| self.judge(d, a, now)).collect();
        loop {
            match self.outbox.record(attempts.clone()).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(sink = %self.sink.name, error = %e.report(),
                        "attempts not recorded yet");
                    tokio::time::sleep(STORE_RETRY).await;
                }
            }
        }
    }

    /// What an answer makes of a delivery, counted and logged.
    fn judge(&mut self, d: &Pending, answer: &Answer, now: EventTime) -> Attempted {
        let sink = self.sink.name.clone();
        let attempt = |outcome, status, error| Attempted {
            id: d.id,
            at: now,
            outcome,
            status,
            error,
        };
        match answer {
            Answer::Accepted(status) => {
                counter!("citystream_deliveries_total", "sink" => sink.clone(), "outcome" => "delivered")
                    .increment(1);
                let age = (now.as_millis() - d.created_at.as_millis()).max(0) as f64 / 1000.0;
                histogram!("citystream_delivery_latency_seconds", "sink" => sink).record(age);
                attempt(Outcome::Delivered, Some(*status), None)
            }
            Answer::Gone => {
                if !self.gone {
                    tracing::error!(sink = %sink, "the sink answered 410 Gone: disabled until the rules are reloaded");
                    gauge!("citystream_sink_disabled", "sink" => sink.clone()).set(1.0);
                    self.gone = true;
                }
                counter!("citystream_deliveries_total", "sink" => sink, "outcome" => "failed")
                    .increment(1);
                let why = "the sink answered 410 Gone and is disabled".to_owned();
                attempt(Outcome::Failed, Some(410), Some(why))
            }
            Answer::Failed {
                status,
                retry_after,
                error,
            } => {
                let next = self.config.next_attempt(d, now, *retry_after);
                let outcome = match next {
                    Some(next_at) => Outcome::Retry { next_at },
                    None => {
                        tracing::warn!(sink = %sink, delivery = %d.id, error = %error,
                            "delivery failed: its attempts ran out");
                        Outcome::Failed
                    }
                };
                let name = if next.is_some() { "retried" } else { "failed" };
                counter!("citystream_deliveries_total", "sink" => sink, "outcome" => name)
                    .increment(1);
                attempt(outcome, *status, Some(error.clone()))
            }
        }
    }
}

impl DeliveryConfig {
    /// When a delivery that failed at `now` is tried next: exponential backoff from
    /// [`DeliveryConfig::backoff`] with full jitter over its upper half, capped at
    /// [`DeliveryConfig::max_backoff`], not before the sink's `Retry-After`; `None` once the
    /// delivery is older than [`DeliveryConfig::max_age`].
    pub fn next_attempt(
        &self,
        d: &Pending,
        now: EventTime,
        retry_after: Option<Duration>,
    ) -> Option<EventTime> {
        let age = Duration::from_millis((now.as_millis() - d.created_at.as_millis()).max(0) as u64);
        if age >= self.max_age {
            return None;
        }
        let exp = self.backoff.saturating_mul(1 << d.attempts.min(20));
        let cap = exp.min(self.max_backoff);
        let jittered = rand::rng().random_range(cap / 2..=cap);
        let wait = retry_after.map_or(jittered, |r| r.min(self.max_backoff).max(jittered));
        Some(now.saturating_add(Span::from(wait)))
    }
}

/// Publishes `citystream_delivery_backlog{sink}` for the sinks in force and warns of a sink
/// whose backlog is over the bound.
async fn backlog_gauge(
    outbox: Arc<dyn Outbox>,
    config: DeliveryConfig,
    rules: watch::Receiver<Arc<Alerting>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.poll.max(Duration::from_secs(5)));
    let mut over: BTreeMap<String, bool> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let sinks = rules.borrow().sink_names();
        let Ok(backlog) = outbox.backlog(&sinks, config.backlog_warn + 1).await else {
            continue;
        };
        over.retain(|sink, _| sinks.contains(sink));
        for sink in sinks {
            let n = backlog
                .iter()
                .find(|(s, _)| *s == sink)
                .map_or(0, |(_, n)| *n);
            gauge!("citystream_delivery_backlog", "sink" => sink.clone()).set(n as f64);
            let is_over = n > config.backlog_warn as u64;
            let was_over = over.insert(sink.clone(), is_over).unwrap_or(false);
            if is_over && !was_over {
                tracing::warn!(sink = %sink, backlog = n, bound = config.backlog_warn,
                    "a sink's backlog is over its bound: the outbox keeps it, nothing is dropped");
            }
        }
    }
}
