//! `--processes 1,2,4`: one pipeline run by K separate `sluice run
//! --until-caught-up` processes that share its consumer group, the way a
//! deployment scales out. Each pipeline (filter-heartbeats at-least-once,
//! and exactly-once with a checkpoint directory that all its processes
//! share) runs over the same pre-produced events once per process count,
//! with a fresh group, output topics and checkpoint directory each time.
//!
//! Every process gets the same spec file, `parallelism` workers (at least
//! 2, so that its tasks are members of the group: with 1 a pipeline runs
//! whole and does not spread over processes) and a static member name
//! `SLUICE_INSTANCE_ID=p<k>`. The group deals the partitions out; each
//! process exits once the group's committed offsets reached the end offsets
//! it saw at its start, and prints its run summary on stdout.
//!
//! **What is timed**: one wall-clock span, from just before the first
//! process is spawned until the last one exited (process starts, Wasm
//! modules from wasmtime's compilation cache, warmed by an untimed `sluice
//! validate`, group joins and rebalances, and the final commits or
//! checkpoints included). records/s = input records / that span. "records
//! read" is the sum of the processes' `records_in`: records read again
//! after a rebalance count twice, so it may exceed the input.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

use sluice::cli::kafka_tools::{self, SampleOptions};

use crate::BenchArgs;
use crate::measure::{self, Machine, Meter};
use crate::setup::{self, Input, Modules, PipelineParams};

/// `checkpoint.interval` of the exactly-once pipeline.
const CHECKPOINT_INTERVAL: &str = "5s";
/// A run whose processes have not all exited by then is stopped (killed)
/// and reported as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How often the processes are polled (exit, CPU time).
const POLL: Duration = Duration::from_millis(5);

/// One `sluice run` process of a run.
#[derive(Debug, Clone, Serialize)]
struct Proc {
    instance: String,
    /// `exit status: 0`, or how it ended otherwise.
    status: String,
    success: bool,
    /// From the spawn of the first process of the run until this one exited.
    seconds: f64,
    /// User + system CPU seconds, as last read from `/proc` before it exited.
    cpu_s: Option<f64>,
    /// Its run summary (stdout), if it printed one.
    summary: Option<Value>,
    /// Its log (stderr), kept when it failed or RUST_LOG was set.
    log: Option<PathBuf>,
}

/// One pipeline at one process count.
#[derive(Debug, Clone, Serialize)]
struct Point {
    pipeline: &'static str,
    exactly_once: bool,
    processes: usize,
    workers_per_process: usize,
    /// Records of the input.
    records: u64,
    /// From spawning the first process until the last exited.
    seconds: f64,
    /// When the first process exited, on the same clock.
    first_exit_s: f64,
    records_per_s: f64,
    /// Sum of the processes' `records_in` (those that printed a summary).
    records_read: u64,
    /// Sum of the processes' records written to outputs.
    records_written: u64,
    dead_lettered: u64,
    /// Processes that exited with status 0.
    succeeded: usize,
    /// CPU of all the processes per input record, in µs.
    cpu_us_per_record: Option<f64>,
    /// CPU seconds of the broker during the run, with `--broker-pid`.
    broker_cpu_s: Option<f64>,
    /// records/s over the same pipeline's with one process.
    speedup: Option<f64>,
    procs: Vec<Proc>,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    loadavg_end: String,
    config: Value,
    input: Input,
    points: Vec<Point>,
}

