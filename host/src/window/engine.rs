//! The engine: one `process` per batch (assign, fold, advance the watermark,
//! emit), `tick` for time passing without records.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::PartitionId;
use super::assign::{ahead_reason, floor, late_reason};
use super::calls::{AggregateCalls, AggregateError};
use super::fold::Item;
use super::spec::{InvalidSpec, OutputMode, Shape, WindowSpec};
use super::state::State;
use super::watermark::{PartitionProgress, Watermarks};
use crate::batch::StepOutput;

/// What the guest's `extract` made of a batch, plus where each record came
/// from. Index `i` of every slice is record `i` of the batch the guest holds.
#[derive(Debug, Clone, Copy)]
pub struct BatchKeys<'a> {
    /// Grouping keys, Arrow-style: record `i`'s key is
    /// `keys[key_offsets[i] .. key_offsets[i + 1]]`.
    pub keys: &'a [u8],
    pub key_offsets: &'a [u32],
    pub event_times: &'a [i64],
    /// Empty, or one entry per record: true for records the guest
    /// dead-lettered in `extract` (ignored here entirely).
    pub skip: &'a [bool],
    /// Source (index into the pipeline's source topics), partition and
    /// offset of each record.
    pub sources: &'a [u16],
    pub partitions: &'a [i32],
    pub offsets: &'a [i64],
    /// Empty, or one entry per record: the upstream task that wrote it
    /// (a stage reading a repartition topic, see `spec::Stages`). Each
    /// (upstream, partition) then has a watermark of its own, as a source
    /// partition does: the records of one upstream task are in its order,
    /// those of several are interleaved.
    pub upstreams: &'a [u16],
    /// Event-time progress without records: (upstream, partition) has
    /// come this far (the watermark markers of a repartition topic).
    /// Observed with the batch's records.
    pub marks: &'a [(PartitionId, i64)],
}

impl BatchKeys<'_> {
    /// No records: what `tick` processes.
    pub const EMPTY: BatchKeys<'static> = BatchKeys {
        keys: &[],
        key_offsets: &[0],
        event_times: &[],
        skip: &[],
        sources: &[],
        partitions: &[],
        offsets: &[],
        upstreams: &[],
        marks: &[],
    };

    pub fn len(&self) -> usize {
        self.event_times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.event_times.is_empty()
    }

    pub(super) fn key(&self, i: u32) -> &[u8] {
        let i = i as usize;
        &self.keys[self.key_offsets[i] as usize..self.key_offsets[i + 1] as usize]
    }

    pub(super) fn partition(&self, i: u32) -> PartitionId {
        (self.sources[i as usize], self.partitions[i as usize])
    }

    /// Whose event time record `i` advances: its source partition's, or
    /// with upstreams, (upstream, partition)'s.
    fn clock(&self, i: u32) -> PartitionId {
        match self.upstreams.get(i as usize) {
            Some(&upstream) => (upstream, self.partitions[i as usize]),
            None => self.partition(i),
        }
    }

    fn skipped(&self, i: usize) -> bool {
        self.skip.get(i).copied().unwrap_or(false)
    }

    fn assert_consistent(&self) {
        let n = self.len();
        assert!(
            self.key_offsets.len() == n + 1
                && self.sources.len() == n
                && self.partitions.len() == n
                && self.offsets.len() == n
                && (self.skip.is_empty() || self.skip.len() == n)
                && (self.upstreams.is_empty() || self.upstreams.len() == n),
            "BatchKeys columns disagree on the number of records ({n})"
        );
    }
}

/// A window with a result in [`WindowOutput::results`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRef {
    /// Shared with the engine's state (no copy per result).
    pub key: Arc<[u8]>,
    pub start: i64,
    pub end: i64,
    /// The window's final result (else an `update`-mode intermediate one).
    pub is_final: bool,
}

