//! What changed between two reads of the store: pure functions over what the store returned,
//! so the rules are unit-tested without a store.

use std::collections::{HashMap, HashSet};

use crate::model::{City, EventTime, EventType, SeverityCounts, Span, WindowAggregate};
use crate::store::{EventKey, StoredAlert};

/// Finds the alerts stored since the last read, among the newest ones, from reads of the
/// newest alerts.
///
/// Alerts are listed newest event time first, not in the order they were stored, so an alert
/// stored out of order can show up below alerts already seen. A read of at most `limit` alerts
/// covers everything at or above its oldest item when it is full, and everything since its
/// start when it is not; an item is new when the previous read covered its place and did not
/// hold it. So every alert stored into the newest `limit` is found, once; one stored below them
/// is not (no read can tell it from one that was always there). The first read only learns
/// what is there.
///
/// What the read before the previous one held counts as seen too: a read that is not strongly
/// consistent (DynamoDB's lists) can miss an item the read before had, and the item would
/// otherwise be new again when it is back.
#[derive(Debug, Default)]
pub struct AlertWatch {
    seen: HashSet<EventKey>,
    seen_before: HashSet<EventKey>,
    /// The previous read covered only keys at or above this one (it was full).
    floor: Option<EventKey>,
    primed: bool,
}

impl AlertWatch {
    /// Takes a read (newest first) that asked for `limit` alerts; returns the new ones, oldest
    /// first.
    pub fn update(&mut self, read: &[StoredAlert], limit: usize) -> Vec<StoredAlert> {
        let covered = |key: &EventKey| self.floor.as_ref().is_none_or(|floor| key >= floor);
        let key = |a: &StoredAlert| EventKey::of(&a.event);
        let mut new: Vec<StoredAlert> = if self.primed {
            read.iter()
                .filter(|a| {
                    let key = key(a);
                    covered(&key) && !self.seen.contains(&key) && !self.seen_before.contains(&key)
                })
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        new.reverse();
        self.seen_before = std::mem::replace(&mut self.seen, read.iter().map(key).collect());
        self.floor = (read.len() >= limit)
            .then(|| read.last().map(key))
            .flatten();
        self.primed = true;
        new
    }
}

/// A window's place: city, type and start.
type WindowId = (City, EventType, EventTime);

/// Finds the windows whose counts changed, among each city's current and previous windows (its
/// newest window start, of any type, and the one before).
#[derive(Debug, Default)]
pub struct WindowWatch {
    counts: HashMap<WindowId, (u64, SeverityCounts)>,
    primed: bool,
}

impl WindowWatch {
    /// Takes every watched city's newest windows (newest first per city) and returns the windows
    /// that are new or changed since the last read. Only windows that start at most one
    /// `window` before their city's newest are watched: the current and the previous one.
    pub fn update(&mut self, read: Vec<WindowAggregate>, window: Span) -> Vec<WindowAggregate> {
        let mut newest: HashMap<City, EventTime> = HashMap::new();
        for w in &read {
            let at = newest.entry(w.city.clone()).or_insert(w.window_start);
            *at = (*at).max(w.window_start);
        }
        let watched = read.into_iter().filter(|w| {
            newest
                .get(&w.city)
                .is_some_and(|n| w.window_start >= n.saturating_sub(window))
        });
        let mut counts = HashMap::new();
        let mut changed = Vec::new();
        for w in watched {
            let id = (w.city.clone(), w.event_type, w.window_start);
            let value = (w.event_count, w.severity_counts);
            if self.primed && self.counts.get(&id) != Some(&value) {
                changed.push(w);
            }
            counts.insert(id, value);
        }
        self.counts = counts;
        self.primed = true;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CityEvent, Severity};

    fn alert(id: &str, at: i64) -> StoredAlert {
        StoredAlert {
            event: CityEvent {
                event_id: id.into(),
                city: City::parse("SF").unwrap(),
                event_type: EventType::Incident,
                severity: Severity::High,
                timestamp: EventTime::from_millis(at),
                description: String::new(),
            },
            rules: Vec::new(),
        }
    }

    fn ids(alerts: &[StoredAlert]) -> Vec<&str> {
        alerts.iter().map(|a| a.event.event_id.as_str()).collect()
    }

    #[test]
    fn alerts_stored_since_the_last_read_are_new_also_out_of_order() {
        let mut watch = AlertWatch::default();
        assert!(
            watch
                .update(&[alert("b", 20), alert("a", 10)], 10)
                .is_empty()
        );
        let read = [
            alert("d", 40),
            alert("c", 30),
            alert("b", 20),
            alert("x", 15),
            alert("a", 10),
        ];
        assert_eq!(ids(&watch.update(&read, 10)), ["x", "c", "d"]);
        assert!(watch.update(&read, 10).is_empty());
    }

    #[test]
    fn a_full_read_only_speaks_for_what_it_covered() {
        let mut watch = AlertWatch::default();
        watch.update(&[alert("d", 40), alert("c", 30)], 2);
        // "b" is below the previous read's floor: it may have been there all along.
        let read = [alert("e", 50), alert("d", 40), alert("b", 20)];
        assert_eq!(ids(&watch.update(&read, 10)), ["e"]);
        // That read was not full: it covered everything since its start.
        let read = [
            alert("e", 50),
            alert("d", 40),
            alert("b", 20),
            alert("a", 5),
        ];
        assert_eq!(ids(&watch.update(&read, 10)), ["a"]);
    }

    fn window(city: &str, t: EventType, start: i64, count: u64) -> WindowAggregate {
        WindowAggregate {
            city: City::parse(city).unwrap(),
            event_type: t,
            window_start: EventTime::from_millis(start),
            window_end: EventTime::from_millis(start + 300_000),
            event_count: count,
            severities: crate::model::Severities::default(),
            severity_counts: SeverityCounts([count, 0, 0, 0]),
        }
    }

    #[test]
    fn an_alert_a_stale_read_missed_is_not_new_again() {
        let mut watch = AlertWatch::default();
        watch.update(&[alert("b", 20), alert("a", 10)], 10);
        assert!(watch.update(&[alert("a", 10)], 10).is_empty());
        assert!(
            watch
                .update(&[alert("b", 20), alert("a", 10)], 10)
                .is_empty()
        );
    }

    #[test]
    fn windows_report_changes_of_the_newest_two_per_city() {
        let five = Span::from_mins(5);
        let mut watch = WindowWatch::default();
        let first = vec![
            window("SF", EventType::Traffic, 600_000, 3),
            window("SF", EventType::Traffic, 300_000, 9),
            window("SF", EventType::Traffic, 0, 7),
            window("LA", EventType::Weather, 0, 1),
        ];
        assert!(watch.update(first, five).is_empty());
        let second = vec![
            window("SF", EventType::Traffic, 600_000, 4),
            window("SF", EventType::Weather, 600_000, 1),
            window("SF", EventType::Traffic, 300_000, 9),
            window("SF", EventType::Traffic, 0, 8),
            window("LA", EventType::Weather, 0, 1),
        ];
        let changed = watch.update(second, five);
        let got: Vec<_> = changed
            .iter()
            .map(|w| (w.event_type, w.window_start.as_millis(), w.event_count))
            .collect();
        // The SF window at 0 is older than the previous one: not watched.
        assert_eq!(
            got,
            [
                (EventType::Traffic, 600_000, 4),
                (EventType::Weather, 600_000, 1)
            ]
        );
    }
}
