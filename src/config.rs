//! Typed configuration: every flag has a `CITYSTREAM_*` environment fallback and a default.
//! Precedence: flag > environment > default. A default is the component's own (its
//! `Default`, or its constant): each is written once, there, and shown here by clap.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand};
use humantime::Duration as Human;

use crate::api::Limits;
use crate::api::ingest::IngestLimits;
use crate::broker::embedded::EmbeddedConfig;
use crate::broker::http::HttpConfig;
use crate::broker::kafka::KafkaConfig;
use crate::delivery::DeliveryConfig;
use crate::generator::GeneratorConfig;
use crate::model::alerting::{Format, RulesError, Secret, SinkConfig, check_url, redact_url};
use crate::model::{
    BASE, BatchRules, DEFAULT_SEVERITIES_CAP, EventTime, ROLLUPS, Resolution, Resolutions, Span,
};
use crate::processor::{EngineConfig, RuntimeConfig};
use crate::store::dynamodb::DynamoConfig;
use crate::store::timed::Deadlines;
use crate::store::{Backend, Durability, Properties, StoreConfig};

/// CityStream: city events → broker → stream processor → store → REST API, in one binary.
#[derive(Debug, Parser)]
#[command(name = "citystream", version, about, long_about = None)]
pub struct Cli {
    /// Log filter, in `RUST_LOG` syntax (e.g. `info`, `citystream=debug`).
    #[arg(long, env = "CITYSTREAM_LOG", default_value = "info", global = true)]
    pub log: String,

    /// The event types records may have, comma-separated (1 to 32 of a-z 0-9 - _ each): a record
    /// of any other type is a dead letter, an ingest item refused, with the list of these.
    #[arg(long, env = "CITYSTREAM_EVENT_TYPES", global = true, value_delimiter = ',', default_values_t = crate::model::SEED_TYPES.map(String::from))]
    pub event_types: Vec<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process: generator, broker (embedded, or Kafka with --brokers),
    /// processor, SQLite store and API.
    Up(UpArgs),
    /// Generate events: to Kafka with --brokers, to a running CityStream with --to URL, else
    /// as JSON lines on standard output.
    Produce(ProduceArgs),
    /// Process events from Kafka (--brokers) or JSON lines (--input FILE|-) into the store.
    Process(ProcessArgs),
    /// Serve the REST API over an existing store.
    Serve(ServeArgs),
    /// Create the DynamoDB tables, indexes and TTL setting that are missing (safe to repeat).
    Init(InitArgs),
    /// Delete the DynamoDB tables (the seed's cleanup script).
    Destroy(DestroyArgs),
    /// Send alert deliveries again: the given ones, or the failed ones (--failed).
    Redeliver(RedeliverArgs),
    /// Make, list and revoke API keys (for sending events, reading, and changing rules).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Send events from a JSON-lines file (or `-`, standard input) to a running CityStream.
    Send(SendArgs),
    /// Run the processor over a JSON-lines file as fast as it goes and report events/s.
    Bench(BenchArgs),
}

/// Where `bench` sends results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchStore {
    /// Every stage runs; results are discarded at the store boundary.
    Null,
    /// Everything is persisted as in `up`, in a SQLite store under `--data-dir`.
    Sqlite,
    /// Everything is persisted in DynamoDB tables (made by `init` when missing); the write
    /// units spent per event are printed per kind of item.
    Dynamodb,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// JSON-lines file of events (e.g. from `citystream produce --count N --burst`).
    #[arg(long)]
    pub input: PathBuf,
    /// Where results go.
    #[arg(long, value_enum, default_value_t = BenchStore::Null)]
    pub store: BenchStore,
    /// Data directory for `--store sqlite` (default: a fresh temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Most records per store batch.
    #[arg(long, default_value_t = 50_000)]
    pub max_batch: usize,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The tables of `--store dynamodb`.
    #[command(flatten)]
    pub dynamo: DynamoArgs,
}

impl BenchArgs {
    /// The store `bench` writes to: under `--data-dir` or `scratch`, every write given ten
    /// minutes (a batch of `--max-batch` records may be large).
    pub fn store_config(&self, scratch: &std::path::Path) -> StoreConfig {
        StoreConfig {
            backend: match self.store {
                BenchStore::Null => Backend::Null,
                BenchStore::Sqlite => Backend::Sqlite,
                BenchStore::Dynamodb => Backend::Dynamodb,
            },
            data_dir: self.data_dir.clone().unwrap_or_else(|| scratch.to_owned()),
            dynamo: self.dynamo.config(),
            deadlines: Deadlines {
                write: Duration::from_secs(600),
                ..Deadlines::default()
            },
            // The file can be read again.
            durability: Durability::SourceReplays,
        }
    }
}

