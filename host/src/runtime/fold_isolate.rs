//! Fault isolation for an aggregate's `fold`: a record that makes the guest
//! trap, run out of time or memory, or fail the whole call is dead-lettered
//! with the reason, and the rest of the batch is folded as if it were not
//! there.
//!
//! `fold` refers to records of the batch the guest holds from `extract`, and
//! a faulted instance is replaced, so each retry first hands the same batch
//! to a fresh instance. The request is then split in two at the middle of
//! its (group-major, event-time ordered) records: the first half folds into
//! the groups' accumulators, the second half continues from the first
//! half's results, so every group still sees its records in order. A half
//! that faults is split again, down to single records, which are the ones
//! dead-lettered. This costs about `2 log2(n)` extra calls per faulty record
//! and nothing when no fault happens, like the transform path.

use super::aggregate::{Aggregator, fold_from_wit, fold_to_wit};
use crate::batch::Batch;
use crate::runtime::StepOutput;
use crate::window::{
    self, AggregateCalls, AggregateError, FinishRequest, FoldRequest, FoldResult, MergeRequest,
};

/// The window engine's view of an aggregate guest during one batch: `fold`
/// faults are isolated record by record; `merge` and `finish` are passed
/// through (a fault there still stops the step).
pub struct BatchCalls<'a> {
    pub aggregator: &'a mut Aggregator,
    /// The batch the guest holds (what its last `extract` was given).
    pub held: &'a Batch,
}

impl std::fmt::Debug for BatchCalls<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchCalls")
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl BatchCalls<'_> {
    /// A fresh instance holding the same batch.
    fn recover(&mut self) -> Result<(), AggregateError> {
        self.aggregator
            .restart()
            .map_err(|e| AggregateError::Guest(format!("cannot restart the guest: {e}")))?;
        let mut batch = self.held.clone();
        match self.aggregator.extract_call(&mut batch) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(message)) => Err(AggregateError::Guest(format!(
                "extract failed on retry: {message}"
            ))),
            Err(fault) => Err(AggregateError::Guest(format!(
                "extract failed on retry: {}",
                fault.reason()
            ))),
        }
    }

    /// Folds `request`, isolating the records that fault.
    fn fold_isolated(
        &mut self,
        request: FoldRequest,
        dead: &mut Vec<(u32, String)>,
    ) -> Result<window::Accumulators, AggregateError> {
        let wit = fold_to_wit(request);
        let error = match self.aggregator.fold_window(&wit) {
            Ok(result) => {
                dead.extend(result.dead_letters);
                return Ok(result.accumulators);
            }
            Err(e) => e,
        };
        let request = fold_from_wit(wit);
        self.recover()?;
        match request.records.len() {
            0 => Err(AggregateError::Guest(format!(
                "fold fails even without records: {error}"
            ))),
            1 => {
                dead.push((request.records[0], error.to_string()));
                // The groups as they were, without the record.
                let without = FoldRequest {
                    records: Vec::new(),
                    group_offsets: vec![0; request.group_offsets.len()],
                    ..request
                };
                self.fold_isolated(without, dead)
            }
            n => {
                let (first, second) = split(request, n / 2);
                let accumulators = self.fold_isolated(first, dead)?;
                let second = FoldRequest {
                    fresh: vec![0; second.fresh.len()],
                    accumulators,
                    ..second
                };
                self.fold_isolated(second, dead)
            }
        }
    }
}

/// Splits a request's records at `mid`: both halves keep every group; the
/// second one's accumulators are to be replaced by the first one's results.
fn split(request: FoldRequest, mid: usize) -> (FoldRequest, FoldRequest) {
    let mid32 = mid as u32;
    let first = FoldRequest {
        accumulators: request.accumulators.clone(),
        fresh: request.fresh.clone(),
        records: request.records[..mid].to_vec(),
        group_offsets: request
            .group_offsets
            .iter()
            .map(|&o| o.min(mid32))
            .collect(),
    };
    let second = FoldRequest {
        accumulators: request.accumulators,
        fresh: request.fresh,
        records: request.records[mid..].to_vec(),
        group_offsets: request
            .group_offsets
            .iter()
            .map(|&o| o.max(mid32) - mid32)
            .collect(),
    };
    (first, second)
}

impl AggregateCalls for BatchCalls<'_> {
    fn fold(&mut self, request: FoldRequest) -> Result<FoldResult, AggregateError> {
        // The fast path moves the request into the call; only after a fault
        // is it taken back, to be split.
        let wit = fold_to_wit(request);
        let first = match self.aggregator.fold_window(&wit) {
            Ok(result) => return Ok(result),
            Err(e) => e,
        };
        let request = fold_from_wit(wit);
        tracing::warn!(
            reason = %first,
            records = request.records.len(),
            "aggregate guest fault in fold; isolating the records that cause it"
        );
        self.recover()?;
        let mut dead_letters = Vec::new();
        let accumulators = self.fold_isolated(request, &mut dead_letters)?;
        dead_letters.sort_by_key(|d| d.0);
        Ok(FoldResult {
            accumulators,
            dead_letters,
        })
    }

    fn merge(&mut self, request: MergeRequest) -> Result<window::Accumulators, AggregateError> {
        self.aggregator.merge_calls(request)
    }

    fn finish(&mut self, request: FinishRequest) -> Result<StepOutput, AggregateError> {
        self.aggregator.finish_calls(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_groups_and_order() {
        let request = FoldRequest {
            accumulators: window::Accumulators::default(),
            fresh: vec![1, 1, 1],
            records: vec![10, 11, 12, 20, 30, 31],
            group_offsets: vec![0, 3, 4, 6],
        };
        let (a, b) = split(request, 2);
        assert_eq!(
            (a.records, a.group_offsets),
            (vec![10, 11], vec![0, 2, 2, 2])
        );
        assert_eq!(
            (b.records, b.group_offsets),
            (vec![12, 20, 30, 31], vec![0, 1, 2, 4])
        );
    }
}
