//! Synthetic city traffic, as the seed's producer makes it: random events over the six
//! cities × four types × four severities, with optional disorder and lateness so the
//! watermark has something to do. Same seed and start time → same stream.
//!
//! The generator is a pure iterator; [`run`] paces it against the wall clock (see
//! [`Generator::due_after`]) and hands it to a producer. [`hostile::Records`] turns its events
//! into broker records, with an optional share of hostile ones (repeats, reused ids,
//! malformed, oversized, …).

pub mod hostile;
mod run;

pub use run::run;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use crate::model::{City, CityEvent, EventTime, EventType, SEED_CITIES, Severity, Span};

/// How the generator behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    /// Seed of the random stream.
    pub seed: u64,
    /// Events per second of event time (and of wall time, unless `pace` says otherwise).
    pub rate: f64,
    /// Events per second of wall time, when it differs from `rate`.
    pub pace: Option<f64>,
    /// Stop after this many events; `None` runs until stopped.
    pub count: Option<u64>,
    /// Event time of the first event.
    pub start: EventTime,
    /// Share of events that arrive out of order: up to four minutes behind the stream clock,
    /// still inside the watermark.
    pub out_of_order: f64,
    /// Share of events that arrive late: 16 to 30 minutes behind, past the watermark.
    pub late: f64,
    /// Share of records that are hostile (see [`hostile`]); used by [`hostile::Records`].
    pub hostile: f64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 0,
            rate: 0.2,
            pace: None,
            count: None,
            start: EventTime::now(),
            out_of_order: 0.0,
            late: 0.0,
            hostile: 0.0,
        }
    }
}

/// An endless (or `count`-long) stream of synthetic events.
#[derive(Debug, Clone)]
pub struct Generator {
    config: GeneratorConfig,
    rng: ChaCha8Rng,
    cities: Vec<City>,
    /// The event types records may have (`--event-types`).
    types: Vec<EventType>,
    emitted: u64,
}

impl Generator {
    pub fn new(config: GeneratorConfig) -> Self {
        let cities = SEED_CITIES
            .iter()
            .filter_map(|c| City::parse(*c).ok())
            .collect();
        Generator {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            cities,
            types: EventType::all(),
            emitted: 0,
        }
    }

    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// How many events were produced so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Wall time after the start at which event `n` is due.
    pub fn due_after(&self, n: u64) -> Duration {
        Duration::from_secs_f64(n as f64 / self.config.pace.unwrap_or(self.config.rate))
    }

    /// The stream clock for event `n`: start + n / rate.
    fn clock(&self, n: u64) -> EventTime {
        let ms = (n as f64 * 1000.0 / self.config.rate) as i64;
        self.config.start.saturating_add(Span::from_millis(ms))
    }

    fn lag(&mut self) -> Span {
        let r: f64 = self.rng.random();
        let ms = if r < self.config.late {
            self.rng.random_range(16 * 60_000..30 * 60_000)
        } else if r < self.config.late + self.config.out_of_order {
            self.rng.random_range(1_000..4 * 60_000)
        } else {
            0
        };
        Span::from_millis(ms)
    }
}

impl Iterator for Generator {
    type Item = CityEvent;

    fn next(&mut self) -> Option<CityEvent> {
        if self.config.count.is_some_and(|c| self.emitted >= c) {
            return None;
        }
        let n = self.emitted;
        self.emitted += 1;
        let lag = self.lag();
        let city = self.cities[self.rng.random_range(0..self.cities.len())].clone();
        let event_type = self.types[self.rng.random_range(0..self.types.len())];
        let severity = Severity::ALL[self.rng.random_range(0..Severity::ALL.len())];
        let id = uuid::Builder::from_random_bytes(self.rng.random()).into_uuid();
        Some(CityEvent {
            event_id: Uuid::hyphenated(id).to_string(),
            city,
            event_type,
            severity,
            timestamp: self.clock(n).saturating_sub(lag),
            description: CityEvent::seed_description(event_type, severity),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> GeneratorConfig {
        GeneratorConfig {
            seed,
            rate: 10.0,
            pace: None,
            count: Some(500),
            start: EventTime::parse_rfc3339("2026-11-25T08:00:00Z").unwrap(),
            out_of_order: 0.1,
            late: 0.05,
            hostile: 0.0,
        }
    }

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<_> = Generator::new(config(7)).collect();
        let b: Vec<_> = Generator::new(config(7)).collect();
        let c: Vec<_> = Generator::new(config(8)).collect();
        assert_eq!(a.len(), 500);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn events_follow_the_seed_producer() {
        let events: Vec<_> = Generator::new(config(1)).collect();
        let behind = |i: usize| {
            let clock = config(1).start.as_millis() + i as i64 * 100;
            clock - events[i].timestamp.as_millis()
        };
        assert!(
            (0..events.len()).any(|i| behind(i) >= 16 * 60_000),
            "some late"
        );
        assert!(
            (0..events.len()).any(|i| (1..240_000).contains(&behind(i))),
            "some disorder"
        );
        assert!(
            events
                .iter()
                .all(|e| SEED_CITIES.contains(&e.city.as_str()))
        );
        let e = &events[0];
        assert_eq!(
            e.description,
            CityEvent::seed_description(e.event_type, e.severity)
        );
        assert!(Uuid::parse_str(&e.event_id).is_ok());
    }
}
