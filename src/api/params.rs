//! Query and path parameters, parsed into typed values with messages a client can act on.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;

use super::error::ApiError;
use crate::model::{City, EventType};

/// The raw query string as name → value; typed parsing happens in the helpers below so that
/// every mistake becomes a JSON 400.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Query(map)| Params(map))
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {}", e.body_text())))
    }
}

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
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
}

/// A city from a path segment or parameter.
pub fn city(raw: &str) -> Result<City, ApiError> {
    City::parse(raw).map_err(|e| ApiError::BadRequest(format!("invalid city: {e}")))
}
