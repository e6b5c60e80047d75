//! The rules every backend applies to a batch, in one place:
//!
//! 1. **Identity.** An accepted event is new to the store when no raw row has its key (event
//!    id, event time). When one has, the event is either a repeat of it (the same content:
//!    counted nowhere again) or a reuse of the id ([`found`] says which).
//! 2. **Everything follows the raw row.** Only a new event adds its alert (query 3), its window
//!    count or late row (query 2) and its counters, exactly once with its raw row (query 1): in
//!    one transaction on SQLite; on DynamoDB after it, by writes that apply once however often
//!    they are sent. So every table agrees, a batch written twice changes nothing, and windows
//!    fed by several sources add up.
//! 3. **Windows are sums.** [`Effects`] folds the new events of a unit into one increment per
//!    window: counts per severity, and the severities in arrival order, of which a window keeps
//!    at most the batch's `severities_cap` (the counts stay exact).
//! 4. **Everything expires.** A raw row at its `ttl`, its alert with it, a window when all
//!    its events can have (its end + the raw TTL), a late event and a dead letter after their
//!    retention.

use std::collections::BTreeMap;

use crate::model::{
    Accepted, City, CityEvent, DeadLetter, EventTime, EventType, Placement, Rejection, Severity,
    SeverityCounts, Span, window_key,
};
use crate::store::StoreError;

/// What an accepted event is, given the raw row stored under its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The same event, stored before (a repeat, or this very record written again).
    Repeat,
    /// Another event's key: the record becomes this dead letter.
    Taken(DeadLetter),
}

/// Rule 1, for an accepted event whose key holds `existing`.
pub fn found(source: &str, existing: &CityEvent, incoming: &Accepted, now: EventTime) -> Found {
    if incoming.event.is_repeat_of(existing) {
        return Found::Repeat;
    }
    let rejection = Rejection::duplicate(existing, &incoming.event);
    Found::Taken(incoming.dead_letter(source, &rejection, now))
}

/// One window's increment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowDelta {
    pub city: City,
    pub event_type: EventType,
    pub start: EventTime,
    pub end: EventTime,
    pub counts: SeverityCounts,
    /// Severities in arrival order, at most the cap of them.
    pub severities: Vec<Severity>,
    /// When the raw rows of its events have all expired: the window's end + the raw TTL. The
    /// same for every event of the window, so writers agree on it whatever their order.
    pub expires_at: EventTime,
}

impl WindowDelta {
    pub fn key(&self) -> String {
        window_key(&self.city, self.event_type, self.start)
    }
}

/// Which window: (city, type, start), without formatting the seed's key for every event.
pub type WindowId<'a> = (&'a str, EventType, EventTime);

/// What a set of new events adds to the store, summed per key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects<'a> {
    /// The new events, in arrival order.
    pub new: Vec<&'a Accepted>,
    /// Window increments by window ([`WindowDelta::key`] is the seed's key).
    pub windows: BTreeMap<WindowId<'a>, WindowDelta>,
    /// New alerts per severity.
    pub alerts: SeverityCounts,
    /// New late events per (city, type).
    pub late: BTreeMap<(&'a str, EventType), u64>,
}

impl<'a> Effects<'a> {
    /// Folds new events (rule 3), keeping at most `cap` severities per window increment.
    pub fn of(new: impl IntoIterator<Item = &'a Accepted>, cap: usize) -> Self {
        let mut effects = Effects::default();
        for a in new {
            effects.add(a, cap);
        }
        effects
    }

    fn add(&mut self, a: &'a Accepted, cap: usize) {
        let e = &a.event;
        if a.is_alert() {
            self.alerts.add(e.severity);
        }
        match a.placement {
            Placement::Late { .. } => {
                *self
                    .late
                    .entry((e.city.as_str(), e.event_type))
                    .or_default() += 1;
            }
            Placement::Window { start, end } => {
                let delta = self
                    .windows
                    .entry((e.city.as_str(), e.event_type, start))
                    .or_insert_with(|| WindowDelta {
                        city: e.city.clone(),
                        event_type: e.event_type,
                        start,
                        end,
                        counts: SeverityCounts::default(),
                        severities: Vec::new(),
                        expires_at: end.saturating_add(Span::from_millis(
                            a.ttl.as_millis() - e.timestamp.as_millis(),
                        )),
                    });
                delta.counts.add(e.severity);
                if delta.severities.len() < cap {
                    delta.severities.push(e.severity);
                }
            }
        }
        self.new.push(a);
    }

