//! Whole answers of `/api/v1/aggregations`, kept while nothing they show can have changed.
//!
//! An answer is fixed by its query, its page, its `fields`, the earliest window its resolution
//! still keeps (`kept_from`, which moves once a window span) and the city's windows as stored. The
//! store gives each city a windows version that every write to its windows moves and that is never
//! given twice ([`Reader::windows_version`](crate::store::Reader::windows_version)), so an answer
//! is served again while the version read before it holds. The version is read before the windows:
//! an answer made from a newer state than its version only costs a miss later. An answer is at most
//! [`MAX_AGE`] old besides: a window's stored expiry follows the writer's retention, which a
//! `serve` configured otherwise would not see move `kept_from`.
//!
//! A client that accepts gzip gets an answer of 1 KiB or more gzipped, a kept one compressed
//! once: a month of hourly windows is about 390 KB as JSON and 12 KB gzipped.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use metrics::counter;
use quick_cache::sync::Cache;
use quick_cache::{OptionsBuilder, Weighter};

use super::body::WindowFields;
use crate::model::EventTime;
use crate::store::{Page, WindowPos, WindowQuery};

/// Bytes of answers kept by default (`--answer-cache-mib`).
pub const DEFAULT_BYTES: u64 = 8 << 20;

/// Longest an answer is served again, whatever the version says.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// What an answer answers: the query, its page, and the windows still kept.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AnswerKey {
    query: WindowQuery,
    after: Option<WindowPos>,
    limit: usize,
    fields: WindowFields,
    kept_from: EventTime,
}

impl AnswerKey {
    pub fn new(
        query: &WindowQuery,
        page: &Page<WindowPos>,
        fields: WindowFields,
        kept_from: EventTime,
    ) -> Self {
        AnswerKey {
            query: query.clone(),
            after: page.after,
            limit: page.limit,
            fields,
            kept_from,
        }
    }
}

/// Answers shorter than this are sent as they are: gzip would save little of a small answer.
const GZIP_FROM: usize = 1024;

/// An answer as JSON, made when the city's windows had `version`, and gzipped once a client
/// that accepts gzip asked for it.
struct Answer {
    version: u64,
    made: Instant,
    json: Bytes,
    gzip: Option<Bytes>,
}

impl Answer {
    /// As a response: gzipped if asked and it has it.
    fn respond(&self, gzip: bool) -> Response {
        match (&self.gzip, gzip) {
            (Some(body), true) => respond(body.clone(), Some("gzip")),
            _ => respond(self.json.clone(), None),
        }
    }
}

/// `answer` with its JSON gzipped too; as it was if gzip fails.
fn compressed(answer: &Answer) -> Answer {
    let gzip = gzip(&answer.json)
        .inspect_err(|e| tracing::warn!(error = %e, "gzip of an answer failed"))
        .ok();
    Answer {
        version: answer.version,
        made: answer.made,
        json: answer.json.clone(),
        gzip,
    }
}

/// What an entry costs: its bodies, its city, and the map's own share.
#[derive(Clone)]
struct BodyLength;

impl Weighter<AnswerKey, Arc<Answer>> for BodyLength {
    fn weight(&self, key: &AnswerKey, answer: &Arc<Answer>) -> u64 {
        let gzip = answer.gzip.as_ref().map_or(0, Bytes::len);
        (answer.json.len() + gzip + key.query.city.len() + 160) as u64
    }
}

/// The answers kept, at most a set number of bytes of them (S3-FIFO, as the rendered windows).
pub struct Answers {
    cache: Cache<AnswerKey, Arc<Answer>, BodyLength>,
}