/// Where the DynamoDB tables are. Credentials come from the standard AWS provider chain
/// (environment, profile, instance role), never from CityStream's own flags or files.
#[derive(Debug, Clone, Args)]
pub struct DynamoArgs {
    /// AWS region (the seed's us-east-2, Ohio).
    #[arg(long, env = "CITYSTREAM_REGION", default_value = "us-east-2")]
    pub region: String,
    /// Endpoint of a DynamoDB-compatible server, e.g. `http://127.0.0.1:8000`.
    #[arg(long, env = "CITYSTREAM_DYNAMODB_ENDPOINT")]
    pub dynamodb_endpoint: Option<String>,
    /// Prefix of every table name.
    #[arg(long, env = "CITYSTREAM_TABLE_PREFIX", default_value = "citystream-")]
    pub table_prefix: String,
    /// Shards of every key of the state table that many writers share (list pages, late
    /// groups, the dead-letter index, the city registry), set when `init` first marks the
    /// tables; later runs use the tables' own.
    #[arg(long, env = "CITYSTREAM_DYNAMODB_SHARDS", default_value_t = crate::store::dynamodb::DEFAULT_SHARDS,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::store::dynamodb::MAX_SHARDS)))]
    pub dynamodb_shards: u32,
    /// Shards of a city's alerts: 1 keeps the seed's key (`city`), which the seed's
    /// `aws dynamodb query … city = :city` reads; more spread a city's alerts over `<city>#NN`
    /// for more than about 1 000 alerts per second per city. Set when `init` first marks the
    /// tables, like `--dynamodb-shards`.
    #[arg(long, env = "CITYSTREAM_ALERT_SHARDS", default_value_t = crate::store::dynamodb::DEFAULT_ALERT_SHARDS,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::store::dynamodb::MAX_SHARDS)))]
    pub alert_shards: u32,
    /// Most DynamoDB requests in flight per process.
    #[arg(long, env = "CITYSTREAM_DYNAMODB_CONCURRENCY", default_value_t = crate::store::dynamodb::DEFAULT_CONCURRENCY,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096))]
    pub dynamodb_concurrency: usize,
}

impl DynamoArgs {
    pub fn config(&self) -> DynamoConfig {
        DynamoConfig {
            region: self.region.clone(),
            endpoint: self.dynamodb_endpoint.clone(),
            table_prefix: self.table_prefix.clone(),
            shards: self.dynamodb_shards,
            alert_shards: self.alert_shards,
            concurrency: self.dynamodb_concurrency,
        }
    }
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub dynamo: DynamoArgs,
    /// Move tables of the layout before (3) to this build's in place: stop every processor
    /// first (SIGTERM lets each finish its batch).
    #[arg(long)]
    pub migrate: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["ids", "failed"]))]
pub struct RedeliverArgs {
    /// Deliveries to send again, by id (as `GET /api/v1/deliveries` lists them).
    pub ids: Vec<uuid::Uuid>,
    /// Send the failed deliveries again instead (of `--sink` only, if given).
    #[arg(long)]
    pub failed: bool,
    /// With `--failed`: only this sink's.
    #[arg(long, requires = "failed")]
    pub sink: Option<String>,
    /// With `--failed`: at most this many.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub limit: u64,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key: its secret is printed once, alone on the last line.
    Create(KeyCreateArgs),
    /// List the keys: names, ids, scopes and limits, never secrets.
    List(KeyStoreArgs),
    /// Revoke a key by name: within a second, no API process takes it.
    Revoke(KeyRevokeArgs),
}

#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// The key's name: what logs and metrics call it (A-Z a-z 0-9 - _ .).
    #[arg(long)]
    pub name: String,
    /// What the key may do: ingest (send events), read (with --require-auth), admin (change
    /// rules, send deliveries again; reads too). Repeatable, or comma-separated.
    #[arg(long = "scope", value_enum, value_delimiter = ',', required = true)]
    pub scopes: Vec<ScopeArg>,
    /// Events per second the key may send, on average.
    #[arg(long, default_value_t = crate::model::keys::DEFAULT_RATE, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
    /// Events the key may send at once (the bucket's size): at least one request's worth.
    #[arg(long, default_value_t = crate::model::keys::DEFAULT_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: u32,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// A scope, as `--scope` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeArg {
    Ingest,
    Read,
    Admin,
}

impl From<ScopeArg> for crate::model::keys::Scope {
    fn from(s: ScopeArg) -> Self {
        match s {
            ScopeArg::Ingest => Self::Ingest,
            ScopeArg::Read => Self::Read,
            ScopeArg::Admin => Self::Admin,
        }
    }
}

