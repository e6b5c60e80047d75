//! The alerting endpoints: the rules in force (read, and replaced with an `admin` key) and
//! the deliveries of the outbox (listed, and sent again with an `admin` key).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::body::ErrorBody;
use super::error::ApiError;
use super::params::{Paging, Params, cut, one_more};
use crate::delivery::ReloadError;
use crate::model::EventTime;
use crate::model::alerting::{PublicAlerting, PublicSink, Rule};
use crate::model::keys::Scope;
use crate::store::outbox::{Delivery, DeliveryFilter, DeliveryKey, DeliveryStatus};

/// The rules in force and where their alerts go, secrets left out.
#[derive(Serialize, ToSchema)]
pub struct RulesBody {
    #[schema(value_type = Vec<RuleDoc>)]
    pub rules: Vec<Rule>,
    #[schema(value_type = Vec<SinkDoc>)]
    pub sinks: Vec<PublicSink>,
}

impl From<PublicAlerting> for RulesBody {
    fn from(p: PublicAlerting) -> Self {
        RulesBody {
            rules: p.rules,
            sinks: p.sinks,
        }
    }
}

/// An alert rule, of the listed cities and types (all when a list is empty). Without `window`,
/// an event at or above `severity` is an alert; with it, a window whose events at or above
/// `severity` reach `window.count` is, once.
#[derive(ToSchema)]
#[allow(dead_code, reason = "documents `Rule` as served")]
pub struct RuleDoc {
    id: String,
    version: u32,
    severity: crate::model::Severity,
    cities: Vec<String>,
    types: Vec<crate::model::EventType>,
    window: Option<WindowConditionDoc>,
}

/// What a window rule counts.
#[derive(ToSchema)]
#[allow(dead_code, reason = "documents `WindowCondition` as served")]
pub struct WindowConditionDoc {
    /// The windows' resolution (`5m`, `1h`, `1d`).
    resolution: String,
    /// Events that make an alert, at least.
    count: u64,
}

/// A sink: its URL's scheme and host only, never its path or secret.
#[derive(ToSchema)]
#[allow(dead_code, reason = "documents `PublicSink` as served")]
pub struct SinkDoc {
    name: String,
    /// Scheme, host and port only.
    url: String,
    /// `standard`, `alertmanager` or `slack`.
    format: String,
    /// Whether requests are signed.
    signed: bool,
    /// The rules whose alerts it takes; all when empty.
    rules: Vec<String>,
}

/// `GET /api/v1/rules`: the alert rules in force and the sinks their alerts go to.
#[utoipa::path(get, path = "/api/v1/rules", tag = "alerting",
    responses((status = 200, description = "Rules in file order; secrets and URL paths left out", body = RulesBody)))]
pub async fn rules(State(state): State<AppState>) -> Json<RulesBody> {
    Json(state.alerting.current().public().into())
}

/// `PUT /api/v1/rules`: replaces the rules file (TOML) whole; the rules in force stay if it
/// does not validate.
#[utoipa::path(put, path = "/api/v1/rules", tag = "alerting",
    request_body(content = String, content_type = "text/plain",
        description = "The whole rules file, TOML (docs/ALERTING.md)"),
    security(("admin" = [])),
    responses(
        (status = 200, description = "In force from the next batch each processor begins", body = RulesBody),
        (status = 400, description = "The file does not validate; the rules in force stay", body = ErrorBody),
        (status = 401, description = "No key, or a wrong one", body = ErrorBody),
        (status = 403, description = "The key has no `admin` scope", body = ErrorBody),
        (status = 409, description = "No rules file was given (--rules) to replace", body = ErrorBody),
    ))]
pub async fn put_rules(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: String,
) -> Result<Json<RulesBody>, ApiError> {
    let caller = state.auth.check(&headers, Scope::Admin)?;
    match state.alerting.replace(&body) {
        Ok(rules) => {
            tracing::info!(
                rules = rules.rules.len(),
                sinks = rules.sinks.len(),
                key = %caller.name,
                "alert rules replaced"
            );
            Ok(Json(rules.public().into()))
        }
        Err(ReloadError::NoFile) => Err(ApiError::Conflict(ReloadError::NoFile.to_string())),
        Err(ReloadError::Invalid(e)) => Err(ApiError::BadRequest(e.to_string())),
        Err(e @ ReloadError::Read { .. }) => {
            tracing::error!(error = %e, "the rules file could not be written");
            Err(ApiError::Conflict(
                "the rules file could not be written".into(),
            ))
        }
    }
}

