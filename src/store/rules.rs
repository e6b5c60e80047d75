//! The rules every backend applies to a batch, in one place:
//!
//! 1. **Identity.** An accepted event is new to the store when no raw row has its key (event
//!    id, event time). When one has, the event is either a repeat of it (the same content:
//!    counted nowhere again) or a reuse of the id ([`found`] says which).
//! 2. **Everything follows the raw row.** Only a new event adds its alert (query 3) with its
//!    deliveries (the outbox), its window counts or late row (query 2) and its counters, exactly
//!    once with its raw row (query 1); a window rule's alert follows the window's count, once
//!    per window (its deliveries are written if absent, [`window_alert_body`]):
//!    in one transaction on SQLite; on DynamoDB after it, by writes that apply once however
//!    often they are sent. So every table agrees, a batch written twice changes nothing, and
//!    windows fed by several sources add up.
//! 3. **Windows are sums, at every resolution.** An event that is not late counts in one
//!    window of each resolution ([`windows_of`]): the base window and each rollup, so a
//!    rollup is the sum of the base windows it covers. [`Effects`] folds the new events of a
//!    write into one increment per window: counts per severity, and the severities in arrival
//!    order, of which a window keeps the first `severities_cap` ([`severities_room`]; the
//!    counts stay exact).
//! 4. **Everything expires.** A raw row at its `ttl` (event time + `--raw-ttl`), its alert with
//!    it; a window its resolution's retention after it ends ([`Resolution::expiry`], as the
//!    latest write to it was configured); a late event and a dead letter their retention after
//!    their event time and arrival.
//! 5. **Positions only move forwards.** A checkpoint behind the stored one is left alone: a
//!    newer writer owns the partition ([`fenced`]).

use crate::model::alerting::{AlertBody, Fired, WindowAlertBody, WindowBody, WindowState};
use crate::model::{
    Accepted, Checkpoint, City, CityEvent, EventTime, EventType, Placement, Rejection, Resolution,
    Resolutions, Severities, SeverityCounts, Span, WriteBatch,
};
use crate::store::StoreError;

/// What an accepted event is, given the raw row stored under its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The same event, stored before (a repeat, or this very record written again).
    Repeat,
    /// Another event's key: the record becomes this dead letter.
    Taken(crate::model::DeadLetter),
}

/// Rule 1, for an accepted event of `batch` whose key holds `existing`.
pub fn found(
    batch: &WriteBatch,
    existing: &CityEvent,
    incoming: &Accepted,
    now: EventTime,
) -> Found {
    if incoming.event.is_repeat_of(existing) {
        return Found::Repeat;
    }
    let rejection = Rejection::duplicate(existing, &incoming.event);
    Found::Taken(batch.dead_letter(incoming, &rejection, now))
}

/// Rule 3: the windows an accepted event counts in, one per resolution (start of each), or
/// none when it is late.
pub fn windows_of<'r>(
    a: &Accepted,
    resolutions: &'r Resolutions,
) -> impl Iterator<Item = (Resolution, EventTime)> + 'r {
    let t = a.event.timestamp;
    let counts = matches!(a.placement, Placement::Window { .. });
    resolutions
        .iter()
        .filter(move |_| counts)
        .map(move |r| (r, r.start_of(t)))
}

/// An event's alerts that have deliveries, each with its body as the outbox keeps it (rule 2).
pub fn owed_alerts(a: &Accepted) -> impl Iterator<Item = (&Fired, String)> {
    a.alerts.iter().filter_map(move |fired| {
        let body = AlertBody {
            id: fired.alert_id?,
            rule: &fired.rule,
            event: &a.event,
        };
        Some((fired, body.to_json()))
    })
}

/// A window alert as the outbox keeps it (rule 2): the rule and the window, with all the
/// events it held when the alert was made.
pub fn window_alert_body(fired: &Fired, w: &WindowState<'_>) -> String {
    let resolution = Resolution {
        span: w.resolution,
        retention: Span::from_millis(0),
    };
    WindowAlertBody {
        id: fired.alert_id.unwrap_or_default(),
        rule: &fired.rule,
        window: WindowBody {
            city: w.city,
            event_type: w.event_type,
            resolution: w.resolution,
            window_start: w.start,
            window_end: resolution.end_of(w.start),
            event_count: w.counts.total(),
        },
    }
    .to_json()
}

/// Rule 3: how many more severities a window that holds `stored` events keeps.
pub fn severities_room(stored: u64, cap: usize) -> usize {
    cap.saturating_sub(usize::try_from(stored).unwrap_or(usize::MAX))
}

/// Rule 5: a checkpoint the store left alone because a newer writer's position is ahead.
/// Logged and counted the same on every backend; returns the partition, not to be committed.
pub fn fenced(c: &Checkpoint) -> u32 {
    tracing::warn!(source = %c.source, partition = c.partition, ours = c.next_offset,
        "a newer writer owns this partition; its checkpoint stays");
    metrics::counter!("citystream_stale_writes_fenced_total").increment(1);
    c.partition
}

/// One window's increment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowDelta {
    pub city: City,
    pub event_type: EventType,
    pub resolution: Resolution,
    /// Whether this is the base window (`--window`) rather than a rollup.
    pub base: bool,
    pub start: EventTime,
    pub counts: SeverityCounts,
    /// Severities in arrival order, at most the cap of them.
    pub severities: Severities,
}

