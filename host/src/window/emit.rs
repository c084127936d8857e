//! Emitting results: the windows due at the new watermark and, in `update`
//! mode, the changed ones; one `merge` (hopping panes) and one `finish`.

use std::collections::BTreeSet;

use super::assign::{panes_of_window, windows_of_pane};
use super::calls::{Accumulators, AggregateCalls, AggregateError, FinishRequest, MergeRequest};
use super::engine::{WindowEngine, WindowOutput, WindowRef};
use super::spec::{OutputMode, Shape};
use super::state::{AccBytes, Key};
use crate::batch::StepOutput;
use crate::batch::{HAS_KEY, HAS_TIMESTAMP};

/// Where the accumulator of a window to finish comes from.
enum Acc {
    Own(AccBytes),
    Merged(usize),
}

impl WindowEngine {
    /// Emits the windows that are due at `limit` and, in `update` mode, the
    /// open ones that changed; frees the final ones' state.
    pub(super) fn emit(
        &mut self,
        calls: &mut impl AggregateCalls,
        limit: Option<i64>,
        changed: &[(Key, i64)],
        out: &mut WindowOutput,
    ) -> Result<(), AggregateError> {
        let closed = |end: i64| limit.is_some_and(|l| end <= l);
        let finals = limit.map_or_else(Vec::new, |l| self.state.pop_due(l));
        let mut windows: Vec<(i64, i64, Key, bool)> = finals
            .into_iter()
            .map(|(end, start, key)| (end, start, key, true))
            .collect();
        let panes = match self.shape {
            Shape::Panes { size, slide } if size != slide => Some((size, slide)),
            _ => None,
        };
        if self.output == OutputMode::Update && !changed.is_empty() {
            let mut updates = BTreeSet::new();
            for (key, start) in changed {
                match panes {
                    Some((size, slide)) => {
                        for s in windows_of_pane(*start, size, slide) {
                            let end = s.saturating_add(size);
                            if !closed(end) {
                                updates.insert((end, s, key.clone()));
                            }
                        }
                    }
                    None => {
                        if let Some(row) = self.state.row(key, *start)
                            && !closed(row.end)
                        {
                            updates.insert((row.end, *start, key.clone()));
                        }
                    }
                }
            }
            windows.extend(updates.into_iter().map(|(e, s, k)| (e, s, k, false)));
            windows.sort_unstable();
        }
        if windows.is_empty() {
            return Ok(());
        }

        // The accumulator of each window: its own row's, or its panes' merged.
        let mut merge = MergeRequest::default();
        let mut accs = Vec::with_capacity(windows.len());
        windows.retain(|(_, start, key, is_final)| {
            let acc = match panes {
                None if *is_final => self.state.remove(key, *start).map(|r| Acc::Own(r.acc)),
                None => self.state.row(key, *start).map(|r| Acc::Own(r.acc.clone())),
                Some((size, slide)) => {
                    let rows = self.state.rows_of(key);
                    let mut found = panes_of_window(*start, size, slide)
                        .filter_map(|p| {
                            rows.binary_search_by_key(&p, |r| r.start)
                                .ok()
                                .map(|i| &rows[i])
                        })
                        .peekable();
                    let first = found.next();
                    match (first, found.peek()) {
                        (None, _) => None,
                        (Some(only), None) => Some(Acc::Own(only.acc.clone())),
                        (Some(first), Some(_)) => {
                            merge.accumulators.push(&first.acc);
                            for row in found {
                                merge.accumulators.push(&row.acc);
                            }
                            merge.group_offsets.push(merge.accumulators.len() as u32);
                            Some(Acc::Merged(merge.group_offsets.len() - 2))
                        }
                    }
                }
            };
            let kept = acc.is_some();
            accs.extend(acc);
            kept
        });
        let merged = if merge.group_offsets.len() > 1 {
            let groups = merge.group_offsets.len() - 1;
            // The panes' accumulators, for the windows the guest cannot merge.
            let inputs = merge.clone();
            let merged = calls.merge_isolated(merge)?;
            merged
                .accumulators
                .check(groups)
                .map_err(|e| AggregateError::Invalid(format!("merge: {e}")))?;
            if !merged.failed.is_empty() {
                self.drop_unmerged(&mut windows, &mut accs, &inputs, &merged.failed, out);
            }
            merged.accumulators
        } else {
            Accumulators::default()
        };
        if panes.is_some() {
            // A pane outlives all its windows but the one starting with it.
            for (_, start, key, is_final) in &windows {
                if *is_final {
                    self.state.remove(key, *start);
                }
            }
        }

        let mut request = FinishRequest::default();
        for ((end, start, key, is_final), acc) in windows.iter().zip(&accs) {
            request.keys.extend_from_slice(key);
            request.key_offsets.push(request.keys.len() as u32);
            request.window_starts.push(*start);
            request.window_ends.push(*end);
            request.final_.push(u8::from(*is_final));
            match acc {
                Acc::Own(acc) => request.accumulators.push(acc),
                Acc::Merged(m) => request.accumulators.push(merged.get(*m)),
            }
        }
        let accumulators = request.accumulators.clone();
        let results = calls.finish(request)?;
        let n = windows.len();
        if results.inputs.iter().any(|&i| i as usize >= n)
            || results.dead_letters.iter().any(|d| d.0 as usize >= n)
        {
            return Err(AggregateError::Invalid(format!(
                "finish referred to a group beyond its {n} groups"
            )));
        }
        results
            .records
            .validate()
            .map_err(|e| AggregateError::Invalid(format!("finish: {e}")))?;
        if results.records.len() != results.inputs.len() {
            return Err(AggregateError::Invalid(
                "finish returned records and input indices of different lengths".to_owned(),
            ));
        }
        out.dead_accumulators = results
            .dead_letters
            .iter()
            .map(|(g, _)| accumulators.get(*g as usize).to_vec())
            .collect();
        out.results = results;
        fill_defaults(&mut out.results, &windows);
        out.windows = windows
            .into_iter()
            .map(|(end, start, key, is_final)| WindowRef {
                key,
                start,
                end,
                is_final,
            })
            .collect();
        Ok(())
    }
}