/// What one `process` or `tick` produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowOutput {
    /// The guest's `finish` output; `inputs` (and `dead_letters` indices)
    /// are indices into `windows`.
    pub results: StepOutput,
    /// The windows with a result, ordered by (end, start, key).
    pub windows: Vec<WindowRef>,
    /// `(record index, reason)` of late records and of records `fold`
    /// rejected, in record order.
    pub dead_letters: Vec<(u32, crate::batch::Reason)>,
    /// Late records in this batch.
    pub late: u64,
    /// The accumulator of each window in `results.dead_letters` (windows
    /// the guest could not finish), in that order.
    pub dead_accumulators: Vec<Vec<u8>>,
    /// Windows (or sessions) whose accumulators the guest could not merge.
    pub failed: Vec<FailedWindow>,
}

/// Event-time progress and state size, for progress reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub watermark: Option<i64>,
    pub partitions: Vec<PartitionProgress>,
    pub state_rows: usize,
    pub state_bytes: usize,
    pub overhead_bytes_per_row: usize,
    /// (window, key) pairs not yet final.
    pub open_windows: usize,
    /// Late records since the start.
    pub late_records: u64,
}

/// Windows, watermarks and accumulators of one aggregate step: see the
/// module docs for what it promises.
#[derive(Debug)]
pub struct WindowEngine {
    pub(super) shape: Shape,
    lateness: i64,
    /// Event times more than this past the processing time are refused.
    max_ahead: i64,
    pub(super) output: OutputMode,
    pub(super) watermarks: Watermarks,
    pub(super) state: State,
    pub(super) late: u64,
    pub(super) poisoned: bool,
}

impl WindowEngine {
    pub fn new(spec: WindowSpec) -> Result<Self, InvalidSpec> {
        spec.validate().map_err(InvalidSpec)?;
        Ok(Self {
            shape: spec.shape().map_err(InvalidSpec)?,
            lateness: spec.lateness_ms(),
            max_ahead: spec.max_ahead_ms(),
            output: spec.output,
            watermarks: Watermarks::new(spec.bound_ms(), spec.idle_timeout_ms()),
            state: State::default(),
            late: 0,
            poisoned: false,
        })
    }

    /// Folds a batch into its windows, then advances the watermark to
    /// `now_ms` (processing time) and emits the windows that are due (and,
    /// in `update` mode, the changed ones). At most one `fold`, one `merge`
    /// and one `finish` call.
    #[tracing::instrument(skip_all, fields(records = batch.len()))]
    pub fn process(
        &mut self,
        calls: &mut impl AggregateCalls,
        batch: BatchKeys<'_>,
        now_ms: i64,
    ) -> Result<WindowOutput, AggregateError> {
        if self.poisoned {
            return Err(AggregateError::Poisoned);
        }
        batch.assert_consistent();
        self.poisoned = true;
        let out = self.run(calls, &batch, now_ms)?;
        self.poisoned = false;
        Ok(out)
    }

    /// Advances time without records: idle partitions stop holding the
    /// watermark back, and the windows that became due are emitted.
    pub fn tick(
        &mut self,
        calls: &mut impl AggregateCalls,
        now_ms: i64,
    ) -> Result<WindowOutput, AggregateError> {
        self.process(calls, BatchKeys::EMPTY, now_ms)
    }

    /// Declares the source partitions the engine's records come from: a
    /// partition that has had no record yet holds the watermark back until
    /// it has one or has been silent for the idle timeout (counted from the
    /// next `process` or `tick`), so that a partition read late does not
    /// find its windows already closed.
    pub fn expect_partitions(&mut self, partitions: &[PartitionId]) {
        self.watermarks.expect(partitions);
    }

    /// The pipeline watermark; `None` before the first record.
    pub fn watermark(&self) -> Option<i64> {
        self.watermarks.current()
    }

    /// Per partition, the lowest source offset still needed by open state.
    /// Partitions without open state are absent.
    pub fn held_offsets(&self) -> HashMap<PartitionId, i64> {
        self.state.held_offsets()
    }