#[derive(Debug, Args)]
pub struct KeyStoreArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct KeyRevokeArgs {
    /// The name of the key to revoke.
    pub name: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// JSON-lines file of events, or `-` for standard input.
    pub input: PathBuf,
    /// The CityStream API to send to.
    #[arg(long, env = "CITYSTREAM_URL", default_value = "http://127.0.0.1:8082")]
    pub url: String,
    /// A key with the `ingest` scope (`citystream keys create --scope ingest`); `produce` sends
    /// with it to `--to`.
    #[arg(long, env = "CITYSTREAM_KEY", hide_env_values = true)]
    pub key: KeyArg,
    /// Events per request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Events per second at most (paced per request); as fast as the server takes them when
    /// absent.
    #[arg(long, value_parser = positive_rate)]
    pub max_rate: Option<f64>,
    #[command(flatten)]
    pub retry: HttpRetryArgs,
}

/// An API key given on the command line: its `Debug` shows none of it.
#[derive(Clone)]
pub struct KeyArg(pub String);

impl std::fmt::Debug for KeyArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for KeyArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" => Err("the key is empty".to_owned()),
            key => Ok(KeyArg(key.to_owned())),
        }
    }
}

/// How a client of `POST /api/v1/events` waits and sends again.
#[derive(Debug, Clone, Args)]
pub struct HttpRetryArgs {
    /// Longest one request may take before it is sent again.
    #[arg(long, default_value_t = Human::from(Duration::from_secs(30)), value_parser = positive_duration)]
    pub timeout: Human,
    /// How long a batch is sent again (after 429, 5xx, timeouts) before the send fails.
    #[arg(long, default_value_t = Human::from(Duration::from_secs(300)), value_parser = positive_duration)]
    pub give_up_after: Human,
}

impl HttpRetryArgs {
    pub fn config(&self, url: &str, key: &KeyArg) -> HttpConfig {
        HttpConfig {
            url: url.to_owned(),
            key: key.0.clone(),
            timeout: *self.timeout,
            give_up_after: *self.give_up_after,
        }
    }
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    #[command(flatten)]
    pub dynamo: DynamoArgs,
    /// Confirms that the tables and all their data are to be deleted.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Generate nothing: take events only from `POST /api/v1/events`.
    #[arg(long, env = "CITYSTREAM_NO_GENERATOR")]
    pub no_generator: bool,
    #[command(flatten)]
    pub generator: GeneratorArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub alerts: AlertArgs,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("destination").args(["to", "brokers"]))]
