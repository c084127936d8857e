//! Throughput of transforms through Wasm against the same Rust compiled
//! natively, and the per-record cost of the Wasm boundary: the runtime's
//! acceptance bars.
//!
//! Every case runs one in-memory batch repeatedly, two ways:
//!
//! - wasm: the guest component through `sluice::runtime::Transform::process`
//!   (one call across the boundary per batch, as the pipeline does), and
//! - native: the very same guest crate, linked into this binary, through the
//!   SDK's `process_columns*` glue on the same columns (the code path of the
//!   wasm export minus the boundary).
//!
//! Bars (reported as PASS/MISS, never asserted): filter >= 0.8x native
//! throughput, JSON map >= 0.5x native, boundary overhead <= 15 ns per record
//! at 1,000-record batches (faulty-guest `noop`: wasm minus native, the cost
//! the boundary adds when the guest does nothing).
//!
//! Cases with a ratio bar also time a third side, reported and never judged:
//! the same guest on a runtime compiled without deadline checks
//! (`Runtime::without_deadlines`, which pipelines never use). Enforcing
//! deadlines makes wasmtime check the epoch at every function entry and loop
//! back-edge of the guest; the difference between the two wasm figures is
//! what those checks cost.
//!
//! Method: per case, warm every side up, then alternate the sides' samples
//! of about 200 ms each (so that background load hits them alike); the
//! figure is the median ns per record over the samples. Figures also go
//! to `target/bench/runtime.json` under the workspace root.
//!
//! Run: `cargo bench -p sluice-tests --bench runtime`; append `-- NAME...` to run
//! only the cases whose name contains one of the NAMEs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::hint::black_box;

use serde_json::{Value, json};
use sluice::batch::Batch;
use sluice::batch::StepOutput;
use sluice::cli::kafka_tools::{SampleOptions, sample_record};
use sluice::runtime::{Labels, Runtime, Transform};
use sluice::spec::Limits;
use sluice_sdk::__private::types::{InputBatch, OutputBatch};
use sluice_sdk::__private::{process_columns, process_columns_fn};
use sluice_tests::bench::{
    announce, cpu_model, loadavg, name_filters, nproc, render, to_wit, write_report,
};

const WARMUP: Duration = Duration::from_millis(1000);
const SAMPLE: Duration = Duration::from_millis(200);
const SAMPLES: usize = 15;

/// An acceptance bar.
#[derive(Clone, Copy)]
enum Bar {
    /// Wasm throughput at least this fraction of native.
    MinRatio(f64),
    /// Boundary overhead (wasm minus native) at most this many ns per record.
    MaxOverheadNs(f64),
    /// Reported only.
    None,
}

/// The input data of a case.
#[derive(Clone, Copy)]
enum Input {
    /// The project's sample events.
    SampleEvents,
    /// `{strategy, value, ts}` readings across all three branches.
    Readings,
}

struct Case {
    name: &'static str,
    guest: &'static str,
    config: &'static [(&'static str, &'static str)],
    input: Input,
    records: usize,
    bar: Bar,
}

/// Median and spread of one side's samples, in ns per record.
struct Stats {
    median: f64,
    min: f64,
    p25: f64,
    p75: f64,
    iters_per_sample: u64,
}

impl Stats {
    fn from_samples(mut ns: Vec<f64>, iters_per_sample: u64) -> Self {
        ns.sort_by(f64::total_cmp);
        let at = |q: f64| ns[((ns.len() - 1) as f64 * q).round() as usize];
        Self {
            median: at(0.5),
            min: ns[0],
            p25: at(0.25),
            p75: at(0.75),
            iters_per_sample,
        }
    }

    /// Half the interquartile range, relative to the median.
    fn spread(&self) -> f64 {
        (self.p75 - self.p25) / 2.0 / self.median
    }

    fn json(&self) -> Value {
        json!({
            "median_ns_per_record": self.median,
            "min_ns_per_record": self.min,
            "p25_ns_per_record": self.p25,
            "p75_ns_per_record": self.p75,
            "records_per_s": 1e9 / self.median,
            "iterations_per_sample": self.iters_per_sample,
        })
    }
}

struct Outcome {
    case: &'static Case,
    /// Output records per batch (the same both ways).
    outputs: usize,
    wasm: Stats,
    native: Stats,
    /// The guest on the runtime without deadline checks (ratio cases only).
    unchecked: Option<Stats>,
}

impl Outcome {
    /// Relative throughput of wasm: native time over wasm time.
    fn ratio(&self) -> f64 {
        self.native.median / self.wasm.median
    }

    /// The ratio without deadline checks, if measured.
    fn unchecked_ratio(&self) -> Option<f64> {
        self.unchecked
            .as_ref()
            .map(|u| self.native.median / u.median)
    }

