//! Where layout 3 puts things: the keys of every kind of item, and the shards that spread
//! whatever many writers share over several partition keys.
//!
//! | Item | Table | Partition key | Sort key |
//! |---|---|---|---|
//! | raw event | raw-events | `event_id` | `timestamp` (the seed's) |
//! | alert | alerts | `city`, or `<city>#<shard>` with alert shards, shard from the event id | `timestamp`#`event_id` |
//! | window | aggregations | `partition_key` = `city#type#start` (the seed's) | — |
//! | counters of a city | state | `c#<city>` | expiry day |
//! | counters of all | state | `c` | expiry day |
//! | late events of a city and type | state | `lg#<expiry day>#<shard>`, shard from the group | `<city>#<type>` |
//! | page of a list | state | `l#<list>#<shard>` | newest time, writer, first offset, n |
//! | city registry | state | `cities#<shard>` | city |
//! | checkpoint | state | `pos#<source>` | partition |
//!
//! Counter and window items carry, per writer (a source's partition), the offset below which
//! that partition's contributions are in them: `@<writer>`.

use xxhash_rust::xxh3::xxh3_64;

use super::items::pad;
use crate::model::{EventTime, EventType, Severity};

/// The layout of items this build writes, kept in `state` under `meta` / `layout`. Layout 1
/// kept full window values and checkpoints per replay offset; layout 2 applied each event in a
/// transaction with shared counters and an index on every raw event.
pub const LAYOUT: u32 = 3;

/// Shards of every shared key of the state table unless `init --dynamodb-shards` says otherwise.
pub const DEFAULT_SHARDS: u32 = 16;

/// Shards of a city's alerts unless `init --alert-shards` says otherwise: one, the seed's key.
pub const DEFAULT_ALERT_SHARDS: u32 = 1;

/// Most shards a layout may have (every list read queries all of them).
pub const MAX_SHARDS: u32 = 64;

const DAY_MS: i64 = 24 * 3_600_000;
const HOUR_MS: i64 = 3_600_000;

/// One partition of one source: whoever processes it is the only writer of its
/// contributions, so its offset orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Writer {
    source: u64,
    pub partition: u32,
}

impl Writer {
    pub fn new(source: &str, partition: u32) -> Self {
        Writer {
            source: xxh3_64(source.as_bytes()) & 0xffff_ffff_ffff,
            partition,
        }
    }

    /// The attribute holding the offset below which this writer's contributions are in an item.
    pub fn position_attr(&self) -> String {
        format!("@{:012x}.{}", self.source, self.partition)
    }

    /// A name unique to this writer and `offset`, for what it adds at that offset.
    pub fn at(&self, offset: u64) -> String {
        format!("{:012x}.{}.{offset:020}", self.source, self.partition)
    }
}

/// An alert's city key: the city itself with one alert shard (the seed's key, which the seed's
/// `aws dynamodb query … city = :city` reads), else `<city>#NN`, the shard from its event id,
/// so that one city's alerts spread evenly and a replay writes the same key.
pub fn alert_city(city: &str, event_id: &str, shards: u32) -> String {
    let shard = xxh3_64(event_id.as_bytes()) % u64::from(shards.max(1));
    alert_shard_key(city, shard as u32, shards)
}

/// The city key of one of a city's `shards` alert shards.
pub fn alert_shard_key(city: &str, shard: u32, shards: u32) -> String {
    if shards <= 1 {
        city.to_owned()
    } else {
        format!("{city}#{shard:02}")
    }
}

/// The shard of a city in the registry.
pub fn city_shard(city: &str, shards: u32) -> u32 {
    (xxh3_64(city.as_bytes()) % u64::from(shards)) as u32
}

pub fn cities_pk(shard: u32) -> String {
    format!("cities#{shard:02}")
}

/// Counters of one city, or of everything (`None`).
pub fn scope_pk(city: Option<&str>) -> String {
    match city {
        Some(city) => format!("c#{city}"),
        None => "c".to_owned(),
    }
}

/// Late-event counts per city and type of one expiry day.
pub fn late_groups_pk(day: i64, shard: u32) -> String {
    format!("lg#{}#{shard:02}", pad(day))
}

/// The shard of a late group (`late_group_sk`): groups spread over the layout's shards, so
/// that the writes of one day's late events do not all land on one partition key.
pub fn late_group_shard(group: &str, shards: u32) -> u32 {
    (xxh3_64(group.as_bytes()) % u64::from(shards.max(1))) as u32
}

pub fn late_group_sk(city: &str, event_type: EventType) -> String {
    format!("{city}#{event_type}")
}

/// The day in which `expiry` falls, as a sort key, and the hour of that day: counters are kept
/// per (day, hour) of the moment their rows expire, so a read drops the hours gone.
pub fn day_and_hour(expiry: EventTime) -> (i64, u32) {
    let ms = expiry.as_millis();
    (
        ms.div_euclid(DAY_MS),
        (ms.rem_euclid(DAY_MS) / HOUR_MS) as u32,
    )
}

pub fn day_sk(day: i64) -> String {
    pad(day)
}

/// When a day's counter item may go: a day after the day ends, once no read counts it.
pub fn day_expiry_secs(day: i64) -> i64 {
    (day + 2) * DAY_MS / 1000
}

/// Counter attributes of a city: its events, per type, per severity, and its late events per
/// type; of everything: all events, alerts per severity, late events, dead letters per kind.
pub mod attr {
    use super::{EventType, Severity};

    pub fn events(hour: u32) -> String {
        format!("{hour:02}e")
    }
    pub fn of_type(hour: u32, t: EventType) -> String {
        format!("{hour:02}t{}", t.index())
    }
    pub fn of_severity(hour: u32, s: Severity) -> String {
        format!("{hour:02}s{}", s.index())
    }
    pub fn late_of_type(hour: u32, t: EventType) -> String {
        format!("{hour:02}l{}", t.index())
    }
    pub fn alerts(hour: u32, s: Severity) -> String {
        format!("{hour:02}a{}", s.index())
    }
    pub fn late(hour: u32) -> String {
        format!("{hour:02}l")
    }
    pub fn dead(hour: u32, kind: &str) -> String {
        format!("{hour:02}x:{kind}")
    }
    pub fn late_group(hour: u32) -> String {
        format!("{hour:02}n")
    }

    /// The hour of a counter attribute, and the rest of its name.
    pub fn parse(name: &str) -> Option<(u32, &str)> {
        let hour = name.get(..2)?.parse().ok()?;
        Some((hour, name.get(2..)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_and_come_back() {
        let w = Writer::new("kafka:city-events", 3);
        assert_eq!(w, Writer::new("kafka:city-events", 3));
        assert_ne!(w, Writer::new("file:x", 3));
        assert!(w.position_attr().starts_with('@'));
        assert_eq!(alert_city("Chicago", "e1", 1), "Chicago");
        let key = alert_city("Chicago", "e1", 16);
        assert!(key.starts_with("Chicago#"));
        assert_eq!(key, alert_city("Chicago", "e1", 16));
        let shards: std::collections::HashSet<_> = (0..200)
            .map(|i| alert_city("SF", &format!("e{i}"), 16))
            .collect();
        assert_eq!(shards.len(), 16);
        let (day, hour) = day_and_hour(EventTime::from_millis(DAY_MS * 3 + HOUR_MS * 5 + 1));
        assert_eq!((day, hour), (3, 5));
        assert_eq!(
            attr::parse(&attr::dead(7, "malformed")),
            Some((7, "x:malformed"))
        );
    }
}
