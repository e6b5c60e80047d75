//! The seven endpoints of the original API, plus late events, dead letters and the resolutions
//! kept. Each one's
//! `#[utoipa::path]` is its entry in the OpenAPI document: parameters with their bounds (as
//! [`Params`] checks them), the body type it answers and its errors.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::AppState;
use super::answers::AnswerKey;
use super::body::*;
use super::error::ApiError;
use super::params::{Paging, Params, Range, city, cut, one_more};
use crate::model::{EventTime, EventType, Severity, Span};
use crate::store::{DeadLetterKey, EventKey, Page, WindowPos, WindowQuery};

/// How long `/api/v1/health` waits for the store before it says `DOWN`.
const HEALTH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);
/// Most partitions `/api/v1/health` lists (the most recently updated).
const HEALTH_PARTITIONS: usize = 256;

fn path_city(path: Result<Path<String>, PathRejection>) -> Result<crate::model::City, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    city(&raw)
}

/// `GET /api/v1/health`: `UP`; `DEGRADED` (200) while the store's calls fail in this
/// process but it still answers; `DOWN` (503) when it does not answer within two seconds.
#[utoipa::path(get, path = "/api/v1/health", tag = "operations",
    responses(
        (status = 200, description = "The store answers (`UP` or `DEGRADED`)", body = HealthBody),
        (status = 503, description = "The store did not answer within 2 s (`DOWN`)", body = HealthBody),
    ))]
pub async fn health(State(state): State<AppState>) -> Response {
    let body = check_health(&state).await;
    let reachable = body.store.status == Reachable::Up;
    let code = if reachable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// What `/health` says: whether the store answers within [`HEALTH_DEADLINE`], and its
/// partitions.
pub(super) async fn check_health(state: &AppState) -> HealthBody {
    let checked = tokio::time::timeout(HEALTH_DEADLINE, async {
        state.store.ping().await?;
        state.store.pipeline_status(HEALTH_PARTITIONS).await
    })
    .await;
    match checked {
        Ok(Ok(partitions)) => health_body(state, true, &partitions),
        Ok(Err(_)) | Err(_) => health_body(state, false, &[]),
    }
}

fn health_body(
    state: &AppState,
    reachable: bool,
    partitions: &[crate::store::PartitionStatus],
) -> HealthBody {
    let seen = state.health.snapshot();
    let status = match (reachable, seen.failing_since()) {
        (false, _) => HealthStatus::Down,
        (true, Some(_)) => HealthStatus::Degraded,
        (true, None) => HealthStatus::Up,
    };
    HealthBody {
        status,
        timestamp: EventTime::now(),
        service: "CityStream API",
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        store: StoreHealthBody {
            backend: state.store.backend(),
            status: if reachable {
                Reachable::Up
            } else {
                Reachable::Down
            },
            failing_since: seen.failing_since(),
            rejected_events: seen.rejected_events,
        },
        pipeline: PipelineBody {
            partitions: partitions
                .iter()
                .map(|p| PartitionBody {
                    source: p.checkpoint.source.clone(),
                    partition: p.checkpoint.partition,
                    next_offset: p.checkpoint.next_offset,
                    watermark: p
                        .checkpoint
                        .max_event_time
                        .map(|t| t.saturating_sub(state.watermark_delay)),
                    updated_at: p.updated_at,
                })
                .collect(),
            last_checkpoint_at: partitions.iter().map(|p| p.updated_at).max(),
        },
    }
}

/// `GET /api/v1/events/{city}?from=&to=&limit=20&cursor=`: a city's live raw events, newest
/// first.
#[utoipa::path(get, path = "/api/v1/events/{city}", tag = "results",
    params(
        ("city" = String, Path, min_length = 1, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", example = "Chicago", description = "A city name: at most 64 bytes of UTF-8, no control characters"),
        Range,
        Paging,
    ),
    responses(
        (status = 200, description = "Newest event time first, ties by event id descending", body = EventsBody),
        Failures,
    ))]
