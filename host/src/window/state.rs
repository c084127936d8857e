//! Open window state: accumulators by (key, start), a timer index by window
//! end, and the source offsets open state still needs.
//!
//! Layout: `rows` maps a key to its open rows, sorted by start (a key has
//! few: one or two tumbling windows, `size / slide` panes, a few sessions),
//! so a lookup by borrowed key bytes is one hash probe and sessions of a key
//! are found by a short scan. `timers` orders windows not yet final by
//! (end, start, key): finalization pops from its front, never scanning the
//! rest, and the pop order is the output order. `held` counts, per
//! partition, the rows whose lowest offset is each value, so the lowest
//! offset still needed is the first entry. Keys are shared (`Arc`) between
//! `rows` and `timers`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::mem::size_of;
use std::sync::Arc;

use super::PartitionId;

pub(super) type Key = Arc<[u8]>;

/// A window not yet final: (end, start, key), in output order.
pub(super) type Timer = (i64, i64, Key);

/// One open window (tumbling, session) or pane (hopping) of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row {
    pub start: i64,
    /// Window end; for a hopping pane, the end of the last window using it.
    pub end: i64,
    pub acc: Vec<u8>,
    /// Changed in the current batch.
    pub changed: bool,
    /// Lowest source offset folded in, per partition.
    pub held: Vec<(PartitionId, i64)>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    rows: HashMap<Key, Vec<Row>>,
    timers: BTreeSet<Timer>,
    held: HashMap<PartitionId, BTreeMap<i64, u32>>,
    row_count: usize,
    acc_bytes: usize,
    key_bytes: usize,
    held_entries: usize,
}

/// Lowers `held`'s entry for `p` to `offset`, adding it if missing.
pub(super) fn hold(held: &mut Vec<(PartitionId, i64)>, p: PartitionId, offset: i64) {
    match held.iter_mut().find(|(q, _)| *q == p) {
        Some((_, o)) => *o = (*o).min(offset),
        None => held.push((p, offset)),
    }
}

impl State {
    pub(super) fn rows_of(&self, key: &[u8]) -> &[Row] {
        self.rows.get(key).map_or(&[], Vec::as_slice)
    }

    pub(super) fn row(&self, key: &[u8], start: i64) -> Option<&Row> {
        let rows = self.rows.get(key)?;
        rows.binary_search_by_key(&start, |r| r.start)
            .ok()
            .map(|i| &rows[i])
    }

