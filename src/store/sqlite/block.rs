//! How a block of raw events or alerts of one city is laid out: new events of one write, at
//! most [`MAX_EVENTS`] of them within one [`MAX_SPAN`] of event time, encoded together (one
//! row of `raw_blocks` or `alert_blocks`, see `blocks.rs`).
//!
//! A block holds its events newest first (event time descending, then id descending), so a
//! page of the newest events decodes only as far as it needs. All integers are LEB128:
//! - `version` (1), `count`;
//! - three string tables (event types, descriptions, rule lists), each `n` then `n` strings
//!   (`len`, bytes): a value that repeats within the block is written once;
//! - per event: `ts` (the first zigzagged, then the step down from the one before),
//!   `ttl - ts` (zigzagged), the id (`0` then 16 bytes for a lowercase hyphenated UUID, else
//!   `1 + len` then its bytes), the indexes of its type, severity and description, and `0`,
//!   or `1 +` the index of the rules that made it an alert.

use std::cmp::Reverse;

use foldhash::HashMap;

use crate::model::{City, CityEvent, EventTime, EventType, Severity, Span};

const VERSION: u64 = 1;
/// The most events a block holds.
pub const MAX_EVENTS: usize = 512;
/// The span of event time a block's events share: blocks are cut at its multiples, so a read
/// of a time range starts at the blocks whose newest event is at most this after its end.
pub const MAX_SPAN: Span = Span::from_mins(5);

/// The number of the [`MAX_SPAN`] an event time falls in.
pub fn span_of(ts: EventTime) -> i64 {
    ts.as_millis().div_euclid(MAX_SPAN.as_millis())
}

/// One event as it is written into a block.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub event: &'a CityEvent,
    pub ttl: EventTime,
    /// The rules that made it an alert (`id@version,…`), in alert blocks.
    pub rules: Option<&'a str>,
}

/// One event as it is read from a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEvent {
    pub event: CityEvent,
    pub ttl: EventTime,
    pub rules: Option<String>,
}

impl BlockEvent {
    pub fn entry(&self) -> Entry<'_> {
        Entry {
            event: &self.event,
            ttl: self.ttl,
            rules: self.rules.as_deref(),
        }
    }
}

/// An id's first eight bytes as a number that orders as they do (zeros past its end).
fn id_prefix(id: &str) -> u64 {
    let mut bytes = [0u8; 8];
    let n = id.len().min(8);
    bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
    u64::from_be_bytes(bytes)
}

/// The order of events in a block: newest first.
pub fn newest_first(a: &CityEvent, b: &CityEvent) -> std::cmp::Ordering {
    (b.timestamp, &b.event_id).cmp(&(a.timestamp, &a.event_id))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockError {
    #[error("block ends early")]
    Short,
    #[error("block of version {0}, not {VERSION}")]
    Version(u64),
    #[error("block holds a bad value: {0}")]
    Bad(&'static str),
}

/// Encodes `events` (in any order; they are written newest first).
pub fn encode(events: &[Entry<'_>]) -> Vec<u8> {
    // By time and the id's first eight bytes, the whole ids compared only where those tie.
    let mut keyed: Vec<(Reverse<i64>, Reverse<u64>, &Entry<'_>)> = events
        .iter()
        .map(|e| {
            let id = Reverse(id_prefix(&e.event.event_id));
            (Reverse(e.event.timestamp.as_millis()), id, e)
        })
        .collect();
    keyed.sort_unstable_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| newest_first(a.2.event, b.2.event))
    });
    let order: Vec<&Entry<'_>> = keyed.into_iter().map(|(_, _, e)| e).collect();
    let mut types = Table::default();
    let mut descriptions = Table::default();
    let mut rules = Table::default();
    let indexes: Vec<(u64, u64, u64)> = order
        .iter()
        .map(|e| {
            let rule = e.rules.map_or(0, |r| 1 + rules.index(r));
            (
                types.index(e.event.event_type.as_str()),
                descriptions.index(&e.event.description),
                rule,
            )
        })
        .collect();
    let mut out = Vec::with_capacity(events.len() * 40 + 64);
    put(&mut out, VERSION);
    put(&mut out, order.len() as u64);
    for table in [&types, &descriptions, &rules] {
        table.write(&mut out);
    }
    let mut previous = None;
    for (e, (kind, description, rule)) in order.iter().zip(indexes) {
        let ts = e.event.timestamp.as_millis();
        match previous {
            None => put(&mut out, zigzag(ts)),
            Some(p) => put(&mut out, (p - ts) as u64),
        }
        previous = Some(ts);
        put(&mut out, zigzag(e.ttl.as_millis() - ts));
        put_id(&mut out, &e.event.event_id);
        put(&mut out, kind);
        put(&mut out, e.event.severity.index() as u64);
        put(&mut out, description);
        put(&mut out, rule);
    }
    out
}

/// One event of a block as it is read: the strings borrowed from the block, nothing
/// allocated until [`Item::to_event`].
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub ts: EventTime,
    pub ttl: EventTime,
    id: Id<'a>,
    pub event_type: EventType,
    pub severity: Severity,
    description: &'a str,
    rules: Option<&'a str>,
}

