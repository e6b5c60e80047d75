//! Where layout 4 puts things: every table name and key format, in one place.
//!
//! | Item | Table | Partition key | Sort key |
//! |---|---|---|---|
//! | raw event | raw-events | `event_id` | `timestamp` (the seed's, [`fixed`]) |
//! | alert | alerts | `city`, or `<city>#NN` with alert shards, shard from the event id | `<timestamp>#<event_id>` |
//! | base window | aggregations | `partition_key` = `city#type#start` (the seed's) | — |
//! | rollup | aggregations | `partition_key` = `city#type#start#<resolution>` | — |
//! | a series' windows (index `by-series`) | aggregations | `series` = `city#type#<resolution>` | `window_start_ms` |
//! | counters of a city | state | `c#<city>` | expiry day |
//! | counters of all | state | `c` | expiry day |
//! | late events of a city and type | state | `lgp#<expiry period>#NN`, shard from the group | `<city>#<type>` |
//! | page of a list | state | `l#<list>#NN` | newest time, writer, first offset, n |
//! | dead letter | state | `dead#<writer>#<block>` | offset |
//! | dead letters by time (index `dead-by-time`) | state | `dls` = `dl#NN` | `dlt` = received, where from |
//! | city registry | state | `cities#NN` | city |
//! | source registry | state | `sources` | source |
//! | checkpoint | state | `pos#<source>` | partition |
//! | layout | state | `meta` | `layout` |
//!
//! `NN` is a shard, out of the layout's shards (`init --dynamodb-shards`). Counter and window
//! items carry, per writer (a source's partition), the offset below which that partition's
//! contributions are in them: `@<writer>` (see `guarded.rs`).

use xxhash_rust::xxh3::xxh3_64;

use crate::model::{EventTime, EventType, Resolution, Severity};

/// The layout of items this build writes, kept in `state` under `meta` / `layout`. Layout 1
/// kept full window values and checkpoints per replay offset; layout 2 applied each event in
/// a transaction; layout 3 kept only the base windows, and late groups per expiry day.
pub const LAYOUT: u32 = 4;

/// Shards of every shared key of the state table unless `init --dynamodb-shards` says otherwise.
pub const DEFAULT_SHARDS: u32 = 16;

/// Shards of a city's alerts unless `init --alert-shards` says otherwise: one, the seed's key.
pub const DEFAULT_ALERT_SHARDS: u32 = 1;

/// Most shards a layout may have (every list read queries all of them).
pub const MAX_SHARDS: u32 = 64;

const DAY_MS: i64 = 24 * 3_600_000;
const HOUR_MS: i64 = 3_600_000;
/// Days of expiry per late-group item: `/stats` reads the items of the periods still live.
const LATE_PERIOD_DAYS: i64 = 32;

/// The tables under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub raw: String,
    pub aggregations: String,
    pub alerts: String,
    pub state: String,
}

impl Tables {
    pub fn new(prefix: &str) -> Self {
        Tables {
            raw: format!("{prefix}raw-events"),
            aggregations: format!("{prefix}aggregations"),
            alerts: format!("{prefix}alerts"),
            state: format!("{prefix}state"),
        }
    }
}

/// The shards of a layout, as its `meta` item says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shards {
    /// Of every key of `state` that many writers share.
    pub shared: u32,
    /// Of a city's alerts.
    pub alerts: u32,
}

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

    /// A shorter name unique to this writer and `offset` that sorts as the two do: 17 bytes
    /// for an offset under 2^30, where [`at`](Self::at) takes 35. For a window's severity
    /// chunks, whose names are paid for at every update of their item.
    pub fn chunk(&self, offset: u64) -> String {
        let mut name = String::with_capacity(24);
        sortable(self.source, &mut name);
        sortable(u64::from(self.partition), &mut name);
        sortable(offset, &mut name);
        name
    }
}

/// Digits of six bits that sort as their bytes do.
const SORTED_DIGITS: &[u8; 64] =
    b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

/// Appends `n` in [`SORTED_DIGITS`], after a digit that counts them: a shorter number sorts
/// first, so that the text sorts as the number does, and a name of several is unambiguous.
fn sortable(mut n: u64, out: &mut String) {
    let mut digits = [0u8; 11];
    let mut len = 0;
    loop {
        digits[len] = SORTED_DIGITS[(n & 63) as usize];
        len += 1;
        n >>= 6;
        if n == 0 {
            break;
        }
    }
    out.push(char::from(SORTED_DIGITS[len]));
    out.extend(digits[..len].iter().rev().map(|&d| char::from(d)));
}

