//! JSON lines from a file or from standard input, read as a one-partition log whose offsets
//! are line numbers.
//!
//! A file is a fixed log: a re-run reads it from the start and the processor skips the lines
//! its checkpoint already covers. Standard input is an open-ended stream: its offsets
//! continue from the checkpoint, so a new pipe appends to what earlier ones delivered.

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::{BrokerError, Polled, Source};
use crate::model::Record;

/// The source name under which standard input is checkpointed.
pub const STDIN_SOURCE: &str = "stdin";

/// Reads newline-delimited records. Blank lines take an offset but are not records.
pub struct LineSource {
    name: String,
    reader: BufReader<Box<dyn AsyncRead + Send + Unpin>>,
    next_offset: u64,
    /// A line read in part when a poll was cancelled.
    line: Vec<u8>,
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

    /// Standard input; offsets continue at `next_offset`.
    pub fn stdin(next_offset: u64) -> Self {
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
            line: Vec::new(),
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

    async fn poll(&mut self, max: usize) -> Result<Polled, BrokerError> {
        // Records taken so far live in `self`, so a poll dropped while it waits for more input
        // loses none of them: the next poll hands them out.
        while !self.ended && self.taken.len() < max.max(1) {
            // Wait for the first line; after that take only what is already buffered.
            if !self.taken.is_empty() && self.reader.buffer().is_empty() {
                break;
            }
            let read = self.reader.read_until(b'\n', &mut self.line).await;
            match read {
                Err(e) => return Err(self.io_error(e)),
                Ok(0) if self.line.is_empty() => self.ended = true,
                Ok(_) => {
                    let mut line = std::mem::take(&mut self.line);
                    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        line.pop();
                    }
                    let offset = self.next_offset;
                    self.next_offset += 1;
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        self.taken.push(Record {
                            partition: 0,
                            offset,
                            timestamp: None,
                            payload: Bytes::from(line),
                        });
                    }
                }
            }
        }
        if self.taken.is_empty() && self.ended {
            Ok(Polled::End)
        } else {
            Ok(Polled::Records(std::mem::take(&mut self.taken)))
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
        // The poll takes `a` and `b`, then waits for the rest of the third line: drop it there.
        let dropped = tokio::time::timeout(Duration::from_millis(20), source.poll(100)).await;
        assert!(dropped.is_err(), "the poll was waiting");
        writer.write_all(b"tial\n").await.unwrap();
        drop(writer);
        let mut got = Vec::new();
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
