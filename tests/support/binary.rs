//! The real binary: starting it, talking to its API, stopping it; the stream helpers and the
//! oracle check shared by the end-to-end tiers.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use citystream::broker::partition_for;
use citystream::generator::GeneratorConfig;
use citystream::model::{CityEvent, EventTime, Record, Span};
use serde_json::Value;

use super::oracle::Results;
use super::record;

pub const BIN: &str = env!("CARGO_BIN_EXE_citystream");

/// A running `citystream` process, killed on drop.
pub struct Running {
    child: Child,
    base: String,
    client: reqwest::Client,
    /// Its log lines so far (the last 20 000).
    log: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

impl Running {
    /// Starts `citystream ARGS --listen 127.0.0.1:0` and waits for the API's address.
    pub fn start(args: &[&str]) -> Running {
        Self::start_with_env(args, &[])
    }

    /// `citystream serve` over the SQLite store in `data`, which it makes first as a writer
    /// would (a reader never creates a store).
    pub fn serve(data: &str) -> Running {
        drop(
            citystream::store::sqlite::SqliteStore::open(std::path::Path::new(data))
                .expect("store"),
        );
        Self::start(&["serve", "--data-dir", data])
    }

    /// Like [`Running::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .args(["--listen", "127.0.0.1:0", "--log", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start citystream");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let lines = log.clone();
        // With CITYSTREAM_TEST_LOGS=DIR, each process's log is kept in DIR/<pid>.log.
        let mut keep = std::env::var_os("CITYSTREAM_TEST_LOGS").and_then(|dir| {
            let path = std::path::Path::new(&dir).join(format!("{}.log", child.id()));
            std::fs::File::create(path).ok()
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(file) = keep.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(file, "{line}");
                }
                if let Ok(mut lines) = lines.lock() {
                    if lines.len() == 20_000 {
                        lines.pop_front();
                    }
                    lines.push_back(line.clone());
                }
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("citystream printed its API address");
        Running {
            child,
            base: format!("http://{addr}"),
            client: crate::support::http_client(),
            log,
        }
    }

    /// `http://127.0.0.1:PORT` of its API.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether a line of its log so far contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log
            .lock()
            .is_ok_and(|lines| lines.iter().any(|l| l.contains(needle)))
    }

    /// A GET with a deadline: its status and JSON body, or `None` when no answer came in time.
    pub async fn try_get(&self, path: &str, within: Duration) -> Option<(u16, Value)> {
        let request = self.client.get(format!("{}{path}", self.base)).send();
        let response = tokio::time::timeout(within, request).await.ok()?.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    pub async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("JSON body")
    }

    /// A plain-text answer, such as `/metrics`.
    pub async fn text(&self, path: &str) -> String {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.text().await.expect("text body")
    }

    /// A plain-text answer with a deadline, or `None` when none came in time.
    pub async fn try_text(&self, path: &str, within: Duration) -> Option<String> {
        let request = self.client.get(format!("{}{path}", self.base)).send();
        let response = tokio::time::timeout(within, request).await.ok()?.ok()?;
        response.text().await.ok()
    }

    /// Every item of a list, following `next_cursor` page by page.
    pub async fn all(&self, path: &str, key: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut next = path.to_owned();
        let join = if path.contains('?') { '&' } else { '?' };
        loop {
            let page = self.get(&next).await;
            items.extend(page[key].as_array().expect("a list").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(cursor) => next = format!("{path}{join}cursor={cursor}"),
                None => return items,
            }
        }
    }

