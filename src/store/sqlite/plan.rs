//! What a batch adds, worked out beside the writer: while the writer inserts the keys (which
//! say which events are new), another core folds the window increments and encodes every
//! block as if every event were new, which it nearly always is. When one was not, both are
//! worked out again from the new events alone.

use std::sync::Arc;

use super::block::Entry;
use super::blocks::{self, Block};
use crate::model::alerting::{Fired, RuleRef, rules_text};
use crate::model::{Accepted, CityEvent, WriteBatch};
use crate::store::rules::Effects;

/// Batches smaller than this are worked out on the writer's thread: handing them over costs
/// more than it saves.
const ASIDE: usize = 1024;

/// How a batch's events fall into blocks, as indexes into `batch.events`.
pub(super) struct Plan {
    /// Every event's block.
    pub raw: Vec<Vec<usize>>,
    /// The alert blocks: the events an alert rule matched.
    pub alerts: Vec<Vec<usize>>,
}

impl Plan {
    pub fn of(batch: &WriteBatch) -> Plan {
        let events: Vec<&CityEvent> = batch.events.iter().map(|a| &a.event).collect();
        let alerting: Vec<usize> = (0..batch.events.len())
            .filter(|&i| batch.events[i].is_alert())
            .collect();
        let alert_events: Vec<&CityEvent> = alerting.iter().map(|&i| events[i]).collect();
        let alerts = blocks::cut(&alert_events)
            .into_iter()
            .map(|block| block.into_iter().map(|j| alerting[j]).collect())
            .collect();
        Plan {
            raw: blocks::cut(&events),
            alerts,
        }
    }
}

/// What the new events of a batch add: the window increments and the blocks.
pub(super) struct Adds<'a> {
    pub effects: Effects<'a>,
    /// A block per block of the plan, empty where none of its events is new.
    pub raw: Vec<Block>,
    pub alerts: Vec<Block>,
}

impl<'a> Adds<'a> {
    /// What the events `is_new` says are new add.
    pub fn of(batch: &'a WriteBatch, plan: &Plan, is_new: impl Fn(usize) -> bool) -> Self {
        let new = (0..batch.events.len()).filter(|&i| is_new(i));
        let rules = &batch.rules;
        Adds {
            effects: Effects::of(
                new.map(|i| &batch.events[i]),
                &rules.resolutions,
                rules.severities_cap,
            ),
            raw: raw_blocks(batch, &plan.raw, &is_new),
            alerts: alert_blocks(batch, &plan.alerts, &is_new),
        }
    }
}

/// Runs `keys` (the writer's work, returning which events are new) with what every event
/// would add worked out beside it, on another core for a large batch; returns both.
pub(super) fn beside_keys<'a, T>(
    batch: &'a WriteBatch,
    plan: &Plan,
    keys: impl FnOnce() -> T,
) -> (T, Adds<'a>) {
    let every = || Adds::of(batch, plan, |_| true);
    if batch.events.len() < ASIDE {
        return (keys(), every());
    }
    // A thread of its own, not the decoding pool's: queued behind the processor's decoding,
    // the work would hold the writer up.
    std::thread::scope(|scope| {
        let aside = scope.spawn(every);
        let done = keys();
        (done, aside.join().unwrap_or_else(|_| every()))
    })
}

/// Each block of `plan` holding an event `keep` takes, encoded with only those events.
fn raw_blocks(batch: &WriteBatch, plan: &[Vec<usize>], keep: impl Fn(usize) -> bool) -> Vec<Block> {
    let raw_entry = |i: usize| entry(&batch.events[i], None);
    plan.iter()
        .map(|members| kept(members, &keep).map(raw_entry).collect::<Vec<_>>())
        .map(|entries| Block::of(&entries))
        .collect()
}

/// [`raw_blocks`] of alerts, each event with the rules that made it one.
fn alert_blocks(
    batch: &WriteBatch,
    plan: &[Vec<usize>],
    keep: impl Fn(usize) -> bool,
) -> Vec<Block> {
    let mut texts = RulesTexts::default();
    plan.iter()
        .map(|members| {
            let of: Vec<(usize, usize)> = kept(members, &keep)
                .map(|i| (i, texts.of(&batch.events[i].alerts)))
                .collect();
            let entries: Vec<Entry<'_>> = of
                .iter()
                .map(|&(i, text)| entry(&batch.events[i], Some(&texts.texts[text])))
                .collect();
            Block::of(&entries)
        })
        .collect()
}

/// The rules texts of a batch's alerts, each written out once: alerts made by the same rules
/// hold the same `Arc`s.
#[derive(Default)]
struct RulesTexts {
    rules: Vec<Vec<*const RuleRef>>,
    texts: Vec<String>,
}

impl RulesTexts {
    /// The most kept; past them, each is written out anew.
    const MAX: usize = 16;

    fn of(&mut self, fired: &[Fired]) -> usize {
        let same = |known: &Vec<*const RuleRef>| {
            known.len() == fired.len()
                && known
                    .iter()
                    .zip(fired)
                    .all(|(k, f)| *k == Arc::as_ptr(&f.rule))
        };
        if let Some(known) = self.rules.iter().position(same) {
            return known;
        }
        if self.rules.len() < Self::MAX {
            self.rules
                .push(fired.iter().map(|f| Arc::as_ptr(&f.rule)).collect());
        }
        self.texts.push(rules_text(fired));
        self.texts.len() - 1
    }
}

fn kept<'p>(
    members: &'p [usize],
    keep: &'p impl Fn(usize) -> bool,
) -> impl Iterator<Item = usize> + 'p {
    members.iter().copied().filter(move |&i| keep(i))
}

fn entry<'a>(a: &'a Accepted, rules: Option<&'a str>) -> Entry<'a> {
    Entry {
        event: &a.event,
        ttl: a.ttl,
        rules,
    }
}
