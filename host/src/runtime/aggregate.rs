//! One aggregate instance: the guest half of windowed aggregation. The host
//! (see `crate::window`) owns windows and accumulators; this type only makes
//! the calls, under the same memory cap and per-call deadline as transforms.

use wasmtime::Store;

use super::bindings::{self, AggregateGuest};
use super::instance::{Fault, Instance, step_output, with_input};
use super::module::InstantiateError;
use super::sandbox::HostState;
use crate::batch::calls::{self, AggregateError};
use crate::batch::{Batch, Reason, StepOutput};

/// Key and event time of each record the guest holds after `extract`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// Grouping keys, Arrow-style, one per held record.
    pub keys: Vec<u8>,
    pub key_offsets: Vec<u32>,
    pub event_times: Vec<i64>,
    /// Records of the input batch that cannot be aggregated: `(index, reason)`.
    pub dead_letters: Vec<(u32, Reason)>,
    /// `None`: the guest holds the whole input batch (indices in `fold`
    /// requests are batch indices). `Some(kept)`: a fault was isolated and the
    /// guest holds only these batch records, in this order; `fold` indices
    /// refer to positions in `kept`.
    pub kept: Option<Vec<u32>>,
}

/// A failed call to an aggregate guest (other than `extract`, which
/// isolates faults itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("guest error: {0}")]
    Guest(String),
    #[error("{0}")]
    Fault(Fault),
}

impl CallError {
    /// The dead-letter reason for the records or windows of a failed call.
    pub fn reason(&self) -> Reason {
        match self {
            CallError::Guest(message) => Reason::guest_error(message),
            CallError::Fault(fault) => fault.reason(),
        }
    }
}

/// A live aggregate instance.
pub type Aggregator = Instance<AggregateGuest>;

impl Aggregator {
    /// Runs one guest call under the deadline: the guest's own error or
    /// its answer, or the fault.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&AggregateGuest, &mut Store<HostState>) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<Result<R, String>, Fault> {
        self.enter(f)
    }

    pub(super) fn extract_call(
        &mut self,
        batch: &mut Batch,
    ) -> Result<Result<bindings::Keyed, String>, Fault> {
        with_input(batch, |input| {
            self.call(|guest, store| {
                guest
                    .sluice_transform_aggregate()
                    .call_extract(store, input)
            })
        })
    }

    /// Keys and event times of `batch`. A batch whose extraction faults is
    /// re-run record by record on fresh instances (a slow path taken only
    /// after a fault), so that only the faulty records are dead-lettered;
    /// the guest is then left holding the healthy records (see
    /// [`Extracted::kept`]).
    pub fn extract(&mut self, batch: &mut Batch) -> Result<Extracted, InstantiateError> {
        let n = batch.len();
        match self.extract_call(batch) {
            Ok(Ok(keyed)) => match extracted(keyed, n) {
                Ok(e) => return Ok(e),
                Err(invalid) => self.isolate_note(&Fault::InvalidOutput(invalid)),
            },
            Ok(Err(message)) => {
                let reason = Reason::guest_error(&message);
                return Ok(Extracted {
                    key_offsets: vec![0; n + 1],
                    event_times: vec![0; n],
                    dead_letters: (0..n as u32).map(|i| (i, reason.clone())).collect(),
                    ..Extracted::default()
                });
            }
            Err(fault) => self.isolate_note(&fault),
        }
        self.restart()?;
        let mut dead = Vec::new();
        let mut kept = Vec::new();
        for i in 0..n as u32 {
            let mut one = batch.select(&[i]);
            match self.extract_call(&mut one) {
                Ok(Ok(keyed)) => match extracted(keyed, 1) {
                    Ok(e) if e.dead_letters.is_empty() => kept.push(i),
                    Ok(e) => dead.extend(e.dead_letters.into_iter().map(|(_, reason)| (i, reason))),
                    Err(invalid) => dead.push((i, Fault::InvalidOutput(invalid).reason())),
                },
                Ok(Err(message)) => dead.push((i, Reason::guest_error(&message))),
                Err(fault) => {
                    dead.push((i, fault.reason()));
                    self.restart()?;
                }
            }
        }
        // Leave the guest holding exactly the healthy records.
        let mut healthy = batch.select(&kept);
        let mut result = match self.extract_call(&mut healthy) {
            Ok(Ok(keyed)) => extracted(keyed, kept.len()).map_err(InstantiateError::Trapped)?,
            Ok(Err(message)) => {
                return Err(InstantiateError::Trapped(format!("guest error: {message}")));
            }
            Err(fault) => return Err(InstantiateError::Trapped(fault.to_string())),
        };
        result.dead_letters = dead;
        result.kept = Some(kept);
        Ok(result)
    }

    fn isolate_note(&self, fault: &Fault) {
        tracing::warn!(
            pipeline = &*self.labels.pipeline,
            step = &*self.labels.step,
            reason = %fault,
            "aggregate guest fault in extract; isolating the records that cause it"
        );
    }

    fn checked<R>(result: Result<Result<R, String>, Fault>) -> Result<R, CallError> {
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(message)) => Err(CallError::Guest(message)),
            Err(fault) => Err(CallError::Fault(fault)),
        }
    }

    pub fn fold(
        &mut self,
        request: &bindings::FoldRequest,
    ) -> Result<bindings::FoldResult, CallError> {
        Self::checked(self.call(|g, s| g.sluice_transform_aggregate().call_fold(s, request)))
    }

    pub fn merge(
        &mut self,
        request: &bindings::MergeRequest,
    ) -> Result<bindings::Accumulators, CallError> {
        Self::checked(self.call(|g, s| g.sluice_transform_aggregate().call_merge(s, request)))
    }

    pub fn finish(
        &mut self,
        request: &bindings::FinishRequest,
    ) -> Result<bindings::OutputBatch, CallError> {
        Self::checked(self.call(|g, s| g.sluice_transform_aggregate().call_finish(s, request)))
    }
}

