//! Open window state: accumulators by (key, start), a timer index by window
//! end, and the source offsets open state still needs.
//!
//! Layout: `rows` maps a key to its open rows, sorted by start (a key has
//! few: one or two tumbling windows, `size / slide` panes, a few sessions),
//! so a lookup by borrowed key bytes is one hash probe and sessions of a key
//! are found by a short scan. `timers` groups windows not yet final by
//! (end, start), in order, with a hash set of keys per group: finalization
//! pops groups from the front, never scanning the rest, and sorts a popped
//! group's keys, so the output is ordered by (end, start, key) while a new
//! window costs a hash insert rather than key comparisons in a tree.
//! `held` counts, per partition, the rows whose lowest offset is each
//! value, so the lowest offset still needed is the first entry (see
//! [`HeldIndex`]). Keys are shared (`Arc`) between `rows` and `timers`; one probe by borrowed bytes
//! yields both a key's rows and its shared key.
//!
//! "Changed in this batch" is a batch stamp on the row rather than a flag,
//! so nothing has to visit the changed rows again to clear it.
//!
//! Allocation is what a row costs most: a key's rows, a row's accumulator
//! (when small, as a count and a sum are) and its held offsets (when from
//! one partition, as usual) live inline, so a new row allocates only its
//! shared key. Keys are hashed with foldhash (randomly seeded per map).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::mem::size_of;
use std::sync::Arc;

use hashbrown::hash_map::{EntryRef, RawEntryMut};
use smallvec::SmallVec;

use super::PartitionId;

pub(super) type Key = Arc<[u8]>;

/// Accumulator bytes; up to 24 inline.
pub(super) type AccBytes = SmallVec<[u8; 24]>;

/// A row's lowest offset per partition; one inline.
pub(super) type Held = SmallVec<[(PartitionId, i64); 1]>;

type Hasher = foldhash::fast::RandomState;
type KeySet = HashSet<Key, Hasher>;

/// The open rows of one key, sorted by start.
type KeyRows = SmallVec<[Row; 1]>;

/// A window not yet final: (end, start, key), in output order.
pub(super) type Timer = (i64, i64, Key);

/// One open window (tumbling, session) or pane (hopping) of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row {
    pub start: i64,
    /// Window end; for a hopping pane, the end of the last window using it.
    pub end: i64,
    pub acc: AccBytes,
    /// The batch stamp (see [`State::next_batch`]) of the row's last
    /// change; 0 if none.
    changed: u64,
    /// Lowest source offset folded in, per partition.
    pub held: Held,
}

#[derive(Debug, Default)]
pub(super) struct State {
    rows: hashbrown::HashMap<Key, KeyRows, Hasher>,
    /// Windows not yet final, by (end, start); a group's keys are put in
    /// order only when it is popped.
    timers: BTreeMap<(i64, i64), KeySet>,
    timer_count: usize,
    held: HashMap<PartitionId, HeldIndex, Hasher>,
    /// Stamp of the current batch, minus one.
    batch: u64,
    row_count: usize,
    acc_bytes: usize,
    key_bytes: usize,
    /// Heap bytes of the keys' rows beyond the map's slots (see
    /// [`heap_bytes`]).
    heap_bytes: usize,
}

/// Estimated allocator overhead of one allocation.
const ALLOC: usize = 16;

/// Heap bytes a key's rows hold beyond the map slot (which has one row
/// inline): rows, accumulators and held lists that outgrew their inline
/// room. Accumulator bytes themselves are counted apart.
fn heap_bytes(rows: &KeyRows) -> usize {
    let list = if rows.spilled() {
        rows.capacity() * size_of::<Row>() + ALLOC
    } else {
        0
    };
    let own: usize = rows
        .iter()
        .map(|r| {
            let acc = if r.acc.spilled() { ALLOC } else { 0 };
            let held = if r.held.spilled() {
                r.held.capacity() * size_of::<(PartitionId, i64)>() + ALLOC
            } else {
                0
            };
            acc + held
        })
        .sum();
    list + own
}

/// The lowest offsets that open rows hold in one partition, with how many
/// rows hold each, sorted by offset.
///
/// A row holds the first offset of the partition folded into it. Changes
/// are noted as they come and applied by [`HeldIndex::settle`], once per
/// batch: a batch creates and finalizes rows in key order, not offset
/// order, and applying its changes sorted is cheaper than a binary search
/// (and, for an add, moving the entries behind it) for each. Added offsets
/// are above every entry unless the source rewound, so they are appended
/// (else merged in, in one pass). Released ones are applied in one pass
/// over the entries when they are many next to them, else one binary
/// search each, an emptied entry then staying in place as a dead one until
/// dead ones outnumber live ones. An entry at either end is never dead, so
/// the front is the lowest offset held.
#[derive(Debug, Default, Clone)]
struct HeldIndex {
    entries: VecDeque<(i64, u32)>,
    /// Entries with a zero count.
    dead: usize,
    /// Offsets added and released since the last settle.
    added: Vec<i64>,
    released: Vec<i64>,
}