/// RFC 3339 with milliseconds, always the same width, so that strings sort like times.
pub fn fixed(t: EventTime) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t.as_millis())
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| pad(t.as_millis()))
}

/// Milliseconds, zero-padded so that strings sort like numbers.
pub fn pad(ms: i64) -> String {
    format!("{:015}", ms.max(0))
}

fn shard_of(name: &str, shards: u32) -> u32 {
    (xxh3_64(name.as_bytes()) % u64::from(shards.max(1))) as u32
}

/// An alert's city key: the city itself with one alert shard (the seed's key, which the seed's
/// `aws dynamodb query … city = :city` reads), else `<city>#NN`, the shard from its event id,
/// so that one city's alerts spread evenly and a replay writes the same key.
pub fn alert_city(city: &str, event_id: &str, shards: u32) -> String {
    alert_shard_key(city, shard_of(event_id, shards), shards)
}

/// The city key of one of a city's `shards` alert shards.
pub fn alert_shard_key(city: &str, shard: u32, shards: u32) -> String {
    if shards <= 1 {
        city.to_owned()
    } else {
        format!("{city}#{shard:02}")
    }
}

/// The alerts table's sort key: `fixed(ts)#event_id`.
pub fn alert_sort_key(t: EventTime, event_id: &str) -> String {
    format!("{}#{event_id}", fixed(t))
}

/// A window's key: the seed's `city#type#start` for the base window, with the resolution after
/// it for a rollup ([`crate::model::window_key`], as the API shows it).
pub fn window_key(
    city: &str,
    event_type: EventType,
    start: EventTime,
    resolution: Resolution,
    base: bool,
) -> String {
    crate::model::window_key(city, event_type, start, (!base).then_some(resolution))
}

/// The windows of one city, type and resolution, in the index `by-series`.
pub fn series(city: &str, event_type: EventType, resolution: Resolution) -> String {
    format!("{city}#{event_type}#{}", resolution.name())
}

/// The shard of a city in the registry.
pub fn city_shard(city: &str, shards: u32) -> u32 {
    shard_of(city, shards)
}

pub fn cities_pk(shard: u32) -> String {
    format!("cities#{shard:02}")
}

pub const SOURCES_PK: &str = "sources";

/// Counters of one city, or of everything (`None`).
pub fn scope_pk(city: Option<&str>) -> String {
    match city {
        Some(city) => format!("c#{city}"),
        None => "c".to_owned(),
    }
}

/// The day in which `expiry` falls, and the hour of that day: counters are kept per (day,
/// hour) of the moment their rows expire, so a read drops the hours gone.
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

/// The period of expiry days a late group's item covers.
pub fn late_period(day: i64) -> i64 {
    day.div_euclid(LATE_PERIOD_DAYS)
}

/// The days of a period.
pub fn late_period_days(period: i64) -> std::ops::Range<i64> {
    period * LATE_PERIOD_DAYS..(period + 1) * LATE_PERIOD_DAYS
}

/// Late-event counts per city and type of one expiry period, in one of the layout's shards.
pub fn late_groups_pk(period: i64, shard: u32) -> String {
    format!("lgp#{}#{shard:02}", pad(period))
}

/// The shard of a late group (`late_group_sk`): groups spread over the layout's shards, so
/// that the writes of one period's late events do not all land on one partition key.
pub fn late_group_shard(group: &str, shards: u32) -> u32 {
    shard_of(group, shards)
}

pub fn late_group_sk(city: &str, event_type: EventType) -> String {
    format!("{city}#{event_type}")
}

/// The pages of a list, in one of the layout's shards.
pub fn list_pk(list: &str, shard: u32) -> String {
    format!("l#{list}#{shard:02}")
}

/// The list of a city's events.
pub fn events_list(city: &str) -> String {
    format!("ev:{city}")
}

/// The list of every alert.
pub const ALERTS_LIST: &str = "al";

/// The list of every late event.
pub const LATE_LIST: &str = "lt";

/// The list of a city's late events.
pub fn late_list(city: &str) -> String {
    format!("lt:{city}")
}

/// Dead letters of one partition per partition key: a hostile stream spreads over keys.
const DEAD_BLOCK: u64 = 1024;

/// A dead letter's partition key and sort key: where its record is, so a replay finds it.
pub fn dead_pk_sk(source: &str, partition: u32, offset: u64) -> (String, String) {
    let writer = Writer::new(source, partition);
    (
        format!("dead#{}#{}", writer.at(0), offset / DEAD_BLOCK),
        format!("{offset:020}"),
    )
}

/// Shards of the deliveries' indexes: `due` per sink, and `deliveries-by-time`.
pub const DELIVERY_SHARDS: u32 = 4;

