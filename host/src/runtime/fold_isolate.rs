//! Fault isolation for an aggregate's `fold` and `finish`: a record that
//! makes `fold` trap, run out of time or memory, or fail the whole call is
//! dead-lettered with the reason, and the rest of the batch is folded as if
//! it were not there; a window that makes `finish` fail is reported as a
//! dead letter of the window (its accumulator goes to the dead-letter
//! topic), and the other windows' results are emitted.
//!
//! `fold` refers to records of the batch the guest holds from `extract`, and
//! a faulted instance is replaced, so each retry first hands the same batch
//! to a fresh instance. The request is then split in two at the middle of
//! its (group-major, event-time ordered) records: the first half folds into
//! the groups' accumulators, the second half continues from the first
//! half's results, so every group still sees its records in order. A half
//! that faults is split again, down to single records, which are the ones
//! dead-lettered. This costs about `2 log2(n)` extra calls per faulty record
//! and nothing when no fault happens, like the transform path. `finish` is
//! bisected the same way over its windows.
//!
//! `merge` is bisected over its groups too; a group that fails is reported
//! to the window engine, which dead-letters the accumulators it could not
//! merge (the window, or the sessions, leave the state).

use super::aggregate::{Aggregator, fold_from_wit, fold_to_wit};
use crate::batch::StepOutput;
use crate::batch::calls::{
    self, AggregateCalls, AggregateError, FinishRequest, FoldRequest, FoldResult, MergeRequest,
    MergeResult,
};
use crate::batch::reason::Kind;
use crate::batch::{Batch, Reason};

/// The window engine's view of an aggregate guest during one batch: `fold`
/// faults are isolated record by record, `merge` and `finish` faults group
/// by group.
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
            .map_err(|e| AggregateError::Restart(format!("cannot restart the guest: {e}")))?;
        let mut batch = self.held.clone();
        match self.aggregator.extract_call(&mut batch) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(message)) => Err(AggregateError::Restart(format!(
                "extract failed on retry: {message}"
            ))),
            Err(fault) => Err(AggregateError::Restart(format!(
                "extract failed on retry: {fault}"
            ))),
        }
    }

    /// Folds `request`, isolating the records that fault.
    fn fold_isolated(
        &mut self,
        request: FoldRequest,
        dead: &mut Vec<(u32, Reason)>,
    ) -> Result<calls::Accumulators, AggregateError> {
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
            0 => Err(AggregateError::Restart(format!(
                "fold fails even without records: {error}"
            ))),
            1 => {
                dead.push((request.records[0], error.reason()));
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

impl BatchCalls<'_> {
    /// Finishes `request` (its groups are `base..` of the whole request)
    /// into `out`, isolating the windows that fault.
    fn finish_isolated(
        &mut self,
        request: FinishRequest,
        base: u32,
        out: &mut StepOutput,
    ) -> Result<(), AggregateError> {
        let error = match self.aggregator.finish_calls(request.clone()) {
            Ok(part) => {
                super::isolate::merge(out, part, |g| g + base);
                return Ok(());
            }
            Err(AggregateError::Poisoned) => return Err(AggregateError::Poisoned),
            Err(e) => e,
        };
        self.recover()?;
        self.finish_split(request, base, error, out)
    }

    /// After `request` failed with `error`: one window is dead-lettered,
    /// more are split in two.
    fn finish_split(
        &mut self,
        request: FinishRequest,
        base: u32,
        error: AggregateError,
        out: &mut StepOutput,
    ) -> Result<(), AggregateError> {
        match request.window_starts.len() {
            0 => Err(error),
            1 => {
                out.dead_letters.push((base, reason(error)?));
                Ok(())
            }
            n => {
                let (first, second) = split_finish(request, n / 2);
                self.finish_isolated(first, base, out)?;
                self.finish_isolated(second, base + (n / 2) as u32, out)
            }
        }
    }
}

impl BatchCalls<'_> {
    /// Merges `request` (its groups are `base..` of the whole request) into
    /// `out`, isolating the groups that fault.
    fn merge_part(
        &mut self,
        request: MergeRequest,
        base: u32,
        out: &mut MergeResult,
    ) -> Result<(), AggregateError> {
        let groups = request.group_offsets.len() - 1;
        let error = match self.aggregator.merge_calls(request.clone()) {
            Ok(merged) => match merged.check(groups) {
                Ok(()) => {
                    for acc in merged.iter() {
                        out.accumulators.push(acc);
                    }
                    return Ok(());
                }
                Err(e) => AggregateError::Invalid(format!("merge: {e}")),
            },
            Err(AggregateError::Poisoned) => return Err(AggregateError::Poisoned),
            Err(e) => e,
        };
        self.recover()?;
        self.merge_split(request, base, error, out)
    }

    /// After `request` failed with `error`: one group is reported, more are
    /// split in two.
    fn merge_split(
        &mut self,
        request: MergeRequest,
        base: u32,
        error: AggregateError,
        out: &mut MergeResult,
    ) -> Result<(), AggregateError> {
        match request.group_offsets.len() - 1 {
            0 => Err(error),
            1 => {
                out.failed.push((base, reason(error)?));
                out.accumulators.push(&[]);
                Ok(())
            }
            n => {
                let (first, second) = split_merge(request, n / 2);
                self.merge_part(first, base, out)?;
                self.merge_part(second, base + (n / 2) as u32, out)
            }
        }
    }
}

