//! JSON lines from a file or from standard input, read as a one-partition log whose offsets
//! are line numbers.
//!
//! A file is a fixed log: a re-run reads it from the start and the processor skips the lines
//! its checkpoint already covers. Standard input is an open-ended stream: its offsets
//! continue from the checkpoint, so a new pipe appends to what earlier ones delivered.
//!
//! A line is read in bounded memory: of a line longer than [`MAX_RECORD_BYTES`] only the head
//! is kept (the rest is counted and skipped as it streams by), and it becomes one record that
//! the engine turns into a `too_large` dead letter. A 3 GB input without a newline costs what
//! a 64 KiB line does.

use std::collections::VecDeque;
use std::path::Path;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{BrokerError, Polled, Source};
use crate::model::{Checkpoint, MAX_RECORD_BYTES, Record};

/// Bytes asked of the input at a time: a file's reads land in one buffer, which its lines'
/// records then share.
const READ_SIZE: usize = 2 << 20;

/// A line that spans reads: its head (at most [`MAX_RECORD_BYTES`]), its full length so far,
/// and whether all of it is whitespace.
#[derive(Debug, Default)]
struct Line {
    head: Vec<u8>,
    len: usize,
    blank: bool,
}

impl Line {
    fn new() -> Self {
        Line {
            blank: true,
            ..Line::default()
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_RECORD_BYTES.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.len += bytes.len();
        self.blank = self.blank && bytes.iter().all(u8::is_ascii_whitespace);
    }
}

/// The record a whole line is (its head and its full length), or `None` for a blank line
/// (which still takes its offset). A `\r` before the newline is not part of it.
fn record(mut head: Bytes, mut len: usize, blank: bool, offset: u64) -> Option<Record> {
    if blank {
        return None;
    }
    if len == head.len() && head.last() == Some(&b'\r') {
        head.truncate(head.len() - 1);
        len -= 1;
    }
    Some(Record {
        partition: 0,
        offset,
        timestamp: None,
        size: len,
        payload: head,
    })
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// The source name under which standard input is checkpointed.
pub const STDIN_SOURCE: &str = "stdin";

/// Reads newline-delimited records. Blank lines take an offset but are not records.
///
/// Each read lands in a fresh buffer, and a line inside it becomes a record that shares it: no
/// line is copied, and a buffer is freed once the last of its records is.
pub struct LineSource {
    name: String,
    reader: Box<dyn AsyncRead + Send + Unpin>,
    /// The buffer being read into.
    buf: BytesMut,
    next_offset: u64,
    /// The line that spans reads; it outlives a cancelled poll.
    line: Line,
    /// Records read and not handed out yet.
    taken: VecDeque<Record>,
    ended: bool,
}

impl LineSource {
    /// A JSON-lines file; offsets start at zero.
    pub async fn open(path: &Path) -> Result<Self, BrokerError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|source| BrokerError::Io {
                path: path.display().to_string(),
                source,
            })?;
        let name = match std::fs::canonicalize(path) {
            Ok(p) => format!("file:{}", p.display()),
            Err(_) => format!("file:{}", path.display()),
        };
        // tokio's file reads a few hundred KiB at a time by default.
        file.set_max_buf_size(READ_SIZE);
        Ok(Self::from_reader(name, file, 0))
    }

    /// Standard input; its offsets continue after its stored checkpoint, so that the lines of
    /// this run are numbered after those the runs before stored, and none is taken for one of
    /// them.
    pub fn stdin(checkpoint: Option<&Checkpoint>) -> Self {
        let next_offset = checkpoint.map_or(0, |c| c.next_offset);
        Self::from_reader(STDIN_SOURCE.to_owned(), tokio::io::stdin(), next_offset)
    }

    pub fn from_reader(
        name: String,
        reader: impl AsyncRead + Send + Unpin + 'static,
        next_offset: u64,
    ) -> Self {
        LineSource {
            name,
            reader: Box::new(reader),
            buf: BytesMut::new(),
            next_offset,
            line: Line::new(),
            taken: VecDeque::new(),
            ended: false,
        }
    }

    fn io_error(&self, source: std::io::Error) -> BrokerError {
        BrokerError::Io {
            path: self.name.clone(),
            source,
        }
    }
}

#[async_trait]
impl Source for LineSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn partition_of(&self, _city: &str) -> u32 {
        0
    }

    fn partitions(&self) -> u32 {
        1
    }

    async fn poll(&mut self, max: usize) -> Result<Polled, BrokerError> {
        // Records read so far live in `self`, so a poll dropped while it waits for more input
        // loses none of them: the next poll hands them out. Wait for the first line; after it,
        // hand out what one read gave.
        while !self.ended && self.taken.is_empty() {
            self.read_some().await?;
        }
        if self.taken.is_empty() {
            return Ok(Polled::End);
        }
        let n = self.taken.len().min(max.max(1));
        Ok(Polled::Records(self.taken.drain(..n).collect()))
    }
}

impl LineSource {
    /// Reads once and splits what came into lines. `read_buf` either reads or, when the poll is
    /// dropped, leaves nothing behind, and nothing is awaited after it: this is cancel-safe.
    async fn read_some(&mut self) -> Result<(), BrokerError> {
        self.buf.reserve(READ_SIZE);
        match self.reader.read_buf(&mut self.buf).await {
            Ok(0) => {
                self.ended = true;
                if self.line.len > 0 {
                    self.end_spanning_line();
                }
            }
            Ok(_) => {
                let read = self.buf.split().freeze();
                self.split_lines(read);
            }
            Err(e) => return Err(self.io_error(e)),
        }
        Ok(())
    }