pub struct ProduceArgs {
    #[command(flatten)]
    pub generator: GeneratorArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Send the events to a running CityStream's `POST /api/v1/events` at this URL (e.g.
    /// `http://127.0.0.1:8082`), with `--key`.
    #[arg(long, requires = "key")]
    pub to: Option<String>,
    /// A key with the `ingest` scope (`citystream keys create --scope ingest`); `produce` sends
    /// with it to `--to`.
    #[arg(long, env = "CITYSTREAM_KEY", hide_env_values = true)]
    pub key: Option<KeyArg>,
    #[command(flatten)]
    pub retry: HttpRetryArgs,
    /// Address for `/health` and `/metrics` (default with `--brokers`: 0.0.0.0:8080).
    #[arg(long, env = "CITYSTREAM_PRODUCER_LISTEN")]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["input", "brokers"]))]
pub struct ProcessArgs {
    /// JSON-lines file to read, or `-` for standard input.
    #[arg(long, env = "CITYSTREAM_INPUT")]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Address for `/health` and `/metrics` of this processor (off by default).
    #[arg(long, env = "CITYSTREAM_PROCESSOR_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub alerts: AlertArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// With `--brokers`, events sent to `POST /api/v1/events` go to the Kafka topic.
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub alerts: AlertArgs,
}

/// Alert rules, where alerts are delivered, and who may change them. Its `Debug` leaves the
/// secrets and the webhooks' paths out.
#[derive(Clone, Args)]
pub struct AlertArgs {
    /// Alert rules and sinks (TOML, docs/ALERTING.md); reloaded on SIGHUP and when it changes.
    /// Without it, high and critical events are alerts.
    #[arg(long, env = "CITYSTREAM_RULES")]
    pub rules: Option<PathBuf>,
    /// Sends every alert to this URL as a Standard Webhooks request (repeatable; the env var
    /// takes a comma-separated list). Named `webhook-1`, `webhook-2`, … in the deliveries.
    #[arg(long = "webhook", env = "CITYSTREAM_WEBHOOK", value_delimiter = ',')]
    pub webhooks: Vec<String>,
    /// The signing secret of each `--webhook`, in order (`whsec_<base64>`).
    #[arg(
        long = "webhook-secret",
        env = "CITYSTREAM_WEBHOOK_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub webhook_secrets: Vec<String>,
    /// The token that authorizes changes (`PUT /api/v1/rules`, retrying deliveries), sent as
    /// `Authorization: Bearer <token>`. Without it, nothing can be changed over the API.
    #[arg(long, env = "CITYSTREAM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Longest one delivery request may take.
    #[arg(long, env = "CITYSTREAM_DELIVERY_TIMEOUT", default_value_t = Human::from(DeliveryConfig::default().timeout), value_parser = positive_duration)]
    pub delivery_timeout: Human,
    /// Most delivery requests in flight per sink.
    #[arg(long, env = "CITYSTREAM_DELIVERY_CONCURRENCY", default_value_t = DeliveryConfig::default().concurrency as u32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub delivery_concurrency: u32,
    /// The wait before a delivery's first retry; each retry doubles it, with jitter.
    #[arg(long, env = "CITYSTREAM_DELIVERY_BACKOFF", default_value_t = Human::from(DeliveryConfig::default().backoff), value_parser = positive_duration)]
    pub delivery_backoff: Human,
    /// The longest wait between two attempts of a delivery.
    #[arg(long, env = "CITYSTREAM_DELIVERY_MAX_BACKOFF", default_value_t = Human::from(DeliveryConfig::default().max_backoff), value_parser = positive_duration)]
    pub delivery_max_backoff: Human,
    /// How long a delivery is retried before it fails (a dead letter to send again by hand).
    #[arg(long, env = "CITYSTREAM_DELIVERY_MAX_AGE", default_value_t = Human::from(DeliveryConfig::default().max_age), value_parser = positive_duration)]
    pub delivery_max_age: Human,
    /// When `process` reaches the end of its input: how long it goes on delivering what is
    /// pending before it exits (the rest waits in the outbox for the next processor).
    #[arg(long, env = "CITYSTREAM_DELIVERY_DRAIN", default_value_t = Human::from(crate::delivery::DEFAULT_DRAIN), value_parser = duration)]
    pub delivery_drain: Human,
    /// A sink's pending deliveries beyond which a warning is logged (the outbox keeps them all).
    #[arg(long, env = "CITYSTREAM_DELIVERY_BACKLOG_WARN", default_value_t = DeliveryConfig::default().backlog_warn as u64)]
    pub delivery_backlog_warn: u64,
}

impl std::fmt::Debug for AlertArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.webhooks.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("AlertArgs")
            .field("rules", &self.rules)
            .field("webhooks", &urls)
            .field("webhook_secrets", &self.webhook_secrets.len())
            .field("admin_token", &self.admin_token.as_ref().map(|_| "…"))
            .field("delivery", &self.delivery())
            .finish()
    }
}

impl AlertArgs {
    /// The sinks of `--webhook`, each with its secret.
    pub fn sinks(&self) -> Result<Vec<SinkConfig>, RulesError> {
        let secrets = &self.webhook_secrets;
        if !secrets.is_empty() && secrets.len() != self.webhooks.len() {
            return Err(RulesError::Invalid {
                what: "option",
                name: "--webhook-secret".into(),
                why: "give one secret per --webhook, in order, or none".into(),
            });
        }
        self.webhooks
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let name = format!("webhook-{}", i + 1);
                Ok(SinkConfig {
                    url: check_url(&name, url.clone())?,
                    secret: secrets.get(i).map(|s| Secret::parse(s)).transpose()?,
                    format: Format::Standard,
                    rules: Vec::new(),
                    name,
                })
            })
            .collect()
    }

    pub fn delivery(&self) -> DeliveryConfig {
        DeliveryConfig {
            timeout: *self.delivery_timeout,
            concurrency: self.delivery_concurrency as usize,
            backoff: *self.delivery_backoff,
            max_backoff: (*self.delivery_max_backoff).max(*self.delivery_backoff),
            max_age: *self.delivery_max_age,
            backlog_warn: usize::try_from(self.delivery_backlog_warn).unwrap_or(usize::MAX),
            poll: DeliveryConfig::default().poll,
        }
    }
}