impl HeldIndex {
    fn add(&mut self, offset: i64) {
        self.added.push(offset);
    }

    fn release(&mut self, offset: i64) {
        self.released.push(offset);
    }

    fn is_settled(&self) -> bool {
        self.added.is_empty() && self.released.is_empty()
    }

    /// Applies the adds, then the releases, since the last settle.
    fn settle(&mut self) {
        if !self.added.is_empty() {
            self.apply_added();
        }
        if !self.released.is_empty() {
            self.apply_released();
        }
    }

    fn apply_added(&mut self) {
        fn push(merged: &mut VecDeque<(i64, u32)>, offset: i64, n: u32) {
            match merged.back_mut() {
                Some(last) if last.0 == offset => last.1 += n,
                _ => merged.push_back((offset, n)),
            }
        }
        self.added.sort_unstable();
        if self
            .entries
            .back()
            .is_none_or(|last| last.0 <= self.added[0])
        {
            for p in self.added.drain(..) {
                push(&mut self.entries, p, 1);
            }
            return;
        }
        let mut merged = VecDeque::with_capacity(self.entries.len() + self.added.len());
        let mut added = self.added.drain(..).peekable();
        for (offset, n) in self.entries.drain(..) {
            while let Some(p) = added.next_if(|&p| p <= offset) {
                push(&mut merged, p, 1);
            }
            if n > 0 {
                push(&mut merged, offset, n);
            }
        }
        for p in added {
            push(&mut merged, p, 1);
        }
        self.entries = merged;
        self.dead = 0;
    }

    fn apply_released(&mut self) {
        let mut released = std::mem::take(&mut self.released);
        if released.len() * 8 >= self.entries.len() {
            released.sort_unstable();
            let mut pending = released.drain(..).peekable();
            self.entries.retain_mut(|(offset, n)| {
                while let Some(r) = pending.next_if(|&r| r <= *offset) {
                    if r == *offset {
                        *n = n.saturating_sub(1);
                    }
                }
                *n > 0
            });
            self.dead = 0;
        } else {
            for offset in released.drain(..) {
                self.release_one(offset);
            }
        }
        // Keeps the room for the next batch.
        self.released = released;
    }

