//! The outbox on DynamoDB (`store::outbox`): one item per delivery in `state` (`dv#<id>`),
//! put with its alert only if absent, so a batch written again leaves a delivery as it is.
//!
//! A pending delivery carries `dq` (its sink and shard) and `dn` (its next attempt), so it is in
//! the index `due`; a finished one has them removed and expires by TTL with its alert. Taking a
//! delivery is an update conditional on its `dn` being what the index showed: of several
//! dispatchers that saw it due, one wins the lease, and each attempt is sent by one of them.
//! `deliveries-by-time` lists every delivery, newest first, per shard.

use aws_sdk_dynamodb::types::Select;
use futures_util::future::try_join_all;
use uuid::Uuid;

use super::db::{Db, sdk};
use super::items::{Item, n, num, opt_num, s, state_key, text};
use super::keys::{
    DELIVERY_SHARDS, deliveries_pk, delivery_key, delivery_order, delivery_shard, due_pk,
};
use super::units::Kind;
use crate::model::alerting::{Alerting, Fired, RuleRef, WindowState};
use crate::model::{EventTime, SeverityCounts};
use crate::store::outbox::{
    Attempted, Delivery, DeliveryFilter, DeliveryKey, DeliveryStatus, Outcome, Pending,
};
use crate::store::rules::{Effects, WindowId, owed_alerts, window_alert_body};
use crate::store::{Page, StoreError};

/// The deliveries, in the `state` table.
pub struct Deliveries {
    db: Db,
    table: String,
}

impl Deliveries {
    pub fn new(db: Db, table: String) -> Self {
        Deliveries { db, table }
    }

    /// Every delivery of the new alerts, pending and due at once, unless already there.
    pub async fn put(&self, effects: &Effects<'_>, now: EventTime) -> Result<(), StoreError> {
        let mut items = Vec::new();
        for a in effects.alert_events() {
            for (fired, body) in owed_alerts(a) {
                items.extend(owed_items(fired, &body, a.partition, a.ttl, now));
            }
        }
        try_join_all(items.into_iter().map(|item| self.put_new(item))).await?;
        Ok(())
    }

