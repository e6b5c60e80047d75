//! The embedded queue's journal: the records it handed out whose batch is being written, kept
//! in a file under `--data-dir` until the store has them, so that a restarted `up` hands them
//! out again first, at the same offsets.
//!
//! A store that writes a batch in one transaction (SQLite) needs none: a crash leaves nothing
//! of the batch, and the records are lost with the queue. A store that writes a batch in many
//! requests (DynamoDB) may hold part of it after a crash; writing the same records again
//! completes it exactly once, and numbering new records after them keeps every offset one
//! record's. The processor calls [`Journal::persist`] before each write ([`super::Source::persist`]),
//! so at most one batch is in the file; a commit that covers all of it empties it.
//!
//! Format: per record, little-endian `partition: u32`, `offset: u64`, `timestamp: i64` (ms,
//! `i64::MIN` for none), `size: u64`, `len: u32`, then `len` payload bytes. A torn tail (a
//! crash in the middle of an append) is cut off at open: its batch had not started writing.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::BrokerError;
use crate::model::{Checkpoint, EventTime, Record};

/// Bytes of a record's header in the file.
const HEADER: usize = 4 + 8 + 8 + 8 + 4;

/// Records handed out and not yet committed, in a file.
pub struct Journal {
    path: PathBuf,
    /// `None` only while an append runs on the blocking pool.
    file: Option<File>,
    /// Handed out since the last [`Journal::persist`].
    pending: Vec<Record>,
    /// The highest offset the file holds, per partition.
    written: BTreeMap<u32, u64>,
}

impl Journal {
    /// Where the embedded queue of `topic` keeps its journal under a data directory.
    pub fn path_in(data_dir: &Path, topic: &str) -> PathBuf {
        let name = xxhash_rust::xxh3::xxh3_64(topic.as_bytes());
        data_dir.join("journal").join(format!("{name:016x}.log"))
    }

    /// Opens the journal at `path` (creating it and its directory), with the records it holds
    /// in the order they were handed out.
    pub fn open(path: &Path) -> Result<(Journal, Vec<Record>), BrokerError> {
        let io = |source| BrokerError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let (records, whole) = decode(Bytes::from(bytes));
        // A torn tail goes, or the next append would follow it and be misread.
        file.set_len(whole as u64).map_err(io)?;
        let mut journal = Journal {
            path: path.to_owned(),
            file: Some(file),
            pending: Vec::new(),
            written: BTreeMap::new(),
        };
        journal.keeping(&records);
        Ok((journal, records))
    }

    /// Of the records in the file, only `kept` still wait for a commit (the others are below
    /// the store's checkpoints): the file is emptied once commits cover these.
    pub fn keeping(&mut self, kept: &[Record]) {
        self.written.clear();
        for r in kept {
            let top = self.written.entry(r.partition).or_insert(r.offset);
            *top = (*top).max(r.offset);
        }
    }

    /// Notes records handed out for the next batch.
    pub fn handed_out(&mut self, records: &[Record]) {
        self.pending.extend_from_slice(records);
    }

