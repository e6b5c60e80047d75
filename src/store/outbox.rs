//! The outbox: every delivery an alert owes a sink, written in the same write as the alert
//! (rule 2 of [`super::rules`]), then taken, sent and recorded by the dispatcher
//! (`crate::delivery`).
//!
//! A delivery is `pending` until a sink acknowledged it (`delivered`) or its attempts ran out
//! (`failed`, a dead letter that [`Outbox::redeliver`] makes pending again). Taking a delivery
//! leases it: its next attempt moves to the lease's end, so a dispatcher that dies mid-send
//! leaves it due again once the lease is over, and nothing is lost. A pending delivery never
//! expires; a finished one is kept as long as its alert.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use serde::Serialize;
use uuid::Uuid;

use super::{Page, StoreError};
use crate::model::{EventTime, RuleRef, UnknownValue};

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt, or being sent.
    Pending,
    /// A sink acknowledged it (2xx).
    Delivered,
    /// Its attempts ran out, or its sink is gone (410): a dead letter, to be sent again by
    /// hand.
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryStatus {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownValue {
                what: "status",
                value: s.to_owned(),
                expected: &["pending", "delivered", "failed"],
            })
    }
}

/// A delivery taken to be sent: what the dispatcher needs to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: Uuid,
    pub sink: String,
    /// The alert, as JSON ([`crate::model::alerting::AlertBody`]).
    pub alert: String,
    /// Attempts before this one.
    pub attempts: u32,
    pub created_at: EventTime,
}

/// What came of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Not this time: the next attempt at `next_at`.
    Retry {
        next_at: EventTime,
    },
    /// No more attempts.
    Failed,
}

/// One attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempted {
    pub id: Uuid,
    pub at: EventTime,
    pub outcome: Outcome,
    /// The HTTP status the sink answered, if it answered.
    pub status: Option<u16>,
    /// Why it did not succeed (no secret or URL path in it).
    pub error: Option<String>,
}

/// A delivery as served by `GET /api/v1/deliveries`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    pub id: Uuid,
    pub alert_id: Uuid,
    pub sink: String,
    pub rule: RuleRef,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    pub created_at: EventTime,
    pub updated_at: EventTime,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<EventTime>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub alert: serde_json::Value,
}

/// Which deliveries a listing wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub sink: Option<String>,
}

/// Where a page of deliveries starts: after this (created_at, id), newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryKey {
    pub created_at: EventTime,
    pub id: Uuid,
}

/// What the dispatcher and the deliveries API need of a store.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Takes up to `limit` of `sink`'s pending deliveries due at `now`, earliest first, and
    /// leases them until `lease_until`: no call takes them again before then.
    async fn take_due(
        &self,
        sink: &str,
        now: EventTime,
        lease_until: EventTime,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError>;

    /// Records attempts: each adds one to its delivery's attempts. An attempt on a delivery
    /// no longer pending (sent again by another dispatcher, say) changes nothing.
    async fn record(&self, attempts: Vec<Attempted>) -> Result<(), StoreError>;

    /// A page of deliveries, newest first.
    async fn deliveries(
        &self,
        filter: &DeliveryFilter,
        page: Page<DeliveryKey>,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Makes a finished delivery pending again, due at `now`, its attempts from zero. Returns
    /// its status before, or `None` when there is no such delivery.
    async fn redeliver(
        &self,
        id: Uuid,
        now: EventTime,
    ) -> Result<Option<DeliveryStatus>, StoreError>;

    /// Makes up to `limit` failed deliveries (of one sink, or all) pending again; returns how
    /// many.
    async fn redeliver_failed(
        &self,
        sink: Option<&str>,
        now: EventTime,
        limit: usize,
    ) -> Result<u64, StoreError>;

    /// Pending deliveries of each of `sinks`, counted up to `limit`; sinks without any are
    /// left out.
    async fn backlog(
        &self,
        sinks: &[String],
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError>;
}