/// One delivery: an alert owed to a sink, and how sending it went.
#[derive(Serialize, ToSchema)]
pub struct DeliveryBody {
    /// Sent as `webhook-id` on every attempt.
    #[schema(value_type = String, format = "uuid")]
    pub id: Uuid,
    #[schema(value_type = String, format = "uuid")]
    pub alert_id: Uuid,
    pub sink: String,
    /// `id@version` of the rule that made the alert.
    pub rule: String,
    /// `pending`, `delivered` or `failed`.
    pub status: &'static str,
    pub attempts: u32,
    pub created_at: EventTime,
    pub updated_at: EventTime,
    pub next_attempt_at: Option<EventTime>,
    /// The HTTP status of the last answer, if there was one.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// The alert as sent (`data` of a `standard` request).
    #[schema(value_type = Object)]
    pub alert: serde_json::Value,
}

impl From<Delivery> for DeliveryBody {
    fn from(d: Delivery) -> Self {
        DeliveryBody {
            id: d.id,
            alert_id: d.alert_id,
            sink: d.sink,
            rule: d.rule.to_string(),
            status: d.status.as_str(),
            attempts: d.attempts,
            created_at: d.created_at,
            updated_at: d.updated_at,
            next_attempt_at: d.next_attempt_at,
            last_status: d.last_status,
            last_error: d.last_error,
            alert: d.alert,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveriesBody {
    pub count: usize,
    pub deliveries: Vec<DeliveryBody>,
    pub next_cursor: Option<String>,
}

/// `status` and `sink` of the deliveries listing.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(
    dead_code,
    reason = "describes the parameters; the handler parses them"
)]
pub struct DeliveryParams {
    /// Only deliveries in this state.
    #[param(inline, value_type = Option<String>, pattern = "^(pending|delivered|failed)$")]
    status: Option<String>,
    /// Only deliveries to this sink.
    #[param(max_length = 64)]
    sink: Option<String>,
}

/// `GET /api/v1/deliveries?status=&sink=&limit=100&cursor=`: what was sent, what waits, and
/// why.
#[utoipa::path(get, path = "/api/v1/deliveries", tag = "alerting",
    params(DeliveryParams, Paging),
    responses(
        (status = 200, description = "Newest first", body = DeliveriesBody),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 503, description = "The store could not answer, or keeps no outbox", body = ErrorBody),
    ))]
pub async fn deliveries(
    State(state): State<AppState>,
    params: Params,
) -> Result<Response, ApiError> {
    let page = params.page::<DeliveryKey>(100)?;
    let filter = DeliveryFilter {
        status: params
            .get("status")
            .map(str::parse::<DeliveryStatus>)
            .transpose()
            .map_err(|e| ApiError::BadRequest(e.to_string()))?,
        sink: params.get("sink").map(str::to_owned),
    };
    let outbox = state.outbox.as_ref().ok_or(ApiError::NoOutbox)?;
    let found = outbox.deliveries(&filter, one_more(&page)).await?;
    let (found, next_cursor) = cut(found, page.limit, |d| DeliveryKey {
        created_at: d.created_at,
        id: d.id,
    });
    let body = DeliveriesBody {
        count: found.len(),
        deliveries: found.into_iter().map(DeliveryBody::from).collect(),
        next_cursor,
    };
    Ok(Json(body).into_response())
}

/// What a retry did.
#[derive(Serialize, ToSchema)]
pub struct RetryBody {
    #[schema(value_type = String, format = "uuid")]
    pub id: Uuid,
    /// Its status before: `pending` (left as it was), `delivered` or `failed`.
    pub was: &'static str,
    /// `pending`: due at once.
    pub status: &'static str,
}

/// `POST /api/v1/deliveries/{id}/retry`: sends a delivery again, from its first attempt.
#[utoipa::path(post, path = "/api/v1/deliveries/{id}/retry", tag = "alerting",
    params(("id" = String, Path, description = "The delivery's id")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "Pending again, due at once", body = RetryBody),
        (status = 400, description = "Not a delivery id", body = ErrorBody),
        (status = 401, description = "No key, or a wrong one", body = ErrorBody),
        (status = 403, description = "The key has no `admin` scope", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 503, description = "The store could not answer, or keeps no outbox", body = ErrorBody),
    ))]
pub async fn retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RetryBody>, ApiError> {
    let caller = state.auth.check(&headers, Scope::Admin)?;
    let id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::BadRequest(format!("`{id}` is not a delivery id")))?;
    let outbox = state.outbox.as_ref().ok_or(ApiError::NoOutbox)?;
    match outbox.redeliver(id, EventTime::now()).await? {
        None => Err(ApiError::NotFound(format!("delivery {id}"))),
        Some(was) => {
            tracing::info!(delivery = %id, was = was.as_str(), key = %caller.name, "delivery sent again by hand");
            Ok(Json(RetryBody {
                id,
                was: was.as_str(),
                status: DeliveryStatus::Pending.as_str(),
            }))
        }
    }
}
