//! DynamoDB: the production store. `citystream init` creates the seed's three tables with their
//! exact key schemas, the indexes the API reads, and one `state` table for checkpoints,
//! counters, list pages and dead letters. `destroy` deletes them.
//!
//! Layout 3 applies each record exactly once without transactions, and spreads whatever many
//! writers share over shards and per-writer positions:
//!
//! - `raw.rs`: raw events, and the decision whether an event is new;
//! - `guarded.rs`: increments of shared items, each record once (`windows.rs`, `counters.rs`);
//! - `lists.rs`: time-ordered lists in pages; `keys.rs`: where everything is;
//! - `write.rs`: a batch, in order; `store.rs`: the [`crate::store::Store`] and its reads;
//! - `units.rs`: write units as DynamoDB bills them; `schema.rs`: the tables.

mod counters;
mod guarded;
mod items;
mod keys;
mod lists;
mod raw;
mod schema;
mod store;
mod units;
mod windows;
mod write;

pub use keys::{DEFAULT_ALERT_SHARDS, DEFAULT_SHARDS, LAYOUT, MAX_SHARDS};
pub use schema::{TableSpec, tables};
pub use store::DynamoStore;
pub use units::{Kind as UnitKind, WriteUnits};

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::Region;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{
    BillingMode, GlobalSecondaryIndex, GlobalSecondaryIndexUpdate, KeyType, Projection,
    ProjectionType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};

use super::{ErrorClass, StoreError};

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

pub(crate) fn sdk<E, R>(op: &'static str) -> impl FnOnce(SdkError<E, R>) -> StoreError
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    move |e| {
        let validation = e
            .as_service_error()
            .and_then(aws_sdk_dynamodb::error::ProvideErrorMetadata::code)
            == Some("ValidationException");
        StoreError::Dynamo {
            op,
            message: DisplayErrorContext(&e).to_string(),
            class: if validation {
                ErrorClass::Rejected
            } else {
                ErrorClass::Transient
            },
        }
    }
}

pub(crate) fn build(
    what: &'static str,
) -> impl FnOnce(aws_sdk_dynamodb::error::BuildError) -> StoreError {
    move |e| StoreError::Dynamo {
        op: what,
        message: e.to_string(),
        class: ErrorClass::Transient,
    }
}

/// What `init` did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableOutcome {
    Created(String),
    Exists(String),
    /// Existed; these indexes or the TTL setting were added.
    Completed(String, Vec<String>),
}

/// Creates every table, index and TTL setting that is missing, and marks the tables with this
/// build's layout and `config.shards`. Running it twice is harmless; a table whose key schema
/// differs from ours is an error that names every difference, and tables that hold results of
/// another layout are refused, with what to do, before anything is changed.
pub async fn init(client: &Client, config: &DynamoConfig) -> Result<Vec<TableOutcome>, StoreError> {
    let store = DynamoStore::with_config(client.clone(), config);
    let state = format!("{}state", config.table_prefix);
    if client
        .describe_table()
        .table_name(&state)
        .send()
        .await
        .is_ok()
    {
        store.check_layout().await?;
    }
    let mut outcomes = Vec::new();
    for spec in tables(&config.table_prefix) {
        let described = client.describe_table().table_name(&spec.name).send().await;
        let outcome = match described {
            Ok(found) => {
                let table = found.table.ok_or_else(|| StoreError::Schema {
                    table: spec.name.clone(),
                    differences: vec!["DescribeTable returned no table".into()],
                })?;
                let differences = spec.differences(&table);
                if !differences.is_empty() {
                    return Err(StoreError::Schema {
                        table: spec.name.clone(),
                        differences,
                    });
                }
                let mut added = Vec::new();
                for index in spec.missing_indexes(&table) {
                    add_index(client, &spec, &index).await?;
                    added.push(index);
                }
                if ensure_ttl(client, &spec).await? {
                    added.push(format!("TTL on {}", spec.ttl.unwrap_or_default()));
                }
                if added.is_empty() {
                    TableOutcome::Exists(spec.name.clone())
                } else {
                    TableOutcome::Completed(spec.name.clone(), added)
                }
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                create(client, &spec).await?;
                ensure_ttl(client, &spec).await?;
                TableOutcome::Created(spec.name.clone())
            }
            Err(e) => return Err(sdk("DescribeTable")(e)),
        };
        outcomes.push(outcome);
    }
    store.check_layout().await?;
    Ok(outcomes)
}

