//! The native side: the scenario's guest crate behind the SDK's aggregate
//! glue (the code its wasm exports run), as the engine's `AggregateCalls`,
//! driven by the same `WindowEngine` as the wasm side.

use std::hash::{DefaultHasher, Hasher};
use std::hint::black_box;
use std::time::Instant;

use count_sum::CountSumAgg;
use event_window_agg::EventWindowAgg;
use sluice::batch::Batch;
use sluice::batch::calls::{self as window, AggregateCalls, AggregateError};
use sluice::batch::{Reason, StepOutput};
use sluice::spec::window::WindowSpec;
use sluice::window::{WindowEngine, WindowOutput};
use sluice_sdk::__private::aggregate::types as wit;
use sluice_sdk::__private::aggregate::{AggregateState, extract, finish, fold, init, merge};
use sluice_sdk::__private::types::{InputBatch, OutputBatch};
use sluice_sdk::Aggregate;

use sluice_tests::bench::{from_wit_columns, to_wit};

use super::{Guest, Input, Pass, Phases, batch_keys, hash_results};

/// The guest crate's aggregate behind the SDK glue the wasm exports run,
/// as the engine's `AggregateCalls`: the runtime's adapter minus the
/// boundary.
struct Native<T: Aggregate> {
    state: AggregateState<T>,
}

impl<T: Aggregate> Native<T> {
    fn new() -> Self {
        let mut state = AggregateState::new();
        init(&mut state, Vec::new()).expect("the bench's guests take no config");
        Self { state }
    }
}

fn to_wit_accs(a: window::Accumulators) -> wit::Accumulators {
    wit::Accumulators {
        data: a.data,
        offsets: a.offsets,
    }
}

fn from_wit_accs(a: wit::Accumulators) -> window::Accumulators {
    window::Accumulators {
        data: a.data,
        offsets: a.offsets,
    }
}

impl<T: Aggregate> AggregateCalls for Native<T> {
    fn fold(&mut self, r: window::FoldRequest) -> Result<window::FoldResult, AggregateError> {
        let request = wit::FoldRequest {
            accumulators: to_wit_accs(r.accumulators),
            fresh: r.fresh,
            records: r.records,
            group_offsets: r.group_offsets,
        };
        let result = fold(&mut self.state, &request)
            .map_err(|e| AggregateError::Guest(Reason::guest_error(&e)))?;
        Ok(window::FoldResult {
            accumulators: from_wit_accs(result.accumulators),
            dead_letters: result
                .dead_letters
                .into_iter()
                .map(|d| (d.input, Reason::from_guest(d.reason)))
                .collect(),
        })
    }

    fn merge(&mut self, r: window::MergeRequest) -> Result<window::Accumulators, AggregateError> {
        let request = wit::MergeRequest {
            accumulators: to_wit_accs(r.accumulators),
            group_offsets: r.group_offsets,
        };
        merge(&mut self.state, &request)
            .map(from_wit_accs)
            .map_err(|e| AggregateError::Guest(Reason::guest_error(&e)))
    }

    fn finish(&mut self, r: window::FinishRequest) -> Result<StepOutput, AggregateError> {
        let request = wit::FinishRequest {
            keys: r.keys,
            key_offsets: r.key_offsets,
            window_starts: r.window_starts,
            window_ends: r.window_ends,
            accumulators: to_wit_accs(r.accumulators),
            final_: r.final_,
        };
        let out = finish(&mut self.state, &request)
            .map_err(|e| AggregateError::Guest(Reason::guest_error(&e)))?;
        Ok(step_output(out))
    }
}

fn step_output(out: OutputBatch) -> StepOutput {
    StepOutput {
        records: from_wit_columns(out.records),
        inputs: out.inputs,
        targets: out.targets,
        output_names: out.output_names,
        dead_letters: out
            .dead_letters
            .into_iter()
            .map(|d| (d.input, Reason::from_guest(d.reason)))
            .collect(),
    }
}

/// One batch natively: extract, then the engine through the native calls.
fn native_batch<T: Aggregate>(
    native: &mut Native<T>,
    engine: &mut WindowEngine,
    wit_batch: InputBatch,
    batch: &Batch,
    now: i64,
) -> (WindowOutput, usize) {
    let keyed = extract(&mut native.state, wit_batch).expect("well-formed batch");
    let mut skip = vec![false; batch.len()];
    for d in &keyed.dead_letters {
        skip[d.input as usize] = true;
    }
    let keys = batch_keys(
        &keyed.keys,
        &keyed.key_offsets,
        &keyed.event_times,
        &skip,
        batch,
    );
    let out = engine.process(native, keys, now).expect("native aggregate");
    (out, keyed.dead_letters.len())
}

pub(super) fn native_pass(guest: Guest, spec: &WindowSpec, input: &Input, digest: bool) -> Pass {
    match guest {
        Guest::CountSum => pass::<CountSumAgg>(spec, input, digest),
        Guest::EventWindowAgg => pass::<EventWindowAgg>(spec, input, digest),
    }
}

pub(super) fn native_phases(guest: Guest, spec: &WindowSpec, input: &Input) -> Phases {
    match guest {
        Guest::CountSum => phases::<CountSumAgg>(spec, input),
        Guest::EventWindowAgg => phases::<EventWindowAgg>(spec, input),
    }
}

fn pass<T: Aggregate>(spec: &WindowSpec, input: &Input, digest: bool) -> Pass {
    // The batches as the guest receives them (extract takes them by value).
    let wit_batches: Vec<InputBatch> = input.batches.iter().map(to_wit).collect();
    let mut native = Native::<T>::new();
    let mut engine = WindowEngine::new(spec.clone()).expect("valid spec");
    let mut pass = Pass::default();
    let mut hasher = DefaultHasher::new();
    let start = Instant::now();
    for ((wit_batch, batch), &now) in wit_batches.into_iter().zip(&input.batches).zip(&input.now) {
        let (out, dead) = native_batch(&mut native, &mut engine, black_box(wit_batch), batch, now);
        pass.results += out.results.records.len() as u64;
        pass.dead_letters += (dead + out.dead_letters.len()) as u64;
        if digest {
            hash_results(
                &mut hasher,
                &out.results.records,
                &out.results.inputs,
                &out.windows,
            );
        }
        pass.observe(&engine);
    }
    pass.elapsed = start.elapsed();
    pass.digest = hasher.finish();
    pass.rows_at_end = engine.state_rows();
    pass
}

fn phases<T: Aggregate>(spec: &WindowSpec, input: &Input) -> Phases {
    let wit_batches: Vec<InputBatch> = input.batches.iter().map(to_wit).collect();
    let mut native = Native::<T>::new();
    let mut engine = WindowEngine::new(spec.clone()).expect("valid spec");
    let mut phases = Phases::default();
    let start = Instant::now();
    for ((wit_batch, batch), &now) in wit_batches.into_iter().zip(&input.batches).zip(&input.now) {
        let t0 = Instant::now();
        let keyed = extract(&mut native.state, wit_batch).expect("well-formed batch");
        phases.extract += t0.elapsed();
        let keys = batch_keys(
            &keyed.keys,
            &keyed.key_offsets,
            &keyed.event_times,
            &[],
            batch,
        );
        black_box(
            phases
                .process(&mut engine, &mut native, keys, now)
                .expect("native"),
        );
    }
    phases.total = start.elapsed();
    phases
}
