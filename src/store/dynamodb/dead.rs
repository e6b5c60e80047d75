//! Dead letters on DynamoDB: an item each in `state`, keyed by where its record is, so a
//! replay finds it; listed newest first by the index `dead-by-time`, spread over the layout's
//! shards. They expire by DynamoDB's TTL.

use futures_util::future::try_join_all;

use super::alerts::newest_first;
use super::db::Db;
use super::items::{dead_from, dead_item, dead_key, live, s};
use super::keys::{dead_index_pk, dead_order};
use super::units::Kind;
use crate::model::{BatchRules, DeadLetter, EventTime};
use crate::store::{DeadLetterKey, Page, StoreError};

/// The dead letters of the `state` table.
pub struct DeadLetters {
    db: Db,
    table: String,
    shards: u32,
}

impl DeadLetters {
    pub fn new(db: Db, table: String, shards: u32) -> Self {
        DeadLetters { db, table, shards }
    }

    /// Each dead letter, unless a try before stored it; returns them as stored (a try before
    /// fixed when the record was received, and so the counters' expiry day).
    pub async fn put(
        &self,
        rules: &BatchRules,
        dead: &[&DeadLetter],
    ) -> Result<Vec<DeadLetter>, StoreError> {
        try_join_all(dead.iter().map(|d| self.put_one(rules, d))).await
    }

    async fn put_one(&self, rules: &BatchRules, d: &DeadLetter) -> Result<DeadLetter, StoreError> {
        let item = dead_item(d, rules.dead_letter_expiry(d), self.shards);
        self.db.units.item(Kind::List, &item);
        let put = self
            .db
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(pk)");
        if self.db.put_if(put).await? {
            // Its entry in `dead-by-time` was written too.
            self.db.units.item(Kind::List, &item);
            return Ok(d.clone());
        }
        let key = dead_key(&d.source, d.partition, d.offset);
        match self.db.get_consistent(&self.table, &key).await? {
            Some(stored) => dead_from(&stored),
            // Expired and deleted meanwhile: nothing of it is counted any more.
            None => Ok(d.clone()),
        }
    }

    /// A page of live dead letters, most recently received first: every shard, merged.
    pub async fn read(
        &self,
        page: &Page<DeadLetterKey>,
        now: EventTime,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let shards = (0..self.shards).map(|shard| {
            let mut request = self
                .db
                .client
                .query()
                .table_name(&self.table)
                .index_name("dead-by-time")
                .key_condition_expression("dls = :s")
                .expression_attribute_values(":s", s(dead_index_pk(shard)))
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
            self.db.query(request, Some(page.limit), move |i| {
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
}
