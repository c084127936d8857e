//! Throughput and state size of windowed aggregation: the count/sum
//! aggregate (`tests/guests/count-sum`) and the event-window example
//! (`guest-examples/event-window-agg`) through the host's window engine, in
//! Wasm and natively.
//!
//! Input: 1,000,000 sample events over 10,000 users, record timestamps 100 ms
//! apart (so a 1-minute tumbling window holds 600 events), 4 partitions, in
//! 1,000-record batches built before anything is timed. Each pass runs every
//! batch through a fresh step, with the last record time of the batch as
//! processing time. Scenarios:
//!
//! - `tumbling-1m`: 1-minute windows, so nearly every record has its own
//!   (window, user) row and result: finish-heavy.
//! - `tumbling-1h`: 1-hour windows, so ~10,000 (window, user) rows stay open
//!   at once and most folds update an existing accumulator.
//! - `event-window-agg-1m`: the event-window example, 1-minute windows per
//!   event type (the end-to-end bench's aggregate row): a few rows, each
//!   folding hundreds of records with their distinct users.
//!
//! Both with `watermark: { max_out_of_orderness: 5s, idle_timeout: 1h }` and
//! `output: append`. Two ways:
//!
//! - wasm: the guest component through `sluice::pipeline::AggregateStep::process`
//!   (extract, engine, fold and finish calls, as the pipeline runs it), and
//! - native: the same guest crate linked into this binary, through the SDK's
//!   aggregate glue (`sluice_sdk::__private::aggregate`, the code the wasm
//!   exports run), driven by the same `WindowEngine` through a native
//!   `AggregateCalls` adapter.
//!
//! Bar (reported as PASS/MISS, never asserted): wasm >= 1,000,000 records/s
//! on one core, per scenario.
//!
//! Method: per scenario and side, one warm-up pass (whose outputs must match
//! between wasm and native), then `PASSES` alternating timed passes; the
//! figure is the median records/s. One more pass per side times each phase
//! (the guest's extract, fold, merge and finish calls, and the engine's own
//! work in between) to show where the time goes. State figures are taken at
//! the batch with the most open rows. Figures also go to
//! `target/bench/windows.json` under the workspace root.
//!
//! Run: `cargo bench -p sluice-tests --bench windows`; append `-- NAME...` to
//! run only the scenarios whose name contains one of the NAMEs.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::batch::StepOutput;
use sluice::batch::calls::{self as window, AggregateCalls, AggregateError};
use sluice::batch::{Batch, Columns};
use sluice::cli::kafka_tools::{SampleOptions, sample_record};
use sluice::pipeline::AggregateStep;
use sluice::runtime::{Aggregator, Labels, Module, Runtime};
use sluice::spec::Limits;
use sluice::spec::window::WindowSpec;
use sluice::window::{BatchKeys, WindowEngine, WindowOutput};
use sluice_tests::bench::{
    announce, cpu_model, loadavg, name_filters, nproc, render, write_report,
};

mod native;

use native::{native_pass, native_phases};

const RECORDS: u64 = 1_000_000;
const USERS: u64 = 10_000;
const BATCH: usize = 1_000;
const PARTITIONS: u64 = 4;
/// Timed passes per side and scenario.
const PASSES: usize = 5;
/// The bar, in records per second through the wasm step.
const BAR_RECORDS_PER_S: f64 = 1_000_000.0;

/// The aggregate a scenario runs, with no configuration.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Guest {
    /// `tests/guests/count-sum`.
    CountSum,
    /// `guest-examples/event-window-agg`.
    EventWindowAgg,
}

impl Guest {
    fn name(self) -> &'static str {
        match self {
            Guest::CountSum => "count-sum",
            Guest::EventWindowAgg => "event-window-agg",
        }
    }
}

struct Scenario {
    name: &'static str,
    guest: Guest,
    spec: &'static str,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "tumbling-1m",
        guest: Guest::CountSum,
        spec: "window: { tumbling: 1m }\nwatermark: { max_out_of_orderness: 5s, idle_timeout: 1h }\noutput: append\n",
    },
    Scenario {
        name: "tumbling-1h",
        guest: Guest::CountSum,
        spec: "window: { tumbling: 1h }\nwatermark: { max_out_of_orderness: 5s, idle_timeout: 1h }\noutput: append\n",
    },
    Scenario {
        name: "event-window-agg-1m",
        guest: Guest::EventWindowAgg,
        spec: "window: { tumbling: 1m }\nwatermark: { max_out_of_orderness: 5s, idle_timeout: 1h }\noutput: append\n",
    },
];

