//! Query 3 on DynamoDB: the seed's `alerts` table, keyed by city (or one of its alert shards)
//! and `<timestamp>#<event_id>`. A city's alerts are read from its shards at once and merged;
//! every city's come from the alerts list (`lists.rs`).

use futures_util::future::try_join_all;

use super::db::Db;
use super::items::{Item, alert_from, alert_item, live, s, text};
use super::keys::{alert_shard_key, alert_sort_key};
use super::units::Kind;
use crate::model::EventTime;
use crate::store::rules::Effects;
use crate::store::{EventKey, Page, StoreError, StoredAlert, TimeRange};

/// The `alerts` table.
pub struct Alerts {
    db: Db,
    table: String,
    shards: u32,
}

impl Alerts {
    pub fn new(db: Db, table: String, shards: u32) -> Self {
        Alerts { db, table, shards }
    }

    pub async fn put(&self, effects: &Effects<'_>) -> Result<(), StoreError> {
        let items = effects
            .alert_events()
            .map(|a| alert_item(a, self.shards))
            .collect();
        self.db.put_all(&self.table, items, Kind::Alert).await
    }

    /// A page of one city's alerts in `range`: its shards at once, merged newest first.
    pub async fn of_city(
        &self,
        city: &str,
        range: TimeRange,
        page: &Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        let first = s(alert_sort_key(
            EventTime::from_millis(range.first_ms().max(0)),
            "",
        ));
        // Everything before the range's end, or before the cursor (exclusive: filtered below).
        let mut last = range.to.map(|to| alert_sort_key(to, ""));
        if let Some(k) = &page.after {
            let cursor = alert_sort_key(k.at, &k.event_id);
            last = Some(last.map_or(cursor.clone(), |l| l.min(cursor)));
        }
        let shards = (0..self.shards).map(|shard| {
            let request = self
                .db
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_names("#city", "city")
                .expression_attribute_names("#t", "timestamp")
                .expression_attribute_values(":c", s(alert_shard_key(city, shard, self.shards)))
                .expression_attribute_values(":first", first.clone())
                .scan_index_forward(false)
                .limit(page.limit.min(1000) as i32);
            let request = match &last {
                None => request.key_condition_expression("#city = :c AND #t >= :first"),
                Some(last) => request
                    .key_condition_expression("#city = :c AND #t BETWEEN :first AND :last")
                    .expression_attribute_values(":last", s(last)),
            };
            let last = last.clone();
            self.db.query(request, Some(page.limit), move |i| {
                live(i, "ttl_ms", now)
                    && last
                        .as_ref()
                        .is_none_or(|l| text(i, "timestamp").is_ok_and(|t| t < l.as_str()))
            })
        });
        newest_first(
            try_join_all(shards).await?,
            alert_from,
            |a| EventKey::of(&a.event),
            page.limit,
        )
    }
}

/// The pages that several shards returned, merged: the newest `limit` values, by `key`.
pub fn newest_first<T, K: Ord>(
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
