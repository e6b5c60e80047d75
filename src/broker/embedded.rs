//! The embedded broker: one in-process log per partition behind a bounded queue.
//!
//! Offsets are assigned per partition as messages are accepted and continue from the
//! positions the store last checkpointed, so a restart on the same data directory never
//! reuses an offset. A full queue is backpressure: [`Producer::send`] waits for room.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc};

use super::{BrokerError, Message, Polled, Producer, Source, partition_for};
use crate::model::{EventTime, Record};

/// Shape of the embedded broker.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub topic: String,
    pub partitions: u32,
    /// Records the queue holds before producers wait.
    pub capacity: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            topic: "city-events".to_owned(),
            partitions: 6,
            capacity: 65_536,
        }
    }
}

struct Log {
    next_offsets: Vec<u64>,
    tx: mpsc::Sender<Record>,
}

/// The producing side; clone it for more producers. The log closes when every producer is
/// dropped, and the source then ends once it has handed out every record.
#[derive(Clone)]
pub struct EmbeddedProducer {
    log: Arc<Mutex<Log>>,
    partitions: u32,
    capacity: usize,
}

/// The consuming side.
pub struct EmbeddedSource {
    topic: String,
    partitions: u32,
    rx: mpsc::Receiver<Record>,
}

/// Opens an embedded broker whose partitions continue at `start_offsets` (partition, next
/// offset); partitions not named start at zero.
pub fn open(
    config: &EmbeddedConfig,
    start_offsets: impl IntoIterator<Item = (u32, u64)>,
) -> (EmbeddedProducer, EmbeddedSource) {
    let partitions = config.partitions.max(1);
    let capacity = config.capacity.max(1);
    let mut next_offsets = vec![0; partitions as usize];
    for (p, offset) in start_offsets {
        if let Some(slot) = next_offsets.get_mut(p as usize) {
            *slot = offset;
        }
    }
    let (tx, rx) = mpsc::channel(capacity);
    let producer = EmbeddedProducer {
        log: Arc::new(Mutex::new(Log { next_offsets, tx })),
        partitions,
        capacity,
    };
    let source = EmbeddedSource {
        topic: config.topic.clone(),
        partitions,
        rx,
    };
    (producer, source)
}

#[async_trait]
impl Producer for EmbeddedProducer {
    async fn send(&self, batch: Vec<Message>) -> Result<(), BrokerError> {
        let mut messages = batch.into_iter().peekable();
        // Offsets are assigned under the lock, in the order records enter the queue.
        let mut log = self.log.lock().await;
        let Log { next_offsets, tx } = &mut *log;
        while messages.peek().is_some() {
            let chunk: Vec<Message> = messages.by_ref().take(self.capacity).collect();
            let permits = tx
                .reserve_many(chunk.len())
                .await
                .map_err(|_| BrokerError::Closed)?;
            let now = EventTime::now();
            for (permit, message) in permits.zip(chunk) {
                let partition = partition_for(&message.key, self.partitions);
                let slot = &mut next_offsets[partition as usize];
                let offset = *slot;
                *slot += 1;
                permit.send(Record::new(partition, offset, Some(now), message.payload));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Source for EmbeddedSource {
    fn name(&self) -> &str {
        &self.topic
    }

    fn partition_of(&self, city: &str) -> u32 {
        partition_for(city.as_bytes(), self.partitions)
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn poll(&mut self, max: usize) -> Result<Polled, BrokerError> {
        let mut records = Vec::with_capacity(max.min(4096));
        match self.rx.recv_many(&mut records, max.max(1)).await {
            0 => Ok(Polled::End),
            _ => Ok(Polled::Records(records)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn msg(city: &str, n: u32) -> Message {
        Message {
            key: Bytes::copy_from_slice(city.as_bytes()),
            payload: Bytes::from(n.to_string()),
        }
    }

    #[tokio::test]
    async fn offsets_are_per_partition_and_continue_from_the_checkpoint() {
        let config = EmbeddedConfig {
            capacity: 4,
            ..EmbeddedConfig::default()
        };
        let sf = partition_for(b"SF", config.partitions);
        let (producer, mut source) = open(&config, [(sf, 100)]);
        let sender = tokio::spawn(async move {
            let batch = (0..10).map(|n| msg("SF", n)).collect();
            producer.send(batch).await.unwrap();
        });
        let mut seen = Vec::new();
        while let Polled::Records(records) = source.poll(3).await.unwrap() {
            assert!(records.len() <= 3);
            seen.extend(records);
        }
        sender.await.unwrap();
        let offsets: Vec<u64> = seen.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (100..110).collect::<Vec<_>>());
        assert!(seen.iter().all(|r| r.partition == sf));
        assert_eq!(source.partition_of("SF"), sf);
    }

    #[tokio::test]
    async fn a_full_queue_makes_the_producer_wait() {
        let config = EmbeddedConfig {
            capacity: 2,
            ..EmbeddedConfig::default()
        };
        let (producer, mut source) = open(&config, []);
        let send = tokio::spawn({
            let producer = producer.clone();
            async move { producer.send((0..5).map(|n| msg("LA", n)).collect()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!send.is_finished(), "five records cannot fit in two slots");
        drop(producer);
        let mut total = 0;
        while let Polled::Records(records) = source.poll(100).await.unwrap() {
            total += records.len();
        }
        send.await.unwrap().unwrap();
        assert_eq!(total, 5);
    }
}