/// The benchmark input: batches and, per batch, the processing time passed
/// with it.
struct Input {
    batches: Vec<Batch>,
    now: Vec<i64>,
}

/// What one pass produced, and the state at its fullest.
#[derive(Clone, Copy, Default)]
struct Pass {
    elapsed: Duration,
    results: u64,
    dead_letters: u64,
    /// Digest of every result (key, value, timestamp, window), in order;
    /// computed in warm-up passes only.
    digest: u64,
    peak_rows: usize,
    /// Accumulator bytes per row and host overhead bytes per row, at the peak.
    acc_bytes_per_row: f64,
    overhead_bytes_per_row: usize,
    rows_at_end: usize,
}

impl Pass {
    fn records_per_s(&self) -> f64 {
        RECORDS as f64 / self.elapsed.as_secs_f64()
    }

    /// Notes the state after a batch.
    fn observe(&mut self, engine: &WindowEngine) {
        let rows = engine.state_rows();
        if rows > self.peak_rows {
            self.peak_rows = rows;
            self.acc_bytes_per_row = engine.state_bytes() as f64 / rows as f64;
            self.overhead_bytes_per_row = engine.overhead_bytes_per_row();
        }
    }
}

/// Time per phase over a pass.
#[derive(Clone, Copy, Default)]
struct Phases {
    extract: Duration,
    engine: Duration,
    fold: Duration,
    merge: Duration,
    finish: Duration,
    total: Duration,
}

impl Phases {
    fn calls(&self) -> Duration {
        self.fold + self.merge + self.finish
    }

    /// Runs one batch through the engine: the guest calls' time goes to
    /// their phases, the rest of `process` to `engine`.
    fn process(
        &mut self,
        engine: &mut WindowEngine,
        calls: &mut impl AggregateCalls,
        keys: BatchKeys<'_>,
        now: i64,
    ) -> Result<WindowOutput, AggregateError> {
        let before = self.calls();
        let started = Instant::now();
        let mut timed = Timed {
            inner: calls,
            phases: self,
        };
        let out = engine.process(&mut timed, keys, now);
        self.engine += started.elapsed() - (self.calls() - before);
        out
    }

    fn ns(d: Duration) -> f64 {
        d.as_nanos() as f64 / RECORDS as f64
    }

    fn json(&self) -> Value {
        json!({
            "extract_ns_per_record": Self::ns(self.extract),
            "engine_ns_per_record": Self::ns(self.engine),
            "fold_ns_per_record": Self::ns(self.fold),
            "merge_ns_per_record": Self::ns(self.merge),
            "finish_ns_per_record": Self::ns(self.finish),
            "total_ns_per_record": Self::ns(self.total),
        })
    }
}

/// One side of one scenario.
struct Side {
    median: Pass,
    rates: Vec<f64>,
    phases: Phases,
}

impl Side {
    fn from_passes(mut passes: Vec<Pass>, phases: Phases) -> Self {
        passes.sort_by_key(|p| p.elapsed);
        let rates = passes.iter().map(Pass::records_per_s).collect();
        Self {
            median: passes[passes.len() / 2],
            rates,
            phases,
        }
    }

    fn json(&self) -> Value {
        let p = &self.median;
        json!({
            "records_per_s": p.records_per_s(),
            "ns_per_record": 1e9 / p.records_per_s(),
            "records_per_s_all_passes": self.rates,
            "results": p.results,
            "peak_open_rows": p.peak_rows,
            "acc_bytes_per_row": p.acc_bytes_per_row,
            "overhead_bytes_per_row": p.overhead_bytes_per_row,
            "open_rows_at_end": p.rows_at_end,
            "phases": self.phases.json(),
        })
    }
}

struct Outcome {
    scenario: &'static Scenario,
    wasm: Side,
    native: Side,
}

impl Outcome {
    /// Relative throughput of wasm.
    fn ratio(&self) -> f64 {
        self.wasm.median.records_per_s() / self.native.median.records_per_s()
    }

