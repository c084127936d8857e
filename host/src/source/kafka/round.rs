//! Filling a round of batches: records read from the source's queue (or
//! polled one at a time), each added to its task's batch, until one is full
//! or `max_wait` after the first.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};

use super::{KafkaSource, NextOffset, Queues, SourceBatch, SourceError};
use crate::batch::Batch;

/// How long one poll may block when no batch is open.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// One task's batch of a round, being filled.
pub(super) struct Slot {
    batch: Batch,
    commit: BTreeMap<(u16, i32), i64>,
}

impl KafkaSource {
    /// Polls the next micro-batch: it closes at `max_records`, `max_bytes`
    /// or `max_wait` after its first record. `None` once the source is done:
    /// `stop` was set, or (with `--until-caught-up`) every partition reached
    /// its end offset. With a tick set, an empty batch when none arrived
    /// for that long. When `wake` is set, the batch closes at once, and may
    /// be empty.
    pub fn next_batch(
        &mut self,
        stop: &AtomicBool,
        wake: &AtomicBool,
    ) -> Result<Option<SourceBatch>, SourceError> {
        debug_assert!(self.slots.is_none(), "a task source gives batches per task");
        Ok(self
            .next_batches(stop, wake)?
            .map(|mut batches| batches.swap_remove(0)))
    }

    /// Like [`Self::next_batch`], for a source of tasks: one batch per task
    /// (in the order of the `tasks` given to [`Self::new`]; some may be
    /// empty), built as the records arrive. The round closes when one
    /// task's batch is full, or `max_wait` after its first record.
    pub fn next_batches(
        &mut self,
        stop: &AtomicBool,
        wake: &AtomicBool,
    ) -> Result<Option<Vec<SourceBatch>>, SourceError> {
        let polling_since = Instant::now();
        let max_bytes = self.trigger.max_bytes.as_u64() as usize;
        let max_records = self.trigger.max_records;
        let n = if self.slots.is_some() {
            self.order.len()
        } else {
            1
        };
        let mut round: Vec<Slot> = (0..n)
            .map(|_| Slot {
                batch: Batch::with_capacity(
                    max_records.div_ceil(n),
                    max_bytes.min(16 << 20).div_ceil(n),
                ),
                commit: BTreeMap::new(),
            })
            .collect();
        let mut full = false;
        let mut closes_at: Option<Instant> = None;
        while !full && let Some(message) = self.held.pop_front() {
            full = self.take(&mut round, &message);
            closes_at.get_or_insert_with(|| Instant::now() + self.trigger.max_wait);
        }
        loop {
            if stop.load(Ordering::Relaxed)
                || self.caught_up()
                || wake.load(Ordering::Relaxed)
                || self.rebalancing()
                || full
            {
                break;
            }
            let timeout = match closes_at {
                Some(at) => at.saturating_duration_since(Instant::now()),
                None => IDLE_POLL,
            };
            let (took, eof) = if self.queues.is_some() {
                self.read_queues(&mut round, &mut full, timeout, closes_at.is_none())
            } else {
                self.poll_one(&mut round, &mut full, timeout)
                    .unwrap_or((false, false))
            };
            if eof {
                self.update_caught_up_from_positions()?;
            }
            if took {
                closes_at.get_or_insert_with(|| Instant::now() + self.trigger.max_wait);
            }
            if full || closes_at.is_some_and(|at| Instant::now() >= at) {
                break;
            }
            if closes_at.is_none()
                && self
                    .tick
                    .is_some_and(|tick| polling_since.elapsed() >= tick)
            {
                break;
            }
        }
        if round.iter().all(|s| s.batch.is_empty())
            && (stop.load(Ordering::Relaxed) || self.caught_up())
        {
            return Ok(None);
        }
        Ok(Some(
            round
                .into_iter()
                .map(|slot| SourceBatch {
                    batch: slot.batch,
                    commit: slot
                        .commit
                        .into_iter()
                        .map(|((source, partition), offset)| NextOffset {
                            source,
                            partition,
                            offset,
                        })
                        .collect(),
                })
                .collect(),
        ))
    }

    /// One turn of a round read through the source's queues: the consumer
    /// queue's events (and records of partitions not split off), then up
    /// to the round's room of records, waiting up to `timeout` (for the
    /// first record only while no batch is open: it starts `max_wait`).
    /// Returns whether any record came, and whether a partition reported
    /// its end.
    fn read_queues(
        &mut self,
        round: &mut [Slot],
        full: &mut bool,
        timeout: Duration,
        first: bool,
    ) -> (bool, bool) {
        let (mut took, mut eof) = (false, false);
        while !*full {
            match self.poll_one(round, full, Duration::ZERO) {
                Some((t, e)) => {
                    took |= t;
                    eof |= e;
                }
                // An event served (a commit's result) answers `None` too.
                None if self.queues.as_ref().is_some_and(Queues::events_waiting) => {}
                None => break,
            }
        }
        if *full || self.rebalancing() {
            return (took, eof);
        }
        let (max_records, max_bytes) = (
            self.trigger.max_records,
            self.trigger.max_bytes.as_u64() as usize,
        );
        let room = if first {
            1
        } else {
            round
                .iter()
                .map(|s| room(&s.batch, max_records, max_bytes))
                .min()
                .unwrap_or(1)
        };
        let Some(queues) = &mut self.queues else {
            return (took, eof);
        };
        let records = queues.read(timeout, room, |source, polled| match polled {
            // Past a batch full by its bytes: kept for the next round.
            Ok(message) if *full => self.held.push_back(message.detach()),
            Ok(message) => {
                *full = Self::take_into(
                    source,
                    self.slots.as_ref(),
                    &mut self.remaining,
                    round,
                    message,
                    max_records,
                    max_bytes,
                )
            }
            Err(KafkaError::PartitionEOF(_)) => eof = true,
            Err(e) => tracing::warn!(error = %e, "kafka consumer error (the client retries)"),
        });
        (took || records > 0, eof)
    }