    /// The shared key for `key`: the existing one, or a new one.
    pub(super) fn intern(&self, key: &[u8]) -> Key {
        match self.rows.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => Key::from(key),
        }
    }

    /// Sets the accumulator of (key, start), creating the row with `end` if
    /// needed, lowers its held offsets to `held` and marks it changed.
    /// Returns true if the row was not marked changed before (so the caller
    /// lists it once).
    pub(super) fn upsert(
        &mut self,
        key: &Key,
        start: i64,
        end: i64,
        acc: &[u8],
        held: &[(PartitionId, i64)],
    ) -> bool {
        let rows = match self.rows.get_mut(&**key) {
            Some(rows) => rows,
            None => {
                self.key_bytes += key.len();
                self.rows.entry(key.clone()).or_default()
            }
        };
        let i = match rows.binary_search_by_key(&start, |r| r.start) {
            Ok(i) => i,
            Err(i) => {
                rows.insert(
                    i,
                    Row {
                        start,
                        end,
                        acc: Vec::new(),
                        changed: false,
                        held: Vec::new(),
                    },
                );
                self.row_count += 1;
                i
            }
        };
        let row = &mut rows[i];
        self.acc_bytes = self.acc_bytes - row.acc.len() + acc.len();
        row.acc.clear();
        row.acc.extend_from_slice(acc);
        row.acc.shrink_to_fit();
        for &(p, offset) in held {
            match row.held.iter_mut().find(|(q, _)| *q == p) {
                Some((_, o)) if *o <= offset => {}
                Some((_, o)) => {
                    let old = std::mem::replace(o, offset);
                    Self::release(&mut self.held, p, old);
                    *self.held.entry(p).or_default().entry(offset).or_default() += 1;
                }
                None => {
                    row.held.push((p, offset));
                    self.held_entries += 1;
                    *self.held.entry(p).or_default().entry(offset).or_default() += 1;
                }
            }
        }
        !std::mem::replace(&mut row.changed, true)
    }

    fn release(held: &mut HashMap<PartitionId, BTreeMap<i64, u32>>, p: PartitionId, offset: i64) {
        let Some(counts) = held.get_mut(&p) else {
            return;
        };
        if let Some(n) = counts.get_mut(&offset) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&offset);
            }
        }
        if counts.is_empty() {
            held.remove(&p);
        }
    }

    /// Removes (key, start), with its held offsets (not its timer).
    pub(super) fn remove(&mut self, key: &[u8], start: i64) -> Option<Row> {
        let rows = self.rows.get_mut(key)?;
        let i = rows.binary_search_by_key(&start, |r| r.start).ok()?;
        let row = rows.remove(i);
        if rows.is_empty() {
            self.rows.remove(key);
            self.key_bytes -= key.len();
        }
        self.row_count -= 1;
        self.acc_bytes -= row.acc.len();
        self.held_entries -= row.held.len();
        for &(p, offset) in &row.held {
            Self::release(&mut self.held, p, offset);
        }
        Some(row)
    }

    /// Clears the changed mark of (key, start), if it is still open.
    pub(super) fn unmark(&mut self, key: &[u8], start: i64) {
        if let Some(rows) = self.rows.get_mut(key)
            && let Ok(i) = rows.binary_search_by_key(&start, |r| r.start)
        {
            rows[i].changed = false;
        }
    }

    pub(super) fn add_timer(&mut self, timer: Timer) {
        self.timers.insert(timer);
    }

    pub(super) fn remove_timer(&mut self, timer: &Timer) {
        self.timers.remove(timer);
    }

    /// Removes and returns, in order, the timers with `end <= limit`.
    pub(super) fn pop_due(&mut self, limit: i64) -> Vec<Timer> {
        let mut due = Vec::new();
        while self.timers.first().is_some_and(|t| t.0 <= limit) {
            due.extend(self.timers.pop_first());
        }
        due
    }

    /// Per partition, the lowest offset any open row holds.
    pub(super) fn held_offsets(&self) -> HashMap<PartitionId, i64> {
        self.held
            .iter()
            .filter_map(|(&p, counts)| Some((p, *counts.first_key_value()?.0)))
            .collect()
    }

    pub(super) fn rows(&self) -> usize {
        self.row_count
    }

    pub(super) fn acc_bytes(&self) -> usize {
        self.acc_bytes
    }

    pub(super) fn timers(&self) -> usize {
        self.timers.len()
    }

    /// Estimated host bytes per row beyond the accumulator bytes: the row,
    /// its key's map entry and bytes (shared by the key's rows), its timers
    /// (for hopping, windows per pane), its held offsets with their index
    /// entries. B-tree nodes are assumed two-thirds full, the hash map seven
    /// eighths, an allocation to cost 16 bytes of allocator overhead.
    pub(super) fn overhead_bytes_per_row(&self) -> usize {
        if self.row_count == 0 {
            return 0;
        }
        const ALLOC: usize = 16;
        let btree = |entry: usize| entry * 3 / 2;
        let keys = self.rows.len();
        let key_entry = (size_of::<(Key, Vec<Row>)>() + 1) * 8 / 7 + ALLOC * 2 + 16; // + Arc counts
        let total = self.row_count * size_of::<Row>()
            + keys * key_entry
            + self.key_bytes
            + self.timers.len() * btree(size_of::<Timer>())
            + self.held_entries
                * (size_of::<(PartitionId, i64)>() + btree(size_of::<(i64, u32)>()))
            + self.row_count * ALLOC * 2; // accumulator and held allocations
        total.div_ceil(self.row_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_offsets_follow_the_lowest_open_row() {
        let mut s = State::default();
        let (a, b) = (s.intern(b"a"), s.intern(b"b"));
        assert!(s.upsert(&a, 0, 10, b"x", &[((0, 0), 5), ((0, 1), 7)]));
        assert!(s.upsert(&b, 0, 10, b"yy", &[((0, 0), 3)]));
        assert!(!s.upsert(&a, 0, 10, b"xxx", &[((0, 0), 9)]));
        assert!(s.upsert(&a, 10, 20, b"z", &[((0, 0), 11)]));
        assert_eq!(s.held_offsets(), HashMap::from([((0, 0), 3), ((0, 1), 7)]));
        assert_eq!((s.rows(), s.acc_bytes()), (3, 6));
        s.remove(b"b", 0).unwrap();
        assert_eq!(s.held_offsets(), HashMap::from([((0, 0), 5), ((0, 1), 7)]));
        s.remove(b"a", 0).unwrap();
        assert_eq!(s.held_offsets(), HashMap::from([((0, 0), 11)]));
        s.remove(b"a", 10).unwrap();
        assert!(s.held_offsets().is_empty());
        assert_eq!((s.rows(), s.acc_bytes(), s.key_bytes), (0, 0, 0));
        assert!(s.rows.is_empty() && s.held.is_empty());
    }

    #[test]
    fn timers_pop_in_end_start_key_order() {
        let mut s = State::default();
        for (end, start, key) in [(20, 0, "b"), (10, 0, "b"), (20, 0, "a"), (20, -5, "c")] {
            s.add_timer((end, start, Key::from(key.as_bytes())));
        }
        let due: Vec<_> = s
            .pop_due(20)
            .into_iter()
            .map(|(e, st, k)| (e, st, k.to_vec()))
            .collect();
        assert_eq!(
            due,
            vec![
                (10, 0, b"b".to_vec()),
                (20, -5, b"c".to_vec()),
                (20, 0, b"a".to_vec()),
                (20, 0, b"b".to_vec())
            ]
        );
        assert_eq!(s.timers(), 0);
    }
}