pub async fn events(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Params,
) -> Result<Response, ApiError> {
    let city = path_city(path)?;
    let range = params.range()?;
    let page = params.page::<EventKey>(20)?;
    let now = EventTime::now();
    let found = state
        .store
        .recent_events(city.as_str(), range, one_more(&page), now)
        .await?;
    let (events, next_cursor) = cut(found, page.limit, |e| EventKey::of(&e.event));
    let body = EventsBody {
        city: &city,
        count: events.len(),
        range: RangeBody::of(range, now.saturating_sub(state.raw_ttl)),
        events: &events,
        next_cursor,
    };
    Ok(Json(body).into_response())
}

/// `GET /api/v1/summary/{city}`: counts of a city's live raw events.
#[utoipa::path(get, path = "/api/v1/summary/{city}", tag = "results",
    params(("city" = String, Path, min_length = 1, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", example = "Chicago", description = "A city name: at most 64 bytes of UTF-8, no control characters")),
    responses(
        (status = 200, description = "The city's counts (zeros for a city never seen)", body = SummaryBody),
        Failures,
    ))]
pub async fn summary(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<SummaryBody>, ApiError> {
    let city = path_city(path)?;
    let now = EventTime::now();
    let s = state.store.city_summary(city.as_str(), now).await?;
    // Every type taken, and any other the city's stored events have.
    let event_type_breakdown: BTreeMap<&str, u64> = EventType::all()
        .into_iter()
        .map(|t| (t.as_str(), 0))
        .chain(s.by_type.iter().map(|(t, n)| (t.as_str(), *n)))
        .collect();
    Ok(Json(SummaryBody {
        city,
        total_events: s.total_events,
        event_type_breakdown,
        severity_breakdown: s.by_severity,
        late_events: s.late_events,
        generated_at: now,
    }))
}

/// `GET /api/v1/alerts?city=&hours=24&from=&to=&limit=100&cursor=`: live high and critical
/// events, of the last `hours` or from `from`.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "results",
    params(
        ("city" = Option<String>, Query, min_length = 1, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", example = "Chicago", description = "One city's alerts (default: every city's)"),
        ("hours" = Option<u32>, Query, minimum = 1, maximum = 720, description = "Alerts of the last this many hours (default 24, unless `from` is given; not with `from`)"),
        Range,
        Paging,
    ),
    responses(
        (status = 200, description = "Newest event time first, ties by event id descending", body = AlertsBody),
        Failures,
    ))]
pub async fn alerts(State(state): State<AppState>, params: Params) -> Result<Response, ApiError> {
    let city = params.city("city")?;
    let mut range = params.range()?;
    let now = EventTime::now();
    let hours = match (range.from, params.has("hours")) {
        (Some(_), true) => {
            return Err(ApiError::BadRequest("give hours or from, not both".into()));
        }
        (Some(_), false) => None,
        (None, _) => {
            let hours = params.int("hours", 24, 1..=720)?;
            range.from = Some(now.saturating_sub(Span::from_hours(i64::from(hours))));
            Some(hours)
        }
    };
    let page = params.page::<EventKey>(100)?;
    let found = state
        .store
        .alerts(
            city.as_ref().map(|c| c.as_str()),
            range,
            one_more(&page),
            now,
        )
        .await?;
    let (alerts, next_cursor) = cut(found, page.limit, |a| EventKey::of(&a.event));
    let body = AlertsBody {
        count: alerts.len(),
        time_range_hours: hours,
        range: RangeBody::of(range, now.saturating_sub(state.raw_ttl)),
        city: city.as_ref(),
        alerts: alerts.iter().map(StoredAlertBody::from).collect(),
        next_cursor,
    };
    Ok(Json(body).into_response())
}

/// `GET /api/v1/cities?limit=100&cursor=`: cities with live raw events.
#[utoipa::path(get, path = "/api/v1/cities", tag = "results",
    params(
        Paging,
    ),
    responses(
        (status = 200, description = "By city name", body = CitiesBody),
        Failures,
    ))]
pub async fn cities(State(state): State<AppState>, params: Params) -> Result<Response, ApiError> {
    let page = params.page::<String>(100)?;
    let found = state
        .store
        .cities(one_more(&page), EventTime::now())
        .await?;
    let (cities, next_cursor) = cut(found, page.limit, |c| c.city.clone());
    let body = CitiesBody {
        count: cities.len(),
        cities: &cities,
        next_cursor,
    };
    Ok(Json(body).into_response())
}

