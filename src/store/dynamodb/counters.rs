//! Counts on DynamoDB (`/summary`, `/cities`, `/stats`) without a Scan and without a key
//! every event writes: a batch adds to one item per (scope, day in which the rows expire), a
//! scope being a city (`c#<city>`) or everything (`c`), with a guarded increment
//! (`guarded.rs`). Inside the item each count is kept per hour of expiry (`07e` = events
//! expiring in hour 7), so a read sums the hours not yet gone and the counts drop expired rows
//! to the hour, before DynamoDB's TTL deletes them. Late events per city and type, which
//! `/stats` lists, have an item each per expiry day under `lg#<day>#<shard>` (the group hashed
//! over the layout's shards; a read queries them all).
//!
//! Each scope's item is written once per batch that touches it, whatever the event rate: the
//! busiest key takes one write per processor per batch.

use std::collections::{BTreeMap, HashMap};

use futures_util::future::try_join_all;

use super::guarded::Contribution;
use super::items::{Item, n, s, text};
use super::keys::{
    Writer, attr, day_and_hour, day_expiry_secs, day_sk, late_group_shard, late_group_sk,
    late_groups_pk, scope_pk,
};
use super::sdk;
use super::store::DynamoStore;
use super::units::Kind;
use crate::model::{DeadLetter, EventTime, EventType, Placement, WriteBatch};
use crate::store::rules::Effects;
use crate::store::{LateCount, StoreError};

/// Counter names, each +1, that one record adds to one item.
type Names = Vec<String>;

/// The counter items a batch adds to: (partition key, sort key) → expiry day and contribution.
#[derive(Default)]
struct Increments(BTreeMap<(String, String), (i64, Contribution<Names>)>);

impl Increments {
    fn push(
        &mut self,
        pk: String,
        sk: String,
        day: i64,
        writer: Writer,
        offset: u64,
        names: Names,
    ) {
        self.0
            .entry((pk, sk))
            .or_insert_with(|| (day, Contribution::default()))
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
        self.push(scope_pk(city), day_sk(day), day, w, offset, names(hour));
    }
}

impl DynamoStore {
    /// Counts every new event and every dead letter of the batch.
    pub(super) async fn add_counters(
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
                    attr::events(h),
                    attr::of_type(h, e.event_type),
                    attr::of_severity(h, e.severity),
                ]
            });
            inc.scope(None, a.ttl, w, a.offset, |h| {
                let mut names = vec![attr::events(h)];
                if a.is_alert() {
                    names.push(attr::alerts(h, e.severity));
                }
                names
            });
            if let Placement::Late { .. } = a.placement {
                let expiry = batch.rules.late_expiry(e);
                inc.scope(Some(city), expiry, w, a.offset, |h| {
                    vec![attr::late_of_type(h, e.event_type)]
                });
                inc.scope(None, expiry, w, a.offset, |h| vec![attr::late(h)]);
                let (day, hour) = day_and_hour(expiry);
                let sk = late_group_sk(city, e.event_type);
                inc.push(
                    late_groups_pk(day, late_group_shard(&sk, self.shards())),
                    sk,
                    day,
                    w,
                    a.offset,
                    vec![attr::late_group(hour)],
                );
            }
        }
        for d in dead {
            let w = Writer::new(&d.source, d.partition);
            let expiry = batch.rules.dead_letter_expiry(d);
            inc.scope(None, expiry, w, d.offset, |h| vec![attr::dead(h, &d.kind)]);
        }
        try_join_all(
            inc.0
                .iter()
                .map(|((pk, sk), (day, c))| self.add_to_counter(pk, sk, *day, c)),
        )
        .await?;
        Ok(())
    }

    async fn add_to_counter(
        &self,
        pk: &str,
        sk: &str,
        day: i64,
        contribution: &Contribution<Names>,
    ) -> Result<(), StoreError> {
        let key = Item::from([("pk".into(), s(pk)), ("sk".into(), s(sk))]);
        let table = self.state.clone();
        self.apply_guarded(
            &table,
            &key,
            contribution,
            Kind::Counter,
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
                expr.set("ttl", n(day_expiry_secs(day)));
            },
        )
        .await?;
        Ok(())
    }

    /// The live counts under a scope: per counter name (without its hour), summed over the
    /// hours whose rows have not expired at `now`.
    pub(super) async fn live_counts(
        &self,
        pk: &str,
        now: EventTime,
    ) -> Result<HashMap<String, u64>, StoreError> {
        let items = self.items_since(pk, day_and_hour(now).0).await?;
        Ok(sum_live(&items, now))
    }

    /// The items of `pk` of `day` and later days.
    async fn items_since(&self, pk: &str, day: i64) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut next = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.state)
                .key_condition_expression("pk = :pk AND sk >= :day")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":day", s(day_sk(day)))
                .set_exclusive_start_key(next)
                .send()
                .await
                .map_err(sdk("Query"))?;
            out.extend(page.items().iter().cloned());
            next = page.last_evaluated_key().cloned();
            if next.is_none() {
                return Ok(out);
            }
        }
    }

    /// Live late events per city and type, for the expiry days that hold any (from the counts
    /// of everything, `all`).
    pub(super) async fn late_groups(
        &self,
        all: &[Item],
        now: EventTime,
    ) -> Result<Vec<LateCount>, StoreError> {
        let (today, this_hour) = day_and_hour(now);
        let days: Vec<i64> = all
            .iter()
            .filter_map(|item| {
                let day: i64 = text(item, "sk").ok()?.parse().ok()?;
                live_hours(item, day, today, this_hour)
                    .any(|(name, count)| name == "l" && count > 0)
                    .then_some(day)
            })
            .collect();
        let shards = self.shards();
        let pks: Vec<(i64, String)> = days
            .iter()
            .flat_map(|day| (0..shards).map(move |shard| (*day, late_groups_pk(*day, shard))))
            .collect();
        let pages = try_join_all(pks.iter().map(|(_, pk)| self.items_since(pk, 0)));
        let mut groups: BTreeMap<String, u64> = BTreeMap::new();
        for ((day, _), items) in pks.iter().zip(pages.await?) {
            for item in items {
                let live: u64 = live_hours(&item, *day, today, this_hour)
                    .map(|(_, c)| c)
                    .sum();
                *groups.entry(text(&item, "sk")?.to_owned()).or_default() += live;
            }
        }
        let mut out = Vec::new();
        for (group, late_events) in groups.into_iter().filter(|(_, n)| *n > 0) {
            let Some((city, t)) = group.rsplit_once('#') else {
                return Err(StoreError::Corrupt(format!("late group {group}")));
            };
            let event_type: EventType = t
                .parse()
                .map_err(|e: crate::model::UnknownValue| StoreError::Corrupt(e.to_string()))?;
            out.push(LateCount {
                city: city.to_owned(),
                event_type,
                late_events,
            });
        }
        Ok(out)
    }

    /// The counts of everything, item by item from today on (for `/stats`).
    pub(super) async fn all_counts(&self, now: EventTime) -> Result<Vec<Item>, StoreError> {
        self.items_since(&scope_pk(None), day_and_hour(now).0).await
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
        let aws_sdk_dynamodb::types::AttributeValue::N(count) = value else {
            return None;
        };
        live.then(|| (rest, count.parse().unwrap_or(0)))
    })
}

/// Sums of live counters of everything, from its items.
pub(super) fn sum_live(items: &[Item], now: EventTime) -> HashMap<String, u64> {
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
