//! Who may do what: API keys (`crate::model::keys`) by scope, and the older `--admin-token`.
//!
//! The keys are read from the store into memory at start and then once a second, so a key
//! made or revoked by `citystream keys` counts within a second, and a request costs no store
//! read. A missing or wrong key is a 401 with `WWW-Authenticate`; a key without the scope a
//! call needs, a 403. Nothing about a key is logged but its name.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use crate::model::keys::{ApiKey, KeyLimit, Scope, split_token};
use crate::store::KeyStore;

/// How often the keys are read again.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How long the keys may go unread before none is taken: a revocation must not wait for the
/// store to answer again.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// The admin token, kept as its SHA-256 only.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    pub fn new(token: &str) -> Self {
        AdminToken(Sha256::digest(token.as_bytes()).into())
    }

    fn admits(&self, token: &str) -> bool {
        <[u8; 32]>::from(Sha256::digest(token.as_bytes()))
            .ct_eq(&self.0)
            .into()
    }
}

/// Who a request comes from, once its key is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's name (`admin-token` for the token), for logs and metrics.
    pub name: String,
    /// The key's id; `None` for the admin token and for open reads.
    pub id: Option<String>,
    pub limit: KeyLimit,
}

/// The keys in force, the admin token, and each key's rate limiter.
pub struct Auth {
    keys: RwLock<HashMap<String, ApiKey>>,
    admin: Option<AdminToken>,
    /// Whether reads need a `read` key.
    require_read: bool,
    limiters: Mutex<HashMap<String, (KeyLimit, Arc<DefaultDirectRateLimiter>)>>,
    /// Compared against when a key's id names no key, so that its answer takes as long.
    decoy: ApiKey,
}

impl Auth {
    pub fn new(admin: Option<AdminToken>, require_read: bool) -> Self {
        Auth {
            keys: RwLock::default(),
            admin,
            require_read,
            limiters: Mutex::default(),
            decoy: ApiKey {
                id: String::new(),
                name: String::new(),
                scopes: Default::default(),
                limit: KeyLimit::default(),
                digest: rand::random(),
                created_at: crate::model::EventTime::from_millis(0),
            },
        }
    }

    /// Takes `keys` as the keys in force.
    pub fn set_keys(&self, keys: Vec<ApiKey>) {
        let by_id: HashMap<String, ApiKey> = keys.into_iter().map(|k| (k.id.clone(), k)).collect();
        if let Ok(mut limiters) = self.limiters.lock() {
            limiters.retain(|id, (limit, _)| by_id.get(id).is_some_and(|k| k.limit == *limit));
        }
        if let Ok(mut current) = self.keys.write() {
            *current = by_id;
        }
    }

