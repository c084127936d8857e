//! `--postgres URL`, `--delta DIR`: the table sinks' rows. The sample events
//! go through filter-heartbeats into a PostgreSQL table or a Delta table (a
//! fresh one per row, created by the sink from the spec's schema),
//! at-least-once and exactly-once, as one task (`parallelism: 1`, the
//! issue's "from one task"), checkpointing every second.
//!
//! **What is timed**: the pipeline run in-process until caught up (its start
//! included), against rows written (`rows/s`); and the sink alone: rows
//! written over the time spent inside the sink (PostgreSQL: its
//! transactions, first statement to commit; Delta: encoding the rows into
//! files and the commits), which is what the sink and its store cost.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use sluice::cli::kafka_tools::SampleOptions;

use crate::BenchArgs;
use crate::measure::{self, Machine};
use crate::report::thousands;
use crate::setup::{self, Modules, PipelineParams};
use crate::throughput::run_pipeline;

/// Which table the bench writes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Table<'a> {
    /// A new table in the database at this URL.
    Postgres(&'a str),
    /// A new table below this directory.
    Delta(&'a Path),
}

pub(crate) fn bench(args: &BenchArgs, target: Table<'_>) -> anyhow::Result<()> {
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
    let (title, commits) = match target {
        Table::Postgres(_) => ("PostgreSQL", "transactions"),
        Table::Delta(_) => ("Delta", "commits"),
    };
    let mut lines = vec![
        format!(
            "{title} output, {} events (filter-heartbeats, one task), {}",
            thousands(args.records),
            machine.describe(&measure::loadavg())
        ),
        String::new(),
        format!(
            "| delivery | rows written | seconds | rows/s end to end | {commits} | sink alone rows/s |"
        ),
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
            name: format!("bench-{}-{name}", title.to_lowercase()),
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
        let table = match target {
            Table::Postgres(_) => table,
            Table::Delta(dir) => dir.join(&table).display().to_string(),
        };
        let spec = with_table(spec, target, &table, &checkpoints)?;
        let started = Instant::now();
        let summary = run_pipeline(&spec)?;
        let seconds = started.elapsed().as_secs_f64();
        let written = match target {
            Table::Postgres(_) => summary.postgres.get("default").map(|s| Written {
                rows: s.rows_written,
                refused: s.rows_refused,
                commits: s.transactions,
                sink_us: s.commit_us_total,
            }),
            Table::Delta(_) => summary.delta.get("default").map(|s| Written {
                rows: s.rows_written,
                refused: s.rows_refused,
                commits: s.commits,
                sink_us: s.write_us_total + s.commit_us_total,
            }),
        };
        let stats = written.with_context(|| format!("the run wrote nothing to {title}"))?;
        let alone = stats.rows as f64 / (stats.sink_us as f64 / 1e6);
        progress!("{name}: {} rows in {seconds:.2} s", stats.rows);
        rows.push(json!({
            "delivery": if exactly_once { "exactly-once" } else { "at-least-once" },
            "table": table,
            "rows_written": stats.rows,
            "rows_refused": stats.refused,
            "seconds": seconds,
            "rows_per_s": stats.rows as f64 / seconds,
            (commits): stats.commits,
            "sink_alone_rows_per_s": alone,
        }));
        lines.push(format!(
            "| {} | {} | {seconds:.2} | {} | {} | {} |",
            if exactly_once {
                "exactly-once"
            } else {
                "at-least-once"
            },
            thousands(stats.rows),
            thousands((stats.rows as f64 / seconds) as u64),
            thousands(stats.commits),
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

/// What a run wrote to its table.
struct Written {
    rows: u64,
    refused: u64,
    commits: u64,
    /// Time inside the sink, in microseconds.
    sink_us: u64,
}

/// `spec` with its default output written to `table` (created from the
/// sample event's fields) instead of a topic, checkpointed every second
/// in `checkpoints`.
fn with_table(
    spec: sluice::spec::PipelineSpec,
    target: Table<'_>,
    table: &str,
    checkpoints: &Path,
) -> anyhow::Result<sluice::spec::PipelineSpec> {
    let mut spec = spec;
    let schema = json!([
        { "name": "event_id", "type": "string" },
        { "name": "user_id", "type": "string" },
        { "name": "event_type", "type": "string" },
        { "name": "timestamp", "type": "timestamp_ms" },
        { "name": "amount", "type": "float64" },
    ]);
    if spec.checkpoint.is_none() {
        spec.checkpoint = Some(serde_json::from_value(
            json!({ "dir": checkpoints, "interval": "1s" }),
        )?);
    }
    let output = spec
        .outputs
        .get_mut("default")
        .context("the bench spec has a default output")?;
    output.topic = None;
    match target {
        Table::Postgres(url) => {
            output.postgres = Some(serde_json::from_value(json!({
                "url": url,
                "table": table,
                "schema": schema,
            }))?);
        }
        Table::Delta(_) => {
            output.delta = Some(serde_json::from_value(json!({
                "path": table,
                "schema": schema,
            }))?);
        }
    }
    Ok(spec)
}
