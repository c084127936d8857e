//! `sluice-bench`: a reproducible end-to-end benchmark against a running
//! broker, in one invocation, on one input. A program of its own, so that
//! the production `sluice` binary carries none of it; it runs the host as a
//! library, in-process, and the `sluice` binary beside it (or `--sluice`)
//! for the host-alone memory figure.
//!
//! 1. Creates fresh topics (suffixed with a run id) and produces the sample
//!    event stream (`kafka_tools::sample_record`, record timestamps = event
//!    times), waiting until every record is acknowledged. strategy-map reads
//!    `{strategy, value, ts}` readings rather than events, so a second input
//!    is made record for record from the same stream (strategy = event
//!    type, value = amount, ts = timestamp; same key and record timestamp).
//! 2. Throughput rows, one after another, each reading its whole input from
//!    the beginning with a fresh consumer group into fresh output topics:
//!    - `raw passthrough`: the host's batched reader (`KafkaSource`, with a
//!      pipeline's consumer settings) -> a plain `ThreadedProducer` with the
//!      host's producer settings, started (one delivery) before the clock
//!      starts; the baseline, one per input: no Wasm, no state, nothing
//!      committed;
//!    - `filter-heartbeats`, `event-window-agg` (tumbling 1m, 5 s bound,
//!      1 h idle, append) on events, `strategy-map` and `strategy-map
//!      exactly-once` (checkpoints every 1 s) on readings: each a real
//!      `sluice::pipeline::run` with `until_caught_up`, in-process.
//!
//!    **What is timed**, two ways per row:
//!    - `seconds`, records/s and MB/s (10^6 bytes of input key + value):
//!      one wall-clock span, from just before the row creates its consumer
//!      (baseline) or calls `pipeline::run` (pipelines) until every output
//!      record is acknowledged and the call returned. Every row includes its
//!      consumer-group join and first fetch (for the baseline also reported
//!      as `first_record_s`); pipelines also include their whole start (Wasm
//!      runtime and modules from wasmtime's compilation cache, also measured
//!      apart as `wasm_start_s`; their idempotent producer getting its id,
//!      ~1 s with librdkafka, during which the run waits for its first
//!      acknowledgements) and their final commit or checkpoint and flush.
//!    - steady records/s: the rate between 10% and 90% of the records done,
//!      i.e. without start and end. Done = delivery acknowledged (baseline),
//!      or batch processed (pipelines: the host keeps only a few batches
//!      awaiting acknowledgement), from the host's per-batch `batch
//!      processed` debug event, which the bench's log layer records.
//! 3. Latency: a pipeline (filter-heartbeats, `batch.max_wait` =
//!    `--max-wait`) runs normally while a generator produces at a fixed rate,
//!    stamping each record with its send time (ms), and a consumer of the
//!    output measures arrival - timestamp (and the same on the input topic,
//!    for the broker's share).
//! 4. Prints a Markdown table to stdout (progress goes to stderr) and writes
//!    the same as JSON.
//!
//! Instead of all that, `--scaling 1,2,4,8` measures pipelines at several
//! worker counts in-process, and `--processes 1,2,4` one pipeline run by
//! several `sluice run` processes sharing its consumer group.
//!
//! Logs: the pipelines log at `warn` unless `RUST_LOG` says otherwise, so
//! that the table stays readable.

mod latency;
mod measure;
mod notes;
mod report;
mod setup;
mod throughput;

/// Facts about the machine, for the figures of every benchmark (the
/// criterion benches of `sluice-tests` report them too).
pub use measure::{Machine, loadavg};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use throughput::BatchProgress;

/// The command line of `sluice-bench`.
#[derive(Debug, Parser)]
#[command(
    name = "sluice-bench",
    version,
    about = "Benchmark Sluice end to end against a running broker: a raw consume -> produce \
             copy, then example pipelines on the same input, then latency at a fixed load. \
             Prints a Markdown table and writes JSON."
)]
pub struct Cli {
    #[command(flatten)]
    pub args: BenchArgs,
}