/// `GET /api/v1/aggregations?city=&event_type=&resolution=&from=&to=&limit=10&cursor=`
/// (`eventType` accepted too): a city's live windows of one resolution (the base window by
/// default), newest first. An answer asked for again while the city's windows are unchanged is
/// served as it was made (`answers.rs`); gzipped to a client that accepts gzip.
#[utoipa::path(get, path = "/api/v1/aggregations", tag = "results",
    params(
        ("city" = String, Query, min_length = 1, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", example = "Chicago", description = "The city (required)"),
        ("event_type" = Option<EventType>, Query, description = "One event type's windows (default: all); `eventType` is accepted too"),
        ("resolution" = Option<String>, Query, example = "1h", description = "Which windows: the base window (`--window`, `5m` by default, the default here) or a rollup (`1h`, `1d`); `/api/v1/resolutions` lists them"),
        ("fields" = Option<String>, Query, example = "window_start,event_count,severity_counts", description = "The fields of each window to show, comma-separated, in any order; they come in the order of `Window` (default: all). An unknown name is a 400"),
        Range,
        Paging,
    ),
    responses(
        (status = 200, description = "Windows whose start is in the range, newest first; without `event_type`, ties by type descending. Gzipped (`Content-Encoding: gzip`) when the request accepts gzip and the answer is 1 KiB or more", body = AggregationsBody),
        Failures,
    ))]
pub async fn aggregations(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    let city = params.required_city("city")?;
    let query = WindowQuery {
        city: city.as_str().to_owned(),
        event_type: params.event_type(&["event_type", "eventType"])?,
        resolution: params.resolution(&state.resolutions)?,
        range: params.range()?,
    };
    let page = params.page::<WindowPos>(10)?;
    let fields = params.window_fields()?;
    let now = EventTime::now();
    let key = AnswerKey::new(&query, &page, fields, query.resolution.kept_from(now));
    let version = match state.answers.keeps() {
        true => state.store.windows_version(&query.city).await?,
        false => None,
    };
    if let Some(kept) = version.and_then(|v| state.answers.get(&key, v, &headers)) {
        return Ok(kept);
    }
    let json = windows_json(&state, &query, page, fields, now).await?;
    Ok(state.answers.made(key, version, json, &headers))
}

/// A page of windows as `/api/v1/aggregations` answers it, each window rendered once.
async fn windows_json(
    state: &AppState,
    query: &WindowQuery,
    page: Page<WindowPos>,
    fields: WindowFields,
    now: EventTime,
) -> Result<Bytes, ApiError> {
    let found = state.store.windows(query, one_more(&page), now).await?;
    let (windows, next_cursor) = cut(found, page.limit, |w| WindowPos {
        start: w.window_start,
        event_type: w.event_type,
    });
    let resolution = query.resolution;
    let rollup = !state.resolutions.is_base(resolution);
    let rendered = state
        .windows
        .render_all(&windows, resolution, rollup, fields)
        .map_err(|e| ApiError::Internal(format!("a window as JSON: {e}")))?;
    let body = AggregationsBody {
        city: &query.city,
        event_type: query.event_type,
        resolution: resolution.name(),
        range: RangeBody::of(query.range, resolution.kept_from(now)),
        count: windows.len(),
        aggregations: rendered.iter().map(|json| &**json).collect(),
        next_cursor,
    };
    let bytes: usize = rendered.iter().map(|json| json.get().len() + 1).sum();
    let mut out = Vec::with_capacity(bytes + 512);
    serde_json::to_writer(&mut out, &body)
        .map_err(|e| ApiError::Internal(format!("a body as JSON: {e}")))?;
    Ok(out.into())
}

/// The event types records may have.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct EventTypesBody {
    /// In the configured order (`--event-types`).
    #[schema(value_type = Vec<String>)]
    pub event_types: &'static [&'static str],
}

/// `GET /api/v1/event-types`: the event types records may have (`--event-types`).
#[utoipa::path(get, path = "/api/v1/event-types", tag = "results",
    responses(
        (status = 200, description = "The types taken, in the configured order", body = EventTypesBody),
    ))]
pub async fn event_types() -> Json<EventTypesBody> {
    Json(EventTypesBody {
        event_types: EventType::names(),
    })
}

