//! The tables `init` creates, as data, and how an existing table is compared with them.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, KeySchemaElement, KeyType, ScalarAttributeType, TableDescription,
};

use super::db::build;
use super::keys::Tables;
use crate::store::StoreError;

/// A key attribute: name and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    S,
    N,
}

impl Kind {
    fn scalar(self) -> ScalarAttributeType {
        match self {
            Kind::S => ScalarAttributeType::S,
            Kind::N => ScalarAttributeType::N,
        }
    }
}

const fn s(name: &'static str) -> Key {
    Key {
        name,
        kind: Kind::S,
    }
}

const fn n(name: &'static str) -> Key {
    Key {
        name,
        kind: Kind::N,
    }
}

/// A global secondary index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    pub name: &'static str,
    pub hash: Key,
    pub range: Option<Key>,
    /// Whether it carries every attribute, or only the keys (written only when a key
    /// changes, not at every update of the item).
    pub all_attributes: bool,
}

/// One table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub name: String,
    pub hash: Key,
    pub range: Option<Key>,
    pub indexes: Vec<IndexSpec>,
    /// The attribute DynamoDB's TTL deletes on.
    pub ttl: Option<&'static str>,
}

/// The seed's three tables, exactly keyed as the seed says, plus `state`.
pub fn tables(prefix: &str) -> Vec<TableSpec> {
    let names = Tables::new(prefix);
    vec![
        TableSpec {
            // Written once per event; `/events/{city}` reads the city's list pages instead of
            // an index entry per event (`lists.rs`).
            name: names.raw,
            hash: s("event_id"),
            range: Some(s("timestamp")),
            indexes: Vec::new(),
            ttl: Some("ttl"),
        },
        TableSpec {
            // Base windows under the seed's key, rollups under theirs (`keys.rs`).
            name: names.aggregations,
            hash: s("partition_key"),
            range: None,
            indexes: vec![IndexSpec {
                // One city, type and resolution by start: a range of
                // `/api/v1/aggregations` is one Query per type, every attribute in it.
                name: "by-series",
                hash: s("series"),
                range: Some(n("window_start_ms")),
                all_attributes: true,
            }],
            // A window expires its resolution's retention after it ends.
            ttl: Some("ttl"),
        },
        TableSpec {
            // The city key holds a shard (`Chicago#07`): one city's alerts spread over the
            // layout's shards.
            name: names.alerts,
            hash: s("city"),
            range: Some(s("timestamp")),
            indexes: Vec::new(),
            // An alert expires with its raw event.
            ttl: Some("ttl"),
        },
        TableSpec {
            // Checkpoints, counters, list pages, dead letters, deliveries and registries, under prefixed
            // keys (`keys.rs`); everything but checkpoints and registries expires by TTL.
            name: names.state,
            hash: s("pk"),
            range: Some(s("sk")),
            indexes: vec![
                IndexSpec {
                    // Dead letters, most recently received first, per shard: `/dead-letters`.
                    name: "dead-by-time",
                    hash: s("dls"),
                    range: Some(s("dlt")),
                    all_attributes: true,
                },
                IndexSpec {
                    // Pending deliveries of a sink, by their next attempt: the dispatcher.
                    name: "due",
                    hash: s("dq"),
                    range: Some(n("dn")),
                    all_attributes: true,
                },
                IndexSpec {
                    // Every delivery, newest first, per shard: `/deliveries`.
                    name: "deliveries-by-time",
                    hash: s("dvq"),
                    range: Some(s("dvt")),
                    all_attributes: true,
                },
            ],
            ttl: Some("ttl"),
        },
    ]
}

/// Whether a key element is the hash key.
fn is_hash(key_type: &KeyType) -> bool {
    *key_type == KeyType::Hash
}

pub(super) fn key_schema(
    hash: Key,
    range: Option<Key>,
) -> Result<Vec<KeySchemaElement>, StoreError> {
    let mut keys = vec![
        KeySchemaElement::builder()
            .attribute_name(hash.name)
            .key_type(KeyType::Hash)
            .build()
            .map_err(build("KeySchemaElement"))?,
    ];
    if let Some(range) = range {
        keys.push(
            KeySchemaElement::builder()
                .attribute_name(range.name)
                .key_type(KeyType::Range)
                .build()
                .map_err(build("KeySchemaElement"))?,
        );
    }
    Ok(keys)
}

