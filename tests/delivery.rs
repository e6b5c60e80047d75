//! Alerts delivered: the real binary sends its alerts to real receivers on 127.0.0.1, which
//! fail, throttle and disappear on cue; the outbox's contract on the store itself.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use citystream::model::{
    Accepted, Alerting, BatchRules, City, CityEvent, EventTime, EventType, Placement, Severity,
    Span, WriteBatch,
};
use citystream::store::outbox::{Attempted, DeliveryFilter, DeliveryStatus, Outbox, Outcome};
use citystream::store::sqlite::SqliteStore;
use citystream::store::{Maintenance, Page, Sink};
use serde_json::Value;

use crate::support::binary::{Running, wait_logged};
use crate::support::receiver::{Receiver, Reply, by_id, verifies};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "admin-token-for-tests";

/// Every alert of the run, each once.
async fn all_alerts(up: &Running) -> Vec<Value> {
    up.all("/api/v1/alerts?hours=720&limit=1000", "alerts")
        .await
}

/// The deliveries the store says were delivered, once there are `n` of them: the receiver
/// counts a request before the dispatcher has recorded its answer.
async fn delivered(up: &Running, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = up
            .all(
                "/api/v1/deliveries?status=delivered&limit=1000",
                "deliveries",
            )
            .await;
        if got.len() >= n || std::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every alert reaches the sink through a 500 and a 429 with `Retry-After`: three attempts,
/// one `webhook-id`, each signed; the deliveries API and the metrics agree with the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_arrives_signed_through_errors_with_one_id() {
    let receiver = Receiver::start(|_, attempt| match attempt {
        0 => Reply::Status(500),
        1 => Reply::TooMany(1),
        _ => Reply::Ok,
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let url = receiver.url();
    let up = Running::start(&[
        "up",
        "--data-dir",
        data,
        "--burst",
        "--rate",
        "500",
        "--count",
        "1000",
        "--seed",
        "7",
        "--webhook",
        &url,
        "--webhook-secret",
        SECRET,
    ]);
    wait_logged(&up, "stream finished and fully processed").await;
    let alerts = all_alerts(&up).await;
    assert!(alerts.len() > 50, "{} alerts", alerts.len());
    let got = receiver
        .wait_until(Duration::from_secs(60), |got| {
            got.iter().filter(|g| g.answered == 204).count() >= alerts.len()
        })
        .await;

    let attempts = by_id(&got);
    assert_eq!(attempts.len(), alerts.len(), "one delivery id per alert");
    for (id, tries) in &attempts {
        let answers: Vec<u16> = tries.iter().map(|g| g.answered).collect();
        assert_eq!(answers, [500, 429, 204], "{id}");
        let waited = tries[2].at - tries[1].at;
        assert!(
            waited >= Duration::from_millis(950),
            "Retry-After: 1 honoured, {waited:?}"
        );
        assert!(tries.iter().all(|g| verifies(g, SECRET)), "{id} is signed");
        let bodies: BTreeSet<&[u8]> = tries.iter().map(|g| g.body.as_slice()).collect();
        assert_eq!(
            bodies.len(),
            1,
            "every attempt of {id} carries the same body"
        );
    }
    let sent: BTreeSet<String> = got
        .iter()
        .map(|g| {
            g.json()["data"]["event"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let stored: BTreeSet<String> = alerts
        .iter()
        .map(|a| a["event_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(sent, stored, "the receiver got exactly the stored alerts");
    assert!(
        alerts
            .iter()
            .all(|a| a["rules"] == serde_json::json!(["severity-high@1"]))
    );
    assert_eq!(got[0].json()["type"], "alert.fired");

    let delivered = delivered(&up, alerts.len()).await;
    assert_eq!(delivered.len(), alerts.len());
    assert!(
        delivered
            .iter()
            .all(|d| d["attempts"] == 3 && d["last_status"] == 204)
    );
    let ids: BTreeSet<String> = delivered
        .iter()
        .map(|d| d["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, attempts.keys().cloned().collect());
    let pending = up.get("/api/v1/deliveries?status=pending").await;
    assert_eq!(pending["count"], 0);

    let metrics = up.text("/metrics").await;
    let line = format!(
        "citystream_deliveries_total{{sink=\"webhook-1\",outcome=\"delivered\"}} {}",
        alerts.len()
    );
    assert!(metrics.contains(&line), "{line}");
    let rules = up.get("/api/v1/rules").await.to_string();
    for place in [&metrics, &rules] {
        assert!(!place.contains("MfKQ9r8"), "the secret is never shown");
    }
    assert!(!up.logged("MfKQ9r8"), "the secret is never logged");
}

/// A sink that answers 410 is disabled and its deliveries fail; one is sent again with the
/// admin token and arrives once the sink is back and the rules are reloaded (SIGHUP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_sink_fails_its_deliveries_which_are_sent_again_by_hand() {
    let receiver = Receiver::start(|_, _| Reply::Status(410)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let url = receiver.url();
    let up = Running::start_with_env(
        &[
            "up",
            "--data-dir",
            data,
            "--burst",
            "--rate",
            "500",
            "--count",
            "200",
            "--seed",
            "3",
        ],
        &[
            ("CITYSTREAM_WEBHOOK", url.as_str()),
            ("CITYSTREAM_ADMIN_TOKEN", TOKEN),
        ],
    );
    wait_logged(&up, "stream finished and fully processed").await;
    let alerts = all_alerts(&up).await.len();
    let failed = loop {
        let failed = up
            .all("/api/v1/deliveries?status=failed", "deliveries")
            .await;
        if failed.len() == alerts {
            break failed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(up.logged("410 Gone"));
    let calls = receiver.got().len();
    assert!(
        calls <= 16,
        "only the requests in flight at the 410, {calls}"
    );
    assert!(failed.iter().all(|d| d["last_status"] == 410));

    let id = failed[0]["id"].as_str().expect("an id").to_owned();
    let client = crate::support::http_client();
    let retry = format!("{}/api/v1/deliveries/{id}/retry", up.base());
    let post = |token: Option<&str>| {
        let request = client.post(&retry);
        match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
        .send()
    };
    assert_eq!(post(None).await.expect("answer").status(), 401);
    assert_eq!(post(Some("wrong")).await.expect("answer").status(), 401);
    let missing = format!(
        "{}/api/v1/deliveries/{}/retry",
        up.base(),
        uuid::Uuid::nil()
    );
    let answer = client
        .post(&missing)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 404);
    let answer = client
        .post(format!("{}/api/v1/deliveries/nope/retry", up.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 400);

    receiver.set(|_, _| Reply::Ok);
    up.signal("-HUP");
    wait_logged(&up, "alert rules reloaded").await;
    let answer = post(Some(TOKEN)).await.expect("answer");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body["was"], "failed");
    receiver
        .wait_until(Duration::from_secs(30), |got| {
            got.iter().any(|g| g.id == id && g.answered == 204)
        })
        .await;
    let delivered = delivered(&up, 1).await;
    assert_eq!(delivered.len(), 1, "only the one sent again");
    assert_eq!(delivered[0]["id"], id.as_str());

    // The rest, from the command line, on the store the running `up` writes.
    let out = std::process::Command::new(crate::support::binary::BIN)
        .args([
            "redeliver",
            "--failed",
            "--sink",
            "webhook-1",
            "--data-dir",
            data,
        ])
        .output()
        .expect("citystream redeliver");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed.trim(),
        format!("{} failed deliveries pending again", alerts - 1)
    );
    receiver
        .wait_until(Duration::from_secs(30), |got| {
            got.iter().filter(|g| g.answered == 204).count() == alerts
        })
        .await;
}

/// Rules from a file, replaced whole by `PUT /api/v1/rules`: a bad file is refused and the
/// rules in force stay; a good one applies to the events processed after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_replaced_whole_at_run_time() {
    let receiver = Receiver::start(|_, _| Reply::Ok).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let rules = dir.path().join("rules.toml");
    let sink = |rule: &str| {
        format!(
            "[[sinks]]\nname = \"desk\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nrules = [\"{rule}\"]\n",
            receiver.url()
        )
    };
    let first = format!(
        "[[rules]]\nid = \"critical\"\nseverity = \"critical\"\n{}",
        sink("critical")
    );
    std::fs::write(&rules, &first).expect("rules file");
    let up = Running::start(&[
        "up",
        "--data-dir",
        data,
        "--rate",
        "200",
        "--seed",
        "5",
        "--rules",
        rules.to_str().expect("utf-8 path"),
        "--admin-token",
        TOKEN,
    ]);
    let got = receiver
        .wait_until(Duration::from_secs(30), |got| got.len() >= 5)
        .await;
    for g in &got {
        assert_eq!(g.json()["data"]["rule"]["id"], "critical");
        assert_eq!(g.json()["data"]["event"]["severity"], "critical");
    }
    let served = up.get("/api/v1/rules").await;
    assert_eq!(served["rules"][0]["id"], "critical");
    assert_eq!(served["sinks"][0]["signed"], true);

    let client = crate::support::http_client();
    let put = |body: String| {
        client
            .put(format!("{}/api/v1/rules", up.base()))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
    };
    let bad = put("[[rules]]\nid = \"x\"\nseverity = \"dire\"\n".into())
        .await
        .expect("answer");
    assert_eq!(bad.status(), 400);
    let error: Value = bad.json().await.expect("JSON error");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("dire"),
        "{error}"
    );
    assert_eq!(
        up.get("/api/v1/rules").await,
        served,
        "the rules in force stay"
    );

    let second = format!(
        "[[rules]]\nid = \"incidents\"\nversion = 2\nseverity = \"low\"\ntypes = [\"incident\"]\n{}",
        sink("incidents")
    );
    let good = put(second.clone()).await.expect("answer");
    assert_eq!(good.status(), 200);
    assert_eq!(std::fs::read_to_string(&rules).expect("rules file"), second);
    let got = receiver
        .wait_until(Duration::from_secs(30), |got| {
            got.iter()
                .any(|g| g.json()["data"]["event"]["severity"] == "low")
        })
        .await;
    let changed = got
        .iter()
        .position(|g| g.json()["data"]["rule"]["id"] == "incidents")
        .expect("the new rule fired");
    for g in &got[changed..] {
        let body = g.json();
        assert_eq!(
            body["data"]["rule"],
            serde_json::json!({"id": "incidents", "version": 2})
        );
        assert_eq!(body["data"]["event"]["event_type"], "incident");
    }
    let alerts = up.get("/api/v1/alerts?limit=5").await;
    assert_eq!(
        alerts["alerts"][0]["rules"],
        serde_json::json!(["incidents@2"])
    );
}

/// `process` over a file goes on delivering at the end of its input until nothing is pending,
/// then exits: every alert of the file has arrived by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_delivers_a_files_alerts_before_it_exits() {
    use crate::support::binary::BIN;
    let receiver = Receiver::start(|_, attempt| match attempt {
        0 => Reply::Status(503),
        _ => Reply::Ok,
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("events.jsonl");
    let produced = std::process::Command::new(BIN)
        .args([
            "produce", "--count", "300", "--burst", "--rate", "100", "--seed", "9",
        ])
        .output()
        .expect("produce");
    std::fs::write(&file, &produced.stdout).expect("events file");
    let alerts = String::from_utf8_lossy(&produced.stdout)
        .lines()
        .filter(|l| l.contains("\"severity\":\"high\"") || l.contains("\"severity\":\"critical\""))
        .count();
    assert!(alerts > 50, "{alerts} alerts in the file");
    let url = receiver.url();
    let data = dir.path().join("data");
    let processed = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(["process", "--input"])
            .arg(&file)
            .arg("--data-dir")
            .arg(&data)
            .args(["--webhook", &url])
            .output()
            .expect("process")
    })
    .await
    .expect("process ran");
    assert!(
        processed.status.success(),
        "{}",
        String::from_utf8_lossy(&processed.stderr)
    );
    let acknowledged = by_id(&receiver.got())
        .values()
        .filter(|tries| tries.iter().any(|g| g.answered == 204))
        .count();
    assert_eq!(
        acknowledged, alerts,
        "every alert delivered before process exited"
    );
}

fn event(id: &str, t: EventTime, severity: Severity) -> CityEvent {
    CityEvent {
        event_id: id.into(),
        city: City::parse("Boston").expect("city"),
        event_type: EventType::Incident,
        severity,
        timestamp: t,
        description: "d".into(),
    }
}

/// A batch of `n` critical events whose alerts go to the sinks `a` and `b`.
fn batch(rules: &Alerting, n: usize, now: EventTime) -> WriteBatch {
    let events = (0..n)
        .map(|i| {
            let e = event(
                &format!("e{i}"),
                now.saturating_sub(Span::from_secs(i as i64)),
                Severity::Critical,
            );
            let start = e.timestamp.window_start(Span::from_mins(5));
            Accepted {
                alerts: rules.fire(&e),
                ttl: e.timestamp.saturating_add(Span::from_secs(2)),
                placement: Placement::Window {
                    start,
                    end: start.saturating_add(Span::from_mins(5)),
                },
                partition: 0,
                offset: i as u64,
                event: e,
            }
        })
        .collect();
    WriteBatch {
        events,
        ..WriteBatch::new("t", BatchRules::default())
    }
}

/// The outbox's contract on SQLite, then its purge: the finished deliveries go with their
/// alerts, the pending ones stay.
#[tokio::test]
async fn the_outbox_on_sqlite_keeps_every_delivery_until_it_is_finished() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("store");
    let now = the_outbox_keeps_every_delivery_until_it_is_finished(&store).await;
    let later = now.saturating_add(Span::from_mins(10));
    let purged = store.purge_expired(later).await.expect("purge");
    assert_eq!(purged.deliveries, 26, "the 20 delivered and 6 failed");
    let all = DeliveryFilter::default();
    let left = store
        .deliveries(&all, Page::first(100))
        .await
        .expect("list");
    assert_eq!(left.len(), 34, "the 30 pending of b and the 4 sent again");
    assert!(left.iter().all(|d| d.status == DeliveryStatus::Pending));
}

/// The outbox's contract on DynamoDB (dynoxide); finished deliveries expire by TTL there.
#[tokio::test]
async fn the_outbox_on_dynamodb_keeps_every_delivery_until_it_is_finished() {
    let (_server, store) = crate::store::open_dynamodb().await;
    the_outbox_keeps_every_delivery_until_it_is_finished(&store).await;
}

/// The outbox's contract: deliveries are written with their alerts and once however often the
/// batch is; taking one leases it; attempts are recorded and change nothing once finished; a
/// listing is paged and filtered; the backlog is counted up to a bound. Returns when the
/// deliveries were stored.
async fn the_outbox_keeps_every_delivery_until_it_is_finished<S: Sink + Outbox>(
    store: &S,
) -> EventTime {
    let rules = Alerting::parse(
        "[[rules]]\nid = \"r\"\nseverity = \"high\"\n\
         [[sinks]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/\"\n\
         [[sinks]]\nname = \"b\"\nurl = \"http://127.0.0.1:9/\"\n",
    )
    .expect("rules");
    let b = Arc::new(batch(&rules, 30, EventTime::now()));
    store.write(b.clone()).await.expect("write");
    store.write(b).await.expect("write again");
    let now = EventTime::now();
    let all = DeliveryFilter::default();
    let listed = store
        .deliveries(&all, Page::first(100))
        .await
        .expect("list");
    assert_eq!(listed.len(), 60, "one per alert and sink, once");

    let lease = now.saturating_add(Span::from_secs(60));
    let taken = store.take_due("a", now, lease, 20).await.expect("take");
    assert_eq!(taken.len(), 20, "at most the limit");
    let rest = store.take_due("a", now, lease, 20).await.expect("take");
    assert_eq!(rest.len(), 10, "the leased ones are not taken again");
    assert!(
        store
            .take_due("a", now, lease, 20)
            .await
            .expect("take")
            .is_empty()
    );
    let after_lease = store.take_due("a", lease, lease.saturating_add(Span::from_secs(1)), 100);
    assert_eq!(
        after_lease.await.expect("take").len(),
        30,
        "due again once the lease is over"
    );

    let mut attempts: Vec<Attempted> = taken
        .iter()
        .map(|d| Attempted {
            id: d.id,
            at: now,
            outcome: Outcome::Delivered,
            status: Some(204),
            error: None,
        })
        .collect();
    attempts.extend(rest.iter().map(|d| Attempted {
        id: d.id,
        at: now,
        outcome: Outcome::Failed,
        status: Some(500),
        error: Some("the sink answered 500".into()),
    }));
    store.record(attempts.clone()).await.expect("record");
    store
        .record(attempts)
        .await
        .expect("an attempt on a finished delivery changes nothing");
    let count = |status| {
        let filter = DeliveryFilter {
            status: Some(status),
            sink: Some("a".into()),
        };
        let store = &store;
        async move {
            store
                .deliveries(&filter, Page::first(1000))
                .await
                .expect("list")
                .len()
        }
    };
    assert_eq!(count(DeliveryStatus::Delivered).await, 20);
    assert_eq!(count(DeliveryStatus::Failed).await, 10);
    assert_eq!(
        store
            .backlog(&["a".into(), "b".into()], 1000)
            .await
            .expect("backlog"),
        [("b".to_owned(), 30)]
    );
    assert_eq!(
        store.backlog(&["b".into()], 7).await.expect("backlog"),
        [("b".to_owned(), 7)],
        "counted up to a bound"
    );

    let mut seen = BTreeSet::new();
    let mut page = Page::first(7);
    loop {
        let got = store.deliveries(&all, page.clone()).await.expect("page");
        assert!(got.len() <= 7);
        for d in &got {
            assert!(seen.insert(d.id), "each delivery once");
        }
        match got.last() {
            Some(last) if got.len() == 7 => {
                page.after = Some(citystream::store::outbox::DeliveryKey {
                    created_at: last.created_at,
                    id: last.id,
                });
            }
            _ => break,
        }
    }
    assert_eq!(seen.len(), 60);

    assert_eq!(
        store
            .redeliver(uuid::Uuid::nil(), now)
            .await
            .expect("redeliver"),
        None
    );
    assert_eq!(
        store
            .redeliver_failed(Some("a"), now, 4)
            .await
            .expect("redeliver"),
        4
    );
    assert_eq!(
        count(DeliveryStatus::Failed).await,
        6,
        "at most the limit sent again"
    );
    let one = store.take_due("a", now, lease, 100).await.expect("take");
    assert_eq!(
        one.len(),
        4,
        "sent again: due at once, from the first attempt"
    );
    assert!(one.iter().all(|d| d.attempts == 0));
    now
}

/// Window rules on SQLite: see [`a_window_rule_fires_once_per_window`].
#[tokio::test]
async fn a_window_rule_fires_once_per_window_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("store");
    a_window_rule_fires_once_per_window(&store).await;
}

/// Window rules on DynamoDB (dynoxide): see [`a_window_rule_fires_once_per_window`].
#[tokio::test]
async fn a_window_rule_fires_once_per_window_on_dynamodb() {
    let (_server, store) = crate::store::open_dynamodb().await;
    a_window_rule_fires_once_per_window(&store).await;
}

/// A window rule (3 incidents in a 5-minute window) fires once for the window its third event
/// reaches, over two batches and a batch written again, and not for a window that holds two;
/// the alert, with the window, goes to the rule's sink.
async fn a_window_rule_fires_once_per_window<S: Sink + Outbox>(store: &S) {
    let alerting = Arc::new(
        Alerting::parse(
            "[[rules]]\nid = \"incidents\"\nversion = 2\nwindow = \"5m\"\ncount = 3\n\
             types = [\"incident\"]\n\
             [[sinks]]\nname = \"desk\"\nurl = \"http://127.0.0.1:9/\"\nrules = [\"incidents\"]\n",
        )
        .expect("rules"),
    );
    let five = Span::from_mins(5);
    let start = EventTime::now()
        .window_start(five)
        .saturating_sub(Span::from_mins(10));
    let at = |window: i64, s: i64| start.saturating_add(Span::from_secs(window * 300 + s));
    let write = |events: Vec<CityEvent>, first: u64| {
        let accepted = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let begin = e.timestamp.window_start(five);
                Accepted {
                    alerts: Default::default(),
                    ttl: e.timestamp.saturating_add(Span::from_days(1)),
                    placement: Placement::Window {
                        start: begin,
                        end: begin.saturating_add(five),
                    },
                    partition: 0,
                    offset: first + i as u64,
                    event: e,
                }
            })
            .collect();
        let rules = BatchRules {
            alerting: alerting.clone(),
            ..BatchRules::default()
        };
        Arc::new(WriteBatch {
            events: accepted,
            ..WriteBatch::new("w", rules)
        })
    };
    let first = write(
        vec![
            event("a", at(0, 1), Severity::Low),
            event("b", at(0, 2), Severity::High),
            event("x", at(1, 1), Severity::Low),
        ],
        0,
    );
    store.write(first).await.expect("write");
    let second = write(
        vec![
            event("c", at(0, 3), Severity::Low),
            event("y", at(1, 2), Severity::Low),
        ],
        3,
    );
    store.write(second.clone()).await.expect("write");
    store.write(second).await.expect("write again");
    let third = write(vec![event("d", at(0, 4), Severity::Low)], 5);
    store
        .write(third)
        .await
        .expect("a fourth event: the alert is made already");
    let listed = store
        .deliveries(&DeliveryFilter::default(), Page::first(100))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "one alert, for the window that reached 3");
    let d = &listed[0];
    assert_eq!(
        (d.sink.as_str(), d.rule.to_string()),
        ("desk", "incidents@2".to_owned())
    );
    let window = &d.alert["window"];
    assert_eq!(window["city"], "Boston");
    assert_eq!(window["resolution"], "5m");
    assert_eq!(window["window_start"], at(0, 0).to_rfc3339());
    assert_eq!(window["event_count"], 3);
}

/// The tests whose assertions are about time: run after the rest, one at a time.
mod about_time {
    use super::*;

    /// A sink that does not answer holds only its own deliveries: the other sink gets every alert
    /// meanwhile, and the silent one's are sent again, with the same ids, after the deadline.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_sink_never_holds_up_another() {
        let healthy = Receiver::start(|_, _| Reply::Ok).await;
        let silent = Receiver::start(|_, attempt| match attempt {
            0 => Reply::Silent,
            _ => Reply::Slow(Duration::from_millis(100)),
        })
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf-8 path");
        let (a, b) = (healthy.url(), silent.url());
        let up = Running::start(&[
            "up",
            "--data-dir",
            data,
            "--burst",
            "--rate",
            "500",
            "--count",
            "400",
            "--seed",
            "11",
            "--webhook",
            &a,
            "--webhook",
            &b,
            "--delivery-timeout",
            "2s",
        ]);
        wait_logged(&up, "stream finished and fully processed").await;
        let alerts = all_alerts(&up).await.len();
        let started = std::time::Instant::now();
        healthy
            .wait_until(Duration::from_secs(10), |got| got.len() >= alerts)
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "not held up by the silent sink"
        );
        let got = silent
            .wait_until(Duration::from_secs(60), |got| {
                by_id(got)
                    .values()
                    .filter(|tries| tries.iter().any(|g| g.answered == 200))
                    .count()
                    >= alerts
            })
            .await;
        for (id, tries) in by_id(&got) {
            assert_eq!(
                tries[0].answered, 0,
                "{id}: the first attempt got no answer"
            );
            assert!(
                tries[1].at - tries[0].at >= Duration::from_secs(2),
                "{id}: after the deadline"
            );
        }
        assert_eq!(
            by_id(&healthy.got()).len(),
            alerts,
            "each alert once to the healthy sink"
        );
    }
}

