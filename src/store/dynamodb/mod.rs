//! DynamoDB: the production store. `citystream init` creates the seed's three tables with their
//! exact key schemas, the indexes the API reads, and one `state` table for checkpoints,
//! counters, list pages and dead letters; `destroy` deletes them.
//!
//! Layout 4 applies each record exactly once without transactions, and spreads whatever many
//! writers share over shards and per-writer positions. Each part holds only what it needs:
//!
//! - `db.rs`: the requests every part sends, their limit, and the one bounded retry of what
//!   DynamoDB leaves unprocessed; `keys.rs`: every table name and key; `items.rs`: attributes;
//! - `raw.rs`: raw events, and the decision whether an event is new;
//! - `guarded.rs`: increments of shared items, each record once (`windows.rs`, `counters.rs`);
//! - `alerts.rs`, `lists.rs` (time-ordered lists in pages), `dead.rs`, `positions.rs`
//!   (checkpoints and the registries), `deliveries.rs` (the outbox);
//! - `write.rs`: a batch, in order, over the parts; `store.rs`: the seam's traits over them;
//! - `layout.rs`: which layout the tables hold; `admin.rs`: `init`, `destroy`, and the
//!   migration of layout 3 (`migrate.rs`); `schema.rs`: the tables as data;
//! - `units.rs`: write units as DynamoDB bills them.
//!
//! Imports point one way: `keys` ← `items` ← `db` ← the parts ← `write` ← `store`; no module
//! imports one that imports it.

mod admin;
mod alerts;
mod apikeys;
mod counters;
mod db;
mod dead;
mod deliveries;
mod guarded;
mod items;
mod keys;
mod layout;
mod lists;
mod migrate;
mod positions;
mod raw;
mod schema;
mod store;
mod units;
mod windows;
mod write;

pub use admin::{TableOutcome, destroy, init};
pub use keys::{DEFAULT_ALERT_SHARDS, DEFAULT_SHARDS, LAYOUT, MAX_SHARDS, Shards};
pub use schema::{TableSpec, tables};
pub use store::DynamoStore;
pub use units::{Kind as UnitKind, WriteUnits};

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::Region;

/// Where the tables live.
#[derive(Debug, Clone)]
pub struct DynamoConfig {
    pub region: String,
    /// A DynamoDB-compatible endpoint instead of AWS's (`http://127.0.0.1:8000`).
    pub endpoint: Option<String>,
    /// Prefix of every table name (`citystream-`).
    pub table_prefix: String,
    /// Shards of shared keys, for tables that hold no layout yet (`keys.rs`).
    pub shards: u32,
    /// Shards of a city's alerts, for tables that hold no layout yet.
    pub alert_shards: u32,
    /// Most requests in flight per process.
    pub concurrency: usize,
}

impl DynamoConfig {
    /// Tables under `prefix` at `endpoint` (or AWS's), with the default shards and concurrency.
    pub fn new(region: &str, endpoint: Option<String>, prefix: &str) -> Self {
        DynamoConfig {
            region: region.to_owned(),
            endpoint,
            table_prefix: prefix.to_owned(),
            shards: DEFAULT_SHARDS,
            alert_shards: DEFAULT_ALERT_SHARDS,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// Requests in flight per process unless configured otherwise.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// A DynamoDB client for `config`, with credentials from the standard AWS provider chain, and
/// deadlines on every call: 3 s to connect, 10 s per attempt, 30 s per call with its retries.
pub async fn client(config: &DynamoConfig) -> Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .operation_attempt_timeout(std::time::Duration::from_secs(10))
        .operation_timeout(std::time::Duration::from_secs(30))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .timeout_config(timeouts);
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    Client::new(&loader.load().await)
}
