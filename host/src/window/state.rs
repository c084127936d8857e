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
//! offset still needed is the first entry (see [`HeldIndex`]). Keys are
//! shared (`Arc`) between `rows` and `timers`; the map's value keeps a
//! handle on its own key, so that one probe by borrowed bytes yields both
//! the rows and the shared key.
//!
//! "Changed in this batch" is a batch stamp on the row rather than a flag,
//! so nothing has to visit the changed rows again to clear it.

use std::collections::{BTreeSet, HashMap, VecDeque};
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
    /// The batch stamp (see [`State::next_batch`]) of the row's last
    /// change; 0 if none.
    changed: u64,
    /// Lowest source offset folded in, per partition.
    pub held: Vec<(PartitionId, i64)>,
}

/// The open rows of one key, and the shared key itself.
#[derive(Debug)]
struct KeyRows {
    key: Key,
    rows: Vec<Row>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    rows: HashMap<Key, KeyRows>,
    timers: BTreeSet<Timer>,
    held: HashMap<PartitionId, HeldIndex>,
    /// Stamp of the current batch, minus one.
    batch: u64,
    row_count: usize,
    acc_bytes: usize,
    key_bytes: usize,
    held_entries: usize,
}

/// The lowest offsets that open rows hold in one partition, with how many
/// rows hold each, sorted by offset.
///
/// A row holds the first offset of the partition folded into it, and
/// records of a partition arrive in offset order, so a new entry nearly
/// always goes at the back (the general case is a binary search and an
/// insert). Releasing is a binary search; an entry whose count drops to
/// zero is dropped at once from either end, lazily elsewhere: dead entries
/// are compacted away once they outnumber live ones, so the front is always
/// live and the index stays within twice its live entries.
#[derive(Debug, Default)]
struct HeldIndex {
    entries: VecDeque<(i64, u32)>,
    /// Entries with a zero count.
    dead: usize,
}

impl HeldIndex {
    fn add(&mut self, offset: i64) {
        let i = match self.entries.back() {
            None => None,
            Some(&(last, _)) if last < offset => None,
            Some(&(last, _)) if last == offset => Some(Ok(self.entries.len() - 1)),
            Some(_) => Some(self.entries.binary_search_by_key(&offset, |e| e.0)),
        };
        match i {
            None => self.entries.push_back((offset, 1)),
            Some(Err(i)) => self.entries.insert(i, (offset, 1)),
            Some(Ok(i)) => {
                let n = &mut self.entries[i].1;
                if *n == 0 {
                    self.dead -= 1;
                }
                *n += 1;
            }
        }
    }

    fn release(&mut self, offset: i64) {
        let Ok(i) = self.entries.binary_search_by_key(&offset, |e| e.0) else {
            return;
        };
        let n = &mut self.entries[i].1;
        if *n == 0 {
            return;
        }
        *n -= 1;
        if *n > 0 {
            return;
        }
        self.dead += 1;
        while self.entries.front().is_some_and(|e| e.1 == 0) {
            self.entries.pop_front();
            self.dead -= 1;
        }
        while self.entries.back().is_some_and(|e| e.1 == 0) {
            self.entries.pop_back();
            self.dead -= 1;
        }
        if self.dead > 16 && self.dead > self.entries.len() / 2 {
            self.entries.retain(|e| e.1 > 0);
            self.dead = 0;
        }
    }

    fn lowest(&self) -> Option<i64> {
        self.entries.front().map(|e| e.0)
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Lowers `held`'s entry for `p` to `offset`, adding it if missing.
pub(super) fn hold(held: &mut Vec<(PartitionId, i64)>, p: PartitionId, offset: i64) {
    match held.iter_mut().find(|(q, _)| *q == p) {
        Some((_, o)) => *o = (*o).min(offset),
        None => held.push((p, offset)),
    }
}

impl State {
    /// Starts a new batch: no row has changed in it yet.
    pub(super) fn next_batch(&mut self) {
        self.batch += 1;
    }

    pub(super) fn rows_of(&self, key: &[u8]) -> &[Row] {
        self.rows.get(key).map_or(&[], |k| k.rows.as_slice())
    }

    pub(super) fn row(&self, key: &[u8], start: i64) -> Option<&Row> {
        let rows = &self.rows.get(key)?.rows;
        rows.binary_search_by_key(&start, |r| r.start)
            .ok()
            .map(|i| &rows[i])
    }

    /// The shared key for `key`: the existing one, or a new one.
    pub(super) fn intern(&self, key: &[u8]) -> Key {
        match self.rows.get(key) {
            Some(k) => k.key.clone(),
            None => Key::from(key),
        }
    }

    /// Sets the accumulator of (key, start), creating the row with `end` if
    /// needed, lowers its held offsets to `held` and marks it changed.
    /// Returns the shared key, and true if the row had not changed before
    /// in this batch (so the caller lists it once).
    pub(super) fn upsert(
        &mut self,
        key: &[u8],
        start: i64,
        end: i64,
        acc: &[u8],
        held: &[(PartitionId, i64)],
    ) -> (Key, bool) {
        let KeyRows { key: shared, rows } = match self.rows.get_mut(key) {
            Some(k) => k,
            None => {
                let shared = Key::from(key);
                self.key_bytes += key.len();
                self.rows.entry(shared.clone()).or_insert(KeyRows {
                    key: shared,
                    rows: Vec::with_capacity(1),
                })
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
                        changed: 0,
                        held: Vec::with_capacity(held.len()),
                    },
                );
                self.row_count += 1;
                i
            }
        };
        let row = &mut rows[i];
        self.acc_bytes = self.acc_bytes - row.acc.len() + acc.len();
        if row.acc.len() != acc.len() {
            row.acc = acc.to_vec();
        } else {
            row.acc.copy_from_slice(acc);
        }
        for &(p, offset) in held {
            match row.held.iter_mut().find(|(q, _)| *q == p) {
                Some((_, o)) if *o <= offset => {}
                Some((_, o)) => {
                    let old = std::mem::replace(o, offset);
                    Self::release(&mut self.held, p, old);
                    self.held.entry(p).or_default().add(offset);
                }
                None => {
                    row.held.push((p, offset));
                    self.held_entries += 1;
                    self.held.entry(p).or_default().add(offset);
                }
            }
        }
        let stamp = self.batch + 1;
        let first = row.changed != stamp;
        row.changed = stamp;
        (shared.clone(), first)
    }