    fn pass(&self) -> bool {
        self.wasm.median.records_per_s() >= BAR_RECORDS_PER_S
    }
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let load_before = announce("Sluice window benchmark: aggregates, wasm vs native");
    println!(
        "method: {RECORDS} sample events, {USERS} users, {BATCH}-record batches; per scenario and side 1 warm-up pass, {PASSES} alternating timed passes (median records/s), 1 phase-timing pass"
    );

    let only = name_filters();
    let building = Instant::now();
    let input = sample_input();
    println!(
        "input: {} batches built in {:.1} s (not timed)",
        input.batches.len(),
        building.elapsed().as_secs_f64()
    );
    println!();

    let runtime = Runtime::new()?;

    let mut input = input;
    let mut outcomes = Vec::new();
    for scenario in SCENARIOS {
        if !only.is_empty() && !only.iter().any(|o| scenario.name.contains(o.as_str())) {
            continue;
        }
        let name = scenario.guest.name();
        let path = sluice_tests::guest(name);
        let bytes = std::fs::read(&path)
            .map_err(|e| anyhow::anyhow!("cannot read guest {}: {e}", path.display()))?;
        let module = runtime.load(name, &bytes)?;
        let outcome = run_scenario(&module, scenario, &mut input)?;
        println!(
            "  {:<19} wasm {:>5.2} M rec/s, native {:>5.2} M rec/s, {} results, peak {} rows",
            scenario.name,
            outcome.wasm.median.records_per_s() / 1e6,
            outcome.native.median.records_per_s() / 1e6,
            outcome.wasm.median.results,
            outcome.wasm.median.peak_rows,
        );
        outcomes.push(outcome);
    }
    let load_after = loadavg();

    println!();
    print!("{}", table(&outcomes));
    println!();
    print!("{}", phase_table(&outcomes));
    println!();
    println!(
        "ratio = wasm rec/s / native rec/s; bar: wasm >= {:.0} M records/s on one core",
        BAR_RECORDS_PER_S / 1e6
    );
    println!(
        "phases: guest calls (host side included: conversion, copies into and out of the guest), engine = the rest of WindowEngine::process"
    );
    println!("load average at end: {load_after}");

