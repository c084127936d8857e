//! An aggregate step: the guest's `extract` on each batch, then the host's
//! window engine folding, merging and finishing through the same guest.

use crate::batch::calls::AggregateError;
use crate::batch::{Batch, Columns, Reason};
use crate::runtime::{Aggregator, BatchCalls, InstantiateError};
use crate::spec::window::{InvalidSpec, WindowSpec};
use crate::spec::{UPSTREAM_HEADER, WATERMARK_HEADER};
use crate::window::{BatchKeys, WindowEngine, WindowOutput, WindowRef};

/// What an aggregate step made of one batch.
#[derive(Debug, Default)]
pub struct AggregateOutput {
    /// Window results, as the guest's `finish` emitted them.
    pub records: Columns,
    /// For each result, its window in `windows`.
    pub inputs: Vec<u32>,
    /// 0 for the default output, `k` for `output_names[k - 1]`.
    pub targets: Vec<u32>,
    pub output_names: Vec<String>,
    pub windows: Vec<WindowRef>,
    /// `(batch index, reason)`: records the guest could not key, fold, or
    /// that arrived after their window was finalized.
    pub dead_letters: Vec<(u32, Reason)>,
    /// Windows the guest could not finish.
    pub window_dead_letters: Vec<WindowDeadLetter>,
    pub late: u64,
    /// Watermark markers of a repartition topic the batch held (not
    /// records: they reach neither the guest nor the outputs).
    pub marks: u64,
}

/// A window whose result the guest could not produce: its accumulator goes
/// to the dead-letter topic with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowDeadLetter {
    pub key: std::sync::Arc<[u8]>,
    pub start: i64,
    pub end: i64,
    /// The window's accumulator, or, when the guest could not merge them,
    /// its accumulators one after the other (see `parts`).
    pub accumulator: Vec<u8>,
    /// Where each accumulator in `accumulator` starts, when there are several.
    pub parts: Vec<u32>,
    pub reason: Reason,
}

/// Why a step could not process a batch; the pipeline stops without
/// committing the batch.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Instantiate(#[from] InstantiateError),
    #[error(transparent)]
    Aggregate(#[from] AggregateError),
    /// A pipeline run as tasks aggregates each partition's records apart:
    /// a key must then be the records' Kafka key (what partitions them).
    #[error(
        "with parallelism other than 1, each task aggregates the records of its own partitions, so \
         the aggregate key must be the record's Kafka key; {what}. Add `repartition: true` to \
         the aggregate step (the records are re-keyed through a repartition topic), or run this \
         pipeline with `parallelism: 1`"
    )]
    NotPartitionKey { what: String },
}

/// A guest and the window engine that owns its state.
#[derive(Debug)]
pub struct AggregateStep {
    aggregator: Aggregator,
    engine: WindowEngine,
    /// Refuse keys other than the record's Kafka key (a task's step).
    partition_keys: bool,
    /// Keep a watermark per upstream task (a stage reading a repartition
    /// topic): see [`Self::read_upstreams`].
    upstreams: bool,
}

impl AggregateStep {
    pub fn new(aggregator: Aggregator, spec: WindowSpec) -> Result<Self, InvalidSpec> {
        Ok(Self {
            aggregator,
            engine: WindowEngine::new(spec)?,
            partition_keys: false,
            upstreams: false,
        })
    }

    pub fn engine(&self) -> &WindowEngine {
        &self.engine
    }

    /// See [`WindowEngine::expect_partitions`].
    pub fn expect_partitions(&mut self, partitions: &[crate::window::PartitionId]) {
        self.engine.expect_partitions(partitions);
    }

    /// Makes the step fail on a record whose aggregate key is not its
    /// Kafka key (see [`StepError::NotPartitionKey`]).
    pub fn require_partition_keys(&mut self) {
        self.partition_keys = true;
    }

