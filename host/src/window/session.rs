//! Session windows: a batch's records of a key form new sessions, which join
//! the key's open sessions they overlap or touch. Every resulting session
//! costs one fold group (its records, in event-time order, folded into its
//! earliest existing session's accumulator, or a fresh one) and, if it joins
//! several existing sessions, one merge group (that accumulator, then the
//! other sessions', in start order). Chains are resolved here, so a batch
//! makes one `fold` and at most one `merge` call.

use std::ops::Range;

use super::assign::{clusters, components};
use super::calls::{AggregateCalls, AggregateError, FoldRequest, MergeRequest};
use super::engine::{BatchKeys, WindowEngine, WindowOutput};
use super::fold::{Item, held_of, runs};
use super::state::{Key, hold};

/// One session the batch creates or changes.
struct Plan {
    start: i64,
    end: i64,
    /// Starts of the existing sessions it absorbs, in order.
    existing: Vec<i64>,
    /// Its records: a range of the sorted items.
    records: Range<usize>,
    /// Its merge group, if it joins several existing sessions.
    merge: Option<usize>,
}

impl WindowEngine {
    /// `items` are sorted by (key, event time). Returns the changed sessions.
    pub(super) fn fold_sessions(
        &mut self,
        calls: &mut impl AggregateCalls,
        batch: &BatchKeys<'_>,
        items: &[Item],
        gap: i64,
        out: &mut WindowOutput,
    ) -> Result<Vec<(Key, i64)>, AggregateError> {
        let keys = runs(items, |a, b| a.same_key(b, batch));
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut plans = Vec::new();
        let mut fold = FoldRequest::default();
        let mut merge = MergeRequest::default();
        for run in &keys {
            let key = batch.key(items[run.start].rec);
            let times: Vec<i64> = items[run.clone()].iter().map(|it| it.t).collect();
            let new = clusters(&times, gap);
            let rows = self.state.rows_of(key);
            let existing: Vec<(i64, i64)> = rows.iter().map(|r| (r.start, r.end)).collect();
            for c in components(&existing, &new) {
                let records = run.start + new[c.clusters.start].records.start
                    ..run.start + new[c.clusters.end - 1].records.end;
                let absorbed = &rows[c.existing.clone()];
                match absorbed.first() {
                    Some(first) => {
                        fold.accumulators.push(&first.acc);
                        fold.fresh.push(0);
                    }
                    None => {
                        fold.accumulators.push(&[]);
                        fold.fresh.push(1);
                    }
                }
                fold.records
                    .extend(items[records.clone()].iter().map(|it| it.rec));
                fold.group_offsets.push(fold.records.len() as u32);
                let merge_group = (absorbed.len() > 1).then(|| {
                    // The first member is the fold result, filled in below.
                    for row in &absorbed[1..] {
                        merge.accumulators.push(&row.acc);
                    }
                    merge.group_offsets.push(merge.accumulators.len() as u32);
                    merge.group_offsets.len() - 2
                });
                plans.push(Plan {
                    start: c.start,
                    end: c.end,
                    existing: absorbed.iter().map(|r| r.start).collect(),
                    records,
                    merge: merge_group,
                });
            }
        }

        let folded = Self::fold_call(calls, fold, batch.len(), out)?;
        let mut inputs = None;
        let merged = if merge.group_offsets.len() > 1 {
            let request = with_fold_results(merge, &plans, &folded);
            let groups = request.group_offsets.len() - 1;
            inputs = Some(request.clone());
            let merged = calls.merge_isolated(request)?;
            merged
                .accumulators
                .check(groups)
                .map_err(|e| AggregateError::Invalid(format!("merge: {e}")))?;
            Some(merged)
        } else {
            None
        };

        let mut changed = Vec::with_capacity(plans.len());
        for (g, plan) in plans.iter().enumerate() {
            let key = self.state.intern(batch.key(items[plan.records.start].rec));
            let mut held = held_of(batch, &items[plan.records.clone()]);
            for &start in &plan.existing {
                if let Some(row) = self.state.remove(&key, start) {
                    self.state.remove_timer(&(row.end, start, key.clone()));
                    for (p, offset) in row.held {
                        hold(&mut held, p, offset);
                    }
                }
            }
            let acc = match (plan.merge, &merged) {
                (Some(m), Some(merged)) => {
                    if let Some((_, reason)) = merged.failed.iter().find(|(f, _)| *f as usize == m)
                    {
                        // The sessions cannot be joined: they leave the state
                        // for the dead-letter topic, the new records' fold
                        // result first.
                        let inputs = inputs.as_ref().expect("set with `merged`");
                        let mut accumulators = super::calls::Accumulators::default();
                        for i in inputs.group_offsets[m]..inputs.group_offsets[m + 1] {
                            accumulators.push(inputs.accumulators.get(i as usize));
                        }
                        out.failed.push(super::FailedWindow {
                            key: key.clone(),
                            start: plan.start,
                            end: plan.end,
                            accumulators,
                            reason: reason.clone(),
                        });
                        continue;
                    }
                    merged.accumulators.get(m)
                }
                _ => folded.get(g),
            };
            // The map's key: `key` is not it if the merged sessions were
            // the key's only rows (their removal dropped its entry).
            let (shared, first) = self.state.upsert(&key, plan.start, plan.end, acc, &held);
            let key = shared.clone();
            if first {
                changed.push((key.clone(), plan.start));
            }
            self.state.add_timer((plan.end, plan.start, key));
        }
        Ok(changed)
    }
}

/// Puts each merge group's first member, the fold result of its session,
/// in front of the group's other accumulators.
fn with_fold_results(
    rest: MergeRequest,
    plans: &[Plan],
    folded: &super::calls::Accumulators,
) -> MergeRequest {
    let mut request = MergeRequest::default();
    for (g, plan) in plans.iter().enumerate() {
        let Some(m) = plan.merge else { continue };
        request.accumulators.push(folded.get(g));
        let others = rest.group_offsets[m] as usize..rest.group_offsets[m + 1] as usize;
        for i in others {
            request.accumulators.push(rest.accumulators.get(i));
        }
        request
            .group_offsets
            .push(request.accumulators.len() as u32);
    }
    request
}
