//! The handle through which a running pipeline is watched and steered by
//! whoever started it (the server's pipeline manager, `sluice dev`): its
//! live progress, pause and resume, and module swaps.
//!
//! The run loop reads requests only at batch boundaries. Setting one wakes
//! a source that is waiting for records, so a request on an idle pipeline
//! takes effect within one poll (100 ms), not at the next record.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

use super::{Stage, Summary};
use crate::source::EndOffsets;

/// Upper bounds (ms) of the batch-duration histogram's buckets.
pub const DURATION_BUCKETS_MS: [f64; 12] = [
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
];

/// Seconds of throughput history kept for sparklines.
const HISTORY_SECONDS: i64 = 60;

/// A pipeline's progress after its last batch, in the spirit of Spark's
/// `StreamingQueryProgress`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// The number of the last batch (the epoch).
    pub batch_id: u64,
    /// When the last batch finished (RFC 3339).
    pub timestamp: String,
    /// Records read in the last batch.
    pub num_input_rows: u64,
    /// Records of the last batch over the time since the batch before it.
    pub input_rows_per_second: f64,
    /// Records of the last batch over the time it took to process them.
    pub processed_rows_per_second: f64,
    pub duration_ms: Durations,
    /// Event time, for a pipeline with an aggregate step.
    pub event_time: Option<EventTime>,
    /// Window state, for a pipeline with an aggregate step.
    pub state: Option<StateInfo>,
    /// What a join step holds, per side, for a pipeline that starts with
    /// one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinInfo>,
    /// Since the run started.
    pub totals: Totals,
    /// Per source partition: the position after the last record read, the
    /// broker's end offset (as last reported by the client, so up to a
    /// second old) and the difference.
    pub sources: Vec<SourceProgress>,
    /// Sum of the partitions' lag; `None` until the client reported end
    /// offsets.
    pub lag: Option<i64>,
    /// A pipeline run as tasks (`parallelism` other than 1): one row per
    /// task, by partition; the fields above are then the pipeline's
    /// (totals summed, the lowest watermark, every partition's lag).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskProgress>,
}

/// One task of a pipeline run as tasks, after its last batch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskProgress {
    /// The topics it reads: `source`, or the `repartition` topic of a
    /// pipeline cut in two.
    pub stage: Stage,
    /// The partition number the task owns.
    pub partition: i32,
    /// Whether this process owns the task now: one the consumer group
    /// moved to another process keeps its row, with what this one did for
    /// it (no lag, watermark or state: those are the new owner's).
    pub owned: bool,
    /// The task's last epoch (its batches are numbered apart).
    pub batch_id: u64,
    pub records_in: u64,
    /// Its partitions (one per source topic): position, end offset, lag.
    pub sources: Vec<SourceProgress>,
    pub lag: Option<i64>,
    /// Its event-time watermark, Unix milliseconds (with an aggregate).
    pub watermark: Option<i64>,
    /// Its window state (with an aggregate).
    pub state: Option<StateInfo>,
}

/// Where the last batch's time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Durations {
    /// Waiting for and reading the records.
    pub fetch: f64,
    /// The transform chain (Wasm and windows).
    pub transform: f64,
    /// Handing results to the sinks (Kafka producer, Parquet).
    pub sink: f64,
    /// Waiting for acknowledgements and taking checkpoints.
    pub checkpoint: f64,
    pub total: f64,
}

