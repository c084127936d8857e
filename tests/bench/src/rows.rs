//! The bench's phases: the throughput rows one after another, then the
//! latency phase (run first, see below), and the report.

use std::path::Path;

use anyhow::Context;
use serde_json::json;

use sluice::cli::kafka_tools::{self, SampleOptions};

use crate::measure::{self, Machine, Meter};
use crate::report::{LatencyRow, RAW, Report, Row};
use crate::setup::{self, Input, Modules, PipelineParams};
use crate::throughput::{self, BatchProgress, steady_rate};
use crate::{BenchArgs, STEADY, latency, notes};

/// What a throughput row runs.
enum Work {
    /// The spec whose source is copied (its steps are not run).
    Raw(Box<sluice::spec::PipelineSpec>),
    /// The spec, and its text when the host's own memory is measured too
    /// (in a `sluice run` process of its own).
    Pipeline(Box<sluice::spec::PipelineSpec>, Option<String>),
}

pub(crate) fn bench(
    args: &BenchArgs,
    dispatch: &tracing::Dispatch,
    progress: &BatchProgress,
) -> anyhow::Result<()> {
    let modules = Modules::find(&args.modules)?;
    let sluice = args.sluice_binary()?;
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

    let (events, readings) = produce_inputs(args, &id)?;

    let checkpoints = json_dir.join(format!("checkpoints-{id}"));
    let batch = json!({ "max_records": args.batch_records });
    let spec = |slug: &str, input: &Input, transform, exactly_once: Option<&Path>| {
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
            parallelism: args.parallelism,
        })
    };
    let pipeline = |slug: &str, input: &Input, transform, exactly_once: Option<&Path>| {
        spec(slug, input, transform, exactly_once).map(|(spec, text)| {
            // Exactly-once rows resume from their checkpoints: not run twice.
            let alone = exactly_once.is_none().then_some(text);
            Work::Pipeline(Box::new(spec), alone)
        })
    };
    // The raw copy reads with the filter's spec (under a group of its own);
    // only its source settings count.
    let raw = |slug: &str, input: &Input| {
        spec(
            slug,
            input,
            setup::transform(&modules.filter_heartbeats),
            None,
        )
        .map(|(spec, _)| Work::Raw(Box::new(spec)))
    };
    let plans: Vec<(&str, &str, &Input, Work)> = vec![
        (RAW, "raw", &events, raw("raw", &events)?),
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
        (
            RAW,
            "raw-readings",
            &readings,
            raw("raw-readings", &readings)?,
        ),
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
            Work::Raw(spec) => {
                let producer = throughput::raw_producer(brokers, &out, &args.producer)?;
                let meter = Meter::start(args.broker_pid);
                let copied = throughput::raw_passthrough(&producer, &spec, &out)?;
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
                    Some(text) => {
                        Some(measure::host_alone_peak_rss_mib(&sluice, &text, &json_dir)?)
                    }
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
        setup::delete_topics(brokers, &[events.topic.clone(), readings.topic.clone()]);
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

/// The bench's two inputs, in fresh topics of run `id`: the sample events
/// and the readings made from them (see the crate docs).
pub(crate) fn produce_inputs(args: &BenchArgs, id: &str) -> anyhow::Result<(Input, Input)> {
    let brokers = args.brokers.as_str();
    let (events_topic, readings_topic) =
        (format!("bench-{id}-events"), format!("bench-{id}-readings"));
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
    Ok((events, readings))
}

/// The steady-state rate of a row: between 10% and 90% of its records done.
fn steady(timeline: &[(std::time::Instant, u64)], records: u64) -> Option<f64> {
    steady_rate(timeline, records, STEADY.0, STEADY.1)
}

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
        parallelism: args.parallelism,
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