    /// For a stage that reads a repartition topic: each record's upstream
    /// task is its last `sluice.upstream` header, and each (upstream,
    /// partition) has a watermark of its own (see [`BatchKeys::upstreams`]).
    /// A record without that header (not written by the stage upstream)
    /// counts as upstream `u16::MAX` (one unknown writer).
    pub fn read_upstreams(&mut self) {
        self.upstreams = true;
    }

    /// Replaces the window engine: with one restored from a checkpoint.
    pub fn set_engine(&mut self, engine: WindowEngine) {
        self.engine = engine;
    }

    pub fn aggregator(&self) -> &Aggregator {
        &self.aggregator
    }

    pub fn into_aggregator(self) -> Aggregator {
        self.aggregator
    }

    /// Runs another module from now on, on the same window state (the
    /// accumulators' format is the guest's contract); returns the previous.
    pub fn swap_aggregator(&mut self, aggregator: Aggregator) -> Aggregator {
        std::mem::replace(&mut self.aggregator, aggregator)
    }

    /// Lets processing time pass without records: idle partitions stop
    /// holding the watermark back and due windows are emitted.
    pub fn tick(&mut self, now_ms: i64) -> Result<AggregateOutput, StepError> {
        self.without_records(now_ms, &[])
    }

    /// Processing time passing, and event time as far as `marks` say,
    /// without records.
    fn without_records(
        &mut self,
        now_ms: i64,
        marks: &[(crate::window::PartitionId, i64)],
    ) -> Result<AggregateOutput, StepError> {
        let empty = Batch::default();
        let mut calls = BatchCalls {
            aggregator: &mut self.aggregator,
            held: &empty,
        };
        let keys = BatchKeys {
            marks,
            ..BatchKeys::EMPTY
        };
        let out = self.engine.process(&mut calls, keys, now_ms)?;
        Ok(AggregateOutput {
            marks: marks.len() as u64,
            ..Self::output(out, Vec::new(), None)
        })
    }

    /// Runs one batch: `now_ms` is the processing time, for idle partitions.
    /// Reading a repartition topic, its watermark markers advance event
    /// time and reach neither the guest nor the outputs.
    pub fn process(
        &mut self,
        batch: &mut Batch,
        now_ms: i64,
    ) -> Result<AggregateOutput, StepError> {
        if !self.upstreams {
            return self.process_marked(batch, now_ms, &[]);
        }
        let (marks, records) = split_marks(batch);
        if marks.is_empty() {
            return self.process_marked(batch, now_ms, &[]);
        }
        if records.is_empty() {
            return self.without_records(now_ms, &marks);
        }
        let mut held = batch.select(&records);
        let mut out = self.process_marked(&mut held, now_ms, &marks)?;
        for (i, _) in &mut out.dead_letters {
            *i = records[*i as usize];
        }
        out.marks = marks.len() as u64;
        Ok(out)
    }

    /// [`Self::process`] of records only, with `marks` observed beside them.
    fn process_marked(
        &mut self,
        batch: &mut Batch,
        now_ms: i64,
        marks: &[(crate::window::PartitionId, i64)],
    ) -> Result<AggregateOutput, StepError> {
        let extracted = self.aggregator.extract(batch)?;
        // The guest holds either the whole batch or, after a fault, `kept`.
        let held;
        let (held_batch, to_batch): (&Batch, Option<&[u32]>) = match &extracted.kept {
            None => (batch, None),
            Some(kept) => {
                held = batch.select(kept);
                (&held, Some(kept.as_slice()))
            }
        };
        let mut skip = vec![false; held_batch.len()];
        let mut dead_letters = Vec::new();
        match to_batch {
            None => {
                for (i, reason) in &extracted.dead_letters {
                    skip[*i as usize] = true;
                    dead_letters.push((*i, reason.clone()));
                }
            }
            // After isolation, extract's dead letters already use batch indices.
            Some(_) => dead_letters.extend(extracted.dead_letters.iter().cloned()),
        }
        if self.partition_keys {
            check_partition_keys(held_batch, &extracted.keys, &extracted.key_offsets, &skip)?;
        }
        let upstreams = if self.upstreams {
            upstreams_of(held_batch)
        } else {
            Vec::new()
        };
        let keys = BatchKeys {
            keys: &extracted.keys,
            key_offsets: &extracted.key_offsets,
            event_times: &extracted.event_times,
            skip: &skip,
            sources: &held_batch.sources,
            partitions: &held_batch.partitions,
            offsets: &held_batch.offsets,
            upstreams: &upstreams,
            marks,
        };
        let mut calls = BatchCalls {
            aggregator: &mut self.aggregator,
            held: held_batch,
        };
        let out = self.engine.process(&mut calls, keys, now_ms)?;
        Ok(Self::output(out, dead_letters, to_batch))
    }

