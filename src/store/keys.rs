//! Where API keys are kept (`crate::model::keys`): by name, as digests, at most
//! [`MAX_KEYS`](crate::model::keys::MAX_KEYS) of them. The API reads them all into memory
//! once a second, so a key made or revoked by `citystream keys` counts within a second.

use async_trait::async_trait;

use super::StoreError;
use crate::model::keys::ApiKey;

/// What [`KeyStore::create_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Made,
    /// A key of this name exists: names are unique.
    NameTaken,
    /// The store holds [`MAX_KEYS`](crate::model::keys::MAX_KEYS) keys already.
    Full,
}

#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    async fn create_key(&self, key: &ApiKey) -> Result<Created, StoreError>;

    /// Every key, by name.
    async fn keys(&self) -> Result<Vec<ApiKey>, StoreError>;

    /// Deletes the key named `name`; whether there was one.
    async fn revoke_key(&self, name: &str) -> Result<bool, StoreError>;
}
