//! [`Store`] on DynamoDB. Every list is a Query bounded by its page (or, across cities, by the
//! number of cities); nothing Scans. Writes are in `write.rs`, item layouts in `items.rs`.
//!
//! - Raw events, alerts, late events and dead letters are written as units of
//!   `TransactWriteItems`, with `ADD`s to counter items in `state` and to their window; a
//!   replayed record finds its key taken, so counts and windows stay exact. Counters of raw
//!   events, late events and dead letters are bucketed by the hour in which their rows
//!   expire, so counts drop expired hours without a Scan (to the hour: within the hour an
//!   expired row is counted until DynamoDB's TTL deletes it).
//! - Checkpoints are small items in `state`, one per partition, moved only forwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;

use super::items::{
    Item, alert_key, checkpoint_from, dead_from, dead_key, event_from, fixed, hour, late_from,
    live, num, pad, s, text, time_key, window_from,
};
use super::{DynamoConfig, sdk};
use crate::model::{
    Accepted, Checkpoint, CityEvent, DeadLetter, EventTime, EventType, LateEvent, Severity,
    WindowAggregate, WriteBatch,
};
use crate::store::{
    CityCount, CitySummary, DeadLetterKey, EventKey, LateCount, MAX_LATE_GROUPS, Page,
    PartitionStatus, Purged, Stats, Store, StoreError, StoredEvent, WindowPos, Written,
};

/// The layout of items this build writes, kept in `state` under `meta` / `layout`. Layout 1
/// (the first DynamoDB store) kept full window values and checkpoints per replay offset.
const LAYOUT: u32 = 2;

/// DynamoDB-backed [`Store`].
#[derive(Clone)]
pub struct DynamoStore {
    pub(super) prefix: String,
    pub(super) client: Client,
    pub(super) raw: String,
    pub(super) aggregations: String,
    pub(super) alerts: String,
    pub(super) state: String,
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

impl DynamoStore {
    /// A store on the tables `init` made, with credentials from the AWS provider chain.
    pub async fn open(config: &DynamoConfig) -> Self {
        Self::with_client(super::client(config).await, &config.table_prefix)
    }

    /// A store on the tables named with `prefix`, through `client`.
    pub fn with_client(client: Client, prefix: &str) -> Self {
        let name = |t: &str| format!("{prefix}{t}");
        DynamoStore {
            prefix: prefix.to_owned(),
            client,
            raw: name("raw-events"),
            aggregations: name("aggregations"),
            alerts: name("alerts"),
            state: name("state"),
        }
    }

