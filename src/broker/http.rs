//! A producer that sends events to a running CityStream's `POST /api/v1/events`: what
//! `citystream send` and `citystream produce --to URL` use.
//!
//! A batch is one NDJSON request with an `Idempotency-Key` of its own. It is sent again, with
//! the same key and body, after a timeout, a dropped connection, a 429 or a 5xx, waiting as
//! `Retry-After` says or backing off, until `give_up_after`: the server's ids make every repeat
//! a no-op, so a batch counts once however often it is sent. Any other answer (400, 401, 403,
//! 413, 415) cannot change by sending again and fails the send.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;

use super::{BrokerError, Message, Producer};

/// Where and how an [`HttpProducer`] sends.
#[derive(Debug, Clone)]
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
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
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
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "sending events failed; sending them again");
                return Ok(Err(None));
            }
        };
        let status = response.status();
        let wait = retry_after(&response);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            tracing::debug!(%status, "the server asks to send again");
            return Ok(Err(wait));
        }
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(BrokerError::Http(format!(
                "the server refuses the events ({status}): {text}"
            )));
        }
        serde_json::from_str(&text)
            .map(Ok)
            .map_err(|e| BrokerError::Http(format!("the server's answer is not understood: {e}")))
    }
}

/// The wait a 429 or 503 asks for, in whole seconds.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(60)))
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
        let key = uuid::Uuid::new_v4().to_string();
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
