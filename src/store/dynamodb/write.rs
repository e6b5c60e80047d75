//! The write path on DynamoDB, following [`crate::store::rules`] without transactions:
//!
//! 0. Every event is checked against DynamoDB's limits first, so an event DynamoDB would refuse
//!    is refused before anything of the batch is written ([`check`]).
//! 1. Raw events are inserted (`raw.rs`): an insert that finds the key free, or holding this
//!    very record from an earlier try, makes the event new; any other holder makes it a repeat
//!    or a `duplicate_event_id` dead letter.
//! 2. Dead letters are stored, then everything the new events add is written, all at once:
//!    alerts, list pages and registries are plain puts of items keyed by what they are, so
//!    writing them again changes nothing; deliveries are puts if absent, so a delivery under
//!    way is never reset; then the window rules' deliveries, from the windows as the
//!    increments left them; windows and counters are guarded increments
//!    (`guarded.rs`), which add each record once however often the batch is written.
//! 3. Checkpoints come last, each a put conditional on moving the position forward.
//!
//! A crash anywhere replays the batch from the checkpoint before it, and the replay ends where
//! an uninterrupted run would. Requests run concurrently, at most `--dynamodb-concurrency` at
//! a time per process; throttled requests are retried with backoff, then the whole batch is
//! (backpressure: the processor writes no other batch meanwhile).

use super::alerts::Alerts;
use super::counters::Counters;
use super::dead::DeadLetters;
use super::deliveries::Deliveries;
use super::items::alert_item;
use super::keys::alert_sort_key;
use super::lists::Lists;
use super::positions::Positions;
use super::raw::{Outcome, RawEvents, raw_item};
use super::units::item_size;
use super::windows::Windows;
use crate::model::{DeadLetter, EventTime, WriteBatch};
use crate::store::rules::Effects;
use crate::store::{Fault, StoreError, Written};

/// DynamoDB's largest item, and its largest sort key, in bytes.
const MAX_ITEM: usize = 400 * 1024;
const MAX_SORT_KEY: usize = 1024;

/// The parts a batch is written to.
pub struct Write<'a> {
    pub raw: &'a RawEvents,
    pub dead: &'a DeadLetters,
    pub alerts: &'a Alerts,
    pub lists: &'a Lists,
    pub windows: &'a Windows,
    pub counters: &'a Counters,
    pub positions: &'a Positions,
    pub deliveries: &'a Deliveries,
}

impl Write<'_> {
    /// Writes `batch` in the order of the rules.
    pub async fn batch(&self, batch: &WriteBatch) -> Result<Written, StoreError> {
        check(batch)?;
        let now = EventTime::now();
        let outcomes = self.raw.insert(batch, now).await?;
        let mut written = Written::default();
        let mut new = Vec::new();
        for (a, outcome) in batch.events.iter().zip(outcomes) {
            match outcome {
                Outcome::New => new.push(a),
                Outcome::Own => {
                    written.repeats += 1;
                    new.push(a);
                }
                Outcome::Repeat => written.repeats += 1,
                Outcome::Taken(dead) => written.duplicates.push(dead),
            }
        }
        let rules = &batch.rules;
        let effects = Effects::of(new, &rules.resolutions, rules.severities_cap);
        let dead: Vec<&DeadLetter> = batch
            .dead_letters
            .iter()
            .chain(&written.duplicates)
            .collect();
        // Dead letters first: each is counted by the time the stored one was received, which
        // a try before this one may have fixed.
        let stored = self.dead.put(rules, &dead).await?;
        let dead: Vec<&DeadLetter> = stored.iter().collect();
        let (_, _, _, windows, _, _) = tokio::try_join!(
            self.alerts.put(&effects),
            self.deliveries.put(&effects, now),
            self.lists.put(batch, &effects),
            self.windows.add(batch, &effects),
            self.counters.add(batch, &effects, &dead),
            self.positions.register(batch, &effects),
        )?;
        // The window rules see each window as the increments left it.
        let alerting = &batch.rules.alerting;
        self.deliveries
            .alert_windows(alerting, &effects, &windows, now)
            .await?;
        written.fenced = self.positions.write(batch, now).await?;
        Ok(written)
    }
}

/// Refuses, before anything is written, a batch holding an event whose items DynamoDB would
/// refuse: an item over 400 KB, a sort key over 1 KB.
fn check(batch: &WriteBatch) -> Result<(), StoreError> {
    for a in &batch.events {
        let too_large = item_size(&raw_item(&batch.source, a)) > MAX_ITEM
            || (a.is_alert() && item_size(&alert_item(a, 1)) > MAX_ITEM)
            || alert_sort_key(a.event.timestamp, &a.event.event_id).len() > MAX_SORT_KEY;
        if too_large {
            return Err(StoreError::new(
                Fault::BadInput,
                format!(
                    "event {} at offset {} of partition {} is larger than DynamoDB takes",
                    a.event.event_id, a.offset, a.partition
                ),
            ));
        }
    }
    Ok(())
}
