//! Time-ordered lists in pages: a city's events (`/events/{city}`), all alerts, late events
//! (all, and per city). An index entry per event would cost a write unit per event and put one
//! city's writes on one partition key; instead each batch writes, per list, pages of up to
//! [`PAGE_ENTRIES`] entries spanning at most [`PAGE_SPAN`] of event time, compressed, under
//! `l#<list>#<shard>` in `state` (the shard a hash of the page's writer, first offset and
//! number), sorted by their newest event time. A page costs its compressed size: a few dozen
//! bytes per entry.
//!
//! A batch written again writes its pages again: the same keys when it is cut the same, other
//! keys when it is not. Either way every copy of an entry is the same event, and a read merges
//! the shards newest first and keeps each event once.

use std::collections::{BTreeMap, HashSet};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::future::try_join_all;
use serde::{Deserialize, Serialize};

use super::db::{Db, sdk};
use super::items::{DEFAULT_RULES, Item, n, s, text};
use super::keys::{
    ALERTS_LIST, LATE_LIST, Writer, events_list, late_list, list_page_newest, list_page_shard,
    list_page_sk, list_pk, pad,
};
use super::units::Kind;
use crate::model::alerting::{rules_from_text, rules_text};
use crate::model::{
    Accepted, City, CityEvent, EventTime, EventType, LateEvent, Placement, Severity, Span,
    WriteBatch,
};
use crate::store::rules::Effects;
use crate::store::{EventKey, StoreError, StoredAlert, TimeRange};

/// Most entries in one page.
pub const PAGE_ENTRIES: usize = 500;
/// Most serialized bytes in one page before compression (an item holds at most 400 KB).
const PAGE_BYTES: usize = 256 * 1024;
/// Widest span of event time in one page: a read after a cursor starts this much above it.
pub const PAGE_SPAN: Span = Span::from_secs(60);
/// Pages one Query of a shard returns at most.
const PAGES_PER_QUERY: i32 = 4;

/// One event in a page, with its expiry and, for a late event, where it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    i: String,
    t: i64,
    c: String,
    /// The type's place when it is one of the seed's four (their places are fixed).
    y: u8,
    /// Any other type, by name (its place depends on the configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    s: u8,
    /// The description, left out when it is the seed's for the type and severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<String>,
    /// When it expires (ms).
    x: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    late: Option<(i64, u32, u64)>,
    /// An alert's rules (`id@version,…`), left out when they are the default rule's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<String>,
}

impl Entry {
    pub fn event(a: &Accepted, expires: EventTime) -> Self {
        let e = &a.event;
        let seed = CityEvent::seed_description(e.event_type, e.severity);
        Entry {
            i: e.event_id.clone(),
            t: e.timestamp.as_millis(),
            c: e.city.as_str().to_owned(),
            y: e.event_type.index().min(usize::from(u8::MAX)) as u8,
            n: (e.event_type.index() >= EventType::SEED.len()).then(|| e.event_type.to_string()),
            s: e.severity.index() as u8,
            d: (e.description != seed).then(|| e.description.clone()),
            x: expires.as_millis(),
            late: None,
            r: None,
        }
    }

    /// An alert's entry: the event's, with its rules.
    pub fn alert(a: &Accepted, expires: EventTime) -> Self {
        let rules = rules_text(&a.alerts);
        Entry {
            r: (rules != DEFAULT_RULES).then_some(rules),
            ..Entry::event(a, expires)
        }
    }

    pub fn to_alert(&self) -> Result<StoredAlert, StoreError> {
        Ok(StoredAlert {
            event: self.to_event()?,
            rules: rules_from_text(self.r.as_deref().unwrap_or(DEFAULT_RULES)),
        })
    }

    pub fn late(a: &Accepted, expires: EventTime) -> Self {
        let watermark = match a.placement {
            Placement::Late { watermark } => watermark,
            Placement::Window { .. } => a.event.timestamp,
        };
        Entry {
            late: Some((watermark.as_millis(), a.partition, a.offset)),
            ..Entry::event(a, expires)
        }
    }