#[derive(Debug, Clone, Copy)]
enum Id<'a> {
    /// A UUID's text, lowercase and hyphenated.
    Uuid([u8; uuid::fmt::Hyphenated::LENGTH]),
    Text(&'a str),
}

impl<'a> Item<'a> {
    pub fn event_id(&self) -> &str {
        match &self.id {
            // Written by `encode_lower`: ASCII hex digits and hyphens.
            Id::Uuid(text) => std::str::from_utf8(text).unwrap_or_default(),
            Id::Text(text) => text,
        }
    }

    /// Its place in the newest-first order of events: (event time, id).
    pub fn key(&self) -> (i64, &str) {
        (self.ts.as_millis(), self.event_id())
    }

    pub fn to_event(self, city: &City) -> BlockEvent {
        BlockEvent {
            event: CityEvent {
                event_id: self.event_id().to_owned(),
                city: city.clone(),
                event_type: self.event_type,
                severity: self.severity,
                timestamp: self.ts,
                description: self.description.to_owned(),
            },
            ttl: self.ttl,
            rules: self.rules.map(str::to_owned),
        }
    }
}

/// The events of a block, newest first, read as they are asked for.
pub fn read(
    bytes: &[u8],
) -> Result<impl Iterator<Item = Result<Item<'_>, BlockError>>, BlockError> {
    let mut input = Input(bytes);
    let version = input.int()?;
    if version != VERSION {
        return Err(BlockError::Version(version));
    }
    let count = input.int()?;
    let types = input
        .table()?
        .into_iter()
        .map(|t| {
            t.parse::<EventType>()
                .map_err(|_| BlockError::Bad("event type"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let descriptions = input.table()?;
    let rules = input.table()?;
    let mut previous: Option<i64> = None;
    Ok((0..count).map(move |_| {
        let ts = match previous {
            None => unzigzag(input.int()?),
            Some(p) => p - input.int()? as i64,
        };
        previous = Some(ts);
        let ttl = ts + unzigzag(input.int()?);
        let id = input.id()?;
        let event_type = *pick(&types, input.int()?)?;
        let severity = *pick(&Severity::ALL, input.int()?)?;
        let description = *pick(&descriptions, input.int()?)?;
        let rules = match input.int()? {
            0 => None,
            n => Some(*pick(&rules, n - 1)?),
        };
        Ok(Item {
            ts: EventTime::from_millis(ts),
            ttl: EventTime::from_millis(ttl),
            id,
            event_type,
            severity,
            description,
            rules,
        })
    }))
}

/// The events of a block of `city`, newest first, each decoded whole.
pub fn decode<'a>(
    city: &'a City,
    bytes: &'a [u8],
) -> Result<impl Iterator<Item = Result<BlockEvent, BlockError>> + 'a, BlockError> {
    Ok(read(bytes)?.map(move |item| Ok(item?.to_event(city))))
}

/// Strings in the order first met, each written once.
#[derive(Default)]
struct Table<'a> {
    index: HashMap<&'a str, u64>,
    values: Vec<&'a str>,
}