/// `GET /api/v1/resolutions`: the windows kept, finest first.
#[utoipa::path(get, path = "/api/v1/resolutions", tag = "results",
    responses(
        (status = 200, description = "The base window (`--window`) first, then its rollups", body = ResolutionsBody),
    ))]
pub async fn resolutions(State(state): State<AppState>) -> Json<ResolutionsBody> {
    let now = EventTime::now();
    Json(ResolutionsBody {
        resolutions: state
            .resolutions
            .iter()
            .map(|r| ResolutionBody {
                name: r.name(),
                span_seconds: r.span.as_millis() / 1000,
                retention_seconds: r.retention.as_millis() / 1000,
                kept_from: r.kept_from(now),
            })
            .collect(),
    })
}

/// `GET /api/v1/stats`: totals over the whole store.
#[utoipa::path(get, path = "/api/v1/stats", tag = "results",
    responses(
        (status = 200, description = "Totals of live rows", body = StatsBody),
        Unavailable,
    ))]
pub async fn stats(State(state): State<AppState>) -> Result<Json<StatsBody>, ApiError> {
    Ok(Json(stats_body(&state, EventTime::now()).await?))
}

/// What `/stats` says at `now`.
pub(super) async fn stats_body(state: &AppState, now: EventTime) -> Result<StatsBody, ApiError> {
    let s = state.store.stats(now).await?;
    Ok(StatsBody {
        total_events_processed: s.total_events,
        high_severity_alerts: s.alerts.get(Severity::High),
        critical_alerts: s.alerts.get(Severity::Critical),
        late_events: s.late_events,
        late_events_by_city_type: s.late_by_city_type,
        dead_letters: s.dead_letters,
        dead_letters_by_kind: s.dead_letters_by_kind,
        generated_at: now,
    })
}

/// `GET /api/v1/late-events?city=&from=&to=&limit=100&cursor=`: events that came behind the
/// watermark.
#[utoipa::path(get, path = "/api/v1/late-events", tag = "results",
    params(
        ("city" = Option<String>, Query, min_length = 1, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", example = "Chicago", description = "One city's late events (default: every city's)"),
        Range,
        Paging,
    ),
    responses(
        (status = 200, description = "Newest event time first, ties by event id descending", body = LateEventsBody),
        Failures,
    ))]
pub async fn late_events(
    State(state): State<AppState>,
    params: Params,
) -> Result<Response, ApiError> {
    let city = params.city("city")?;
    let range = params.range()?;
    let page = params.page::<EventKey>(100)?;
    let now = EventTime::now();
    let found = state
        .store
        .late_events(
            city.as_ref().map(|c| c.as_str()),
            range,
            one_more(&page),
            now,
        )
        .await?;
    let (late, next_cursor) = cut(found, page.limit, |l| EventKey::of(&l.event));
    let window = state.resolutions.base().span;
    let body = LateEventsBody {
        count: late.len(),
        range: RangeBody::of(range, now.saturating_sub(state.late_retention)),
        late_events: late.iter().map(|l| LateEventBody::new(l, window)).collect(),
        next_cursor,
    };
    Ok(Json(body).into_response())
}

/// `GET /api/v1/dead-letters?limit=100&cursor=`: records that could not be processed.
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "results",
    params(
        Paging,
    ),
    responses(
        (status = 200, description = "Most recently received first, ties by source, partition and offset descending", body = DeadLettersBody),
        Failures,
    ))]
pub async fn dead_letters(
    State(state): State<AppState>,
    params: Params,
) -> Result<Response, ApiError> {
    let page = params.page::<DeadLetterKey>(100)?;
    let found = state
        .store
        .dead_letters(one_more(&page), EventTime::now())
        .await?;
    let (dead, next_cursor) = cut(found, page.limit, DeadLetterKey::of);
    let body = DeadLettersBody {
        count: dead.len(),
        dead_letters: dead.iter().map(DeadLetterBody::from).collect(),
        next_cursor,
    };
    Ok(Json(body).into_response())
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "This process's counters, gauges and histograms",
            content_type = "text/plain", body = String),
        (status = 404, description = "No metrics recorder in this process", body = ErrorBody),
    ))]
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

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
