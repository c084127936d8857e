//! Folding a batch into panes (tumbling and hopping windows), and what
//! every kind of window shares: the `fold` call and its checks.

use std::ops::Range;

use super::PartitionId;
use super::assign::windows_of_pane;
use super::calls::{Accumulators, AggregateCalls, AggregateError, FoldRequest};
use super::engine::{BatchKeys, WindowEngine, WindowOutput};
use super::state::{Key, hold};

/// A record to fold: its index, group start (pane or own session start)
/// and event time.
#[derive(Debug, Clone, Copy)]
pub(super) struct Item {
    pub rec: u32,
    pub start: i64,
    pub t: i64,
}

impl WindowEngine {
    /// Calls `fold` and checks its answer; the rejected records go to `out`.
    pub(super) fn fold_call(
        calls: &mut impl AggregateCalls,
        request: FoldRequest,
        batch_len: usize,
        out: &mut WindowOutput,
    ) -> Result<Accumulators, AggregateError> {
        let groups = request.fresh.len();
        let mut requested = vec![false; batch_len];
        for &r in &request.records {
            requested[r as usize] = true;
        }
        let result = calls.fold(request)?;
        result
            .accumulators
            .check(groups)
            .map_err(|e| AggregateError::Invalid(format!("fold: {e}")))?;
        for (i, reason) in result.dead_letters {
            if !requested.get(i as usize).copied().unwrap_or(false) {
                return Err(AggregateError::Invalid(format!(
                    "fold dead-lettered record {i}, which it was not asked to fold"
                )));
            }
            out.dead_letters.push((i, reason));
        }
        Ok(result.accumulators)
    }

    /// Tumbling and hopping: one fold group per (key, pane). A new pane
    /// registers the timers of its windows that are still open.
    #[allow(
        clippy::too_many_arguments,
        reason = "the pane shape and watermark limit are per batch"
    )]
    pub(super) fn fold_panes(
        &mut self,
        calls: &mut impl AggregateCalls,
        batch: &BatchKeys<'_>,
        items: &[Item],
        size: i64,
        slide: i64,
        limit: Option<i64>,
        out: &mut WindowOutput,
    ) -> Result<Vec<(Key, i64)>, AggregateError> {
        let groups = runs(items, |a, b| {
            a.start == b.start && batch.key(a.rec) == batch.key(b.rec)
        });
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let mut request = FoldRequest::default();
        for g in &groups {
            let first = items[g.start];
            match self.state.row(batch.key(first.rec), first.start) {
                Some(row) => {
                    request.accumulators.push(&row.acc);
                    request.fresh.push(0);
                }
                None => {
                    request.accumulators.push(&[]);
                    request.fresh.push(1);
                }
            }
            request
                .records
                .extend(items[g.clone()].iter().map(|it| it.rec));
            request.group_offsets.push(request.records.len() as u32);
        }
        let fresh = request.fresh.clone();
        let accs = Self::fold_call(calls, request, batch.len(), out)?;
        let mut changed = Vec::with_capacity(groups.len());
        for (g, range) in groups.iter().enumerate() {
            let start = items[range.start].start;
            let key = self.state.intern(batch.key(items[range.start].rec));
            let held = held_of(batch, &items[range.clone()]);
            let end = start.saturating_add(size);
            if self.state.upsert(&key, start, end, accs.get(g), &held) {
                changed.push((key.clone(), start));
            }
            if fresh[g] == 1 {
                for s in windows_of_pane(start, size, slide) {
                    let end = s.saturating_add(size);
                    if limit.is_none_or(|l| end > l) {
                        self.state.add_timer((end, s, key.clone()));
                    }
                }
            }
        }
        Ok(changed)
    }
}

/// Ranges of consecutive items that `same` says belong together.
pub(super) fn runs<T>(items: &[T], same: impl Fn(&T, &T) -> bool) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for i in 0..items.len() {
        match out.last_mut() {
            Some(r) if same(&items[r.start], &items[i]) => r.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// Lowest offset per partition among `items`.
pub(super) fn held_of(batch: &BatchKeys<'_>, items: &[Item]) -> Vec<(PartitionId, i64)> {
    let mut held = Vec::with_capacity(1);
    for it in items {
        hold(
            &mut held,
            batch.partition(it.rec),
            batch.offsets[it.rec as usize],
        );
    }
    held
}
