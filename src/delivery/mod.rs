//! Alerts delivered: the rules in force ([`rules`]) decide which events are alerts and which
//! sinks each goes to; the processor stores the deliveries with the alerts (the outbox,
//! [`crate::store::outbox`]); the [`dispatch`]er sends them ([`send`], signed by [`sign`]) and
//! records what came of each, in the sink's [`format`].
//!
//! The guarantee: every alert reaches every sink that takes its rule at least once, as long as
//! the sink answers 2xx within [`DeliveryConfig::max_age`] of the alert being stored; every
//! attempt carries the same `webhook-id` (the delivery's id), so a receiver drops duplicates
//! by it. A delivery whose attempts run out, or whose sink answered 410, is a dead letter
//! (`failed`) until sent again (`citystream redeliver`, `POST /api/v1/deliveries/{id}/retry`).

pub mod dispatch;
pub mod format;
pub mod rules;
pub mod send;
pub mod sign;

use std::time::Duration;

pub use dispatch::Dispatcher;
pub use rules::{ReloadError, Rules};

/// How long `process` goes on delivering at the end of a finite input, unless configured.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// How deliveries are sent and retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Longest one request may take, connection included.
    pub timeout: Duration,
    /// Most requests in flight per sink.
    pub concurrency: usize,
    /// The first retry's wait; each retry doubles it.
    pub backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// How long a delivery is tried before it fails.
    pub max_age: Duration,
    /// How often the outbox is looked at when nothing wakes the dispatcher.
    pub poll: Duration,
    /// A sink's pending deliveries beyond which a warning is logged (they stay in the outbox).
    pub backlog_warn: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(10),
            concurrency: 16,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
            max_age: Duration::from_secs(24 * 3600),
            poll: Duration::from_secs(1),
            backlog_warn: 10_000,
        }
    }
}

impl DeliveryConfig {
    /// How long a taken delivery is leased: its request's deadline and a margin to record it.
    pub fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(5)
    }

    /// The client every sink's requests go through: the deadline, no redirects followed (a
    /// sink is the URL it was given), no proxy from the environment.
    pub fn client(&self) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_max_idle_per_host(self.concurrency)
            .build()
    }
}