/// The dead-letter reason for a failed call (a poisoned engine, or a guest
/// that cannot be restarted, is not one).
fn reason(error: AggregateError) -> Result<Reason, AggregateError> {
    match error {
        AggregateError::Guest(reason) => Ok(reason),
        AggregateError::Invalid(what) => Ok(Reason::new(
            Kind::InvalidOutput,
            format!("invalid output: {what}"),
        )),
        AggregateError::Restart(_) | AggregateError::Poisoned => Err(error),
    }
}

/// Splits a merge request's groups at `mid`.
fn split_merge(request: MergeRequest, mid: usize) -> (MergeRequest, MergeRequest) {
    let cut = request.group_offsets[mid];
    let data_cut = request.accumulators.offsets[cut as usize];
    let first = MergeRequest {
        accumulators: calls::Accumulators {
            data: request.accumulators.data[..data_cut as usize].to_vec(),
            offsets: request.accumulators.offsets[..=cut as usize].to_vec(),
        },
        group_offsets: request.group_offsets[..=mid].to_vec(),
    };
    let second = MergeRequest {
        accumulators: calls::Accumulators {
            data: request.accumulators.data[data_cut as usize..].to_vec(),
            offsets: request.accumulators.offsets[cut as usize..]
                .iter()
                .map(|o| o - data_cut)
                .collect(),
        },
        group_offsets: request.group_offsets[mid..]
            .iter()
            .map(|o| o - cut)
            .collect(),
    };
    (first, second)
}

