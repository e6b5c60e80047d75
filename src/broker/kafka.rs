//! Kafka through librdkafka: an idempotent producer, and a consumer-group source whose
//! offsets we commit ourselves.
//!
//! Partitioning is librdkafka's `consistent_random` (CRC-32 of the key, the city), the same
//! function as [`partition_for`], so all events of a city share a partition and its watermark.
//! The source commits each partition's next offset once the batch that reached it is stored.
//! Whoever owns the partition next (after a crash or a rebalance) starts at the committed
//! offset and skips what the store's checkpoint already covers. Rebalances arrive in-band
//! ([`Polled::Revoked`]), so the processor writes what it took from a partition before it
//! forgets it.
//!
//! Every publish waits for the broker's acknowledgement. A failure that a retry can cure
//! (a broker down, a leader moving) is retried with backoff; one that cannot (a message over
//! the broker's size limit, a missing authorization) is returned as such: the dead-letter
//! topic then gets the record's first KiB instead, and if even that is refused the dead
//! letter is reported and left to the store, so a partition never stalls on it.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{AppendError, BrokerError, Durable, Message, Polled, Producer, Source, partition_for};
use crate::model::{Checkpoint, DEAD_LETTER_PREFIX_BYTES, DeadLetter, EventTime, Record};

/// Where and how to reach Kafka.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`
    pub brokers: String,
    pub topic: String,
    pub dlq_topic: String,
    pub group: String,
    /// Partitions of the topics when they are created.
    pub partitions: i32,
    pub replication_factor: i32,
    /// Retention of `city-events` when it is created (the seed's 24 h).
    pub retention: Duration,
    /// How long the group waits for a silent processor before it moves its partitions.
    pub session_timeout: Duration,
    /// Further librdkafka properties (`security.protocol`, `sasl.mechanism`, …), applied last.
    pub options: Vec<(String, String)>,
}

impl KafkaConfig {
    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "citystream");
        config
    }

    /// The user's `--kafka-option`s, applied last so that they win.
    fn with_options<'a>(&self, config: &'a mut ClientConfig) -> &'a mut ClientConfig {
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config
    }
}

fn kafka(context: &'static str) -> impl FnOnce(KafkaError) -> BrokerError {
    move |source| BrokerError::Kafka { context, source }
}

/// Creates `city-events` and its dead-letter topic when they are missing (not every broker
/// auto-creates topics). Existing topics are left as they are.
pub async fn ensure_topics(config: &KafkaConfig) -> Result<(), BrokerError> {
    let admin: AdminClient<DefaultClientContext> = config
        .with_options(&mut config.client())
        .create()
        .map_err(kafka("creating the admin client"))?;
    let retention = config.retention.as_millis().to_string();
    let topics = [
        NewTopic::new(
            &config.topic,
            config.partitions,
            TopicReplication::Fixed(config.replication_factor),
        )
        .set("retention.ms", &retention),
        NewTopic::new(
            &config.dlq_topic,
            config.partitions,
            TopicReplication::Fixed(config.replication_factor),
        ),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(kafka("creating topics"))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, "topic created"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic, "topic exists")
            }
            Err((topic, code)) => {
                tracing::warn!(topic, error = %code, "topic not created; relying on the broker");
            }
        }
    }
    Ok(())
}

fn producer(config: &KafkaConfig) -> Result<FutureProducer, BrokerError> {
    let mut client = config.client();
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("partitioner", "consistent_random");
    config
        .with_options(&mut client)
        .create()
        .map_err(kafka("creating the producer"))
}

/// One message on its way to a topic.
struct Outgoing<'a> {
    key: Option<&'a [u8]>,
    payload: &'a [u8],
    headers: Option<OwnedHeaders>,
}

/// Whether no retry can get a message with this error through.
fn permanent(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::InvalidRecord
                | C::MessageBatchTooLarge
                | C::InvalidTopic
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::PolicyViolation
        )
    )
}