    /// Reads the keys from `store`; `false` when it could not.
    pub async fn refresh(&self, store: &dyn KeyStore) -> bool {
        match store.keys().await {
            Ok(keys) => {
                self.set_keys(keys);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e.report(), "the API keys could not be read");
                false
            }
        }
    }

    /// Reads the keys every [`REFRESH`] until `stop`. A failed read keeps the keys as they were
    /// for [`STALE_AFTER`]; after that no key is taken until a read succeeds.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn KeyStore>, stop: CancellationToken) {
        let mut last_read = tokio::time::Instant::now();
        let mut stale = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
            if self.refresh(store.as_ref()).await {
                last_read = tokio::time::Instant::now();
                stale = false;
            } else if !stale && last_read.elapsed() > STALE_AFTER {
                tracing::error!(
                    "the API keys were not read for 30 s: none is taken until they are"
                );
                self.set_keys(Vec::new());
                stale = true;
            }
        }
    }

    /// Whether reads need a key.
    pub fn reads_need_a_key(&self) -> bool {
        self.require_read
    }

    /// The caller of a request that needs `scope`, or why it may not go on.
    pub fn check(&self, headers: &HeaderMap, scope: Scope) -> Result<Caller, ApiError> {
        let token = bearer(headers)?;
        if let Some(admin) = &self.admin
            && scope != Scope::Ingest
            && admin.admits(token)
        {
            return Ok(Caller {
                name: "admin-token".to_owned(),
                id: None,
                limit: KeyLimit::default(),
            });
        }
        let Some((id, secret)) = split_token(token) else {
            return Err(ApiError::Unauthorized(
                "the key is not a CityStream key".into(),
            ));
        };
        let keys = self
            .keys
            .read()
            .map_err(|_| ApiError::Unauthorized("the keys cannot be read".into()))?;
        let key = keys.get(id);
        let admitted = key.unwrap_or(&self.decoy).admits(secret);
        let Some(key) = key.filter(|_| admitted) else {
            return Err(ApiError::Unauthorized(
                "no such key, or it was revoked".into(),
            ));
        };
        if !key.scopes.allow(scope) {
            return Err(ApiError::Forbidden(format!(
                "the key `{}` has the scopes [{}], not `{scope}`",
                key.name, key.scopes
            )));
        }
        Ok(Caller {
            name: key.name.clone(),
            id: Some(key.id.clone()),
            limit: key.limit,
        })
    }

    /// Takes `events` from the caller's bucket: `Err` with how long to wait when it holds too
    /// few, or with `None` when it can never hold that many (more than its burst).
    pub fn take(&self, caller: &Caller, events: u32) -> Result<(), Option<Duration>> {
        let (Some(id), Some(n)) = (&caller.id, NonZeroU32::new(events)) else {
            return Ok(());
        };
        let limiter = self.limiter(id, caller.limit);
        match limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Some(
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            Err(_) => Err(None),
        }
    }

    fn limiter(&self, id: &str, limit: KeyLimit) -> Arc<DefaultDirectRateLimiter> {
        let quota = || {
            let rate = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
            Arc::new(RateLimiter::direct(
                Quota::per_second(rate).allow_burst(burst),
            ))
        };
        let Ok(mut limiters) = self.limiters.lock() else {
            return quota();
        };
        limiters
            .entry(id.to_owned())
            .or_insert_with(|| (limit, quota()))
            .1
            .clone()
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("send a key: Authorization: Bearer <key>".into()))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::Unauthorized("send the key as Authorization: Bearer <key>".into()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::model::EventTime;
    use crate::model::keys::{NewKey, Scopes};

    fn with(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
        h.insert(AUTHORIZATION, value);
        h
    }

    fn key(name: &str, scopes: &[Scope], limit: KeyLimit) -> NewKey {
        NewKey::generate(
            name,
            Scopes::of(scopes.iter().copied()),
            limit,
            EventTime::now(),
        )
        .expect("key")
    }

    #[test]
    fn scopes_decide_and_revocation_counts() {
        let auth = Auth::new(Some(AdminToken::new("tok")), false);
        let feed = key("feed", &[Scope::Ingest], KeyLimit::default());
        let ops = key("ops", &[Scope::Admin], KeyLimit::default());
        auth.set_keys(vec![feed.key.clone(), ops.key.clone()]);

        let caller = auth
            .check(&with(&feed.token), Scope::Ingest)
            .expect("ingest");
        assert_eq!(caller.name, "feed");
        assert!(matches!(
            auth.check(&with(&feed.token), Scope::Admin),
            Err(ApiError::Forbidden(_))
        ));
        assert!(auth.check(&with(&ops.token), Scope::Read).is_ok());
        assert!(auth.check(&with("tok"), Scope::Admin).is_ok());
        assert!(matches!(
            auth.check(&with("tok"), Scope::Ingest),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            auth.check(&HeaderMap::new(), Scope::Ingest),
            Err(ApiError::Unauthorized(_))
        ));
        let wrong = format!("{}x", feed.token);
        assert!(matches!(
            auth.check(&with(&wrong), Scope::Ingest),
            Err(ApiError::Unauthorized(_))
        ));

        auth.set_keys(vec![ops.key]);
        assert!(matches!(
            auth.check(&with(&feed.token), Scope::Ingest),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn a_bucket_refuses_beyond_its_burst_and_says_how_long_to_wait() {
        let auth = Auth::new(None, false);
        let limit = KeyLimit {
            per_second: 10,
            burst: 100,
        };
        let feed = key("feed", &[Scope::Ingest], limit);
        auth.set_keys(vec![feed.key.clone()]);
        let caller = auth
            .check(&with(&feed.token), Scope::Ingest)
            .expect("caller");
        assert_eq!(auth.take(&caller, 100), Ok(()));
        let wait = auth.take(&caller, 10).expect_err("empty").expect("a wait");
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1));
        assert_eq!(auth.take(&caller, 101), Err(None), "more than the burst");
    }
}