    /// The step's output from the engine's, with dead letters indexed by
    /// source batch (`to_batch` maps held records to it after isolation).
    fn output(
        out: WindowOutput,
        mut dead_letters: Vec<(u32, Reason)>,
        to_batch: Option<&[u32]>,
    ) -> AggregateOutput {
        let map = |i: u32| to_batch.map_or(i, |kept| kept[i as usize]);
        dead_letters.extend(
            out.dead_letters
                .into_iter()
                .map(|(i, reason)| (map(i), reason)),
        );
        dead_letters.sort_by_key(|(i, _)| *i);
        let results = out.results;
        let window_dead_letters = results
            .dead_letters
            .iter()
            .zip(out.dead_accumulators)
            .map(|((window, reason), accumulator)| {
                let w = &out.windows[*window as usize];
                tracing::warn!(
                    key = %String::from_utf8_lossy(&w.key), start = w.start, end = w.end, %reason,
                    "the aggregate guest could not finish a window; its accumulator goes to the dead-letter topic"
                );
                WindowDeadLetter {
                    key: w.key.clone(),
                    start: w.start,
                    end: w.end,
                    accumulator,
                    parts: Vec::new(),
                    reason: reason.clone(),
                }
            })
            .chain(out.failed.into_iter().map(|f| {
                tracing::warn!(
                    key = %String::from_utf8_lossy(&f.key), start = f.start, end = f.end, reason = %f.reason,
                    "the aggregate guest could not merge a window's accumulators; they go to the dead-letter topic"
                );
                let mut parts = f.accumulators.offsets;
                parts.pop();
                WindowDeadLetter {
                    key: f.key,
                    start: f.start,
                    end: f.end,
                    accumulator: f.accumulators.data,
                    parts,
                    reason: f.reason,
                }
            }))
            .collect();
        AggregateOutput {
            records: results.records,
            inputs: results.inputs,
            targets: results.targets,
            output_names: results.output_names,
            windows: out.windows,
            dead_letters,
            window_dead_letters,
            late: out.late,
            marks: 0,
        }
    }
}

/// The upstream of a record whose `sluice.upstream` header is missing or
/// not a partition number.
const UNKNOWN_UPSTREAM: u16 = u16::MAX;

/// The watermark markers of a batch read from a repartition topic, as
/// ((upstream, partition), event time), and the indices of its other
/// records. A marker is a record with a `sluice.watermark` header (see
/// `spec::Stages`); one whose header is not a number is a record like any
/// other (the guest will say what it makes of it).
fn split_marks(batch: &Batch) -> (Vec<(crate::window::PartitionId, i64)>, Vec<u32>) {
    let (upstream, watermark) = (UPSTREAM_HEADER.as_bytes(), WATERMARK_HEADER.as_bytes());
    let mut marks = Vec::new();
    let mut records = Vec::with_capacity(batch.len());
    for (i, r) in batch.records.iter().enumerate() {
        let mark = match (r.key, r.value, last_number::<i64>(r, watermark)) {
            (None, None, Some(time)) => last_number::<u16>(r, upstream)
                .filter(|&u| u != UNKNOWN_UPSTREAM)
                .map(|u| ((u, batch.partitions[i]), time)),
            _ => None,
        };
        match mark {
            Some(m) => marks.push(m),
            None => records.push(i as u32),
        }
    }
    (marks, records)
}