    /// What the boundary adds per record.
    fn overhead_ns(&self) -> f64 {
        self.wasm.median - self.native.median
    }

    fn verdict(&self) -> (String, Option<bool>) {
        match self.case.bar {
            Bar::MinRatio(min) => (format!("ratio >= {min}"), Some(self.ratio() >= min)),
            Bar::MaxOverheadNs(max) => (
                format!("overhead <= {max} ns"),
                Some(self.overhead_ns() <= max),
            ),
            Bar::None => ("-".to_owned(), None),
        }
    }
}

const CASES: &[Case] = &[
    Case {
        name: "filter",
        guest: "filter-heartbeats",
        config: &[],
        input: Input::SampleEvents,
        records: 1000,
        bar: Bar::MinRatio(0.8),
    },
    Case {
        name: "json-map",
        guest: "strategy-map",
        config: &[],
        input: Input::Readings,
        records: 1000,
        bar: Bar::MinRatio(0.5),
    },
    Case {
        name: "boundary-noop",
        guest: "faulty-guest",
        config: &[("mode", "noop")],
        input: Input::SampleEvents,
        records: 100,
        bar: Bar::None,
    },
    Case {
        name: "boundary-noop",
        guest: "faulty-guest",
        config: &[("mode", "noop")],
        input: Input::SampleEvents,
        records: 1000,
        bar: Bar::MaxOverheadNs(15.0),
    },
    Case {
        name: "boundary-noop",
        guest: "faulty-guest",
        config: &[("mode", "noop")],
        input: Input::SampleEvents,
        records: 10_000,
        bar: Bar::None,
    },
    Case {
        name: "boundary-passthrough",
        guest: "faulty-guest",
        config: &[("mode", "passthrough")],
        input: Input::SampleEvents,
        records: 100,
        bar: Bar::None,
    },
    Case {
        name: "boundary-passthrough",
        guest: "faulty-guest",
        config: &[("mode", "passthrough")],
        input: Input::SampleEvents,
        records: 1000,
        bar: Bar::None,
    },
    Case {
        name: "boundary-passthrough",
        guest: "faulty-guest",
        config: &[("mode", "passthrough")],
        input: Input::SampleEvents,
        records: 10_000,
        bar: Bar::None,
    },
];

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let load_before = announce("Sluice runtime benchmark: wasm vs native");
    println!(
        "method: per case {} s warm-up per side, then {SAMPLES} alternating samples of ~{} ms per side; median ns/record",
        WARMUP.as_secs_f64(),
        SAMPLE.as_millis()
    );
    println!();

    // `cargo bench -- filter` runs only the cases whose name contains `filter`.
    let only = name_filters();
    let runtime = Runtime::new()?;
    let unchecked = Runtime::without_deadlines()?;
    let mut outcomes = Vec::new();
    for case in CASES {
        if !only.is_empty() && !only.iter().any(|o| case.name.contains(o.as_str())) {
            continue;
        }
        let outcome = run_case(&runtime, &unchecked, case)?;
        println!(
            "  {:<21} {:>6} records ({:>5} out): wasm {:>6.1} ns/rec (±{:.1}%), native {:>6.1} ns/rec (±{:.1}%)",
            case.name,
            case.records,
            outcome.outputs,
            outcome.wasm.median,
            outcome.wasm.spread() * 100.0,
            outcome.native.median,
            outcome.native.spread() * 100.0,
        );
        if let Some(u) = &outcome.unchecked {
            println!(
                "  {:<21} {:>6} records: wasm without deadline checks {:>6.1} ns/rec (±{:.1}%)",
                case.name,
                case.records,
                u.median,
                u.spread() * 100.0,
            );
        }
        outcomes.push(outcome);
    }
    let load_after = loadavg();

    println!();
    print!("{}", table(&outcomes));
    println!();
    println!(
        "ratio = native ns / wasm ns (relative wasm throughput); overhead = wasm ns - native ns per record"
    );
    println!(
        "unchecked = the ratio on a runtime without deadline checks (what pipelines never run; not judged)"
    );
    println!("load average at end: {load_after}");

    let report = json!({
        "machine": {
            "nproc": nproc(),
            "cpu": cpu_model(),
            "loadavg_start": load_before,
            "loadavg_end": load_after,
        },
        "method": {
            "warmup_s_per_side": WARMUP.as_secs_f64(),
            "sample_ms": SAMPLE.as_millis() as u64,
            "samples_per_side": SAMPLES,
            "statistic": "median ns per record",
        },
        "cases": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    write_report("runtime.json", &report, started)
}

fn run_case(
    runtime: &Runtime,
    unchecked_runtime: &Runtime,
    case: &'static Case,
) -> anyhow::Result<Outcome> {
    let mut batch = match case.input {
        Input::SampleEvents => sample_events(case.records),
        Input::Readings => readings(case.records),
    };
    let input = to_wit(&batch);

    let mut wasm = instantiate(runtime, case)?;
    let mut unchecked = match case.bar {
        Bar::MinRatio(_) => Some(instantiate(unchecked_runtime, case)?),
        _ => None,
    };
    let mut native = native(case)?;

    // Every side must agree before their times are compared.
    let native_out = native(&input);
    check_same(case, &wasm.process(&mut batch.clone())?, &native_out);
    if let Some(unchecked) = &mut unchecked {
        check_same(case, &unchecked.process(&mut batch.clone())?, &native_out);
    }

    let mut wasm_batch = batch.clone();
    let mut sides: Vec<Side<'_>> = Vec::new();
    sides.push(Side::new(Box::new(|| {
        black_box(wasm.process(black_box(&mut wasm_batch)).expect("no fault"));
    })));
    sides.push(Side::new(Box::new(|| {
        black_box(native(black_box(&input)));
    })));
    if let Some(unchecked) = &mut unchecked {
        sides.push(Side::new(Box::new(|| {
            black_box(unchecked.process(black_box(&mut batch)).expect("no fault"));
        })));
    }
    for side in &mut sides {
        side.iters = calibrate(&mut side.run);
    }
    for _ in 0..SAMPLES {
        for side in &mut sides {
            side.ns
                .push(sample(&mut side.run, side.iters, case.records));
        }
    }
    let mut stats = sides
        .into_iter()
        .map(|side| Stats::from_samples(side.ns, side.iters))
        .collect::<Vec<_>>()
        .into_iter();
    let (wasm_stats, native_stats) = (stats.next().expect("wasm"), stats.next().expect("native"));
    let unchecked_stats = stats.next();

    // A fault (e.g. a deadline hit on an overloaded machine) would have timed
    // fault isolation rather than the guest.
    let faults = wasm.stats();
    anyhow::ensure!(
        faults.traps + faults.deadline_hits + faults.memory_hits == 0,
        "{} at {} records: the guest faulted while being timed: {faults:?}",
        case.name,
        case.records
    );
    Ok(Outcome {
        case,
        outputs: native_out.inputs.len(),
        wasm: wasm_stats,
        native: native_stats,
        unchecked: unchecked_stats,
    })
}

/// One timed way of running a case.
struct Side<'a> {
    run: Box<dyn FnMut() + 'a>,
    iters: u64,
    ns: Vec<f64>,
}