pub(crate) fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.processes.iter().all(|&k| k > 0),
        "--processes takes process counts of at least 1"
    );
    let modules = Modules::find(&args.modules)?;
    let sluice = args.sluice_binary()?;
    let machine = Machine::read();
    let id = setup::run_id();
    let brokers = args.brokers.as_str();
    let topic = |suffix: &str| format!("bench-{id}-{suffix}");
    let json_dir = args.json.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&json_dir)
        .with_context(|| format!("cannot create {}", json_dir.display()))?;
    let json_dir = json_dir.canonicalize()?;
    let workers = args.parallelism.max(2);
    progress!(
        "processes run {id} against {brokers}: {} records, {} partitions, processes {:?}, \
         {workers} workers each, {}",
        args.records,
        args.partitions,
        args.processes,
        sluice.display()
    );

    let events_topic = topic("events");
    kafka_tools::create_topics(brokers, &[&events_topic], args.partitions)?;
    let sample = SampleOptions {
        count: args.records,
        users: args.users,
        ..Default::default()
    };
    let events = setup::produce_events(brokers, &events_topic, &sample)?;
    progress!("produced {events_topic} in {:.2} s", events.produce_s);

    let pipelines: [(&'static str, bool); 2] = [
        ("filter-heartbeats", false),
        ("filter-heartbeats exactly-once", true),
    ];
    let mut points = Vec::new();
    let mut warmed = false;
    for (p, (pipeline, exactly_once)) in pipelines.into_iter().enumerate() {
        let mut one_process = None;
        for &k in &args.processes {
            let slug = format!("k{p}-p{k}");
            let (out, dlq) = (topic(&format!("{slug}-out")), topic(&format!("{slug}-dlq")));
            kafka_tools::create_topics(brokers, &[&out, &dlq], args.partitions)?;
            let checkpoints = json_dir.join(format!("checkpoints-{id}-{slug}"));
            let name = format!("bench-{id}-{slug}");
            let (_, text) = setup::spec(&PipelineParams {
                name: name.clone(),
                brokers,
                consumer: &args.consumer,
                producer: &args.producer,
                input: &events.topic,
                output: out.clone(),
                dead_letter: dlq.clone(),
                transform: setup::transform(&modules.filter_heartbeats),
                batch: json!({ "max_records": args.batch_records }),
                exactly_once: exactly_once.then_some(checkpoints.as_path()),
                parallelism: workers,
            })?;
            let text = with_checkpoint_interval(&text)?;
            let file = json_dir.join(format!("{name}.json"));
            std::fs::write(&file, &text)
                .with_context(|| format!("cannot write {}", file.display()))?;
            if !warmed {
                warm_up(&sluice, &file)?;
                warmed = true;
            }

            let meter = Meter::start(args.broker_pid);
            let procs = run_processes(&sluice, &file, k, &json_dir.join(&name))?;
            let usage = meter.finish();
            let mut point = point(pipeline, exactly_once, k, workers, &events, procs, usage);
            if k == 1 {
                one_process = Some(point.records_per_s);
            }
            point.speedup = one_process.map(|one| point.records_per_s / one);
            progress!(
                "{pipeline}, {k} processes: {} records in {:.2} s = {:.0} records/s; \
                 {} read, {}/{k} exited 0",
                point.records,
                point.seconds,
                point.records_per_s,
                point.records_read,
                point.succeeded
            );
            if point.records_read != point.records {
                progress!(
                    "note: the processes read {} records, the input has {}",
                    point.records_read,
                    point.records
                );
            }
            for proc in point.procs.iter().filter(|p| !p.success) {
                progress!(
                    "warning: process {} ended with {}; its log: {}",
                    proc.instance,
                    proc.status,
                    proc.log
                        .as_ref()
                        .map_or("none".into(), |l| l.display().to_string())
                );
            }
            points.push(point);
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_dir_all(&checkpoints);
            if !args.keep_topics {
                setup::delete_topics(brokers, &[out, dlq]);
            }
        }
    }
    if !args.keep_topics {
        setup::delete_topics(brokers, std::slice::from_ref(&events.topic));
    }

    let report = Report {
        machine,
        loadavg_end: measure::loadavg(),
        config: json!({
            "run_id": id,
            "brokers": brokers,
            "records": args.records,
            "users": args.users,
            "partitions": args.partitions,
            "processes": args.processes,
            "workers_per_process": workers,
            "checkpoint_interval": CHECKPOINT_INTERVAL,
            "batch": { "max_records": args.batch_records },
            "consumer": args.consumer.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "producer": args.producer.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "sluice": sluice,
        }),
        input: events,
        points,
    };
    print!("{}", markdown(&report));
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", args.json.display()))?;
    progress!("wrote {}", args.json.display());
    Ok(())
}

/// The spec text with `checkpoint.interval` set to [`CHECKPOINT_INTERVAL`]
/// (if it has a checkpoint), validated again.
fn with_checkpoint_interval(text: &str) -> anyhow::Result<String> {
    let mut doc: Value = serde_json::from_str(text)?;
    if let Some(checkpoint) = doc.get_mut("checkpoint") {
        checkpoint["interval"] = json!(CHECKPOINT_INTERVAL);
    }
    let text = serde_json::to_string_pretty(&doc)?;
    sluice::spec::parse(&text, Path::new("/"))
        .with_context(|| format!("the bench built an invalid spec:\n{text}"))?;
    Ok(text)
}

