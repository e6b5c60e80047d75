//! Increments of items that many writers share (windows, counters), applied exactly once
//! without transactions.
//!
//! A writer is one partition of one source: one processor at a time owns it, and it reads the
//! partition in offset order. Every shared item keeps, per writer, the offset below which that
//! writer's contributions are in it (`@<writer>`). An increment moves that position past the
//! records it adds, in the same `UpdateItem`, on the condition that the position is what the
//! increment assumed:
//!
//! - first it assumes the item holds nothing of the writer at or after the first record it adds
//!   (the position is absent or at most that offset), which is what the writer's own order
//!   makes true unless this batch, or part of it, was applied before;
//! - when that fails, it reads the item (`ALL_OLD` on the failure, or a consistent read) and
//!   adds exactly the records at or after the position it found, on the condition that the
//!   position is still that.
//!
//! So a batch written again after a crash, a timeout or a rebalance (even cut differently, even
//! by a stale processor at the same time as the new owner) adds each record once, and the
//! position and the values it produced are one item: one fact.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::db::{Db, sdk};
use super::items::{Item, n};
use super::keys::Writer;
use super::units::{Kind, item_size, units};
use crate::store::{Fault, StoreError};

/// Tries of one increment whose item keeps changing under it before the write fails (and the
/// runtime retries the batch).
const ATTEMPTS: usize = 16;

/// Most writers one `UpdateItem` guards: DynamoDB takes at most 300 operators and 4 KB in a
/// condition, and each writer's guard costs 4 operators and about 50 bytes. An item that more
/// writers add to in one batch gets one update per group of them.
const WRITERS_PER_UPDATE: usize = 16;

/// What one batch adds to one shared item: per writer, its records' deltas in offset order.
#[derive(Debug, Clone)]
pub struct Contribution<D> {
    parts: BTreeMap<Writer, Vec<(u64, D)>>,
}

impl<D> Default for Contribution<D> {
    fn default() -> Self {
        Contribution {
            parts: BTreeMap::new(),
        }
    }
}

/// What the increment assumes of a writer's position in the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Assumed {
    /// Absent, or at most this offset (nothing at or after it is in).
    AtMost(u64),
    /// Read from the item: exactly this (`None`: absent).
    Exactly(Option<u64>),
}

/// The records of one writer an increment adds.
#[derive(Debug)]
pub struct Pending<'a, D> {
    pub writer: Writer,
    pub parts: &'a [(u64, D)],
    assumed: Assumed,
}

impl<D> Contribution<D> {
    /// Adds a record's delta, in offset order among the writer's.
    pub fn push(&mut self, writer: Writer, offset: u64, delta: D) {
        let parts = self.parts.entry(writer).or_default();
        let at = parts.partition_point(|(o, _)| *o <= offset);
        parts.insert(at, (offset, delta));
    }

    /// The records not in the item yet: all of them when nothing is known of it, else those
    /// at or after each writer's stored position.
    fn pending(&self, known: Option<&Item>) -> Vec<Pending<'_, D>> {
        let mut out = Vec::new();
        for (writer, parts) in &self.parts {
            let Some(first) = parts.first().map(|(o, _)| *o) else {
                continue;
            };
            let (from, assumed) = match known {
                None => (first, Assumed::AtMost(first)),
                Some(item) => {
                    let stored = position(item, writer);
                    (stored.unwrap_or(0), Assumed::Exactly(stored))
                }
            };
            let skip = parts.partition_point(|(o, _)| *o < from);
            if skip < parts.len() {
                out.push(Pending {
                    writer: *writer,
                    parts: &parts[skip..],
                    assumed,
                });
            }
        }
        out
    }
}

/// A writer's position in an item.
pub fn position(item: &Item, writer: &Writer) -> Option<u64> {
    match item.get(&writer.position_attr()) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

/// An update expression being built, with its names and values.
#[derive(Debug, Default)]
pub struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    set: Vec<String>,
    add: Vec<String>,
    conditions: Vec<String>,
}