/// Entry point of the `sluice-bench` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Options of `sluice-bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Bootstrap servers of the broker to measure against.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Records in the input.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Distinct keys (users) of the sample events.
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Partitions of every topic the bench creates.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// `batch.max_records` of the throughput pipelines.
    #[arg(long, default_value_t = 1000)]
    pub batch_records: usize,
    /// Directory of filter_heartbeats.wasm, strategy_map.wasm and
    /// event_window_agg.wasm.
    #[arg(long, default_value = "target/wasm32-wasip2/guest")]
    pub modules: PathBuf,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/bench/e2e.json")]
    pub json: PathBuf,
    /// Offered load of the latency phase, in records per second.
    #[arg(long, default_value_t = 10_000)]
    pub latency_rate: u64,
    /// Duration of the latency phase, in seconds (0: skip it).
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// `linger.ms` of the latency phase's load generator. Records are
    /// stamped before it, so it counts in every latency measured; but
    /// below 5 ms librdkafka's broker thread spins (~0.6-0.75 of a core at
    /// 10,000 records/s with 1-2 ms, against ~0.15 at 5 ms), which on a
    /// small machine takes CPU from the broker and the pipeline measured.
    #[arg(long, default_value_t = 5)]
    pub generator_linger_ms: u64,
    /// `batch.max_wait` of the latency pipeline.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    pub max_wait: Duration,
    /// An extra librdkafka consumer property for every row, raw passthrough
    /// and pipelines alike (a pipeline's `kafka.consumer`); repeatable.
    #[arg(long = "consumer", value_name = "KEY=VALUE", value_parser = setup::parse_property)]
    pub consumer: Vec<(String, String)>,
    /// An extra librdkafka producer property for every row (a pipeline's
    /// `kafka.producer`); repeatable.
    #[arg(long = "producer", value_name = "KEY=VALUE", value_parser = setup::parse_property)]
    pub producer: Vec<(String, String)>,
    /// `parallelism` of every pipeline row (1: each runs whole).
    #[arg(long, default_value_t = 1)]
    pub parallelism: usize,
    /// Instead of the rows above: the scaling table, each pipeline
    /// (filter-heartbeats, a 1-minute window per user, strategy-map and
    /// strategy-map exactly-once) at each of these worker counts, e.g.
    /// `1,2,4,8` (with `--partitions 16`). The window is `count-sum` keyed
    /// by the records' Kafka key: build it with `cargo build --profile
    /// guest --target wasm32-wasip2 -p count-sum`.
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub scaling: Vec<usize>,
    /// Instead of the rows above: the processes table, filter-heartbeats
    /// (at-least-once, and exactly-once with a shared checkpoint directory)
    /// run by each of these numbers of `sluice run --until-caught-up`
    /// processes sharing the pipeline's consumer group, e.g. `1,2,4` (with
    /// `--partitions 16`); each process runs `--parallelism` workers, at
    /// least 2 (so that its tasks are group members).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "K,...",
        conflicts_with = "scaling"
    )]
    pub processes: Vec<usize>,
    /// Instead of the rows above: the PostgreSQL output's rows, the sample
    /// events through filter-heartbeats into a new table of the database
    /// at this URL (at-least-once and exactly-once, one task).
    #[arg(long, value_name = "URL", conflicts_with_all = ["scaling", "processes", "delta"])]
    pub postgres: Option<String>,
    /// Instead of the rows above: the Delta output's rows, the sample
    /// events through filter-heartbeats into a new Delta table below this
    /// directory (at-least-once and exactly-once, one task).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["scaling", "processes"])]
    pub delta: Option<PathBuf>,
    /// Pid of the broker, to report its CPU time per row too.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Leave the bench's topics on the broker (default: delete them).
    #[arg(long)]
    pub keep_topics: bool,
    /// The `sluice` binary whose own memory is measured, running each
    /// pipeline again as `sluice run --until-caught-up` (default: `sluice`
    /// next to this program).
    #[arg(long, value_name = "PATH")]
    pub sluice: Option<PathBuf>,
}

impl BenchArgs {
    /// The `sluice` binary to run: `--sluice`, or the one beside this
    /// program (cargo builds both into the same directory).
    pub fn sluice_binary(&self) -> anyhow::Result<PathBuf> {
        let path = match &self.sluice {
            Some(path) => path.clone(),
            None => std::env::current_exe()?.with_file_name("sluice"),
        };
        anyhow::ensure!(
            path.is_file(),
            "{} not found: the host's own memory is measured with the `sluice` binary; build it \
             (`cargo build --release -p sluice`) or pass --sluice PATH",
            path.display()
        );
        Ok(path)
    }
}

/// Runs the bench with the pipelines' logs at `warn` (or `RUST_LOG`).
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let progress = BatchProgress::default();
    let batches = tracing_subscriber::filter::Targets::new()
        .with_target("sluice::pipeline::runner", tracing::Level::DEBUG);
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .with(progress.clone().with_filter(batches));
    let dispatch = tracing::Dispatch::new(subscriber);
    tracing::dispatcher::with_default(&dispatch, || {
        if let Some(url) = &args.postgres {
            sinks::bench(args, sinks::Table::Postgres(url))
        } else if let Some(dir) = &args.delta {
            sinks::bench(args, sinks::Table::Delta(dir))
        } else if !args.processes.is_empty() {
            processes::bench(args)
        } else if args.scaling.is_empty() {
            rows::bench(args, &dispatch, &progress)
        } else {
            scaling::bench(args, &progress)
        }
    })
}

macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[bench] {}", format_args!($($arg)*)) };
}

mod processes;
mod rows;
mod scaling;
mod sinks;

/// The part of a row the steady-state rate covers, as fractions of its records.
const STEADY: (f64, f64) = (0.1, 0.9);
