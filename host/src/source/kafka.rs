//! The Kafka source: a consumer in a consumer group, polled into columnar
//! micro-batches. Offsets are never committed automatically: the pipeline
//! commits a batch's offsets after its outputs are acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
pub use rdkafka::consumer::CommitMode;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::batch::Batch;
use crate::spec::{BatchSpec, PipelineSpec, StartFrom};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one poll may block when no batch is open.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// While paused: how often the end offsets are asked for, and how long
/// one answer may take.
const ENDS_WHILE_PAUSED: Duration = Duration::from_secs(1);
const ENDS_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// (The cause is part of the message, not a `source`: a chain prints it
    /// once.)
    #[error("cannot reach Kafka at {brokers}: {error}")]
    Unreachable { brokers: String, error: KafkaError },
    #[error("topic `{0}` does not exist (Sluice does not create topics; create it first)")]
    MissingTopic(String),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// A batch and the offsets to commit once it is done.
#[derive(Debug)]
pub struct SourceBatch {
    pub batch: Batch,
    pub commit: Vec<NextOffset>,
}

/// One task's batch of a round, being filled.
struct Slot {
    batch: Batch,
    commit: BTreeMap<(u16, i32), i64>,
}

/// For one partition in a batch, the offset after its last record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextOffset {
    /// Index into the source topics.
    pub source: u16,
    pub partition: i32,
    pub offset: i64,
}

/// Per (topic, partition), the broker's end offset (high watermark), as
/// the client last reported it.
pub type EndOffsets = Arc<Mutex<HashMap<(String, i32), i64>>>;

/// Routes librdkafka's error callback to our log, where reaching the end
/// of a partition is routine rather than an error, and keeps the end
/// offsets of its periodic statistics (for lag).
struct SourceContext {
    ends: EndOffsets,
}

/// Records end offsets. They only move forward: the statistics keep
/// reporting a paused partition's last fetched end, older than the one
/// asked for while paused.
fn raise_ends(ends: &EndOffsets, seen: impl IntoIterator<Item = ((String, i32), i64)>) {
    let mut ends = ends.lock().unwrap_or_else(|e| e.into_inner());
    for (partition, end) in seen {
        let known = ends.entry(partition).or_insert(end);
        *known = (*known).max(end);
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        let seen = statistics.topics.into_iter().flat_map(|(topic, t)| {
            t.partitions
                .into_iter()
                // Partition -1 is the client's own; negative offsets mean unknown.
                .filter(|(partition, p)| *partition >= 0 && p.hi_offset >= 0)
                .map(move |(partition, p)| ((topic.clone(), partition), p.hi_offset))
        });
        raise_ends(&self.ends, seen);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {
                tracing::trace!(%reason, "end of partition")
            }
            e => tracing::warn!(error = %e, %reason, "kafka consumer error (the client retries)"),
        }
    }
}

impl ConsumerContext for SourceContext {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // Still safe: a later commit covers these offsets, or the
            // records are re-delivered to whoever owns the partition next.
            tracing::warn!(error = %e, offsets = ?offsets.to_topic_map(), "offset commit failed");
        }
    }
}