    fn release_one(&mut self, offset: i64) {
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

    /// The lowest offset held (settling a copy if need be).
    fn lowest(&self) -> Option<i64> {
        if self.is_settled() {
            return self.entries.front().map(|e| e.0);
        }
        let mut settled = self.clone();
        settled.settle();
        settled.entries.front().map(|e| e.0)
    }
}

/// A key's first eight bytes, big-endian and zero-padded: keys whose
/// prefixes differ compare as their prefixes do.
pub(super) fn prefix(key: &[u8]) -> u64 {
    let mut first = [0; 8];
    let n = key.len().min(8);
    first[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(first)
}

/// `keys` (all distinct) in bytewise order. Most comparisons are settled by
/// the keys' first bytes.
fn in_key_order<K: AsRef<[u8]>>(keys: impl IntoIterator<Item = K>) -> impl Iterator<Item = K> {
    let mut sorted: Vec<(u64, K)> = keys.into_iter().map(|k| (prefix(k.as_ref()), k)).collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.as_ref().cmp(b.1.as_ref())));
    sorted.into_iter().map(|(_, key)| key)
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
        self.rows.get(key).map_or(&[], |rows| rows.as_slice())
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
            Some((shared, _)) => shared.clone(),
            None => Key::from(key),
        }
    }

    /// Sets the accumulator of (key, start), creating the row with `end` if
    /// needed, lowers its held offsets to `held` and marks it changed.
    /// Returns the shared key (cloned only where the caller keeps it), and
    /// true if the row had not changed before in this batch (so the caller
    /// lists it once).
    pub(super) fn upsert(
        &mut self,
        key: &[u8],
        start: i64,
        end: i64,
        acc: &[u8],
        held: &[(PartitionId, i64)],
    ) -> (&Key, bool) {
        let (shared, rows, heap_before) = match self.rows.raw_entry_mut().from_key(key) {
            RawEntryMut::Occupied(e) => {
                let (shared, rows) = e.into_key_value();
                let before = heap_bytes(rows);
                (&*shared, rows, before)
            }
            RawEntryMut::Vacant(e) => {
                self.key_bytes += key.len();
                let (shared, rows) = e.insert(Key::from(key), KeyRows::new());
                (&*shared, rows, 0)
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
                        acc: AccBytes::new(),
                        changed: 0,
                        held: Held::new(),
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
                    self.held.entry(p).or_default().add(offset);
                }
            }
        }
        let stamp = self.batch + 1;
        let first = row.changed != stamp;
        row.changed = stamp;
        self.heap_bytes = self.heap_bytes + heap_bytes(rows) - heap_before;
        (shared, first)
    }

    fn release(held: &mut HashMap<PartitionId, HeldIndex, Hasher>, p: PartitionId, offset: i64) {
        if let Some(index) = held.get_mut(&p) {
            index.release(offset);
        }
    }

    /// Applies the batch's changes to the held offsets (see [`HeldIndex`]).
    pub(super) fn settle(&mut self) {
        self.held.retain(|_, index| {
            index.settle();
            !index.entries.is_empty()
        });
    }

    /// Removes (key, start), with its held offsets (not its timer).
    pub(super) fn remove(&mut self, key: &[u8], start: i64) -> Option<Row> {
        let EntryRef::Occupied(mut entry) = self.rows.entry_ref(key) else {
            return None;
        };
        let rows = entry.get_mut();
        let i = rows.binary_search_by_key(&start, |r| r.start).ok()?;
        let heap_before = heap_bytes(rows);
        let row = rows.remove(i);
        if rows.is_empty() {
            entry.remove();
            self.key_bytes -= key.len();
            self.heap_bytes -= heap_before;
        } else {
            self.heap_bytes = self.heap_bytes + heap_bytes(rows) - heap_before;
        }
        self.row_count -= 1;
        self.acc_bytes -= row.acc.len();
        for &(p, offset) in &row.held {
            Self::release(&mut self.held, p, offset);
        }
        Some(row)
    }

    pub(super) fn add_timer(&mut self, timer: Timer) {
        let (end, start, key) = timer;
        // A new group starts with room for the groups' average (many
        // keys per window for tumbling windows, about one for sessions).
        let hint = self.timer_count / self.timers.len().max(1);
        let keys = self
            .timers
            .entry((end, start))
            .or_insert_with(|| KeySet::with_capacity_and_hasher(hint, Hasher::default()));
        if keys.insert(key) {
            self.timer_count += 1;
        }
    }

    pub(super) fn remove_timer(&mut self, timer: &Timer) {
        let (end, start, key) = timer;
        let Some(keys) = self.timers.get_mut(&(*end, *start)) else {
            return;
        };
        if keys.remove(key) {
            self.timer_count -= 1;
        }
        if keys.is_empty() {
            self.timers.remove(&(*end, *start));
        }
    }

    /// Removes and returns, in order, the timers with `end <= limit`.
    pub(super) fn pop_due(&mut self, limit: i64) -> Vec<Timer> {
        let mut due = Vec::new();
        while let Some(entry) = self.timers.first_entry()
            && entry.key().0 <= limit
        {
            let ((end, start), keys) = entry.remove_entry();
            self.timer_count -= keys.len();
            due.extend(in_key_order(keys).map(|key| (end, start, key)));
        }
        due
    }

    /// Every open row with its key, in no particular order (snapshots).
    pub(super) fn all_rows(&self) -> impl Iterator<Item = (&[u8], &Row)> + '_ {
        self.rows
            .iter()
            .flat_map(|(key, rows)| rows.iter().map(move |r| (&**key, r)))
    }

    /// Every timer, in (end, start, key) order (snapshots).
    pub(super) fn all_timers(&self) -> Vec<(i64, i64, &[u8])> {
        let mut all = Vec::with_capacity(self.timer_count);
        for (&(end, start), keys) in &self.timers {
            all.extend(in_key_order(keys.iter().map(|key| &**key)).map(|key| (end, start, key)));
        }
        all
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
        self.timer_count
    }

    /// Estimated host bytes per row beyond the accumulator bytes: its key's
    /// map slot (with one row inline), the key's bytes and allocation
    /// (shared by the key's rows), what outgrew the inline room (see
    /// [`heap_bytes`]), its timers (for hopping, windows per pane) and the
    /// held offsets' index entries (as allocated, dead ones included).
    /// B-tree nodes are assumed two-thirds full, the hash map seven eighths,
    /// an allocation to cost 16 bytes of allocator overhead.
    pub(super) fn overhead_bytes_per_row(&self) -> usize {
        if self.row_count == 0 {
            return 0;
        }
        let btree = |entry: usize| entry * 3 / 2;
        let keys = self.rows.len();
        let key_entry = (size_of::<(Key, KeyRows)>() + 1) * 8 / 7 + ALLOC + 16; // + Arc counts
        let index: usize = self
            .held
            .values()
            .map(|i| {
                i.entries.capacity() * size_of::<(i64, u32)>()
                    + (i.added.capacity() + i.released.capacity()) * size_of::<i64>()
                    + ALLOC * 3
            })
            .sum();
        let total = keys * key_entry
            + self.key_bytes
            + self.heap_bytes
            + self.timers.len() * btree(size_of::<((i64, i64), KeySet)>())
            + self.timer_count * (size_of::<Key>() + 1) * 8 / 7
            + index;
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
        assert!(Arc::ptr_eq(&s.intern(a), s.upsert(a, 0, 10, b"xxx", &[]).0));
        assert_eq!(s.held_offsets(), HashMap::from([((0, 0), 3), ((0, 1), 7)]));
        assert_eq!((s.rows(), s.acc_bytes()), (3, 6));
        s.remove(b"b", 0).unwrap();
        assert_eq!(s.held_offsets(), HashMap::from([((0, 0), 5), ((0, 1), 7)]));
        s.remove(b"a", 0).unwrap();
        assert_eq!(s.held_offsets(), HashMap::from([((0, 0), 11)]));
        s.remove(b"a", 10).unwrap();
        assert!(s.held_offsets().is_empty());
        assert_eq!((s.rows(), s.acc_bytes(), s.key_bytes), (0, 0, 0));
        s.settle();
        assert!(s.rows.is_empty() && s.held.is_empty());
    }

    #[test]
    fn held_index_keeps_its_lowest_live_offset_in_front() {
        let mut h = HeldIndex::default();
        for o in [10, 20, 20, 30, 40] {
            h.add(o);
        }
        h.settle();
        // Out of order (after a rewind): merged in place.
        h.add(15);
        assert_eq!(h.lowest(), Some(10));
        h.settle();
        assert_eq!(h.entries, [(10, 1), (15, 1), (20, 2), (30, 1), (40, 1)]);
        // Releases many next to the entries: applied in one pass.
        h.release(20);
        h.release(30);
        h.settle();
        assert_eq!(h.entries, [(10, 1), (15, 1), (20, 1), (40, 1)]);
        h.release(10);
        assert_eq!(h.lowest(), Some(15));
        h.release(15);
        h.settle();
        assert_eq!(h.lowest(), Some(20));
        h.add(30); // below the back: merged in
        h.settle();
        assert_eq!((h.entries.len(), h.dead), (3, 0));
        h.release(20);
        h.release(30);
        h.settle();
        assert_eq!(h.lowest(), Some(40));
        h.release(40);
        h.settle();
        assert!(h.entries.is_empty() && h.dead == 0);
        // Releasing what is not held changes nothing; an add and a release
        // of the same offset in one batch cancel out.
        h.add(1);
        h.add(5);
        h.release(2);
        h.release(5);
        h.settle();
        assert_eq!(h.entries, [(1, 1)]);
    }

    #[test]
    fn held_index_compacts_dead_entries() {
        let mut h = HeldIndex::default();
        for o in 0..1000 {
            h.add(o);
        }
        h.settle();
        // Everything but the oldest and the newest dies, out of order and
        // one at a time: by binary search, dead in the middle.
        for o in (1..999).rev() {
            h.release(o);
            h.settle();
            assert!(h.dead <= 16 || h.dead <= h.entries.len() / 2);
        }
        assert_eq!(h.lowest(), Some(0));
        assert!(h.entries.len() < 40, "{}", h.entries.len());
        h.release(0);
        h.settle();
        assert_eq!(h.lowest(), Some(999));
        assert_eq!((h.entries.len(), h.dead), (1, 0));
    }

    #[test]
    fn held_index_applies_many_releases_in_one_pass() {
        let mut h = HeldIndex::default();
        // A batch's rows, added in key order, not offset order.
        for o in [7, 3, 9, 1, 5, 3] {
            h.add(o);
        }
        assert_eq!(h.lowest(), Some(1));
        h.settle();
        assert_eq!(h.entries, [(1, 1), (3, 2), (5, 1), (7, 1), (9, 1)]);
        for o in [9, 3, 1, 4] {
            h.release(o);
        }
        assert_eq!(h.lowest(), Some(3));
        h.settle();
        assert_eq!((h.entries.len(), h.dead), (3, 0));
        assert_eq!(h.entries, [(3, 1), (5, 1), (7, 1)]);
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
