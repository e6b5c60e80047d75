//! Delivery latency: a webhook receiver that records, for every alert delivered to it, the time
//! from the event's timestamp to the request's arrival, and prints the percentiles.
//!
//!     delivery_latency LISTEN SECONDS [WARMUP_SECONDS]
//!
//! Run it as the sink of `citystream up --rate R --webhook http://LISTEN/` (no --start-time, no
//! --out-of-order, no --late): the generator stamps each event with its send time, so the
//! latency covers the whole path: the queue, the processor, the store's write of the alert and
//! its delivery, the dispatcher and the request. `scripts/bench/delivery.sh` runs both.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use citystream::model::EventTime;

#[derive(Default)]
struct Seen {
    /// Milliseconds from event time to arrival, after the warm-up.
    latencies: Vec<i64>,
    ids: std::collections::HashSet<String>,
    duplicates: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen = args.get(1).map_or("127.0.0.1:9000", String::as_str);
    let seconds: u64 = args.get(2).map_or(Ok(30), |s| s.parse())?;
    let warmup: u64 = args.get(3).map_or(Ok(5), |s| s.parse())?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let started = Instant::now();
    let warm = Duration::from_secs(warmup);
    let state = (seen.clone(), started, warm);
    let app = Router::new().fallback(post(receive)).with_state(state);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!(
        "receiving on http://{}/ for {seconds} s",
        listener.local_addr()?
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut l = seen.latencies.clone();
    l.sort_unstable();
    let at = |p: f64| {
        l.get(((l.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(-1)
    };
    let measured = seconds.saturating_sub(warmup).max(1);
    println!(
        "deliveries={} per_s={:.0} duplicates={} latency_ms p50={} p90={} p99={} p999={} max={}",
        l.len(),
        l.len() as f64 / measured as f64,
        seen.duplicates,
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        l.last().copied().unwrap_or(-1)
    );
    Ok(())
}

type Shared = (Arc<Mutex<Seen>>, Instant, Duration);

async fn receive(
    State((seen, started, warm)): State<Shared>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now = EventTime::now().as_millis();
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let at = value["data"]["event"]["timestamp"]
        .as_str()
        .and_then(|t| EventTime::parse_rfc3339(t).ok());
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if let (Some(at), Ok(mut seen)) = (at, seen.lock()) {
        if !seen.ids.insert(id) {
            seen.duplicates += 1;
        } else if started.elapsed() >= warm {
            seen.latencies.push(now - at.as_millis());
        }
    }
    StatusCode::NO_CONTENT
}
