//! Event time: milliseconds since the Unix epoch, always UTC.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in event time, in milliseconds since the Unix epoch (UTC).
///
/// Parsing accepts any RFC 3339 timestamp (fractional seconds, numeric offsets) and
/// normalises it to UTC; precision below a millisecond is truncated. Formatting writes
/// RFC 3339 UTC with a literal `Z`: whole seconds as `2026-11-25T10:00:05Z` (the original
/// producer's format), otherwise with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(i64);

/// A span of event time in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(i64);

impl Span {
    pub const fn from_millis(ms: i64) -> Self {
        Span(ms)
    }
    pub const fn from_secs(s: i64) -> Self {
        Span(s * 1000)
    }
    pub const fn from_mins(m: i64) -> Self {
        Span(m * 60_000)
    }
    pub const fn from_hours(h: i64) -> Self {
        Span(h * 3_600_000)
    }
    pub const fn from_days(d: i64) -> Self {
        Span(d * 86_400_000)
    }
    pub const fn as_millis(self) -> i64 {
        self.0
    }
}

/// The largest unit that divides a span exactly: `5m`, `1h`, `30d`, `1500ms`. What clap shows
/// as a default and what `--window` names a resolution by; [`Span::parse`] reads it back.
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(i64, &str); 4] = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
        ];
        let ms = self.0;
        match UNITS.iter().find(|(unit, _)| ms != 0 && ms % unit == 0) {
            Some((unit, name)) => write!(f, "{}{name}", ms / unit),
            None => write!(f, "{ms}ms"),
        }
    }
}

impl Span {
    /// A span in humantime's syntax (`5m`, `10min`, `30days`, `1h 30m`).
    pub fn parse(s: &str) -> Result<Span, String> {
        humantime::parse_duration(s)
            .map(Span::from)
            .map_err(|e| format!("`{s}`: {e} (e.g. 5m, 1h, 30d)"))
    }
}

impl std::str::FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Span, String> {
        Span::parse(s)
    }
}

impl From<std::time::Duration> for Span {
    fn from(d: std::time::Duration) -> Self {
        Span(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

impl EventTime {
    pub const fn from_millis(ms: i64) -> Self {
        EventTime(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The wall clock, now.
    pub fn now() -> Self {
        EventTime(Utc::now().timestamp_millis())
    }

    /// Parses an RFC 3339 timestamp and normalises it to UTC.
    pub fn parse_rfc3339(s: &str) -> Result<Self, chrono::ParseError> {
        DateTime::parse_from_rfc3339(s).map(|t| EventTime(t.timestamp_millis()))
    }

    pub fn to_rfc3339(self) -> String {
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            // Unreachable for times that came from `parse_rfc3339`; keep the number visible.
            None => format!("@{}ms", self.0),
        }
    }

    /// Start of the tumbling window of `size` that holds this instant.
    pub fn window_start(self, size: Span) -> EventTime {
        EventTime(self.0.div_euclid(size.0) * size.0)
    }

    pub fn saturating_add(self, span: Span) -> EventTime {
        EventTime(self.0.saturating_add(span.0))
    }

    pub fn saturating_sub(self, span: Span) -> EventTime {
        EventTime(self.0.saturating_sub(span.0))
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for EventTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl std::str::FromStr for EventTime {
    type Err = chrono::ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventTime::parse_rfc3339(s)
    }
}

impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::parse_str(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises_to_utc() {
        let z = EventTime::parse_rfc3339("2026-11-25T10:00:05Z").unwrap();
        let off = EventTime::parse_rfc3339("2026-11-25T11:00:05+01:00").unwrap();
        let frac = EventTime::parse_rfc3339("2026-11-25T10:00:05.250Z").unwrap();
        assert_eq!(z, off);
        assert_eq!(frac.as_millis() - z.as_millis(), 250);
        assert_eq!(z.to_rfc3339(), "2026-11-25T10:00:05Z");
        assert_eq!(frac.to_rfc3339(), "2026-11-25T10:00:05.250Z");
        assert!(EventTime::parse_rfc3339("2026-11-25 10:00:05").is_err());
    }

    #[test]
    fn spans_print_in_their_largest_exact_unit_and_read_back() {
        for (span, text) in [
            (Span::from_mins(5), "5m"),
            (Span::from_hours(1), "1h"),
            (Span::from_days(400), "400d"),
            (Span::from_secs(90), "90s"),
            (Span::from_millis(1500), "1500ms"),
            (Span::from_millis(0), "0ms"),
        ] {
            assert_eq!(span.to_string(), text);
            assert_eq!(Span::parse(text), Ok(span));
        }
        assert!(Span::parse("soon").is_err());
    }

    #[test]
    fn window_start_floors_also_before_the_epoch() {
        let five = Span::from_mins(5);
        let t = EventTime::parse_rfc3339("2026-11-25T10:04:59.999Z").unwrap();
        assert_eq!(t.window_start(five).to_rfc3339(), "2026-11-25T10:00:00Z");
        assert_eq!(
            EventTime::from_millis(-1).window_start(five).as_millis(),
            -300_000
        );
    }
}
