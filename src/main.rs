//! The `citystream` binary: parse the configuration, set up logs and metrics, run one role.

use citystream::app;
use citystream::config::{Cli, Command};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    // At least two workers, also on one core: a read stalled by the disk may hold one (see
    // `store::sqlite`), never the last.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.max(2))
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    citystream::model::EventType::configure(&cli.event_types)
        .map_err(|e| anyhow::anyhow!("--event-types: {e}"))?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
        .ok();

    match cli.command {
        Command::Up(args) => app::up(args, metrics).await,
        Command::Produce(args) => app::produce(args, metrics).await,
        Command::Process(args) => app::process(args, metrics).await,
        Command::Serve(args) => app::serve(args, metrics).await,
        Command::Init(args) => app::init(args).await,
        Command::Destroy(args) => app::destroy(args).await,
        Command::Redeliver(args) => app::redeliver(args).await,
        Command::Keys(command) => app::keys(command).await,
        Command::Send(args) => app::send(args).await,
        Command::Bench(args) => app::bench(args).await,
    }
}