impl<'a> Table<'a> {
    fn index(&mut self, value: &'a str) -> u64 {
        let next = self.values.len() as u64;
        *self.index.entry(value).or_insert_with(|| {
            self.values.push(value);
            next
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        put(out, self.values.len() as u64);
        for v in &self.values {
            put(out, v.len() as u64);
            out.extend_from_slice(v.as_bytes());
        }
    }
}

fn pick<T>(table: &[T], index: u64) -> Result<&T, BlockError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .ok_or(BlockError::Bad("index"))
}

fn put(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// A lowercase hyphenated UUID (what the generator and the derived ids are) as its 16 bytes;
/// any other id has none, and is kept as its text.
pub fn uuid_bytes(id: &str) -> Option<[u8; 16]> {
    // Of the forms a UUID parses from, only the hyphenated one is 36 bytes long.
    let lowercase = !id.bytes().any(|b| b.is_ascii_uppercase());
    if id.len() != uuid::fmt::Hyphenated::LENGTH || !lowercase {
        return None;
    }
    uuid::Uuid::try_parse(id).ok().map(|u| *u.as_bytes())
}

fn put_id(out: &mut Vec<u8>, id: &str) {
    match uuid_bytes(id) {
        Some(bytes) => {
            put(out, 0);
            out.extend_from_slice(&bytes);
        }
        None => {
            put(out, 1 + id.len() as u64);
            out.extend_from_slice(id.as_bytes());
        }
    }
}

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn int(&mut self) -> Result<u64, BlockError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first().ok_or(BlockError::Short)?;
            self.0 = rest;
            n |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(n);
            }
        }
        Err(BlockError::Bad("integer"))
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], BlockError> {
        if self.0.len() < len {
            return Err(BlockError::Short);
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn string(&mut self, len: u64) -> Result<&'a str, BlockError> {
        let len = usize::try_from(len).map_err(|_| BlockError::Short)?;
        std::str::from_utf8(self.bytes(len)?).map_err(|_| BlockError::Bad("utf-8"))
    }

    fn table(&mut self) -> Result<Vec<&'a str>, BlockError> {
        let n = self.int()?;
        // At most one string per byte left: a bad count cannot ask for more room than that.
        let mut values = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(self.0.len()));
        for _ in 0..n {
            let len = self.int()?;
            values.push(self.string(len)?);
        }
        Ok(values)
    }

    fn id(&mut self) -> Result<Id<'a>, BlockError> {
        match self.int()? {
            0 => {
                let bytes: [u8; 16] = self.bytes(16)?.try_into().map_err(|_| BlockError::Short)?;
                let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
                uuid::Uuid::from_bytes(bytes)
                    .hyphenated()
                    .encode_lower(&mut text);
                Ok(Id::Uuid(text))
            }
            n => Ok(Id::Text(self.string(n - 1)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{Generator, GeneratorConfig};

    fn events(n: usize) -> Vec<BlockEvent> {
        let config = GeneratorConfig {
            seed: 7,
            count: Some(n as u64),
            out_of_order: 0.1,
            ..GeneratorConfig::default()
        };
        Generator::new(config)
            .enumerate()
            .map(|(i, mut event)| {
                event.city = City::parse("Chicago").unwrap();
                if i % 7 == 0 {
                    event.event_id = format!("Custom-Id-{i}");
                }
                let rules = event
                    .severity
                    .is_alert()
                    .then(|| "severity-high@1".to_owned());
                BlockEvent {
                    ttl: event
                        .timestamp
                        .saturating_add(crate::model::Span::from_millis(1000)),
                    event,
                    rules,
                }
            })
            .collect()
    }

    fn entries(events: &[BlockEvent]) -> Vec<Entry<'_>> {
        events
            .iter()
            .map(|e| Entry {
                event: &e.event,
                ttl: e.ttl,
                rules: e.rules.as_deref(),
            })
            .collect()
    }

    #[test]
    fn a_block_gives_back_its_events_newest_first() {
        let mut events = events(500);
        let bytes = encode(&entries(&events));
        let city = City::parse("Chicago").unwrap();
        let decoded: Vec<BlockEvent> = decode(&city, &bytes)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        events.sort_by(|a, b| newest_first(&a.event, &b.event));
        assert_eq!(decoded, events);
        assert!(bytes.len() < 500 * 40, "{} bytes", bytes.len());
    }

    #[test]
    fn a_cut_block_is_an_error_not_a_panic() {
        let bytes = encode(&entries(&events(20)));
        let city = City::parse("Chicago").unwrap();
        for len in 0..bytes.len() {
            let read: Result<Vec<BlockEvent>, BlockError> =
                decode(&city, &bytes[..len]).and_then(|events| events.collect());
            assert!(read.is_err(), "{len} bytes of {}", bytes.len());
        }
    }
}