    fn release(held: &mut HashMap<PartitionId, HeldIndex>, p: PartitionId, offset: i64) {
        let Some(index) = held.get_mut(&p) else {
            return;
        };
        index.release(offset);
        if index.is_empty() {
            held.remove(&p);
        }
    }

    /// Removes (key, start), with its held offsets (not its timer).
    pub(super) fn remove(&mut self, key: &[u8], start: i64) -> Option<Row> {
        let rows = &mut self.rows.get_mut(key)?.rows;
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

    /// Every open row with its key, in no particular order (snapshots).
    pub(super) fn all_rows(&self) -> impl Iterator<Item = (&[u8], &Row)> + '_ {
        self.rows
            .values()
            .flat_map(|k| k.rows.iter().map(move |r| (&*k.key, r)))
    }

    /// Every timer, in (end, start, key) order (snapshots).
    pub(super) fn all_timers(&self) -> impl Iterator<Item = &Timer> + '_ {
        self.timers.iter()
    }

    /// Per partition, the lowest offset any open row holds.
    pub(super) fn held_offsets(&self) -> HashMap<PartitionId, i64> {
        self.held
            .iter()
            .filter_map(|(&p, index)| Some((p, index.lowest()?)))
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
    /// entries (as allocated, dead ones included). B-tree nodes are assumed
    /// two-thirds full, the hash map seven eighths, an allocation to cost 16
    /// bytes of allocator overhead.
    pub(super) fn overhead_bytes_per_row(&self) -> usize {
        if self.row_count == 0 {
            return 0;
        }
        const ALLOC: usize = 16;
        let btree = |entry: usize| entry * 3 / 2;
        let keys = self.rows.len();
        let key_entry = (size_of::<(Key, KeyRows)>() + 1) * 8 / 7 + ALLOC * 2 + 16; // + Arc counts
        let index: usize = self
            .held
            .values()
            .map(|i| i.entries.capacity() * size_of::<(i64, u32)>() + ALLOC)
            .sum();
        let total = self.row_count * size_of::<Row>()
            + keys * key_entry
            + self.key_bytes
            + self.timers.len() * btree(size_of::<Timer>())
            + self.held_entries * size_of::<(PartitionId, i64)>()
            + index
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
        let (a, b) = (&b"a"[..], &b"b"[..]);
        assert!(s.upsert(a, 0, 10, b"x", &[((0, 0), 5), ((0, 1), 7)]).1);
        assert!(s.upsert(b, 0, 10, b"yy", &[((0, 0), 3)]).1);
        assert!(!s.upsert(a, 0, 10, b"xxx", &[((0, 0), 9)]).1);
        assert!(s.upsert(a, 10, 20, b"z", &[((0, 0), 11)]).1);
        // A new batch: the row may be listed as changed again.
        s.next_batch();
        assert!(s.upsert(a, 0, 10, b"xxx", &[]).1);
        assert!(Arc::ptr_eq(
            &s.intern(a),
            &s.upsert(a, 0, 10, b"xxx", &[]).0
        ));
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
    fn held_index_keeps_its_lowest_live_offset_in_front() {
        let mut h = HeldIndex::default();
        for o in [10, 20, 20, 30, 40] {
            h.add(o);
        }
        // Out of order (after a rewind): inserted in place.
        h.add(15);
        assert_eq!(h.lowest(), Some(10));
        h.release(20);
        h.release(30); // dead, in the middle
        assert_eq!((h.entries.len(), h.dead), (5, 1));
        h.release(10);
        assert_eq!(h.lowest(), Some(15));
        h.release(15);
        assert_eq!(h.lowest(), Some(20));
        h.add(30); // revives the dead entry
        assert_eq!(h.dead, 0);
        h.release(20);
        h.release(30);
        assert_eq!(h.lowest(), Some(40));
        h.release(40);
        assert!(h.is_empty() && h.dead == 0);
        // Releasing what is not held changes nothing.
        h.add(1);
        h.release(2);
        assert_eq!(h.lowest(), Some(1));
    }

    #[test]
    fn held_index_compacts_dead_entries() {
        let mut h = HeldIndex::default();
        for o in 0..1000 {
            h.add(o);
        }
        // Everything but the oldest and the newest dies, out of order.
        for o in (1..999).rev() {
            h.release(o);
            assert!(h.dead <= 16 || h.dead <= h.entries.len() / 2);
        }
        assert_eq!(h.lowest(), Some(0));
        assert!(h.entries.len() < 40, "{}", h.entries.len());
        h.release(0);
        assert_eq!(h.lowest(), Some(999));
        assert_eq!((h.entries.len(), h.dead), (1, 0));
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