    /// Checks that the tables hold items of this build's layout, and marks tables that hold no
    /// results yet as such. Tables written by another layout are refused, not misread.
    pub async fn check_layout(&self) -> Result<(), StoreError> {
        let refuse = |found: String| StoreError::Layout {
            prefix: self.prefix.clone(),
            found,
            expected: LAYOUT,
        };
        let marked = self
            .client
            .get_item()
            .table_name(&self.state)
            .key("pk", s("meta"))
            .key("sk", s("layout"))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk("GetItem"))?;
        if let Some(item) = marked.item() {
            let found: u32 = num(item, "version")?;
            return match found {
                LAYOUT => Ok(()),
                other => Err(refuse(format!("layout {other}"))),
            };
        }
        let written = self
            .client
            .query()
            .table_name(&self.state)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s("sources"))
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk("Query"))?;
        if !written.items().is_empty() {
            return Err(refuse("layout 1".into()));
        }
        let mark = self
            .client
            .put_item()
            .table_name(&self.state)
            .item("pk", s("meta"))
            .item("sk", s("layout"))
            .item("version", super::items::n(LAYOUT))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match mark {
            Ok(_) => Ok(()),
            // Another process marked it meanwhile: read it again.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Box::pin(self.check_layout()).await
            }
            Err(e) => Err(sdk("PutItem")(e)),
        }
    }

    /// Runs a query page after page, keeping items `keep` accepts, until `want` are kept or
    /// the query ends.
    async fn query(
        &self,
        mut request: QueryFluentBuilder,
        want: Option<usize>,
        keep: impl Fn(&Item) -> bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        loop {
            let page = request.clone().send().await.map_err(sdk("Query"))?;
            out.extend(page.items().iter().filter(|i| keep(i)).cloned());
            if let Some(want) = want.filter(|w| out.len() >= *w) {
                out.truncate(want);
                return Ok(out);
            }
            match page.last_evaluated_key() {
                Some(key) => request = request.set_exclusive_start_key(Some(key.clone())),
                None => return Ok(out),
            }
        }
    }

    /// A Query of one `state` partition, in key order, consistent.
    fn state_query(&self, pk: &str) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.state)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk))
            .consistent_read(true)
    }

    async fn state_items(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        self.query(self.state_query(pk), None, |_| true).await
    }

    /// The cities seen, by name, after `after`, at most `limit`.
    async fn city_names(
        &self,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<String>, StoreError> {
        let mut request = self.state_query("cities");
        if let Some(after) = after {
            request = request
                .key_condition_expression("pk = :pk AND sk > :after")
                .expression_attribute_values(":after", s(after));
        }
        if let Some(limit) = limit {
            request = request.limit(limit.min(1000) as i32);
        }
        self.query(request, limit, |_| true)
            .await?
            .iter()
            .map(|i| text(i, "sk").map(str::to_owned))
            .collect()
    }

    /// The one city asked for, or every city seen.
    pub(super) async fn cities_or_all(
        &self,
        city: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        match city {
            Some(c) => Ok(vec![c.to_owned()]),
            None => self.city_names(None, None).await,
        }
    }

    /// Counters under `pk` in hour buckets that have not expired at `now`: (rest of the sort
    /// key after the hour, count).
    async fn live_buckets(
        &self,
        pk: &str,
        now: EventTime,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let request = self
            .state_query(pk)
            .key_condition_expression("pk = :pk AND sk >= :from")
            .expression_attribute_values(":from", s(hour(now)));
        let mut out = Vec::new();
        for item in self.query(request, None, |_| true).await? {
            let sk = text(&item, "sk")?;
            let Some((_, rest)) = sk.split_once('#') else {
                return Err(corrupt(sk));
            };
            out.push((rest.to_owned(), num(&item, "count")?));
        }
        Ok(out)
    }

    async fn raw_counts(
        &self,
        city: &str,
        now: EventTime,
    ) -> Result<Vec<(EventType, Severity, u64)>, StoreError> {
        let mut out = Vec::new();
        for (rest, count) in self.live_buckets(&format!("count#raw#{city}"), now).await? {
            let Some((t, v)) = rest.split_once('#') else {
                return Err(corrupt(rest));
            };
            out.push((
                t.parse().map_err(corrupt)?,
                v.parse().map_err(corrupt)?,
                count,
            ));
        }
        Ok(out)
    }

    async fn city_total(&self, city: &str, now: EventTime) -> Result<u64, StoreError> {
        Ok(self.raw_counts(city, now).await?.iter().map(|c| c.2).sum())
    }

    /// Live late events per (city, type).
    async fn late_counts(
        &self,
        now: EventTime,
    ) -> Result<BTreeMap<(String, EventType), u64>, StoreError> {
        let mut out = BTreeMap::new();
        for (rest, count) in self.live_buckets("count#late", now).await? {
            let Some((city, t)) = rest.rsplit_once('#') else {
                return Err(corrupt(rest));
            };
            let t: EventType = t.parse().map_err(corrupt)?;
            *out.entry((city.to_owned(), t)).or_default() += count;
        }
        Ok(out)
    }

    /// The raw event stored under an accepted event's key, read consistently.
    pub(super) async fn raw_event(&self, a: &Accepted) -> Result<Option<CityEvent>, StoreError> {
        let found = self
            .client
            .get_item()
            .table_name(&self.raw)
            .key("event_id", s(&a.event.event_id))
            .key("timestamp", s(fixed(a.event.timestamp)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk("GetItem"))?;
        found.item().map(event_from).transpose()
    }

    /// A window's stored event count, read consistently (0 when it has none yet).
    pub(super) async fn window_count(&self, key: &str) -> Result<u64, StoreError> {
        let found = self
            .client
            .get_item()
            .table_name(&self.aggregations)
            .key("partition_key", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk("GetItem"))?;
        match found.item() {
            Some(item) => num(item, "event_count"),
            None => Ok(0),
        }
    }

    async fn city_alerts(
        &self,
        city: &str,
        since: EventTime,
        page: &Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<CityEvent>, StoreError> {
        let mut request = self
            .client
            .query()
            .table_name(&self.alerts)
            .expression_attribute_names("#city", "city")
            .expression_attribute_names("#t", "timestamp")
            .expression_attribute_values(":c", s(city))
            .expression_attribute_values(":since", s(fixed(since)))
            .scan_index_forward(false)
            .limit(page.limit.min(1000) as i32);
        request = match &page.after {
            None => request.key_condition_expression("#city = :c AND #t >= :since"),
            Some(k) => request
                .key_condition_expression("#city = :c AND #t BETWEEN :since AND :before")
                .expression_attribute_values(":before", s(alert_key(k.at, &k.event_id))),
        };
        let after = page.after.clone();
        let items = self
            .query(request, Some(page.limit), |i| {
                live(i, "ttl_ms", now)
                    && after.as_ref().is_none_or(|k| {
                        text(i, "timestamp").is_ok_and(|t| t != alert_key(k.at, &k.event_id))
                    })
            })
            .await?;
        items.iter().map(event_from).collect()
    }

    async fn city_late(
        &self,
        city: &str,
        page: &Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<LateEvent>, StoreError> {
        let mut request = self
            .state_query(&format!("late#{city}"))
            .scan_index_forward(false)
            .limit(page.limit.min(1000) as i32);
        if let Some(k) = &page.after {
            request = request
                .key_condition_expression("pk = :pk AND sk < :before")
                .expression_attribute_values(":before", s(time_key(k.at, &k.event_id)));
        }
        self.query(request, Some(page.limit), |i| live(i, "expires_ms", now))
            .await?
            .iter()
            .map(late_from)
            .collect()
    }
}

/// Pages of several cities merged into one: newest first, at most `limit`.
fn newest_first<T>(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> EventKey) -> Vec<T> {
    items.sort_by_key(|t| std::cmp::Reverse(key(t)));
    items.truncate(limit);
    items
}

#[async_trait]
impl Store for DynamoStore {
    fn backend(&self) -> &'static str {
        "dynamodb"
    }

    async fn write(&self, batch: Arc<WriteBatch>) -> Result<Written, StoreError> {
        self.write_batch(&batch).await
    }

    async fn checkpoint(
        &self,
        source: &str,
        partition: u32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let found = self
            .client
            .get_item()
            .table_name(&self.state)
            .key("pk", s(format!("pos#{source}")))
            .key("sk", s(format!("{partition:010}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk("GetItem"))?;
        found.item().map(checkpoint_from).transpose()
    }

    async fn checkpoints(&self, source: &str) -> Result<Vec<Checkpoint>, StoreError> {
        self.state_items(&format!("pos#{source}"))
            .await?
            .iter()
            .map(checkpoint_from)
            .collect()
    }

    async fn events_since(
        &self,
        _since: EventTime,
        _limit: usize,
    ) -> Result<Vec<CityEvent>, StoreError> {
        // No index orders every city's events by time; a resumed partition starts with an
        // empty id memory here (the table's key still catches every repeat).
        Ok(Vec::new())
    }

    async fn pipeline_status(&self, limit: usize) -> Result<Vec<PartitionStatus>, StoreError> {
        let mut out = Vec::new();
        for source in self.state_items("sources").await? {
            for item in self
                .state_items(&format!("pos#{}", text(&source, "sk")?))
                .await?
            {
                out.push(PartitionStatus {
                    checkpoint: checkpoint_from(&item)?,
                    updated_at: EventTime::from_millis(num(&item, "updated_at")?),
                });
            }
        }
        out.sort_by_key(|p| std::cmp::Reverse(p.updated_at));
        out.truncate(limit);
        Ok(out)
    }

    async fn recent_events(
        &self,
        city: &str,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut request = self
            .client
            .query()
            .table_name(&self.raw)
            .index_name("by-city-time")
            .key_condition_expression("#city = :c")
            .expression_attribute_names("#city", "city")
            .expression_attribute_values(":c", s(city))
            .scan_index_forward(false)
            .limit(page.limit.min(1000) as i32);
        if let Some(k) = &page.after {
            request = request
                .key_condition_expression("#city = :c AND time_key < :before")
                .expression_attribute_values(":before", s(time_key(k.at, &k.event_id)));
        }
        let items = self
            .query(request, Some(page.limit), |i| live(i, "ttl_ms", now))
            .await?;
        items
            .iter()
            .map(|i| {
                Ok(StoredEvent {
                    event: event_from(i)?,
                    ttl: num(i, "ttl")?,
                })
            })
            .collect()
    }

    async fn city_summary(&self, city: &str, now: EventTime) -> Result<CitySummary, StoreError> {
        let mut summary = CitySummary::default();
        for (t, v, count) in self.raw_counts(city, now).await? {
            summary.total_events += count;
            *summary.by_type.entry(t).or_default() += count;
            summary.by_severity.0[v.index()] += count;
        }
        summary.late_events = self
            .late_counts(now)
            .await?
            .iter()
            .filter(|((c, _), _)| c == city)
            .map(|(_, n)| n)
            .sum();
        Ok(summary)
    }

    async fn alerts(
        &self,
        city: Option<&str>,
        since: EventTime,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<CityEvent>, StoreError> {
        let mut out = Vec::new();
        for city in self.cities_or_all(city).await? {
            out.extend(self.city_alerts(&city, since, &page, now).await?);
        }
        Ok(newest_first(out, page.limit, EventKey::of))
    }

    async fn cities(
        &self,
        page: Page<String>,
        now: EventTime,
    ) -> Result<Vec<CityCount>, StoreError> {
        let mut out = Vec::new();
        let mut after = page.after.clone();
        // Cities whose events all expired are left out, so a page may take several reads.
        while out.len() < page.limit {
            let names = self.city_names(after.as_deref(), Some(page.limit)).await?;
            let Some(last) = names.last().cloned() else {
                break;
            };
            for city in names {
                let total = self.city_total(&city, now).await?;
                if total > 0 && out.len() < page.limit {
                    out.push(CityCount {
                        city,
                        total_events: total,
                    });
                }
            }
            after = Some(last);
        }
        Ok(out)
    }

    async fn aggregations(
        &self,
        city: &str,
        event_type: Option<EventType>,
        page: Page<WindowPos>,
        now: EventTime,
    ) -> Result<Vec<WindowAggregate>, StoreError> {
        let base = self
            .client
            .query()
            .table_name(&self.aggregations)
            .scan_index_forward(false)
            .limit(page.limit.min(1000) as i32);
        let request = match (event_type, &page.after) {
            (Some(t), after) => {
                let r = base
                    .index_name("by-city-type-window")
                    .expression_attribute_values(":k", s(format!("{city}#{t}")));
                match after {
                    None => r.key_condition_expression("city_type = :k"),
                    Some(p) => r
                        .key_condition_expression("city_type = :k AND window_start_ms < :before")
                        .expression_attribute_values(
                            ":before",
                            super::items::n(p.start.as_millis()),
                        ),
                }
            }
            (None, after) => {
                let r = base
                    .index_name("by-city-window")
                    .expression_attribute_names("#city", "city")
                    .expression_attribute_values(":k", s(city));
                match after {
                    None => r.key_condition_expression("#city = :k"),
                    Some(p) => r
                        .key_condition_expression("#city = :k AND window_key < :before")
                        .expression_attribute_values(
                            ":before",
                            s(format!("{}#{}", pad(p.start.as_millis()), p.event_type)),
                        ),
                }
            }
        };
        self.query(request, Some(page.limit), |i| live(i, "ttl_ms", now))
            .await?
            .iter()
            .map(window_from)
            .collect()
    }

    async fn stats(&self, now: EventTime) -> Result<Stats, StoreError> {
        let mut stats = Stats::default();
        for city in self.city_names(None, None).await? {
            stats.total_events += self.city_total(&city, now).await?;
        }
        for (severity, count) in self.live_buckets("count#alerts", now).await? {
            let v: Severity = severity.parse().map_err(corrupt)?;
            stats.alerts.0[v.index()] += count;
        }
        let mut late: Vec<LateCount> = self
            .late_counts(now)
            .await?
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|((city, event_type), late_events)| LateCount {
                city,
                event_type,
                late_events,
            })
            .collect();
        stats.late_events = late.iter().map(|l| l.late_events).sum();
        late.sort_by(|a, b| {
            (b.late_events, &a.city, a.event_type).cmp(&(a.late_events, &b.city, b.event_type))
        });
        late.truncate(MAX_LATE_GROUPS);
        stats.late_by_city_type = late;
        let mut dead: HashMap<String, u64> = HashMap::new();
        for (kind, count) in self.live_buckets("count#dead", now).await? {
            *dead.entry(kind).or_default() += count;
        }
        for (kind, count) in dead.into_iter().filter(|(_, n)| *n > 0) {
            stats.dead_letters += count;
            stats.dead_letters_by_kind.insert(kind, count);
        }
        Ok(stats)
    }

    async fn late_events(
        &self,
        city: Option<&str>,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<LateEvent>, StoreError> {
        let mut out = Vec::new();
        for city in self.cities_or_all(city).await? {
            out.extend(self.city_late(&city, &page, now).await?);
        }
        Ok(newest_first(out, page.limit, |l| EventKey::of(&l.event)))
    }

    async fn dead_letters(
        &self,
        page: Page<DeadLetterKey>,
        now: EventTime,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut request = self
            .state_query("dead")
            .scan_index_forward(false)
            .limit(page.limit.min(1000) as i32);
        if let Some(k) = &page.after {
            request = request
                .key_condition_expression("pk = :pk AND sk < :before")
                .expression_attribute_values(
                    ":before",
                    s(dead_key(k.received_at, &k.source, k.partition, k.offset)),
                );
        }
        self.query(request, Some(page.limit), |i| live(i, "expires_ms", now))
            .await?
            .iter()
            .map(dead_from)
            .collect()
    }

    async fn purge_expired(&self, _now: EventTime) -> Result<Purged, StoreError> {
        // DynamoDB's own TTL deletes expired items; reads filter them until it does.
        Ok(Purged::default())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .describe_table()
            .table_name(&self.raw)
            .send()
            .await
            .map(|_| ())
            .map_err(sdk("DescribeTable"))
    }
}
