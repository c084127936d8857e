//! The handle through which a running pipeline is watched and steered by
//! whoever started it (the server's pipeline manager, `sluice dev`): its
//! live progress, pause and resume, and module swaps.
//!
//! The run loop reads requests only at batch boundaries. Setting one wakes
//! a source that is waiting for records, so a request on an idle pipeline
//! takes effect within one poll (100 ms), not at the next record.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

use super::Summary;
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
    /// Since the run started.
    pub totals: Totals,
    /// Per source partition: the position after the last record read, the
    /// broker's end offset (as last reported by the client, so up to a
    /// second old) and the difference.
    pub sources: Vec<SourceProgress>,
    /// Sum of the partitions' lag; `None` until the client reported end
    /// offsets.
    pub lag: Option<i64>,
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
    /// (Unix second, records read in it), oldest first.
    history: VecDeque<(i64, u64)>,
    /// Cumulative batch-duration histogram: counts per bucket, then +Inf.
    histogram: [u64; DURATION_BUCKETS_MS.len() + 1],
    duration_sum_ms: f64,
    log: Vec<SwapRecord>,
    next_swap: u64,
    /// The source's end offsets, for the lag.
    ends: Option<EndOffsets>,
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
        let mut progress = inner.progress.clone()?;
        let ends = inner.ends.clone();
        drop(inner);
        if let Some(ends) = ends {
            let ends = ends.lock().unwrap_or_else(|e| e.into_inner());
            for s in &mut progress.sources {
                s.end_offset = ends
                    .get(&(s.topic.clone(), s.partition))
                    .map(|&e| e.max(s.offset));
                s.lag = s.end_offset.map(|e| e - s.offset);
            }
            progress.lag = progress
                .sources
                .iter()
                .map(|s| s.lag)
                .sum::<Option<i64>>()
                .filter(|_| !progress.sources.is_empty());
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

    pub(super) fn watch_ends(&self, ends: EndOffsets) {
        lock(&self.inner).ends = Some(ends);
    }

    /// Publishes the progress after a batch of `rows` records that took
    /// `total_ms`, finished at `now_ms`.
    pub(super) fn publish(&self, progress: Progress, now_ms: i64) {
        let mut inner = lock(&self.inner);
        let second = now_ms.div_euclid(1000);
        match inner.history.back_mut() {
            Some((s, n)) if *s == second => *n += progress.num_input_rows,
            _ => inner.history.push_back((second, progress.num_input_rows)),
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
