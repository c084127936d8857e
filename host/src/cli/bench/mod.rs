//! `sluice bench`: a reproducible end-to-end benchmark against a running
//! broker, in one invocation, on one input.
//!
//! 1. Creates fresh topics (suffixed with a run id) and produces the sample
//!    event stream (`kafka_tools::sample_record`, record timestamps = event
//!    times), waiting until every record is acknowledged. strategy-map reads
//!    `{strategy, value, ts}` readings rather than events, so a second input
//!    is made record for record from the same stream (strategy = event
//!    type, value = amount, ts = timestamp; same key and record timestamp).
//! 2. Throughput rows, one after another, each reading its whole input from
//!    the beginning with a fresh consumer group into fresh output topics:
//!    - `raw passthrough`: a plain rdkafka `BaseConsumer` -> `ThreadedProducer`
//!      copy with the host's consumer and producer settings, its producer
//!      started (one delivery) before the clock starts; the baseline, one
//!      per input;
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
//! Logs: the pipelines log at `warn` unless `RUST_LOG` says otherwise, so
//! that the table stays readable.

mod latency;
mod measure;
mod notes;
mod report;
mod setup;
mod throughput;

pub use measure::{Machine, loadavg};

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::cli::kafka_tools::{self, SampleOptions};
use measure::Meter;
use report::{LatencyRow, RAW, Report, Row};
use setup::{Input, Modules, PipelineParams};
use throughput::{BatchProgress, steady_rate};

/// Options of `sluice bench`.
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
    /// Pid of the broker, to report its CPU time per row too.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Leave the bench's topics on the broker (default: delete them).
    #[arg(long)]
    pub keep_topics: bool,
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
    tracing::dispatcher::with_default(&dispatch, || bench(args, &dispatch, &progress))
}

macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[bench] {}", format_args!($($arg)*)) };
}

/// What a throughput row runs.
enum Work {
    Raw,
    /// The spec, and its text when the host's own memory is measured too
    /// (in a `sluice run` process of its own).
    Pipeline(Box<crate::spec::PipelineSpec>, Option<String>),
}

fn bench(
    args: &BenchArgs,
    dispatch: &tracing::Dispatch,
    progress: &BatchProgress,
) -> anyhow::Result<()> {
    let modules = Modules::find(&args.modules)?;
    let machine = Machine::read();
    let id = setup::run_id();
    let brokers = args.brokers.as_str();
    let topic = |suffix: &str| format!("bench-{id}-{suffix}");
    let json_dir = args.json.parent().unwrap_or(Path::new(".")).to_path_buf();
    progress!(
        "run {id} against {brokers}: {} records, {} partitions, {} users",
        args.records,
        args.partitions,
        args.users
    );

    // Latency first: the memory:// engine of the development broker gets
    // slower as it holds more records (its CPU at a fixed 10,000 records/s
    // grew run after run), and the throughput rows leave millions.
    let latency = if args.latency_seconds > 0 {
        Some(run_latency(args, &modules, &id, dispatch)?)
    } else {
        None
    };

    let (events_topic, readings_topic) = (topic("events"), topic("readings"));
    kafka_tools::create_topics(brokers, &[&events_topic, &readings_topic], args.partitions)?;
    let sample = SampleOptions {
        count: args.records,
        users: args.users,
        ..Default::default()
    };
    let events = setup::produce_events(brokers, &events_topic, &sample)?;
    progress!("produced {events_topic} in {:.2} s", events.produce_s);
    let readings = setup::produce_readings(brokers, &readings_topic, &sample)?;
    progress!("produced {readings_topic} in {:.2} s", readings.produce_s);

    let checkpoints = json_dir.join(format!("checkpoints-{id}"));
    let batch = json!({ "max_records": args.batch_records });
    let pipeline = |slug: &str, input: &Input, transform, exactly_once: Option<&Path>| {
        setup::spec(&PipelineParams {
            name: format!("bench-{id}-{slug}"),
            brokers,
            consumer: &args.consumer,
            producer: &args.producer,
            input: &input.topic,
            output: topic(&format!("{slug}-out")),
            dead_letter: topic(&format!("{slug}-dlq")),
            transform,
            batch: batch.clone(),
            exactly_once,
        })
        .map(|(spec, text)| {
            // Exactly-once rows resume from their checkpoints: not run twice.
            let alone = exactly_once.is_none().then_some(text);
            Work::Pipeline(Box::new(spec), alone)
        })
    };
    let plans: Vec<(&str, &str, &Input, Work)> = vec![
        (RAW, "raw", &events, Work::Raw),
        (
            "filter-heartbeats",
            "filter",
            &events,
            pipeline(
                "filter",
                &events,
                setup::transform(&modules.filter_heartbeats),
                None,
            )?,
        ),
        (
            "event-window-agg",
            "agg",
            &events,
            pipeline(
                "agg",
                &events,
                setup::window_aggregate(&modules.event_window_agg),
                None,
            )?,
        ),
        (RAW, "raw-readings", &readings, Work::Raw),
        (
            "strategy-map",
            "map",
            &readings,
            pipeline(
                "map",
                &readings,
                setup::transform(&modules.strategy_map),
                None,
            )?,
        ),
        (
            "strategy-map exactly-once",
            "map-eos",
            &readings,
            pipeline(
                "map-eos",
                &readings,
                setup::transform(&modules.strategy_map),
                Some(&checkpoints),
            )?,
        ),
    ];

    let mut rows = Vec::new();
    for (name, slug, input, work) in plans {
        let (out, dlq) = (topic(&format!("{slug}-out")), topic(&format!("{slug}-dlq")));
        kafka_tools::create_topics(brokers, &[&out, &dlq], args.partitions)?;
        let row = match work {
            Work::Raw => {
                let producer = throughput::raw_producer(brokers, &out, &args.producer)?;
                let meter = Meter::start(args.broker_pid);
                let copied = throughput::raw_passthrough(
                    &producer,
                    brokers,
                    &input.topic,
                    &out,
                    &format!("bench-{id}-{slug}"),
                    &args.consumer,
                )?;
                if copied.bytes != input.bytes {
                    progress!(
                        "warning: {name} read {} bytes of key + value, {} were produced",
                        copied.bytes,
                        input.bytes
                    );
                }
                Row {
                    outputs: copied.records,
                    first_record_s: Some(copied.first_record_s),
                    steady_records_per_s: steady(&copied.timeline, copied.records),
                    ..Row::new(name, input, copied.records, meter.finish())
                }
            }
            Work::Pipeline(spec, alone) => {
                let wasm_start_s = throughput::wasm_start_s(&spec)?;
                progress.take();
                let meter = Meter::start(args.broker_pid);
                let summary = throughput::run_pipeline(&spec)?;
                let row = Row::new(name, input, summary.records_in, meter.finish());
                let host_rss_mib = match alone {
                    Some(text) => Some(measure::host_alone_peak_rss_mib(&text, &json_dir)?),
                    None => None,
                };
                Row {
                    wasm_start_s: Some(wasm_start_s),
                    steady_records_per_s: steady(&progress.take(), summary.records_in),
                    host_rss_mib,
                    ..row.with_summary(summary)
                }
            }
        };
        progress!(
            "{name} ({}): {} records in {:.2} s = {:.0} records/s (steady: {:.0})",
            input.kind,
            row.records,
            row.seconds,
            row.records_per_s,
            row.steady_records_per_s.unwrap_or(f64::NAN)
        );
        rows.push(row);
        if !args.keep_topics {
            setup::delete_topics(brokers, &[out, dlq]);
        }
    }
    let _ = std::fs::remove_dir_all(&checkpoints);
    if !args.keep_topics {
        setup::delete_topics(brokers, &[events_topic, readings_topic]);
    }

    let mut report = Report {
        machine,
        loadavg_end: measure::loadavg(),
        config: json!({
            "run_id": id,
            "brokers": brokers,
            "records": args.records,
            "users": args.users,
            "partitions": args.partitions,
            "consumer": args.consumer.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "producer": args.producer.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "batch": { "max_records": args.batch_records, "max_bytes": "1 MiB", "max_wait_ms": 100 },
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "version": env!("CARGO_PKG_VERSION"),
        }),
        inputs: vec![events, readings],
        rows,
        comparisons: Vec::new(),
        latency,
        notes: Vec::new(),
    };
    report.compute_ratios();
    report.compare("strategy-map exactly-once", "strategy-map", 0.9);
    report.notes = notes::notes(&report, args);
    print!("{}", report.markdown());

    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", args.json.display()))?;
    progress!("wrote {}", args.json.display());
    Ok(())
}