    let report = json!({
        "machine": {
            "nproc": nproc(),
            "cpu": cpu_model(),
            "loadavg_start": load_before,
            "loadavg_end": load_after,
        },
        "input": {
            "records": RECORDS,
            "users": USERS,
            "batch_records": BATCH,
            "partitions": PARTITIONS,
            "record_spacing_ms": 100,
        },
        "method": {
            "passes_per_side": PASSES,
            "statistic": "median records/s over passes of all records through a fresh step",
        },
        "bar_records_per_s": BAR_RECORDS_PER_S,
        "scenarios": outcomes.iter().map(|o| json!({
            "scenario": o.scenario.name,
            "guest": o.scenario.guest.name(),
            "spec": o.scenario.spec,
            "wasm": o.wasm.json(),
            "native": o.native.json(),
            "ratio_wasm_over_native": o.ratio(),
            "pass": o.pass(),
        })).collect::<Vec<_>>(),
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    write_report("windows.json", &report, started)
}

fn run_scenario(
    module: &Module,
    scenario: &'static Scenario,
    input: &mut Input,
) -> anyhow::Result<Outcome> {
    let spec: WindowSpec = serde_yaml_ng::from_str(scenario.spec)?;

    // Both sides must agree before their times are compared.
    let guest = scenario.guest;
    let wasm_check = wasm_pass(module, &spec, input, true)?;
    let native_check = native_pass(guest, &spec, input, true);
    assert_eq!(
        (wasm_check.results, wasm_check.digest),
        (native_check.results, native_check.digest),
        "{}: wasm and native results differ",
        scenario.name
    );
    assert_eq!(
        wasm_check.dead_letters, 0,
        "{}: unexpected dead letters",
        scenario.name
    );
    assert_eq!(native_check.dead_letters, 0);

    let (mut wasm, mut native) = (Vec::new(), Vec::new());
    for _ in 0..PASSES {
        wasm.push(wasm_pass(module, &spec, input, false)?);
        native.push(native_pass(guest, &spec, input, false));
    }
    for p in wasm.iter().chain(&native) {
        assert_eq!(p.results, wasm_check.results, "passes disagree");
    }
    let wasm_phases = wasm_phases(module, &spec, input)?;
    let native_phases = native_phases(guest, &spec, input);
    Ok(Outcome {
        scenario,
        wasm: Side::from_passes(wasm, wasm_phases),
        native: Side::from_passes(native, native_phases),
    })
}

// ---------------------------------------------------------------- wasm side

fn aggregator(module: &Module) -> anyhow::Result<Aggregator> {
    let labels = Labels {
        pipeline: Arc::from("bench"),
        step: Arc::from("windows"),
        module: Arc::from(module.name()),
    };
    Ok(Aggregator::new(
        module,
        labels,
        Limits::default(),
        Vec::new(),
    )?)
}

/// All batches through a fresh `AggregateStep`, as the pipeline runs it.
fn wasm_pass(
    module: &Module,
    spec: &WindowSpec,
    input: &mut Input,
    digest: bool,
) -> anyhow::Result<Pass> {
    let mut step = AggregateStep::new(aggregator(module)?, spec.clone())?;
    let mut pass = Pass::default();
    let mut hasher = DefaultHasher::new();
    let start = Instant::now();
    for (batch, &now) in input.batches.iter_mut().zip(&input.now) {
        let out = step.process(black_box(batch), now)?;
        pass.results += out.records.len() as u64;
        pass.dead_letters += out.dead_letters.len() as u64;
        if digest {
            hash_results(&mut hasher, &out.records, &out.inputs, &out.windows);
        }
        pass.observe(step.engine());
    }
    pass.elapsed = start.elapsed();
    pass.digest = hasher.finish();
    pass.rows_at_end = step.engine().state_rows();
    // A fault (say, a deadline hit on an overloaded machine) would have timed
    // fault isolation rather than the guest.
    let stats = step.aggregator().stats();
    anyhow::ensure!(
        stats.traps + stats.deadline_hits + stats.memory_hits + stats.restarts == 0,
        "the guest faulted while being timed: {stats:?}"
    );
    Ok(pass)
}

/// The engine's view of a batch, with the keys and event times that
/// `extract` gave; `skip` empty, or one entry per record.
fn batch_keys<'a>(
    keys: &'a [u8],
    key_offsets: &'a [u32],
    event_times: &'a [i64],
    skip: &'a [bool],
    batch: &'a Batch,
) -> BatchKeys<'a> {
    BatchKeys {
        keys,
        key_offsets,
        event_times,
        skip,
        sources: &batch.sources,
        partitions: &batch.partitions,
        offsets: &batch.offsets,
        upstreams: &[],
        marks: &[],
    }
}

/// The pieces of `AggregateStep::process`, each timed.
fn wasm_phases(module: &Module, spec: &WindowSpec, input: &mut Input) -> anyhow::Result<Phases> {
    let mut aggregator = aggregator(module)?;
    let mut engine = WindowEngine::new(spec.clone())?;
    let mut phases = Phases::default();
    let start = Instant::now();
    for (batch, &now) in input.batches.iter_mut().zip(&input.now) {
        let t0 = Instant::now();
        let extracted = aggregator.extract(batch)?;
        phases.extract += t0.elapsed();
        assert!(extracted.kept.is_none() && extracted.dead_letters.is_empty());
        let keys = batch_keys(
            &extracted.keys,
            &extracted.key_offsets,
            &extracted.event_times,
            &[],
            batch,
        );
        black_box(phases.process(&mut engine, &mut aggregator, keys, now)?);
    }
    phases.total = start.elapsed();
    Ok(phases)
}

// ------------------------------------------------------------------ shared

/// Times every call through `inner`.
struct Timed<'a, C> {
    inner: &'a mut C,
    phases: &'a mut Phases,
}

impl<C: AggregateCalls> AggregateCalls for Timed<'_, C> {
    fn fold(&mut self, r: window::FoldRequest) -> Result<window::FoldResult, AggregateError> {
        let t = Instant::now();
        let out = self.inner.fold(r);
        self.phases.fold += t.elapsed();
        out
    }

    fn merge(&mut self, r: window::MergeRequest) -> Result<window::Accumulators, AggregateError> {
        let t = Instant::now();
        let out = self.inner.merge(r);
        self.phases.merge += t.elapsed();
        out
    }

    fn finish(&mut self, r: window::FinishRequest) -> Result<StepOutput, AggregateError> {
        let t = Instant::now();
        let out = self.inner.finish(r);
        self.phases.finish += t.elapsed();
        out
    }
}

