//! The embedded broker: one in-process log per partition behind a bounded queue.
//!
//! Offsets are assigned per partition as messages are accepted and continue from the
//! positions the store last checkpointed. A full queue is backpressure: [`Producer::send`]
//! waits for room. The queue is in memory: a crash loses what it holds. With a [`Journal`]
//! the records of the batch being written survive it, and the restarted queue hands them out
//! again first, at their offsets, before numbering new records after them.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc, watch};

use super::journal::Journal;
use super::{AppendError, BrokerError, Durable, Message, Polled, Producer, Source, partition_for};
use crate::model::{Checkpoint, EventTime, Record};

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
    capacity: usize,
    /// Per partition, the offset below which the store holds every record.
    committed: watch::Receiver<Vec<u64>>,
}

/// A producer that does not hold the log open: once every [`EmbeddedProducer`] is gone (the
/// generator finished), it takes nothing more. HTTP ingest appends through one.
#[derive(Clone)]
pub struct WeakProducer {
    log: Weak<Mutex<Log>>,
    capacity: usize,
    committed: watch::Receiver<Vec<u64>>,
}

/// The consuming side.
pub struct EmbeddedSource {
    topic: String,
    partitions: u32,
    rx: mpsc::Receiver<Record>,
    /// Records a journal kept from before a crash, handed out before any new one.
    replay: VecDeque<Record>,
    journal: Option<Journal>,
    committed: watch::Sender<Vec<u64>>,
}

/// Opens an embedded broker whose partitions continue at `start_offsets` (partition, next
/// offset); partitions not named start at zero.
pub fn open(
    config: &EmbeddedConfig,
    start_offsets: impl IntoIterator<Item = (u32, u64)>,
) -> (EmbeddedProducer, EmbeddedSource) {
    open_journaled(config, start_offsets, None)
}

/// Like [`open`], with a journal and the records it held: those the store has not checkpointed
/// are handed out first, and new records are numbered after them.
pub fn open_journaled(
    config: &EmbeddedConfig,
    start_offsets: impl IntoIterator<Item = (u32, u64)>,
    journal: Option<(Journal, Vec<Record>)>,
) -> (EmbeddedProducer, EmbeddedSource) {
    let partitions = config.partitions.max(1);
    let capacity = config.capacity.max(1);
    let mut next_offsets = vec![0; partitions as usize];
    for (p, offset) in start_offsets {
        if let Some(slot) = next_offsets.get_mut(p as usize) {
            *slot = offset;
        }
    }
    // What the store holds: everything below the checkpoints.
    let stored = next_offsets.clone();
    let (mut journal, found) = journal.unzip();
    let mut replay = VecDeque::new();
    for r in found.into_iter().flatten() {
        let Some(next) = next_offsets.get_mut(r.partition as usize) else {
            continue;
        };
        // Below the checkpoint: stored already. At it or above: the batch a crash cut short.
        if r.offset >= *next {
            *next = r.offset + 1;
            replay.push_back(r);
        }
    }
    if let Some(journal) = &mut journal {
        journal.keeping(replay.make_contiguous());
    }
    let (tx, rx) = mpsc::channel(capacity);
    let (committed, watching) = watch::channel(stored);
    let producer = EmbeddedProducer {
        log: Arc::new(Mutex::new(Log { next_offsets, tx })),
        capacity,
        committed: watching,
    };
    let source = EmbeddedSource {
        topic: config.topic.clone(),
        partitions,
        rx,
        replay,
        journal,
        committed,
    };
    (producer, source)
}

impl Log {
    /// Numbers `messages` and queues them, each into a slot reserved for it; returns the
    /// highest offset each partition took. Offsets are assigned under the log's lock, in the
    /// order records enter the queue.
    fn push<'a>(
        &mut self,
        permits: impl Iterator<Item = mpsc::Permit<'a, Record>>,
        messages: Vec<Message>,
    ) -> Vec<Option<u64>> {
        let partitions = self.next_offsets.len() as u32;
        let mut last = vec![None; self.next_offsets.len()];
        let now = EventTime::now();
        for (permit, message) in permits.zip(messages) {
            let partition = partition_for(&message.key, partitions);
            let slot = &mut self.next_offsets[partition as usize];
            last[partition as usize] = Some(*slot);
            permit.send(Record::new(partition, *slot, Some(now), message.payload));
            *slot += 1;
        }
        last
    }
}

#[async_trait]
impl Producer for EmbeddedProducer {
    async fn send(&self, batch: Vec<Message>) -> Result<(), BrokerError> {
        let mut messages = batch.into_iter().peekable();
        let mut log = self.log.lock().await;
        while messages.peek().is_some() {
            let chunk: Vec<Message> = messages.by_ref().take(self.capacity).collect();
            let tx = log.tx.clone();
            let permits = tx
                .reserve_many(chunk.len())
                .await
                .map_err(|_| BrokerError::Closed)?;
            log.push(permits, chunk);
        }
        Ok(())
    }
}

impl EmbeddedProducer {
    /// A producer for HTTP ingest that does not keep the log open.
    pub fn downgrade(&self) -> WeakProducer {
        WeakProducer {
            log: Arc::downgrade(&self.log),
            capacity: self.capacity,
            committed: self.committed.clone(),
        }
    }
}

/// Longest an append waits for the log's lock: the lock is held for microseconds, unless the
/// generator holds it while it waits for room, and then there is none.
const LOCK_WAIT: Duration = Duration::from_millis(100);

