//! The generator's events as a careless or hostile producer would send them: between the
//! valid events, a share of records that test every defence of the pipeline. Same seed, same
//! records. Each hostile record is keyed by a city, so it lands in that city's partition.
//!
//! | kind | record | what the pipeline makes of it |
//! |------|--------|-------------------------------|
//! | repeat | a recent event again, byte for byte | nothing (counted once) |
//! | reuse | a recent event's id and time with another type and severity | a `duplicate_event_id` dead letter |
//! | malformed | the start of an object, cut off | a `malformed` dead letter |
//! | oversized | a 70 000-byte object | a `too_large` dead letter |
//! | byte-order mark | a new valid event after a UTF-8 BOM | an event like any other |
//! | future | a new event stamped in the year 2999 | a `future_timestamp` dead letter |
//! | no city | a new event with an empty city | an `invalid_city` dead letter |

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Generator, GeneratorConfig};
use crate::model::{CityEvent, EventTime, EventType, Severity};

/// Recent events a repeat or a reuse copies from.
const RECENT: usize = 32;
/// Size of an oversized record.
const OVERSIZED: usize = 70_000;
/// What the RNG of hostile records is seeded with, besides the generator's seed.
const SALT: u64 = 0x5eed_0fba_d1ce;

/// One record for a broker: its partitioning key (a city) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub key: Bytes,
    pub bytes: Bytes,
}

/// The generator's events, with `config.hostile` of the records hostile; `config.count`
/// counts every record.
#[derive(Debug, Clone)]
pub struct Records {
    config: GeneratorConfig,
    events: Generator,
    rng: ChaCha8Rng,
    recent: VecDeque<CityEvent>,
    emitted: u64,
}

impl Records {
    pub fn new(config: GeneratorConfig) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(config.seed ^ SALT);
        Records {
            events: Generator::new(GeneratorConfig {
                count: None,
                ..config.clone()
            }),
            config,
            rng,
            recent: VecDeque::with_capacity(RECENT),
            emitted: 0,
        }
    }

    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// Records emitted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Wall time after the start at which record `n` is due.
    pub fn due_after(&self, n: u64) -> Duration {
        self.events.due_after(n)
    }

    fn event(&mut self) -> Option<CityEvent> {
        let event = self.events.next()?;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(event.clone());
        Some(event)
    }

    fn hostile(&mut self) -> Option<Payload> {
        let kind = self.rng.random_range(0..7);
        let recent = (!self.recent.is_empty())
            .then(|| self.recent[self.rng.random_range(0..self.recent.len())].clone());
        let payload = match (kind, recent) {
            (0, Some(e)) => json(&e),
            (1, Some(mut e)) => {
                let types = EventType::all();
                let at = types.iter().position(|t| *t == e.event_type).unwrap_or(0);
                e.event_type = types[(at + 1) % types.len()];
                e.severity = Severity::ALL[(e.severity.index() + 2) % 4];
                json(&e)
            }
            (2, Some(e)) => keyed(&e, format!(r#"{{"city": "{}", "broken"#, e.city)),
            (3, Some(e)) => keyed(&e, format!(r#"{{"pad":"{}"}}"#, "x".repeat(OVERSIZED))),
            (4, _) => {
                let e = self.event()?;
                keyed(&e, [b"\xEF\xBB\xBF".as_slice(), &e.to_json()].concat())
            }
            (5, _) => {
                let mut e = self.event()?;
                e.timestamp = EventTime::parse_rfc3339("2999-01-01T00:00:00Z").ok()?;
                json(&e)
            }
            (_, _) => {
                let e = self.event()?;
                let wire = String::from_utf8_lossy(&e.to_json()).replacen(
                    &format!(r#""city":"{}""#, e.city),
                    r#""city":"""#,
                    1,
                );
                keyed(&e, wire)
            }
        };
        Some(payload)
    }
}

fn json(e: &CityEvent) -> Payload {
    keyed(e, e.to_json())
}

fn keyed(e: &CityEvent, bytes: impl Into<Vec<u8>>) -> Payload {
    Payload {
        key: Bytes::copy_from_slice(e.city.as_str().as_bytes()),
        bytes: Bytes::from(bytes.into()),
    }
}

impl Iterator for Records {
    type Item = Payload;

    fn next(&mut self) -> Option<Payload> {
        if self.config().count.is_some_and(|c| self.emitted >= c) {
            return None;
        }
        let hostile = self.config().hostile;
        let record = if hostile > 0.0 && self.rng.random::<f64>() < hostile {
            self.hostile()
        } else {
            self.event().map(|e| json(&e))
        }?;
        self.emitted += 1;
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Record, decode};

    #[test]
    fn a_share_of_records_is_hostile_and_the_rest_is_the_generators() {
        let config = GeneratorConfig {
            seed: 3,
            count: Some(2000),
            start: EventTime::parse_rfc3339("2026-11-25T08:00:00Z").unwrap(),
            hostile: 0.2,
            ..GeneratorConfig::default()
        };
        let records: Vec<Payload> = Records::new(config.clone()).collect();
        assert_eq!(records.len(), 2000);
        assert_eq!(
            records,
            Records::new(config.clone()).collect::<Vec<_>>(),
            "seeded"
        );
        let mut kinds = std::collections::BTreeMap::new();
        let mut ids = std::collections::HashMap::new();
        for (i, p) in records.iter().enumerate() {
            let record = Record::new(0, i as u64, None, p.bytes.clone());
            let kind = match decode("t", &record) {
                Err(e) => e.kind(),
                Ok(e) if e.timestamp.as_millis() > 30_000_000_000_000 => "future",
                Ok(e) => match ids.insert(e.event_id.clone(), e.clone()) {
                    Some(first) if first == e => "repeat",
                    Some(_) => "reuse",
                    None => "event",
                },
            };
            *kinds.entry(kind).or_insert(0) += 1;
        }
        for kind in [
            "event",
            "repeat",
            "reuse",
            "malformed",
            "too_large",
            "future",
            "invalid_city",
        ] {
            assert!(
                kinds.get(kind).is_some_and(|n| *n > 10),
                "{kind}: {kinds:?}"
            );
        }
        assert!(kinds["event"] > 1600, "{kinds:?}");
        let none = GeneratorConfig {
            hostile: 0.0,
            ..config.clone()
        };
        let plain: Vec<Bytes> = Generator::new(none.clone())
            .map(|e| Bytes::from(e.to_json()))
            .collect();
        let records: Vec<Bytes> = Records::new(none).map(|p| p.bytes).collect();
        assert_eq!(records, plain, "no hostile share, the generator's stream");
    }
}