/// The synthetic event stream (the seed's producer).
#[derive(Debug, Clone, Args)]
pub struct GeneratorArgs {
    /// Events per second; fractions allowed (0.2 = one every 5 s, as the original).
    #[arg(long, env = "CITYSTREAM_RATE", default_value_t = GeneratorConfig::default().rate, value_parser = positive_rate)]
    pub rate: f64,
    /// Stop after this many events (default: run until stopped).
    #[arg(long, env = "CITYSTREAM_COUNT")]
    pub count: Option<u64>,
    /// Seed of the random stream (default: random, and logged so a run can be repeated).
    #[arg(long, env = "CITYSTREAM_SEED")]
    pub seed: Option<u64>,
    /// Event time of the first event, RFC 3339 (default: now).
    #[arg(long, env = "CITYSTREAM_START_TIME", value_parser = rfc3339)]
    pub start_time: Option<EventTime>,
    /// Emit as fast as the broker takes events; event times still advance by 1/rate.
    #[arg(long, env = "CITYSTREAM_BURST", conflicts_with = "pace")]
    pub burst: bool,
    /// Emit this many events per wall-clock second instead of `--rate` (replay a day of
    /// event time in minutes); event times still advance by 1/rate.
    #[arg(long, env = "CITYSTREAM_PACE", value_parser = positive_rate)]
    pub pace: Option<f64>,
    /// Share of events up to 4 minutes behind the stream clock (on time, out of order).
    #[arg(long, env = "CITYSTREAM_OUT_OF_ORDER", default_value_t = 0.0, value_parser = ratio)]
    pub out_of_order: f64,
    /// Share of events 16 to 30 minutes behind the stream clock (late for a 10-minute watermark).
    #[arg(long, env = "CITYSTREAM_LATE", default_value_t = 0.0, value_parser = ratio)]
    pub late: f64,
    /// Share of records that are hostile: repeats, reused ids, malformed, oversized, future,
    /// cityless or behind a byte-order mark (to see the pipeline's defences at work).
    #[arg(long, env = "CITYSTREAM_HOSTILE", default_value_t = 0.0, value_parser = ratio)]
    pub hostile: f64,
}

impl GeneratorArgs {
    pub fn config(&self) -> GeneratorConfig {
        GeneratorConfig {
            seed: self.seed.unwrap_or_else(rand::random),
            rate: self.rate,
            pace: self.pace,
            count: self.count,
            start: self.start_time.unwrap_or_else(EventTime::now),
            out_of_order: self.out_of_order,
            late: self.late,
            hostile: self.hostile,
        }
    }
}

/// The broker: embedded by default, Kafka with `--brokers`.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Kafka bootstrap servers (`host:port,…`); without it the embedded broker is used.
    #[arg(long, env = "CITYSTREAM_BROKERS")]
    pub brokers: Option<String>,
    /// Topic name: scopes checkpoints and derived event ids.
    #[arg(long, env = "CITYSTREAM_TOPIC", default_value_t = EmbeddedConfig::default().topic)]
    pub topic: String,
    /// Partitions of the embedded broker, or of the Kafka topics when they are created.
    #[arg(long, env = "CITYSTREAM_PARTITIONS", default_value_t = EmbeddedConfig::default().partitions, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// Records the embedded queue holds before producers wait.
    #[arg(long, env = "CITYSTREAM_QUEUE_CAPACITY", default_value_t = EmbeddedConfig::default().capacity)]
    pub queue_capacity: usize,
    /// Kafka consumer group shared by all processors.
    #[arg(long, env = "CITYSTREAM_GROUP", default_value = "citystream-processor")]
    pub group: String,
    /// Kafka topic for records that are not valid events (reason in a header).
    #[arg(long, env = "CITYSTREAM_DLQ_TOPIC", default_value = "city-events-dlq")]
    pub dlq_topic: String,
    /// Replication factor of the Kafka topics when they are created.
    #[arg(long, env = "CITYSTREAM_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,
    /// Retention of the Kafka topic when it is created.
    #[arg(long, env = "CITYSTREAM_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// Extra librdkafka property, `KEY=VALUE`, repeatable (e.g. `security.protocol=SSL` for
    /// Amazon MSK); applied after CityStream's own settings.
    #[arg(long = "kafka-option", env = "CITYSTREAM_KAFKA_OPTION", value_parser = key_value)]
    pub kafka_options: Vec<(String, String)>,
    /// How long the group waits for a silent processor before moving its partitions.
    #[arg(long, env = "CITYSTREAM_SESSION_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub session_timeout: Duration,
}

impl BrokerArgs {
    pub fn embedded(&self) -> EmbeddedConfig {
        EmbeddedConfig {
            topic: self.topic.clone(),
            partitions: self.partitions,
            capacity: self.queue_capacity.max(1),
        }
    }

    /// The Kafka settings, when `--brokers` is given.
    pub fn kafka(&self) -> Option<KafkaConfig> {
        let brokers = self.brokers.clone()?;
        Some(KafkaConfig {
            brokers,
            topic: self.topic.clone(),
            dlq_topic: self.dlq_topic.clone(),
            group: self.group.clone(),
            partitions: i32::try_from(self.partitions).unwrap_or(6),
            replication_factor: self.replication_factor,
            retention: self.retention,
            session_timeout: self.session_timeout,
            options: self.kafka_options.clone(),
        })
    }
}