/// A delivery's item in `state`: `dv#<id>` / `d`.
pub fn delivery_key(id: &str) -> (String, String) {
    (format!("dv#{id}"), "d".to_owned())
}

/// The shard of the deliveries' indexes a delivery is in.
pub fn delivery_shard(id: &str) -> u32 {
    shard_of(id, DELIVERY_SHARDS)
}

/// One sink's shard of the index `due`, which holds pending deliveries by their next attempt.
pub fn due_pk(sink: &str, shard: u32) -> String {
    format!("{sink}#{shard}")
}

/// One shard of the index `deliveries-by-time`.
pub fn deliveries_pk(shard: u32) -> String {
    format!("dv#{shard}")
}

/// A delivery's place in `deliveries-by-time`: when it was stored, then its id.
pub fn delivery_order(created_at: EventTime, id: &str) -> String {
    format!("{}#{id}", pad(created_at.as_millis()))
}

/// One shard of the index `dead-by-time`.
pub fn dead_index_pk(shard: u32) -> String {
    format!("dl#{shard:02}")
}

/// The shard of the index `dead-by-time` a dead letter is listed in.
pub fn dead_shard(offset: u64, shards: u32) -> String {
    dead_index_pk((offset % u64::from(shards.max(1))) as u32)
}

/// A dead letter's place in `dead-by-time`: received, then where from.
pub fn dead_order(received_at: EventTime, source: &str, partition: u32, offset: u64) -> String {
    format!(
        "{}#{source}#{partition:010}#{offset:020}",
        pad(received_at.as_millis())
    )
}

/// The checkpoints of a source.
pub fn checkpoints_pk(source: &str) -> String {
    format!("pos#{source}")
}

/// A checkpoint's sort key, under [`checkpoints_pk`].
pub fn checkpoint_sk(partition: u32) -> String {
    format!("{partition:010}")
}

/// The item that says which layout the tables hold, and its shards: partition and sort key.
pub const LAYOUT_PK_SK: (&str, &str) = ("meta", "layout");

/// Counter attributes. In an item a counter is named by the hour of the day its rows expire
/// in, then what it counts ([`attr::at`]): of a city, its events, per type, per severity, and
/// its late events per type; of everything, all events, alerts per severity, late events, and
/// dead letters per kind. A read sums a name over the hours still live.
pub mod attr {
    use super::{EventType, Severity};

    pub const EVENTS: &str = "e";
    pub const LATE: &str = "l";
    /// The start of the name of a count of dead letters; the kind follows.
    pub const DEAD: &str = "x:";

    /// The attribute of counter `name` of the rows expiring in `hour`.
    pub fn at(hour: u32, name: &str) -> String {
        format!("{hour:02}{name}")
    }

    /// The hour of a counter attribute, and the counter's name.
    pub fn parse(name: &str) -> Option<(u32, &str)> {
        let hour = name.get(..2)?.parse().ok()?;
        Some((hour, name.get(2..)?))
    }

    /// A type's counter: `t0` to `t3` for the seed's types (their fixed places), `t_<name>`
    /// for any other, whose place depends on the configuration.
    pub fn of_type(t: EventType) -> String {
        typed("t", t)
    }
    pub fn of_severity(s: Severity) -> String {
        format!("s{}", s.index())
    }
    pub fn late_of_type(t: EventType) -> String {
        typed("l", t)
    }

    /// The type a counter of [`of_type`] or [`late_of_type`] (`prefix` `t` or `l`) counts.
    pub fn type_of(prefix: &str, name: &str) -> Option<EventType> {
        let rest = name.strip_prefix(prefix)?;
        match rest.strip_prefix('_') {
            Some(named) => EventType::stored(named).ok(),
            None => EventType::SEED.get(rest.parse::<usize>().ok()?).copied(),
        }
    }

    fn typed(prefix: &str, t: EventType) -> String {
        match t.index() {
            i if i < EventType::SEED.len() => format!("{prefix}{i}"),
            _ => format!("{prefix}_{t}"),
        }
    }
    pub fn alerts(s: Severity) -> String {
        format!("a{}", s.index())
    }
    pub fn dead(kind: &str) -> String {
        format!("{DEAD}{kind}")
    }

    /// A late group's count of the events expiring in one hour of one day: `d<day>h<hour>`.
    pub fn late_group(day: i64, hour: u32) -> String {
        format!("d{day}h{hour:02}")
    }

    /// The day and hour of a late group's count.
    pub fn parse_late_group(name: &str) -> Option<(i64, u32)> {
        let (day, hour) = name.strip_prefix('d')?.split_once('h')?;
        Some((day.parse().ok()?, hour.parse().ok()?))
    }
}

