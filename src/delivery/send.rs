//! One attempt: the request a sink's format makes of a delivery, sent with a deadline, and
//! what its answer means.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER, USER_AGENT};

use super::format::body;
use super::sign::signature;
use crate::model::EventTime;
use crate::model::alerting::SinkConfig;
use crate::store::outbox::Pending;

/// What a sink's answer (or its silence) means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx: delivered.
    Accepted(u16),
    /// 410 Gone: the endpoint is no more; the sink is disabled.
    Gone,
    /// Anything else: try again, not before `retry_after` when the sink said so.
    Failed {
        status: Option<u16>,
        retry_after: Option<Duration>,
        error: String,
    },
}

/// Sends one delivery to `sink`; the client's timeout is the deadline.
pub async fn send(client: &reqwest::Client, sink: &SinkConfig, d: &Pending) -> Answer {
    let body = body(sink.format, &sink.name, &d.alert);
    let id = d.id.to_string();
    let mut request = client
        .post(&sink.url)
        .header(CONTENT_TYPE, "application/json")
        .header(
            USER_AGENT,
            concat!("citystream/", env!("CARGO_PKG_VERSION")),
        )
        .header("webhook-id", &id);
    if let Some(secret) = &sink.secret {
        let now = EventTime::now().as_millis() / 1000;
        request = request
            .header("webhook-timestamp", now)
            .header("webhook-signature", signature(secret, &id, now, &body));
    }
    match request.body(body).send().await {
        Ok(response) => answer(response.status(), response.headers()),
        // Without the URL: it may carry a token.
        Err(e) => Answer::Failed {
            status: None,
            retry_after: None,
            error: describe(&e.without_url()),
        },
    }
}

fn answer(status: StatusCode, headers: &HeaderMap) -> Answer {
    if status.is_success() {
        return Answer::Accepted(status.as_u16());
    }
    if status == StatusCode::GONE {
        return Answer::Gone;
    }
    let honoured = [
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::SERVICE_UNAVAILABLE,
    ];
    Answer::Failed {
        status: Some(status.as_u16()),
        retry_after: honoured
            .contains(&status)
            .then(|| retry_after(headers))
            .flatten(),
        error: format!("the sink answered {status}"),
    }
}

/// `Retry-After` in seconds or as an HTTP date.
/// The wait a 429 or 503 asks for: seconds, or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ms = at.timestamp_millis() - EventTime::now().as_millis();
    Some(Duration::from_millis(ms.max(0) as u64))
}

fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn answers_are_read_as_the_issue_says() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            answer(StatusCode::NO_CONTENT, &headers),
            Answer::Accepted(204)
        );
        assert_eq!(answer(StatusCode::GONE, &headers), Answer::Gone);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let Answer::Failed {
            retry_after: after, ..
        } = answer(StatusCode::TOO_MANY_REQUESTS, &headers)
        else {
            panic!("a 429 is tried again")
        };
        assert_eq!(after, Some(Duration::from_secs(7)));
        let Answer::Failed {
            retry_after: after,
            status,
            ..
        } = answer(StatusCode::INTERNAL_SERVER_ERROR, &headers)
        else {
            panic!("a 500 is tried again")
        };
        assert_eq!((after, status), (None, Some(500)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
    }
}