/// Event-time rules, and what is kept for how long.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Size of the tumbling windows (the base resolution); the rollups it does not divide are
    /// left out.
    #[arg(long, env = "CITYSTREAM_WINDOW", default_value_t = BASE.span, value_parser = positive_span)]
    pub window: Span,
    /// How long a window is kept after it ends.
    #[arg(long, env = "CITYSTREAM_WINDOW_RETENTION", default_value_t = BASE.retention, value_parser = span)]
    pub window_retention: Span,
    /// How long an hour's rollup is kept after it ends.
    #[arg(long, env = "CITYSTREAM_ROLLUP_1H_RETENTION", default_value_t = ROLLUPS[0].retention, value_parser = span)]
    pub rollup_1h_retention: Span,
    /// How long a day's rollup is kept after it ends.
    #[arg(long, env = "CITYSTREAM_ROLLUP_1D_RETENTION", default_value_t = ROLLUPS[1].retention, value_parser = span)]
    pub rollup_1d_retention: Span,
    /// How far the watermark trails the largest event time of a partition.
    #[arg(long, env = "CITYSTREAM_WATERMARK_DELAY", default_value_t = EngineConfig::default().watermark_delay, value_parser = span)]
    pub watermark_delay: Span,
    /// How long raw events (and their alerts) are kept after their event time.
    #[arg(long, env = "CITYSTREAM_RAW_TTL", default_value_t = EngineConfig::default().raw_ttl, value_parser = span)]
    pub raw_ttl: Span,
    /// How far ahead of its arrival an event may be stamped before it is a dead letter.
    #[arg(long, env = "CITYSTREAM_MAX_AHEAD", default_value_t = EngineConfig::default().max_ahead, value_parser = span)]
    pub max_ahead: Span,
    /// Longest severities list kept per window; `severity_counts` stays exact and the API marks
    /// the window `severities_capped`.
    #[arg(long, env = "CITYSTREAM_SEVERITIES_CAP", default_value_t = DEFAULT_SEVERITIES_CAP as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub severities_cap: u64,
    /// How far behind a partition's newest event time event ids are remembered, to catch an id
    /// reused with another timestamp.
    #[arg(long, env = "CITYSTREAM_DEDUP_HORIZON", default_value_t = EngineConfig::default().dedup_horizon, value_parser = span)]
    pub dedup_horizon: Span,
    /// Most event ids remembered per partition (about 170 bytes each, measured); 0 turns the
    /// memory off (the store's key still catches every repeat).
    #[arg(long, env = "CITYSTREAM_DEDUP_CAPACITY", default_value_t = EngineConfig::default().dedup_capacity)]
    pub dedup_capacity: usize,
    /// How long late events are kept after their event time.
    #[arg(long, env = "CITYSTREAM_LATE_RETENTION", default_value_t = BatchRules::default().late_retention, value_parser = span)]
    pub late_retention: Span,
    /// How long dead letters are kept after they arrived.
    #[arg(long, env = "CITYSTREAM_DEAD_LETTER_RETENTION", default_value_t = BatchRules::default().dead_letter_retention, value_parser = span)]
    pub dead_letter_retention: Span,
}

impl EngineArgs {
    /// The retention of each rollup of [`ROLLUPS`], in its order.
    fn rollup_retentions(&self) -> [Span; ROLLUPS.len()] {
        [self.rollup_1h_retention, self.rollup_1d_retention]
    }

    /// The resolutions kept: the window and the rollups it divides (those it does not are
    /// logged and left out).
    pub fn resolutions(&self) -> Resolutions {
        let base = Resolution {
            span: self.window,
            retention: self.window_retention,
        };
        let rollups = ROLLUPS
            .iter()
            .zip(self.rollup_retentions())
            .map(|(r, retention)| Resolution { retention, ..*r });
        let (kept, left_out) = Resolutions::new(base, rollups);
        for r in left_out {
            tracing::warn!(window = %self.window, rollup = %r.name(),
                "the window does not divide this rollup's span: it is not kept");
        }
        kept
    }

    pub fn config(&self) -> EngineConfig {
        EngineConfig {
            watermark_delay: self.watermark_delay,
            raw_ttl: self.raw_ttl,
            max_ahead: self.max_ahead,
            dedup_horizon: self.dedup_horizon,
            dedup_capacity: self.dedup_capacity,
            rules: BatchRules {
                resolutions: self.resolutions(),
                severities_cap: usize::try_from(self.severities_cap).unwrap_or(usize::MAX),
                late_retention: self.late_retention,
                dead_letter_retention: self.dead_letter_retention,
                alerting: Default::default(),
            },
        }
    }
}

