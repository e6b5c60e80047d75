//! API keys on SQLite: the `api_keys` table.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::SqliteStore;
use crate::model::EventTime;
use crate::model::keys::{ApiKey, KeyLimit, MAX_KEYS};
use crate::store::StoreError;
use crate::store::keys::{Created, KeyStore, readable};

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_key(&self, key: &ApiKey) -> Result<Created, StoreError> {
        let key = key.clone();
        self.with_writer(move |c| create(c, &key)).await
    }

    async fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.read(|c| {
            let mut statement = c.prepare_cached(
                "SELECT id, name, scopes, rate, burst, digest, created_at FROM api_keys
                 ORDER BY name LIMIT ?1",
            )?;
            let rows = statement.query_map([MAX_KEYS as i64], key_from_row)?;
            Ok(readable(rows.map(|r| r?)))
        })
        .await
    }

    async fn revoke_key(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.with_writer(
            move |c| Ok(c.execute("DELETE FROM api_keys WHERE name = ?1", [name])? > 0),
        )
        .await
    }
}

fn create(c: &mut Connection, key: &ApiKey) -> Result<Created, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let taken: Option<i64> = tx
        .query_row("SELECT 1 FROM api_keys WHERE name = ?1", [&key.name], |r| {
            r.get(0)
        })
        .optional()?;
    if taken.is_some() {
        return Ok(Created::NameTaken);
    }
    let count: i64 = tx.query_row("SELECT count(*) FROM api_keys", [], |r| r.get(0))?;
    if count >= MAX_KEYS as i64 {
        return Ok(Created::Full);
    }
    tx.execute(
        "INSERT INTO api_keys (name, id, scopes, rate, burst, digest, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            key.name,
            key.id,
            key.scopes.to_string(),
            key.limit.per_second,
            key.limit.burst,
            &key.digest[..],
            key.created_at.as_millis(),
        ],
    )?;
    tx.commit()?;
    Ok(Created::Made)
}

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<Result<ApiKey, StoreError>> {
    let scopes: String = r.get(2)?;
    let digest: Vec<u8> = r.get(5)?;
    let made = || -> Result<ApiKey, StoreError> {
        Ok(ApiKey {
            id: r.get(0)?,
            name: r.get(1)?,
            scopes: scopes.parse().map_err(StoreError::corrupt)?,
            limit: KeyLimit {
                per_second: r.get(3)?,
                burst: r.get(4)?,
            },
            digest: digest
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::corrupt("an API key's digest"))?,
            created_at: EventTime::from_millis(r.get(6)?),
        })
    };
    Ok(made())
}
