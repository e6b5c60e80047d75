//! Where events travel between the generator and the processor.
//!
//! A broker is a set of partitioned logs. Producers append [`Message`]s keyed by city, so
//! all events of one city share a partition (and so a watermark); a [`Source`] hands the
//! processor [`Record`]s in log order and is told which positions are safely stored.
//!
//! - [`embedded`]: an in-process, bounded queue (the default): a full queue makes producers
//!   wait, it never drops.
//! - [`file`]: JSON lines from a file or standard input, for replays and pipes.
//! - [`kafka`]: Apache Kafka (or any Kafka-protocol broker) through librdkafka, one consumer
//!   group shared by any number of processors.
//! - [`http`]: a producer that sends to a running CityStream's `POST /api/v1/events`.
//!
//! [`Durable`] is what HTTP ingest appends through: the embedded queue answers once the store
//! holds a batch, Kafka once every in-sync replica does.

pub mod embedded;
pub mod file;
pub mod http;
pub mod journal;
pub mod kafka;

use async_trait::async_trait;
use bytes::Bytes;

use crate::model::{Checkpoint, DeadLetter, Record};

/// One message for a broker: the partitioning key (the city) and the wire-format payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub key: Bytes,
    pub payload: Bytes,
}

/// What a source yields on a poll.
#[derive(Debug)]
pub enum Polled {
    /// Records in log order within each partition.
    Records(Vec<Record>),
    /// The source is finished: every record was handed out.
    End,
    /// These partitions are no longer this processor's: write what was taken from them,
    /// then forget their state.
    Revoked(Vec<u32>),
}

/// Errors at the broker boundary.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the broker is closed")]
    Closed,
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("http: {0}")]
    Http(String),
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

/// Appends messages to the `city-events` log.
#[async_trait]
pub trait Producer: Send + Sync {
    /// Appends a batch, waiting while the broker is full. Returns once every message is
    /// accepted.
    async fn send(&self, batch: Vec<Message>) -> Result<(), BrokerError>;
}

/// Why [`Durable::append`] took nothing, or cannot say the batch is durable.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Nothing was taken: the broker has no room now (the processor is behind).
    #[error("the queue has no room for {0} more records: the processor is behind")]
    Full(usize),
    /// Nothing was taken: the batch is larger than the whole queue, so it can never fit.
    #[error("{records} records are more than the queue holds ({capacity})")]
    TooLarge { records: usize, capacity: usize },
    /// Nothing was taken: the log is closed (the process is stopping, or the stream ended).
    #[error("the event log is closed: the process is stopping, or `up --count` ended its stream")]
    Closed,
    /// The broker refuses a message of the batch for good.
    #[error("the broker refuses the batch: {0}")]
    Refused(String),
    /// The batch was taken but is not known to be durable yet; sending it again is safe.
    #[error("the batch was not durable within {0:?}")]
    NotYet(std::time::Duration),
}

/// Takes batches for a client that waits until they are durable (HTTP ingest).
#[async_trait]
pub trait Durable: Send + Sync {
    /// Appends `batch` and returns once every message of it is durable: in the store (embedded
    /// queue) or acknowledged by every in-sync replica (Kafka). Waits at most `wait`; the
    /// embedded queue does not wait for room (a full queue is [`AppendError::Full`] within
    /// 100 ms), Kafka's local queue does, within `wait`.
    async fn append(
        &self,
        batch: Vec<Message>,
        wait: std::time::Duration,
    ) -> Result<(), AppendError>;
}

/// Hands the processor records, partition by partition in log order.
#[async_trait]
pub trait Source: Send {
    /// The log's name (topic or file): it scopes checkpoints and derived event ids.
    fn name(&self) -> &str;

    /// The partition that holds a city's events.
    fn partition_of(&self, city: &str) -> u32;

    /// How many partitions the log has.
    fn partitions(&self) -> u32;

    /// Waits for records and returns up to `max` of them. Cancel-safe: dropping the future
    /// loses nothing.
    async fn poll(&mut self, max: usize) -> Result<Polled, BrokerError>;

    /// Hands dead letters to the source's dead-letter destination, if it has one: the engine's
    /// before the batch that holds them is written (a crash after the write would skip their
    /// records), those the write itself makes after it; both before the positions that cover
    /// them are committed. A dead letter the destination can never take is reported and
    /// skipped, never retried forever.
    async fn dead_letters(&mut self, _letters: &[DeadLetter]) -> Result<(), BrokerError> {
        Ok(())
    }

    /// The records handed out so far are about to be written to the store. A source that
    /// could not hand them out again after a crash keeps them now (the embedded queue's
    /// journal, on a store that writes a batch in many requests).
    async fn persist(&mut self) -> Result<(), BrokerError> {
        Ok(())
    }

    /// Everything these checkpoints cover is durable in the store.
    async fn commit(&mut self, _positions: &[Checkpoint]) -> Result<(), BrokerError> {
        Ok(())
    }
}

/// The partition of a key: CRC-32 of the key modulo the partition count, as librdkafka's
/// `consistent` partitioner does.
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    crc32fast::hash(key) % partitions.max(1)
}
