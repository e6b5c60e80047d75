//! Layout 3 → 4, by `citystream init --migrate`, with every processor stopped (a SIGTERM lets
//! each finish its batch, so every window holds whole batches):
//!
//! 1. each base window gains its `series`, so the index `by-series` lists it;
//! 2. the rollups are made from the base windows (by rule 3 a rollup is exactly their sum),
//!    one (city, type) at a time, read through layout 3's index: each rollup holds every
//!    writer's position as the latest of its windows', so a batch written again later adds
//!    nothing twice;
//! 3. the late groups move from an item per expiry day to an item per expiry period;
//! 4. then `admin.rs` drops layout 3's window indexes and marks the tables layout 4.
//!
//! Every step writes values computed from layout 3's items, so a migration cut short is run
//! again whole. A rollup expires by this build's default retention ([`ROLLUPS`]); the next
//! write to it applies the configured one.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::future::try_join_all;

use super::db::{Db, sdk};
use super::items::{Item, n, s, text};
use super::keys::{
    Shards, Tables, attr, cities_pk, day_and_hour, day_expiry_secs, day_sk, late_group_shard,
    late_groups_pk, late_period, late_period_days, layout3, scope_pk, series, window_key,
};
use super::units::Kind;
use super::windows::window_from;
use crate::model::{
    DEFAULT_SEVERITIES_CAP, EventTime, EventType, ROLLUPS, Resolution, Severities, Severity, Span,
    WindowAggregate,
};
use crate::store::StoreError;

pub async fn layout_3_to_4(db: &Db, tables: &Tables, shards: Shards) -> Result<(), StoreError> {
    for shard in 0..shards.shared {
        for city in registered(db, tables, shard).await? {
            for t in EventType::SEED {
                migrate_series(db, tables, &city, t).await?;
            }
        }
    }
    migrate_late_groups(db, tables, shards).await
}

async fn registered(db: &Db, tables: &Tables, shard: u32) -> Result<Vec<String>, StoreError> {
    db.partition(&tables.state, &cities_pk(shard), None, true)
        .await?
        .iter()
        .map(|i| text(i, "sk").map(str::to_owned))
        .collect()
}

/// The base windows of one city and type: each gains its series, and their rollups are made.
async fn migrate_series(
    db: &Db,
    tables: &Tables,
    city: &str,
    event_type: EventType,
) -> Result<(), StoreError> {
    let request = db
        .client
        .query()
        .table_name(&tables.aggregations)
        .index_name(layout3::SERIES_INDEX)
        .key_condition_expression("city_type = :k")
        .expression_attribute_values(":k", s(layout3::city_type(city, event_type)));
    let keys: Vec<Item> = db
        .query(request, None, |_| true)
        .await?
        .iter()
        .filter_map(|i| i.get("partition_key").cloned())
        .map(|k| Item::from([("partition_key".into(), k)]))
        .collect();
    let windows = db.get_all(&tables.aggregations, keys, true).await?;
    let mut rollups: BTreeMap<(i64, i64), Rollup> = BTreeMap::new();
    for item in &windows {
        let w = window_from(item)?;
        let base = Resolution {
            span: Span::from_millis(w.window_end.as_millis() - w.window_start.as_millis()),
            retention: Span::from_millis(0),
        };
        set_series(db, tables, item, series(city, event_type, base)).await?;
        for r in ROLLUPS.iter().filter(|r| covers(r, base)) {
            let start = r.start_of(w.window_start);
            let rollup = rollups
                .entry((r.span.as_millis(), start.as_millis()))
                .or_insert_with(|| Rollup::new(*r, start));
            rollup.add(&w, item);
        }
    }
    let items: Vec<Item> = rollups.values().map(|r| r.item(city, event_type)).collect();
    db.put_all(&tables.aggregations, items, Kind::Window).await
}

/// Whether a rollup sums windows of `base`'s span.
fn covers(rollup: &Resolution, base: Resolution) -> bool {
    let (r, b) = (rollup.span.as_millis(), base.span.as_millis());
    b > 0 && r > b && r % b == 0
}

async fn set_series(
    db: &Db,
    tables: &Tables,
    window: &Item,
    series: String,
) -> Result<(), StoreError> {
    let Some(key) = window.get("partition_key") else {
        return Ok(());
    };
    let _permit = db.permit().await;
    db.client
        .update_item()
        .table_name(&tables.aggregations)
        .key("partition_key", key.clone())
        .update_expression("SET series = :s")
        .condition_expression("attribute_exists(partition_key)")
        .expression_attribute_values(":s", s(series))
        .send()
        .await
        .map_err(sdk("UpdateItem"))?;
    Ok(())
}

