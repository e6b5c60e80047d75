//! The seven endpoints of the original API, plus late events and dead letters.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::params::{Params, city, cut, one_more};
use crate::model::{
    City, CityEvent, EventTime, EventType, Severity, SeverityCounts, Span, WindowAggregate,
};
use crate::store::{DeadLetterKey, EventKey, StoredEvent, WindowPos};

/// How long `/api/v1/health` waits for the store before it says `DOWN`.
const HEALTH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);
/// Most partitions `/api/v1/health` lists (the most recently updated).
const HEALTH_PARTITIONS: usize = 256;

type ApiResult = Result<Json<Value>, ApiError>;

fn path_city(path: Result<Path<String>, PathRejection>) -> Result<crate::model::City, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    city(&raw)
}

fn alert_json(e: &CityEvent) -> Value {
    json!({
        "city": e.city,
        "timestamp": e.timestamp,
        "event_id": e.event_id,
        "event_type": e.event_type,
        "severity": e.severity,
        "description": e.description,
    })
}

/// One window as the API shows it. Serialized straight from the stored value: a window holds up
/// to `--severities-cap` severities, and going through a `serde_json::Value` would allocate a
/// string for each.
#[derive(Serialize)]
struct WindowBody<'a> {
    partition_key: String,
    city: &'a City,
    event_type: EventType,
    window_start: EventTime,
    window_end: EventTime,
    event_count: u64,
    severities: &'a [Severity],
    severities_capped: bool,
    severity_counts: SeverityCounts,
}

impl<'a> From<&'a WindowAggregate> for WindowBody<'a> {
    fn from(w: &'a WindowAggregate) -> Self {
        WindowBody {
            partition_key: w.partition_key(),
            city: &w.city,
            event_type: w.event_type,
            window_start: w.window_start,
            window_end: w.window_end,
            event_count: w.event_count,
            severities: &w.severities,
            severities_capped: w.event_count > w.severities.len() as u64,
            severity_counts: w.severity_counts,
        }
    }
}

#[derive(Serialize)]
struct AggregationsBody<'a> {
    city: &'a City,
    event_type: Option<EventType>,
    count: usize,
    aggregations: Vec<WindowBody<'a>>,
    next_cursor: Option<String>,
}

/// `GET /api/v1/health`: `UP`; `DEGRADED` (200) while the store's calls fail in this
/// process but it still answers; `DOWN` (503) when it does not answer within two seconds.
pub async fn health(State(state): State<AppState>) -> Response {
    let now = EventTime::now();
    let checked = tokio::time::timeout(HEALTH_DEADLINE, async {
        state.store.ping().await?;
        state.store.pipeline_status(HEALTH_PARTITIONS).await
    })
    .await;
    let (reachable, partitions) = match checked {
        Ok(Ok(partitions)) => (true, partitions),
        Ok(Err(_)) | Err(_) => (false, Vec::new()),
    };
    let seen = state.health.snapshot();
    let status = match (reachable, seen.failing_since()) {
        (false, _) => "DOWN",
        (true, Some(_)) => "DEGRADED",
        (true, None) => "UP",
    };
    let body = json!({
        "status": status,
        "timestamp": now,
        "service": "CityStream API",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "store": {
            "backend": state.store.backend(),
            "status": if reachable { "UP" } else { "DOWN" },
            "failing_since": seen.failing_since(),
            "rejected_events": seen.rejected_events,
        },
        "pipeline": {
            "partitions": partitions.iter().map(|p| json!({
                "source": p.checkpoint.source,
                "partition": p.checkpoint.partition,
                "next_offset": p.checkpoint.next_offset,
                "watermark": p.checkpoint.max_event_time
                    .map(|t| t.saturating_sub(state.watermark_delay)),
                "updated_at": p.updated_at,
            })).collect::<Vec<_>>(),
            "last_checkpoint_at": partitions.iter().map(|p| p.updated_at).max(),
        },
    });
    let code = if reachable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `GET /api/v1/events/{city}?limit=20&cursor=`
pub async fn events(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Params,
) -> Result<Response, ApiError> {
    let city = path_city(path)?;
    let page = params.page::<EventKey>(20)?;
    let found = state
        .store
        .recent_events(city.as_str(), one_more(&page), EventTime::now())
        .await?;
    let (events, next_cursor) = cut(found, page.limit, |e| EventKey::of(&e.event));
    #[derive(Serialize)]
    struct Body<'a> {
        city: &'a City,
        count: usize,
        events: &'a [StoredEvent],
        next_cursor: Option<String>,
    }
    let body = Body {
        city: &city,
        count: events.len(),
        events: &events,
        next_cursor,
    };
    Ok(Json(body).into_response())
}

/// `GET /api/v1/summary/{city}`
pub async fn summary(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let city = path_city(path)?;
    let now = EventTime::now();
    let s = state.store.city_summary(city.as_str(), now).await?;
    let by_type: BTreeMap<&str, u64> = EventType::ALL
        .iter()
        .map(|t| (t.as_str(), s.by_type.get(t).copied().unwrap_or(0)))
        .collect();
    Ok(Json(json!({
        "city": city,
        "total_events": s.total_events,
        "event_type_breakdown": by_type,
        "severity_breakdown": s.by_severity,
        "late_events": s.late_events,
        "generated_at": now,
    })))
}

