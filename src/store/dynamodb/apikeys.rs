//! API keys on DynamoDB: one item per key in `state`, under the partition `apikeys` and sorted
//! by name, so that one query reads them all and a put-if-absent keeps names unique.

use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::db::Db;
use super::items::{Item, n, num, s, state_key, text};
use super::store::DynamoStore;
use crate::model::EventTime;
use crate::model::keys::{ApiKey, KeyLimit, MAX_KEYS};
use crate::store::StoreError;
use crate::store::keys::{Created, KeyStore, readable};

const PARTITION: &str = "apikeys";

#[async_trait]
impl KeyStore for DynamoStore {
    async fn create_key(&self, key: &ApiKey) -> Result<Created, StoreError> {
        let (db, table) = self.state();
        if read(db, table).await?.len() >= MAX_KEYS {
            return Ok(Created::Full);
        }
        let put = db
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item(key)))
            .condition_expression("attribute_not_exists(pk)");
        Ok(match db.put_if(put).await? {
            true => Created::Made,
            false => Created::NameTaken,
        })
    }

    async fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let (db, table) = self.state();
        Ok(readable(read(db, table).await?.iter().map(key)))
    }

    async fn revoke_key(&self, name: &str) -> Result<bool, StoreError> {
        let (db, table) = self.state();
        let delete = db
            .client
            .delete_item()
            .table_name(table)
            .set_key(Some(state_key(PARTITION, name)))
            .condition_expression("attribute_exists(pk)");
        db.delete_if(delete).await
    }
}

async fn read(db: &Db, table: &str) -> Result<Vec<Item>, StoreError> {
    let mut items = db.partition(table, PARTITION, None, true).await?;
    items.truncate(MAX_KEYS);
    Ok(items)
}

fn item(key: &ApiKey) -> Item {
    let mut item = state_key(PARTITION, key.name.clone());
    item.insert("id".into(), s(key.id.clone()));
    item.insert("scopes".into(), s(key.scopes.to_string()));
    item.insert("rate".into(), n(key.limit.per_second));
    item.insert("burst".into(), n(key.limit.burst));
    item.insert("digest".into(), AttributeValue::B(Blob::new(key.digest)));
    item.insert("created_at".into(), n(key.created_at.as_millis()));
    item
}

fn key(item: &Item) -> Result<ApiKey, StoreError> {
    let Some(AttributeValue::B(digest)) = item.get("digest") else {
        return Err(StoreError::corrupt("an API key without its digest"));
    };
    Ok(ApiKey {
        id: text(item, "id")?.to_owned(),
        name: text(item, "sk")?.to_owned(),
        scopes: text(item, "scopes")?.parse().map_err(StoreError::corrupt)?,
        limit: KeyLimit {
            per_second: num(item, "rate")?,
            burst: num(item, "burst")?,
        },
        digest: digest
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::corrupt("an API key's digest"))?,
        created_at: EventTime::from_millis(num(item, "created_at")?),
    })
}
