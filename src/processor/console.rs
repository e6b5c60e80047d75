//! Query 4: a live table of counts by city × event_type × severity, like the seed's Spark
//! console sink in complete mode.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::{EventType, RawEvent, Severity, SeverityCounts};

/// Counts of the valid events this process has seen.
#[derive(Debug, Clone, Default)]
pub struct ConsoleTable {
    counts: BTreeMap<(String, EventType), SeverityCounts>,
    batches: u64,
}

impl ConsoleTable {
    pub fn observe(&mut self, raw: &[RawEvent]) {
        self.batches += 1;
        for r in raw {
            let key = (r.event.city.as_str().to_owned(), r.event.event_type);
            self.counts.entry(key).or_default().add(r.event.severity);
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
            let total: u64 = c.0.iter().sum();
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