/// A rollup being summed from its base windows, in start order.
struct Rollup {
    resolution: Resolution,
    start: EventTime,
    counts: [u64; 4],
    severities: Severities,
    /// Per writer, the latest position of the windows summed.
    positions: BTreeMap<String, u64>,
    windows: BTreeSet<i64>,
}

impl Rollup {
    fn new(resolution: Resolution, start: EventTime) -> Self {
        Rollup {
            resolution,
            start,
            counts: [0; 4],
            severities: Severities::default(),
            positions: BTreeMap::new(),
            windows: BTreeSet::new(),
        }
    }

    fn add(&mut self, w: &WindowAggregate, item: &Item) {
        if !self.windows.insert(w.window_start.as_millis()) {
            return;
        }
        for (i, c) in w.severity_counts.0.iter().enumerate() {
            self.counts[i] += c;
        }
        self.severities.extend(&w.severities);
        for (name, value) in item {
            if let (true, AttributeValue::N(v)) = (name.starts_with('@'), value)
                && let Ok(at) = v.parse::<u64>()
            {
                let position = self.positions.entry(name.clone()).or_default();
                *position = (*position).max(at);
            }
        }
    }

    /// The rollup's item, as guarded increments would have left it; its severities in the
    /// order of its windows (read oldest first).
    fn item(&self, city: &str, event_type: EventType) -> Item {
        let r = self.resolution;
        let end = r.end_of(self.start);
        let expires = r.expiry(self.start).as_millis();
        let mut item = Item::from([
            (
                "partition_key".into(),
                s(window_key(city, event_type, self.start, r, false)),
            ),
            ("city".into(), s(city)),
            ("event_type".into(), s(event_type.as_str())),
            ("series".into(), s(series(city, event_type, r))),
            ("window_start".into(), s(self.start.to_rfc3339())),
            ("window_end".into(), s(end.to_rfc3339())),
            ("window_start_ms".into(), n(self.start.as_millis())),
            ("window_end_ms".into(), n(end.as_millis())),
            ("ttl".into(), n(expires.div_euclid(1000))),
            ("ttl_ms".into(), n(expires)),
            ("event_count".into(), n(self.counts.iter().sum::<u64>())),
        ]);
        for v in Severity::ALL {
            if self.counts[v.index()] > 0 {
                item.insert(v.as_str().into(), n(self.counts[v.index()]));
            }
        }
        let letters = self.severities.letters();
        let kept = &letters[..letters.len().min(DEFAULT_SEVERITIES_CAP)];
        if !kept.is_empty() {
            // Named `v:`, before every writer's chunk: these came first.
            item.insert("v:".into(), s(kept));
        }
        for (name, at) in &self.positions {
            item.insert(name.clone(), n(at));
        }
        item
    }
}

/// Late groups from layout 3's items per expiry day (`lg#<day>#NN`, counts `HHn`) to layout
/// 4's per expiry period, for the days whose counts are still live.
async fn migrate_late_groups(db: &Db, tables: &Tables, shards: Shards) -> Result<(), StoreError> {
    let (today, _) = day_and_hour(EventTime::now());
    let from = day_sk(today);
    let days: Vec<i64> = db
        .partition(&tables.state, &scope_pk(None), Some(&from), true)
        .await?
        .iter()
        .filter_map(|i| text(i, "sk").ok()?.parse().ok())
        .collect();
    // (period, group) → counts by day and hour.
    let mut periods: BTreeMap<(i64, String), BTreeMap<String, u64>> = BTreeMap::new();
    for day in days {
        let pks = (0..shards.shared).map(|shard| layout3::late_groups_pk(day, shard));
        let reads = pks.map(|pk| async move { db.partition(&tables.state, &pk, None, true).await });
        for item in try_join_all(reads).await?.iter().flatten() {
            let group = text(item, "sk")?.to_owned();
            let counts = periods.entry((late_period(day), group)).or_default();
            for (name, value) in item {
                let Some(hour) = layout3::late_group_hour(name) else {
                    continue;
                };
                if let AttributeValue::N(v) = value {
                    *counts.entry(attr::late_group(day, hour)).or_default() +=
                        v.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    let items: Vec<Item> = periods
        .into_iter()
        .map(|((period, group), counts)| {
            let pk = late_groups_pk(period, late_group_shard(&group, shards.shared));
            let ttl = late_period_days(period).last().map_or(0, day_expiry_secs);
            let mut item = Item::from([
                ("pk".into(), s(pk)),
                ("sk".into(), s(group)),
                ("ttl".into(), n(ttl)),
            ]);
            item.extend(counts.into_iter().map(|(name, c)| (name, n(c))));
            item
        })
        .collect();
    db.put_all(&tables.state, items, Kind::Counter).await
}