async fn create(client: &Client, spec: &TableSpec) -> Result<(), StoreError> {
    let mut request = client
        .create_table()
        .table_name(&spec.name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(spec.key_schema()?))
        .set_attribute_definitions(Some(spec.attribute_definitions()?));
    for index in &spec.indexes {
        request = request.global_secondary_indexes(gsi(index)?);
    }
    request.send().await.map_err(sdk("CreateTable"))?;
    wait_active(client, &spec.name).await
}

fn projection(index: &schema::IndexSpec) -> Projection {
    let kind = if index.all_attributes {
        ProjectionType::All
    } else {
        ProjectionType::KeysOnly
    };
    Projection::builder().projection_type(kind).build()
}

fn gsi(index: &schema::IndexSpec) -> Result<GlobalSecondaryIndex, StoreError> {
    GlobalSecondaryIndex::builder()
        .index_name(index.name)
        .set_key_schema(Some(schema::key_schema(index.hash, index.range)?))
        .projection(projection(index))
        .build()
        .map_err(build("GlobalSecondaryIndex"))
}

async fn add_index(client: &Client, spec: &TableSpec, name: &str) -> Result<(), StoreError> {
    let Some(index) = spec.indexes.iter().find(|i| i.name == name) else {
        return Ok(());
    };
    let create = aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
        .index_name(index.name)
        .set_key_schema(Some(schema::key_schema(index.hash, index.range)?))
        .projection(projection(index))
        .build()
        .map_err(build("CreateGlobalSecondaryIndexAction"))?;
    client
        .update_table()
        .table_name(&spec.name)
        .set_attribute_definitions(Some(spec.attribute_definitions()?))
        .global_secondary_index_updates(
            GlobalSecondaryIndexUpdate::builder().create(create).build(),
        )
        .send()
        .await
        .map_err(sdk("UpdateTable"))?;
    wait_active(client, &spec.name).await
}

/// Enables TTL when the table wants it and it is not enabled yet (DynamoDB refuses to enable it
/// twice within an hour, so look first). Returns whether it changed anything.
async fn ensure_ttl(client: &Client, spec: &TableSpec) -> Result<bool, StoreError> {
    let Some(attribute) = spec.ttl else {
        return Ok(false);
    };
    let described = client
        .describe_time_to_live()
        .table_name(&spec.name)
        .send()
        .await
        .map_err(sdk("DescribeTimeToLive"))?;
    let status = described
        .time_to_live_description
        .as_ref()
        .and_then(|d| d.time_to_live_status.clone());
    if matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ) {
        return Ok(false);
    }
    client
        .update_time_to_live()
        .table_name(&spec.name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(attribute)
                .enabled(true)
                .build()
                .map_err(build("TimeToLiveSpecification"))?,
        )
        .send()
        .await
        .map_err(sdk("UpdateTimeToLive"))?;
    Ok(true)
}

async fn wait_active(client: &Client, table: &str) -> Result<(), StoreError> {
    for _ in 0..600 {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(sdk("DescribeTable"))?;
        let table_active = described
            .table
            .as_ref()
            .is_some_and(|t| t.table_status == Some(TableStatus::Active));
        let indexes_active = described
            .table
            .as_ref()
            .and_then(|t| t.global_secondary_indexes.as_ref())
            .is_none_or(|indexes| {
                indexes.iter().all(|i| {
                    i.index_status
                        .as_ref()
                        .is_none_or(|s| s.as_str() == "ACTIVE")
                })
            });
        if table_active && indexes_active {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Err(StoreError::Dynamo {
        op: "CreateTable",
        message: format!("{table} did not become ACTIVE within 2 minutes"),
        class: ErrorClass::Transient,
    })
}

/// Deletes every CityStream table that exists. Returns the names deleted.
pub async fn destroy(client: &Client, config: &DynamoConfig) -> Result<Vec<String>, StoreError> {
    let mut deleted = Vec::new();
    for spec in tables(&config.table_prefix) {
        match client.delete_table().table_name(&spec.name).send().await {
            Ok(_) => deleted.push(spec.name),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) => {}
            Err(e) => return Err(sdk("DeleteTable")(e)),
        }
    }
    Ok(deleted)
}

impl TableSpec {
    fn key_schema(&self) -> Result<Vec<aws_sdk_dynamodb::types::KeySchemaElement>, StoreError> {
        schema::key_schema(self.hash, self.range)
    }
}

/// Whether a key element is the hash key.
fn is_hash(key_type: &KeyType) -> bool {
    *key_type == KeyType::Hash
}
