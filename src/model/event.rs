//! A city event and the values it is made of. Once a [`CityEvent`] exists it is valid.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use super::{EventTime, EventType};

/// Longest city name accepted, in bytes.
pub const MAX_CITY_BYTES: usize = 64;
/// Longest description accepted, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;
/// Longest event id accepted, in bytes.
pub const MAX_EVENT_ID_BYTES: usize = 128;

/// The seed's cities; any other valid name is accepted too.
pub const SEED_CITIES: [&str; 6] = ["NYC", "LA", "Chicago", "SF", "Boston", "Seattle"];

macro_rules! closed_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, [$($variant:ident = $text:literal),+ $(,)?]) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Position in [`Self::ALL`]; handy for dense per-value counters.
            pub fn index(self) -> usize {
                self as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue { what: $what, value: s.to_owned(), expected: &[$($text),+] }),
                }
            }
        }
    };
}

closed_enum!(
    /// How bad it is, in increasing order.
    Severity, "severity",
    [Low = "low", Medium = "medium", High = "high", Critical = "critical"]
);

impl Severity {
    /// Its letter where a window keeps its severities ([`super::Severities`]).
    pub fn letter(self) -> u8 {
        b"lmhc"[self.index()]
    }

    /// The severity whose [`letter`](Self::letter) `b` is.
    pub fn from_letter(b: u8) -> Option<Severity> {
        match b {
            b'l' => Some(Severity::Low),
            b'm' => Some(Severity::Medium),
            b'h' => Some(Severity::High),
            b'c' => Some(Severity::Critical),
            _ => None,
        }
    }

    /// High and critical events are alerts.
    pub fn is_alert(self) -> bool {
        self >= Severity::High
    }
}

/// A value outside a closed set, such as `event_type=parade`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`, expected one of: {}", expected.join(", "))]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

/// Why a name is not a city.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCity {
    #[error("city is empty")]
    Empty,
    #[error("city is {0} bytes long, at most {MAX_CITY_BYTES} are allowed")]
    TooLong(usize),
    #[error("city contains a control character")]
    ControlCharacter,
    #[error(
        "city contains the invisible format character U+{0:04X} (bidi controls and zero-width characters can spoof a name)"
    )]
    FormatCharacter(u32),
}

/// Whether `c` is an invisible character that changes how the text around it shows: the
/// Unicode format characters (the bidi embeddings, overrides, isolates and marks, the
/// zero-width characters, the tag characters) and the invisible fillers and selectors. A name
/// holding one can display as another name.
pub fn is_format_char(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD | 0x034F | 0x061C | 0x0600..=0x0605 | 0x06DD | 0x070F | 0x115F | 0x1160
            | 0x180B..=0x180F | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F
            | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF9..=0xFFFB
            | 0x1D173..=0x1D17A | 0xE0000..=0xE007F | 0xE0100..=0xE01EF
    )
}

/// Whether `s` holds a control character. ASCII text, nearly every name and id, is checked a
/// byte at a time instead of a character at a time.
pub fn has_control_char(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes().any(|b| b.is_ascii_control())
    } else {
        s.chars().any(char::is_control)
    }
}

/// The first invisible format character in `s` ([`is_format_char`]); none is ASCII.
pub fn find_format_char(s: &str) -> Option<char> {
    if s.is_ascii() {
        None
    } else {
        s.chars().find(|&c| is_format_char(c))
    }
}

/// Whether `name` is 1 to `max` bytes of `A-Z a-z 0-9 - _ .`: the names that logs, metric
/// labels and files show as they are (rule and sink ids, API key names).
pub fn is_plain_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A city name: non-empty, at most 64 bytes, no control characters and no invisible format
/// characters ([`is_format_char`]). A name of up to 23 bytes, every real one, is kept inline:
/// an event's city costs no allocation, and a copy of it none either.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct City(SmolStr);

impl City {
    pub fn parse(s: impl AsRef<str>) -> Result<City, InvalidCity> {
        let s = s.as_ref();
        if s.is_empty() {
            Err(InvalidCity::Empty)
        } else if s.len() > MAX_CITY_BYTES {
            Err(InvalidCity::TooLong(s.len()))
        } else if has_control_char(s) {
            Err(InvalidCity::ControlCharacter)
        } else if let Some(c) = find_format_char(s) {
            Err(InvalidCity::FormatCharacter(c as u32))
        } else {
            Ok(City(SmolStr::new(s)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for City {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for City {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One valid city event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CityEvent {
    pub event_id: String,
    pub city: City,
    pub event_type: EventType,
    pub severity: Severity,
    pub timestamp: EventTime,
    pub description: String,
}

impl CityEvent {
    /// The event as one line of the JSON wire format.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, enums and a timestamp string cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether `other` is this event again: the same id, time and content.
    pub fn is_repeat_of(&self, other: &CityEvent) -> bool {
        self == other
    }

    /// `SF/traffic/high at 2026-11-25T10:00:05Z`, for messages about this event.
    pub fn summary(&self) -> String {
        format!(
            "{}/{}/{} at {}",
            self.city, self.event_type, self.severity, self.timestamp
        )
    }

    /// The description the original producer writes for this type and severity.
    pub fn seed_description(event_type: EventType, severity: Severity) -> String {
        match event_type {
            EventType::Traffic => format!("{severity} traffic congestion detected"),
            EventType::Weather => format!("{severity} weather condition reported"),
            EventType::Incident => {
                format!("{severity} incident reported, emergency services notified")
            }
            EventType::Construction => format!("{severity} construction work in progress"),
            other => format!("{severity} {other} reported"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cities_are_validated() {
        assert!(City::parse("SF").is_ok());
        assert!(City::parse("São Paulo").is_ok());
        assert_eq!(City::parse(""), Err(InvalidCity::Empty));
        assert_eq!(City::parse("a".repeat(65)), Err(InvalidCity::TooLong(65)));
        assert_eq!(City::parse("S\nF"), Err(InvalidCity::ControlCharacter));
        assert_eq!(
            City::parse("S\u{202e}F"),
            Err(InvalidCity::FormatCharacter(0x202E))
        );
        assert_eq!(
            City::parse("N\u{200b}YC"),
            Err(InvalidCity::FormatCharacter(0x200B))
        );
        for hidden in ['\u{e0041}', '\u{fe0f}', '\u{3164}', '\u{2066}'] {
            assert!(City::parse(format!("SF{hidden}")).is_err(), "{hidden:?}");
        }
    }

    #[test]
    fn enums_round_trip_and_explain_unknowns() {
        for s in Severity::ALL {
            assert_eq!(s.as_str().parse::<Severity>(), Ok(s));
        }
        let err = "severe".parse::<Severity>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown severity `severe`, expected one of: low, medium, high, critical"
        );
        assert!(Severity::Critical.is_alert() && Severity::High.is_alert());
        assert!(!Severity::Medium.is_alert());
    }
}
