//! Resolutions: the sizes at which windows are kept. The base window (`--window`, 5 minutes by
//! default) is the seed's query 2; the rollups (an hour, a day) count the same events in
//! coarser windows and are kept longer. A resolution is data, not a code path: the engine,
//! both stores and the API iterate over [`Resolutions`], so another rollup is another row of
//! [`ROLLUPS`] (and its retention flag).

use std::sync::Arc;

use super::{EventTime, Span};

/// The rollups kept beside the base window, finest first: their span and how long each of
/// their windows is kept after it ends, unless configured otherwise.
pub const ROLLUPS: [Resolution; 2] = [
    Resolution {
        span: Span::from_hours(1),
        retention: Span::from_days(400),
    },
    Resolution {
        span: Span::from_days(1),
        retention: Span::from_days(5 * 365),
    },
];

/// The base window's default size and retention.
pub const BASE: Resolution = Resolution {
    span: Span::from_mins(5),
    retention: Span::from_days(30),
};

/// Tumbling windows of `span` on event time, each kept `retention` after it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resolution {
    pub span: Span,
    pub retention: Span,
}

impl Resolution {
    /// How the API names it: its span (`5m`, `1h`, `1d`).
    pub fn name(&self) -> String {
        self.span.to_string()
    }

    /// The start of the window that holds `t`.
    pub fn start_of(&self, t: EventTime) -> EventTime {
        t.window_start(self.span)
    }

    /// The end of the window that starts at `start`.
    pub fn end_of(&self, start: EventTime) -> EventTime {
        start.saturating_add(self.span)
    }

    /// When the window that starts at `start` expires: its end plus the retention. The same
    /// for every event of the window, so writers agree on it whatever their order.
    pub fn expiry(&self, start: EventTime) -> EventTime {
        self.end_of(start).saturating_add(self.retention)
    }

    /// The earliest start of a window still kept at `now`.
    pub fn kept_from(&self, now: EventTime) -> EventTime {
        now.saturating_sub(self.retention).window_start(self.span)
    }
}

/// The resolutions kept, finest first: the base window, then each rollup whose span the base
/// window divides (a rollup is then exactly the sum of the windows it covers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolutions(Arc<[Resolution]>);

impl Default for Resolutions {
    fn default() -> Self {
        Resolutions::new(BASE, ROLLUPS).0
    }
}

impl Resolutions {
    /// The base window and the rollups it divides; also returns the rollups left out.
    pub fn new(
        base: Resolution,
        rollups: impl IntoIterator<Item = Resolution>,
    ) -> (Self, Vec<Resolution>) {
        let (kept, left_out): (Vec<Resolution>, Vec<Resolution>) =
            rollups.into_iter().partition(|r| {
                r.span > base.span && r.span.as_millis() % base.span.as_millis().max(1) == 0
            });
        let mut all = vec![base];
        all.extend(kept);
        (Resolutions(all.into()), left_out)
    }

    /// The base window (`--window`).
    pub fn base(&self) -> Resolution {
        self.0[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = Resolution> + '_ {
        self.0.iter().copied()
    }

    /// The resolution the API names `name`.
    pub fn named(&self, name: &str) -> Option<Resolution> {
        self.iter().find(|r| r.name() == name)
    }

    /// Whether `r` is the base window (the seed's table and key, on DynamoDB).
    pub fn is_base(&self, r: Resolution) -> bool {
        r.span == self.base().span
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> EventTime {
        EventTime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn the_default_keeps_five_minutes_an_hour_and_a_day() {
        let all = Resolutions::default();
        let names: Vec<String> = all.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["5m", "1h", "1d"]);
        assert_eq!(all.named("1h"), Some(ROLLUPS[0]));
        assert_eq!(all.named("7m"), None);
    }

    #[test]
    fn a_rollup_the_window_does_not_divide_is_left_out() {
        let base = Resolution {
            span: Span::from_mins(7),
            ..BASE
        };
        let (kept, left_out) = Resolutions::new(base, ROLLUPS);
        assert_eq!(kept.iter().count(), 1);
        assert_eq!(left_out, ROLLUPS);
        let hourly = Resolution {
            span: Span::from_hours(1),
            ..BASE
        };
        let (kept, left_out) = Resolutions::new(hourly, ROLLUPS);
        assert_eq!(
            kept.iter().map(|r| r.name()).collect::<Vec<_>>(),
            ["1h", "1d"]
        );
        assert_eq!(left_out, [ROLLUPS[0]], "the base is the hour already");
    }

    #[test]
    fn a_window_is_kept_for_its_retention_after_it_ends() {
        let hour = ROLLUPS[0];
        let start = at("2026-01-01T10:00:00Z");
        assert_eq!(hour.start_of(at("2026-01-01T10:59:59Z")), start);
        assert_eq!(hour.expiry(start), at("2027-02-05T11:00:00Z"));
        // Kept while its end + retention is after now.
        let now = hour.expiry(start);
        assert_eq!(hour.kept_from(now), at("2026-01-01T11:00:00Z"));
        let before = EventTime::from_millis(now.as_millis() - 1);
        assert_eq!(hour.kept_from(before), start);
    }
}
