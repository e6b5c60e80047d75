//! The purge loop: every `every`, delete what expired (see rule 4 in [`super::rules`]), log
//! what went and count it in `citystream_purged_total{table}`. Reads never serve an expired
//! row, so the loop only reclaims space; a failed purge is logged and tried again next time.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Maintenance, Purged};
use crate::model::EventTime;

/// Purges until `stop` fires.
pub async fn purge_loop(store: Arc<dyn Maintenance>, every: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match store.purge_expired(EventTime::now()).await {
            Ok(purged) => report(purged),
            Err(error) => tracing::warn!(error = %error.report(), "purging expired rows failed"),
        }
    }
}

fn report(purged: Purged) {
    if purged.total() == 0 {
        return;
    }
    tracing::info!(
        raw = purged.raw,
        alerts = purged.alerts,
        windows = purged.windows,
        late = purged.late,
        dead_letters = purged.dead_letters,
        deliveries = purged.deliveries,
        "expired rows purged"
    );
    for (table, n) in [
        ("raw_events", purged.raw),
        ("alerts", purged.alerts),
        ("windows", purged.windows),
        ("late_events", purged.late),
        ("dead_letters", purged.dead_letters),
        ("deliveries", purged.deliveries),
    ] {
        metrics::counter!("citystream_purged_total", "table" => table).increment(n);
    }
}
