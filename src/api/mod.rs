//! The REST API (axum): the original's seven endpoints under `/api/v1`, plus late events,
//! dead letters and `/metrics`. It reads only from the store, so it runs beside the processor
//! or as a separate `serve` process on the same data. [`server`] serves it with bounds: a
//! connection limit and deadlines on every phase of a connection.

mod error;
mod handlers;
mod params;
pub mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use server::Limits;

use crate::model::Span;
use crate::store::Store;
use crate::store::timed::StoreHealth;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// How the store has been answering this process.
    pub health: Arc<StoreHealth>,
    pub metrics: Option<PrometheusHandle>,
    pub started: Instant,
    /// For reporting watermarks and window starts.
    pub watermark_delay: Span,
    pub window: Span,
    /// Longest a request may take.
    pub request_timeout: Duration,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>) -> Self {
        let rules = crate::processor::EngineConfig::default();
        AppState {
            store,
            health: Arc::default(),
            metrics: None,
            started: Instant::now(),
            watermark_delay: rules.watermark_delay,
            window: rules.window,
            request_timeout: Limits::default().request_timeout,
        }
    }
}

/// The API's routes.
pub fn app(state: AppState) -> Router {
    use handlers::*;
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/events/{city}", get(events))
        .route("/api/v1/summary/{city}", get(summary))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/cities", get(cities))
        .route("/api/v1/aggregations", get(aggregations))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/late-events", get(late_events))
        .route("/api/v1/dead-letters", get(dead_letters))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.request_timeout,
            deadline,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
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
    server::serve(listener, app(state), limits, shutdown).await
}