    /// One poll of the consumer, waiting up to `timeout`: `None` if it gave
    /// nothing, else whether a record came, and whether a partition
    /// reported its end.
    fn poll_one(
        &mut self,
        round: &mut [Slot],
        full: &mut bool,
        timeout: Duration,
    ) -> Option<(bool, bool)> {
        match self.consumer.poll(timeout)? {
            Ok(message) => {
                let source = source_index(&self.topics, message.topic());
                *full = Self::take_into(
                    source,
                    self.slots.as_ref(),
                    &mut self.remaining,
                    round,
                    &message,
                    self.trigger.max_records,
                    self.trigger.max_bytes.as_u64() as usize,
                );
                Some((true, false))
            }
            Err(KafkaError::PartitionEOF(_)) => Some((false, true)),
            Err(e) => {
                tracing::warn!(error = %e, "kafka consumer error (the client retries)");
                Some((false, false))
            }
        }
    }

    /// [`Self::take_into`] for a held message.
    fn take(&mut self, round: &mut [Slot], message: &OwnedMessage) -> bool {
        Self::take_into(
            source_index(&self.topics, message.topic()),
            self.slots.as_ref(),
            &mut self.remaining,
            round,
            message,
            self.trigger.max_records,
            self.trigger.max_bytes.as_u64() as usize,
        )
    }

    /// Adds a consumed record to its task's batch, its offset to that
    /// batch's commit, and (with `--until-caught-up`) notes its partition
    /// done at its end offset. Returns whether that batch is now full.
    /// (Not a method: a polled record borrows the consumer.)
    fn take_into<M: Message>(
        source: u16,
        slots: Option<&HashMap<i32, usize>>,
        remaining: &mut Option<HashMap<(u16, i32), i64>>,
        round: &mut [Slot],
        message: &M,
        max_records: usize,
        max_bytes: usize,
    ) -> bool
    where
        M::Headers: crate::kafka_headers::AsBorrowedHeaders,
    {
        let (partition, offset) = (message.partition(), message.offset());
        let slot = match slots {
            None => 0,
            Some(slots) => match slots.get(&partition) {
                Some(&slot) => slot,
                // Fetched before its partition was given up in a rebalance.
                None => return false,
            },
        };
        let Slot { batch, commit } = &mut round[slot];
        crate::source::push_message(batch, source, message);
        commit.insert((source, partition), offset + 1);
        if let Some(remaining) = remaining
            && remaining
                .get(&(source, partition))
                .is_some_and(|&end| offset + 1 >= end)
        {
            remaining.remove(&(source, partition));
        }
        batch.len() >= max_records || batch.records.data_bytes() >= max_bytes
    }
}

/// How many more records `batch` takes, at most: its records left, and
/// its bytes left at the size of its records so far (records read past
/// the batch's end are copied to be held, so the guess saves that copy).
fn room(batch: &Batch, max_records: usize, max_bytes: usize) -> usize {
    let left = max_records.saturating_sub(batch.len());
    let bytes = batch.records.data_bytes();
    let by_bytes = match bytes.checked_div(batch.len()) {
        Some(average) => max_bytes.saturating_sub(bytes) / average.max(1) + 1,
        None => left,
    };
    left.min(by_bytes).max(1)
}

/// The index of a source topic (0 for one the source does not read,
/// which librdkafka does not deliver).
fn source_index(topics: &[String], topic: &str) -> u16 {
    topics.iter().position(|t| t == topic).unwrap_or(0) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_has_room_for_its_records_and_bytes_left() {
        let mut batch = Batch::with_capacity(10, 1024);
        assert_eq!(room(&batch, 1000, 4096), 1000);
        for _ in 0..10 {
            batch.records.push(Some(b"k"), Some(&[7; 99]), None, []);
        }
        // 100 bytes a record, 1,000 of 4,096 used: 30 more fit, and one
        // to close the batch.
        assert_eq!(room(&batch, 1000, 4096), 31);
        assert_eq!(room(&batch, 20, 4096), 10);
        // Full: one, so that a read still moves (its record is held).
        assert_eq!(room(&batch, 10, 4096), 1);
        assert_eq!(room(&batch, 1000, 500), 1);
    }
}
