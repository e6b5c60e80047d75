//! `citystream init` and `destroy`: the tables, their indexes and TTL setting as `schema.rs`
//! describes them, created where missing and checked where present, and the layout mark.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    BillingMode, DeleteGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, Projection, ProjectionType, TableStatus, TimeToLiveSpecification,
    TimeToLiveStatus,
};

use super::db::{Db, build, sdk};
use super::keys::{LAYOUT, MAX_SHARDS, Shards, Tables, layout3};
use super::schema::{self, TableSpec, tables};
use super::{DynamoConfig, layout, migrate};
use crate::store::{Fault, StoreError};

/// What `init` did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableOutcome {
    Created(String),
    Exists(String),
    /// Existed; these indexes or the TTL setting were added.
    Completed(String, Vec<String>),
    /// Held layout 3 and was moved to this build's layout.
    Migrated(String),
}

/// Creates every table, index and TTL setting that is missing, and marks the tables with this
/// build's layout and `config.shards`. Running it twice is harmless; a table whose key schema
/// differs from ours is an error that names every difference, and tables that hold results of
/// another layout are refused, with what to do, before anything is changed. With `migrate`,
/// tables of layout 3 are moved to this layout instead (`migrate.rs`).
pub async fn init(
    client: &Client,
    config: &DynamoConfig,
    migrate: bool,
) -> Result<Vec<TableOutcome>, StoreError> {
    let db = Db::new(client.clone(), config.concurrency);
    let names = Tables::new(&config.table_prefix);
    let prefix = &config.table_prefix;
    let found = match client
        .describe_table()
        .table_name(&names.state)
        .send()
        .await
    {
        Ok(_) => layout::read(&db, &names).await?,
        Err(_) => None,
    };
    let migrating = match found {
        Some((3, shards)) if migrate => Some(shards),
        Some((version, _)) if version != LAYOUT => return Err(layout::refused(prefix, version)),
        _ => None,
    };
    let mut outcomes = Vec::new();
    for spec in tables(&config.table_prefix) {
        let described = client.describe_table().table_name(&spec.name).send().await;
        let outcome = match described {
            Ok(found) => {
                let table = found.table.ok_or_else(|| {
                    schema_differs(&spec.name, &["DescribeTable returned no table".into()])
                })?;
                let differences = spec.differences(&table);
                if !differences.is_empty() {
                    return Err(schema_differs(&spec.name, &differences));
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
    if let Some(shards) = migrating {
        migrate::layout_3_to_4(&db, &names, shards).await?;
        for index in layout3::INDEXES {
            drop_index(client, &names.aggregations, index).await?;
        }
        layout::remark(&db, &names, 3, LAYOUT).await?;
        outcomes.push(TableOutcome::Migrated(names.state.clone()));
    }
    let new = Shards {
        shared: config.shards.clamp(1, MAX_SHARDS),
        alerts: config.alert_shards.clamp(1, MAX_SHARDS),
    };
    layout::check(&db, &names, prefix, new).await?;
    Ok(outcomes)
}

fn schema_differs(table: &str, differences: &[String]) -> StoreError {
    StoreError::new(
        Fault::Down,
        format!(
            "table {table} exists with a different schema: {}",
            differences.join("; ")
        ),
    )
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

/// Deletes an index the layout no longer reads (after a migration), if the table has it.
async fn drop_index(client: &Client, table: &str, name: &str) -> Result<(), StoreError> {
    let delete = DeleteGlobalSecondaryIndexAction::builder()
        .index_name(name)
        .build()
        .map_err(build("DeleteGlobalSecondaryIndexAction"))?;
    let sent = client
        .update_table()
        .table_name(table)
        .global_secondary_index_updates(
            GlobalSecondaryIndexUpdate::builder().delete(delete).build(),
        )
        .send()
        .await;
    match sent {
        Ok(_) => wait_active(client, table).await,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(sdk("UpdateTable")(e)),
    }
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
    Err(StoreError::new(
        Fault::Retry,
        format!("dynamodb CreateTable: {table} did not become ACTIVE within 2 minutes"),
    ))
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
