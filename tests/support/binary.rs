//! The real binary: starting it, talking to its API, stopping it; the stream helpers and the
//! oracle check shared by the end-to-end tiers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use citystream::broker::partition_for;
use citystream::generator::GeneratorConfig;
use citystream::model::{CityEvent, EventTime, Record, SEED_CITIES, Span};
use serde_json::Value;

use super::oracle::Results;
use super::record;

pub const BIN: &str = env!("CARGO_BIN_EXE_citystream");

/// A running `citystream` process, killed on drop.
pub struct Running {
    child: Child,
    base: String,
    client: reqwest::Client,
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
            client: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("JSON body")
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

    /// Sends a signal and waits for the exit, which must come within five seconds.
    pub fn stop(self, signal: &str) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        self.wait(Duration::from_secs(5))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// Checks every endpoint's answer against the oracle's results.
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
    assert!(
        !expected.late.is_empty(),
        "the stream exercises the watermark"
    );

    let cities = api.get("/api/v1/cities").await;
    let got: BTreeMap<String, u64> = cities["cities"]
        .as_array()
        .expect("cities")
        .iter()
        .map(|c| {
            (
                c["city"].as_str().expect("city").to_owned(),
                c["total_events"].as_u64().expect("n"),
            )
        })
        .collect();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for e in expected.raw.values() {
        *want.entry(e.city.as_str().to_owned()).or_default() += 1;
    }
    same(&got, &want, "cities");

    for city in SEED_CITIES {
        let of_city: Vec<&CityEvent> = expected
            .raw
            .values()
            .filter(|e| e.city.as_str() == city)
            .collect();

        let summary = api.get(&format!("/api/v1/summary/{city}")).await;
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

        let events = api.get(&format!("/api/v1/events/{city}?limit=20")).await;
        let got: Vec<&str> = events["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["event_id"].as_str().expect("id"))
            .collect();
        let mut newest: Vec<&CityEvent> = of_city.clone();
        newest.sort_by(|a, b| (b.timestamp, &b.event_id).cmp(&(a.timestamp, &a.event_id)));
        let want: Vec<&str> = newest
            .iter()
            .take(20)
            .map(|e| e.event_id.as_str())
            .collect();
        same(&got, &want, &format!("{city}: newest events"));

        let alerts = api
            .get(&format!("/api/v1/alerts?city={city}&hours=24&limit=1000"))
            .await;
        // Newest first, ties by id descending, at most the limit.
        let got: Vec<(i64, String)> = alerts["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|a| {
                let t = EventTime::parse_rfc3339(a["timestamp"].as_str().expect("ts"))
                    .expect("rfc3339");
                (
                    t.as_millis(),
                    a["event_id"].as_str().expect("id").to_owned(),
                )
            })
            .collect();
        let want: Vec<(i64, String)> = expected
            .alerts
            .iter()
            .rev()
            .filter(|(c, _, _)| c == city)
            .map(|(_, t, id)| (*t, id.clone()))
            .take(1000)
            .collect();
        same(&got, &want, &format!("{city}: alerts"));

        for t in ["traffic", "weather", "incident", "construction"] {
            let aggs = api
                .get(&format!(
                    "/api/v1/aggregations?city={city}&event_type={t}&limit=1000"
                ))
                .await;
            let got: BTreeMap<String, (u64, Vec<String>)> = aggs["aggregations"]
                .as_array()
                .expect("aggregations")
                .iter()
                .map(|w| {
                    let sev = w["severities"]
                        .as_array()
                        .expect("severities")
                        .iter()
                        .map(|s| s.as_str().expect("severity").to_owned())
                        .collect();
                    (
                        w["partition_key"].as_str().expect("key").to_owned(),
                        (w["event_count"].as_u64().expect("n"), sev),
                    )
                })
                .collect();
            let want: BTreeMap<String, (u64, Vec<String>)> = expected
                .windows
                .iter()
                .filter(|(k, _)| k.starts_with(&format!("{city}#{t}#")))
                .map(|(k, v)| {
                    (
                        k.clone(),
                        (v.0, v.1.iter().map(|s| s.as_str().to_owned()).collect()),
                    )
                })
                .collect();
            same(&got, &want, &format!("{city}/{t}: windows"));
        }
    }
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
