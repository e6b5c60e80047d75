//! Write units, counted the way DynamoDB bills them, because an emulator does not: an item
//! written costs its size rounded up to the next KB (at least one unit), an update the size of
//! the item it leaves, a condition that fails as much as the write would have, and each index
//! entry written one more. Counted per kind of item in `citystream_dynamodb_write_units_total`
//! and in [`WriteUnits`], which `bench` prints.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::types::AttributeValue;

use super::items::Item;

/// What a write unit was spent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A raw event's item (an `INSERT` that also decides whether the event is new).
    Raw,
    /// An alert's item.
    Alert,
    /// A window's item, and its entry in the index `by-series`, written with every update (the
    /// index holds every attribute).
    Window,
    /// Counter items (per city, in all, late groups).
    Counter,
    /// Pages of the time-ordered lists (a city's events, alerts, late events, dead letters).
    List,
    /// Checkpoints, and the registries of sources and cities.
    Position,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Raw,
        Kind::Alert,
        Kind::Window,
        Kind::Counter,
        Kind::List,
        Kind::Position,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Alert => "alert",
            Kind::Window => "window",
            Kind::Counter => "counter",
            Kind::List => "list",
            Kind::Position => "position",
        }
    }
}

/// Write units spent by one store, per kind.
#[derive(Debug, Default)]
pub struct WriteUnits([AtomicU64; 6]);

impl WriteUnits {
    pub fn add(&self, kind: Kind, units: u64) {
        self.0[kind as usize].fetch_add(units, Ordering::Relaxed);
        metrics::counter!("citystream_dynamodb_write_units_total", "kind" => kind.as_str())
            .increment(units);
    }

    /// Units for writing `item` (its size, rounded up to whole KB).
    pub fn item(&self, kind: Kind, item: &Item) {
        self.add(kind, units(item_size(item)));
    }

    pub fn get(&self, kind: Kind) -> u64 {
        self.0[kind as usize].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        Kind::ALL.iter().map(|k| self.get(*k)).sum()
    }
}

/// Write units for an item of `size` bytes: one per started KB, at least one.
pub fn units(size: usize) -> u64 {
    size.div_ceil(1024).max(1) as u64
}

/// An item's size as DynamoDB counts it: each attribute's name plus its value.
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, v)| name.len() + value_size(v))
        .sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, e)| 1 + k.len() + value_size(e))
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// A number: one byte per two significant digits, plus one.
fn number_size(n: &str) -> usize {
    let digits = n
        .trim_start_matches('-')
        .split(['e', 'E'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.div_ceil(2) + 1
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn sizes_follow_dynamodbs_rules() {
        assert_eq!(number_size("0"), 1);
        assert_eq!(number_size("1234"), 3);
        assert_eq!(number_size("-1000"), 2);
        let item: Item = HashMap::from([
            ("id".into(), AttributeValue::S("abc".into())),
            ("n".into(), AttributeValue::N("12".into())),
            (
                "l".into(),
                AttributeValue::L(vec![AttributeValue::S("x".into())]),
            ),
        ]);
        assert_eq!(item_size(&item), (2 + 3) + (1 + 2) + (1 + 3 + 2));
        assert_eq!(units(0), 1);
        assert_eq!(units(1024), 1);
        assert_eq!(units(1025), 2);
    }
}
