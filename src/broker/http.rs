//! A producer that sends events to a running CityStream's `POST /api/v1/events`: what
//! `citystream send` and `citystream produce --to URL` use.
//!
//! A batch is one NDJSON request whose `Idempotency-Key` is a hash of its body. It is sent
//! again, with the same key and body, after a timeout, a dropped connection, a 429, 502, 503 or
//! 504, waiting as `Retry-After` says or backing off, until `give_up_after`: the server's ids
//! make every repeat a no-op, so a batch counts once however often it is sent (and a file sent
//! twice counts once). Any other answer (400, 401, 403, 404, 413, 415, 500) cannot change by
//! sending again and fails the send.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;

use super::{BrokerError, Message, Producer};
use crate::delivery::send::retry_after;

/// Where and how an [`HttpProducer`] sends. Its `Debug` leaves the key out.
#[derive(Clone)]
pub struct HttpConfig {
    /// The API's base URL, e.g. `http://127.0.0.1:8082`.
    pub url: String,
    /// A key with the `ingest` scope.
    pub key: String,
    /// Longest one request may take.
    pub timeout: Duration,
    /// How long a batch is sent again before the send fails.
    pub give_up_after: Duration,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &self.url)
            .field("key", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("give_up_after", &self.give_up_after)
            .finish()
    }
}

/// Largest answer read: a full list of rejections of a 10 000-event request fits many times.
const MAX_ANSWER: usize = 16 << 20;

/// What the server answered to a batch.
#[derive(Debug, Deserialize)]
struct Answer {
    accepted: u64,
    rejected: Vec<Rejected>,
}

#[derive(Debug, Deserialize)]
struct Rejected {
    index: usize,
    reason: String,
}

/// Sends batches of events over HTTP, and counts what the server took.
pub struct HttpProducer {
    client: reqwest::Client,
    endpoint: String,
    authorization: String,
    give_up_after: Duration,
    accepted: AtomicU64,
    rejected: AtomicU64,
}

impl HttpProducer {
    pub fn new(config: &HttpConfig) -> Result<Self, BrokerError> {
        // A redirect could carry the key elsewhere: none is followed, nor any proxy. A
        // connection idle for the server's header timeout (10 s by default) is closed by the
        // server, and a batch sent on it as it closes fails: idle ones are dropped before.
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| BrokerError::Http(format!("building the HTTP client: {e}")))?;
        Ok(HttpProducer {
            client,
            endpoint: format!("{}/api/v1/events", config.url.trim_end_matches('/')),
            authorization: format!("Bearer {}", config.key.trim()),
            give_up_after: config.give_up_after,
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    /// Events the server accepted and rejected so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.accepted.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }

    /// Sends one request; `Ok(None)` means "send it again", after the wait if one is given.
    async fn attempt(
        &self,
        body: &bytes::Bytes,
        idempotency_key: &str,
    ) -> Result<Result<Answer, Option<Duration>>, BrokerError> {
        let sent = self
            .client
            .post(&self.endpoint)
            .header(AUTHORIZATION, &self.authorization)
            .header(CONTENT_TYPE, "application/x-ndjson")
            .header("Idempotency-Key", idempotency_key)
            .body(body.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e.without_url(), "sending events failed; sending them again");
                return Ok(Err(None));
            }
        };
        let status = response.status();
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        ) {
            tracing::debug!(%status, "the server asks to send again");
            let wait = retry_after(response.headers()).map(|w| w.min(Duration::from_secs(60)));
            return Ok(Err(wait));
        }
        let mut answer = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            if answer.len() + chunk.len() > MAX_ANSWER {
                return Err(BrokerError::Http("the server's answer is too large".into()));
            }
            answer.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&answer);
            return Err(BrokerError::Http(format!(
                "the server refuses the events ({status}): {text}"
            )));
        }
        serde_json::from_slice(&answer)
            .map(Ok)
            .map_err(|e| BrokerError::Http(format!("the server's answer is not understood: {e}")))
    }
}

#[async_trait]
impl Producer for HttpProducer {
    async fn send(&self, batch: Vec<Message>) -> Result<(), BrokerError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut body = BytesMut::with_capacity(batch.iter().map(|m| m.payload.len() + 1).sum());
        for m in &batch {
            body.put_slice(&m.payload);
            body.put_u8(b'\n');
        }
        let body = body.freeze();
        // From the body: the same events sent again, by a retry or a second run over the same
        // file, get the same ids, so they count once.
        let key = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&body));
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.attempt(&body, &key).await? {
                Ok(answer) => {
                    self.accepted.fetch_add(answer.accepted, Ordering::Relaxed);
                    self.rejected
                        .fetch_add(answer.rejected.len() as u64, Ordering::Relaxed);
                    for r in answer.rejected.iter().take(3) {
                        tracing::warn!(index = r.index, reason = %r.reason, "event rejected");
                    }
                    return Ok(());
                }
                Err(wait) if started.elapsed() < self.give_up_after => {
                    tokio::time::sleep(wait.unwrap_or(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(_) => {
                    return Err(BrokerError::Http(format!(
                        "the events were not taken within {:?}",
                        self.give_up_after
                    )));
                }
            }
        }
    }
}
