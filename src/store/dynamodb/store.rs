//! [`Store`] on DynamoDB, and its reads. Every list is a Query bounded by its page, run on the
//! layout's shards at once and merged; nothing Scans. Counts sum a scope's items from today
//! on (`counters.rs`). Writes are in `write.rs`.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::KeysAndAttributes;
use futures_util::future::try_join_all;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::counters::sum_live;
use super::items::{
    Item, alert_from, alert_key, checkpoint_from, dead_from, dead_order, fixed, live, n, num, pad,
    s, text,
};
use super::keys::{
    DEFAULT_ALERT_SHARDS, DEFAULT_SHARDS, LAYOUT, MAX_SHARDS, alert_shard_key, cities_pk, scope_pk,
};
use super::lists::{self, Want};
use super::units::WriteUnits;
use super::windows::window_from;
use super::{DynamoConfig, sdk};
use crate::model::{
    Checkpoint, CityEvent, DeadLetter, EventTime, EventType, LateEvent, Severity, WindowAggregate,
    WriteBatch,
};
use crate::store::{
    CityCount, CitySummary, DeadLetterKey, EventKey, MAX_LATE_GROUPS, Page, PartitionStatus,
    Purged, Stats, Store, StoreError, StoredEvent, WindowPos, Written,
};

/// Keys per `BatchGetItem` (DynamoDB's limit).
const KEYS: usize = 100;

/// DynamoDB-backed [`Store`].
#[derive(Clone)]
pub struct DynamoStore {
    pub(super) prefix: String,
    pub(super) client: Client,
    pub(super) raw: String,
    pub(super) aggregations: String,
    pub(super) alerts: String,
    pub(super) state: String,
    /// The layout's shards and alert shards, as `check_layout` read them.
    shards: Arc<AtomicU32>,
    alert_shards: Arc<AtomicU32>,
    /// Shards and alert shards to mark tables that hold no layout yet with.
    new_shards: u32,
    new_alert_shards: u32,
    pub(super) units: Arc<WriteUnits>,
    permits: Arc<Semaphore>,
    /// Windows this process saw reach the severities cap: their writes add no severities.
    pub(super) full_windows: Arc<Mutex<HashSet<String>>>,
    /// Sources and cities this process registered.
    pub(super) registered: Arc<Mutex<HashSet<String>>>,
}

impl DynamoStore {
    /// A store on the tables `init` made, with credentials from the AWS provider chain.
    pub async fn open(config: &DynamoConfig) -> Self {
        Self::with_config(super::client(config).await, config)
    }

    /// A store on the tables named with `prefix`, through `client`, with the defaults.
    pub fn with_client(client: Client, prefix: &str) -> Self {
        Self::with_config(client, &DynamoConfig::new("", None, prefix))
    }

    pub fn with_config(client: Client, config: &DynamoConfig) -> Self {
        let name = |t: &str| format!("{}{t}", config.table_prefix);
        let shards = config.shards.clamp(1, MAX_SHARDS);
        DynamoStore {
            prefix: config.table_prefix.clone(),
            client,
            raw: name("raw-events"),
            aggregations: name("aggregations"),
            alerts: name("alerts"),
            state: name("state"),
            shards: Arc::new(AtomicU32::new(DEFAULT_SHARDS)),
            alert_shards: Arc::new(AtomicU32::new(DEFAULT_ALERT_SHARDS)),
            new_shards: shards,
            new_alert_shards: config.alert_shards.clamp(1, MAX_SHARDS),
            units: Arc::default(),
            permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
            full_windows: Arc::default(),
            registered: Arc::default(),
        }
    }

    /// Shards of the layout's shared keys.
    pub fn shards(&self) -> u32 {
        self.shards.load(Ordering::Relaxed)
    }

    /// Shards of a city's alerts.
    pub fn alert_shards(&self) -> u32 {
        self.alert_shards.load(Ordering::Relaxed)
    }

    /// Write units spent through this store so far, per kind.
    pub fn write_units(&self) -> &WriteUnits {
        &self.units
    }

