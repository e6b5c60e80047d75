//! The REST API (axum): the original's seven endpoints under `/api/v1` (windows at every
//! resolution, lists over time ranges), plus late events, dead letters, the resolutions kept,
//! live updates over Server-Sent Events ([`stream`]), `/metrics`, the OpenAPI document with
//! Swagger UI ([`doc`]) and the dashboard at `/` ([`dashboard`]). It reads from the store, so
//! it runs beside the processor or as a separate `serve` process on the same data. It changes
//! things only with a key of the right scope ([`auth`]): events in, answered once durable
//! ([`ingest`], an `ingest` key), and the alert rules and deliveries ([`alerting`], an `admin`
//! key). [`server`] serves it with bounds: a connection limit and deadlines on every phase of a
//! connection.

mod alerting;
pub mod answers;
pub mod auth;
mod body;
mod dashboard;
pub mod doc;
mod error;
mod handlers;
pub mod ingest;
mod params;
pub mod rendered;
pub mod server;
pub mod stream;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

pub use auth::{AdminToken, Auth};
pub use error::ApiError;
pub use server::Limits;

use crate::delivery::Rules;
use crate::model::{Resolutions, Span};
use crate::store::timed::StoreHealth;
use crate::store::{Outbox, Reader};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Reader>,
    /// How the store has been answering this process.
    pub health: Arc<StoreHealth>,
    pub metrics: Option<PrometheusHandle>,
    pub started: Instant,
    /// For reporting watermarks.
    pub watermark_delay: Span,
    /// The resolutions kept (the base window first), and how long raw events and late events
    /// are kept: what a range can reach.
    pub resolutions: Resolutions,
    pub raw_ttl: Span,
    pub late_retention: Span,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// What the live stream's clients share.
    pub stream: Arc<stream::Hub>,
    /// The alert rules in force.
    pub alerting: Arc<Rules>,
    /// The deliveries, where the store keeps them.
    pub outbox: Option<Arc<dyn Outbox>>,
    /// Who may do what: the API keys in force, and the admin token.
    pub auth: Arc<Auth>,
    /// Where `POST /api/v1/events` appends, in a process that takes events.
    pub ingest: Option<Arc<ingest::Ingest>>,
    /// Windows as JSON, kept while their counts hold (`--window-cache-mib`).
    pub windows: Arc<rendered::RenderedWindows>,
    /// Whole answers of `/aggregations`, kept while the city's windows hold
    /// (`--answer-cache-mib`).
    pub answers: Arc<answers::Answers>,
}

impl AppState {
    pub fn new(store: Arc<dyn Reader>) -> Self {
        let rules = crate::processor::EngineConfig::default();
        AppState {
            store,
            health: Arc::default(),
            metrics: None,
            started: Instant::now(),
            watermark_delay: rules.watermark_delay,
            resolutions: rules.rules.resolutions,
            raw_ttl: rules.raw_ttl,
            late_retention: rules.rules.late_retention,
            request_timeout: Limits::default().request_timeout,
            stream: Arc::default(),
            alerting: Arc::new(Rules::fixed(crate::model::Alerting::default())),
            outbox: None,
            auth: Arc::new(Auth::new(None, false)),
            ingest: None,
            windows: Arc::default(),
            answers: Arc::default(),
        }
    }
}

/// The documented routes, as the OpenAPI document lists them.
pub const ROUTES: [&str; 17] = [
    "/api/v1/health",
    "/api/v1/events",
    "/api/v1/ingest",
    "/api/v1/events/{city}",
    "/api/v1/summary/{city}",
    "/api/v1/alerts",
    "/api/v1/cities",
    "/api/v1/aggregations",
    "/api/v1/resolutions",
    "/api/v1/event-types",
    "/api/v1/stats",
    "/api/v1/late-events",
    "/api/v1/dead-letters",
    "/api/v1/stream",
    "/api/v1/rules",
    "/api/v1/deliveries",
    "/api/v1/deliveries/{id}/retry",
];

/// The API's routes.
pub fn app(state: AppState) -> Router {
    use handlers::*;
    let [
        health_,
        ingest_,
        ingest_counts_,
        events_,
        summary_,
        alerts_,
        cities_,
        aggregations_,
        resolutions_,
        event_types_,
        stats_,
        late_,
        dead_,
        stream_,
        rules_,
        deliveries_,
        retry_,
    ] = ROUTES;
    Router::new()
        .route(health_, get(health))
        .route(events_, get(events))
        .route(ingest_, post(ingest::ingest))
        .route(ingest_counts_, get(ingest::counts))
        .route(summary_, get(summary))
        .route(alerts_, get(alerts))
        .route(cities_, get(cities))
        .route(aggregations_, get(aggregations))
        .route(resolutions_, get(resolutions))
        .route(event_types_, get(event_types))
        .route(stats_, get(stats))
        .route(late_, get(late_events))
        .route(dead_, get(dead_letters))
        .route(stream_, get(stream::stream))
        .route(rules_, get(alerting::rules).put(alerting::put_rules))
        .route(deliveries_, get(alerting::deliveries))
        .route(retry_, post(alerting::retry))
        .route("/metrics", get(metrics))
        .route("/", get(dashboard::page))
        .route("/assets/{*path}", get(dashboard::asset))
        .merge(SwaggerUi::new("/docs").url("/api/v1/openapi.json", doc::document()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            reads_need_a_key,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.request_timeout,
            deadline,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// With `--require-auth`, a read of results (`GET` or `HEAD` of `/api/v1/…` but health and the
/// OpenAPI document, and `/metrics`) needs a `read` key. Writes check their own scope.
async fn reads_need_a_key(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let open = matches!(path, "/api/v1/health" | "/api/v1/openapi.json")
        || !(path.starts_with("/api/v1/") || path == "/metrics");
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    if !auth.reads_need_a_key() || open || !read {
        return next.run(request).await;
    }
    match auth.check(request.headers(), crate::model::keys::Scope::Read) {
        Ok(_) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Answers 503 for a request that is not answered within `limit`.
async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}

/// `/health` and `/metrics` alone, for the roles that do not serve the REST API.
pub fn ops_app(service: &'static str, metrics: Option<PrometheusHandle>) -> Router {
    let started = Instant::now();
    Router::new()
        .route(
            "/health",
            get(move || async move {
                axum::Json(serde_json::json!({
                    "status": "UP",
                    "service": service,
                    "timestamp": crate::model::EventTime::now(),
                    "uptime_seconds": started.elapsed().as_secs(),
                }))
            }),
        )
        .route(
            "/metrics",
            get(move || async move { metrics.as_ref().map(|m| m.render()).unwrap_or_default() }),
        )
        .fallback(handlers::not_found)
}

/// Serves the API on `listener` within `limits` until `shutdown` completes, then finishes
/// open requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let streams = state.stream.clone();
    let shutdown = async move {
        shutdown.await;
        streams.close();
    };
    server::serve(listener, app(state), limits, shutdown).await
}
