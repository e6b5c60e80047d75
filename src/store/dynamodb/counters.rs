//! Counts on DynamoDB (`/summary`, `/cities`, `/stats`) without a Scan and without a key
//! every event writes: a batch adds to one item per (scope, day in which the rows expire), a
//! scope being a city (`c#<city>`) or everything (`c`), with a guarded increment
//! (`guarded.rs`). Inside the item each count is kept per hour of expiry (`07e` = events
//! expiring in hour 7), so a read sums the hours not yet gone and the counts drop expired rows
//! to the hour, before DynamoDB's TTL deletes them.
//!
//! Late events per city and type, which `/stats` ranks, have an item per group and expiry
//! period (32 days) under `lgp#<period>#NN` (the group hashed over the layout's shards), its
//! counts per expiry day and hour: a read queries the shards of the periods still live, a
//! few dozen Queries whatever the number of days.
//!
//! Each scope's item is written once per batch that touches it, whatever the event rate: the
//! busiest key takes one write per processor per batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::future::try_join_all;

use super::db::Db;
use super::guarded::{Contribution, apply_guarded};
use super::items::{Item, n, state_key, text};
use super::keys::{
    Writer, attr, day_and_hour, day_expiry_secs, day_sk, late_group_shard, late_group_sk,
    late_groups_pk, late_period, late_period_days, scope_pk,
};
use super::units::Kind;
use crate::model::{DeadLetter, EventTime, EventType, Placement, WriteBatch};
use crate::store::rules::Effects;
use crate::store::{LateCount, StoreError};

/// Counter names, each +1, that one record adds to one item.
type Names = Vec<String>;

/// The counter items a batch adds to: (partition key, sort key) → the item's expiry (seconds,
/// the same for every write of the item: after the last day it counts) and contribution.
#[derive(Default)]
struct Increments(BTreeMap<(String, String), (i64, Contribution<Names>)>);

impl Increments {
    fn push(&mut self, key: (String, String), ttl: i64, writer: Writer, offset: u64, names: Names) {
        self.0
            .entry(key)
            .or_insert_with(|| (ttl, Contribution::default()))
            .1
            .push(writer, offset, names);
    }

    /// Counts in a scope's item of the day `expiry` falls in.
    fn scope(
        &mut self,
        city: Option<&str>,
        expiry: EventTime,
        w: Writer,
        offset: u64,
        names: impl Fn(u32) -> Names,
    ) {
        let (day, hour) = day_and_hour(expiry);
        let key = (scope_pk(city), day_sk(day));
        self.push(key, day_expiry_secs(day), w, offset, names(hour));
    }
}

/// The counter items of the `state` table.
pub struct Counters {
    db: Db,
    table: String,
    shards: u32,
}

impl Counters {
    pub fn new(db: Db, table: String, shards: u32) -> Self {
        Counters { db, table, shards }
    }

    /// Counts every new event and every dead letter of the batch.
    pub async fn add(
        &self,
        batch: &WriteBatch,
        effects: &Effects<'_>,
        dead: &[&DeadLetter],
    ) -> Result<(), StoreError> {
        let mut inc = Increments::default();
        for a in &effects.new {
            let (e, w) = (&a.event, Writer::new(&batch.source, a.partition));
            let city = e.city.as_str();
            inc.scope(Some(city), a.ttl, w, a.offset, |h| {
                vec![
                    attr::at(h, attr::EVENTS),
                    attr::at(h, &attr::of_type(e.event_type)),
                    attr::at(h, &attr::of_severity(e.severity)),
                ]
            });
            inc.scope(None, a.ttl, w, a.offset, |h| {
                let mut names = vec![attr::at(h, attr::EVENTS)];
                if a.is_alert() {
                    names.push(attr::at(h, &attr::alerts(e.severity)));
                }
                names
            });
            if let Placement::Late { .. } = a.placement {
                let expiry = batch.rules.late_expiry(e);
                inc.scope(Some(city), expiry, w, a.offset, |h| {
                    vec![attr::at(h, &attr::late_of_type(e.event_type))]
                });
                inc.scope(None, expiry, w, a.offset, |h| vec![attr::at(h, attr::LATE)]);
                let (day, hour) = day_and_hour(expiry);
                let group = late_group_sk(city, e.event_type);
                let period = late_period(day);
                let pk = late_groups_pk(period, late_group_shard(&group, self.shards));
                let ttl = late_period_days(period).last().map_or(0, day_expiry_secs);
                let names = vec![attr::late_group(day, hour)];
                inc.push((pk, group), ttl, w, a.offset, names);
            }
        }
        for d in dead {
            let w = Writer::new(&d.source, d.partition);
            let expiry = batch.rules.dead_letter_expiry(d);
            inc.scope(None, expiry, w, d.offset, |h| {
                vec![attr::at(h, &attr::dead(&d.kind))]
            });
        }
        try_join_all(
            inc.0
                .iter()
                .map(|((pk, sk), (ttl, c))| self.add_to(pk, sk, *ttl, c)),
        )
        .await?;
        Ok(())
    }