pub struct KafkaSource {
    consumer: BaseConsumer<SourceContext>,
    topics: Vec<String>,
    trigger: BatchSpec,
    /// With `--until-caught-up`: partitions not yet read up to the end
    /// offsets seen at start, and those end offsets.
    remaining: Option<HashMap<(u16, i32), i64>>,
    /// Return an empty batch after this long without records (see
    /// [`Self::set_tick`]).
    tick: Option<Duration>,
    ends: EndOffsets,
    /// While the pipeline is paused: the partitions fetching was stopped
    /// for (see [`Self::pause`]).
    paused: HashSet<(String, i32)>,
    /// Records that arrived while paused, from partitions assigned during
    /// the pause: the next batches start with them.
    held: VecDeque<OwnedMessage>,
    /// When the end offsets were last asked for while paused.
    ends_asked: Option<Instant>,
    /// Run as tasks: per source partition number, the index of its task's
    /// batch in [`Self::next_batches`]. `None`: one batch for everything.
    slots: Option<HashMap<i32, usize>>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Connects, checks that every topic the pipeline touches exists, and
    /// subscribes. With `until_caught_up`, also records the end offsets to
    /// drain to.
    ///
    /// With `positions` (a checkpointed pipeline), the consumer is instead
    /// assigned every partition of the source topics, starting at the given
    /// position, or where the group's committed offset (else `start`) says
    /// for partitions the checkpoint does not know: the checkpoint, not the
    /// group, is then the truth about what was processed.
    ///
    /// With `tasks` (a worker's tasks: the partition numbers it owns), the
    /// consumer is assigned those partitions of every source topic only,
    /// and [`Self::next_batches`] gives one batch per task, in `tasks`'
    /// order.
    pub fn new(
        spec: &PipelineSpec,
        until_caught_up: bool,
        positions: Option<&HashMap<(u16, i32), i64>>,
        tasks: Option<&[i32]>,
    ) -> Result<Self, SourceError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &spec.kafka.brokers)
            .set("group.id", spec.group_id())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "enable.partition.eof",
                if until_caught_up { "true" } else { "false" },
            )
            .set(
                "auto.offset.reset",
                match spec.source.start {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            )
            .set(
                "fetch.wait.max.ms",
                spec.batch.max_wait.as_millis().clamp(1, 500).to_string(),
            )
            // Prefetch up to 16 MiB (librdkafka's default is 64 MiB): enough
            // to keep batches coming, and a quarter of the memory.
            .set("queued.max.messages.kbytes", "16384")
            // Once that prefetch queue is full, fetch again soon after it
            // drains: librdkafka's default back-off of 1 s capped every
            // consumer here (host and a plain rdkafka copy alike) near 170k
            // records/s, idle most of the time.
            .set(
                "fetch.queue.backoff.ms",
                spec.batch.max_wait.as_millis().clamp(1, 100).to_string(),
            )
            // End offsets for the lag in the progress report.
            .set("statistics.interval.ms", "1000");
        for (k, v) in &spec.kafka.consumer {
            config.set(k, v.to_string());
        }
        let ends = EndOffsets::default();
        let consumer: BaseConsumer<SourceContext> =
            config.create_with_context(SourceContext { ends: ends.clone() })?;

        let mut partitions = Vec::new();
        let mut topics: Vec<&str> = spec.source.topics.iter().map(String::as_str).collect();
        topics.extend(spec.sink_topics());
        for topic in topics {
            let ids = topic_partitions(&consumer, &spec.kafka.brokers, topic)?;
            if let Some(index) = spec.source.topics.iter().position(|s| s == topic) {
                partitions.extend(
                    ids.into_iter()
                        .filter(|p| tasks.is_none_or(|tasks| tasks.contains(p)))
                        .map(|p| (index as u16, p)),
                );
            }
        }
        let slots = tasks.map(|tasks| {
            tasks
                .iter()
                .enumerate()
                .map(|(slot, &partition)| (partition, slot))
                .collect::<HashMap<i32, usize>>()
        });

        let remaining = if until_caught_up {
            Some(end_offsets(
                &consumer,
                &spec.source.topics,
                &partitions,
                spec.source.start,
                positions,
            )?)
        } else {
            None
        };
        match positions {
            None if tasks.is_none() => {
                let topic_refs: Vec<&str> = spec.source.topics.iter().map(String::as_str).collect();
                consumer.subscribe(&topic_refs)?;
            }
            _ => {
                let mut tpl = TopicPartitionList::with_capacity(partitions.len());
                for &(source, partition) in &partitions {
                    let offset = positions
                        .and_then(|p| p.get(&(source, partition)))
                        .map_or(Offset::Stored, |&o| Offset::Offset(o));
                    tpl.add_partition_offset(
                        &spec.source.topics[source as usize],
                        partition,
                        offset,
                    )?;
                }
                consumer.assign(&tpl)?;
            }
        }
        Ok(Self {
            consumer,
            topics: spec.source.topics.clone(),
            trigger: spec.batch.clone(),
            remaining,
            tick: None,
            ends,
            paused: HashSet::new(),
            held: VecDeque::new(),
            ends_asked: None,
            slots,
        })
    }

    /// The end offsets the client reports (once a second, while polled).
    pub fn reported_ends(&self) -> EndOffsets {
        self.ends.clone()
    }

    /// Makes [`Self::next_batch`] return an empty batch after `tick` without
    /// records, so that the caller can let processing time pass (windows
    /// whose partitions went idle close without waiting for a record).
    pub fn set_tick(&mut self, tick: Duration) {
        self.tick = Some(tick);
    }

    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// For a pause of the pipeline: stops fetching from every assigned
    /// partition. Records fetched but not yet handed out are fetched again
    /// on [`Self::resume`] (librdkafka resumes a paused partition at the
    /// position after the last record the application received).
    pub fn pause(&mut self) -> Result<(), SourceError> {
        let assignment = self.consumer.assignment()?;
        self.consumer.pause(&assignment)?;
        self.paused = assignment
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        Ok(())
    }

    /// While paused, serves the client without consuming, so that the group
    /// keeps the consumer (`max.poll.interval.ms`) and rebalances happen,
    /// and once a second asks the broker for the end offsets (a paused
    /// partition fetches nothing, so the statistics no longer report them):
    /// the lag stays current. A partition assigned during the pause
    /// delivers until it is paused too: its first records are held for the
    /// next batch.
    pub fn poll_paused(&mut self) {
        if self
            .ends_asked
            .is_none_or(|at| at.elapsed() >= ENDS_WHILE_PAUSED)
        {
            self.ends_asked = Some(Instant::now());
            let mut ends = Vec::with_capacity(self.paused.len());
            for (topic, partition) in &self.paused {
                match self
                    .consumer
                    .fetch_watermarks(topic, *partition, ENDS_TIMEOUT)
                {
                    Ok((_, high)) => ends.push(((topic.clone(), *partition), high)),
                    Err(e) => {
                        tracing::debug!(error = %e, %topic, partition, "no end offset while paused")
                    }
                }
            }
            raise_ends(&self.ends, ends);
        }
        while let Some(polled) = self.consumer.poll(Duration::ZERO) {
            let message = match polled {
                Ok(message) => message.detach(),
                Err(KafkaError::PartitionEOF(_)) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "kafka consumer error while paused (the client retries)");
                    continue;
                }
            };
            let partition = (message.topic().to_owned(), message.partition());
            if !self.paused.contains(&partition) {
                let mut tpl = TopicPartitionList::with_capacity(1);
                tpl.add_partition(&partition.0, partition.1);
                // Paused once only: pausing again would move its fetch
                // position past the records held here.
                if let Err(e) = self.consumer.pause(&tpl) {
                    tracing::warn!(error = %e, topic = %partition.0, partition = partition.1, "cannot pause a partition assigned while paused");
                }
                self.paused.insert(partition);
            }
            self.held.push_back(message);
        }
    }

    /// Fetches again from every assigned partition after [`Self::pause`].
    pub fn resume(&mut self) -> Result<(), SourceError> {
        let assignment = self.consumer.assignment()?;
        self.consumer.resume(&assignment)?;
        self.paused.clear();
        self.ends_asked = None;
        Ok(())
    }

    fn caught_up(&self) -> bool {
        self.remaining.as_ref().is_some_and(HashMap::is_empty)
    }

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
        let n = self.slots.as_ref().map_or(1, HashMap::len).max(1);
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
            if stop.load(Ordering::Relaxed) || self.caught_up() || wake.load(Ordering::Relaxed) {
                break;
            }
            if full {
                break;
            }
            let timeout = match closes_at {
                Some(at) => at.saturating_duration_since(Instant::now()),
                None => IDLE_POLL,
            };
            match self.consumer.poll(timeout) {
                None => {}
                Some(Ok(message)) => {
                    full = Self::take_into(
                        &self.topics,
                        self.slots.as_ref(),
                        &mut self.remaining,
                        &mut round,
                        &message,
                        max_records,
                        max_bytes,
                    );
                    closes_at.get_or_insert_with(|| Instant::now() + self.trigger.max_wait);
                    if full {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => self.update_caught_up_from_positions()?,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka consumer error (the client retries)")
                }
            }
            if closes_at.is_some_and(|at| Instant::now() >= at) {
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

    /// [`Self::take_into`] for a held message.
    fn take(&mut self, round: &mut [Slot], message: &OwnedMessage) -> bool {
        Self::take_into(
            &self.topics,
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
        topics: &[String],
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
        let source = topics
            .iter()
            .position(|t| t == message.topic())
            .unwrap_or(0) as u16;
        let (partition, offset) = (message.partition(), message.offset());
        let slot = slots.map_or(0, |s| s.get(&partition).copied().unwrap_or(0));
        let Slot { batch, commit } = &mut round[slot];
        super::push_message(batch, source, message);
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

    /// A partition at its end reports EOF; its position then tells whether it
    /// passed the end offset seen at start (it may have had no records left).
    fn update_caught_up_from_positions(&mut self) -> Result<(), SourceError> {
        let Some(remaining) = &mut self.remaining else {
            return Ok(());
        };
        for e in self.consumer.position()?.elements() {
            let Some(source) = self.topics.iter().position(|t| t == e.topic()) else {
                continue;
            };
            if let Offset::Offset(position) = e.offset()
                && remaining
                    .get(&(source as u16, e.partition()))
                    .is_some_and(|&end| position >= end)
            {
                remaining.remove(&(source as u16, e.partition()));
            }
        }
        Ok(())
    }

    /// Commits offsets to the consumer group. `Async` returns at once (a
    /// failure is logged when the broker answers); `Sync` waits for the
    /// answer.
    pub fn commit(&self, offsets: &[NextOffset], mode: CommitMode) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for &NextOffset {
            source,
            partition,
            offset,
        } in offsets
        {
            tpl.add_partition_offset(
                &self.topics[source as usize],
                partition,
                Offset::Offset(offset),
            )?;
        }
        self.consumer.commit(&tpl, mode)
    }
}

/// The partition ids of `topic`; an error if it does not exist.
fn topic_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    brokers: &str,
    topic: &str,
) -> Result<Vec<i32>, SourceError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|error| SourceError::Unreachable {
            brokers: brokers.to_owned(),
            error,
        })?;
    metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .ok_or_else(|| SourceError::MissingTopic(topic.to_owned()))
}

