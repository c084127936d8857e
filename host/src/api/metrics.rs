//! `GET /metrics`: Prometheus text exposition format (version 0.0.4).
//!
//! Counters count since the pipeline's current run started (a restart
//! starts them at zero, which Prometheus' `rate` handles). Per pipeline:
//!
//! - `sluice_pipeline_up`: 1 while it runs (paused included), else 0;
//!   `sluice_pipeline_paused`: 1 while paused.
//! - `sluice_pipeline_restarts_total`: automatic restarts after failed runs,
//!   since the server started.
//! - `sluice_pipeline_module_version{step,module,version}`: 1 per step.
//! - `sluice_records_in_total`, `sluice_records_out_total{output}`,
//!   `sluice_dead_letters_total{reason}`, `sluice_records_dropped_total`,
//!   `sluice_late_records_total`, `sluice_batches_total`.
//! - `sluice_batch_duration_seconds`: histogram.
//! - `sluice_consumer_lag{topic,partition}`: records behind the end offset.
//! - `sluice_watermark_seconds`, `sluice_state_rows`, `sluice_state_bytes`:
//!   for pipelines with windows.
//! - `sluice_join_buffered_rows{side}`, `sluice_join_buffered_bytes{side}`,
//!   `sluice_join_watermark_seconds{side}`: for pipelines that start with a
//!   join (`side` = `left` or `right`).
//! - `sluice_guest_traps_total`, `sluice_guest_deadline_hits_total`,
//!   `sluice_guest_memory_hits_total`.
//! - For a pipeline run as tasks (`parallelism` other than 1), per task
//!   (`task` = its partition; `stage` = `source`, or `repartition` for the
//!   tasks that read a repartition topic): `sluice_task_records_in_total`,
//!   `sluice_task_lag`, and with windows `sluice_task_watermark_seconds`
//!   and `sluice_task_state_rows`.
//! - Per output with a PostgreSQL table (`output`):
//!   `sluice_postgres_rows_written_total`, `sluice_postgres_rows_refused_total`,
//!   `sluice_postgres_transactions_total`, `sluice_postgres_retries_total`,
//!   `sluice_postgres_commit_seconds_total` and
//!   `sluice_postgres_last_commit_seconds`.
//! - Per Delta output: `sluice_delta_rows_written_total`,
//!   `sluice_delta_rows_refused_total`, `sluice_delta_commits_total`,
//!   `sluice_delta_compactions_total`, `sluice_delta_table_version`,
//!   `sluice_delta_commit_seconds_total` and
//!   `sluice_delta_last_commit_seconds`.
//!
//! And `sluice_modules`: stored module versions.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use crate::manager::{PipelineStatus, Status};
use crate::pipeline::{DURATION_BUCKETS_MS, JoinSideInfo, Progress, Stage, TaskProgress};
use crate::sink::{DeltaStats, PostgresStats};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&state))
}

