//! The dashboard: one page and its assets, compiled into the binary so it works offline. It
//! reads only the public API (`/api/v1/...` and the stream), like any other client.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Everything the page loads comes from this server, and no script runs inline.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'";

/// The assets under `/assets/`: path, content type, bytes. The page's script is ES modules
/// (`main.js` imports the others by relative path); every module must be listed here.
const ASSETS: [(&str, &str, &str); 18] = [
    (
        "main.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/main.js"),
    ),
    (
        "alerts.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/alerts.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/api.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/charts.js"),
    ),
    (
        "cities.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/cities.js"),
    ),
    (
        "constants.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/constants.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/dom.js"),
    ),
    (
        "format.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/format.js"),
    ),
    (
        "history.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/history.js"),
    ),
    (
        "history-view.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/history-view.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/live.js"),
    ),
    (
        "panels.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/panels.js"),
    ),
    (
        "ingest.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/ingest.js"),
    ),
    (
        "sinks.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/sinks.js"),
    ),
    (
        "windows.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/windows.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/app.css"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/vendor/uPlot.min.css"),
    ),
];

/// `GET /`
pub async fn page() -> Response {
    serve(
        "text/html; charset=utf-8",
        include_str!("dashboard/index.html"),
    )
}

/// `GET /assets/{*path}`
pub async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, body)) => serve(content_type, body),
        None => ApiError::NotFound(format!("/assets/{path}")).into_response(),
    }
}

fn serve(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, POLICY),
        ],
        body,
    )
        .into_response()
}