    /// The window rules' deliveries: each window the write added to, with its counts as the
    /// increments left them, fires the window rules it meets.
    pub async fn alert_windows(
        &self,
        alerting: &Alerting,
        effects: &Effects<'_>,
        windows: &[(WindowId<'_>, SeverityCounts)],
        now: EventTime,
    ) -> Result<(), StoreError> {
        let mut items = Vec::new();
        for (id, counts) in windows {
            let Some(w) = effects.windows.get(id) else {
                continue;
            };
            let state = WindowState {
                city: w.city.as_str(),
                event_type: w.event_type,
                resolution: w.resolution.span,
                start: w.start,
                counts: *counts,
            };
            for fired in alerting.fire_window(&state) {
                let body = window_alert_body(&fired, &state);
                items.extend(owed_items(&fired, &body, 0, w.expires_at(), now));
            }
        }
        try_join_all(items.into_iter().map(|item| self.put_new(item))).await?;
        Ok(())
    }

    async fn put_new(&self, item: Item) -> Result<(), StoreError> {
        // The item and its entries in both indexes.
        for _ in 0..3 {
            self.db.units.item(Kind::Alert, &item);
        }
        let put = self
            .db
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)");
        self.db.put_if(put).await?;
        Ok(())
    }

    pub async fn take_due(
        &self,
        sink: &str,
        now: EventTime,
        lease_until: EventTime,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let shards = (0..DELIVERY_SHARDS).map(|shard| {
            let request = self
                .db
                .client
                .query()
                .table_name(&self.table)
                .index_name("due")
                .key_condition_expression("dq = :q AND dn <= :now")
                .expression_attribute_values(":q", s(due_pk(sink, shard)))
                .expression_attribute_values(":now", n(now.as_millis()))
                .limit(limit.min(1000) as i32);
            self.db.query(request, Some(limit), |_| true)
        });
        let mut due: Vec<Item> = try_join_all(shards).await?.into_iter().flatten().collect();
        due.sort_by_key(|i| num::<i64>(i, "dn").unwrap_or(0));
        due.truncate(limit);
        let leased = try_join_all(due.iter().map(|i| self.lease(i, lease_until))).await?;
        due.iter()
            .zip(leased)
            .filter(|(_, won)| *won)
            .map(|(i, _)| pending_from(i))
            .collect()
    }

    /// Moves a due delivery's next attempt to the lease's end, if no one did first.
    async fn lease(&self, item: &Item, until: EventTime) -> Result<bool, StoreError> {
        let id = text(item, "id")?;
        let seen = item.get("dn").cloned().unwrap_or_else(|| n(0));
        let update = self
            .db
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(id)))
            .update_expression("SET dn = :until")
            .condition_expression("#s = :pending AND dn = :seen")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":until", n(until.as_millis()))
            .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
            .expression_attribute_values(":seen", seen);
        self.db.update_if(update).await
    }

    pub async fn record(&self, attempts: &[Attempted]) -> Result<(), StoreError> {
        try_join_all(attempts.iter().map(|a| self.record_one(a))).await?;
        Ok(())
    }

    async fn record_one(&self, a: &Attempted) -> Result<bool, StoreError> {
        let (status, rest) = match a.outcome {
            Outcome::Delivered => (DeliveryStatus::Delivered, "REMOVE dq, dn"),
            Outcome::Failed => (DeliveryStatus::Failed, "REMOVE dq, dn"),
            Outcome::Retry { .. } => (DeliveryStatus::Pending, ""),
        };
        let mut set = "SET #s = :status, attempts = attempts + :one, updated_at = :at, \
             last_status = :code, last_error = :error"
            .to_owned();
        let mut update = self
            .db
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&a.id.to_string())))
            .condition_expression("#s = :pending")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":at", n(a.at.as_millis()))
            .expression_attribute_values(":code", a.status.map_or_else(null, n))
            .expression_attribute_values(":error", a.error.as_deref().map_or_else(null, s));
        match a.outcome {
            Outcome::Retry { next_at } => {
                set.push_str(", dn = :next");
                update = update.expression_attribute_values(":next", n(next_at.as_millis()));
            }
            // A finished delivery expires with its alert.
            Outcome::Delivered | Outcome::Failed => set.push_str(", #ttl = expires"),
        }
        if status != DeliveryStatus::Pending {
            update = update.expression_attribute_names("#ttl", "ttl");
        }
        self.db
            .update_if(update.update_expression(format!("{set} {rest}")))
            .await
    }

    /// A page of deliveries, newest first: every shard of `deliveries-by-time`, merged.
    pub async fn list(
        &self,
        filter: &DeliveryFilter,
        page: &Page<DeliveryKey>,
    ) -> Result<Vec<Delivery>, StoreError> {
        let before = page
            .after
            .as_ref()
            .map(|k| delivery_order(k.created_at, &k.id.to_string()));
        let keep = |i: &Item| {
            filter
                .status
                .is_none_or(|st| text(i, "status").ok() == Some(st.as_str()))
                && filter
                    .sink
                    .as_deref()
                    .is_none_or(|sk| text(i, "sink").ok() == Some(sk))
        };
        let shards = (0..DELIVERY_SHARDS).map(|shard| {
            let request = self
                .db
                .client
                .query()
                .table_name(&self.table)
                .index_name("deliveries-by-time")
                .expression_attribute_values(":q", s(deliveries_pk(shard)))
                .scan_index_forward(false)
                .limit(page.limit.min(1000) as i32);
            let request = match &before {
                None => request.key_condition_expression("dvq = :q"),
                Some(b) => request
                    .key_condition_expression("dvq = :q AND dvt < :before")
                    .expression_attribute_values(":before", s(b)),
            };
            self.db.query(request, Some(page.limit), keep)
        });
        let mut found = try_join_all(shards)
            .await?
            .into_iter()
            .flatten()
            .map(|i| delivery_from(&i))
            .collect::<Result<Vec<_>, _>>()?;
        found.sort_by_key(|d| std::cmp::Reverse((d.created_at, d.id)));
        found.truncate(page.limit);
        Ok(found)
    }

    pub async fn redeliver(
        &self,
        id: Uuid,
        now: EventTime,
    ) -> Result<Option<DeliveryStatus>, StoreError> {
        let id = id.to_string();
        let Some(item) = self.db.get_consistent(&self.table, &key(&id)).await? else {
            return Ok(None);
        };
        let was = status_of(&item)?;
        if was != DeliveryStatus::Pending {
            let sink = text(&item, "sink")?;
            let update = self
                .db
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(&id)))
                .update_expression(
                    "SET #s = :pending, attempts = :zero, dq = :q, dn = :now, updated_at = :now \
                     REMOVE #ttl",
                )
                .condition_expression("#s = :was")
                .expression_attribute_names("#s", "status")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
                .expression_attribute_values(":was", s(was.as_str()))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":q", s(due_pk(sink, delivery_shard(&id))))
                .expression_attribute_values(":now", n(now.as_millis()));
            self.db.update_if(update).await?;
        }
        Ok(Some(was))
    }

    pub async fn redeliver_failed(
        &self,
        sink: Option<&str>,
        now: EventTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let filter = DeliveryFilter {
            status: Some(DeliveryStatus::Failed),
            sink: sink.map(str::to_owned),
        };
        let failed = self.list(&filter, &Page::first(limit)).await?;
        let done = try_join_all(failed.iter().map(|d| self.redeliver(d.id, now))).await?;
        Ok(done.len() as u64)
    }

    /// Pending deliveries of each sink, counted up to `limit`.
    pub async fn backlog(
        &self,
        sinks: &[String],
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let counts = sinks.iter().map(|sink| async move {
            let mut total = 0u64;
            for shard in 0..DELIVERY_SHARDS {
                let out = {
                    let _permit = self.db.permit().await;
                    self.db
                        .client
                        .query()
                        .table_name(&self.table)
                        .index_name("due")
                        .key_condition_expression("dq = :q")
                        .expression_attribute_values(":q", s(due_pk(sink, shard)))
                        .select(Select::Count)
                        .limit(limit.min(10_000) as i32)
                        .send()
                        .await
                        .map_err(sdk("Query"))?
                };
                total += out.count().max(0) as u64;
            }
            Ok::<_, StoreError>((sink.clone(), total.min(limit as u64)))
        });
        let counts = try_join_all(counts).await?;
        Ok(counts.into_iter().filter(|(_, n)| *n > 0).collect())
    }
}