impl Answers {
    /// Keeps at most `bytes` of answers; 0 keeps none.
    pub fn new(bytes: u64) -> Self {
        // The map is sized for answers of about 64 KB; it grows if they are smaller. One shard:
        // a cache splits its bytes among its shards and keeps no answer over a shard's share,
        // and a year of days is 2.3 MB. A read takes the shard's lock shared.
        let options = OptionsBuilder::new()
            .estimated_items_capacity((bytes / 65_536).max(1) as usize)
            .weight_capacity(bytes)
            .shards(1)
            .build()
            .expect("both capacities are given");
        Answers {
            cache: Cache::with_options(options, BodyLength, Default::default(), Default::default()),
        }
    }

    /// Whether answers are kept at all (`--answer-cache-mib` above 0).
    pub fn keeps(&self) -> bool {
        self.cache.capacity() > 0
    }

    /// The answer kept for `key` while the city's windows have `version`, as a response; gzip
    /// when `headers` accept it.
    pub fn get(&self, key: &AnswerKey, version: u64, headers: &HeaderMap) -> Option<Response> {
        let answer = self
            .cache
            .get(key)
            .filter(|a| a.version == version && a.made.elapsed() < MAX_AGE);
        let Some(answer) = answer else {
            counter!("citystream_api_answers_total", "from" => "store").increment(1);
            return None;
        };
        counter!("citystream_api_answers_total", "from" => "cache").increment(1);
        let gzip = accepts_gzip(headers) && answer.json.len() >= GZIP_FROM;
        let answer = if gzip && answer.gzip.is_none() {
            self.keep(key.clone(), compressed(&answer))
        } else {
            answer
        };
        Some(answer.respond(gzip))
    }

    /// `json`, the answer to `key` made just now, as a response (gzip when `headers` accept
    /// it); kept when the city's windows have a `version`.
    pub fn made(
        &self,
        key: AnswerKey,
        version: Option<u64>,
        json: Bytes,
        headers: &HeaderMap,
    ) -> Response {
        let plain = Answer {
            version: version.unwrap_or_default(),
            made: Instant::now(),
            json,
            gzip: None,
        };
        let gzipped = accepts_gzip(headers) && plain.json.len() >= GZIP_FROM;
        let answer = if gzipped { compressed(&plain) } else { plain };
        let response = answer.respond(gzipped);
        if version.is_some() {
            self.keep(key, answer);
        }
        response
    }

    fn keep(&self, key: AnswerKey, answer: Answer) -> Arc<Answer> {
        let answer = Arc::new(answer);
        self.cache.insert(key, answer.clone());
        answer
    }

    /// Bytes held now.
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }
}

impl Default for Answers {
    fn default() -> Self {
        Answers::new(DEFAULT_BYTES)
    }
}

/// `body` as a JSON response: `encoding` names its compression, if any. Either way it varies
/// by the request's Accept-Encoding.
fn respond(body: Bytes, encoding: Option<&'static str>) -> Response {
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::VARY, HeaderValue::from_static("accept-encoding")),
        ],
        body,
    )
        .into_response();
    if let Some(encoding) = encoding {
        let value = HeaderValue::from_static(encoding);
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, value);
    }
    response
}

fn gzip(json: &[u8]) -> std::io::Result<Bytes> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(json.len() / 8), Compression::fast());
    encoder.write_all(json)?;
    Ok(encoder.finish()?.into())
}

