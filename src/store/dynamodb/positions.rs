//! Where each processor got, and what there is to list: checkpoints (`pos#<source>`, a put
//! that only moves a partition's position forwards), and the registries of sources and cities
//! that health and `/cities` read (written once per process and name).

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use futures_util::future::try_join_all;

use super::db::{Db, sdk};
use super::items::{
    Item, checkpoint_from, checkpoint_item, checkpoint_key, n, num, s, state_key, text,
};
use super::keys::{SOURCES_PK, checkpoints_pk, cities_pk, city_shard};
use super::units::Kind;
use crate::model::{Checkpoint, EventTime, WriteBatch};
use crate::store::rules::{Effects, fenced};
use crate::store::{PartitionStatus, StoreError};

/// Cities and sources this process remembers having registered; past it, it starts over.
const REGISTERED: usize = 10_000;

/// Checkpoints and registries, in the `state` table.
pub struct Positions {
    db: Db,
    table: String,
    shards: u32,
    /// Sources and cities this process registered.
    registered: Mutex<HashSet<String>>,
}

impl Positions {
    pub fn new(db: Db, table: String, shards: u32) -> Self {
        Positions {
            db,
            table,
            shards,
            registered: Mutex::default(),
        }
    }

    /// Moves each partition's position forward; returns the partitions whose stored position
    /// was ahead (a newer writer owns them), which keep it.
    pub async fn write(&self, batch: &WriteBatch, now: EventTime) -> Result<Vec<u32>, StoreError> {
        let moved = try_join_all(batch.checkpoints.iter().map(|c| async move {
            let item = checkpoint_item(c, now);
            self.db.units.item(Kind::Position, &item);
            let put = self
                .db
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR next_offset <= :ours")
                .expression_attribute_values(":ours", n(c.next_offset));
            Ok::<_, StoreError>((!self.db.put_if(put).await?).then(|| fenced(c)))
        }))
        .await?;
        Ok(moved.into_iter().flatten().collect())
    }

    pub async fn checkpoint(
        &self,
        source: &str,
        partition: u32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let key = checkpoint_key(source, partition);
        self.db
            .get_consistent(&self.table, &key)
            .await?
            .as_ref()
            .map(checkpoint_from)
            .transpose()
    }

    pub async fn checkpoints(&self, source: &str) -> Result<Vec<Checkpoint>, StoreError> {
        self.items(&checkpoints_pk(source))
            .await?
            .iter()
            .map(checkpoint_from)
            .collect()
    }

    /// The most recently updated partitions of every registered source, at most `limit`.
    pub async fn status(&self, limit: usize) -> Result<Vec<PartitionStatus>, StoreError> {
        let mut out = Vec::new();
        for source in self.items(SOURCES_PK).await? {
            for item in self.items(&checkpoints_pk(text(&source, "sk")?)).await? {
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

    /// Every item of one partition key, consistently.
    async fn items(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        self.db.partition(&self.table, pk, None, true).await
    }

    /// Registers the batch's source and the new events' cities once per process: what
    /// `/cities` and health list.
    pub async fn register(
        &self,
        batch: &WriteBatch,
        effects: &Effects<'_>,
    ) -> Result<(), StoreError> {
        let mut items = Vec::new();
        if self.fresh(format!("source:{}", batch.source)) {
            items.push(state_key(SOURCES_PK, batch.source.as_str()));
        }
        for a in &effects.new {
            let city = a.event.city.as_str();
            if self.fresh(format!("city:{city}")) {
                items.push(state_key(cities_pk(city_shard(city, self.shards)), city));
            }
        }
        let put = self.db.put_all(&self.table, items, Kind::Position).await;
        if put.is_err() {
            // Not registered after all: the next batch tries again.
            if let Ok(mut registered) = self.registered.lock() {
                registered.clear();
            }
        }
        put
    }

    fn fresh(&self, key: String) -> bool {
        let Ok(mut registered) = self.registered.lock() else {
            return true;
        };
        if registered.len() >= REGISTERED {
            registered.clear();
        }
        registered.insert(key)
    }

    /// Names from the city registry after `after`, in name order, at most `limit`, and whether
    /// the registry holds more.
    pub async fn city_names(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), StoreError> {
        let shards = (0..self.shards).map(|shard| {
            let mut request = self
                .db
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(cities_pk(shard)))
                .limit(limit.min(1000) as i32);
            if let Some(after) = after {
                request = request
                    .key_condition_expression("pk = :pk AND sk > :after")
                    .expression_attribute_values(":after", s(after));
            }
            async move {
                let page = {
                    let _permit = self.db.permit().await;
                    request.send().await.map_err(sdk("Query"))?
                };
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
}
