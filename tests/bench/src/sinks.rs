//! `--postgres URL`: the table sinks' rows. The sample events go through
//! filter-heartbeats into a PostgreSQL table (a fresh one per row, created
//! by the sink from the spec's schema), at-least-once and exactly-once, as
//! one task (`parallelism: 1`, the "from one task").
//!
//! **What is timed**: the pipeline run in-process until caught up (its start
//! included), against rows written (`rows/s`); and the sink alone: rows
//! written over the time spent inside its transactions (first statement to
//! commit), which is what the database and the sink's encoding cost.

use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use sluice::cli::kafka_tools::SampleOptions;

use crate::BenchArgs;
use crate::measure::{self, Machine};
use crate::report::thousands;
use crate::setup::{self, Modules, PipelineParams};
use crate::throughput::run_pipeline;

pub(crate) fn bench(args: &BenchArgs, url: &str) -> anyhow::Result<()> {
    let modules = Modules::find(&args.modules)?;
    let machine = Machine::read();
    let id = setup::run_id();
    let brokers = args.brokers.as_str();
    let input = format!("bench-{id}-events");
    let options = SampleOptions {
        count: args.records,
        users: args.users,
        ..SampleOptions::default()
    };
    sluice::cli::kafka_tools::create_topics(brokers, &[&input], args.partitions)?;
    let produced = setup::produce_events(brokers, &input, &options)?;
    progress!("produced {} events to {input}", produced.records);
    let dir = std::env::temp_dir().join(format!("sluice-bench-{id}"));
    let mut lines = vec![
        format!(
            "PostgreSQL output, {} events (filter-heartbeats, one task), {}",
            thousands(args.records),
            machine.describe(&measure::loadavg())
        ),
        String::new(),
        "| delivery | rows written | seconds | rows/s end to end | transactions | sink alone rows/s |"
            .to_owned(),
        "|---|---:|---:|---:|---:|---:|".to_owned(),
    ];
    let topics = vec![input.clone()];
    let mut rows = Vec::new();
    for exactly_once in [false, true] {
        let name = if exactly_once { "eos" } else { "alo" };
        let table = format!("bench_{}_{name}", id.replace('-', "_"));
        let (output, dead_letter) = (
            format!("bench-{id}-{name}-out"),
            format!("bench-{id}-{name}-dlq"),
        );
        let checkpoints = dir.join(name);
        let params = PipelineParams {
            name: format!("bench-postgres-{name}"),
            brokers,
            consumer: &args.consumer,
            producer: &args.producer,
            input: &input,
            output,
            dead_letter,
            transform: setup::transform(&modules.filter_heartbeats),
            batch: json!({ "max_records": args.batch_records, "max_wait": "20ms" }),
            exactly_once: exactly_once.then_some(checkpoints.as_path()),
            parallelism: 1,
        };
        let (spec, _) = setup::spec(&params)?;
        let spec = with_postgres(spec, url, &table)?;
        let started = Instant::now();
        let summary = run_pipeline(&spec)?;
        let seconds = started.elapsed().as_secs_f64();
        let stats = summary
            .postgres
            .get("default")
            .context("the run wrote nothing to PostgreSQL")?;
        let alone = stats.rows_written as f64 / (stats.commit_us_total as f64 / 1e6);
        progress!("{name}: {} rows in {seconds:.2} s", stats.rows_written);
        rows.push(json!({
            "delivery": if exactly_once { "exactly-once" } else { "at-least-once" },
            "table": table,
            "rows_written": stats.rows_written,
            "rows_refused": stats.rows_refused,
            "seconds": seconds,
            "rows_per_s": stats.rows_written as f64 / seconds,
            "transactions": stats.transactions,
            "sink_alone_rows_per_s": alone,
        }));
        lines.push(format!(
            "| {} | {} | {seconds:.2} | {} | {} | {} |",
            if exactly_once {
                "exactly-once"
            } else {
                "at-least-once"
            },
            thousands(stats.rows_written),
            thousands((stats.rows_written as f64 / seconds) as u64),
            thousands(stats.transactions),
            thousands(alone as u64),
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !args.keep_topics {
        setup::delete_topics(brokers, &topics);
    }
    let report = json!({ "machine": machine, "input": produced, "rows": rows });
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write {}", args.json.display()))?;
    println!("{}", lines.join("\n"));
    Ok(())
}

/// `spec` with its default output written to `table` (created from the
/// sample event's fields) instead of a topic.
fn with_postgres(
    spec: sluice::spec::PipelineSpec,
    url: &str,
    table: &str,
) -> anyhow::Result<sluice::spec::PipelineSpec> {
    let mut spec = spec;
    let output = spec
        .outputs
        .get_mut("default")
        .context("the bench spec has a default output")?;
    output.topic = None;
    output.postgres = Some(serde_json::from_value(json!({
        "url": url,
        "table": table,
        "schema": [
            { "name": "event_id", "type": "string" },
            { "name": "user_id", "type": "string" },
            { "name": "event_type", "type": "string" },
            { "name": "timestamp", "type": "timestamp_ms" },
            { "name": "amount", "type": "float64" },
        ],
    }))?);
    Ok(spec)
}
