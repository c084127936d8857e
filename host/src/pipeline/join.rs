//! The join step: a stream-stream interval join at the head of the chain.
//!
//! A batch holds records of both sides (a record's source topic says which:
//! the left topics come first). Per batch the guest keys each side once
//! (`extract`), the host's [`JoinState`] takes the records one by one in
//! batch order, each side's watermark advancing after each of its records
//! (so that which records are late does not depend on where batches end),
//! and the guest builds the output of every pair and outer row the batch
//! completed in one `join` call. What comes out has no single source
//! record: its records go on down the chain as records of their own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::batch::reason::Kind;
use crate::batch::{Batch, Columns, Reason, StepOutput};
use crate::join::{JoinState, JoinType, Joined, Side, SideStats, Within};
use crate::runtime::{InstantiateError, JoinSide, Joiner, Pairs};
use crate::spec::join::{JoinKind, JoinSpec};

/// A record the join holds: the record itself and what it is joined by.
/// Part of checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    record_key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: Option<i64>,
    /// Names and values (a null value is empty, as in batches).
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The join key and event time.
    key: Vec<u8>,
    time: i64,
    /// Index into the source topics, partition and offset it was read at.
    source: u16,
    partition: i32,
    offset: i64,
}

impl Held {
    fn of(batch: &Batch, i: usize, key: &[u8], time: i64) -> Self {
        let record = batch.records.get(i);
        Self {
            record_key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            timestamp: record.timestamp,
            headers: record
                .headers
                .iter()
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect(),
            key: key.to_vec(),
            time,
            source: batch.sources[i],
            partition: batch.partitions[i],
            offset: batch.offsets[i],
        }
    }

    fn bytes(&self) -> usize {
        let data = self.record_key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>();
        data + self.key.len() + std::mem::size_of::<Self>()
    }

    /// Appends the record to `columns`.
    fn push_to(&self, columns: &mut Columns) {
        columns.push(
            self.record_key.as_deref(),
            self.value.as_deref(),
            self.timestamp,
            self.headers
                .iter()
                .map(|(n, v)| (n.as_slice(), Some(v.as_slice()))),
        );
    }
}

/// A join step's state in a checkpoint: both sides' buffers and
/// watermarks, and the source topics its records' indices refer to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinCheckpoint {
    topics: Vec<String>,
    state: JoinState<Arc<Held>>,
    max_time: BTreeMap<(u16, i32), i64>,
}

/// A pair (or outer row) the step produced: what its output records fall
/// back on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairOrigin {
    /// The join key: the output's key when the guest gives none.
    pub key: Vec<u8>,
    /// The later of the two event times: the output's timestamp when the
    /// guest gives none.
    pub time: i64,
    /// Where the left record (else the right one) came from, for the
    /// steps after the join.
    pub partition: i32,
    pub offset: i64,
}

/// What the join step made of a batch.
#[derive(Debug, Default)]
pub struct JoinOutput {
    /// The guest's output; `inputs` and dead letters index `pairs`.
    pub output: StepOutput,
    pub pairs: Vec<PairOrigin>,
    /// Records of the source batch that did not enter the join: `(index,
    /// reason)` (the guest could not key them, they were late, or their key
    /// belongs to another task).
    pub dead_letters: Vec<(u32, Reason)>,
    /// The records of pairs the guest could not join (both records of a
    /// pair), with the reason of each: dead letters that are no source
    /// record of this batch.
    pub held_dead: Columns,
    pub held_reasons: Vec<Reason>,
}

