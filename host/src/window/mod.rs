//! Event-time windows: the host half of windowed aggregation.
//!
//! The guest (the WIT `aggregate` interface) says what a record's key and
//! event time are and how records fold into an accumulator; this module owns
//! everything about time: which windows a record belongs to, watermarks,
//! lateness, when a window's result is due, and the accumulators themselves.
//! It talks to the guest through [`AggregateCalls`](crate::batch::calls::AggregateCalls),
//! so it knows nothing of wasmtime or of the runtime; the runtime implements
//! that trait by moving the plain types of [`crate::batch::calls`] into the
//! generated bindings.
//!
//! # Promises
//!
//! - **Watermarks.** Per source partition (`(source, partition)`), the
//!   watermark is the largest event time seen minus `max_out_of_orderness`.
//!   The pipeline watermark is the minimum over partitions that are not idle;
//!   a partition is idle once no record arrived for `idle_timeout` of
//!   processing time (the caller's `now_ms`). If every partition is idle the
//!   watermark stays where it is. It never goes backwards. Records the guest
//!   dead-lettered in `extract` do not count (their event times are
//!   placeholders); late records do.
//! - **Horizon.** A record whose event time is more than `max_ahead`
//!   (default 1h) past the processing time of its batch is dead-lettered
//!   with the reason `event time too far ahead: T is more than D past the
//!   processing time`; it neither moves the watermark nor reaches the state,
//!   so one record stamped in the future cannot make everything after it
//!   late. A replayed batch keeps its processing time, so the same records
//!   are refused.
//! - **Windows.** Tumbling: `[floor(t / size) * size, + size)`. Hopping: every
//!   window of `size` starting at a multiple of `slide` that contains `t`; a
//!   record is folded once, into its `slide`-long pane, and a window's result
//!   merges its `size / slide` panes. Session: each record opens `[t, t + gap)`
//!   for its key; sessions of a key that overlap or touch merge into one.
//! - **Lateness.** A window is final once `watermark >= end +
//!   allowed_lateness`; its result is emitted and its state freed. A record
//!   is late when, against the watermark as it stood before its batch, every
//!   window it belongs to is final: it is not folded, it is dead-lettered
//!   with the reason `late: window [START, END) was already finalized` (RFC
//!   3339, milliseconds; for hopping the latest of its windows, for sessions
//!   `[t, t + gap)`), and counted. A record behind the watermark whose window
//!   is still open (within `allowed_lateness`) is not late.
//! - **Output.** `append`: one final result per window and key. `update`:
//!   also a non-final result (`final` = 0) for every window and key whose
//!   accumulator changed in the batch, except that a window changed and
//!   finalized in the same batch only gets its final result. Results come in
//!   the order (window end, window start, key bytes).
//! - **Calls.** A batch costs at most one `fold`, one `merge` and one
//!   `finish` call, whatever the number of records, keys and windows: session
//!   chains (a batch that bridges several sessions of a key) are resolved in
//!   the host into n-ary merge groups.
//! - **Offsets.** Open state remembers, per source partition, the lowest
//!   offset folded into it; [`WindowEngine::held_offsets`] is the lowest per
//!   partition over all open state. Without a checkpoint, the pipeline must
//!   not commit past it, so that a restart re-reads the records of every
//!   open window. Commit no further than that offset: it is itself needed.
//!   [`WindowEngine::snapshot`] captures all of the engine's state as plain
//!   data, and [`WindowEngine::restore`] continues from it exactly as if
//!   there had been no restart: a checkpoint that keeps the snapshot with
//!   the source positions after its last batch need not re-read open windows.
//! - **Results.** `finish` output records without a timestamp get their
//!   window's `end - 1`, those without a key the group key (as the contract
//!   says); `inputs` index [`WindowOutput::windows`].
//!
//! # State and cost
//!
//! One row per open (key, window), or (key, pane) for hopping windows, in a
//! hash map by key of small start-sorted vectors, plus a timer index of
//! open windows grouped by (end, start), each group a hash set of keys:
//! finalization pops groups from the front, never scanning the rest, and
//! sorts a popped group's keys, so the output is ordered by (end, start,
//! key). Per batch of `n` records touching `g` groups: `O(n log n)` to sort
//! the records by (key, group, time), `O(g)` hash lookups and accumulator
//! copies into the fold request, `O(f log f)` to finalize `f` windows
//! (whatever the number open), `O(p)` over partitions for the watermark. Hopping windows
//! multiply timers and merged accumulators by `size / slide` (at most
//! [`crate::spec::window::MAX_PANES_PER_WINDOW`]). See `state.rs` for the layout.
//!
//! # Failures
//!
//! A guest error or trap in `fold`, `merge` or `finish` fails the whole call
//! with [`AggregateError`](crate::batch::calls::AggregateError). The pipeline's calls (`runtime::BatchCalls`)
//! isolate `fold` faults record by record before they reach the engine, so
//! only `merge` and `finish` faults arrive here. The engine is then
//! poisoned: its state may hold part of the failed batch, so every later
//! call fails too, and the pipeline stops without committing; a restart
//! resumes from the last checkpoint (or the committed offsets, which
//! `held_offsets` kept behind every open window).

mod assign;
mod emit;
mod engine;
mod fold;
mod session;
mod snapshot;
mod state;
mod watermark;

#[cfg(test)]
mod tests;

use crate::batch::calls;
use crate::spec::window as spec;

pub use engine::{BatchKeys, FailedWindow, Progress, WindowEngine, WindowOutput, WindowRef};
pub use snapshot::{EngineSnapshot, RestoreError};
pub use watermark::PartitionProgress;

/// A source partition: (index into the pipeline's source topics, partition).
pub type PartitionId = (u16, i32);