    /// Open (window, key) rows (for hopping windows: (pane, key) rows).
    pub fn state_rows(&self) -> usize {
        self.state.rows()
    }

    /// Accumulator bytes held.
    pub fn state_bytes(&self) -> usize {
        self.state.acc_bytes()
    }

    /// Estimated bookkeeping bytes per row beyond its accumulator.
    pub fn overhead_bytes_per_row(&self) -> usize {
        self.state.overhead_bytes_per_row()
    }

    pub fn progress(&self) -> Progress {
        Progress {
            watermark: self.watermark(),
            partitions: self.watermarks.progress(),
            state_rows: self.state_rows(),
            state_bytes: self.state_bytes(),
            overhead_bytes_per_row: self.overhead_bytes_per_row(),
            open_windows: self.state.timers(),
            late_records: self.late,
        }
    }

    /// Windows ending at or before this are final (given watermark `w`).
    fn limit(&self, w: Option<i64>) -> Option<i64> {
        w.map(|w| w.saturating_sub(self.lateness))
    }

    fn run(
        &mut self,
        calls: &mut impl AggregateCalls,
        batch: &BatchKeys<'_>,
        now: i64,
    ) -> Result<WindowOutput, AggregateError> {
        self.state.next_batch();
        let limit = self.limit(self.watermarks.current());
        let closed = |end: i64| limit.is_some_and(|l| end <= l);
        let n = batch.len();
        // Beyond the horizon: refused before anything else sees it.
        let horizon = now.saturating_add(self.max_ahead);
        let counts = |i: usize| !batch.skipped(i) && batch.event_times[i] <= horizon;
        self.watermarks.observe_batch(
            (0..n)
                .filter(|&i| counts(i))
                .map(|i| (batch.clock(i as u32), batch.event_times[i]))
                .chain(batch.marks.iter().copied().filter(|m| m.1 <= horizon)),
            now,
        );

        let mut out = WindowOutput::default();
        let mut items = Vec::with_capacity(n);
        for (i, &t) in batch.event_times.iter().enumerate() {
            if batch.skipped(i) {
                continue;
            }
            if t > horizon {
                out.dead_letters
                    .push((i as u32, ahead_reason(t, self.max_ahead)));
                continue;
            }
            // The record's group, and its latest window.
            let (start, last) = match self.shape {
                Shape::Panes { size, slide } => {
                    let pane = floor(t, slide);
                    (pane, (pane, pane.saturating_add(size)))
                }
                Shape::Session { gap } => (t, (t, t.saturating_add(gap))),
            };
            if closed(last.1) {
                out.dead_letters
                    .push((i as u32, late_reason(last.0, last.1)));
                out.late += 1;
            } else {
                items.push(Item::new(batch, i as u32, start, t));
            }
        }
        self.late += out.late;
        items.sort_unstable_by(|a, b| {
            a.cmp_key(b, batch)
                .then(a.start.cmp(&b.start))
                .then(a.t.cmp(&b.t))
                .then(a.rec.cmp(&b.rec))
        });

        let changed = match self.shape {
            Shape::Panes { size, slide } => {
                self.fold_panes(calls, batch, &items, size, slide, limit, &mut out)?
            }
            Shape::Session { gap } => self.fold_sessions(calls, batch, &items, gap, &mut out)?,
        };
        let watermark = self.watermarks.advance(now);
        let limit = self.limit(watermark);
        self.emit(calls, limit, &changed, &mut out)?;
        self.state.settle();
        out.dead_letters.sort_by_key(|d| d.0);
        Ok(out)
    }
}

/// A window whose result cannot be computed: the guest could not merge its
/// accumulators. They go to the dead-letter topic instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedWindow {
    pub key: std::sync::Arc<[u8]>,
    pub start: i64,
    pub end: i64,
    /// The accumulators that were to be merged, in order.
    pub accumulators: super::calls::Accumulators,
    pub reason: crate::batch::Reason,
}