/// The exposition text.
pub fn render(state: &AppState) -> String {
    let mut out = String::new();
    let versions: usize = state.store.list().iter().map(|(_, v)| v.len()).sum();
    family(
        &mut out,
        "sluice_modules",
        "gauge",
        "Stored module versions.",
    );
    let _ = writeln!(out, "sluice_modules {versions}");
    let Some(manager) = &state.pipelines else {
        return out;
    };
    let pipelines = manager.list();
    let running = |p: &PipelineStatus| matches!(p.status, Status::Running | Status::Paused);

    family(
        &mut out,
        "sluice_pipeline_up",
        "gauge",
        "1 while the pipeline runs (paused included), else 0.",
    );
    for p in &pipelines {
        sample(
            &mut out,
            "sluice_pipeline_up",
            &p.name,
            &[],
            u8::from(running(p)),
        );
    }
    family(
        &mut out,
        "sluice_pipeline_paused",
        "gauge",
        "1 while the pipeline is paused.",
    );
    for p in &pipelines {
        sample(
            &mut out,
            "sluice_pipeline_paused",
            &p.name,
            &[],
            u8::from(p.status == Status::Paused),
        );
    }
    family(
        &mut out,
        "sluice_pipeline_restarts_total",
        "counter",
        "Automatic restarts of the pipeline after a failed run, since the server started.",
    );
    for p in &pipelines {
        sample(
            &mut out,
            "sluice_pipeline_restarts_total",
            &p.name,
            &[],
            p.restarts,
        );
    }
    family(
        &mut out,
        "sluice_pipeline_module_version",
        "gauge",
        "The module version each step of a pipeline runs.",
    );
    for p in &pipelines {
        for m in &p.modules {
            let version = m.version.to_string();
            let labels = [
                ("step", m.step.as_str()),
                ("module", &m.module),
                ("version", &version),
            ];
            sample(
                &mut out,
                "sluice_pipeline_module_version",
                &p.name,
                &labels,
                1,
            );
        }
    }

    let progress: Vec<(&str, &Progress)> = pipelines
        .iter()
        .filter_map(|p| Some((p.name.as_str(), p.progress.as_ref()?)))
        .collect();
    let counters: [Counter; 7] = [
        (
            "sluice_records_in_total",
            "Records read from the source.",
            |p| p.totals.run.records_in,
        ),
        (
            "sluice_records_dropped_total",
            "Records a guest dropped on purpose.",
            |p| p.totals.run.dropped,
        ),
        (
            "sluice_late_records_total",
            "Records dead-lettered because their window was final.",
            |p| p.totals.late,
        ),
        (
            "sluice_guest_traps_total",
            "Guest calls that trapped.",
            |p| p.totals.traps,
        ),
        (
            "sluice_guest_deadline_hits_total",
            "Guest calls stopped at their deadline.",
            |p| p.totals.deadline_hits,
        ),
        (
            "sluice_guest_memory_hits_total",
            "Guest calls stopped at their memory limit.",
            |p| p.totals.memory_hits,
        ),
        ("sluice_batches_total", "Batches run.", |p| {
            p.totals.run.batches
        }),
    ];
    for (name, help, value) in counters {
        family(&mut out, name, "counter", help);
        for (pipeline, p) in &progress {
            sample(&mut out, name, pipeline, &[], value(p));
        }
    }
    family(
        &mut out,
        "sluice_records_out_total",
        "counter",
        "Records written, per output.",
    );
    for (pipeline, p) in &progress {
        for (output, n) in &p.totals.run.outputs {
            sample(
                &mut out,
                "sluice_records_out_total",
                pipeline,
                &[("output", output)],
                *n,
            );
        }
    }
    family(
        &mut out,
        "sluice_dead_letters_total",
        "counter",
        "Records dead-lettered, per kind of reason.",
    );
    for (pipeline, p) in &progress {
        for (reason, n) in &p.totals.run.dead_letter_reasons {
            sample(
                &mut out,
                "sluice_dead_letters_total",
                pipeline,
                &[("reason", reason.label())],
                *n,
            );
        }
    }
    let postgres: [Family<PostgresStats>; 6] = [
        (
            "sluice_postgres_rows_written_total",
            "counter",
            "Rows committed to the output's table.",
            |s| s.rows_written as f64,
        ),
        (
            "sluice_postgres_rows_refused_total",
            "counter",
            "Rows the database refused (dead-lettered).",
            |s| s.rows_refused as f64,
        ),
        (
            "sluice_postgres_transactions_total",
            "counter",
            "Transactions committed (one per batch).",
            |s| s.transactions as f64,
        ),
        (
            "sluice_postgres_retries_total",
            "counter",
            "Attempts retried after a connection fault.",
            |s| s.retries as f64,
        ),
        (
            "sluice_postgres_commit_seconds_total",
            "counter",
            "Time in transactions, first statement to commit.",
            |s| s.commit_us_total as f64 / 1e6,
        ),
        (
            "sluice_postgres_last_commit_seconds",
            "gauge",
            "The last transaction's time.",
            |s| s.last_commit_us as f64 / 1e6,
        ),
    ];
    per_output(&mut out, &progress, &postgres, |p| &p.totals.run.postgres);
    let delta: [Family<DeltaStats>; 7] = [
        (
            "sluice_delta_rows_written_total",
            "counter",
            "Rows committed to the output's Delta table.",
            |s| s.rows_written as f64,
        ),
        (
            "sluice_delta_rows_refused_total",
            "counter",
            "Records that did not fit the table (dead-lettered).",
            |s| s.rows_refused as f64,
        ),
        (
            "sluice_delta_commits_total",
            "counter",
            "Commits of data (one per checkpoint with rows).",
            |s| s.commits as f64,
        ),
        (
            "sluice_delta_compactions_total",
            "counter",
            "Compactions (OPTIMIZE) run.",
            |s| s.compactions as f64,
        ),
        (
            "sluice_delta_table_version",
            "gauge",
            "The table's version after the output's last commit.",
            |s| s.table_version as f64,
        ),
        (
            "sluice_delta_commit_seconds_total",
            "counter",
            "Time in commits, first write to the new version.",
            |s| s.commit_us_total as f64 / 1e6,
        ),
        (
            "sluice_delta_last_commit_seconds",
            "gauge",
            "The last commit's time.",
            |s| s.last_commit_us as f64 / 1e6,
        ),
    ];
    per_output(&mut out, &progress, &delta, |p| &p.totals.run.delta);
    family(
        &mut out,
        "sluice_consumer_lag",
        "gauge",
        "Records between the position and the end offset, per source partition.",
    );
    for (pipeline, p) in &progress {
        for s in &p.sources {
            if let Some(lag) = s.lag {
                let partition = s.partition.to_string();
                let labels = [("topic", s.topic.as_str()), ("partition", &partition)];
                sample(&mut out, "sluice_consumer_lag", pipeline, &labels, lag);
            }
        }
    }
    family(
        &mut out,
        "sluice_watermark_seconds",
        "gauge",
        "The event-time watermark, Unix seconds.",
    );
    for (pipeline, p) in &progress {
        if let Some(w) = p.event_time.and_then(|e| e.watermark) {
            sample(
                &mut out,
                "sluice_watermark_seconds",
                pipeline,
                &[],
                w as f64 / 1000.0,
            );
        }
    }
    family(
        &mut out,
        "sluice_state_rows",
        "gauge",
        "Open (window, key) pairs.",
    );
    for (pipeline, p) in &progress {
        if let Some(state) = p.state {
            sample(&mut out, "sluice_state_rows", pipeline, &[], state.rows);
        }
    }
    family(
        &mut out,
        "sluice_state_bytes",
        "gauge",
        "Bytes of window state.",
    );
    for (pipeline, p) in &progress {
        if let Some(state) = p.state {
            sample(&mut out, "sluice_state_bytes", pipeline, &[], state.bytes);
        }
    }

    type JoinGauge = (&'static str, &'static str, fn(&JoinSideInfo) -> Option<f64>);
    let join: [JoinGauge; 3] = [
        (
            "sluice_join_buffered_rows",
            "Records a join holds, per side (waiting for matches, or to be emitted alone).",
            |s| Some(s.rows as f64),
        ),
        (
            "sluice_join_buffered_bytes",
            "Bytes of the records a join holds, per side.",
            |s| Some(s.bytes as f64),
        ),
        (
            "sluice_join_watermark_seconds",
            "A join side's watermark.",
            |s| s.watermark.map(|w| w as f64 / 1000.0),
        ),
    ];
    for (name, help, value) in join {
        family(&mut out, name, "gauge", help);
        for (pipeline, p) in &progress {
            let Some(j) = &p.join else { continue };
            for (side, info) in [("left", &j.left), ("right", &j.right)] {
                if let Some(v) = value(info) {
                    sample(&mut out, name, pipeline, &[("side", side)], v);
                }
            }
        }
    }

    let tasks: [TaskGauge; 4] = [
        (
            "sluice_task_records_in_total",
            "counter",
            "Records read by a task (a pipeline run as tasks).",
            |t| Some(t.records_in as f64),
        ),
        (
            "sluice_task_lag",
            "gauge",
            "Records between a task's positions and its partitions' end offsets.",
            |t| t.lag.map(|l| l as f64),
        ),
        (
            "sluice_task_watermark_seconds",
            "gauge",
            "A task's event-time watermark, Unix seconds.",
            |t| t.watermark.map(|w| w as f64 / 1000.0),
        ),
        (
            "sluice_task_state_rows",
            "gauge",
            "A task's open (window, key) pairs.",
            |t| t.state.map(|s| s.rows as f64),
        ),
    ];
    for (name, kind, help, value) in tasks {
        family(&mut out, name, kind, help);
        for (pipeline, p) in &progress {
            for t in &p.tasks {
                if let Some(v) = value(t) {
                    let task = t.partition.to_string();
                    let stage = match t.stage {
                        Stage::Source => "source",
                        Stage::Repartition => "repartition",
                    };
                    sample(
                        &mut out,
                        name,
                        pipeline,
                        &[("stage", stage), ("task", task.as_str())],
                        v,
                    );
                }
            }
        }
    }

    family(
        &mut out,
        "sluice_batch_duration_seconds",
        "histogram",
        "Time to run a batch, fetch to acknowledgement.",
    );
    for (pipeline, counts, sum_ms) in manager.batch_durations() {
        let bounds = DURATION_BUCKETS_MS
            .iter()
            .map(|b| (b / 1000.0).to_string())
            .chain(["+Inf".to_owned()]);
        for (le, n) in bounds.zip(&counts) {
            sample(
                &mut out,
                "sluice_batch_duration_seconds_bucket",
                &pipeline,
                &[("le", &le)],
                n,
            );
        }
        sample(
            &mut out,
            "sluice_batch_duration_seconds_sum",
            &pipeline,
            &[],
            sum_ms / 1000.0,
        );
        let count = counts.last().copied().unwrap_or(0);
        sample(
            &mut out,
            "sluice_batch_duration_seconds_count",
            &pipeline,
            &[],
            count,
        );
    }
    out
}