impl std::ops::AddAssign for Durations {
    fn add_assign(&mut self, other: Self) {
        self.fetch += other.fetch;
        self.transform += other.transform;
        self.sink += other.sink;
        self.checkpoint += other.checkpoint;
        self.total += other.total;
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct EventTime {
    /// Unix milliseconds.
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub watermark: Option<i64>,
}

/// A join step's buffers: records held per side, their bytes, and each
/// side's watermark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JoinInfo {
    pub left: JoinSideInfo,
    pub right: JoinSideInfo,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JoinSideInfo {
    /// Records held (waiting for matches, or to be emitted alone).
    pub rows: u64,
    /// Their bytes, with the host's bookkeeping.
    pub bytes: u64,
    /// Unix milliseconds; `None` before the side's first record.
    pub watermark: Option<i64>,
}

impl JoinInfo {
    /// Two tasks' buffers together: rows and bytes summed, the slower
    /// watermark.
    fn add(&mut self, other: &JoinInfo) {
        for (m, o) in [
            (&mut self.left, &other.left),
            (&mut self.right, &other.right),
        ] {
            m.rows += o.rows;
            m.bytes += o.bytes;
            m.watermark = match (m.watermark, o.watermark) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StateInfo {
    /// Open (window, key) pairs.
    pub rows: u64,
    /// Bytes of accumulators plus the host's bookkeeping.
    pub bytes: u64,
}

/// Since the run started: its [`Summary`] so far (the same fields `sluice
/// run` prints at the end, flattened into this object) and the counters
/// only a live run shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    #[serde(flatten)]
    pub run: Summary,
    /// Dead-lettered because their window was already final.
    pub late: u64,
    /// Guest faults, counted per call (a trap while isolating a record
    /// counts too).
    pub traps: u64,
    pub deadline_hits: u64,
    pub memory_hits: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceProgress {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub end_offset: Option<i64>,
    pub lag: Option<i64>,
}

/// One point of a throughput sparkline.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Start of the second, Unix milliseconds.
    pub t: i64,
    pub rows_per_second: f64,
}

/// A request to run another module in one step.
#[derive(Debug, Clone)]
pub struct SwapRequest {
    /// Index of the step in the spec's `transforms`.
    pub step: usize,
    /// Module name, as in logs and dead-letter headers.
    pub module: String,
    /// The store's version, if the module comes from one.
    pub version: Option<u32>,
    pub file: PathBuf,
}

/// What became of a swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwapState {
    /// Waiting for a batch boundary.
    Pending,
    /// Running its first batch.
    Trial,
    /// In use.
    Live,
    /// The previous module runs again (see `reason`).
    RolledBack,
}

/// The record of one swap, kept for the status document.
#[derive(Debug, Clone, Serialize)]
pub struct SwapRecord {
    pub id: u64,
    pub step: String,
    pub module: String,
    pub from_version: Option<u32>,
    pub to_version: Option<u32>,
    pub state: SwapState,
    /// Why it was rolled back.
    pub reason: Option<String>,
    pub requested_at: String,
    /// The first batch run by the new module.
    pub first_batch: Option<u64>,
    /// Per source partition, the position at which the new module took
    /// over: records before it were run by the previous module.
    pub boundary: Vec<(String, i32, i64)>,
    /// Milliseconds between the end of the last batch run by the previous
    /// module and the start of the first run by the new one (this includes
    /// waiting for records, if none were there).
    pub pause_ms: Option<f64>,
    /// Milliseconds the swap itself took at the boundary: a checkpoint if
    /// the pipeline takes them, loading the module, starting an instance.
    pub swap_ms: Option<f64>,
}

/// Called when a swap went live or was rolled back, on the pipeline's
/// thread.
pub type SwapListener = Box<dyn Fn(&SwapRecord) + Send + Sync>;

/// Requests, progress and the swap log of one run. Shared by the run loop
/// and its controllers.
#[derive(Default)]
pub struct Control {
    /// A request is waiting: the source stops waiting for records.
    wake: AtomicBool,
    inner: Mutex<Inner>,
    changed: Condvar,
    listener: Option<SwapListener>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Inner {
    pause: bool,
    paused: bool,
    swaps: VecDeque<(u64, SwapRequest)>,
    progress: Option<Progress>,
    /// A pipeline run as tasks: how many workers run it, and how many of
    /// them are paused.
    workers: usize,
    paused_workers: usize,
    /// A pipeline run as tasks: each task's last progress, by stage and
    /// partition.
    tasks: BTreeMap<(Stage, i32), Progress>,
    /// Tasks of `tasks` the group moved to another process.
    departed: BTreeSet<(Stage, i32)>,
    /// (Unix second, records read in it), oldest first.
    history: VecDeque<(i64, u64)>,
    /// Cumulative batch-duration histogram: counts per bucket, then +Inf.
    histogram: [u64; DURATION_BUCKETS_MS.len() + 1],
    duration_sum_ms: f64,
    log: Vec<SwapRecord>,
    next_swap: u64,
    /// The sources' end offsets, for the lag (one per worker).
    ends: Vec<EndOffsets>,
    /// The parts of the run that start on their own (the whole run, or
    /// each stage of a run as tasks), and how many of them have started.
    parts: usize,
    parts_started: usize,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Control {
    pub fn new() -> Self {
        Self::default()
    }

    /// A control whose `listener` hears of every swap that went live or
    /// was rolled back.
    pub fn with_listener(listener: SwapListener) -> Self {
        Self {
            listener: Some(listener),
            ..Self::default()
        }
    }

    /// Whether the run loop has a request to look at.
    pub fn woken(&self) -> &AtomicBool {
        &self.wake
    }

    /// Asks the run to pause after its current batch (or resume).
    pub fn set_paused(&self, pause: bool) {
        lock(&self.inner).pause = pause;
        self.wake.store(true, Ordering::Relaxed);
        self.changed.notify_all();
    }

    /// Whether the run has started: a whole run's source polls; every
    /// worker of a run as tasks has its first tasks (a member of the
    /// consumer group: its first assignment, possibly none). The moment the
    /// run logs `pipeline started` (once per stage).
    pub fn has_started(&self) -> bool {
        let inner = lock(&self.inner);
        inner.parts > 0 && inner.parts_started >= inner.parts
    }

    /// Whether the run is paused (it has acknowledged the request).
    pub fn is_paused(&self) -> bool {
        lock(&self.inner).paused
    }

    /// Waits until the run is paused (or running again), for at most
    /// `timeout`; returns whether it got there.
    pub fn wait_paused(&self, paused: bool, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut inner = lock(&self.inner);
        loop {
            let now = std::time::Instant::now();
            if inner.paused == paused || now >= deadline {
                return inner.paused == paused;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Queues a swap; returns its id.
    pub fn request_swap(&self, request: SwapRequest, record: SwapRecord) -> u64 {
        let mut inner = lock(&self.inner);
        inner.next_swap += 1;
        let id = inner.next_swap;
        inner.swaps.push_back((id, request));
        inner.log.push(SwapRecord { id, ..record });
        drop(inner);
        self.wake.store(true, Ordering::Relaxed);
        self.changed.notify_all();
        id
    }

    /// Waits until swap `id` left `Pending` (or `timeout` passed) and
    /// returns its record.
    pub fn wait_swap(&self, id: u64, timeout: Duration) -> Option<SwapRecord> {
        let deadline = std::time::Instant::now() + timeout;
        let mut inner = lock(&self.inner);
        loop {
            let record = inner.log.iter().find(|r| r.id == id)?;
            let now = std::time::Instant::now();
            if record.state != SwapState::Pending || now >= deadline {
                return Some(record.clone());
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn swaps(&self) -> Vec<SwapRecord> {
        lock(&self.inner).log.clone()
    }

    /// The progress after the last batch, with the lag as of now (the end
    /// offsets the client reported last, at most a second ago while the
    /// run polls).
    pub fn progress(&self) -> Option<Progress> {
        let inner = lock(&self.inner);
        let mut progress = if inner.tasks.is_empty() {
            inner.progress.clone()?
        } else {
            merge_tasks(inner.progress.as_ref()?, &inner.tasks, &inner.departed)
        };
        let sources = inner.ends.clone();
        drop(inner);
        if !sources.is_empty() {
            let mut ends = HashMap::new();
            for source in &sources {
                ends.extend(
                    source
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .map(|(k, &v)| (k.clone(), v)),
                );
            }
            fill_lag(&mut progress.sources, &ends);
            progress.lag = sum_lag(&progress.sources);
            for task in progress.tasks.iter_mut().filter(|t| t.owned) {
                fill_lag(&mut task.sources, &ends);
                task.lag = sum_lag(&task.sources);
            }
        }
        Some(progress)
    }

    /// Records read per second over the last minute, oldest first, one
    /// sample per whole second before `now_ms`.
    pub fn throughput(&self, now_ms: i64) -> Vec<Sample> {
        let inner = lock(&self.inner);
        let now = now_ms.div_euclid(1000);
        (now - HISTORY_SECONDS..now)
            .map(|second| Sample {
                t: second * 1000,
                rows_per_second: inner
                    .history
                    .iter()
                    .find(|(s, _)| *s == second)
                    .map_or(0.0, |(_, n)| *n as f64),
            })
            .collect()
    }

    /// The batch-duration histogram: cumulative counts per bucket of
    /// [`DURATION_BUCKETS_MS`] then `+Inf`, and the sum in milliseconds.
    pub fn histogram(&self) -> (Vec<u64>, f64) {
        let inner = lock(&self.inner);
        let mut cumulative = Vec::with_capacity(inner.histogram.len());
        let mut sum = 0;
        for n in inner.histogram {
            sum += n;
            cumulative.push(sum);
        }
        (cumulative, inner.duration_sum_ms)
    }

    // The run loop's side.

    /// The group moved `task` to another process (or this one lost it).
    pub(super) fn task_departed(&self, task: (Stage, i32)) {
        lock(&self.inner).departed.insert(task);
    }

    /// The end offsets of a source, for the lag. A pipeline run as tasks
    /// has a source per worker: each adds its own.
    pub(super) fn watch_ends(&self, ends: EndOffsets) {
        let mut inner = lock(&self.inner);
        if !inner.ends.iter().any(|known| Arc::ptr_eq(known, &ends)) {
            inner.ends.push(ends);
        }
    }

    /// Publishes the progress after a batch, of the whole pipeline or
    /// (`task`) of the task of that stage and partition. A repartition
    /// task's records were counted once already, as they came in.
    pub(super) fn publish(&self, task: Option<(Stage, i32)>, progress: Progress, now_ms: i64) {
        let mut inner = lock(&self.inner);
        if let Some(task) = task {
            inner.tasks.insert(task, progress.clone());
            inner.departed.remove(&task);
        }
        let read = if task.is_some_and(|(stage, _)| stage == Stage::Repartition) {
            0
        } else {
            progress.num_input_rows
        };
        let second = now_ms.div_euclid(1000);
        match inner.history.back_mut() {
            Some((s, n)) if *s == second => *n += read,
            _ => inner.history.push_back((second, read)),
        }
        while inner
            .history
            .front()
            .is_some_and(|(s, _)| *s < second - HISTORY_SECONDS)
        {
            inner.history.pop_front();
        }
        let total = progress.duration_ms.total;
        let bucket = DURATION_BUCKETS_MS
            .iter()
            .position(|&b| total <= b)
            .unwrap_or(DURATION_BUCKETS_MS.len());
        inner.histogram[bucket] += 1;
        inner.duration_sum_ms += total;
        inner.progress = Some(progress);
    }

    /// Takes the pause request into account; returns whether to stay
    /// paused. Clears the wake-up unless a swap waits that can start now
    /// (`swapping`: one is on trial, the others wait for it).
    pub(super) fn hold(&self, swapping: bool) -> bool {
        let mut inner = lock(&self.inner);
        inner.paused = inner.pause;
        self.wake
            .store(!swapping && !inner.swaps.is_empty(), Ordering::Relaxed);
        self.changed.notify_all();
        inner.pause
    }

    /// At the start of a run: `parts` parts will report that they started
    /// (see [`Self::has_started`]).
    pub(super) fn expect_starts(&self, parts: usize) {
        let mut inner = lock(&self.inner);
        inner.parts = parts;
        inner.parts_started = 0;
    }

    /// A part of the run (the whole run, or a stage) has started.
    pub(super) fn part_started(&self) {
        lock(&self.inner).parts_started += 1;
    }

    /// Before a run as tasks: no workers yet (each stage adds its own, see
    /// [`Self::add_workers`]).
    pub(super) fn reset_workers(&self) {
        let mut inner = lock(&self.inner);
        inner.workers = 0;
        inner.paused_workers = 0;
    }

    /// `workers` more workers, each pausing on its own (see
    /// [`Self::worker_paused`]).
    pub(super) fn add_workers(&self, workers: usize) {
        lock(&self.inner).workers += workers;
    }

    /// Whether a worker should pause (or stay paused).
    pub(super) fn pause_requested(&self) -> bool {
        lock(&self.inner).pause
    }

    /// A worker paused (or resumed); the pipeline is paused once all are.
    pub(super) fn worker_paused(&self, paused: bool) {
        let mut inner = lock(&self.inner);
        if paused {
            inner.paused_workers += 1;
        } else {
            inner.paused_workers = inner.paused_workers.saturating_sub(1);
        }
        inner.paused = inner.workers > 0 && inner.paused_workers == inner.workers;
        drop(inner);
        self.changed.notify_all();
    }

    /// A run that cannot swap modules (a pipeline cut at a repartition
    /// topic run until caught up): every waiting swap is refused, saying so.
    pub(super) fn refuse_swaps(&self, reason: &str) {
        let ids: Vec<u64> = {
            let mut inner = lock(&self.inner);
            self.wake.store(false, Ordering::Relaxed);
            inner.swaps.drain(..).map(|(id, _)| id).collect()
        };
        for id in ids {
            self.update_swap(id, |r| {
                r.state = SwapState::RolledBack;
                r.reason = Some(reason.to_owned());
            });
        }
    }

    /// Sleeps until a request arrives or `timeout` passes.
    pub(super) fn sleep(&self, timeout: Duration) {
        let inner = lock(&self.inner);
        if inner.pause {
            let _ = self.changed.wait_timeout(inner, timeout);
        }
    }

    /// The oldest waiting swap. The others wait for its trial, so the
    /// wake-up is cleared unless a pause request changed.
    pub(super) fn next_swap(&self) -> Option<(u64, SwapRequest)> {
        let mut inner = lock(&self.inner);
        let next = inner.swaps.pop_front();
        self.wake
            .store(inner.pause != inner.paused, Ordering::Relaxed);
        next
    }

    /// At the end of a run: swaps that never reached a batch boundary are
    /// recorded as not done.
    pub(super) fn cancel_pending(&self) {
        let ids: Vec<u64> = lock(&self.inner)
            .swaps
            .drain(..)
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            self.update_swap(id, |r| {
                r.state = SwapState::RolledBack;
                r.reason = Some("the pipeline stopped before the swap took effect".to_owned());
            });
        }
    }

    /// After a trial: wakes the run again if swaps or a pause request
    /// waited for it.
    pub(super) fn rearm(&self) {
        let inner = lock(&self.inner);
        let waiting = !inner.swaps.is_empty() || inner.pause != inner.paused;
        self.wake.store(waiting, Ordering::Relaxed);
    }

    /// Updates swap `id`'s record; tells the listener when it went live or
    /// was rolled back.
    pub(super) fn update_swap(&self, id: u64, update: impl FnOnce(&mut SwapRecord)) {
        let mut inner = lock(&self.inner);
        let Some(record) = inner.log.iter_mut().find(|r| r.id == id) else {
            return;
        };
        update(record);
        let record = record.clone();
        drop(inner);
        self.changed.notify_all();
        if matches!(record.state, SwapState::Live | SwapState::RolledBack)
            && let Some(listener) = &self.listener
        {
            listener(&record);
        }
    }
}

/// Sets each partition's end offset (never below its position) and lag.
fn fill_lag(sources: &mut [SourceProgress], ends: &HashMap<(String, i32), i64>) {
    for s in sources {
        s.end_offset = ends
            .get(&(s.topic.clone(), s.partition))
            .map(|&e| e.max(s.offset));
        s.lag = s.end_offset.map(|e| e - s.offset);
    }
}

/// The partitions' total lag; `None` while any is unknown, or none.
fn sum_lag(sources: &[SourceProgress]) -> Option<i64> {
    sources
        .iter()
        .map(|s| s.lag)
        .sum::<Option<i64>>()
        .filter(|_| !sources.is_empty())
}

/// The progress of a pipeline run as tasks, from each task's: the last
/// batch's figures are `last`'s (the latest published), rates and totals
/// are summed, event time is the slowest task's, and each task has a row.
/// Tasks in `departed` count in the totals only.
fn merge_tasks(
    last: &Progress,
    tasks: &BTreeMap<(Stage, i32), Progress>,
    departed: &BTreeSet<(Stage, i32)>,
) -> Progress {
    let mut merged = Progress {
        totals: Totals::default(),
        sources: Vec::new(),
        event_time: None,
        state: None,
        join: None,
        input_rows_per_second: 0.0,
        processed_rows_per_second: 0.0,
        tasks: Vec::with_capacity(tasks.len()),
        ..last.clone()
    };
    // A pipeline cut in two: its records come in once, through the source
    // stage; its results come out of the repartition stage.
    let mut repartitioned = Summary::default();
    for (&(stage, partition), p) in tasks {
        match stage {
            Stage::Source => {
                merged.totals.run += p.totals.run.clone();
                merged.input_rows_per_second += p.input_rows_per_second;
                merged.processed_rows_per_second += p.processed_rows_per_second;
            }
            Stage::Repartition => repartitioned += p.totals.run.clone(),
        }
        merged.totals.late += p.totals.late;
        merged.totals.traps += p.totals.traps;
        merged.totals.deadline_hits += p.totals.deadline_hits;
        merged.totals.memory_hits += p.totals.memory_hits;
        let owned = !departed.contains(&(stage, partition));
        if !owned {
            merged.tasks.push(TaskProgress {
                stage,
                partition,
                owned,
                batch_id: p.batch_id,
                records_in: p.totals.run.records_in,
                sources: Vec::new(),
                lag: None,
                watermark: None,
                state: None,
            });
            continue;
        }
        merged.sources.extend(p.sources.iter().cloned());
        if let Some(e) = p.event_time {
            let m = merged.event_time.get_or_insert(e);
            m.min = m.min.min(e.min).or(m.min).or(e.min);
            m.max = m.max.max(e.max);
            m.watermark = match (m.watermark, e.watermark) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            };
        }
        if let Some(j) = &p.join {
            merged.join.get_or_insert_with(JoinInfo::default).add(j);
        }
        if let Some(st) = p.state {
            let m = merged.state.get_or_insert_with(StateInfo::default);
            m.rows += st.rows;
            m.bytes += st.bytes;
        }
        merged.tasks.push(TaskProgress {
            stage,
            partition,
            owned,
            batch_id: p.batch_id,
            records_in: p.totals.run.records_in,
            sources: p.sources.clone(),
            lag: None,
            watermark: p.event_time.and_then(|e| e.watermark),
            state: p.state,
        });
    }
    if tasks.keys().any(|(stage, _)| *stage == Stage::Repartition) {
        merged.totals.run =
            Summary::of_stages(std::mem::take(&mut merged.totals.run), repartitioned);
    }
    merged.input_rows_per_second = (merged.input_rows_per_second * 10.0).round() / 10.0;
    merged.processed_rows_per_second = (merged.processed_rows_per_second * 10.0).round() / 10.0;
    merged
        .sources
        .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task's progress: `records` read in all, its partition of `in` at
    /// `offset`, a watermark and state.
    fn task(partition: i32, records: u64, offset: i64, watermark: i64, rows: u64) -> Progress {
        Progress {
            batch_id: records / 10,
            num_input_rows: 10,
            input_rows_per_second: 100.0,
            processed_rows_per_second: 1000.0,
            event_time: Some(EventTime {
                min: Some(watermark - 5000),
                max: Some(watermark + 5000),
                watermark: Some(watermark),
            }),
            state: Some(StateInfo {
                rows,
                bytes: rows * 100,
            }),
            totals: Totals {
                run: Summary {
                    records_in: records,
                    ..Summary::default()
                },
                late: 1,
                ..Totals::default()
            },
            sources: vec![SourceProgress {
                topic: "in".into(),
                partition,
                offset,
                end_offset: None,
                lag: None,
            }],
            ..Progress::default()
        }
    }

    /// Partitions 0 and 1 of `in` end at offsets 50 and 45.
    fn two_partition_ends() -> EndOffsets {
        let ends = EndOffsets::default();
        ends.lock()
            .unwrap()
            .extend([(("in".to_owned(), 0), 50), (("in".to_owned(), 1), 45)]);
        ends
    }

    #[test]
    fn the_progress_of_tasks_is_the_pipelines_with_a_row_per_task() {
        let control = Control::new();
        control.watch_ends(two_partition_ends());
        // A second worker's source knows nothing yet.
        control.watch_ends(EndOffsets::default());
        control.publish(Some((Stage::Source, 1)), task(1, 40, 40, 90_000, 3), 1_000);
        control.publish(Some((Stage::Source, 0)), task(0, 30, 30, 60_000, 2), 1_500);
        control.publish(Some((Stage::Source, 1)), task(1, 45, 45, 95_000, 4), 1_900);
        let p = control.progress().unwrap();
        assert_eq!(p.totals.run.records_in, 75);
        assert_eq!(p.totals.late, 2);
        assert_eq!(p.input_rows_per_second, 200.0);
        assert_eq!(p.batch_id, 4, "the latest batch's");
        assert_eq!(
            (
                p.event_time.unwrap().min,
                p.event_time.unwrap().max,
                p.event_time.unwrap().watermark
            ),
            (Some(55_000), Some(100_000), Some(60_000)),
            "the slowest task's watermark"
        );
        assert_eq!((p.state.unwrap().rows, p.state.unwrap().bytes), (6, 600));
        assert_eq!(p.lag, Some(20));
        let rows: Vec<_> = p
            .tasks
            .iter()
            .map(|t| (t.partition, t.batch_id, t.records_in, t.lag, t.watermark))
            .collect();
        assert_eq!(
            rows,
            [
                (0, 3, 30, Some(20), Some(60_000)),
                (1, 4, 45, Some(0), Some(95_000))
            ]
        );
        let histogram = control.histogram().0;
        assert_eq!(histogram.last(), Some(&3), "every task's batch counts");
    }

    #[test]
    fn the_join_buffers_of_tasks_add_up_and_the_slower_watermark_stands() {
        let control = Control::new();
        let with_join = |partition, left: JoinSideInfo, right: JoinSideInfo| Progress {
            join: Some(JoinInfo { left, right }),
            ..task(partition, 10, 10, 1_000, 0)
        };
        let side = |rows, watermark| JoinSideInfo {
            rows,
            bytes: rows * 50,
            watermark,
        };
        control.publish(
            Some((Stage::Source, 0)),
            with_join(0, side(3, Some(70_000)), side(1, None)),
            1_000,
        );
        control.publish(
            Some((Stage::Source, 1)),
            with_join(1, side(2, Some(40_000)), side(5, Some(90_000))),
            1_500,
        );
        let join = control.progress().unwrap().join.unwrap();
        assert_eq!(join.left, side(5, Some(40_000)));
        // A side that has seen no record in one task does not hold the
        // others' watermark back at nothing.
        assert_eq!(join.right, side(6, Some(90_000)));
    }

    #[test]
    fn a_run_has_started_once_each_of_its_parts_has() {
        let control = Control::new();
        assert!(!control.has_started(), "no run yet");
        control.expect_starts(2);
        control.part_started();
        assert!(!control.has_started(), "one stage of two");
        control.part_started();
        assert!(control.has_started());
    }

    #[test]
    fn a_task_moved_to_another_process_counts_in_the_totals_only() {
        let control = Control::new();
        control.watch_ends(two_partition_ends());
        control.publish(Some((Stage::Source, 0)), task(0, 30, 30, 60_000, 2), 1_000);
        control.publish(Some((Stage::Source, 1)), task(1, 40, 40, 90_000, 3), 1_500);
        control.task_departed((Stage::Source, 1));
        let p = control.progress().unwrap();
        assert_eq!(
            p.totals.run.records_in, 70,
            "what this process did for both"
        );
        assert_eq!(p.lag, Some(20), "the owned task's only");
        assert_eq!(p.state.unwrap().rows, 2);
        let rows: Vec<_> = p
            .tasks
            .iter()
            .map(|t| (t.partition, t.owned, t.records_in, t.lag, t.watermark))
            .collect();
        assert_eq!(
            rows,
            [
                (0, true, 30, Some(20), Some(60_000)),
                (1, false, 40, None, None)
            ]
        );
        // Given back by the group: owned again from its next batch.
        control.publish(Some((Stage::Source, 1)), task(1, 45, 45, 95_000, 4), 1_900);
        assert!(control.progress().unwrap().tasks.iter().all(|t| t.owned));
    }
}