/// Whether an Accept-Encoding header takes gzip: named (or `*`) without `q=0`.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BASE;
    use crate::store::TimeRange;

    fn key(city: &str, limit: usize) -> AnswerKey {
        let query = WindowQuery {
            city: city.to_owned(),
            event_type: None,
            resolution: BASE,
            range: TimeRange::ALL,
        };
        AnswerKey::new(
            &query,
            &Page::first(limit),
            WindowFields::ALL,
            EventTime::from_millis(0),
        )
    }

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(accept).unwrap(),
        );
        h
    }

    async fn body(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn an_answer_is_served_again_only_while_its_version_holds() {
        let answers = Answers::default();
        let json = Bytes::from_static(br#"{"count":0}"#);
        answers.made(key("Boston", 10), Some(7), json.clone(), &HeaderMap::new());
        let none = HeaderMap::new();
        let kept = answers.get(&key("Boston", 10), 7, &none).unwrap();
        assert_eq!(body(kept).await, json.to_vec());
        assert!(answers.get(&key("Boston", 10), 8, &none).is_none());
        assert!(answers.get(&key("Boston", 11), 7, &none).is_none());
        assert!(answers.get(&key("Seattle", 10), 7, &none).is_none());
    }

    #[tokio::test]
    async fn a_client_that_accepts_gzip_gets_the_same_answer_compressed() {
        let answers = Answers::default();
        let json = Bytes::from(format!("[{}]", vec!["{\"n\":1}"; 1000].join(",")));
        answers.made(key("Boston", 10), Some(1), json.clone(), &HeaderMap::new());
        let first = answers
            .get(&key("Boston", 10), 1, &headers("br, gzip;q=0.8"))
            .unwrap();
        assert_eq!(first.headers()[header::CONTENT_ENCODING], "gzip");
        let compressed = body(first).await;
        assert!(
            compressed.len() < json.len() / 10,
            "{} bytes",
            compressed.len()
        );
        let mut plain = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&compressed[..]),
            &mut plain,
        )
        .unwrap();
        assert_eq!(plain, json.to_vec());
        let again = answers
            .get(&key("Boston", 10), 1, &headers("gzip"))
            .unwrap();
        assert_eq!(body(again).await, compressed);
    }

    #[tokio::test]
    async fn an_answer_made_for_a_client_that_accepts_gzip_is_gzipped_unless_small() {
        let answers = Answers::default();
        let large = Bytes::from(vec![b' '; 4096]);
        let made = answers.made(key("Boston", 10), Some(1), large, &headers("gzip"));
        assert_eq!(made.headers()[header::CONTENT_ENCODING], "gzip");
        let small = Bytes::from_static(br#"{"count":0}"#);
        let made = answers.made(key("Lima", 10), Some(1), small.clone(), &headers("gzip"));
        assert!(made.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(body(made).await, small.to_vec());
        let kept = answers.get(&key("Lima", 10), 1, &headers("gzip")).unwrap();
        assert!(kept.headers().get(header::CONTENT_ENCODING).is_none());
    }

    #[test]
    fn gzip_is_taken_when_named_or_starred_without_q_zero() {
        for (accept, takes) in [
            ("gzip", true),
            ("deflate, GZIP", true),
            ("gzip;q=0.5", true),
            ("*", true),
            ("gzip;q=0", false),
            ("gzip; q=0.0", false),
            ("br, deflate", false),
            ("identity", false),
        ] {
            assert_eq!(accepts_gzip(&headers(accept)), takes, "{accept}");
        }
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn the_answers_kept_stay_within_their_bound() {
        let bound = 256 << 10;
        let answers = Answers::new(bound);
        let json = Bytes::from(vec![b' '; 10_000]);
        for limit in 0..500 {
            answers.made(
                key("Boston", limit),
                Some(1),
                json.clone(),
                &HeaderMap::new(),
            );
        }
        assert!(answers.weight() <= bound, "{} bytes", answers.weight());
        assert!(answers.weight() > bound / 2, "{} bytes", answers.weight());
        // An answer of a quarter of the default bound and more is kept too.
        let answers = Answers::new(8 << 20);
        let year = Bytes::from(vec![b' '; 2_500_000]);
        answers.made(key("Boston", 1), Some(1), year, &HeaderMap::new());
        assert!(
            answers
                .get(&key("Boston", 1), 1, &HeaderMap::new())
                .is_some()
        );
        let none = Answers::new(0);
        assert!(!none.keeps());
        none.made(key("Boston", 1), Some(1), json, &HeaderMap::new());
        assert!(none.get(&key("Boston", 1), 1, &HeaderMap::new()).is_none());
    }
}
