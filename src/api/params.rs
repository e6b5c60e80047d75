//! Query and path parameters, parsed into typed values with messages a client can act on, and
//! the cursors that continue a list where a page ended.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::body::WindowFields;
use super::error::ApiError;
use crate::model::{City, EventTime, EventType, Resolution, Resolutions};
use crate::store::outbox::DeliveryKey;
use crate::store::{DeadLetterKey, EventKey, Page, TimeRange, WindowPos};

/// Longest cursor accepted, in characters.
const MAX_CURSOR: usize = 1024;
/// Largest page a list serves (the handlers' OpenAPI attributes say the same; `doc` checks).
pub const MAX_LIMIT: u32 = 1000;

/// `limit` and `cursor` as the OpenAPI document describes them, for every paged list;
/// [`Params::page`] reads them. Each list's default `limit` is in its path's first line.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(
    dead_code,
    reason = "describes the parameters; `Params::page` parses them"
)]
pub struct Paging {
    /// Items per page, from 1 to 1000.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_cursor` of the page before; anything else is a 400.
    #[param(max_length = 1024)]
    cursor: Option<String>,
}

/// `from` and `to` as the OpenAPI document describes them, for every list of a time range;
/// [`Params::range`] reads them.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(
    dead_code,
    reason = "describes the parameters; `Params::range` parses them"
)]
pub struct Range {
    /// The range's start, RFC 3339, included (default: as far back as is kept).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-24T00:00:00Z")]
    from: Option<String>,
    /// The range's end, RFC 3339, excluded (default: open); not before `from`.
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-25T00:00:00Z")]
    to: Option<String>,
}

/// The raw query string as name → value; typed parsing happens in the helpers below so that
/// every mistake becomes a JSON 400.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    /// A parameter given twice (`?limit=1&limit=3000`) is a 400: which one was meant is not
    /// for the server to guess.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::BadRequest(format!("invalid query string: {}", e.body_text()))
            })?;
        let mut map = HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            if map.contains_key(&name) {
                return Err(ApiError::BadRequest(format!(
                    "query parameter `{name}` is given more than once"
                )));
            }
            map.insert(name, value);
        }
        Ok(Params(map))
    }
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// An integer in `range`, or `default` when absent.
    pub fn int(
        &self,
        name: &str,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<u32, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        let out_of_range = || {
            ApiError::BadRequest(format!(
                "{name} must be an integer from {} to {}, got `{raw}`",
                range.start(),
                range.end()
            ))
        };
        let n: u32 = raw.trim().parse().map_err(|_| out_of_range())?;
        if range.contains(&n) {
            Ok(n)
        } else {
            Err(out_of_range())
        }
    }

    /// An optional city.
    pub fn city(&self, name: &str) -> Result<Option<City>, ApiError> {
        self.get(name).map(city).transpose()
    }

    /// A required city.
    pub fn required_city(&self, name: &str) -> Result<City, ApiError> {
        self.city(name)?
            .ok_or_else(|| ApiError::BadRequest(format!("query parameter `{name}` is required")))
    }

    /// An optional event type, under any of `names` (the first present wins; they must agree).
    pub fn event_type(&self, names: &[&str]) -> Result<Option<EventType>, ApiError> {
        let mut found: Option<(&str, EventType)> = None;
        for name in names {
            let Some(raw) = self.get(name) else { continue };
            let t: EventType = raw
                .parse()
                .map_err(|e: crate::model::UnknownValue| ApiError::BadRequest(e.to_string()))?;
            match found {
                Some((first, prev)) if prev != t => {
                    return Err(ApiError::BadRequest(format!(
                        "`{first}` and `{name}` disagree: {prev} vs {t}"
                    )));
                }
                Some(_) => {}
                None => found = Some((name, t)),
            }
        }
        Ok(found.map(|(_, t)| t))
    }

    /// `fields`: the fields of each window to show, comma-separated; all when absent.
    pub fn window_fields(&self) -> Result<WindowFields, ApiError> {
        self.get("fields").map_or(Ok(WindowFields::ALL), |list| {
            WindowFields::parse(list).map_err(ApiError::BadRequest)
        })
    }

    /// An optional time, RFC 3339.
    pub fn time(&self, name: &str) -> Result<Option<EventTime>, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        EventTime::parse_rfc3339(raw.trim()).map(Some).map_err(|e| {
            ApiError::BadRequest(format!(
                "{name} must be an RFC 3339 time such as 2026-11-25T10:00:00Z, got `{raw}`: {e}"
            ))
        })
    }

    /// `from` and `to`: a half-open range, `from` not after `to`.
    pub fn range(&self) -> Result<TimeRange, ApiError> {
        let range = TimeRange {
            from: self.time("from")?,
            to: self.time("to")?,
        };
        match (range.from, range.to) {
            (Some(from), Some(to)) if from > to => Err(ApiError::BadRequest(format!(
                "from ({from}) is after to ({to})"
            ))),
            _ => Ok(range),
        }
    }

    /// `resolution`, one of those kept (the base window when absent).
    pub fn resolution(&self, kept: &Resolutions) -> Result<Resolution, ApiError> {
        let Some(raw) = self.get("resolution") else {
            return Ok(kept.base());
        };
        kept.named(raw.trim()).ok_or_else(|| {
            let names: Vec<String> = kept.iter().map(|r| r.name()).collect();
            ApiError::BadRequest(format!(
                "resolution must be one of {}, got `{raw}`",
                names.join(", ")
            ))
        })
    }

    /// Whether the query string names `name`.
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// `limit` (1 to 1000, `default` when absent) and `cursor` (where the previous page ended).
    pub fn page<K: CursorKey>(&self, default: u32) -> Result<Page<K>, ApiError> {
        let limit = self.int("limit", default, 1..=MAX_LIMIT)? as usize;
        let after = self.get("cursor").map(K::from_cursor).transpose()?;
        Ok(Page { after, limit })
    }
}

