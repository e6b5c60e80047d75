//! The real binary on free ports, checked over HTTP against the batch oracle.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use citystream::generator::Generator;
use citystream::model::{CityEvent, EventTime, Span};
use serde_json::Value;

use crate::support::binary::{
    BIN, Running, append, check_against, expected_of, generator, start_time, up_args,
};

#[tokio::test]
async fn up_matches_the_oracle_and_a_restart_continues_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let start = start_time();
    let first = generator(11, 3000, start);
    // The second run continues the stream clock where the first stopped.
    let second = generator(12, 2000, start.saturating_add(Span::from_secs(1500)));

    let mut owned = Vec::new();
    let run = Running::start(&up_args(data, &first, &mut owned));
    run.wait_for("3000 events", |s| s["total_events_processed"] == 3000)
        .await;
    let mut logs = BTreeMap::new();
    append(&mut logs, Generator::new(first.clone()));
    let expected = expected_of(&logs);
    check_against(&run, &expected).await;
    let health = run.get("/api/v1/health").await;
    assert_eq!(health["status"], "UP");
    assert!(run.stop("-TERM").success(), "clean exit on SIGTERM");

    // Restart: offsets, watermarks and open windows continue from the store.
    let run = Running::start(&up_args(data, &second, &mut owned));
    run.wait_for("5000 events", |s| s["total_events_processed"] == 5000)
        .await;
    append(&mut logs, Generator::new(second.clone()));
    let expected = expected_of(&logs);
    check_against(&run, &expected).await;
    assert!(run.stop("-INT").success(), "clean exit on SIGINT");

    // The data outlives the process: a plain `serve` answers the same.
    let serve = Running::serve(data);
    check_against(&serve, &expected).await;
}

#[tokio::test]
async fn every_malformed_record_is_a_dead_letter_and_the_rest_is_processed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let input = dir.path().join("events.jsonl");
    let start = start_time();
    let valid: Vec<CityEvent> = Generator::new(generator(5, 200, start)).collect();
    let good = String::from_utf8(valid[0].to_json()).expect("utf-8");
    let future = good.replace(
        &valid[0].timestamp.to_rfc3339(),
        &EventTime::now()
            .saturating_add(Span::from_mins(60))
            .to_rfc3339(),
    );
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"this is not json".to_vec(), "malformed"),
        (vec![b'{', 0xff, 0xfe, b'}'], "invalid_utf8"),
        (good.replace(&format!("\"{}\"", valid[0].event_type), "\"parade\"").into_bytes(), "malformed"),
        (good.replace(&format!("\"{}\"", valid[0].severity), "\"extreme\"").into_bytes(), "malformed"),
        (br#"{"city":"SF","event_type":"traffic","severity":"low"}"#.to_vec(), "malformed"),
        (br#"{"city":5,"event_type":"traffic","severity":"low","timestamp":"2026-11-25T10:00:00Z","description":"x"}"#.to_vec(), "malformed"),
        (good.replace(&format!("\"city\":\"{}\"", valid[0].city), "\"city\":\"\"").into_bytes(), "invalid_city"),
        (good.replace(&valid[0].timestamp.to_rfc3339(), "noon").into_bytes(), "invalid_timestamp"),
        (good.replace(&valid[0].description, &"d".repeat(2000)).into_bytes(), "description_too_long"),
        (format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000)).into_bytes(), "too_large"),
        (future.into_bytes(), "future_timestamp"),
    ];
    let mut file = std::fs::File::create(&input).expect("input file");
    let mut bad_iter = bad.iter();
    for (i, e) in valid.iter().enumerate() {
        file.write_all(&e.to_json()).expect("write");
        file.write_all(b"\n").expect("write");
        if i % 15 == 0
            && let Some((line, _)) = bad_iter.next()
        {
            file.write_all(line).expect("write");
            file.write_all(b"\n").expect("write");
        }
    }
    drop(file);

    let data_str = data.to_str().expect("utf-8 path");
    let input_str = input.to_str().expect("utf-8 path");
    let processed = Command::new(BIN)
        .args(["process", "--input", input_str, "--data-dir", data_str])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run process");
    assert!(processed.success());

    let api = Running::start(&["serve", "--data-dir", data_str]);
    let stats = api.get("/api/v1/stats").await;
    assert_eq!(
        stats["total_events_processed"], 200,
        "every valid event around the bad ones"
    );
    assert_eq!(stats["dead_letters"].as_u64(), Some(bad.len() as u64));
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (_, kind) in &bad {
        *want.entry((*kind).to_owned()).or_default() += 1;
    }
    let got: BTreeMap<String, u64> =
        serde_json::from_value(stats["dead_letters_by_kind"].clone()).expect("map");
    assert_eq!(got, want);
    let dead = api.get("/api/v1/dead-letters?limit=100").await;
    for d in dead["dead_letters"].as_array().expect("dead letters") {
        assert!(d["reason"].as_str().is_some_and(|r| r.len() > 5), "{d}");
        assert!(d["source"].as_str().is_some_and(|s| s.starts_with("file:")));
        assert!(
            d["payload_prefix"]
                .as_str()
                .is_some_and(|p| p.len() <= 1024)
        );
    }

    // Processing the same file again skips what its checkpoint covers: nothing changes.
    let again = Command::new(BIN)
        .args(["process", "--input", input_str, "--data-dir", data_str])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run process again");
    assert!(again.success());
    let strip = |mut v: Value| {
        v["generated_at"] = Value::Null;
        v
    };
    assert_eq!(strip(api.get("/api/v1/stats").await), strip(stats));
}