/// A per-task family: name, type, help, and its value in a task's row.
type TaskGauge = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TaskProgress) -> Option<f64>,
);

/// A counter family: name, help, and its value in a progress document.
type Counter = (&'static str, &'static str, fn(&Progress) -> u64);

/// A family of a sink's statistics: name, kind, help, and its value.
type Family<S> = (&'static str, &'static str, &'static str, fn(&S) -> f64);

/// The families of a table sink's statistics (name, kind, help, value),
/// a sample per pipeline and output that has the sink; none without one.
fn per_output<S>(
    out: &mut String,
    progress: &[(&str, &Progress)],
    families: &[Family<S>],
    stats: impl Fn(&Progress) -> &BTreeMap<String, S>,
) {
    if progress.iter().all(|(_, p)| stats(p).is_empty()) {
        return;
    }
    for (name, kind, help, value) in families {
        family(out, name, kind, help);
        for (pipeline, p) in progress {
            for (output, s) in stats(p) {
                sample(out, name, pipeline, &[("output", output)], value(s));
            }
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One sample line, labelled with the pipeline and `labels`.
fn sample(
    out: &mut String,
    name: &str,
    pipeline: &str,
    labels: &[(&str, &str)],
    value: impl std::fmt::Display,
) {
    let _ = write!(out, "{name}{{pipeline=\"{}\"", escape(pipeline));
    for (key, v) in labels {
        let _ = write!(out, ",{key}=\"{}\"", escape(v));
    }
    let _ = writeln!(out, "}} {value}");
}

/// A label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
