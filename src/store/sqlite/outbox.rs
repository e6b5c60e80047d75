//! The outbox on SQLite: the `deliveries` table. Taking due deliveries and recording attempts
//! are writes (one transaction each); listings read the pool.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use uuid::Uuid;

use super::SqliteStore;
use crate::model::EventTime;
use crate::model::alerting::RuleRef;
use crate::store::outbox::{
    Attempted, Delivery, DeliveryFilter, DeliveryKey, DeliveryStatus, Outbox, Outcome, Pending,
};
use crate::store::{Page, StoreError};

#[async_trait]
impl Outbox for SqliteStore {
    async fn take_due(
        &self,
        sink: &str,
        now: EventTime,
        lease_until: EventTime,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let sink = sink.to_owned();
        self.with_writer(move |c| take_due(c, &sink, now, lease_until, limit))
            .await
    }

    async fn record(&self, attempts: Vec<Attempted>) -> Result<(), StoreError> {
        if attempts.is_empty() {
            return Ok(());
        }
        self.with_writer(move |c| record(c, &attempts)).await
    }

    async fn deliveries(
        &self,
        filter: &DeliveryFilter,
        page: Page<DeliveryKey>,
    ) -> Result<Vec<Delivery>, StoreError> {
        let filter = filter.clone();
        self.read(move |c| deliveries(c, &filter, &page)).await
    }

    async fn redeliver(
        &self,
        id: Uuid,
        now: EventTime,
    ) -> Result<Option<DeliveryStatus>, StoreError> {
        self.with_writer(move |c| redeliver(c, id, now)).await
    }

    async fn redeliver_failed(
        &self,
        sink: Option<&str>,
        now: EventTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let sink = sink.map(str::to_owned);
        self.with_writer(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_at = ?1,
                         updated_at = ?1
                     WHERE id IN (SELECT id FROM deliveries
                         WHERE status = 'failed' AND (?2 IS NULL OR sink = ?2) LIMIT ?3)",
                )?
                .execute(params![now.as_millis(), sink, limit as i64])?;
            Ok(n as u64)
        })
        .await
    }

    async fn backlog(
        &self,
        sinks: &[String],
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let names = sinks.to_vec();
        self.read(move |c| {
            let mut count = c.prepare_cached(
                "SELECT count(*) FROM (SELECT 1 FROM deliveries
                 WHERE status = 'pending' AND sink = ?1 LIMIT ?2)",
            )?;
            names
                .into_iter()
                .map(|s| {
                    let n: i64 = count.query_row(params![s, limit as i64], |r| r.get(0))?;
                    Ok((s, n.max(0) as u64))
                })
                .filter(|r| !matches!(r, Ok((_, 0))))
                .collect()
        })
        .await
    }
}