    /// Polls `/api/v1/stats` until `done` holds, for at most a minute.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stats = self.get("/api/v1/stats").await;
            if done(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the process to end by itself.
    pub fn wait(mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "citystream did not finish within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`-HUP`, say) and goes on.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
    }

    /// Sends a signal and waits for the exit, which must come within five seconds.
    pub fn stop(self, signal: &str) -> ExitStatus {
        self.signal(signal);
        self.wait(Duration::from_secs(5))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `line` in the log of `run`, for at most a minute.
pub async fn wait_logged(run: &Running, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run.logged(line) {
        assert!(Instant::now() < deadline, "logged: {line}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn generator(seed: u64, count: u64, start: EventTime) -> GeneratorConfig {
    GeneratorConfig {
        seed,
        rate: 2.0,
        pace: None,
        count: Some(count),
        start,
        out_of_order: 0.1,
        late: 0.03,
        hostile: 0.0,
    }
}

pub fn up_args<'a>(
    dir: &'a str,
    config: &GeneratorConfig,
    owned: &'a mut Vec<String>,
) -> Vec<&'a str> {
    *owned = vec![
        config.seed.to_string(),
        config.count.unwrap_or_default().to_string(),
        config.rate.to_string(),
        config.start.to_rfc3339(),
        config.out_of_order.to_string(),
        config.late.to_string(),
    ];
    let mut args = vec!["up", "--data-dir", dir, "--burst", "--partitions", "6"];
    for (flag, value) in [
        "--seed",
        "--count",
        "--rate",
        "--start-time",
        "--out-of-order",
        "--late",
    ]
    .iter()
    .zip(owned.iter())
    {
        args.push(flag);
        args.push(value);
    }
    args
}

/// The oracle's results for the embedded broker's or Kafka's `city-events` logs.
pub fn expected_of(logs: &BTreeMap<u32, Vec<Record>>) -> Results {
    super::oracle::compute_logs(
        "city-events",
        logs,
        &citystream::processor::EngineConfig::default(),
        EventTime::now(),
    )
}

/// Appends generated records (hostile ones too) to per-partition logs, partitioned by their
/// key as the brokers do, arriving now.
pub fn append_records(
    logs: &mut BTreeMap<u32, Vec<Record>>,
    records: citystream::generator::hostile::Records,
) {
    for r in records {
        let p = partition_for(&r.key, 6);
        let log = logs.entry(p).or_default();
        let offset = log.len() as u64;
        log.push(Record::head(p, offset, Some(EventTime::now()), &r.bytes));
    }
}

/// Appends generated events to per-partition logs the way the embedded broker partitions them.
pub fn append(
    logs: &mut BTreeMap<u32, Vec<Record>>,
    events: impl Iterator<Item = CityEvent>,
) -> u64 {
    let mut n = 0;
    for e in events {
        let p = partition_for(e.city.as_str().as_bytes(), 6);
        let log = logs.entry(p).or_default();
        let offset = log.len() as u64;
        log.push(record(p, offset, EventTime::now(), &e));
        n += 1;
    }
    n
}

/// Checks every endpoint's answer against the oracle's results, every list in full (page by
/// page): stats, cities, summaries, each city's events and windows, alerts, late events and
/// dead letters.
pub async fn check_against(api: &Running, expected: &Results) {
    let stats = api.get("/api/v1/stats").await;
    let alerts_of = |sev: &str| {
        expected
            .raw
            .values()
            .filter(|e| e.severity.as_str() == sev)
            .count() as u64
    };
    assert_eq!(
        stats["total_events_processed"].as_u64(),
        Some(expected.raw.len() as u64)
    );
    assert_eq!(
        stats["high_severity_alerts"].as_u64(),
        Some(alerts_of("high"))
    );
    assert_eq!(
        stats["critical_alerts"].as_u64(),
        Some(alerts_of("critical"))
    );
    assert_eq!(
        stats["late_events"].as_u64(),
        Some(expected.late.len() as u64)
    );
    assert_eq!(
        stats["dead_letters"].as_u64(),
        Some(expected.dead.len() as u64)
    );
    assert!(
        !expected.late.is_empty(),
        "the stream exercises the watermark"
    );

    let got: BTreeMap<String, u64> = api
        .all("/api/v1/cities?limit=1000", "cities")
        .await
        .iter()
        .map(|c| (text(&c["city"]), c["total_events"].as_u64().expect("n")))
        .collect();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for e in expected.raw.values() {
        *want.entry(e.city.as_str().to_owned()).or_default() += 1;
    }
    same(&got, &want, "cities");

    for city in want.keys() {
        check_city(api, expected, city).await;
    }

    let got: Vec<(i64, String)> = api
        .all("/api/v1/alerts?hours=720&limit=1000", "alerts")
        .await
        .iter()
        .map(|a| (time_of(&a["timestamp"]), text(&a["event_id"])))
        .collect();
    // Newest first, ties by id descending.
    let mut want: Vec<(i64, String)> = expected
        .alerts
        .iter()
        .map(|(_, t, id)| (*t, id.clone()))
        .collect();
    want.sort_by(|a, b| b.cmp(a));
    same(&got, &want, "alerts");

    let got: BTreeSet<(String, i64)> = api
        .all("/api/v1/late-events?limit=1000", "late_events")
        .await
        .iter()
        .map(|l| (text(&l["event_id"]), time_of(&l["timestamp"])))
        .collect();
    same(&got, &expected.late, "late events");

    let got: BTreeSet<(u32, u64, String)> = api
        .all("/api/v1/dead-letters?limit=1000", "dead_letters")
        .await
        .iter()
        .map(|d| {
            (
                d["partition"].as_u64().expect("partition") as u32,
                d["offset"].as_u64().expect("offset"),
                text(&d["kind"]),
            )
        })
        .collect();
    same(&got, &expected.dead, "dead letters");
}

/// One city's summary, events and windows against the oracle.
async fn check_city(api: &Running, expected: &Results, city: &str) {
    let of_city: Vec<&CityEvent> = expected
        .raw
        .values()
        .filter(|e| e.city.as_str() == city)
        .collect();
    let path_city = urlencode(city);
    let summary = api.get(&format!("/api/v1/summary/{path_city}")).await;
    for t in ["traffic", "weather", "incident", "construction"] {
        let n = of_city
            .iter()
            .filter(|e| e.event_type.as_str() == t)
            .count() as u64;
        assert_eq!(
            summary["event_type_breakdown"][t].as_u64(),
            Some(n),
            "{city} {t}"
        );
    }

    let got: Vec<String> = api
        .all(&format!("/api/v1/events/{path_city}?limit=1000"), "events")
        .await
        .iter()
        .map(|e| text(&e["event_id"]))
        .collect();
    let mut newest: Vec<&CityEvent> = of_city.clone();
    newest.sort_by(|a, b| (b.timestamp, &b.event_id).cmp(&(a.timestamp, &a.event_id)));
    let want: Vec<String> = newest.iter().map(|e| e.event_id.clone()).collect();
    same(&got, &want, &format!("{city}: events"));

    for resolution in citystream::model::Resolutions::default().iter() {
        let resolution = resolution.name();
        let got: BTreeMap<String, (u64, Vec<String>)> = api
            .all(
                &format!(
                    "/api/v1/aggregations?city={path_city}&resolution={resolution}&limit=1000"
                ),
                "aggregations",
            )
            .await
            .iter()
            .map(|w| {
                let sev = w["severities"]
                    .as_array()
                    .expect("severities")
                    .iter()
                    .map(text)
                    .collect();
                (
                    text(&w["partition_key"]),
                    (w["event_count"].as_u64().expect("n"), sev),
                )
            })
            .collect();
        let want: BTreeMap<String, (u64, Vec<String>)> = expected
            .windows
            .iter()
            .filter(|((res, of, _), _)| *res == resolution && of == city)
            .map(|((_, _, key), v)| {
                (
                    key.clone(),
                    (v.0, v.1.iter().map(|s| s.as_str().to_owned()).collect()),
                )
            })
            .collect();
        same(&got, &want, &format!("{city}: {resolution} windows"));
    }
}

fn text(v: &Value) -> String {
    v.as_str().expect("a string").to_owned()
}

fn time_of(v: &Value) -> i64 {
    EventTime::parse_rfc3339(v.as_str().expect("timestamp"))
        .expect("rfc3339")
        .as_millis()
}

/// A city name as a path segment.
fn urlencode(city: &str) -> String {
    city.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn start_time() -> EventTime {
    // Two hours ago, on a whole second: all events are in the past and within 24 h.
    let t = EventTime::now().saturating_sub(Span::from_mins(120));
    EventTime::from_millis(t.as_millis() / 1000 * 1000)
}

/// Asserts equality, printing only the sizes and the first differences.
pub fn same<T: PartialEq + std::fmt::Debug>(got: &T, want: &T, what: &str) {
    if got != want {
        let got = format!("{got:?}");
        let want = format!("{want:?}");
        let at = got
            .chars()
            .zip(want.chars())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        let from = at.saturating_sub(200);
        panic!(
            "{what} differ (debug lengths {} vs {}):\n got: …{}…\nwant: …{}…",
            got.len(),
            want.len(),
            got.chars().skip(from).take(600).collect::<String>(),
            want.chars().skip(from).take(600).collect::<String>()
        );
    }
}