    /// A turn to send a request: at most `--dynamodb-concurrency` at once.
    pub(super) async fn permit(&self) -> Option<SemaphorePermit<'_>> {
        self.permits.acquire().await.ok()
    }

    /// Checks that the tables hold items of this build's layout and reads its shards; marks
    /// tables that hold no results yet. Tables of another layout are refused, not misread.
    pub async fn check_layout(&self) -> Result<(), StoreError> {
        let refuse = |found: String| StoreError::Layout {
            prefix: self.prefix.clone(),
            found,
            expected: LAYOUT,
        };
        let key = Item::from([("pk".into(), s("meta")), ("sk".into(), s("layout"))]);
        if let Some(item) = self.get_consistent(&self.state, &key).await? {
            let found: u32 = num(&item, "version")?;
            if found != LAYOUT {
                return Err(refuse(format!("layout {found}")));
            }
            let shards: u32 = num(&item, "shards").unwrap_or(DEFAULT_SHARDS);
            self.shards
                .store(shards.clamp(1, MAX_SHARDS), Ordering::Relaxed);
            let alert_shards: u32 = num(&item, "alert_shards").unwrap_or(DEFAULT_ALERT_SHARDS);
            self.alert_shards
                .store(alert_shards.clamp(1, MAX_SHARDS), Ordering::Relaxed);
            return Ok(());
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
            .set_item(Some(key))
            .item("version", n(LAYOUT))
            .item("shards", n(self.new_shards))
            .item("alert_shards", n(self.new_alert_shards))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match mark {
            // Marked now, or by another process meanwhile: read it.
            Ok(_) => Box::pin(self.check_layout()).await,
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

    /// Items by key, in the order asked, leaving out those not found; read consistently when
    /// `consistent` (what correctness depends on is never read otherwise). Keys left
    /// unprocessed (throttling) are asked again after a growing pause.
    pub(super) async fn get_all(
        &self,
        table: &str,
        keys: Vec<Item>,
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut found: Vec<Item> = Vec::new();
        for chunk in keys.chunks(KEYS) {
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .consistent_read(consistent)
                    .build()
                    .map_err(super::build("KeysAndAttributes"))?,
            );
            let mut backoff = Duration::from_millis(50);
            while let Some(keys) = request.take() {
                let got = {
                    let _permit = self.permit().await;
                    self.client
                        .batch_get_item()
                        .request_items(table, keys)
                        .send()
                        .await
                        .map_err(sdk("BatchGetItem"))?
                };
                found.extend(
                    got.responses()
                        .and_then(|r| r.get(table))
                        .into_iter()
                        .flatten()
                        .cloned(),
                );
                request = got
                    .unprocessed_keys()
                    .and_then(|u| u.get(table))
                    .filter(|k| !k.keys().is_empty())
                    .cloned();
                if request.is_some() {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        let order = |item: &Item| {
            keys.iter()
                .position(|k| k.iter().all(|(name, v)| item.get(name) == Some(v)))
        };
        found.sort_by_key(|i| order(i));
        Ok(found)
    }

    /// One city's live raw events, from its counters.
    async fn city_total(&self, city: &str, now: EventTime) -> Result<u64, StoreError> {
        let counts = self.live_counts(&scope_pk(Some(city)), now).await?;
        Ok(counts.get("e").copied().unwrap_or(0))
    }

    /// A page of one city's alerts: its shards at once, merged.
    async fn city_alerts(
        &self,
        city: &str,
        since: EventTime,
        page: &Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<CityEvent>, StoreError> {
        let alert_shards = self.alert_shards();
        let shards = (0..alert_shards).map(|shard| {
            let key = alert_shard_key(city, shard, alert_shards);
            let mut request = self
                .client
                .query()
                .table_name(&self.alerts)
                .expression_attribute_names("#city", "city")
                .expression_attribute_names("#t", "timestamp")
                .expression_attribute_values(":c", s(key))
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
            self.query(request, Some(page.limit), move |i| {
                live(i, "ttl_ms", now)
                    && after.as_ref().is_none_or(|k| {
                        text(i, "timestamp").is_ok_and(|t| t != alert_key(k.at, &k.event_id))
                    })
            })
        });
        newest_first(
            try_join_all(shards).await?,
            alert_from,
            EventKey::of,
            page.limit,
        )
    }

    /// Names from the city registry after `after`, in name order, at most `limit`, and whether
    /// the registry holds more.
    async fn city_names(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), StoreError> {
        let shards = (0..self.shards()).map(|shard| {
            let mut request = self
                .state_query(&cities_pk(shard))
                .limit(limit.min(1000) as i32);
            if let Some(after) = after {
                request = request
                    .key_condition_expression("pk = :pk AND sk > :after")
                    .expression_attribute_values(":after", s(after));
            }
            async move {
                let page = request.send().await.map_err(sdk("Query"))?;
                let names = page
                    .items()
                    .iter()
                    .map(|i| text(i, "sk").map(str::to_owned))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, StoreError>((names, page.last_evaluated_key().is_some()))
            }
        });
        let mut names = BTreeSet::new();
        let mut more = false;
        for (shard_names, shard_more) in try_join_all(shards).await? {
            more |= shard_more;
            names.extend(shard_names);
        }
        more |= names.len() > limit;
        Ok((names.into_iter().take(limit).collect(), more))
    }

    /// Windows listed by an index query (keys only), read whole, live ones kept, until `limit`.
    async fn windows_of(
        &self,
        mut request: QueryFluentBuilder,
        limit: usize,
        now: EventTime,
    ) -> Result<Vec<WindowAggregate>, StoreError> {
        let mut out = Vec::new();
        loop {
            let page = request.clone().send().await.map_err(sdk("Query"))?;
            let keys: Vec<Item> = page
                .items()
                .iter()
                .filter_map(|i| i.get("partition_key").cloned())
                .map(|k| Item::from([("partition_key".into(), k)]))
                .collect();
            for item in self.get_all(&self.aggregations, keys, false).await? {
                if live(&item, "ttl_ms", now) && out.len() < limit {
                    out.push(window_from(&item)?);
                }
            }
            match page.last_evaluated_key() {
                Some(key) if out.len() < limit => {
                    request = request.set_exclusive_start_key(Some(key.clone()));
                }
                _ => return Ok(out),
            }
        }
    }
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
        let key = Item::from([
            ("pk".into(), s(format!("pos#{source}"))),
            ("sk".into(), s(format!("{partition:010}"))),
        ]);
        self.get_consistent(&self.state, &key)
            .await?
            .as_ref()
            .map(checkpoint_from)
            .transpose()
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
        // No list orders every city's events by time; a resumed partition starts with an empty
        // id memory here (the raw table's key still catches every repeat).
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
        let want = Want {
            after: page.after,
            since: None,
            limit: page.limit,
            now,
        };
        self.read_list(&lists::events_of(city), &want)
            .await?
            .iter()
            .map(|e| {
                Ok(StoredEvent {
                    event: e.to_event()?,
                    ttl: e.expires().as_millis().div_euclid(1000),
                })
            })
            .collect()
    }

    async fn city_summary(&self, city: &str, now: EventTime) -> Result<CitySummary, StoreError> {
        let counts = self.live_counts(&scope_pk(Some(city)), now).await?;
        let get = |name: String| counts.get(&name).copied().unwrap_or(0);
        let mut summary = CitySummary {
            total_events: get("e".into()),
            ..CitySummary::default()
        };
        for t in EventType::ALL {
            let events = get(format!("t{}", t.index()));
            if events > 0 {
                summary.by_type.insert(t, events);
            }
            summary.late_events += get(format!("l{}", t.index()));
        }
        for v in Severity::ALL {
            summary.by_severity.0[v.index()] = get(format!("s{}", v.index()));
        }
        Ok(summary)
    }

    async fn alerts(
        &self,
        city: Option<&str>,
        since: EventTime,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<CityEvent>, StoreError> {
        if let Some(city) = city {
            return self.city_alerts(city, since, &page, now).await;
        }
        let want = Want {
            after: page.after,
            since: Some(since),
            limit: page.limit,
            now,
        };
        self.read_list(lists::ALERTS, &want)
            .await?
            .iter()
            .map(|e| e.to_event())
            .collect()
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
            let (names, more) = self.city_names(after.as_deref(), page.limit).await?;
            let totals = try_join_all(names.iter().map(|c| self.city_total(c, now))).await?;
            for (city, total) in names.iter().zip(totals) {
                if total > 0 && out.len() < page.limit {
                    out.push(CityCount {
                        city: city.clone(),
                        total_events: total,
                    });
                }
            }
            match names.last() {
                Some(last) if more => after = Some(last.clone()),
                _ => break,
            }
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
                        .expression_attribute_values(":before", n(p.start.as_millis())),
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
        self.windows_of(request, page.limit, now).await
    }

    async fn stats(&self, now: EventTime) -> Result<Stats, StoreError> {
        let all = self.all_counts(now).await?;
        let counts = sum_live(&all, now);
        let get = |name: &str| counts.get(name).copied().unwrap_or(0);
        let mut stats = Stats {
            total_events: get("e"),
            late_events: get("l"),
            ..Stats::default()
        };
        for v in Severity::ALL {
            stats.alerts.0[v.index()] = get(&format!("a{}", v.index()));
        }
        for (name, count) in &counts {
            if let Some(kind) = name.strip_prefix("x:")
                && *count > 0
            {
                stats.dead_letters += count;
                stats.dead_letters_by_kind.insert(kind.to_owned(), *count);
            }
        }
        let mut late = self.late_groups(&all, now).await?;
        late.sort_by(|a, b| {
            (b.late_events, &a.city, a.event_type).cmp(&(a.late_events, &b.city, b.event_type))
        });
        late.truncate(MAX_LATE_GROUPS);
        stats.late_by_city_type = late;
        Ok(stats)
    }

    async fn late_events(
        &self,
        city: Option<&str>,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<LateEvent>, StoreError> {
        let list = city.map_or_else(|| lists::LATE.to_owned(), lists::late_of);
        let want = Want {
            after: page.after,
            since: None,
            limit: page.limit,
            now,
        };
        self.read_list(&list, &want)
            .await?
            .iter()
            .map(|e| e.to_late())
            .collect()
    }

    async fn dead_letters(
        &self,
        page: Page<DeadLetterKey>,
        now: EventTime,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let shards = (0..self.shards()).map(|shard| {
            let mut request = self
                .client
                .query()
                .table_name(&self.state)
                .index_name("dead-by-time")
                .key_condition_expression("dls = :s")
                .expression_attribute_values(":s", s(format!("dl#{shard:02}")))
                .scan_index_forward(false)
                .limit(page.limit.min(1000) as i32);
            if let Some(k) = &page.after {
                request = request
                    .key_condition_expression("dls = :s AND dlt < :before")
                    .expression_attribute_values(
                        ":before",
                        s(dead_order(k.received_at, &k.source, k.partition, k.offset)),
                    );
            }
            self.query(request, Some(page.limit), move |i| {
                live(i, "expires_ms", now)
            })
        });
        newest_first(
            try_join_all(shards).await?,
            dead_from,
            DeadLetterKey::of,
            page.limit,
        )
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

/// The pages that several shards returned, merged: the newest `limit` values, by `key`.
fn newest_first<T, K: Ord>(
    pages: Vec<Vec<Item>>,
    parse: fn(&Item) -> Result<T, StoreError>,
    key: fn(&T) -> K,
    limit: usize,
) -> Result<Vec<T>, StoreError> {
    let mut out = pages
        .iter()
        .flatten()
        .map(parse)
        .collect::<Result<Vec<T>, _>>()?;
    out.sort_by_key(|v| std::cmp::Reverse(key(v)));
    out.truncate(limit);
    Ok(out)
}