fn take_due(
    c: &mut Connection,
    sink: &str,
    now: EventTime,
    lease_until: EventTime,
    limit: usize,
) -> Result<Vec<Pending>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let due = {
        let mut select = tx.prepare_cached(
            "SELECT id, alert, attempts, created_at FROM deliveries
             WHERE status = 'pending' AND sink = ?1 AND next_at <= ?2
             ORDER BY next_at LIMIT ?3",
        )?;
        let rows = select.query_map(params![sink, now.as_millis(), limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    let mut lease = tx.prepare_cached(
        "UPDATE deliveries SET next_at = ?2 WHERE id = ?1 AND status = 'pending'",
    )?;
    let mut taken = Vec::with_capacity(due.len());
    for (id, alert, attempts, created_at) in due {
        lease.execute(params![id, lease_until.as_millis()])?;
        taken.push(Pending {
            id: parse_id(&id)?,
            sink: sink.to_owned(),
            alert,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            created_at: EventTime::from_millis(created_at),
        });
    }
    drop(lease);
    tx.commit()?;
    Ok(taken)
}

fn record(c: &mut Connection, attempts: &[Attempted]) -> Result<(), StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut update = tx.prepare_cached(
            "UPDATE deliveries SET status = ?2, next_at = ?3, attempts = attempts + 1,
                 last_status = ?4, last_error = ?5, updated_at = ?6
             WHERE id = ?1 AND status = 'pending'",
        )?;
        for a in attempts {
            let (status, next_at) = match a.outcome {
                Outcome::Delivered => (DeliveryStatus::Delivered, a.at),
                Outcome::Retry { next_at } => (DeliveryStatus::Pending, next_at),
                Outcome::Failed => (DeliveryStatus::Failed, a.at),
            };
            update.execute(params![
                a.id.to_string(),
                status.as_str(),
                next_at.as_millis(),
                a.status,
                a.error,
                a.at.as_millis(),
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn redeliver(
    c: &mut Connection,
    id: Uuid,
    now: EventTime,
) -> Result<Option<DeliveryStatus>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id = id.to_string();
    let before: Option<String> = tx
        .query_row("SELECT status FROM deliveries WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(before) = before else {
        return Ok(None);
    };
    let before = parse_status(&before)?;
    if before != DeliveryStatus::Pending {
        tx.execute(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_at = ?2, updated_at = ?2
             WHERE id = ?1",
            params![id, now.as_millis()],
        )?;
    }
    tx.commit()?;
    Ok(Some(before))
}

const DELIVERY_COLUMNS: &str = "id, alert_id, sink, rule, status, attempts, created_at, \
     updated_at, next_at, last_status, last_error, alert";

fn deliveries(
    c: &Connection,
    filter: &DeliveryFilter,
    page: &Page<DeliveryKey>,
) -> Result<Vec<Delivery>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries INDEXED BY deliveries_by_time
         WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR sink = ?2)
           AND (created_at, id) < (?3, ?4)
         ORDER BY created_at DESC, id DESC LIMIT ?5"
    );
    let (at, id) = page.after.as_ref().map_or((i64::MAX, String::new()), |k| {
        (k.created_at.as_millis(), k.id.to_string())
    });
    // Within one millisecond ids sort after "" only when a cursor gave one: the first page
    // takes every row of the newest millisecond.
    let id = if page.after.is_some() {
        id
    } else {
        "~".to_owned()
    };
    let mut select = c.prepare_cached(&sql)?;
    let rows = select.query_map(
        params![
            filter.status.map(DeliveryStatus::as_str),
            filter.sink,
            at,
            id,
            page.limit as i64
        ],
        |r| Ok(delivery_from_row(r)),
    )?;
    rows.map(|r| r?).collect()
}

fn delivery_from_row(r: &Row<'_>) -> Result<Delivery, StoreError> {
    let status = parse_status(&r.get::<_, String>(4)?)?;
    let rule: String = r.get(3)?;
    let alert: String = r.get(11)?;
    Ok(Delivery {
        id: parse_id(&r.get::<_, String>(0)?)?,
        alert_id: parse_id(&r.get::<_, String>(1)?)?,
        sink: r.get(2)?,
        rule: RuleRef::parse(&rule).ok_or_else(|| StoreError::corrupt(format!("rule {rule:?}")))?,
        status,
        attempts: u32::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
        created_at: EventTime::from_millis(r.get(6)?),
        updated_at: EventTime::from_millis(r.get(7)?),
        next_attempt_at: (status == DeliveryStatus::Pending)
            .then(|| r.get(8).map(EventTime::from_millis))
            .transpose()?,
        last_status: r
            .get::<_, Option<i64>>(9)?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.get(10)?,
        alert: serde_json::from_str(&alert).map_err(StoreError::corrupt)?,
    })
}

fn parse_id(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|_| StoreError::corrupt(format!("delivery id {s:?}")))
}

fn parse_status(s: &str) -> Result<DeliveryStatus, StoreError> {
    s.parse()
        .map_err(|_| StoreError::corrupt(format!("delivery status {s:?}")))
}