/// Batching and the console query.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Most records per store batch (one SQLite transaction; on DynamoDB, the requests of one write).
    #[arg(long, env = "CITYSTREAM_MAX_BATCH", default_value_t = RuntimeConfig::default().max_batch as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_batch: u64,
    /// Longest wait for more records once a batch has begun (default: the store's own, 5ms on
    /// SQLite; 1s on DynamoDB, which bills every write, so that a batch adds once to each
    /// window and counter).
    #[arg(long, env = "CITYSTREAM_LINGER", value_parser = humantime::parse_duration)]
    pub linger: Option<Duration>,
    /// Print a live table of counts by city × type × severity (query 4).
    #[arg(long, env = "CITYSTREAM_CONSOLE")]
    pub console: bool,
    /// How often the console table is printed.
    #[arg(long, env = "CITYSTREAM_CONSOLE_INTERVAL", default_value_t = Human::from(Duration::from_secs(5)), value_parser = positive_duration)]
    pub console_interval: Human,
}

impl RuntimeArgs {
    /// The runtime's settings for a store that takes batches as `store` says.
    pub fn config(&self, store: Properties) -> RuntimeConfig {
        RuntimeConfig {
            max_batch: usize::try_from(self.max_batch).unwrap_or(usize::MAX),
            linger: self.linger.unwrap_or(store.linger),
            console: self.console.then_some(*self.console_interval),
        }
    }
}

/// Where results are kept.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Store backend.
    #[arg(long, env = "CITYSTREAM_STORE", value_enum, default_value_t = Backend::Sqlite)]
    pub store: Backend,
    #[command(flatten)]
    pub dynamo: DynamoArgs,
    /// Directory of the embedded SQLite store (and of the locks and journal on every store).
    #[arg(long, env = "CITYSTREAM_DATA_DIR", default_value = "./citystream-data")]
    pub data_dir: PathBuf,
    /// How often expired rows are purged: raw events with their alerts, windows, late events
    /// and dead letters.
    #[arg(long, env = "CITYSTREAM_PURGE_INTERVAL", default_value_t = Human::from(Duration::from_secs(60)), value_parser = positive_duration)]
    pub purge_interval: Human,
    /// Longest a store read may take before it fails (the API answers 503).
    #[arg(long, env = "CITYSTREAM_STORE_READ_TIMEOUT", default_value_t = Human::from(Deadlines::default().read), value_parser = positive_duration)]
    pub store_read_timeout: Human,
    /// Longest a batch write may take before it fails and is retried.
    #[arg(long, env = "CITYSTREAM_STORE_WRITE_TIMEOUT", default_value_t = Human::from(Deadlines::default().write), value_parser = positive_duration)]
    pub store_write_timeout: Human,
}

impl StoreArgs {
    pub fn config(&self) -> StoreConfig {
        StoreConfig {
            backend: self.store,
            data_dir: self.data_dir.clone(),
            dynamo: self.dynamo.config(),
            deadlines: Deadlines {
                read: *self.store_read_timeout,
                write: *self.store_write_timeout,
            },
            durability: Durability::default(),
        }
    }
}