/// Each record's upstream task: its last `sluice.upstream` header.
fn upstreams_of(batch: &Batch) -> Vec<u16> {
    let name = UPSTREAM_HEADER.as_bytes();
    batch
        .records
        .iter()
        .map(|r| {
            last_number::<u16>(r, name)
                .filter(|&u| u != UNKNOWN_UPSTREAM)
                .unwrap_or(UNKNOWN_UPSTREAM)
        })
        .collect()
}

/// The value of `record`'s last header named `name`, if it is a number
/// (the one the upstream stage added comes after any the record carried).
fn last_number<T: std::str::FromStr>(
    record: crate::batch::RecordRef<'_>,
    name: &[u8],
) -> Option<T> {
    let (_, value) = record.headers.iter().filter(|(n, _)| *n == name).last()?;
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Fails on the first record (not skipped) whose key, in `keys` /
/// `key_offsets` (Arrow-style), is not its Kafka key.
fn check_partition_keys(
    batch: &Batch,
    keys: &[u8],
    key_offsets: &[u32],
    skip: &[bool],
) -> Result<(), StepError> {
    for i in 0..batch.len() {
        if skip.get(i).copied().unwrap_or(false) {
            continue;
        }
        let key = &keys[key_offsets[i] as usize..key_offsets[i + 1] as usize];
        let kafka_key = batch.records.get(i).key.unwrap_or_default();
        if key != kafka_key {
            return Err(StepError::NotPartitionKey {
                what: format!(
                    "the record at partition {} offset {} has Kafka key `{}` and aggregate key `{}`",
                    batch.partitions[i],
                    batch.offsets[i],
                    String::from_utf8_lossy(kafka_key),
                    String::from_utf8_lossy(key)
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record: key, value, headers.
    type Raw<'a> = (Option<&'a str>, Option<&'a str>, &'a [(&'a str, &'a str)]);

    /// A batch of partition 3 of these records.
    fn batch(records: &[Raw<'_>]) -> Batch {
        let mut batch = Batch::default();
        for (i, (key, value, headers)) in records.iter().enumerate() {
            batch.records.push(
                key.map(str::as_bytes),
                value.map(str::as_bytes),
                None,
                headers
                    .iter()
                    .map(|(n, v)| (n.as_bytes(), Some(v.as_bytes()))),
            );
            batch.partitions.push(3);
            batch.offsets.push(i as i64);
            batch.sources.push(0);
        }
        batch
    }

    /// What the repartition topic holds is read as hostile: only a record
    /// without key or value whose headers are numbers is a marker; any other
    /// goes to the guest like a record, and a missing or bad upstream is the
    /// unknown one.
    #[test]
    fn markers_and_upstreams_are_read_strictly() {
        let up = |u: &'static str| (UPSTREAM_HEADER, u);
        let at = |t: &'static str| (WATERMARK_HEADER, t);
        let b = batch(&[
            (None, None, &[up("1"), at("5000")]),
            (Some("k"), Some("v"), &[up("2")]),
            (Some("k"), None, &[up("1"), at("6000")]),
            (None, None, &[up("one"), at("7000")]),
            (None, None, &[up("1"), at("soon")]),
            (None, None, &[up("70000"), at("8000")]),
            (None, None, &[up("65535"), at("9000")]),
            (None, None, &[up("0"), up("2"), at("1"), at("10000")]),
            (Some("k"), Some("v"), &[]),
            (Some("k"), Some("v"), &[up("-1")]),
        ]);
        let (marks, records) = split_marks(&b);
        assert_eq!(marks, [((1, 3), 5000), ((2, 3), 10000)]);
        assert_eq!(records, [1, 2, 3, 4, 5, 6, 8, 9]);
        let held = b.select(&records);
        assert_eq!(
            upstreams_of(&held),
            [
                2,
                1,
                UNKNOWN_UPSTREAM,
                1,
                UNKNOWN_UPSTREAM,
                UNKNOWN_UPSTREAM,
                UNKNOWN_UPSTREAM,
                UNKNOWN_UPSTREAM
            ]
        );
    }
}
