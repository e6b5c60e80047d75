//! The operator interface: one required method, output through a collector, so every
//! operator is unit-tested with a plain [`WriteBatch`].

use crate::model::{CityEvent, EventTime, RawEvent, Span, WriteBatch};

/// Where an event sits and what its partition's watermark was just before it.
#[derive(Debug, Clone, Copy)]
pub struct EventContext {
    pub partition: u32,
    pub offset: u64,
    /// The largest event time seen in the partition before this event.
    pub max_seen: Option<EventTime>,
    /// The partition's watermark before this event: max event time seen − delay.
    pub watermark: Option<EventTime>,
}

/// One of the seed's queries, run over each valid event in partition order.
pub trait Operator {
    fn process(&mut self, event: &CityEvent, ctx: &EventContext, out: &mut WriteBatch);

    /// The batch is about to be written: emit pending state. `watermark` is the partition's
    /// watermark after the batch.
    fn flush(&mut self, _watermark: Option<EventTime>, _out: &mut WriteBatch) {}
}

/// Query 1: every valid event, stored with a time to live.
#[derive(Debug, Clone, Copy)]
pub struct RawOperator {
    pub ttl: Span,
}

impl Operator for RawOperator {
    fn process(&mut self, event: &CityEvent, _ctx: &EventContext, out: &mut WriteBatch) {
        out.raw.push(RawEvent {
            event: event.clone(),
            ttl: event.timestamp.saturating_add(self.ttl),
        });
    }
}

/// Query 3: high and critical events.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlertOperator;

impl Operator for AlertOperator {
    fn process(&mut self, event: &CityEvent, _ctx: &EventContext, out: &mut WriteBatch) {
        if event.severity.is_alert() {
            out.alerts.push(event.clone());
        }
    }
}