impl WindowDelta {
    pub fn end(&self) -> EventTime {
        self.resolution.end_of(self.start)
    }

    /// Rule 4: when the window expires.
    pub fn expires_at(&self) -> EventTime {
        self.resolution.expiry(self.start)
    }
}

/// Which window: (span in ms, city, type, start), without formatting a key for every event.
pub type WindowId<'a> = (i64, &'a str, EventType, EventTime);

/// What a set of new events adds to the store, summed per key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects<'a> {
    /// The new events, in arrival order.
    pub new: Vec<&'a Accepted>,
    /// Window increments by window, every resolution (in no order).
    pub windows: foldhash::HashMap<WindowId<'a>, WindowDelta>,
    /// New alerts per severity.
    pub alerts: SeverityCounts,
}

impl<'a> Effects<'a> {
    /// Folds new events (rule 3), keeping at most `cap` severities per window increment.
    pub fn of(
        new: impl IntoIterator<Item = &'a Accepted>,
        resolutions: &Resolutions,
        cap: usize,
    ) -> Self {
        let mut effects = Effects::default();
        for a in new {
            effects.add(a, resolutions, cap);
        }
        effects
    }

    fn add(&mut self, a: &'a Accepted, resolutions: &Resolutions, cap: usize) {
        let e = &a.event;
        if a.is_alert() {
            self.alerts.add(e.severity);
        }
        for (resolution, start) in windows_of(a, resolutions) {
            let id = (
                resolution.span.as_millis(),
                e.city.as_str(),
                e.event_type,
                start,
            );
            let delta = self.windows.entry(id).or_insert_with(|| WindowDelta {
                city: e.city.clone(),
                event_type: e.event_type,
                resolution,
                base: resolutions.is_base(resolution),
                start,
                counts: SeverityCounts::default(),
                severities: Severities::default(),
            });
            delta.counts.add(e.severity);
            if delta.severities.len() < cap {
                delta.severities.push(e.severity);
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

/// A window's stored severities, read back.
pub fn severities_from_letters(letters: String) -> Result<Severities, StoreError> {
    Severities::from_letters(letters).map_err(StoreError::corrupt)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::model::{BatchRules, Record, Severity};

    fn accepted(id: &str, severity: Severity, late: bool) -> Accepted {
        let t = EventTime::from_millis(60_000);
        let event = CityEvent {
            event_id: id.into(),
            city: City::parse("SF").unwrap(),
            event_type: EventType::Traffic,
            severity,
            timestamp: t,
            description: "d".into(),
        };
        Accepted {
            ttl: t,
            placement: if late {
                Placement::Late { watermark: t }
            } else {
                Placement::Window {
                    start: EventTime::from_millis(0),
                    end: EventTime::from_millis(300_000),
                }
            },
            alerts: crate::model::Alerting::default().fire(&event),
            event,
            partition: 1,
            offset: 2,
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
        let effects = Effects::of(&events, &Resolutions::default(), 2);
        assert_eq!(effects.windows.len(), 3, "one window per resolution");
        let w = effects.windows.values().find(|w| w.base).unwrap();
        assert_eq!(w.start, EventTime::from_millis(0));
        assert_eq!(w.end(), EventTime::from_millis(300_000));
        for w in effects.windows.values() {
            assert_eq!(w.counts.total(), 3, "{}", w.resolution.name());
        }
        assert_eq!(w.severities.letters(), "lh");
        assert_eq!(effects.alerts.total(), 3);
        assert_eq!(effects.late_events().count(), 1);
        assert_eq!(effects.alert_events().count(), 3);
    }

    #[test]
    fn a_taken_key_is_a_repeat_or_a_dead_letter() {
        let mine = accepted("a", Severity::Low, false);
        let batch = WriteBatch {
            records: vec![
                Record::new(1, 1, None, Bytes::from_static(b"{1}")),
                Record::new(1, 2, None, Bytes::from_static(b"{2}")),
            ],
            ..WriteBatch::new("t", BatchRules::default())
        };
        let now = EventTime::from_millis(9);
        assert_eq!(found(&batch, &mine.event, &mine, now), Found::Repeat);
        let mut other = mine.event.clone();
        other.city = City::parse("LA").unwrap();
        let Found::Taken(dead) = found(&batch, &other, &mine, now) else {
            panic!("other content is a reuse");
        };
        assert_eq!(dead.kind, "duplicate_event_id");
        assert_eq!((dead.partition, dead.offset), (1, 2));
        assert_eq!(dead.payload_prefix(), b"{2}", "its record's bytes");
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
        let severities: Severities = all.into_iter().collect();
        assert_eq!(severities.letters(), "clhml");
        let back = severities_from_letters(severities.letters().to_owned()).expect("letters");
        assert_eq!(back.iter().collect::<Vec<_>>(), all);
        assert_eq!(
            serde_json::to_string(&back).expect("json"),
            r#"["critical","low","high","medium","low"]"#
        );
        let err = severities_from_letters("lmx".into()).expect_err("x is no severity");
        assert!(err.to_string().contains("'x'"), "{err}");
    }
}