/// Sends every message and waits until the broker has acknowledged all of them. A full local
/// queue is waited out (backpressure); a failed delivery is counted and sent again with
/// backoff. Returns the messages no retry can get through, with their errors.
async fn deliver(
    producer: &FutureProducer,
    topic: &str,
    messages: &[Outgoing<'_>],
) -> Vec<(usize, KafkaError)> {
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    let mut refused = Vec::new();
    let mut backoff = Duration::from_millis(100);
    while !pending.is_empty() {
        let started = std::time::Instant::now();
        let mut deliveries = Vec::with_capacity(pending.len());
        for &i in &pending {
            match queue(producer, topic, &messages[i]).await {
                Ok(delivery) => deliveries.push((i, delivery)),
                Err(error) if permanent(&error) => refused.push((i, error)),
                Err(error) => deliveries.push((i, Box::pin(async move { Ok(Err(error)) }))),
            }
        }
        let mut failed = Vec::new();
        let mut acknowledged = 0u64;
        for (i, delivery) in deliveries {
            match delivery.await {
                Ok(Ok(())) => acknowledged += 1,
                Ok(Err(error)) if permanent(&error) => refused.push((i, error)),
                Ok(Err(error)) => {
                    metrics::counter!("citystream_kafka_delivery_failures_total", "topic" => topic.to_owned())
                        .increment(1);
                    tracing::warn!(%error, topic, "delivery failed; sending again");
                    failed.push(i);
                }
                Err(_) => failed.push(i),
            }
        }
        metrics::histogram!("citystream_kafka_send_seconds", "topic" => topic.to_owned())
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("citystream_kafka_sent_total", "topic" => topic.to_owned())
            .increment(acknowledged);
        if !failed.is_empty() {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        pending = failed;
    }
    refused
}

/// A delivery report: `Ok(Ok(()))` once acknowledged.
type Delivery =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Result<(), KafkaError>, ()>> + Send>>;

/// Queues one message, waiting while librdkafka's local queue is full.
async fn queue(
    producer: &FutureProducer,
    topic: &str,
    m: &Outgoing<'_>,
) -> Result<Delivery, KafkaError> {
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(m.payload);
    if let Some(key) = m.key {
        record = record.key(key);
    }
    if let Some(headers) = &m.headers {
        record = record.headers(headers.clone());
    }
    loop {
        match producer.send_result(record) {
            Ok(delivery) => {
                return Ok(Box::pin(async move {
                    match delivery.await {
                        Ok(Ok(_)) => Ok(Ok(())),
                        Ok(Err((error, _))) => Ok(Err(error)),
                        Err(_) => Err(()),
                    }
                }));
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// Publishes events to `city-events`, keyed by city.
pub struct KafkaProducer {
    producer: FutureProducer,
    topic: String,
}

impl KafkaProducer {
    pub fn new(config: &KafkaConfig) -> Result<Self, BrokerError> {
        Ok(KafkaProducer {
            producer: producer(config)?,
            topic: config.topic.clone(),
        })
    }
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn send(&self, batch: Vec<Message>) -> Result<(), BrokerError> {
        let messages: Vec<Outgoing<'_>> = batch
            .iter()
            .map(|m| Outgoing {
                key: Some(&m.key),
                payload: &m.payload,
                headers: None,
            })
            .collect();
        match deliver(&self.producer, &self.topic, &messages).await.pop() {
            None => Ok(()),
            Some((_, source)) => Err(BrokerError::Kafka {
                context: "publishing an event the broker refuses",
                source,
            }),
        }
    }
}

#[async_trait]
impl Durable for KafkaProducer {
    /// Acknowledged by every in-sync replica (`acks=all`), within `wait`; a full local queue
    /// waits inside it, so it ends as [`AppendError::NotYet`] rather than [`AppendError::Full`].
    async fn append(&self, batch: Vec<Message>, wait: Duration) -> Result<(), AppendError> {
        match tokio::time::timeout(wait, self.send(batch)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AppendError::Refused(e.to_string())),
            Err(_) => Err(AppendError::NotYet(wait)),
        }
    }
}

/// A partition assignment change, noted by librdkafka's callbacks and handed to the
/// processor in-band.
#[derive(Debug)]
enum Change {
    Assigned(Vec<u32>),
    Revoked(Vec<u32>),
}

/// Receives librdkafka's callbacks.
struct SourceContext {
    topic: String,
    changes: Arc<Mutex<VecDeque<Change>>>,
}

impl SourceContext {
    fn partitions(&self, list: &TopicPartitionList) -> Vec<u32> {
        list.elements_for_topic(&self.topic)
            .iter()
            .filter_map(|e| u32::try_from(e.partition()).ok())
            .collect()
    }

    fn push(&self, change: Change) {
        if let Ok(mut changes) = self.changes.lock() {
            changes.push_back(change);
        }
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        for (partition, p) in &topic.partitions {
            if *partition >= 0 && p.consumer_lag >= 0 {
                metrics::gauge!("citystream_consumer_lag", "partition" => partition.to_string())
                    .set(p.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions = self.partitions(list);
            tracing::info!(?partitions, "partitions revoked");
            self.push(Change::Revoked(partitions));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = self.partitions(list);
                tracing::info!(?partitions, "partitions assigned");
                self.push(Change::Assigned(partitions));
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(error) = result {
            metrics::counter!("citystream_kafka_commit_failures_total").increment(1);
            tracing::warn!(%error, "offset commit failed; the next one covers it");
        }
    }
}

/// A dead letter on its way to the dead-letter topic: `payload` (all the source kept of the
/// record, or less), with where it came from and why in headers.
fn dead_letter<'a>(d: &'a DeadLetter, payload: &'a [u8]) -> Outgoing<'a> {
    fn header<'v>(key: &'v str, value: &'v str) -> Header<'v, &'v [u8]> {
        Header {
            key,
            value: Some(value.as_bytes()),
        }
    }
    let truncated = if payload.len() < d.payload_len {
        "true"
    } else {
        "false"
    };
    Outgoing {
        key: None,
        payload,
        headers: Some(
            OwnedHeaders::new()
                .insert(header("citystream-reason", &d.reason))
                .insert(header("citystream-kind", &d.kind))
                .insert(header("citystream-source", &d.source))
                .insert(header("citystream-partition", &d.partition.to_string()))
                .insert(header("citystream-offset", &d.offset.to_string()))
                .insert(header("citystream-payload-len", &d.payload_len.to_string()))
                .insert(header("citystream-truncated", truncated)),
        ),
    }
}

/// A member of the processors' consumer group.
pub struct KafkaSource {
    consumer: StreamConsumer<SourceContext>,
    changes: Arc<Mutex<VecDeque<Change>>>,
    topic: String,
    partitions: u32,
    assigned: BTreeSet<u32>,
    /// A record received while an assignment change was pending; handed out after it.
    held: Option<Record>,
    dlq: FutureProducer,
    dlq_topic: String,
}

impl KafkaSource {
    /// Joins the group and subscribes to the topic.
    pub async fn subscribe(config: &KafkaConfig) -> Result<Self, BrokerError> {
        let changes = Arc::new(Mutex::new(VecDeque::new()));
        let context = SourceContext {
            topic: config.topic.clone(),
            changes: changes.clone(),
        };
        let mut client = config.client();
        client
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "1000")
            // Also the rebalance timeout: how long a rebalance waits for a member that died
            // without leaving the group.
            .set(
                "max.poll.interval.ms",
                (config.session_timeout.as_millis() * 2)
                    .max(10_000)
                    .to_string(),
            )
            .set("statistics.interval.ms", "5000");
        let consumer: StreamConsumer<SourceContext> = config
            .with_options(&mut client)
            .create_with_context(context)
            .map_err(kafka("creating the consumer"))?;
        consumer
            .subscribe(&[&config.topic])
            .map_err(kafka("subscribing"))?;
        let metadata = consumer
            .fetch_metadata(Some(&config.topic), Duration::from_secs(30))
            .map_err(kafka("reading topic metadata"))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == config.topic)
            .map_or(0, |t| t.partitions().len() as u32);
        tracing::info!(topic = %config.topic, group = %config.group, partitions, "joined the consumer group");
        Ok(KafkaSource {
            consumer,
            changes,
            topic: config.topic.clone(),
            partitions: partitions.max(1),
            assigned: BTreeSet::new(),
            held: None,
            dlq: producer(config)?,
            dlq_topic: config.dlq_topic.clone(),
        })
    }

    fn next_change(&self) -> Option<Change> {
        self.changes.lock().ok().and_then(|mut c| c.pop_front())
    }

    fn change_pending(&self) -> bool {
        self.changes.lock().is_ok_and(|c| !c.is_empty())
    }

    /// The record of a message; of an oversized one only the head is copied.
    fn record(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<Record> {
        Some(Record::head(
            u32::try_from(message.partition()).ok()?,
            u64::try_from(message.offset()).ok()?,
            message.timestamp().to_millis().map(EventTime::from_millis),
            message.payload().unwrap_or_default(),
        ))
    }
}

#[async_trait]
impl Source for KafkaSource {
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
        let mut records = Vec::new();
        loop {
            while let Some(change) = self.next_change() {
                match change {
                    Change::Assigned(partitions) => self.assigned.extend(partitions),
                    Change::Revoked(partitions) => {
                        for p in &partitions {
                            self.assigned.remove(p);
                        }
                        // A held record came after every change queued so far: it is judged
                        // against the assignment once they are all applied, next poll.
                        return Ok(Polled::Revoked(partitions));
                    }
                }
            }
            if let Some(record) = self.held.take()
                && self.assigned.contains(&record.partition)
            {
                records.push(record);
            }
            while records.len() < max.max(1) {
                let received = if records.is_empty() {
                    Some(self.consumer.recv().await)
                } else {
                    self.consumer.recv().now_or_never()
                };
                let Some(received) = received else { break };
                let record = match received {
                    Ok(message) => Self::record(&message),
                    Err(error) => {
                        metrics::counter!("citystream_kafka_consume_errors_total").increment(1);
                        tracing::warn!(%error, "consume error");
                        None
                    }
                };
                if self.change_pending() {
                    // The assignment changed while this record was on its way: apply the change
                    // first, then hand the record out if it is still ours.
                    self.held = record;
                    break;
                }
                if let Some(record) = record.filter(|r| self.assigned.contains(&r.partition)) {
                    records.push(record);
                }
            }
            if !records.is_empty() {
                return Ok(Polled::Records(records));
            }
        }
    }

    async fn dead_letters(&mut self, letters: &[DeadLetter]) -> Result<(), BrokerError> {
        let whole: Vec<Outgoing<'_>> = letters.iter().map(|d| dead_letter(d, &d.payload)).collect();
        let refused = deliver(&self.dlq, &self.dlq_topic, &whole).await;
        if refused.is_empty() {
            return Ok(());
        }
        // The broker refuses these as they are: send their first KiB, marked truncated.
        let heads: Vec<Outgoing<'_>> = refused
            .iter()
            .map(|(i, _)| {
                let d = &letters[*i];
                dead_letter(
                    d,
                    &d.payload[..d.payload.len().min(DEAD_LETTER_PREFIX_BYTES)],
                )
            })
            .collect();
        for (j, error) in deliver(&self.dlq, &self.dlq_topic, &heads).await {
            let d = &letters[refused[j].0];
            metrics::counter!("citystream_dlq_refused_total").increment(1);
            tracing::error!(%error, topic = %self.dlq_topic, source = %d.source,
                partition = d.partition, offset = d.offset, kind = %d.kind,
                "the dead-letter topic refuses this dead letter even truncated; it stays in the store only");
        }
        Ok(())
    }

    async fn commit(&mut self, positions: &[Checkpoint]) -> Result<(), BrokerError> {
        let mut list = TopicPartitionList::new();
        for c in positions
            .iter()
            .filter(|c| self.assigned.contains(&c.partition))
        {
            let offset = i64::try_from(c.next_offset).unwrap_or(i64::MAX);
            list.add_partition_offset(&self.topic, c.partition as i32, Offset::Offset(offset))
                .map_err(kafka("building the commit"))?;
        }
        if list.count() > 0 {
            self.consumer
                .commit(&list, CommitMode::Async)
                .map_err(kafka("committing offsets"))?;
        }
        Ok(())
    }
}