/// `GET /api/v1/alerts?city=&hours=24&limit=100&cursor=`
pub async fn alerts(State(state): State<AppState>, params: Params) -> ApiResult {
    let city = params.city("city")?;
    let hours = params.int("hours", 24, 1..=720)?;
    let page = params.page::<EventKey>(100)?;
    let now = EventTime::now();
    let since = now.saturating_sub(Span::from_mins(i64::from(hours) * 60));
    let found = state
        .store
        .alerts(
            city.as_ref().map(|c| c.as_str()),
            since,
            one_more(&page),
            now,
        )
        .await?;
    let (alerts, next_cursor) = cut(found, page.limit, EventKey::of);
    let mut body = json!({
        "count": alerts.len(),
        "time_range_hours": hours,
        "alerts": alerts.iter().map(alert_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    });
    if let Some(city) = city {
        body["city"] = json!(city);
    }
    Ok(Json(body))
}

/// `GET /api/v1/cities?limit=100&cursor=`
pub async fn cities(State(state): State<AppState>, params: Params) -> ApiResult {
    let page = params.page::<String>(100)?;
    let found = state
        .store
        .cities(one_more(&page), EventTime::now())
        .await?;
    let (cities, next_cursor) = cut(found, page.limit, |c| c.city.clone());
    Ok(Json(json!({
        "count": cities.len(),
        "cities": cities,
        "next_cursor": next_cursor,
    })))
}

/// `GET /api/v1/aggregations?city=&event_type=&limit=10&cursor=` (`eventType` accepted too)
pub async fn aggregations(
    State(state): State<AppState>,
    params: Params,
) -> Result<Response, ApiError> {
    let city = params.required_city("city")?;
    let event_type = params.event_type(&["event_type", "eventType"])?;
    let page = params.page::<WindowPos>(10)?;
    let found = state
        .store
        .aggregations(city.as_str(), event_type, one_more(&page), EventTime::now())
        .await?;
    let (windows, next_cursor) = cut(found, page.limit, |w| WindowPos {
        start: w.window_start,
        event_type: w.event_type,
    });
    let body = AggregationsBody {
        city: &city,
        event_type,
        count: windows.len(),
        aggregations: windows.iter().map(WindowBody::from).collect(),
        next_cursor,
    };
    Ok(Json(body).into_response())
}

/// `GET /api/v1/stats`
pub async fn stats(State(state): State<AppState>) -> ApiResult {
    let now = EventTime::now();
    let s = state.store.stats(now).await?;
    Ok(Json(json!({
        "total_events_processed": s.total_events,
        "high_severity_alerts": s.alerts.get(crate::model::Severity::High),
        "critical_alerts": s.alerts.get(crate::model::Severity::Critical),
        "late_events": s.late_events,
        "late_events_by_city_type": s.late_by_city_type,
        "dead_letters": s.dead_letters,
        "dead_letters_by_kind": s.dead_letters_by_kind,
        "generated_at": now,
    })))
}

/// `GET /api/v1/late-events?city=&limit=100&cursor=`
pub async fn late_events(State(state): State<AppState>, params: Params) -> ApiResult {
    let city = params.city("city")?;
    let page = params.page::<EventKey>(100)?;
    let found = state
        .store
        .late_events(
            city.as_ref().map(|c| c.as_str()),
            one_more(&page),
            EventTime::now(),
        )
        .await?;
    let (late, next_cursor) = cut(found, page.limit, |l| EventKey::of(&l.event));
    let items: Vec<Value> = late
        .iter()
        .map(|l| {
            let mut v = alert_json(&l.event);
            v["watermark"] = json!(l.watermark);
            v["window_start"] = json!(l.event.timestamp.window_start(state.window));
            v["partition"] = json!(l.partition);
            v["offset"] = json!(l.offset);
            v
        })
        .collect();
    Ok(Json(json!({
        "count": items.len(),
        "late_events": items,
        "next_cursor": next_cursor,
    })))
}

/// `GET /api/v1/dead-letters?limit=100&cursor=`
pub async fn dead_letters(State(state): State<AppState>, params: Params) -> ApiResult {
    let page = params.page::<DeadLetterKey>(100)?;
    let found = state
        .store
        .dead_letters(one_more(&page), EventTime::now())
        .await?;
    let (dead, next_cursor) = cut(found, page.limit, DeadLetterKey::of);
    let items: Vec<Value> = dead
        .iter()
        .map(|d| {
            json!({
                "source": d.source,
                "partition": d.partition,
                "offset": d.offset,
                "kind": d.kind,
                "reason": d.reason,
                "payload_prefix": String::from_utf8_lossy(d.payload_prefix()),
                "payload_len": d.payload_len,
                "received_at": d.received_at,
            })
        })
        .collect();
    Ok(Json(json!({
        "count": items.len(),
        "dead_letters": items,
        "next_cursor": next_cursor,
    })))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => handle.render().into_response(),
        None => ApiError::NotFound("/metrics (no metrics recorder in this process)".into())
            .into_response(),
    }
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

pub async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({ "error": "method_not_allowed", "message": "only GET is served", "status": 405 })),
    )
        .into_response()
}
