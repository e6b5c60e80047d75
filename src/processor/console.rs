//! Query 4: a live table of counts by city × event_type × severity, like the seed's Spark
//! console sink in complete mode. The first [`CONSOLE_CITIES`] cities get rows of their own;
//! any further ones are summed under `(other)`, so the table stays readable and bounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::{Accepted, EventType, Severity, SeverityCounts};

/// Cities shown by name; the rest share one row per type.
pub const CONSOLE_CITIES: usize = 64;
const OTHER: &str = "(other)";

/// Counts of the valid events this process has seen.
#[derive(Debug, Clone, Default)]
pub struct ConsoleTable {
    counts: BTreeMap<(String, EventType), SeverityCounts>,
    cities: std::collections::BTreeSet<String>,
    batches: u64,
}

impl ConsoleTable {
    pub fn observe(&mut self, events: &[Accepted]) {
        self.batches += 1;
        for a in events {
            let city = a.event.city.as_str();
            let named = self.cities.contains(city)
                || (self.cities.len() < CONSOLE_CITIES && self.cities.insert(city.to_owned()));
            let row = if named { city } else { OTHER };
            let key = (row.to_owned(), a.event.event_type);
            self.counts.entry(key).or_default().add(a.event.severity);
        }
    }

    /// The table as text, one row per city and type.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rule = "+------------+--------------+-------+--------+-------+----------+-------+";
        let _ = writeln!(out, "CityStream console — batch {}", self.batches);
        let _ = writeln!(out, "{rule}");
        let _ = writeln!(
            out,
            "| {:<10} | {:<12} | {:>5} | {:>6} | {:>5} | {:>8} | {:>5} |",
            "city", "event_type", "low", "medium", "high", "critical", "total"
        );
        let _ = writeln!(out, "{rule}");
        for ((city, event_type), c) in &self.counts {
            let total = c.total();
            let _ = writeln!(
                out,
                "| {:<10} | {:<12} | {:>5} | {:>6} | {:>5} | {:>8} | {:>5} |",
                city,
                event_type.as_str(),
                c.get(Severity::Low),
                c.get(Severity::Medium),
                c.get(Severity::High),
                c.get(Severity::Critical),
                total
            );
        }
        let _ = writeln!(out, "{rule}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{City, CityEvent, EventTime, Placement};

    fn accepted(city: &str) -> Accepted {
        Accepted {
            event: CityEvent {
                event_id: city.into(),
                city: City::parse(city).unwrap(),
                event_type: EventType::Traffic,
                severity: Severity::Low,
                timestamp: EventTime::from_millis(0),
                description: String::new(),
            },
            ttl: EventTime::from_millis(1),
            placement: Placement::Window {
                start: EventTime::from_millis(0),
                end: EventTime::from_millis(1),
            },
            alerts: Default::default(),
            partition: 0,
            offset: 0,
        }
    }

    #[test]
    fn the_table_has_a_row_per_city_up_to_a_bound() {
        let mut table = ConsoleTable::default();
        let events: Vec<Accepted> = (0..CONSOLE_CITIES + 10)
            .map(|i| accepted(&format!("c{i:03}")))
            .collect();
        table.observe(&events);
        table.observe(&events[..1]);
        let text = table.render();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("| c0")).count(),
            CONSOLE_CITIES
        );
        let other = text.lines().find(|l| l.contains(OTHER)).unwrap();
        assert!(other.trim_end().ends_with("10 |"), "{other}");
        assert!(
            text.contains("| c000       | traffic      |     2 |"),
            "{text}"
        );
    }
}