/// The join step of a chain.
#[derive(Debug)]
pub struct JoinStep {
    joiner: Joiner,
    state: JoinState<Arc<Held>>,
    /// How many of the source topics (the first ones) are the left side's.
    left_topics: u16,
    /// Per source partition, the largest event time seen.
    max_time: BTreeMap<(u16, i32), i64>,
    /// The source partitions read (see [`Self::expect_partitions`]).
    expected: Vec<(u16, i32)>,
    /// Per side, the allowed disorder.
    disorder_ms: [i64; 2],
    /// Run as tasks: a record's join key must be its Kafka key.
    partition_keys: bool,
    /// Per (source, partition), the offsets of the records the state holds
    /// (with how many at each): a restart without a checkpoint must read
    /// them again, so commits stop before the oldest.
    held: BTreeMap<(u16, i32), BTreeMap<i64, u32>>,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl JoinStep {
    pub fn new(joiner: Joiner, spec: &JoinSpec) -> Self {
        let kind = match spec.kind {
            JoinKind::Inner => JoinType::Inner,
            JoinKind::LeftOuter => JoinType::LeftOuter,
            JoinKind::RightOuter => JoinType::RightOuter,
            JoinKind::FullOuter => JoinType::FullOuter,
        };
        let within = Within {
            before_ms: ms(spec.within.before),
            after_ms: ms(spec.within.after),
        };
        let mut state = JoinState::new(kind, within);
        state.track_evictions();
        Self {
            joiner,
            state,
            left_topics: spec.left.topics.len() as u16,
            max_time: BTreeMap::new(),
            expected: Vec::new(),
            disorder_ms: [
                ms(spec.left.watermark.max_out_of_orderness),
                ms(spec.right.watermark.max_out_of_orderness),
            ],
            partition_keys: false,
            held: BTreeMap::new(),
        }
    }

    /// Per (source, partition), the offset of the oldest record the state
    /// holds: where a restart must read from to rebuild it.
    pub fn held_offsets(&self) -> HashMap<(u16, i32), i64> {
        self.held
            .iter()
            .filter_map(|(&at, offsets)| Some((at, *offsets.keys().next()?)))
            .collect()
    }

    fn forget_evicted(&mut self) {
        for gone in self.state.take_evicted() {
            let at = (gone.source, gone.partition);
            if let Some(offsets) = self.held.get_mut(&at) {
                if let Some(count) = offsets.get_mut(&gone.offset) {
                    *count -= 1;
                    if *count == 0 {
                        offsets.remove(&gone.offset);
                    }
                }
                if offsets.is_empty() {
                    self.held.remove(&at);
                }
            }
        }
    }

    /// For a task (one partition of every topic): a record's join key must
    /// be its Kafka key, else its matches may be in another task; such a
    /// record is dead-lettered.
    pub fn require_partition_keys(&mut self) {
        self.partition_keys = true;
    }

    pub fn joiner(&self) -> &Joiner {
        &self.joiner
    }

    /// Puts `joiner` in (a module swap); returns the one it replaces. The
    /// state stays.
    pub fn swap_joiner(&mut self, joiner: Joiner) -> Joiner {
        std::mem::replace(&mut self.joiner, joiner)
    }

    pub fn into_joiner(self) -> Joiner {
        self.joiner
    }

    /// The state for a checkpoint (and before a module's trial batch, to
    /// roll back to); `topics`: the source topics. The records are shared,
    /// not copied.
    pub fn checkpoint(&self, topics: &[String]) -> JoinCheckpoint {
        JoinCheckpoint {
            topics: topics.to_vec(),
            state: self.state.clone(),
            max_time: self.max_time.clone(),
        }
    }

    /// Continues from a checkpoint's state (the offsets held are derived
    /// from its records); refused when it was taken with other source
    /// topics (its records would change sides).
    pub fn restore_checkpoint(
        &mut self,
        checkpoint: JoinCheckpoint,
        topics: &[String],
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            checkpoint.topics == topics,
            "the checkpoint's join state was taken reading topics {:?}, and the join now reads \
             {:?}: its records would not be on the same sides; restore the spec's join topics, or \
             start from a new checkpoint directory",
            checkpoint.topics,
            topics
        );
        let mut state = checkpoint.state;
        state.track_evictions();
        self.held.clear();
        for held in state.values() {
            *self
                .held
                .entry((held.source, held.partition))
                .or_default()
                .entry(held.offset)
                .or_default() += 1;
        }
        self.state = state;
        self.max_time = checkpoint.max_time;
        Ok(())
    }

    /// What each side holds now: `[left, right]`.
    pub fn stats(&self) -> [SideStats; 2] {
        self.state.stats()
    }

    /// The source partitions the step reads (those of one task, or all):
    /// a side's watermark waits for every partition of the side to have a
    /// record, then follows the slowest.
    pub fn expect_partitions(&mut self, partitions: &[(u16, i32)]) {
        self.expected = partitions.to_vec();
    }

    /// `side`'s watermark: the smallest of its partitions' largest event
    /// times, less the side's allowed disorder; `None` while one of its
    /// partitions has had no record.
    fn watermark(&self, side: Side) -> Option<i64> {
        let mut slowest: Option<i64> = None;
        let mut partitions: Vec<(u16, i32)> = self
            .expected
            .iter()
            .copied()
            .filter(|&(s, _)| self.side_of(s) == side)
            .collect();
        if partitions.is_empty() {
            // Not told: the partitions seen so far.
            partitions = self
                .max_time
                .keys()
                .copied()
                .filter(|&(s, _)| self.side_of(s) == side)
                .collect();
        }
        for p in partitions {
            let max = *self.max_time.get(&p)?;
            slowest = Some(slowest.map_or(max, |m| m.min(max)));
        }
        slowest.map(|t| t.saturating_sub(self.disorder_ms[side as usize]))
    }

    fn side_of(&self, source: u16) -> Side {
        if source < self.left_topics {
            Side::Left
        } else {
            Side::Right
        }
    }

