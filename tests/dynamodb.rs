//! DynamoDB tables against a DynamoDB-compatible server (dynoxide): `citystream init` creates
//! the seed's tables with their exact key schemas, indexes and TTL, is harmless when repeated,
//! completes a table that lacks an index, refuses a table keyed differently, and `destroy --yes`
//! removes them.

use std::process::{Command, Output};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveStatus,
};

use std::collections::BTreeMap;

use citystream::generator::Generator;

use crate::support::binary::{
    BIN, Running, append, check_against, expected_of, generator, start_time, up_args,
};
use crate::support::dynoxide::Dynoxide;

fn citystream(server: &Dynoxide, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--dynamodb-endpoint", &server.endpoint])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .expect("run citystream")
}

async fn client(server: &Dynoxide) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-2"))
        .endpoint_url(&server.endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    Client::from_conf(config)
}

fn keys(elements: &[KeySchemaElement]) -> Vec<(String, KeyType)> {
    elements
        .iter()
        .map(|k| (k.attribute_name.clone(), k.key_type.clone()))
        .collect()
}

#[tokio::test]
async fn init_creates_the_seed_tables_and_is_harmless_twice() {
    let server = Dynoxide::start();
    let first = citystream(&server, &["init"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let out = String::from_utf8_lossy(&first.stdout);
    assert_eq!(out.matches("created").count(), 4, "{out}");

    let again = citystream(&server, &["init"]);
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout)
            .matches("exists")
            .count(),
        4
    );

    let db = client(&server).await;
    let raw = db
        .describe_table()
        .table_name("citystream-raw-events")
        .send()
        .await
        .expect("describe");
    let raw = raw.table.expect("table");
    assert_eq!(
        keys(raw.key_schema()),
        [
            ("event_id".to_owned(), KeyType::Hash),
            ("timestamp".to_owned(), KeyType::Range)
        ]
    );
    assert!(
        raw.global_secondary_indexes()
            .iter()
            .any(|i| i.index_name.as_deref() == Some("by-city-time"))
    );
    let ttl = db
        .describe_time_to_live()
        .table_name("citystream-raw-events")
        .send()
        .await
        .expect("ttl");
    let ttl = ttl.time_to_live_description.expect("ttl description");
    assert_eq!(ttl.attribute_name.as_deref(), Some("ttl"));
    assert_eq!(ttl.time_to_live_status, Some(TimeToLiveStatus::Enabled));

    let aggs = db
        .describe_table()
        .table_name("citystream-aggregations")
        .send()
        .await
        .expect("describe");
    assert_eq!(
        keys(aggs.table.expect("table").key_schema()),
        [("partition_key".to_owned(), KeyType::Hash)]
    );
    let alerts = db
        .describe_table()
        .table_name("citystream-alerts")
        .send()
        .await
        .expect("describe");
    assert_eq!(
        keys(alerts.table.expect("table").key_schema()),
        [
            ("city".to_owned(), KeyType::Hash),
            ("timestamp".to_owned(), KeyType::Range)
        ]
    );

    let refused = citystream(&server, &["destroy"]);
    assert!(!refused.status.success(), "destroy needs --yes");
    let destroyed = citystream(&server, &["destroy", "--yes"]);
    assert!(destroyed.status.success());
    let left = db.list_tables().send().await.expect("list");
    assert!(left.table_names().is_empty(), "{:?}", left.table_names());
}

#[tokio::test]
async fn init_completes_a_table_without_its_index_and_refuses_a_different_key() {
    let server = Dynoxide::start();
    let db = client(&server).await;
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key")
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute")
    };
    // Keyed as ours, but without the city index.
    db.create_table()
        .table_name("a-raw-events")
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("event_id", KeyType::Hash))
        .key_schema(key("timestamp", KeyType::Range))
        .attribute_definitions(attr("event_id"))
        .attribute_definitions(attr("timestamp"))
        .send()
        .await
        .expect("create");
    let completed = citystream(&server, &["init", "--table-prefix", "a-"]);
    assert!(
        completed.status.success(),
        "{}",
        String::from_utf8_lossy(&completed.stderr)
    );
    assert!(String::from_utf8_lossy(&completed.stdout).contains("added by-city-time"));

    // Keyed differently: init says how and fails.
    db.create_table()
        .table_name("b-alerts")
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("alert_id", KeyType::Hash))
        .attribute_definitions(attr("alert_id"))
        .send()
        .await
        .expect("create");
    let refused = citystream(&server, &["init", "--table-prefix", "b-"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("b-alerts")
            && err.contains("key schema is alert_id HASH, expected city HASH + timestamp RANGE"),
        "{err}"
    );
}

#[tokio::test]
async fn up_on_dynamodb_answers_like_the_oracle() {
    let server = Dynoxide::start();
    let init = citystream(&server, &["init"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let config = generator(31, 3000, start_time());
    let mut owned = Vec::new();
    let mut args = up_args(data, &config, &mut owned);
    args.extend([
        "--store",
        "dynamodb",
        "--dynamodb-endpoint",
        &server.endpoint,
    ]);
    let credentials = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let run = Running::start_with_env(&args, &credentials);
    run.wait_for("3000 events", |s| s["total_events_processed"] == 3000)
        .await;
    let mut logs = BTreeMap::new();
    append(&mut logs, Generator::new(config));
    check_against(&run, &expected_of(&logs)).await;
    let health = run.get("/api/v1/health").await;
    assert_eq!(health["store"]["backend"], "dynamodb");
    assert!(run.stop("-TERM").success());
}
