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

/// The keys that read back whole; one that does not is left out with a warning, so that one
/// corrupt row cannot keep every other key (and every revocation) from counting.
pub fn readable(keys: impl Iterator<Item = Result<ApiKey, StoreError>>) -> Vec<ApiKey> {
    keys.filter_map(|k| {
        k.inspect_err(|e| tracing::warn!(error = %e.report(), "an API key could not be read"))
            .ok()
    })
    .collect()
}

#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    async fn create_key(&self, key: &ApiKey) -> Result<Created, StoreError>;

    /// Every key that reads back whole ([`readable`]), by name.
    async fn keys(&self) -> Result<Vec<ApiKey>, StoreError>;

    /// Deletes the key named `name`; whether there was one.
    async fn revoke_key(&self, name: &str) -> Result<bool, StoreError>;
}