/// How a faulty receiver answers, at random but the same for a seed: mostly at once, else a
/// 500, a 429 with `Retry-After`, slowly, not at all, or by dropping the connection.
fn faulty(seed: u64) -> impl Fn(&str, usize) -> Reply + Send + Sync + 'static {
    use rand::{Rng, SeedableRng};
    let rng = std::sync::Mutex::new(rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    move |_, _| {
        let roll: u32 = rng.lock().map(|mut r| r.random_range(0..100)).unwrap_or(0);
        match roll {
            0..50 => Reply::Ok,
            50..65 => Reply::Status(500),
            65..75 => Reply::TooMany(1),
            75..85 => Reply::Slow(Duration::from_millis(300)),
            85..92 => Reply::Silent,
            _ => Reply::Reset,
        }
    }
}

/// [`through_random_kills_and_a_faulty_receiver`] on SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_arrives_through_random_kills_and_a_faulty_receiver() {
    through_random_kills_and_a_faulty_receiver(&[], &[]).await;
}

/// [`through_random_kills_and_a_faulty_receiver`] on DynamoDB (dynoxide).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_arrives_on_dynamodb_through_random_kills_and_a_faulty_receiver() {
    use crate::invariant::{CREDENTIALS, dynamodb_tables};
    let server = crate::support::dynoxide::Dynoxide::start();
    let store = dynamodb_tables(&server);
    through_random_kills_and_a_faulty_receiver(&store, &CREDENTIALS).await;
}