impl Expr {
    /// A placeholder for an attribute name.
    pub fn name(&mut self, attr: &str) -> String {
        let next = format!("#n{}", self.names.len());
        self.names.entry(attr.to_owned()).or_insert(next).clone()
    }

    /// A placeholder for a value.
    pub fn value(&mut self, v: AttributeValue) -> String {
        let key = format!(":v{}", self.values.len());
        self.values.insert(key.clone(), v);
        key
    }

    pub fn set(&mut self, attr: &str, v: AttributeValue) {
        let (name, value) = (self.name(attr), self.value(v));
        self.set.push(format!("{name} = {value}"));
    }

    pub fn add(&mut self, attr: &str, by: u64) {
        if by > 0 {
            let (name, value) = (self.name(attr), self.value(n(by)));
            self.add.push(format!("{name} {value}"));
        }
    }

    pub fn condition(&mut self, condition: String) {
        self.conditions.push(condition);
    }

    /// The guard of one writer's records, and the move of its position past them.
    fn guard<D>(&mut self, p: &Pending<'_, D>) {
        let name = self.name(&p.writer.position_attr());
        let condition = match p.assumed {
            Assumed::AtMost(first) => {
                let first = self.value(n(first));
                format!("(attribute_not_exists({name}) OR {name} <= {first})")
            }
            Assumed::Exactly(None) => format!("attribute_not_exists({name})"),
            Assumed::Exactly(Some(at)) => format!("{name} = {}", self.value(n(at))),
        };
        self.conditions.push(condition);
        let end = p.parts.last().map_or(0, |(o, _)| o + 1);
        let end = self.value(n(end));
        self.set.push(format!("{name} = {end}"));
    }

    fn apply(self, mut update: UpdateItemFluentBuilder) -> UpdateItemFluentBuilder {
        let mut expression = String::new();
        if !self.set.is_empty() {
            expression.push_str(&format!("SET {}", self.set.join(", ")));
        }
        if !self.add.is_empty() {
            expression.push_str(&format!(" ADD {}", self.add.join(", ")));
        }
        update = update.update_expression(expression);
        if !self.conditions.is_empty() {
            update = update.condition_expression(self.conditions.join(" AND "));
        }
        for (attr, name) in self.names {
            update = update.expression_attribute_names(name, attr);
        }
        for (key, value) in self.values {
            update = update.expression_attribute_values(key, value);
        }
        update
    }
}

