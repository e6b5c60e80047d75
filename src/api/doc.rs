//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes and the
//! body types, served at `/api/v1/openapi.json` and browsed with Swagger UI at `/docs`.
//!
//! The model's values serialize by hand (a city is a string, a time an RFC 3339 string), so
//! their schemas are written here, next to the rules they describe.

use std::borrow::Cow;

use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, SchemaFormat, Type,
};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{OpenApi, PartialSchema, ToSchema};

use super::alerting;
use super::body;
use super::handlers;
use super::ingest;
use super::stream;
use crate::model::{City, EventTime, EventType, MAX_CITY_BYTES, Severity, SeverityCounts};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CityStream API",
        description = "Results of the CityStream pipeline: raw city events, tumbling windows per \
            city and event type at every resolution kept (the base window, 5 minutes by \
            default, and its hourly and daily rollups), high and critical alerts, late events \
            and dead letters, read from the store. Every list is paged with `limit` and \
            `cursor`; the lists of a time range take `from` and `to`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        handlers::health,
        ingest::ingest,
        ingest::counts,
        handlers::events,
        handlers::summary,
        handlers::alerts,
        handlers::cities,
        handlers::aggregations,
        handlers::resolutions,
        handlers::event_types,
        handlers::stats,
        handlers::late_events,
        handlers::dead_letters,
        stream::stream,
        alerting::rules,
        alerting::put_rules,
        alerting::deliveries,
        alerting::retry,
        handlers::metrics,
    ),
    components(schemas(body::ErrorBody, stream::StreamWindow, stream::StreamHealth)),
    modifiers(&AdminSecurity),
    tags(
        (name = "results", description = "What the pipeline stored"),
        (name = "operations", description = "Health and live updates"),
        (name = "alerting", description = "Alert rules and their deliveries"),
        (name = "ingest", description = "Events in over HTTP"),
    ),
)]
pub struct ApiDoc;

/// The API keys, as `Authorization: Bearer <key>`.
struct AdminSecurity;

impl utoipa::Modify for AdminSecurity {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what))
                    .build(),
            )
        };
        components.add_security_scheme(
            "admin",
            bearer("A key with the `admin` scope (`citystream keys create --scope admin`), or the `--admin-token`"),
        );
        components.add_security_scheme(
            "apiKey",
            bearer("A key with the `ingest` scope (`citystream keys create --scope ingest`)"),
        );
    }
}

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

fn string(format: Option<SchemaFormat>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(format)
}

fn closed_set(values: impl IntoIterator<Item = &'static str>, what: &str) -> RefOr<Schema> {
    string(None)
        .enum_values(Some(values))
        .description(Some(what))
        .into()
}

impl PartialSchema for City {
    fn schema() -> RefOr<Schema> {
        string(None)
            .description(Some(format!(
                "A city name: at most {MAX_CITY_BYTES} bytes of UTF-8, no control characters"
            )))
            .min_length(Some(1))
            .examples(["Chicago"])
            .into()
    }
}
impl ToSchema for City {}

impl PartialSchema for EventTime {
    fn schema() -> RefOr<Schema> {
        string(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("UTC, RFC 3339 with milliseconds"))
            .examples(["2026-11-25T10:12:41.503Z"])
            .into()
    }
}
impl ToSchema for EventTime {
    fn name() -> Cow<'static, str> {
        "Timestamp".into()
    }
}

impl PartialSchema for EventType {
    fn schema() -> RefOr<Schema> {
        closed_set(EventType::names().iter().copied(), "What happened")
    }
}
impl ToSchema for EventType {}

impl PartialSchema for Severity {
    fn schema() -> RefOr<Schema> {
        closed_set(
            Severity::ALL.map(Severity::as_str),
            "How bad it is; high and critical events are alerts",
        )
    }
}
impl ToSchema for Severity {}

impl PartialSchema for SeverityCounts {
    fn schema() -> RefOr<Schema> {
        let count = || {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
        };
        Severity::ALL
            .iter()
            .fold(ObjectBuilder::new(), |o, s| o.property(s.as_str(), count()))
            .description(Some(
                "Events per severity; a severity with none is left out",
            ))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}
impl ToSchema for SeverityCounts {}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// Every query parameter is declared `in: query` with its bounds, as `params.rs` checks them.
    #[test]
    fn the_document_declares_every_route_and_its_query_parameters() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        for route in super::super::ROUTES.iter().chain(&["/metrics"]) {
            assert!(paths.contains_key(*route), "{route} is not documented");
        }
        let mut limits = 0;
        for (path, item) in paths {
            let params = item["get"]["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for p in &params {
                let name = p["name"].as_str().unwrap();
                let placed = p["in"].as_str().unwrap();
                let expected = match name {
                    "Last-Event-ID" => "header",
                    _ if path.contains(&format!("{{{name}}}")) => "path",
                    _ => "query",
                };
                assert_eq!(placed, expected, "{path} {name}");
                if name == "limit" {
                    limits += 1;
                    assert_eq!(p["schema"]["minimum"], Value::from(1));
                    assert_eq!(
                        p["schema"]["maximum"],
                        Value::from(super::super::params::MAX_LIMIT)
                    );
                }
            }
        }
        assert_eq!(limits, 7, "every paged list documents `limit`");
    }
}