fn describe(hash: Option<&str>, range: Option<&str>) -> String {
    match range {
        Some(r) => format!("{} HASH + {r} RANGE", hash.unwrap_or("?")),
        None => format!("{} HASH", hash.unwrap_or("?")),
    }
}

fn split(keys: &[KeySchemaElement]) -> (Option<&str>, Option<&str>) {
    let hash = keys
        .iter()
        .find(|k| is_hash(&k.key_type))
        .map(|k| k.attribute_name.as_str());
    let range = keys
        .iter()
        .find(|k| !is_hash(&k.key_type))
        .map(|k| k.attribute_name.as_str());
    (hash, range)
}

impl TableSpec {
    fn keys(&self) -> Vec<Key> {
        let mut keys = vec![self.hash];
        keys.extend(self.range);
        for index in &self.indexes {
            keys.push(index.hash);
            keys.extend(index.range);
        }
        keys.sort_by_key(|k| k.name);
        keys.dedup();
        keys
    }

    pub(super) fn attribute_definitions(&self) -> Result<Vec<AttributeDefinition>, StoreError> {
        self.keys()
            .into_iter()
            .map(|k| {
                AttributeDefinition::builder()
                    .attribute_name(k.name)
                    .attribute_type(k.kind.scalar())
                    .build()
                    .map_err(build("AttributeDefinition"))
            })
            .collect()
    }

    /// Every way `table` differs from this spec in what cannot be added later: the table's key
    /// schema, key attribute types, and the keys of indexes both have.
    pub fn differences(&self, table: &TableDescription) -> Vec<String> {
        let mut out = Vec::new();
        let (hash, range) = split(table.key_schema());
        let want = describe(Some(self.hash.name), self.range.map(|r| r.name));
        let have = describe(hash, range);
        if want != have {
            out.push(format!("key schema is {have}, expected {want}"));
        }
        for definition in table.attribute_definitions() {
            let expected = self
                .keys()
                .into_iter()
                .find(|k| k.name == definition.attribute_name);
            if let Some(k) = expected
                && definition.attribute_type != k.kind.scalar()
            {
                out.push(format!(
                    "attribute {} is {}, expected {}",
                    k.name,
                    definition.attribute_type.as_str(),
                    k.kind.scalar().as_str()
                ));
            }
        }
        for existing in table.global_secondary_indexes() {
            let Some(name) = existing.index_name.as_deref() else {
                continue;
            };
            let Some(index) = self.indexes.iter().find(|i| i.name == name) else {
                continue;
            };
            let (hash, range) = split(existing.key_schema());
            let have = describe(hash, range);
            let want = describe(Some(index.hash.name), index.range.map(|r| r.name));
            if have != want {
                out.push(format!("index {name} is keyed {have}, expected {want}"));
            }
        }
        out
    }

    /// Indexes of this spec the table does not have yet.
    pub fn missing_indexes(&self, table: &TableDescription) -> Vec<String> {
        self.indexes
            .iter()
            .filter(|i| {
                !table
                    .global_secondary_indexes()
                    .iter()
                    .any(|g| g.index_name.as_deref() == Some(i.name))
            })
            .map(|i| i.name.to_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_tables_keep_the_seed_key_schemas() {
        let t = tables("citystream-");
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "citystream-raw-events",
                "citystream-aggregations",
                "citystream-alerts",
                "citystream-state"
            ]
        );
        assert_eq!(
            (t[0].hash.name, t[0].range.map(|k| k.name)),
            ("event_id", Some("timestamp"))
        );
        assert_eq!(t[0].ttl, Some("ttl"));
        assert_eq!((t[1].hash.name, t[1].range), ("partition_key", None));
        assert_eq!(
            (t[2].hash.name, t[2].range.map(|k| k.name)),
            ("city", Some("timestamp"))
        );
        assert!(t[0].indexes.is_empty(), "no index entry per raw event");
        assert_eq!(t[1].indexes[0].name, "by-series");
    }
}
