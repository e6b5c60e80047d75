//! A batch's blocks, planned before its keys are written and encoded beside the writer: while
//! the writer inserts the keys, another core encodes every block as if every event were new,
//! which it nearly always is. A block holding an event that was not new is encoded again,
//! without it, once the keys have said which events are.

use std::sync::Arc;
use std::sync::mpsc;

use super::block::Entry;
use super::blocks::{self, Block};
use crate::model::alerting::{Fired, RuleRef, rules_text};
use crate::model::{Accepted, CityEvent, WriteBatch};
use crate::store::{Fault, StoreError};

/// Batches smaller than this are encoded on the writer's thread: handing them over costs
/// more than it saves.
const ENCODE_ASIDE: usize = 1024;

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

/// Every block of a plan, encoded.
pub(super) struct Encoded {
    pub raw: Vec<Block>,
    pub alerts: Vec<Block>,
}

/// The blocks of `plan`, encoded on another core for a large batch.
pub(super) struct Pending(mpsc::Receiver<Encoded>);

impl Pending {
    pub fn start(batch: &Arc<WriteBatch>, plan: &Arc<Plan>) -> Pending {
        let (sender, receiver) = mpsc::sync_channel(1);
        let aside = batch.events.len() >= ENCODE_ASIDE;
        let (batch, plan) = (batch.clone(), plan.clone());
        let encode = move || {
            let all = |_: usize| true;
            let encoded = Encoded {
                raw: raw_blocks(&batch, &plan.raw, all),
                alerts: alert_blocks(&batch, &plan.alerts, all),
            };
            // The writer gone (its transaction failed) has no use for them.
            let _ = sender.send(encoded);
        };
        if aside {
            rayon::spawn(encode);
        } else {
            encode();
        }
        Pending(receiver)
    }

    pub fn wait(self) -> Result<Encoded, StoreError> {
        self.0
            .recv()
            .map_err(|e| StoreError::caused(Fault::Retry, "encoding a batch's blocks", e))
    }
}

/// Each block of `plan` holding an event `keep` takes, encoded with only those events.
pub(super) fn raw_blocks(
    batch: &WriteBatch,
    plan: &[Vec<usize>],
    keep: impl Fn(usize) -> bool,
) -> Vec<Block> {
    let entry = |i: usize| entry(&batch.events[i], None);
    plan.iter()
        .map(|members| kept(members, &keep).map(entry).collect::<Vec<_>>())
        .map(|entries| Block::of(&entries))
        .collect()
}

/// [`raw_blocks`] of alerts, each event with the rules that made it one.
pub(super) fn alert_blocks(
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