/// Splits a finish request's groups at `mid`.
fn split_finish(request: FinishRequest, mid: usize) -> (FinishRequest, FinishRequest) {
    let key_cut = request.key_offsets[mid];
    let acc_cut = request.accumulators.offsets[mid];
    let first = FinishRequest {
        keys: request.keys[..key_cut as usize].to_vec(),
        key_offsets: request.key_offsets[..=mid].to_vec(),
        window_starts: request.window_starts[..mid].to_vec(),
        window_ends: request.window_ends[..mid].to_vec(),
        accumulators: calls::Accumulators {
            data: request.accumulators.data[..acc_cut as usize].to_vec(),
            offsets: request.accumulators.offsets[..=mid].to_vec(),
        },
        final_: request.final_[..mid].to_vec(),
    };
    let second = FinishRequest {
        keys: request.keys[key_cut as usize..].to_vec(),
        key_offsets: request.key_offsets[mid..]
            .iter()
            .map(|o| o - key_cut)
            .collect(),
        window_starts: request.window_starts[mid..].to_vec(),
        window_ends: request.window_ends[mid..].to_vec(),
        accumulators: calls::Accumulators {
            data: request.accumulators.data[acc_cut as usize..].to_vec(),
            offsets: request.accumulators.offsets[mid..]
                .iter()
                .map(|o| o - acc_cut)
                .collect(),
        },
        final_: request.final_[mid..].to_vec(),
    };
    (first, second)
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

    fn merge(&mut self, request: MergeRequest) -> Result<calls::Accumulators, AggregateError> {
        self.aggregator.merge_calls(request)
    }

    fn merge_isolated(&mut self, request: MergeRequest) -> Result<MergeResult, AggregateError> {
        // A copy to split if the call fails (accumulators only).
        let first = match self.aggregator.merge_calls(request.clone()) {
            Ok(accumulators) => {
                return Ok(MergeResult {
                    accumulators,
                    failed: Vec::new(),
                });
            }
            Err(AggregateError::Poisoned) => return Err(AggregateError::Poisoned),
            Err(e) => e,
        };
        tracing::warn!(
            reason = %first,
            groups = request.group_offsets.len() - 1,
            "aggregate guest fault in merge; isolating the windows that cause it"
        );
        self.recover()?;
        let mut out = MergeResult::default();
        self.merge_split(request, 0, first, &mut out)?;
        Ok(out)
    }

    fn finish(&mut self, request: FinishRequest) -> Result<StepOutput, AggregateError> {
        // A copy to split if the call fails: keys and accumulators of the
        // windows due, small next to the call itself.
        let first = match self.aggregator.finish_calls(request.clone()) {
            Ok(output) => return Ok(output),
            Err(AggregateError::Poisoned) => return Err(AggregateError::Poisoned),
            Err(e) => e,
        };
        tracing::warn!(
            reason = %first,
            windows = request.window_starts.len(),
            "aggregate guest fault in finish; isolating the windows that cause it"
        );
        self.recover()?;
        let mut out = StepOutput::default();
        self.finish_split(request, 0, first, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_finish_cuts_every_column_at_the_same_window() {
        let mut accumulators = calls::Accumulators::default();
        for acc in [&b"a"[..], b"bb", b"ccc"] {
            accumulators.push(acc);
        }
        let request = FinishRequest {
            keys: b"k1k22k333".to_vec(),
            key_offsets: vec![0, 2, 5, 9],
            window_starts: vec![0, 10, 20],
            window_ends: vec![10, 20, 30],
            accumulators,
            final_: vec![1, 0, 1],
        };
        let (a, b) = split_finish(request, 1);
        assert_eq!(
            (a.keys, a.key_offsets, a.window_starts, a.final_),
            (b"k1".to_vec(), vec![0, 2], vec![0], vec![1])
        );
        assert_eq!(
            (a.accumulators.data, a.accumulators.offsets),
            (b"a".to_vec(), vec![0, 1])
        );
        assert_eq!(
            (b.keys, b.key_offsets, b.window_ends, b.final_),
            (b"k22k333".to_vec(), vec![0, 3, 7], vec![20, 30], vec![0, 1])
        );
        assert_eq!(
            (b.accumulators.data, b.accumulators.offsets),
            (b"bbccc".to_vec(), vec![0, 2, 5])
        );
    }

    #[test]
    fn split_merge_cuts_groups_and_their_accumulators() {
        let mut accumulators = calls::Accumulators::default();
        for acc in [&b"a"[..], b"bb", b"c", b"dd", b"e"] {
            accumulators.push(acc);
        }
        let request = MergeRequest {
            accumulators,
            group_offsets: vec![0, 2, 3, 5],
        };
        let (a, b) = split_merge(request, 1);
        assert_eq!(a.group_offsets, vec![0, 2]);
        assert_eq!(
            a.accumulators.iter().collect::<Vec<_>>(),
            [&b"a"[..], b"bb"]
        );
        assert_eq!(b.group_offsets, vec![0, 1, 3]);
        assert_eq!(
            b.accumulators.iter().collect::<Vec<_>>(),
            [&b"c"[..], b"dd", b"e"]
        );
    }

    #[test]
    fn split_keeps_groups_and_order() {
        let request = FoldRequest {
            accumulators: calls::Accumulators::default(),
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
