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

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::{BrokerError, Polled, Source};
use crate::model::{Checkpoint, MAX_RECORD_BYTES, Record};

/// The line being read: its head (at most [`MAX_RECORD_BYTES`]), its full length so far, and
/// whether all of it is whitespace.
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

    /// The record this line is, or `None` for a blank line (which still takes its offset).
    fn finish(mut self, offset: u64) -> Option<Record> {
        if self.blank {
            return None;
        }
        if self.len == self.head.len() && self.head.last() == Some(&b'\r') {
            self.head.pop();
            self.len -= 1;
        }
        Some(Record {
            partition: 0,
            offset,
            timestamp: None,
            size: self.len,
            payload: Bytes::from(self.head),
        })
    }
}

/// The source name under which standard input is checkpointed.
pub const STDIN_SOURCE: &str = "stdin";

/// Reads newline-delimited records. Blank lines take an offset but are not records.
pub struct LineSource {
    name: String,
    reader: BufReader<Box<dyn AsyncRead + Send + Unpin>>,
    next_offset: u64,
    /// The line being read; it outlives a cancelled poll.
    line: Line,
    /// Records read by a poll that has not returned them yet.
    taken: Vec<Record>,
    ended: bool,
}

impl LineSource {
    /// A JSON-lines file; offsets start at zero.
    pub async fn open(path: &Path) -> Result<Self, BrokerError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| BrokerError::Io {
                path: path.display().to_string(),
                source,
            })?;
        let name = match std::fs::canonicalize(path) {
            Ok(p) => format!("file:{}", p.display()),
            Err(_) => format!("file:{}", path.display()),
        };
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
        let reader: Box<dyn AsyncRead + Send + Unpin> = Box::new(reader);
        LineSource {
            name,
            reader: BufReader::with_capacity(1 << 20, reader),
            next_offset,
            line: Line::new(),
            taken: Vec::new(),
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
        // Records taken so far live in `self`, so a poll dropped while it waits for more input
        // loses none of them: the next poll hands them out.
        while !self.ended && self.taken.len() < max.max(1) {
            // Wait for the first line; after that take only what is already buffered.
            if !self.taken.is_empty() && self.reader.buffer().is_empty() {
                break;
            }
            self.read_some().await?;
        }
        if self.taken.is_empty() && self.ended {
            Ok(Polled::End)
        } else {
            Ok(Polled::Records(std::mem::take(&mut self.taken)))
        }
    }
}

impl LineSource {
    /// Reads what the buffer holds, up to the end of the current line. Nothing is awaited
    /// between taking bytes from the buffer and consuming them, so this is cancel-safe.
    async fn read_some(&mut self) -> Result<(), BrokerError> {
        let buf = match self.reader.fill_buf().await {
            Ok(buf) => buf,
            Err(e) => return Err(self.io_error(e)),
        };
        if buf.is_empty() {
            self.ended = true;
            if self.line.len > 0 {
                self.end_line();
            }
            return Ok(());
        }
        let (chunk, newline) = match buf.iter().position(|b| *b == b'\n') {
            Some(at) => (&buf[..at], true),
            None => (buf, false),
        };
        self.line.push(chunk);
        let used = chunk.len() + usize::from(newline);
        self.reader.consume(used);
        if newline {
            self.end_line();
        }
        Ok(())
    }

    fn end_line(&mut self) {
        let line = std::mem::replace(&mut self.line, Line::new());
        let offset = self.next_offset;
        self.next_offset += 1;
        if let Some(record) = line.finish(offset) {
            self.taken.push(record);
        }
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
