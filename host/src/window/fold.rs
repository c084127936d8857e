//! Folding a batch into panes (tumbling and hopping windows), and what
//! every kind of window shares: the `fold` call and its checks.

use std::cmp::Ordering;
use std::ops::Range;

use super::PartitionId;
use super::assign::windows_of_pane;
use super::calls::{Accumulators, AggregateCalls, AggregateError, FoldRequest};
use super::engine::{BatchKeys, WindowEngine, WindowOutput};
use super::spec::OutputMode;
use super::state::{Key, hold, prefix};

/// A record to fold: its index, group start (pane or own session start)
/// and event time, and the first bytes and length of its key, which decide
/// most key comparisons without reading the key itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct Item {
    pub rec: u32,
    pub start: i64,
    pub t: i64,
    prefix: u64,
    len: u32,
}

impl Item {
    pub(super) fn new(batch: &BatchKeys<'_>, rec: u32, start: i64, t: i64) -> Self {
        let key = batch.key(rec);
        Self {
            rec,
            start,
            t,
            prefix: prefix(key),
            len: u32::try_from(key.len()).unwrap_or(u32::MAX),
        }
    }

    /// Compares keys bytewise, as `[u8]` does.
    pub(super) fn cmp_key(&self, other: &Self, batch: &BatchKeys<'_>) -> Ordering {
        // Big-endian, zero-padded first bytes order like the keys, except
        // that keys which agree on them may still differ in what follows:
        // nothing does if both are that short, and then the shorter one is
        // the other's prefix (padded with zeros), so it sorts first.
        self.prefix.cmp(&other.prefix).then_with(|| {
            if self.len <= 8 && other.len <= 8 {
                self.len.cmp(&other.len)
            } else {
                batch.key(self.rec).cmp(batch.key(other.rec))
            }
        })
    }

    pub(super) fn same_key(&self, other: &Self, batch: &BatchKeys<'_>) -> bool {
        self.prefix == other.prefix
            && self.len == other.len
            && (self.len <= 8 || batch.key(self.rec) == batch.key(other.rec))
    }
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
        let groups = runs(items, |a, b| a.start == b.start && a.same_key(b, batch));
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
        // Only `update` mode reports changed windows.
        let update = self.output == OutputMode::Update;
        let mut changed = Vec::with_capacity(if update { groups.len() } else { 0 });
        let mut held = Vec::new();
        for (g, range) in groups.iter().enumerate() {
            let start = items[range.start].start;
            held_into(batch, &items[range.clone()], &mut held);
            let end = start.saturating_add(size);
            let (key, first) = self.state.upsert(
                batch.key(items[range.start].rec),
                start,
                end,
                accs.get(g),
                &held,
            );
            if update && first {
                changed.push((key.clone(), start));
            }
            if fresh[g] == 1 {
                let key = key.clone();
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
    held_into(batch, items, &mut held);
    held
}

/// Like [`held_of`], into a reused buffer.
fn held_into(batch: &BatchKeys<'_>, items: &[Item], held: &mut Vec<(PartitionId, i64)>) {
    held.clear();
    for it in items {
        hold(
            held,
            batch.partition(it.rec),
            batch.offsets[it.rec as usize],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_order_and_group_keys_bytewise() {
        let keys: [&[u8]; 12] = [
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"a\0\0\0\0\0\0\0",
            b"a\0\0\0\0\0\0\0\0",
            b"ab",
            b"abcdefgh",
            b"abcdefgh\0",
            b"abcdefghi",
            b"abcdefgi",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ];
        let mut bytes = Vec::new();
        let mut key_offsets = vec![0];
        for k in keys {
            bytes.extend_from_slice(k);
            key_offsets.push(bytes.len() as u32);
        }
        let n = keys.len();
        let batch = BatchKeys {
            keys: &bytes,
            key_offsets: &key_offsets,
            event_times: &vec![0; n],
            skip: &[],
            sources: &vec![0; n],
            partitions: &vec![0; n],
            offsets: &vec![0; n],
            upstreams: &[],
            marks: &[],
        };
        let items: Vec<Item> = (0..n as u32).map(|i| Item::new(&batch, i, 0, 0)).collect();
        for a in &items {
            for b in &items {
                let (ka, kb) = (batch.key(a.rec), batch.key(b.rec));
                assert_eq!(a.cmp_key(b, &batch), ka.cmp(kb), "{ka:?} vs {kb:?}");
                assert_eq!(a.same_key(b, &batch), ka == kb, "{ka:?} vs {kb:?}");
            }
        }
    }
}