impl<'a> Side<'a> {
    fn new(run: Box<dyn FnMut() + 'a>) -> Self {
        Self {
            run,
            iters: 0,
            ns: Vec::with_capacity(SAMPLES),
        }
    }
}

/// Runs `f` for the warm-up time; returns iterations for one sample.
fn calibrate(f: &mut dyn FnMut()) -> u64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < WARMUP {
        f();
        n += 1;
    }
    let per_iter = start.elapsed().as_secs_f64() / n as f64;
    ((SAMPLE.as_secs_f64() / per_iter).ceil() as u64).max(1)
}

/// ns per record over `iters` runs of `f`.
fn sample(f: &mut dyn FnMut(), iters: u64, records: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / (iters as f64 * records as f64)
}

fn instantiate(runtime: &Runtime, case: &Case) -> anyhow::Result<Transform> {
    let path = sluice_tests::guest(case.guest);
    let bytes = std::fs::read(&path)
        .map_err(|e| anyhow::anyhow!("cannot read guest {}: {e}", path.display()))?;
    let module = runtime.load(case.guest, &bytes)?;
    let labels = Labels {
        pipeline: Arc::from("bench"),
        step: Arc::from(case.name),
        module: Arc::from(case.guest),
    };
    let config = case
        .config
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok(Transform::new(&module, labels, Limits::default(), config)?)
}

type NativeFn = Box<dyn FnMut(&InputBatch) -> OutputBatch>;

/// The guest crate's own code, through the SDK glue the wasm export runs.
fn native(case: &Case) -> anyhow::Result<NativeFn> {
    let expect = |r: Result<OutputBatch, String>| r.expect("well-formed batch");
    Ok(match case.guest {
        "filter-heartbeats" => Box::new(move |b: &InputBatch| {
            expect(process_columns_fn(filter_heartbeats::filter_heartbeats, b))
        }),
        "strategy-map" => Box::new(move |b: &InputBatch| {
            expect(process_columns_fn(strategy_map::strategy_map, b))
        }),
        "faulty-guest" => {
            let config: sluice_sdk::Config = case.config.iter().copied().collect();
            let mut state = <faulty_guest::Faulty as sluice_sdk::Transform>::init(&config)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Box::new(move |b: &InputBatch| expect(process_columns(&mut state, b)))
        }
        other => anyhow::bail!("no native build of {other}"),
    })
}