/// The REST API.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Address the API listens on (port 0 picks a free port).
    #[arg(long, env = "CITYSTREAM_LISTEN", default_value = "0.0.0.0:8082")]
    pub listen: SocketAddr,
    /// Most connections served at once; one more is answered 503 at once and closed.
    #[arg(long, env = "CITYSTREAM_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Longest a client may take to send a request's headers, also when idle between requests.
    #[arg(long, env = "CITYSTREAM_HEADER_TIMEOUT", default_value_t = Human::from(Limits::default().header_timeout), value_parser = positive_duration)]
    pub header_timeout: Human,
    /// Longest a request may take to be answered (503 after it).
    #[arg(long, env = "CITYSTREAM_REQUEST_TIMEOUT", default_value_t = Human::from(Limits::default().request_timeout), value_parser = positive_duration)]
    pub request_timeout: Human,
    /// A connection on which no byte moves either way for this long is closed.
    #[arg(long, env = "CITYSTREAM_IDLE_TIMEOUT", default_value_t = Human::from(Limits::default().idle_timeout), value_parser = positive_duration)]
    pub idle_timeout: Human,
    /// Reads need a key with the `read` scope (or `admin`); without it they are open, as the
    /// seed's API is. Sending events always needs an `ingest` key.
    #[arg(long, env = "CITYSTREAM_REQUIRE_AUTH")]
    pub require_auth: bool,
    /// Largest body of `POST /api/v1/events` as sent, in bytes (compressed, when it is).
    #[arg(long, env = "CITYSTREAM_INGEST_MAX_BODY", default_value_t = IngestLimits::default().max_body, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub ingest_max_body: usize,
    /// Largest body of `POST /api/v1/events` once decompressed, in bytes.
    #[arg(long, env = "CITYSTREAM_INGEST_MAX_DECODED", default_value_t = IngestLimits::default().max_decoded, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub ingest_max_decoded: usize,
    /// Most events in one `POST /api/v1/events`.
    #[arg(long, env = "CITYSTREAM_INGEST_MAX_EVENTS", default_value_t = IngestLimits::default().max_events, value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|n| n as usize))]
    pub ingest_max_events: usize,
    /// Most `POST /api/v1/events` bodies read and checked at once (one more: 503 with
    /// Retry-After); requests waiting for their events to be stored do not count.
    #[arg(long, env = "CITYSTREAM_INGEST_CONCURRENCY", default_value_t = IngestLimits::default().concurrency, value_parser = clap::value_parser!(u32).range(1..=4096).map(|n| n as usize))]
    pub ingest_concurrency: usize,
    /// Most MiB of windows kept rendered as JSON for `/api/v1/aggregations` (0: none); a
    /// window is rendered again only when its count has moved.
    #[arg(long, env = "CITYSTREAM_WINDOW_CACHE_MIB", default_value_t = (crate::api::rendered::DEFAULT_BYTES >> 20) as u32, value_parser = clap::value_parser!(u32).range(0..=65_536))]
    pub window_cache_mib: u32,
    /// Most MiB of whole `/api/v1/aggregations` answers kept (0: none), each served again
    /// while the city's windows are unchanged, for at most a second.
    #[arg(long, env = "CITYSTREAM_ANSWER_CACHE_MIB", default_value_t = (crate::api::answers::DEFAULT_BYTES >> 20) as u32, value_parser = clap::value_parser!(u32).range(0..=65_536))]
    pub answer_cache_mib: u32,
}

impl ApiArgs {
    pub fn ingest_limits(&self) -> IngestLimits {
        IngestLimits {
            max_body: self.ingest_max_body,
            max_decoded: self.ingest_max_decoded,
            max_events: self.ingest_max_events,
            concurrency: self.ingest_concurrency,
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections as usize,
            header_timeout: *self.header_timeout,
            request_timeout: *self.request_timeout,
            idle_timeout: *self.idle_timeout,
        }
    }
}

/// One event a day, at the slowest.
const MIN_RATE: f64 = 1.0 / 86_400.0;
/// Ten million events a second, at the fastest.
const MAX_RATE: f64 = 10_000_000.0;

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (MIN_RATE..=MAX_RATE).contains(&r) => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate from {MIN_RATE} to {MAX_RATE} events per second"
        )),
    }
}

fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{s}` is not a share between 0 and 1")),
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

fn positive_span(s: &str) -> Result<Span, String> {
    match span(s)? {
        d if d.as_millis() >= 1 => Ok(d),
        _ => Err(format!("`{s}` must be at least 1ms")),
    }
}

fn duration(s: &str) -> Result<Human, String> {
    humantime::parse_duration(s)
        .map(Human::from)
        .map_err(|e| format!("`{s}`: {e} (e.g. 0s, 30s, 2m)"))
}

fn positive_duration(s: &str) -> Result<Human, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d.into()),
        Ok(_) => Err(format!("`{s}` must be longer than zero")),
        Err(e) => Err(format!("`{s}`: {e} (e.g. 500ms, 10s)")),
    }
}

fn span(s: &str) -> Result<Span, String> {
    Span::parse(s)
}

fn rfc3339(s: &str) -> Result<EventTime, String> {
    EventTime::parse_rfc3339(s).map_err(|e| format!("`{s}`: {e} (e.g. 2026-11-25T08:00:00Z)"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_follow_the_seed() {
        let cli = Cli::try_parse_from(["citystream", "up"]).unwrap();
        let Command::Up(up) = cli.command else {
            panic!("up expected")
        };
        assert_eq!(up.engine.config(), EngineConfig::default());
        assert_eq!(up.generator.rate, 0.2);
        assert_eq!(up.api.listen.port(), 8082);
        assert!(Cli::try_parse_from(["citystream", "up", "--rate", "0"]).is_err());
        assert!(Cli::try_parse_from(["citystream", "up", "--late", "2"]).is_err());
        assert!(Cli::try_parse_from(["citystream", "up", "--window", "0s"]).is_err());
        assert!(Cli::try_parse_from(["citystream", "up", "--rate", "1e-20"]).is_err());
    }
}