    fn key(&self) -> EventKey {
        EventKey {
            at: EventTime::from_millis(self.t),
            event_id: self.i.clone(),
        }
    }

    pub fn expires(&self) -> EventTime {
        EventTime::from_millis(self.x)
    }

    pub fn to_event(&self) -> Result<CityEvent, StoreError> {
        let corrupt = |what: &str| StoreError::corrupt(format!("list entry {}: {what}", self.i));
        let event_type = match &self.n {
            Some(name) => EventType::stored(name).map_err(|_| corrupt("type"))?,
            None => *EventType::SEED
                .get(usize::from(self.y))
                .ok_or_else(|| corrupt("type"))?,
        };
        let severity = *Severity::ALL
            .get(usize::from(self.s))
            .ok_or_else(|| corrupt("severity"))?;
        Ok(CityEvent {
            event_id: self.i.clone(),
            city: City::parse(self.c.clone()).map_err(|_| corrupt("city"))?,
            event_type,
            severity,
            timestamp: EventTime::from_millis(self.t),
            description: self
                .d
                .clone()
                .unwrap_or_else(|| CityEvent::seed_description(event_type, severity)),
        })
    }

    pub fn to_late(&self) -> Result<LateEvent, StoreError> {
        let (watermark, partition, offset) = self.late.unwrap_or((self.t, 0, 0));
        Ok(LateEvent {
            event: self.to_event()?,
            watermark: EventTime::from_millis(watermark),
            partition,
            offset,
        })
    }
}

/// The pages of one batch's lists, as items of `state`. `writer` and `first` (its first
/// offset) make the keys unique to the batch; the shard is the writer's.
pub fn pages(
    lists: BTreeMap<String, Vec<Entry>>,
    writer: Writer,
    first: u64,
    shards: u32,
) -> Result<Vec<Item>, StoreError> {
    let mut out = Vec::new();
    for (list, mut entries) in lists {
        entries.sort_by_key(|e| std::cmp::Reverse(e.key()));
        for (n_page, page) in split(&entries).into_iter().enumerate() {
            let shard = list_page_shard(&list, writer, first, n_page, shards);
            out.push(page_item(&list, shard, writer, first, n_page, page)?);
        }
    }
    Ok(out)
}