/// Checks `extract`'s answer for `n` records against the contract.
pub(super) fn extracted(keyed: bindings::Keyed, n: usize) -> Result<Extracted, String> {
    let bindings::Keyed {
        keys,
        key_offsets,
        event_times,
        dead_letters,
    } = keyed;
    if key_offsets.len() != n + 1 || event_times.len() != n {
        return Err(format!(
            "extract returned {} key offsets and {} event times for {n} records",
            key_offsets.len(),
            event_times.len()
        ));
    }
    if key_offsets[0] != 0
        || key_offsets.windows(2).any(|w| w[0] > w[1])
        || key_offsets[n] as usize != keys.len()
    {
        return Err("extract returned invalid key offsets".to_owned());
    }
    let mut dead = Vec::with_capacity(dead_letters.len());
    for bindings::DeadLetter { input, reason } in dead_letters {
        if input as usize >= n {
            return Err(format!("extract dead-lettered record {input} of {n}"));
        }
        dead.push((input, Reason::from_guest(reason)));
    }
    Ok(Extracted {
        keys,
        key_offsets,
        event_times,
        dead_letters: dead,
        kept: None,
    })
}

pub(super) fn fold_to_wit(request: calls::FoldRequest) -> bindings::FoldRequest {
    bindings::FoldRequest {
        accumulators: accumulators_to_wit(request.accumulators),
        fresh: request.fresh,
        records: request.records,
        group_offsets: request.group_offsets,
    }
}

pub(super) fn fold_from_wit(request: bindings::FoldRequest) -> calls::FoldRequest {
    calls::FoldRequest {
        accumulators: accumulators_from_wit(request.accumulators),
        fresh: request.fresh,
        records: request.records,
        group_offsets: request.group_offsets,
    }
}

pub(super) fn accumulators_to_wit(a: calls::Accumulators) -> bindings::Accumulators {
    bindings::Accumulators {
        data: a.data,
        offsets: a.offsets,
    }
}

pub(super) fn accumulators_from_wit(a: bindings::Accumulators) -> calls::Accumulators {
    calls::Accumulators {
        data: a.data,
        offsets: a.offsets,
    }
}

fn call_error(e: CallError) -> AggregateError {
    AggregateError::Guest(e.reason())
}

/// The window engine's view of the guest. A failure here stops the step (its
/// accumulators are no longer trustworthy); records of the batch are not
/// committed, so nothing is lost.
impl calls::AggregateCalls for Aggregator {
    fn fold(&mut self, request: calls::FoldRequest) -> Result<calls::FoldResult, AggregateError> {
        self.fold_window(&fold_to_wit(request)).map_err(call_error)
    }

    fn merge(
        &mut self,
        request: calls::MergeRequest,
    ) -> Result<calls::Accumulators, AggregateError> {
        self.merge_calls(request)
    }

    fn finish(&mut self, request: calls::FinishRequest) -> Result<StepOutput, AggregateError> {
        self.finish_calls(request)
    }
}

impl Aggregator {
    /// `fold` in the window engine's terms; the request stays the caller's.
    pub(super) fn fold_window(
        &mut self,
        request: &bindings::FoldRequest,
    ) -> Result<calls::FoldResult, CallError> {
        let result = Aggregator::fold(self, request)?;
        Ok(calls::FoldResult {
            accumulators: accumulators_from_wit(result.accumulators),
            dead_letters: result
                .dead_letters
                .into_iter()
                .map(|d| (d.input, Reason::from_guest(d.reason)))
                .collect(),
        })
    }

    pub(super) fn merge_calls(
        &mut self,
        request: calls::MergeRequest,
    ) -> Result<calls::Accumulators, AggregateError> {
        let request = bindings::MergeRequest {
            accumulators: accumulators_to_wit(request.accumulators),
            group_offsets: request.group_offsets,
        };
        Aggregator::merge(self, &request)
            .map(accumulators_from_wit)
            .map_err(call_error)
    }

    pub(super) fn finish_calls(
        &mut self,
        request: calls::FinishRequest,
    ) -> Result<StepOutput, AggregateError> {
        let groups = request.window_starts.len();
        let request = bindings::FinishRequest {
            keys: request.keys,
            key_offsets: request.key_offsets,
            window_starts: request.window_starts,
            window_ends: request.window_ends,
            accumulators: accumulators_to_wit(request.accumulators),
            final_: request.final_,
        };
        let output = Aggregator::finish(self, &request).map_err(call_error)?;
        step_output(output, groups).map_err(AggregateError::Invalid)
    }
}
