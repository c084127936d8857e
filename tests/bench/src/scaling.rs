//! `--scaling 1,2,4,8`: how a pipeline grows with its workers. Each
//! pipeline (filter-heartbeats, a 1-minute window per user, strategy-map,
//! strategy-map exactly-once) runs over the same input once per worker
//! count, with a fresh consumer group, output topics and checkpoint
//! directory each time; a row is timed like a throughput row of the main
//! table (whole run, and steady between 10% and 90% of the records).

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use serde_json::json;

use sluice::cli::kafka_tools;

use crate::measure::{self, Machine, Meter};
use crate::setup::{self, Input, Modules, PipelineParams};
use crate::throughput::{self, BatchProgress, steady_rate};
use crate::{BenchArgs, STEADY};

/// One pipeline at one worker count.
#[derive(Debug, Clone, Serialize)]
struct Point {
    pipeline: &'static str,
    workers: usize,
    records: u64,
    seconds: f64,
    records_per_s: f64,
    steady_records_per_s: Option<f64>,
    /// Host CPU (this process, all threads) per record, in µs.
    cpu_us_per_record: Option<f64>,
    /// records/s over the same pipeline's with one worker.
    speedup: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Scaling {
    machine: Machine,
    loadavg_end: String,
    config: serde_json::Value,
    points: Vec<Point>,
}

pub(crate) fn bench(args: &BenchArgs, progress: &BatchProgress) -> anyhow::Result<()> {
    let modules = Modules::find(&args.modules)?;
    let count_sum = setup::count_sum(&args.modules)?;
    let machine = Machine::read();
    let id = setup::run_id();
    let brokers = args.brokers.as_str();
    let topic = |suffix: &str| format!("bench-{id}-{suffix}");
    let json_dir = args.json.parent().unwrap_or(Path::new(".")).to_path_buf();
    progress!(
        "scaling run {id} against {brokers}: {} records, {} partitions, workers {:?}",
        args.records,
        args.partitions,
        args.scaling
    );
    let (events, readings) = crate::rows::produce_inputs(args, &id)?;
    let pipelines: [(&str, &Input, serde_json::Value, bool); 4] = [
        (
            "filter-heartbeats",
            &events,
            setup::transform(&modules.filter_heartbeats),
            false,
        ),
        (
            "window 1m per user (count-sum)",
            &events,
            setup::window_aggregate(&count_sum),
            false,
        ),
        (
            "strategy-map",
            &readings,
            setup::transform(&modules.strategy_map),
            false,
        ),
        (
            "strategy-map exactly-once",
            &readings,
            setup::transform(&modules.strategy_map),
            true,
        ),
    ];
    let mut points = Vec::new();
    for (p, (pipeline, input, transform, exactly_once)) in pipelines.into_iter().enumerate() {
        let mut one_worker = None;
        for &workers in &args.scaling {
            let slug = format!("s{p}-w{workers}");
            let (out, dlq) = (topic(&format!("{slug}-out")), topic(&format!("{slug}-dlq")));
            kafka_tools::create_topics(brokers, &[&out, &dlq], args.partitions)?;
            let checkpoints = json_dir.join(format!("checkpoints-{id}-{slug}"));
            let (spec, _) = setup::spec(&PipelineParams {
                name: format!("bench-{id}-{slug}"),
                brokers,
                consumer: &args.consumer,
                producer: &args.producer,
                input: &input.topic,
                output: out.clone(),
                dead_letter: dlq.clone(),
                transform: transform.clone(),
                batch: json!({ "max_records": args.batch_records }),
                exactly_once: exactly_once.then_some(checkpoints.as_path()),
                parallelism: workers,
            })?;
            progress.take();
            let meter = Meter::start(args.broker_pid);
            let summary = throughput::run_pipeline(&spec)?;
            let usage = meter.finish();
            let records_per_s = summary.records_in as f64 / usage.wall_s.max(f64::EPSILON);
            if workers == 1 {
                one_worker = Some(records_per_s);
            }
            let point = Point {
                pipeline,
                workers,
                records: summary.records_in,
                seconds: usage.wall_s,
                records_per_s,
                steady_records_per_s: steady_rate(
                    &progress.take(),
                    summary.records_in,
                    STEADY.0,
                    STEADY.1,
                ),
                cpu_us_per_record: usage
                    .cpu_s
                    .map(|cpu| cpu * 1e6 / summary.records_in.max(1) as f64),
                speedup: one_worker.map(|one| records_per_s / one),
            };
            progress!(
                "{pipeline}, {workers} workers: {} records in {:.2} s = {:.0} records/s",
                point.records,
                point.seconds,
                point.records_per_s
            );
            points.push(point);
            let _ = std::fs::remove_dir_all(&checkpoints);
            if !args.keep_topics {
                setup::delete_topics(brokers, &[out, dlq]);
            }
        }
    }
    if !args.keep_topics {
        setup::delete_topics(brokers, &[events.topic.clone(), readings.topic.clone()]);
    }
    let report = Scaling {
        machine,
        loadavg_end: measure::loadavg(),
        config: json!({
            "run_id": id,
            "records": args.records,
            "users": args.users,
            "partitions": args.partitions,
            "workers": args.scaling,
            "batch": { "max_records": args.batch_records },
            "consumer": args.consumer.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        }),
        points,
    };
    print!("{}", markdown(&report));
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", args.json.display()))?;
    progress!("wrote {}", args.json.display());
    Ok(())
}

fn markdown(report: &Scaling) -> String {
    let mut out = format!(
        "machine: {}\n{} records over {} partitions\n\n\
         | pipeline | workers | records/s | vs 1 worker | steady records/s | host CPU µs/record |\n\
         |---|--:|--:|--:|--:|--:|\n",
        report.machine.describe(&report.loadavg_end),
        report.config["records"],
        report.config["partitions"],
    );
    for p in &report.points {
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("n/a".to_owned(), |v| format!("{v:.digits$}"));
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} |\n",
            p.pipeline,
            p.workers,
            p.records_per_s,
            opt(p.speedup, 2),
            opt(p.steady_records_per_s, 0),
            opt(p.cpu_us_per_record, 2),
        ));
    }
    out
}