/// Every alert reaches the sink at least once while `up` is SIGKILLed at random moments and the
/// receiver fails, throttles, stalls and drops connections at random: each delivery id stands
/// for one alert, with the same body on every attempt, each signed; and the store's delivery
/// log agrees with what the receiver acknowledged.
async fn through_random_kills_and_a_faulty_receiver(store: &[&str], env: &[(&str, &str)]) {
    use rand::{Rng, SeedableRng};
    let receiver = Receiver::start(faulty(17)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let url = receiver.url();
    let start = |round: u64| {
        let seed = (50 + round).to_string();
        let begin = crate::support::binary::start_time()
            .saturating_add(Span::from_secs(round as i64 * 100))
            .to_rfc3339();
        let args = [
            "up",
            "--data-dir",
            data,
            "--burst",
            "--rate",
            "2",
            "--count",
            "400",
            "--start-time",
            &begin,
            "--seed",
            &seed,
            "--max-batch",
            "50",
            "--webhook",
            &url,
            "--webhook-secret",
            SECRET,
            "--delivery-timeout",
            "1s",
            "--delivery-max-backoff",
            "3s",
        ];
        let args: Vec<&str> = args.iter().chain(store).copied().collect();
        Running::start_with_env(&args, env)
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(29);
    for round in 0..5 {
        let run = start(round);
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
        let _ = run.stop("-KILL");
    }
    let last = start(5);
    wait_logged(&last, "stream finished and fully processed").await;
    let alerts = all_alerts(&last).await;
    assert!(alerts.len() > 100, "{} alerts", alerts.len());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let delivered = loop {
        let delivered = last
            .all(
                "/api/v1/deliveries?status=delivered&limit=1000",
                "deliveries",
            )
            .await;
        if delivered.len() == alerts.len() {
            break delivered;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} alerts delivered",
            delivered.len(),
            alerts.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let stored: BTreeSet<String> = alerts
        .iter()
        .map(|a| a["event_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let logged: BTreeSet<String> = delivered
        .iter()
        .map(|d| d["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let got = receiver.got();
    let attempts = by_id(&got);
    let acknowledged: BTreeSet<String> = attempts
        .iter()
        .filter(|(_, tries)| tries.iter().any(|g| (200..300).contains(&g.answered)))
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(
        acknowledged, logged,
        "the delivery log is what the receiver acknowledged"
    );
    let mut sent = BTreeSet::new();
    for (id, tries) in &attempts {
        let bodies: BTreeSet<&[u8]> = tries.iter().map(|g| g.body.as_slice()).collect();
        assert_eq!(
            bodies.len(),
            1,
            "every attempt of {id} carries the same body"
        );
        assert!(tries.iter().all(|g| verifies(g, SECRET)), "{id} is signed");
        let body = tries[0].json();
        let event = body["data"]["event"]["event_id"]
            .as_str()
            .unwrap_or_default();
        assert!(sent.insert(event.to_owned()), "one delivery id per alert");
    }
    assert_eq!(
        sent, stored,
        "every stored alert was sent, and nothing else"
    );
    let retried = attempts.values().filter(|tries| tries.len() > 1).count();
    assert!(
        retried > 20,
        "the faults were tried: {retried} deliveries took retries"
    );
}