/// Wasm and native outputs must be the same records, or the comparison is
/// meaningless.
fn check_same(case: &Case, wasm: &StepOutput, native: &OutputBatch) {
    let what = format!("{} at {} records", case.name, case.records);
    assert_eq!(wasm.inputs, native.inputs, "{what}: output inputs differ");
    assert_eq!(
        wasm.records.values, native.records.values,
        "{what}: output values differ"
    );
    assert_eq!(
        wasm.records.value_offsets, native.records.value_offsets,
        "{what}: output value offsets differ"
    );
    assert_eq!(
        wasm.dead_letters.len(),
        native.dead_letters.len(),
        "{what}: dead letters differ"
    );
    assert!(
        wasm.dead_letters.is_empty(),
        "{what}: unexpected dead letters: {:?}",
        &wasm.dead_letters[..1]
    );
    let expected = match case.config {
        [("mode", "noop")] => Some(0),
        [("mode", "passthrough")] => Some(case.records),
        _ => None,
    };
    if let Some(expected) = expected {
        assert_eq!(wasm.inputs.len(), expected, "{what}: output count");
    }
}

/// `n` sample events (about 110 bytes, key = user id), timestamps 100 ms apart.
fn sample_events(n: usize) -> Batch {
    let options = SampleOptions::default();
    let mut batch = Batch::with_capacity(n, n * 120);
    for i in 0..n {
        let (key, value) = sample_record(&options, i as u64);
        let ts = options.start_ms + i as i64 * 100;
        push(&mut batch, i, key.as_bytes(), &value, ts);
    }
    batch
}

/// `n` readings `{strategy, value, ts}`; `value` cycles through 0..100, so
/// every branch of the strategy is taken.
fn readings(n: usize) -> Batch {
    let mut batch = Batch::with_capacity(n, n * 64);
    for i in 0..n {
        let strategy = format!("s{}", i % 5);
        let value = format!(
            r#"{{"strategy":"{strategy}","value":{:.1},"ts":"2026-01-01T00:00:00.000Z"}}"#,
            (i * 7 % 100) as f64
        );
        push(
            &mut batch,
            i,
            strategy.as_bytes(),
            value.as_bytes(),
            1_767_225_600_000,
        );
    }
    batch
}

fn push(batch: &mut Batch, i: usize, key: &[u8], value: &[u8], ts: i64) {
    batch.records.push(Some(key), Some(value), Some(ts), []);
    batch.partitions.push((i % 4) as i32);
    batch.offsets.push(i as i64);
    batch.sources.push(0);
}

fn table(outcomes: &[Outcome]) -> String {
    let header = [
        "case",
        "records",
        "wasm ns/rec",
        "native ns/rec",
        "wasm rec/s",
        "native rec/s",
        "ratio",
        "overhead ns/rec",
        "bar",
        "result",
        "unchecked",
    ];
    let rows: Vec<[String; 11]> = outcomes
        .iter()
        .map(|o| {
            let (bar, pass) = o.verdict();
            [
                o.case.name.to_owned(),
                o.case.records.to_string(),
                format!("{:.1}", o.wasm.median),
                format!("{:.1}", o.native.median),
                rate(o.wasm.median),
                rate(o.native.median),
                format!("{:.2}x", o.ratio()),
                format!("{:.1}", o.overhead_ns()),
                bar,
                match pass {
                    Some(true) => "PASS".to_owned(),
                    Some(false) => "MISS".to_owned(),
                    None => "-".to_owned(),
                },
                o.unchecked_ratio()
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x")),
            ]
        })
        .collect();
    // Text columns left-aligned, figures right-aligned.
    render(&header, &rows, &[0, 8])
}

fn rate(ns_per_record: f64) -> String {
    let per_s = 1e9 / ns_per_record;
    if per_s >= 1e6 {
        format!("{:.2} M", per_s / 1e6)
    } else {
        format!("{:.0} k", per_s / 1e3)
    }
}

fn outcome_json(o: &Outcome) -> Value {
    let (bar, pass) = o.verdict();
    json!({
        "case": o.case.name,
        "guest": o.case.guest,
        "config": o.case.config.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "records_per_batch": o.case.records,
        "output_records_per_batch": o.outputs,
        "wasm": o.wasm.json(),
        "native": o.native.json(),
        "ratio_native_over_wasm_time": o.ratio(),
        "wasm_without_deadline_checks": o.unchecked.as_ref().map(Stats::json),
        "ratio_without_deadline_checks": o.unchecked_ratio(),
        "overhead_ns_per_record": o.overhead_ns(),
        "bar": if pass.is_some() { Value::from(bar) } else { Value::Null },
        "pass": pass,
    })
}