/// A city from a path segment or parameter.
pub fn city(raw: &str) -> Result<City, ApiError> {
    City::parse(raw).map_err(|e| ApiError::BadRequest(format!("invalid city: {e}")))
}

/// A list position a client can hand back as `cursor`: opaque, URL-safe text.
pub trait CursorKey: Sized {
    type Wire: Serialize + DeserializeOwned;
    fn to_wire(&self) -> Self::Wire;
    fn from_wire(wire: Self::Wire) -> Option<Self>;

    fn to_cursor(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&self.to_wire()).unwrap_or_default())
    }

    fn from_cursor(raw: &str) -> Result<Self, ApiError> {
        let invalid = || ApiError::BadRequest("invalid cursor: pass back a next_cursor".into());
        if raw.len() > MAX_CURSOR {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        let wire = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        Self::from_wire(wire).ok_or_else(invalid)
    }
}

impl CursorKey for EventKey {
    type Wire = (i64, String);
    fn to_wire(&self) -> Self::Wire {
        (self.at.as_millis(), self.event_id.clone())
    }
    fn from_wire((at, event_id): Self::Wire) -> Option<Self> {
        Some(EventKey {
            at: EventTime::from_millis(at),
            event_id,
        })
    }
}

impl CursorKey for String {
    type Wire = (String,);
    fn to_wire(&self) -> Self::Wire {
        (self.clone(),)
    }
    fn from_wire((city,): Self::Wire) -> Option<Self> {
        Some(city)
    }
}

impl CursorKey for WindowPos {
    type Wire = (i64, EventType);
    fn to_wire(&self) -> Self::Wire {
        (self.start.as_millis(), self.event_type)
    }
    fn from_wire((start, event_type): Self::Wire) -> Option<Self> {
        Some(WindowPos {
            start: EventTime::from_millis(start),
            event_type,
        })
    }
}

impl CursorKey for DeadLetterKey {
    type Wire = (i64, String, u32, u64);
    fn to_wire(&self) -> Self::Wire {
        (
            self.received_at.as_millis(),
            self.source.clone(),
            self.partition,
            self.offset,
        )
    }
    fn from_wire((received_at, source, partition, offset): Self::Wire) -> Option<Self> {
        Some(DeadLetterKey {
            received_at: EventTime::from_millis(received_at),
            source,
            partition,
            offset,
        })
    }
}

impl CursorKey for DeliveryKey {
    type Wire = (i64, uuid::Uuid);
    fn to_wire(&self) -> Self::Wire {
        (self.created_at.as_millis(), self.id)
    }
    fn from_wire((at, id): Self::Wire) -> Option<Self> {
        Some(DeliveryKey {
            created_at: EventTime::from_millis(at),
            id,
        })
    }
}

/// The page to ask a store for: one more item than the client wants, to know whether more
/// follow.
pub fn one_more<K: Clone>(page: &Page<K>) -> Page<K> {
    Page {
        after: page.after.clone(),
        limit: page.limit + 1,
    }
}

/// Cuts what the store returned for [`one_more`] to the page, and the cursor of the next page
/// when there is one.
pub fn cut<T, K: CursorKey>(
    mut items: Vec<T>,
    limit: usize,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, Option<String>) {
    if items.len() <= limit {
        return (items, None);
    }
    items.truncate(limit);
    let next = items.last().map(|last| key(last).to_cursor());
    (items, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn a_range_is_two_times_in_order_and_a_resolution_one_kept() {
        let range = params(&[
            ("from", "2026-11-25T10:00:00Z"),
            ("to", "2026-11-25T11:00:00+01:00"),
        ])
        .range()
        .unwrap();
        assert_eq!(range.from, range.to, "the same instant: an empty range");
        for bad in [
            &[("from", "yesterday")][..],
            &[
                ("from", "2026-11-25T10:00:01Z"),
                ("to", "2026-11-25T10:00:00Z"),
            ][..],
        ] {
            assert!(matches!(params(bad).range(), Err(ApiError::BadRequest(_))));
        }
        let kept = Resolutions::default();
        assert_eq!(params(&[]).resolution(&kept).unwrap(), kept.base());
        assert_eq!(
            params(&[("resolution", "1d")])
                .resolution(&kept)
                .unwrap()
                .name(),
            "1d"
        );
        let Err(ApiError::BadRequest(why)) = params(&[("resolution", "7m")]).resolution(&kept)
        else {
            panic!("7m is not kept");
        };
        assert!(why.contains("5m, 1h, 1d"), "{why}");
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_a_400() {
        let key = DeadLetterKey {
            received_at: EventTime::from_millis(42),
            source: "file:/tmp/a b.jsonl".into(),
            partition: 3,
            offset: 99,
        };
        let cursor = key.to_cursor();
        assert!(
            cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(DeadLetterKey::from_cursor(&cursor).unwrap(), key);
        for bad in ["", "!!", "bm90IGpzb24", &"A".repeat(2000)] {
            assert!(matches!(
                DeadLetterKey::from_cursor(bad),
                Err(ApiError::BadRequest(_))
            ));
        }
        let (page, next) = cut(vec![1, 2, 3], 2, |n: &i32| n.to_string());
        assert_eq!(page, [1, 2]);
        assert_eq!(String::from_cursor(&next.unwrap()).unwrap(), "2");
        assert_eq!(cut(vec![1, 2], 2, |n: &i32| n.to_string()).1, None);
    }
}