/// Fills wasmtime's compilation cache for the spec's modules, untimed:
/// `sluice validate` compiles and starts them like `run` does.
fn warm_up(sluice: &Path, spec: &Path) -> anyhow::Result<()> {
    let output = Command::new(sluice)
        .arg("validate")
        .arg(spec)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .context("cannot start `sluice validate`")?;
    anyhow::ensure!(
        output.status.success(),
        "`sluice validate {}` failed ({}): {}",
        spec.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A running process of a run.
struct Running {
    instance: String,
    child: Child,
    stdout: std::thread::JoinHandle<String>,
    log: PathBuf,
    stat: String,
    cpu_s: Option<f64>,
    ended: Option<(ExitStatus, f64)>,
}

/// Starts `k` processes of `spec` at once and waits until all exited (or
/// [`RUN_TIMEOUT`]). Their logs go to `<logs>-p<k>.log`, removed for the
/// ones that succeeded unless RUST_LOG is set.
fn run_processes(sluice: &Path, spec: &Path, k: usize, logs: &Path) -> anyhow::Result<Vec<Proc>> {
    // Logs at `warn` go away with the processes that succeeded; logs asked
    // for with RUST_LOG stay.
    let keep_logs = std::env::var_os("RUST_LOG").is_some();
    let log_level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let started = Instant::now();
    let mut running = Vec::with_capacity(k);
    for n in 1..=k {
        let instance = format!("p{n}");
        let log = PathBuf::from(format!("{}-{instance}.log", logs.display()));
        let stderr = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = Command::new(sluice)
            .args(["run", "--until-caught-up"])
            .arg(spec)
            .env("SLUICE_INSTANCE_ID", &instance)
            .env("RUST_LOG", &log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start `{} run`", sluice.display()))?;
        let mut stdout = child.stdout.take().context("no stdout")?;
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let stat = format!("/proc/{}/stat", child.id());
        running.push(Running {
            instance,
            child,
            stdout,
            log,
            stat,
            cpu_s: None,
            ended: None,
        });
    }
    while running.iter().any(|r| r.ended.is_none()) {
        let timed_out = started.elapsed() > RUN_TIMEOUT;
        for r in running.iter_mut().filter(|r| r.ended.is_none()) {
            // Read before reaping: a zombie's stat still holds its final times.
            if let Some(cpu) = std::fs::read_to_string(&r.stat)
                .ok()
                .and_then(|s| measure::parse_cpu_seconds(&s))
            {
                r.cpu_s = Some(cpu);
            }
            if timed_out {
                let _ = r.child.kill();
            }
            if let Some(status) = r.child.try_wait()? {
                r.ended = Some((status, started.elapsed().as_secs_f64()));
            }
        }
        std::thread::sleep(POLL);
    }
    Ok(running
        .into_iter()
        .map(|r| {
            let (status, seconds) = r.ended.expect("every process ended");
            let stdout = r.stdout.join().unwrap_or_default();
            let summary = stdout
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v.get("records_in").is_some());
            let success = status.success();
            let log = if success && !keep_logs {
                let _ = std::fs::remove_file(&r.log);
                None
            } else {
                Some(r.log)
            };
            Proc {
                instance: r.instance,
                status: status.to_string(),
                success,
                seconds,
                cpu_s: r.cpu_s,
                summary,
                log,
            }
        })
        .collect())
}

fn point(
    pipeline: &'static str,
    exactly_once: bool,
    processes: usize,
    workers_per_process: usize,
    input: &Input,
    procs: Vec<Proc>,
    usage: measure::Usage,
) -> Point {
    let seconds = procs.iter().map(|p| p.seconds).fold(0.0, f64::max);
    let first_exit_s = procs.iter().map(|p| p.seconds).fold(f64::MAX, f64::min);
    let sum = |f: &dyn Fn(&Value) -> u64| -> u64 {
        procs.iter().filter_map(|p| p.summary.as_ref()).map(f).sum()
    };
    let records_read = sum(&|s| s["records_in"].as_u64().unwrap_or(0));
    let records_written = sum(&|s| {
        s["outputs"]
            .as_object()
            .map_or(0, |o| o.values().filter_map(Value::as_u64).sum())
    });
    let dead_lettered = sum(&|s| s["dead_lettered"].as_u64().unwrap_or(0));
    let cpu_s: Option<f64> = procs.iter().map(|p| p.cpu_s).sum();
    Point {
        pipeline,
        exactly_once,
        processes,
        workers_per_process,
        records: input.records,
        seconds,
        first_exit_s,
        records_per_s: input.records as f64 / seconds.max(f64::EPSILON),
        records_read,
        records_written,
        dead_lettered,
        succeeded: procs.iter().filter(|p| p.success).count(),
        cpu_us_per_record: cpu_s.map(|cpu| cpu * 1e6 / input.records.max(1) as f64),
        broker_cpu_s: usage.broker_cpu_s,
        speedup: None,
        procs,
    }
}

fn markdown(report: &Report) -> String {
    let mut out = format!(
        "machine: {}\n{} records over {} partitions; K `sluice run --until-caught-up` processes \
         in one consumer group, {} workers each; checkpoint interval {}; seconds: from \
         spawning the K processes until the last exited; records/s = input records / seconds\n\n\
         | pipeline | processes | seconds | records/s | vs 1 process | records read | read by each process | exited 0 | CPU µs/record (all processes) |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        report.machine.describe(&report.loadavg_end),
        report.config["records"],
        report.config["partitions"],
        report.config["workers_per_process"],
        CHECKPOINT_INTERVAL,
    );
    for p in &report.points {
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("n/a".to_owned(), |v| format!("{v:.digits$}"));
        // `records_in` of p1, p2, ... (`-`: no summary).
        let each = p
            .procs
            .iter()
            .map(|proc| {
                proc.summary
                    .as_ref()
                    .and_then(|s| s["records_in"].as_u64())
                    .map_or("-".to_owned(), |n| n.to_string())
            })
            .collect::<Vec<_>>()
            .join(" / ");
        out.push_str(&format!(
            "| {} | {} | {:.2} | {:.0} | {} | {} | {} | {}/{} | {} |\n",
            p.pipeline,
            p.processes,
            p.seconds,
            p.records_per_s,
            opt(p.speedup, 2),
            p.records_read,
            each,
            p.succeeded,
            p.processes,
            opt(p.cpu_us_per_record, 2),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_once_specs_checkpoint_every_interval_and_points_add_up() {
        let modules = tempfile::tempdir().unwrap();
        let module = modules.path().join("filter_heartbeats.wasm");
        std::fs::write(&module, b"").unwrap();
        let (_, text) = setup::spec(&PipelineParams {
            name: "bench-1a-k1-p2".into(),
            brokers: "127.0.0.1:9092",
            consumer: &[],
            producer: &[],
            input: "in",
            output: "out".into(),
            dead_letter: "dlq".into(),
            transform: setup::transform(&module),
            batch: json!({ "max_records": 1000 }),
            exactly_once: Some(Path::new("/tmp/bench-cp")),
            parallelism: 2,
        })
        .unwrap();
        let text = with_checkpoint_interval(&text).unwrap();
        let spec = sluice::spec::parse(&text, Path::new("/")).unwrap();
        assert_eq!(
            spec.checkpoint.unwrap().interval,
            humantime::parse_duration(CHECKPOINT_INTERVAL).unwrap()
        );
        assert_eq!(spec.parallelism.workers(16), 2);

        let proc = |instance: &str, seconds: f64, summary: Option<Value>| Proc {
            instance: instance.into(),
            status: "exit status: 0".into(),
            success: summary.is_some(),
            seconds,
            cpu_s: Some(1.5),
            summary,
            log: None,
        };
        let input = Input {
            kind: "events",
            topic: "in".into(),
            records: 100,
            bytes: 10_000,
            produce_s: 0.1,
        };
        let procs = vec![
            proc(
                "p1",
                2.0,
                Some(json!({"records_in": 60, "outputs": {"default": 50}, "dead_lettered": 1})),
            ),
            proc(
                "p2",
                4.0,
                Some(json!({"records_in": 45, "outputs": {"default": 40}, "dead_lettered": 0})),
            ),
            proc("p3", 1.0, None),
        ];
        let p = point("x", false, 3, 2, &input, procs, measure::Usage::default());
        assert_eq!(p.seconds, 4.0);
        assert_eq!(p.first_exit_s, 1.0);
        assert_eq!(p.records_per_s, 25.0);
        assert_eq!(p.records_read, 105);
        assert_eq!(p.records_written, 90);
        assert_eq!(p.dead_lettered, 1);
        assert_eq!(p.succeeded, 2);
        assert_eq!(p.cpu_us_per_record, Some(45_000.0));
    }
}