impl WindowEngine {
    /// Takes the windows whose panes the guest could not merge out of the
    /// ones to finish, into `out.failed` with their panes' accumulators.
    fn drop_unmerged(
        &mut self,
        windows: &mut Vec<(i64, i64, Key, bool)>,
        accs: &mut Vec<Acc>,
        inputs: &MergeRequest,
        failed: &[(u32, crate::batch::Reason)],
        out: &mut WindowOutput,
    ) {
        let mut kept = Vec::with_capacity(windows.len());
        let mut kept_accs = Vec::with_capacity(accs.len());
        for (window, acc) in windows.drain(..).zip(accs.drain(..)) {
            let failure = match &acc {
                Acc::Merged(m) => failed.iter().find(|(g, _)| *g as usize == *m),
                Acc::Own(_) => None,
            };
            let Some((g, reason)) = failure else {
                kept.push(window);
                kept_accs.push(acc);
                continue;
            };
            let (end, start, key, is_final) = window;
            if is_final {
                // As for a window that is finished: its first pane goes.
                self.state.remove(&key, start);
            }
            let range = inputs.group_offsets[*g as usize] as usize
                ..inputs.group_offsets[*g as usize + 1] as usize;
            let mut accumulators = Accumulators::default();
            for i in range {
                accumulators.push(inputs.accumulators.get(i));
            }
            out.failed.push(super::FailedWindow {
                key,
                start,
                end,
                accumulators,
                reason: reason.clone(),
            });
        }
        *windows = kept;
        *accs = kept_accs;
    }
}

/// What the contract promises for `finish` output: a record without a
/// timestamp gets its window's `end - 1`, one without a key its group's key.
fn fill_defaults(results: &mut StepOutput, windows: &[(i64, i64, Key, bool)]) {
    let records = &mut results.records;
    for (i, &g) in results.inputs.iter().enumerate() {
        if records.flags[i] & HAS_TIMESTAMP == 0 {
            records.timestamps[i] = windows[g as usize].0.saturating_sub(1);
            records.flags[i] |= HAS_TIMESTAMP;
        }
    }
    if records.flags.iter().all(|f| f & HAS_KEY != 0) {
        return;
    }
    let mut keys = Vec::with_capacity(records.keys.len());
    let mut offsets = Vec::with_capacity(records.key_offsets.len());
    offsets.push(0);
    for (i, &g) in results.inputs.iter().enumerate() {
        if records.flags[i] & HAS_KEY != 0 {
            let own = records.key_offsets[i] as usize..records.key_offsets[i + 1] as usize;
            keys.extend_from_slice(&records.keys[own]);
        } else {
            keys.extend_from_slice(&windows[g as usize].2);
            records.flags[i] |= HAS_KEY;
        }
        offsets.push(keys.len() as u32);
    }
    records.keys = keys;
    records.key_offsets = offsets;
}