    /// Each whole line in `read` becomes a record sharing it; the line it ends in carries on.
    fn split_lines(&mut self, read: Bytes) {
        let mut from = 0;
        for at in memchr::memchr_iter(b'\n', &read) {
            let bytes = &read[from..at];
            if self.line.len > 0 {
                self.line.push(bytes);
                self.end_spanning_line();
            } else {
                let head = read.slice(from..at.min(from + MAX_RECORD_BYTES));
                self.end_line(head, bytes.len(), is_blank(bytes));
            }
            from = at + 1;
        }
        self.line.push(&read[from..]);
    }

    fn end_spanning_line(&mut self) {
        let line = std::mem::replace(&mut self.line, Line::new());
        self.end_line(Bytes::from(line.head), line.len, line.blank);
    }

    fn end_line(&mut self, head: Bytes, len: usize, blank: bool) {
        let offset = self.next_offset;
        self.next_offset += 1;
        self.taken.extend(record(head, len, blank, offset));
    }
}

/// Writes each message's payload as one line: the `produce` role without a broker.
pub struct LineWriter<W> {
    out: tokio::sync::Mutex<W>,
}

impl<W: tokio::io::AsyncWrite + Send + Unpin> LineWriter<W> {
    pub fn new(out: W) -> Self {
        LineWriter {
            out: tokio::sync::Mutex::new(out),
        }
    }
}

#[async_trait]
impl<W: tokio::io::AsyncWrite + Send + Unpin> super::Producer for LineWriter<W> {
    async fn send(&self, batch: Vec<super::Message>) -> Result<(), BrokerError> {
        use tokio::io::AsyncWriteExt;
        let mut buf = Vec::with_capacity(batch.iter().map(|m| m.payload.len() + 1).sum());
        for m in &batch {
            buf.extend_from_slice(&m.payload);
            buf.push(b'\n');
        }
        let mut out = self.out.lock().await;
        let io = |source| BrokerError::Io {
            path: "output".into(),
            source,
        };
        out.write_all(&buf).await.map_err(io)?;
        out.flush().await.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_poll_dropped_while_waiting_for_input_loses_nothing() {
        use tokio::io::AsyncWriteExt;
        let (mut writer, reader) = tokio::io::duplex(64);
        let mut source = LineSource::from_reader("t".into(), reader, 0);
        writer.write_all(b"a\nb\npar").await.unwrap();
        // The first poll hands out `a` and `b`; the next waits for the rest of the third line:
        // drop it there.
        let Polled::Records(first) = source.poll(100).await.unwrap() else {
            panic!("records expected");
        };
        let mut got: Vec<(u64, Bytes)> = first.into_iter().map(|r| (r.offset, r.payload)).collect();
        let dropped = tokio::time::timeout(Duration::from_millis(20), source.poll(100)).await;
        assert!(dropped.is_err(), "the poll was waiting");
        writer.write_all(b"tial\n").await.unwrap();
        drop(writer);
        while let Polled::Records(batch) = source.poll(100).await.unwrap() {
            got.extend(batch.into_iter().map(|r| (r.offset, r.payload)));
        }
        let want: Vec<(u64, Bytes)> = vec![
            (0, Bytes::from_static(b"a")),
            (1, Bytes::from_static(b"b")),
            (2, Bytes::from_static(b"partial")),
        ];
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_line_over_the_limit_becomes_one_record_of_its_head_and_size() {
        let huge = vec![b'x'; 5 * MAX_RECORD_BYTES + 3];
        let input = [b"{\"a\":1}\n".as_slice(), &huge, b"\n{\"b\":2}\n", &huge].concat();
        let mut source = LineSource::from_reader("t".into(), std::io::Cursor::new(input), 0);
        let mut records = Vec::new();
        while let Polled::Records(batch) = source.poll(100).await.unwrap() {
            records.extend(batch);
        }
        let got: Vec<(u64, usize, usize)> = records
            .iter()
            .map(|r| (r.offset, r.payload.len(), r.size))
            .collect();
        assert_eq!(
            got,
            [
                (0, 7, 7),
                (1, MAX_RECORD_BYTES, huge.len()),
                (2, 7, 7),
                (3, MAX_RECORD_BYTES, huge.len())
            ]
        );
        assert!(records[1].is_truncated() && !records[2].is_truncated());
    }

    #[tokio::test]
    async fn lines_become_records_with_line_offsets() {
        let input: &[u8] = b"{\"a\":1}\r\n\n   \nnot json\nlast-without-newline";
        let mut source = LineSource::from_reader("t".into(), input, 0);
        let mut records = Vec::new();
        while let Polled::Records(batch) = source.poll(2).await.unwrap() {
            records.extend(batch);
        }
        let got: Vec<(u64, &[u8])> = records.iter().map(|r| (r.offset, &r.payload[..])).collect();
        assert_eq!(
            got,
            vec![
                (0, &b"{\"a\":1}"[..]),
                (3, &b"not json"[..]),
                (4, &b"last-without-newline"[..])
            ]
        );
    }
}
