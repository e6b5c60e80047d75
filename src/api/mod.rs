//! The REST API (axum): the original's seven endpoints under `/api/v1`, plus late events,
//! dead letters and `/metrics`. It reads only from the store, so it runs beside the processor
//! or as a separate `serve` process on the same data.

mod error;
mod handlers;
mod params;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::model::Span;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub metrics: Option<PrometheusHandle>,
    pub started: Instant,
    /// For reporting watermarks and window starts.
    pub watermark_delay: Span,
    pub window: Span,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>) -> Self {
        let rules = crate::processor::EngineConfig::default();
        AppState {
            store,
            metrics: None,
            started: Instant::now(),
            watermark_delay: rules.watermark_delay,
            window: rules.window,
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
        .layer(TraceLayer::new_for_http())
        .with_state(state)
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

/// Serves the API on `listener` until `shutdown` completes, then finishes open requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
