//! The generator's run loop: records paced against the wall clock (or as fast as the producer
//! takes them, with `burst`), handed to a producer in batches, until the count is reached or
//! the loop is stopped.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::hostile::Records;
use crate::broker::{BrokerError, Message, Producer};

/// Most records the generator hands the broker at once.
const BATCH: usize = 4096;

/// Feeds generated records to `producer` until the count is reached or `stop` fires; returns
/// how many were produced.
pub async fn run(
    mut records: Records,
    producer: &dyn Producer,
    burst: bool,
    stop: CancellationToken,
) -> Result<u64, BrokerError> {
    let config = records.config().clone();
    tracing::info!(seed = config.seed, rate = config.rate, count = ?config.count,
        start = %config.start, burst, hostile = config.hostile, "generator started");
    let started = Instant::now();
    let due = |records: &Records| started + records.due_after(records.emitted());
    let mut done = false;
    while !stop.is_cancelled() && !done {
        if !burst {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(due(&records)) => {}
            }
        }
        let now = Instant::now();
        let mut batch = Vec::new();
        while batch.len() < BATCH && (burst || due(&records) <= now) {
            let Some(record) = records.next() else {
                done = true;
                break;
            };
            batch.push(Message {
                key: record.key,
                payload: record.bytes,
            });
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            producer.send(batch).await?;
            metrics::counter!("citystream_generated_total").increment(n);
        }
    }
    tracing::info!(records = records.emitted(), "generator stopped");
    Ok(records.emitted())
}