    /// The new events that are late.
    pub fn late_events(&self) -> impl Iterator<Item = &'a Accepted> + '_ {
        self.new
            .iter()
            .copied()
            .filter(|a| matches!(a.placement, Placement::Late { .. }))
    }

    /// The new events that are alerts.
    pub fn alert_events(&self) -> impl Iterator<Item = &'a Accepted> + '_ {
        self.new.iter().copied().filter(|a| a.is_alert())
    }
}

/// A window's severities as both backends store them: one letter per event in arrival order
/// (`l`, `m`, `h`, `c`), so that up to `--severities-cap` of them stay small to write and cheap
/// to read back.
const SEVERITY_LETTERS: [u8; 4] = [b'l', b'm', b'h', b'c'];

pub fn severities_text(severities: &[Severity]) -> String {
    severities
        .iter()
        .map(|s| char::from(SEVERITY_LETTERS[s.index()]))
        .collect()
}

pub fn severities_from_text(text: &str) -> Result<Vec<Severity>, StoreError> {
    let mut severities = Vec::with_capacity(text.len());
    for b in text.bytes() {
        severities.push(match b {
            b'l' => Severity::Low,
            b'm' => Severity::Medium,
            b'h' => Severity::High,
            b'c' => Severity::Critical,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "severity letter {:?}",
                    char::from(other)
                )));
            }
        });
    }
    Ok(severities)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn accepted(id: &str, severity: Severity, late: bool) -> Accepted {
        let t = EventTime::from_millis(60_000);
        Accepted {
            event: CityEvent {
                event_id: id.into(),
                city: City::parse("SF").unwrap(),
                event_type: EventType::Traffic,
                severity,
                timestamp: t,
                description: "d".into(),
            },
            ttl: t,
            placement: if late {
                Placement::Late { watermark: t }
            } else {
                Placement::Window {
                    start: EventTime::from_millis(0),
                    end: EventTime::from_millis(300_000),
                }
            },
            partition: 1,
            offset: 2,
            payload: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn new_events_fold_into_one_increment_per_window_with_capped_severities() {
        let events = [
            accepted("a", Severity::Low, false),
            accepted("b", Severity::High, false),
            accepted("c", Severity::Critical, false),
            accepted("d", Severity::High, true),
        ];
        let effects = Effects::of(&events, 2);
        assert_eq!(effects.windows.len(), 1);
        let w = effects.windows.values().next().unwrap();
        assert_eq!(w.key(), "SF#traffic#1970-01-01T00:00:00Z");
        assert_eq!(w.counts.total(), 3);
        assert_eq!(w.severities, [Severity::Low, Severity::High]);
        assert_eq!(effects.alerts.total(), 3);
        assert_eq!(effects.late[&("SF", EventType::Traffic)], 1);
        assert_eq!(effects.late_events().count(), 1);
        assert_eq!(effects.alert_events().count(), 3);
    }

    #[test]
    fn a_taken_key_is_a_repeat_or_a_dead_letter() {
        let mine = accepted("a", Severity::Low, false);
        let now = EventTime::from_millis(9);
        assert_eq!(found("t", &mine.event, &mine, now), Found::Repeat);
        let mut other = mine.event.clone();
        other.city = City::parse("LA").unwrap();
        let Found::Taken(dead) = found("t", &other, &mine, now) else {
            panic!("other content is a reuse");
        };
        assert_eq!(dead.kind, "duplicate_event_id");
        assert_eq!((dead.partition, dead.offset), (1, 2));
        assert!(dead.reason.contains("LA/traffic/low"), "{}", dead.reason);
    }

    #[test]
    fn severities_round_trip_through_their_letters() {
        let all = [
            Severity::Critical,
            Severity::Low,
            Severity::High,
            Severity::Medium,
            Severity::Low,
        ];
        assert_eq!(severities_text(&all), "clhml");
        assert_eq!(
            severities_from_text(&severities_text(&all)).ok(),
            Some(all.to_vec())
        );
        assert!(severities_from_text("lmx").is_err());
    }
}