/// Every partition of the pipeline's source topics, as (index into the
/// source topics, partition), sorted.
pub fn source_partitions(spec: &PipelineSpec) -> Result<Vec<(u16, i32)>, SourceError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &spec.kafka.brokers)
        .create()?;
    let mut partitions = Vec::new();
    for (index, topic) in spec.source.topics.iter().enumerate() {
        let ids = topic_partitions(&consumer, &spec.kafka.brokers, topic)?;
        partitions.extend(ids.into_iter().map(|p| (index as u16, p)));
    }
    partitions.sort_unstable();
    Ok(partitions)
}

/// For each partition, the end offset to drain to, leaving out partitions
/// whose committed (or starting) position is already there.
fn end_offsets(
    consumer: &BaseConsumer<SourceContext>,
    topics: &[String],
    partitions: &[(u16, i32)],
    start: StartFrom,
    positions: Option<&HashMap<(u16, i32), i64>>,
) -> Result<HashMap<(u16, i32), i64>, SourceError> {
    let mut tpl = TopicPartitionList::new();
    for &(source, partition) in partitions {
        tpl.add_partition(&topics[source as usize], partition);
    }
    let committed = consumer.committed_offsets(tpl, METADATA_TIMEOUT)?;
    let mut remaining = HashMap::new();
    for &(source, partition) in partitions {
        let topic = &topics[source as usize];
        let (low, high) = consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
        let known = positions.and_then(|p| p.get(&(source, partition)).copied());
        let committed = known.map(Offset::Offset).or_else(|| {
            committed
                .find_partition(topic, partition)
                .map(|e| e.offset())
        });
        let position = match committed {
            Some(Offset::Offset(o)) => o.max(low),
            _ => match start {
                StartFrom::Earliest => low,
                StartFrom::Latest => high,
            },
        };
        if position < high {
            remaining.insert((source, partition), high);
        }
    }
    tracing::info!(
        partitions = remaining.len(),
        "draining until caught up with the end offsets seen at start"
    );
    Ok(remaining)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_only_move_forward() {
        let ends = EndOffsets::default();
        let p0 = ("events".to_owned(), 0);
        let p1 = ("events".to_owned(), 1);
        raise_ends(&ends, [(p0.clone(), 100), (p1.clone(), 7)]);
        // A paused partition's statistics still say 100 after 250 was asked for.
        raise_ends(&ends, [(p0.clone(), 250)]);
        raise_ends(&ends, [(p0.clone(), 100), (p1.clone(), 9)]);
        let ends = ends.lock().unwrap().clone();
        assert_eq!(ends, HashMap::from([(p0, 250), (p1, 9)]));
    }
}