    /// Runs one source batch through the join.
    pub fn process(&mut self, batch: &Batch) -> Result<JoinOutput, InstantiateError> {
        let mut out = JoinOutput::default();
        // Each side's records, keyed by the guest in one call per side.
        let mut indices: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        for (i, &source) in batch.sources.iter().enumerate() {
            indices[self.side_of(source) as usize].push(i as u32);
        }
        let mut keyed = Vec::with_capacity(2);
        for (side, indices) in [Side::Left, Side::Right].into_iter().zip(&indices) {
            if indices.is_empty() {
                keyed.push(None);
                continue;
            }
            let mut part = batch.select(indices);
            let side = match side {
                Side::Left => JoinSide::Left,
                Side::Right => JoinSide::Right,
            };
            keyed.push(Some(self.joiner.extract(side, &mut part)?));
        }
        // Position of each batch record in its side's part.
        let mut at = vec![0usize; batch.len()];
        for indices in &indices {
            for (j, &i) in indices.iter().enumerate() {
                at[i as usize] = j;
            }
        }
        let mut dead_at: [Vec<bool>; 2] = [Vec::new(), Vec::new()];
        for (side, keys) in keyed.iter().enumerate() {
            if let Some(keys) = keys {
                dead_at[side] = vec![false; indices[side].len()];
                for (j, reason) in &keys.dead_letters {
                    dead_at[side][*j as usize] = true;
                    out.dead_letters
                        .push((indices[side][*j as usize], reason.clone()));
                }
            }
        }
        let mut joined: Vec<Joined<Arc<Held>>> = Vec::new();
        for i in 0..batch.len() {
            let side = self.side_of(batch.sources[i]);
            let s = side as usize;
            let j = at[i];
            if dead_at[s][j] {
                continue;
            }
            let keys = keyed[s].as_ref().expect("a side with records was keyed");
            let key = keys.key(j);
            let time = keys.event_times[j];
            let record = batch.records.get(i);
            if self.partition_keys && record.key != Some(key) {
                out.dead_letters.push((
                    i as u32,
                    Reason::new(
                        Kind::JoinKeyNotKafkaKey,
                        format!(
                            "{}: join key `{}`, Kafka key `{}`; run as tasks, a join needs its \
                             topics keyed by the join key (or `parallelism: 1`)",
                            Kind::JoinKeyNotKafkaKey.label(),
                            String::from_utf8_lossy(key),
                            String::from_utf8_lossy(record.key.unwrap_or_default())
                        ),
                    ),
                ));
                continue;
            }
            let held = Arc::new(Held::of(batch, i, key, time));
            let at = (held.source, held.partition);
            let bytes = held.bytes();
            match self.state.push(side, key, time, held, bytes, &mut joined) {
                Ok(()) => {
                    *self
                        .held
                        .entry(at)
                        .or_default()
                        .entry(batch.offsets[i])
                        .or_default() += 1;
                    let max = self.max_time.entry(at).or_insert(time);
                    *max = (*max).max(time);
                    if let Some(watermark) = self.watermark(side) {
                        self.state.advance(side, watermark, &mut joined);
                    }
                }
                Err(late) => out
                    .dead_letters
                    .push((i as u32, Reason::new(Kind::Late, late.to_string()))),
            }
        }
        out.dead_letters.sort_by_key(|(i, _)| *i);
        self.forget_evicted();
        if joined.is_empty() {
            return Ok(out);
        }
        let pairs = self.pairs(&joined, &mut out.pairs);
        out.output = self.joiner.join(&pairs)?;
        // Pairs the guest refused: their records are the dead letters.
        for (pair, reason) in std::mem::take(&mut out.output.dead_letters) {
            let (left, right) = joined[pair as usize].sides();
            for held in [left, right].into_iter().flatten() {
                held.push_to(&mut out.held_dead);
                out.held_reasons.push(reason.clone());
            }
        }
        Ok(out)
    }

    /// The guest's request for `joined`: each record once per side.
    fn pairs(&self, joined: &[Joined<Arc<Held>>], origins: &mut Vec<PairOrigin>) -> Pairs {
        let mut pairs = Pairs::default();
        let mut seen: [HashMap<*const Held, i32>; 2] = [HashMap::new(), HashMap::new()];
        let mut index = |side: Side, held: &Arc<Held>, pairs: &mut Pairs| -> i32 {
            let columns = match side {
                Side::Left => &mut pairs.left,
                Side::Right => &mut pairs.right,
            };
            *seen[side as usize]
                .entry(Arc::as_ptr(held))
                .or_insert_with(|| {
                    held.push_to(columns);
                    columns.len() as i32 - 1
                })
        };
        for j in joined {
            let (left, right) = j.sides();
            let l = left.map_or(-1, |h| index(Side::Left, h, &mut pairs));
            let r = right.map_or(-1, |h| index(Side::Right, h, &mut pairs));
            pairs.left_index.push(l);
            pairs.right_index.push(r);
            let first = left.or(right).expect("a pair has a side");
            origins.push(PairOrigin {
                key: first.key.clone(),
                time: left
                    .map_or(i64::MIN, |h| h.time)
                    .max(right.map_or(i64::MIN, |h| h.time)),
                partition: first.partition,
                offset: first.offset,
            });
        }
        pairs
    }
}