/// Applies `contribution` to the item at `key` of `table`: `build` adds to the expression what
/// the pending records add (given the item as read, once a guard failed), and the guards and
/// positions are added here, for at most [`WRITERS_PER_UPDATE`] writers per update. Returns
/// the item as the last update left it and the number of records the updates added, or
/// `None` when everything was in it already. `kind` is what the write units are counted as,
/// `copies` how many times an update is written (1, plus an index holding every attribute).
pub async fn apply_guarded<D>(
    db: &Db,
    table: &str,
    key: &Item,
    contribution: &Contribution<D>,
    (kind, copies): (Kind, u64),
    build: impl Fn(&[Pending<'_, D>], Option<&Item>, &mut Expr),
) -> Result<Option<(Item, usize)>, StoreError> {
    let mut applied: Option<(Item, usize)> = None;
    let mut done: BTreeSet<Writer> = BTreeSet::new();
    let mut known: Option<Item> = None;
    let mut conflicts = 0;
    loop {
        let pending: Vec<Pending<'_, D>> = contribution
            .pending(known.as_ref())
            .into_iter()
            .filter(|p| !done.contains(&p.writer))
            .take(WRITERS_PER_UPDATE)
            .collect();
        if pending.is_empty() {
            return Ok(applied);
        }
        if conflicts == ATTEMPTS {
            return Err(StoreError::new(
                Fault::Retry,
                format!(
                    "{table} item {key:?} changed under {ATTEMPTS} increments in a row; the \
                     batch is written again"
                ),
            ));
        }
        if conflicts > 1 {
            // Another writer keeps changing the item: give it room (20 ms, doubling, up to 640 ms).
            let pause = 5u64 << conflicts.min(7);
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
        let mut expr = Expr::default();
        for p in &pending {
            expr.guard(p);
        }
        build(&pending, known.as_ref(), &mut expr);
        match send_guarded(db, table, key, expr, (kind, copies)).await? {
            Ok(item) => {
                let added: usize = pending.iter().map(|p| p.parts.len()).sum();
                done.extend(pending.iter().map(|p| p.writer));
                let before = applied.map_or(0, |(_, n)| n);
                applied = Some((item, before + added));
                (known, conflicts) = (None, 0);
            }
            Err(item) => {
                known = Some(item);
                conflicts += 1;
            }
        }
    }
}

/// Sends one guarded update: `Ok` with the item as it left it, or `Err` with the item as it
/// was when a guard failed.
async fn send_guarded(
    db: &Db,
    table: &str,
    key: &Item,
    expr: Expr,
    (kind, copies): (Kind, u64),
) -> Result<Result<Item, Item>, StoreError> {
    let request = db
        .client
        .update_item()
        .table_name(table)
        .set_key(Some(key.clone()))
        .return_values(ReturnValue::AllNew)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
    let sent = {
        let _permit = db.permit().await;
        expr.apply(request).send().await
    };
    let item = match sent {
        Ok(out) => Ok(out.attributes.unwrap_or_default()),
        Err(e) => {
            let Some(UpdateItemError::ConditionalCheckFailedException(failed)) =
                e.as_service_error()
            else {
                return Err(sdk("UpdateItem")(e));
            };
            Err(match failed.item() {
                Some(item) => item.clone(),
                None => db.get_consistent(table, key).await?.unwrap_or_default(),
            })
        }
    };
    // A failed condition costs what the write would have, in the table only.
    let (written, copies) = match &item {
        Ok(written) => (written, copies),
        Err(read) => (read, 1),
    };
    db.units.add(kind, copies * units(item_size(written)));
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_records_start_at_each_writers_stored_position() {
        let (a, b) = (Writer::new("s", 0), Writer::new("s", 1));
        let mut c = Contribution::default();
        for o in [3, 5, 9] {
            c.push(a, o, ());
        }
        c.push(b, 4, ());
        let all = c.pending(None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].assumed, Assumed::AtMost(3));
        let item = Item::from([(a.position_attr(), n(6)), (b.position_attr(), n(5))]);
        let rest = c.pending(Some(&item));
        assert_eq!(rest.len(), 1, "b's record at 4 is in already");
        assert_eq!(
            rest[0].parts.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            [9]
        );
        assert_eq!(rest[0].assumed, Assumed::Exactly(Some(6)));
        let mut e = Expr::default();
        e.guard(&rest[0]);
        assert_eq!(e.conditions, ["#n0 = :v0"]);
        assert_eq!(e.set, ["#n0 = :v1"]);
        assert_eq!(e.values[":v1"], n(10));
    }

    #[test]
    fn the_guards_of_one_update_fit_dynamodbs_condition_limits() {
        let mut c = Contribution::default();
        for p in 0..40 {
            c.push(Writer::new("kafka:city-events", p), u64::from(p), p);
            c.push(Writer::new("kafka:city-events", p), u64::from(p) + 100, p);
        }
        let all = c.pending(None);
        assert_eq!(all.len(), 40);
        let mut e = Expr::default();
        for p in all.iter().take(WRITERS_PER_UPDATE) {
            e.guard(p);
        }
        let condition = e.conditions.join(" AND ");
        assert!(condition.len() < 4096 && e.conditions.len() * 4 < 300);
        let records: usize = all.iter().map(|p| p.parts.len()).sum();
        assert_eq!(records, 80);
    }
}