/// The items of one alert's deliveries, pending and due at `now`; finished, each expires at
/// `expires`.
fn owed_items(
    fired: &Fired,
    alert: &str,
    partition: u32,
    expires: EventTime,
    now: EventTime,
) -> Vec<Item> {
    let alert_id = fired.alert_id.unwrap_or_default().to_string();
    fired
        .deliveries
        .iter()
        .map(|(id, sink)| {
            let id = id.to_string();
            let shard = delivery_shard(&id);
            let mut item = key(&id);
            item.extend([
                ("alert_id".into(), s(&alert_id)),
                ("sink".into(), s(sink)),
                ("rule".into(), s(fired.rule.to_string())),
                ("partition".into(), n(partition)),
                ("alert".into(), s(alert)),
                ("status".into(), s(DeliveryStatus::Pending.as_str())),
                ("attempts".into(), n(0)),
                ("created_at".into(), n(now.as_millis())),
                ("updated_at".into(), n(now.as_millis())),
                ("expires".into(), n(expires.as_millis().div_euclid(1000))),
                ("dq".into(), s(due_pk(sink, shard))),
                ("dn".into(), n(now.as_millis())),
                ("dvq".into(), s(deliveries_pk(shard))),
                ("dvt".into(), s(delivery_order(now, &id))),
                ("id".into(), s(id)),
            ]);
            item
        })
        .collect()
}

fn key(id: &str) -> Item {
    let (pk, sk) = delivery_key(id);
    state_key(pk, sk)
}

fn null() -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::Null(true)
}

fn status_of(item: &Item) -> Result<DeliveryStatus, StoreError> {
    text(item, "status")?
        .parse()
        .map_err(|_| StoreError::corrupt("a delivery's status"))
}

fn uuid_of(item: &Item, name: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text(item, name)?).map_err(|_| StoreError::corrupt("a delivery's id"))
}

fn pending_from(item: &Item) -> Result<Pending, StoreError> {
    Ok(Pending {
        id: uuid_of(item, "id")?,
        sink: text(item, "sink")?.to_owned(),
        alert: text(item, "alert")?.to_owned(),
        attempts: num(item, "attempts")?,
        created_at: EventTime::from_millis(num(item, "created_at")?),
    })
}

fn delivery_from(item: &Item) -> Result<Delivery, StoreError> {
    let status = status_of(item)?;
    let rule = text(item, "rule")?;
    Ok(Delivery {
        id: uuid_of(item, "id")?,
        alert_id: uuid_of(item, "alert_id")?,
        sink: text(item, "sink")?.to_owned(),
        rule: RuleRef::parse(rule).ok_or_else(|| StoreError::corrupt("a delivery's rule"))?,
        status,
        attempts: num(item, "attempts")?,
        created_at: EventTime::from_millis(num(item, "created_at")?),
        updated_at: EventTime::from_millis(num(item, "updated_at")?),
        next_attempt_at: opt_num(item, "dn")?.map(EventTime::from_millis),
        last_status: opt_num(item, "last_status")?.and_then(|c| u16::try_from(c).ok()),
        last_error: text(item, "last_error").ok().map(str::to_owned),
        alert: serde_json::from_str(text(item, "alert")?).map_err(StoreError::corrupt)?,
    })
}