/// The steady-state rate of a row: between 10% and 90% of its records done.
fn steady(timeline: &[(std::time::Instant, u64)], records: u64) -> Option<f64> {
    steady_rate(timeline, records, STEADY.0, STEADY.1)
}

/// The part of a row the steady-state rate covers, as fractions of its records.
const STEADY: (f64, f64) = (0.1, 0.9);

fn run_latency(
    args: &BenchArgs,
    modules: &Modules,
    id: &str,
    dispatch: &tracing::Dispatch,
) -> anyhow::Result<LatencyRow> {
    let topic = |suffix: &str| format!("bench-{id}-latency-{suffix}");
    let (input, output, dlq) = (topic("in"), topic("out"), topic("dlq"));
    kafka_tools::create_topics(
        args.brokers.as_str(),
        &[&input, &output, &dlq],
        args.partitions,
    )?;
    let (spec, _) = setup::spec(&PipelineParams {
        name: format!("bench-{id}-latency"),
        brokers: &args.brokers,
        consumer: &args.consumer,
        producer: &args.producer,
        input: &input,
        output: output.clone(),
        dead_letter: dlq.clone(),
        transform: setup::transform(&modules.filter_heartbeats),
        batch: json!({ "max_wait": humantime::format_duration(args.max_wait).to_string() }),
        exactly_once: None,
    })?;
    progress!(
        "latency: {} records/s for {} s, batch.max_wait {:?}",
        args.latency_rate,
        args.latency_seconds,
        args.max_wait
    );
    let meter = Meter::start(args.broker_pid);
    let params = latency::LatencyParams {
        brokers: &args.brokers,
        input: &input,
        output: &output,
        rate: args.latency_rate,
        seconds: args.latency_seconds,
        users: args.users,
        linger_ms: args.generator_linger_ms,
    };
    let latency = latency::run(&spec, &params, dispatch)?;
    let usage = meter.finish();
    progress!(
        "latency: end to end p50 {:?} ms, p99 {:?} ms over {} records",
        latency.end_to_end.p50_ms,
        latency.end_to_end.p99_ms,
        latency.end_to_end.measured
    );
    if !args.keep_topics {
        setup::delete_topics(&args.brokers, &[input, output, dlq]);
    }
    Ok(LatencyRow {
        max_wait_ms: args.max_wait.as_millis() as u64,
        seconds: args.latency_seconds,
        latency,
        usage,
    })
}