/// A page of a list: sorted by its newest entry's time, then named by the batch that wrote it
/// (its writer and first offset) and its number in that batch.
pub fn list_page_sk(newest: i64, writer: Writer, first: u64, n_page: usize) -> String {
    format!("{}#{}#{n_page:04}", pad(newest), writer.at(first))
}

/// The newest time of a page, from its sort key.
pub fn list_page_newest(sk: &str) -> Option<i64> {
    sk.split('#').next()?.parse().ok()
}

/// A page's shard: a hash of what the page is, so that the pages of every processor spread
/// evenly over the shards, and a batch cut the same way again writes the same keys.
pub fn list_page_shard(list: &str, writer: Writer, first: u64, n_page: usize, shards: u32) -> u32 {
    shard_of(&format!("{list}#{}#{n_page}", writer.at(first)), shards)
}

/// Layout 3's keys that layout 4 no longer writes, for the migration (`migrate.rs`).
pub mod layout3 {
    use super::{EventType, pad};

    /// The windows' indexes: a city's, and a city and type's (`city_type`, by start).
    pub const INDEXES: [&str; 2] = ["by-city-window", SERIES_INDEX];
    pub const SERIES_INDEX: &str = "by-city-type-window";

    pub fn city_type(city: &str, event_type: EventType) -> String {
        format!("{city}#{event_type}")
    }

    /// Late groups of one expiry day.
    pub fn late_groups_pk(day: i64, shard: u32) -> String {
        format!("lg#{}#{shard:02}", pad(day))
    }

    /// The hour of a late group's count (`HHn`).
    pub fn late_group_hour(name: &str) -> Option<u32> {
        name.strip_suffix('n')?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BASE, ROLLUPS};

    #[test]
    fn chunk_names_are_short_unique_and_sort_as_writer_and_offset_do() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut named: Vec<((Writer, u64), String)> = Vec::new();
        for i in 0..2_000 {
            let writer = Writer::new(&format!("source-{}", next() % 3), (next() % 20) as u32);
            // Offsets of every length, the edges of each included.
            let offset = match i % 4 {
                0 => next() >> (next() % 64),
                1 => (1 << (next() % 64)) - 1,
                2 => 1 << (next() % 64),
                _ => next() % 1_000,
            };
            named.push(((writer, offset), writer.chunk(offset)));
        }
        named.push((
            (Writer::new("s", u32::MAX), u64::MAX),
            Writer::new("s", u32::MAX).chunk(u64::MAX),
        ));
        let mut by_name = named.clone();
        by_name.sort_by(|a, b| a.1.cmp(&b.1));
        named.sort();
        named.dedup();
        by_name.dedup();
        assert_eq!(
            named, by_name,
            "names sort as (writer, offset), one name per pair"
        );
        let short = Writer::new("city-events", 5).chunk((1 << 30) - 1);
        assert_eq!(short.len(), 17, "{short}");
        assert_eq!(
            Writer::new("s", u32::MAX).chunk(u64::MAX).len(),
            28,
            "the longest"
        );
    }

    #[test]
    fn type_counters_name_the_seeds_by_place_and_others_by_name() {
        let flood = EventType::stored("flood").expect("a type");
        assert_eq!(attr::of_type(EventType::Weather), "t1");
        assert_eq!(attr::late_of_type(flood), "l_flood");
        assert_eq!(attr::type_of("t", "t1"), Some(EventType::Weather));
        assert_eq!(attr::type_of("l", "l_flood"), Some(flood));
        assert_eq!(attr::type_of("t", "t9"), None);
        assert_eq!(attr::type_of("t", "s1"), None);
    }

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
            attr::parse(&attr::at(7, &attr::dead("malformed"))),
            Some((7, "x:malformed"))
        );
        assert_eq!(
            attr::parse_late_group(&attr::late_group(20_001, 7)),
            Some((20_001, 7))
        );
        assert!(late_period_days(late_period(20_001)).contains(&20_001));
    }

    #[test]
    fn a_base_window_keeps_the_seeds_key_and_a_rollup_names_its_resolution() {
        let t = EventTime::parse_rfc3339("2026-11-25T10:00:00Z").unwrap();
        let seed = "Chicago#traffic#2026-11-25T10:00:00Z";
        assert_eq!(
            window_key("Chicago", EventType::Traffic, t, BASE, true),
            seed
        );
        assert_eq!(
            window_key("Chicago", EventType::Traffic, t, ROLLUPS[0], false),
            format!("{seed}#1h")
        );
        assert_eq!(
            series("Chicago", EventType::Traffic, BASE),
            "Chicago#traffic#5m"
        );
    }
}