/// Entries (newest first) cut into pages of at most [`PAGE_ENTRIES`], [`PAGE_BYTES`] and
/// [`PAGE_SPAN`].
fn split(entries: &[Entry]) -> Vec<&[Entry]> {
    let mut pages = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, e) in entries.iter().enumerate() {
        let size = e.i.len() + e.c.len() + e.d.as_ref().map_or(0, String::len) + 64;
        let full = i - start >= PAGE_ENTRIES
            || bytes + size > PAGE_BYTES
            || entries[start].t - e.t >= PAGE_SPAN.as_millis();
        if i > start && full {
            pages.push(&entries[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < entries.len() {
        pages.push(&entries[start..]);
    }
    pages
}

fn page_item(
    list: &str,
    shard: u32,
    writer: Writer,
    first: u64,
    n_page: usize,
    entries: &[Entry],
) -> Result<Item, StoreError> {
    let newest = entries.first().map_or(0, |e| e.t);
    let expires = entries.iter().map(|e| e.x).max().unwrap_or(0);
    let json = serde_json::to_vec(entries).map_err(StoreError::corrupt)?;
    Ok(Item::from([
        ("pk".into(), s(list_pk(list, shard))),
        ("sk".into(), s(list_page_sk(newest, writer, first, n_page))),
        (
            "d".into(),
            AttributeValue::B(Blob::new(lz4_flex::compress_prepend_size(&json))),
        ),
        ("n".into(), n(entries.len())),
        ("ttl".into(), n(expires.div_euclid(1000) + 1)),
    ]))
}

fn decode(item: &Item) -> Result<Vec<Entry>, StoreError> {
    let corrupt = |e: String| StoreError::corrupt(format!("list page: {e}"));
    let Some(AttributeValue::B(blob)) = item.get("d") else {
        return Err(corrupt("no data".into()));
    };
    let json =
        lz4_flex::decompress_size_prepended(blob.as_ref()).map_err(|e| corrupt(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))
}

/// The newest event time of a page, from its sort key.
fn newest(item: &Item) -> Result<i64, StoreError> {
    let sk = text(item, "sk")?;
    list_page_newest(sk).ok_or_else(|| StoreError::corrupt(format!("list page key {sk}")))
}

/// What a read of a list wants.
#[derive(Debug, Clone)]
pub struct Want {
    /// Entries strictly after this key (newest first), if any.
    pub after: Option<EventKey>,
    /// Entries whose event time is in this range only.
    pub range: TimeRange,
    pub limit: usize,
    pub now: EventTime,
}

impl Want {
    fn keeps(&self, e: &Entry) -> bool {
        self.after.as_ref().is_none_or(|a| e.key() < *a)
            && self.range.contains(EventTime::from_millis(e.t))
            && e.x > self.now.as_millis()
    }

    /// The newest page key that can hold an entry wanted: pages are sorted by their newest
    /// entry, and a page spans at most [`PAGE_SPAN`].
    fn newest_page(&self) -> Option<i64> {
        let after = self.after.as_ref().map(|a| a.at.as_millis());
        let end = (self.range.to.is_some()).then(|| self.range.end_ms());
        let bound = match (after, end) {
            (Some(a), Some(e)) => a.min(e),
            (a, e) => a.or(e)?,
        };
        Some(bound.saturating_add(PAGE_SPAN.as_millis() + 1))
    }
}

/// The lists of the `state` table.
pub struct Lists {
    db: Db,
    table: String,
    shards: u32,
}

/// One shard of a list as it is being read, newest page first.
struct Shard {
    pk: String,
    next: Option<Item>,
    /// Newest time any page not read yet can hold; `None` until the first query.
    frontier: Option<i64>,
    done: bool,
}

impl Lists {
    pub fn new(db: Db, table: String, shards: u32) -> Self {
        Lists { db, table, shards }
    }

    /// The pages of every list the new events belong to: their city's events, alerts, late
    /// events (all, and their city's).
    pub async fn put(&self, batch: &WriteBatch, effects: &Effects<'_>) -> Result<(), StoreError> {
        let Some(first) = effects.new.iter().min_by_key(|a| (a.partition, a.offset)) else {
            return Ok(());
        };
        let mut lists: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for a in &effects.new {
            let city = a.event.city.as_str();
            let entry = Entry::event(a, a.ttl);
            if a.is_alert() {
                lists
                    .entry(ALERTS_LIST.into())
                    .or_default()
                    .push(Entry::alert(a, a.ttl));
            }
            lists.entry(events_list(city)).or_default().push(entry);
            if let Placement::Late { .. } = a.placement {
                let late = Entry::late(a, batch.rules.late_expiry(&a.event));
                lists.entry(late_list(city)).or_default().push(late.clone());
                lists.entry(LATE_LIST.into()).or_default().push(late);
            }
        }
        let writer = Writer::new(&batch.source, first.partition);
        let pages = pages(lists, writer, first.offset, self.shards)?;
        self.db.put_all(&self.table, pages, Kind::List).await
    }

    /// A page of a list: its live entries newest first, each event once, at most `want.limit`.
    pub async fn read(&self, list: &str, want: &Want) -> Result<Vec<Entry>, StoreError> {
        let mut shards: Vec<Shard> = (0..self.shards)
            .map(|shard| Shard {
                pk: list_pk(list, shard),
                next: None,
                frontier: None,
                done: false,
            })
            .collect();
        let mut found: Vec<Entry> = Vec::new();
        let mut seen: HashSet<EventKey> = HashSet::new();
        // Every shard once, at the same time; then the shard whose unread pages can be newest.
        let first = try_join_all(shards.iter().map(|shard| self.list_query(shard, want)));
        let mut pages: Vec<(usize, Vec<Item>, Option<Item>)> = first
            .await?
            .into_iter()
            .enumerate()
            .map(|(i, (items, next))| (i, items, next))
            .collect();
        loop {
            for (i, items, next) in pages.drain(..) {
                let shard = &mut shards[i];
                if let Some(last) = items.last() {
                    shard.frontier = Some(newest(last)?);
                }
                shard.done = next.is_none();
                shard.next = next;
                for item in &items {
                    for e in decode(item)? {
                        if want.keeps(&e) && seen.insert(e.key()) {
                            found.push(e);
                        }
                    }
                }
            }
            found.sort_by_key(|e| std::cmp::Reverse(e.key()));
            let open = shards.iter().enumerate().filter(|(_, s)| !s.done);
            let Some((i, threshold)) = open
                .map(|(i, s)| (i, s.frontier.unwrap_or(i64::MAX)))
                .max_by_key(|(_, f)| *f)
            else {
                break;
            };
            let enough = found.len() >= want.limit && found[want.limit - 1].t > threshold;
            let too_old = want.range.from.is_some_and(|f| threshold < f.as_millis());
            if enough || too_old {
                break;
            }
            let (items, next) = self.list_query(&shards[i], want).await?;
            pages.push((i, items, next));
        }
        found.truncate(want.limit);
        Ok(found)
    }

    /// The next pages of one shard, newest first, and where the query stopped.
    async fn list_query(
        &self,
        shard: &Shard,
        want: &Want,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let mut request = self
            .db
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_values(":pk", s(&shard.pk))
            .scan_index_forward(false)
            .limit(PAGES_PER_QUERY)
            .set_exclusive_start_key(shard.next.clone());
        request = match want.newest_page() {
            // Pages newer than the cursor or the range's end by more than a page's span hold
            // nothing wanted.
            Some(upto) => request
                .key_condition_expression("pk = :pk AND sk < :upto")
                .expression_attribute_values(":upto", s(pad(upto))),
            None => request.key_condition_expression("pk = :pk"),
        };
        let out = {
            let _permit = self.db.permit().await;
            request.send().await.map_err(sdk("Query"))?
        };
        Ok((out.items().to_vec(), out.last_evaluated_key().cloned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, t: i64) -> Entry {
        Entry {
            i: id.into(),
            t,
            c: "SF".into(),
            y: 0,
            n: None,
            s: 1,
            d: None,
            x: t + 1000,
            late: None,
            r: None,
        }
    }

    #[test]
    fn a_type_past_the_seeds_is_kept_by_name() {
        let flood = EventType::stored("flood").expect("a type");
        let mut e = entry("e1", 1000);
        e.y = u8::MAX;
        e.n = Some("flood".into());
        assert_eq!(e.to_event().expect("an event").event_type, flood);
        let seed = entry("e2", 1000).to_event().expect("an event");
        assert_eq!(seed.event_type, EventType::Traffic);
    }

    #[test]
    fn pages_cut_by_span_and_count_and_round_trip() {
        let mut entries: Vec<Entry> = (0..1200)
            .map(|i| entry(&format!("e{i}"), i * 100))
            .collect();
        entries.reverse();
        let pages = split(&entries);
        assert!(pages.iter().all(|p| p.len() <= PAGE_ENTRIES));
        assert!(
            pages
                .iter()
                .all(|p| p[0].t - p[p.len() - 1].t < PAGE_SPAN.as_millis())
        );
        assert_eq!(pages.iter().map(|p| p.len()).sum::<usize>(), 1200);
        let item = page_item("ev:SF", 3, Writer::new("t", 3), 7, 0, pages[0]).unwrap();
        assert_eq!(decode(&item).unwrap(), pages[0]);
        assert_eq!(newest(&item).unwrap(), pages[0][0].t);
        let e = entry("x", 5).to_event().unwrap();
        assert_eq!(
            e.description,
            CityEvent::seed_description(EventType::Traffic, Severity::Medium)
        );
    }
}