    async fn add_to(
        &self,
        pk: &str,
        sk: &str,
        ttl: i64,
        contribution: &Contribution<Names>,
    ) -> Result<(), StoreError> {
        let key = state_key(pk, sk);
        apply_guarded(
            &self.db,
            &self.table,
            &key,
            contribution,
            (Kind::Counter, 1),
            |pending, _, expr| {
                let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
                for p in pending {
                    for (_, names) in p.parts {
                        for name in names {
                            *sums.entry(name).or_default() += 1;
                        }
                    }
                }
                for (name, by) in sums {
                    expr.add(name, by);
                }
                expr.set("ttl", n(ttl));
            },
        )
        .await?;
        Ok(())
    }

    /// The live counts under a scope: per counter name (without its hour), summed over the
    /// hours whose rows have not expired at `now`.
    pub async fn live(
        &self,
        scope: Option<&str>,
        now: EventTime,
    ) -> Result<HashMap<String, u64>, StoreError> {
        let items = self
            .items_since(&scope_pk(scope), day_and_hour(now).0)
            .await?;
        Ok(sum_live(&items, now))
    }

    /// The items of a scope of `day` and later days.
    async fn items_since(&self, pk: &str, day: i64) -> Result<Vec<Item>, StoreError> {
        let from = day_sk(day);
        self.db.partition(&self.table, pk, Some(&from), false).await
    }

    /// Live late events per city and type, from the items of the periods that hold late
    /// events still live (the days are read off the counts of everything).
    pub async fn late_groups(&self, now: EventTime) -> Result<Vec<LateCount>, StoreError> {
        let (today, this_hour) = day_and_hour(now);
        let all = self.items_since(&scope_pk(None), today).await?;
        let periods: BTreeSet<i64> = all
            .iter()
            .filter_map(|item| {
                let day: i64 = text(item, "sk").ok()?.parse().ok()?;
                live_hours(item, day, today, this_hour)
                    .any(|(name, count)| name == attr::LATE && count > 0)
                    .then_some(late_period(day))
            })
            .collect();
        let pks: Vec<String> = periods
            .iter()
            .flat_map(|p| (0..self.shards).map(move |shard| late_groups_pk(*p, shard)))
            .collect();
        let pages = try_join_all(
            pks.iter()
                .map(|pk| self.db.partition(&self.table, pk, None, false)),
        )
        .await?;
        let mut groups: BTreeMap<String, u64> = BTreeMap::new();
        for item in pages.iter().flatten() {
            let live: u64 = item
                .iter()
                .filter_map(|(name, value)| {
                    let (day, hour) = attr::parse_late_group(name)?;
                    let live = day > today || (day == today && hour >= this_hour);
                    live.then(|| count(value))
                })
                .sum();
            *groups.entry(text(item, "sk")?.to_owned()).or_default() += live;
        }
        groups
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(group, late_events)| late_count(&group, late_events))
            .collect()
    }

    /// The counts of everything, from today on (for `/stats`).
    pub async fn all(&self, now: EventTime) -> Result<HashMap<String, u64>, StoreError> {
        self.live(None, now).await
    }
}

fn late_count(group: &str, late_events: u64) -> Result<LateCount, StoreError> {
    let Some((city, t)) = group.rsplit_once('#') else {
        return Err(StoreError::corrupt(format!("late group {group}")));
    };
    let event_type = EventType::stored(t).map_err(StoreError::corrupt)?;
    Ok(LateCount {
        city: city.to_owned(),
        event_type,
        late_events,
    })
}

fn count(value: &AttributeValue) -> u64 {
    match value {
        AttributeValue::N(count) => count.parse().unwrap_or(0),
        _ => 0,
    }
}

/// The counters of an item of `day` whose hour has not passed: (name without the hour, count).
fn live_hours(
    item: &Item,
    day: i64,
    today: i64,
    this_hour: u32,
) -> impl Iterator<Item = (&str, u64)> {
    item.iter().filter_map(move |(name, value)| {
        let (hour, rest) = attr::parse(name)?;
        let live = day > today || (day == today && hour >= this_hour);
        live.then(|| (rest, count(value)))
    })
}

/// Sums of the live counters of a scope, from its items.
fn sum_live(items: &[Item], now: EventTime) -> HashMap<String, u64> {
    let (today, this_hour) = day_and_hour(now);
    let mut out: HashMap<String, u64> = HashMap::new();
    for item in items {
        let Some(day) = text(item, "sk").ok().and_then(|d| d.parse().ok()) else {
            continue;
        };
        for (name, count) in live_hours(item, day, today, this_hour) {
            *out.entry(name.to_owned()).or_default() += count;
        }
    }
    out
}