    /// Appends the records handed out since the last call and waits until they are on disk.
    pub async fn persist(&mut self) -> Result<(), BrokerError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut buf = BytesMut::new();
        for r in self.pending.drain(..) {
            encode(&r, &mut buf);
            let top = self.written.entry(r.partition).or_insert(r.offset);
            *top = (*top).max(r.offset);
        }
        let mut file = self.file.take().ok_or_else(|| self.error(closed()))?;
        let (file, appended) = tokio::task::spawn_blocking(move || {
            let appended = file.write_all(&buf).and_then(|()| file.sync_data());
            (file, appended)
        })
        .await
        .map_err(|e| self.error(std::io::Error::other(e)))?;
        self.file = Some(file);
        appended.map_err(|e| self.error(e))
    }

    /// Empties the file once `positions` cover everything in it. Not synced: records left by
    /// a lost truncation are below the store's checkpoints, and a restart skips them.
    pub fn committed(&mut self, positions: &[Checkpoint]) -> Result<(), BrokerError> {
        for c in positions {
            if self
                .written
                .get(&c.partition)
                .is_some_and(|top| *top < c.next_offset)
            {
                self.written.remove(&c.partition);
            }
        }
        if self.written.is_empty() {
            let file = self.file.as_ref().ok_or_else(|| self.error(closed()))?;
            file.set_len(0).map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    fn error(&self, source: std::io::Error) -> BrokerError {
        BrokerError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }
}

fn closed() -> std::io::Error {
    std::io::Error::other("the journal is closed")
}

fn encode(r: &Record, buf: &mut BytesMut) {
    buf.reserve(HEADER + r.payload.len());
    buf.put_u32_le(r.partition);
    buf.put_u64_le(r.offset);
    buf.put_i64_le(r.timestamp.map_or(i64::MIN, EventTime::as_millis));
    buf.put_u64_le(r.size as u64);
    buf.put_u32_le(r.payload.len() as u32);
    buf.put_slice(&r.payload);
}

/// The whole records in `bytes`, and how many bytes they take; a torn last one is left out.
fn decode(mut bytes: Bytes) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut whole = 0;
    while bytes.len() >= HEADER {
        let mut header = &bytes[..HEADER];
        let partition = header.get_u32_le();
        let offset = header.get_u64_le();
        let timestamp = match header.get_i64_le() {
            i64::MIN => None,
            ms => Some(EventTime::from_millis(ms)),
        };
        let size = header.get_u64_le();
        let len = header.get_u32_le() as usize;
        if bytes.len() < HEADER + len {
            break;
        }
        bytes.advance(HEADER);
        let payload = bytes.split_to(len);
        whole += HEADER + len;
        records.push(Record {
            partition,
            offset,
            timestamp,
            size: usize::try_from(size).unwrap_or(usize::MAX),
            payload,
        });
    }
    (records, whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: u32, offset: u64, payload: &'static [u8]) -> Record {
        Record::new(
            partition,
            offset,
            Some(EventTime::from_millis(1_000)),
            Bytes::from_static(payload),
        )
    }

    fn checkpoint(partition: u32, next_offset: u64) -> Checkpoint {
        Checkpoint {
            source: "city-events".into(),
            partition,
            next_offset,
            max_event_time: None,
        }
    }

    #[tokio::test]
    async fn persisted_records_come_back_until_a_commit_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal").join("q.log");
        let (mut journal, found) = Journal::open(&path).unwrap();
        assert!(found.is_empty());
        let batch = [
            record(0, 7, b"a\nb"),
            record(1, 3, b""),
            record(0, 8, b"{}"),
        ];
        journal.handed_out(&batch);
        journal.persist().await.unwrap();
        journal.handed_out(&[record(2, 0, b"not yet persisted")]);
        drop(journal);

        let (mut journal, found) = Journal::open(&path).unwrap();
        assert_eq!(found, batch.to_vec());
        journal.committed(&[checkpoint(0, 9)]).unwrap();
        assert!(
            std::fs::metadata(&path).unwrap().len() > 0,
            "partition 1 is not covered"
        );
        journal.committed(&[checkpoint(1, 4)]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert!(Journal::open(&path).unwrap().1.is_empty());
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_off_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.log");
        let mut buf = BytesMut::new();
        encode(&record(0, 1, b"whole"), &mut buf);
        encode(&record(0, 2, b"torn record"), &mut buf);
        std::fs::write(&path, &buf[..buf.len() - 3]).unwrap();

        let (mut journal, found) = Journal::open(&path).unwrap();
        assert_eq!(found, vec![record(0, 1, b"whole")]);
        journal.handed_out(&[record(0, 2, b"next")]);
        journal.persist().await.unwrap();
        let (_, found) = Journal::open(&path).unwrap();
        assert_eq!(found, vec![record(0, 1, b"whole"), record(0, 2, b"next")]);
    }
}