#[async_trait]
impl Durable for WeakProducer {
    async fn append(&self, batch: Vec<Message>, wait: Duration) -> Result<(), AppendError> {
        if batch.len() > self.capacity {
            return Err(AppendError::TooLarge {
                records: batch.len(),
                capacity: self.capacity,
            });
        }
        let deadline = tokio::time::Instant::now() + wait;
        let log = self.log.upgrade().ok_or(AppendError::Closed)?;
        let mut log = tokio::time::timeout(LOCK_WAIT.min(wait), log.lock())
            .await
            .map_err(|_| AppendError::Full(batch.len()))?;
        let tx = log.tx.clone();
        let permits = tx.try_reserve_many(batch.len()).map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => AppendError::Full(batch.len()),
            mpsc::error::TrySendError::Closed(()) => AppendError::Closed,
        })?;
        // The highest offset taken per partition: durable once the store's position passes it.
        let last = log.push(permits, batch);
        drop(log);
        let stored = |committed: &Vec<u64>| {
            last.iter()
                .zip(committed)
                .all(|(last, next)| last.is_none_or(|o| o < *next))
        };
        let mut committed = self.committed.clone();
        match tokio::time::timeout_at(deadline, committed.wait_for(stored)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(AppendError::NotYet(wait)),
        }
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
        if !self.replay.is_empty() {
            let n = max.clamp(1, self.replay.len());
            // Already in the journal's file: not noted again.
            return Ok(Polled::Records(self.replay.drain(..n).collect()));
        }
        let mut records = Vec::with_capacity(max.min(4096));
        if self.rx.recv_many(&mut records, max.max(1)).await == 0 {
            return Ok(Polled::End);
        }
        if let Some(journal) = &mut self.journal {
            journal.handed_out(&records);
        }
        Ok(Polled::Records(records))
    }

    async fn persist(&mut self) -> Result<(), BrokerError> {
        match &mut self.journal {
            Some(journal) => journal.persist().await,
            None => Ok(()),
        }
    }

    async fn commit(&mut self, positions: &[Checkpoint]) -> Result<(), BrokerError> {
        if let Some(journal) = &mut self.journal {
            journal.committed(positions)?;
        }
        self.committed.send_modify(|stored| {
            for c in positions {
                if let Some(slot) = stored.get_mut(c.partition as usize) {
                    *slot = (*slot).max(c.next_offset);
                }
            }
        });
        Ok(())
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
    async fn a_journal_hands_out_the_uncommitted_batch_again_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.log");
        let config = EmbeddedConfig::default();
        let sf = partition_for(b"SF", config.partitions);
        let (producer, mut source) =
            open_journaled(&config, [], Some(Journal::open(&path).unwrap()));
        producer
            .send((0..5).map(|n| msg("SF", n)).collect())
            .await
            .unwrap();
        let Polled::Records(first) = source.poll(5).await.unwrap() else {
            panic!("records");
        };
        source.persist().await.unwrap();
        drop((producer, source)); // a crash: offsets 0..5 were being written

        // The store checkpointed offset 2 before the crash.
        let (producer, mut source) =
            open_journaled(&config, [(sf, 2)], Some(Journal::open(&path).unwrap()));
        producer.send(vec![msg("SF", 9)]).await.unwrap();
        drop(producer);
        let mut seen = Vec::new();
        while let Polled::Records(records) = source.poll(10).await.unwrap() {
            seen.extend(records);
        }
        assert_eq!(seen[..3], first[2..], "the uncommitted records, first");
        assert_eq!(seen[3].offset, 5, "new records after them");
        assert_eq!(seen[3].payload, Bytes::from("9"));
        source.persist().await.unwrap();
        let stored = Checkpoint {
            source: config.topic.clone(),
            partition: sf,
            next_offset: 6,
            max_event_time: None,
        };
        source.commit(&[stored]).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "all committed");
    }

    fn stored(partition: u32, next_offset: u64) -> Checkpoint {
        Checkpoint {
            source: "city-events".to_owned(),
            partition,
            next_offset,
            max_event_time: None,
        }
    }

    #[tokio::test]
    async fn an_append_answers_once_the_store_holds_it_and_never_waits_for_room() {
        let config = EmbeddedConfig {
            capacity: 4,
            ..EmbeddedConfig::default()
        };
        let sf = partition_for(b"SF", config.partitions);
        let (producer, mut source) = open(&config, [(sf, 10)]);
        let ingest = producer.downgrade();
        let wait = Duration::from_secs(5);
        let append = tokio::spawn({
            let ingest = ingest.clone();
            async move {
                ingest
                    .append((0..3).map(|n| msg("SF", n)).collect(), wait)
                    .await
            }
        });
        let Polled::Records(records) = source.poll(10).await.expect("poll") else {
            panic!("records");
        };
        assert_eq!(records.len(), 3);
        source.commit(&[stored(sf, 12)]).await.expect("commit");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!append.is_finished(), "offset 12 is not stored yet");
        source.commit(&[stored(sf, 13)]).await.expect("commit");
        append.await.expect("task").expect("durable");

        // Taken, never stored within the wait: not known to be durable.
        let late = ingest.append(vec![msg("SF", 9)], Duration::from_millis(50));
        assert!(matches!(late.await, Err(AppendError::NotYet(_))));
        // Five never fit a queue of four; one does not fit a full queue: refused at once.
        let five = ingest.append((0..5).map(|n| msg("SF", n)).collect(), wait);
        assert!(matches!(five.await, Err(AppendError::TooLarge { .. })));
        producer
            .send((0..3).map(|n| msg("LA", n)).collect())
            .await
            .expect("send");
        let started = std::time::Instant::now();
        let full = ingest.append(vec![msg("SF", 1)], wait);
        assert!(matches!(full.await, Err(AppendError::Full(1))));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no wait for room"
        );
        // Once every producer is gone, the log takes nothing more.
        drop(producer);
        let closed = ingest.append(vec![msg("SF", 1)], wait);
        assert!(matches!(closed.await, Err(AppendError::Closed)));
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