fn hash_results(
    hasher: &mut DefaultHasher,
    records: &Columns,
    inputs: &[u32],
    windows: &[sluice::window::WindowRef],
) {
    for (i, record) in records.iter().enumerate() {
        record.key.hash(hasher);
        record.value.hash(hasher);
        record.timestamp.hash(hasher);
        let w = &windows[inputs[i] as usize];
        (&w.key, w.start, w.end, w.is_final).hash(hasher);
    }
}

/// The sample events in batches, with record timestamps 100 ms apart,
/// round-robin over the partitions (offsets per partition).
fn sample_input() -> Input {
    let options = SampleOptions {
        count: RECORDS,
        users: USERS,
        malformed_every: 0,
        ..SampleOptions::default()
    };
    let mut batches = Vec::with_capacity(RECORDS as usize / BATCH);
    let mut now = Vec::with_capacity(batches.capacity());
    let mut batch = Batch::with_capacity(BATCH, BATCH * 128);
    for n in 0..RECORDS {
        let (key, value) = sample_record(&options, n);
        let ts = options.start_ms + n as i64 * 100;
        batch
            .records
            .push(Some(key.as_bytes()), Some(&value), Some(ts), []);
        batch.partitions.push((n % PARTITIONS) as i32);
        batch.offsets.push((n / PARTITIONS) as i64);
        batch.sources.push(0);
        if batch.len() == BATCH {
            batches.push(std::mem::replace(
                &mut batch,
                Batch::with_capacity(BATCH, BATCH * 128),
            ));
            now.push(ts);
        }
    }
    assert!(batch.is_empty(), "RECORDS is a multiple of BATCH");
    Input { batches, now }
}

fn table(outcomes: &[Outcome]) -> String {
    let header = [
        "scenario",
        "side",
        "rec/s",
        "ns/rec",
        "results",
        "peak rows",
        "acc B/row",
        "overhead B/row",
        "wasm/native",
        "bar",
    ];
    let mut rows = Vec::new();
    for o in outcomes {
        for (side, s) in [("wasm", &o.wasm), ("native", &o.native)] {
            let p = &s.median;
            let wasm = side == "wasm";
            rows.push(vec![
                o.scenario.name.to_owned(),
                side.to_owned(),
                rate(p.records_per_s()),
                format!("{:.0}", 1e9 / p.records_per_s()),
                p.results.to_string(),
                p.peak_rows.to_string(),
                format!("{:.1}", p.acc_bytes_per_row),
                p.overhead_bytes_per_row.to_string(),
                if wasm {
                    format!("{:.2}x", o.ratio())
                } else {
                    "-".to_owned()
                },
                match (wasm, o.pass()) {
                    (false, _) => "-".to_owned(),
                    (true, true) => "PASS".to_owned(),
                    (true, false) => "MISS".to_owned(),
                },
            ]);
        }
    }
    render(&header, &rows, &[0, 1, 9])
}

fn phase_table(outcomes: &[Outcome]) -> String {
    let header = [
        "ns/record",
        "side",
        "extract",
        "engine",
        "fold",
        "merge",
        "finish",
        "total",
    ];
    let mut rows = Vec::new();
    for o in outcomes {
        for (side, s) in [("wasm", &o.wasm), ("native", &o.native)] {
            let p = &s.phases;
            rows.push(vec![
                o.scenario.name.to_owned(),
                side.to_owned(),
                format!("{:.0}", Phases::ns(p.extract)),
                format!("{:.0}", Phases::ns(p.engine)),
                format!("{:.0}", Phases::ns(p.fold)),
                format!("{:.0}", Phases::ns(p.merge)),
                format!("{:.0}", Phases::ns(p.finish)),
                format!("{:.0}", Phases::ns(p.total)),
            ]);
        }
    }
    render(&header, &rows, &[0, 1])
}

fn rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M", per_s / 1e6)
    } else {
        format!("{:.0} k", per_s / 1e3)
    }
}