#[tokio::test]
async fn serve_answers_while_a_separate_process_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let input = dir.path().join("events.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).expect("input"));
    let mut config = generator(9, 40_000, start_time());
    config.rate = 20.0;
    for e in Generator::new(config) {
        file.write_all(&e.to_json()).expect("write");
        file.write_all(b"\n").expect("write");
    }
    file.flush().expect("flush");
    drop(file);
    let data_str = data.to_str().expect("utf-8 path");
    let api = Running::serve(data_str);
    let mut writer = Command::new(BIN)
        .args([
            "process",
            "--input",
            input.to_str().expect("utf-8"),
            "--data-dir",
            data_str,
            "--max-batch",
            "2000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start process");
    let mut seen = Vec::new();
    loop {
        let stats = api.get("/api/v1/stats").await;
        let _ = api.get("/api/v1/events/SF?limit=5").await;
        let total = stats["total_events_processed"].as_u64().expect("total");
        seen.push(total);
        if writer.try_wait().expect("wait").is_some() && total == 40_000 {
            break;
        }
        assert!(seen.len() < 10_000, "writer never finished");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(writer.wait().expect("wait").success());
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "totals only grow");
}

#[test]
fn bench_reports_every_event_on_both_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("events.jsonl");
    let produced = Command::new(BIN)
        .args([
            "produce", "--count", "2000", "--burst", "--seed", "3", "--rate", "50",
        ])
        .args(["--start-time", &start_time().to_rfc3339()])
        .stderr(Stdio::null())
        .output()
        .expect("produce");
    assert!(produced.status.success());
    std::fs::write(&input, &produced.stdout).expect("write input");
    for store in ["null", "sqlite"] {
        let out = Command::new(BIN)
            .args([
                "bench",
                "--input",
                input.to_str().expect("utf-8"),
                "--store",
                store,
            ])
            .stderr(Stdio::null())
            .output()
            .expect("bench");
        assert!(out.status.success(), "bench --store {store}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        assert!(last.starts_with("events=2000 seconds="), "{last}");
        assert!(
            last.contains(" events_per_s=") && last.contains(" peak_rss_mib="),
            "{last}"
        );
    }
}

/// A pipe and a file backfilled into one data directory: their events of one window add up,
/// in the window as in the summary.
#[tokio::test]
async fn two_sources_writing_one_store_add_up_in_a_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let at = |secs: i64| {
        let start = start_time().window_start(Span::from_mins(5));
        start.saturating_add(Span::from_secs(secs)).to_rfc3339()
    };
    let line = |id: &str, t: String| {
        format!(
            r#"{{"event_id":"{id}","city":"SF","event_type":"traffic","severity":"low","timestamp":"{t}","description":"d"}}"#
        )
    };
    let mut piped = Command::new(BIN)
        .args(["process", "--input", "-", "--data-dir", data])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("process stdin");
    let mut stdin = piped.stdin.take().expect("stdin");
    writeln!(stdin, "{}", line("from-the-pipe", at(10))).expect("write");
    drop(stdin);
    assert!(piped.wait().expect("wait").success());
    let file = dir.path().join("backfill.jsonl");
    std::fs::write(&file, line("from-the-file", at(20)) + "\n").expect("file");
    let backfill = Command::new(BIN)
        .args([
            "process",
            "--input",
            file.to_str().expect("utf-8"),
            "--data-dir",
            data,
        ])
        .stderr(Stdio::null())
        .status()
        .expect("process file");
    assert!(backfill.success());
    let api = Running::serve(data);
    assert_eq!(api.get("/api/v1/summary/SF").await["total_events"], 2);
    let windows = api.get("/api/v1/aggregations?city=SF").await;
    assert_eq!(windows["aggregations"][0]["event_count"], 2, "{windows}");
}

/// `serve` pointed at a directory that holds no store says where it looked and creates nothing.
#[test]
fn serve_on_a_mistyped_data_directory_says_where_it_looked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("citystrem-data");
    let out = Command::new(BIN)
        .args([
            "serve",
            "--data-dir",
            typo.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no CityStream store at") && err.contains("citystrem-data/citystream.db"),
        "{err}"
    );
    assert!(!typo.exists());
}
