//! The Kafka source: a consumer in a consumer group, polled into columnar
//! micro-batches. Offsets are never committed automatically: the pipeline
//! commits a batch's offsets after its outputs are acknowledged.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
pub use rdkafka::consumer::CommitMode;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::batch::Batch;
use crate::spec::{BatchSpec, PipelineSpec, StartFrom};

mod offsets;
mod queues;
mod round;

pub use offsets::{GroupOffsets, source_partitions};
use offsets::{check_topics, end_offsets, positioned, started};
use queues::Queues;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// While paused: how often the end offsets are asked for, and how long
/// one answer may take.
const ENDS_WHILE_PAUSED: Duration = Duration::from_secs(1);
const ENDS_TIMEOUT: Duration = Duration::from_millis(500);
/// While paused: the most records held per serve (the rest wait in
/// librdkafka's queue until the next).
const HELD_AT_ONCE: usize = 1024;

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
    /// The source topics, in the spec's order.
    topics: Vec<String>,
    /// A member of the group whose tasks come and go (see
    /// [`KafkaSource::member`]): rebalances are queued here for the worker
    /// to carry out between batches, instead of at once inside a poll.
    rebalances: Option<Mutex<VecDeque<Rebalance>>>,
    /// Whether `rebalances` holds any (read on every poll).
    rebalancing: AtomicBool,
    /// Set when the consumer is being closed: closing leaves the group,
    /// whose revocation must then be carried out at once (nothing polls
    /// the queue any more).
    closing: AtomicBool,
    /// Asynchronous commits: what was sent last, and which failed.
    commits: Mutex<CommitLedger>,
}

/// Offset commits sent without waiting, and those the broker refused (a
/// commit during a rebalance may be): a refused one that is still the
/// newest sent for its partition is committed again by its task, else an
/// idle partition would keep an old committed offset.
#[derive(Debug, Default)]
struct CommitLedger {
    /// Per (source, partition), the newest offset sent.
    sent: HashMap<(u16, i32), i64>,
    failed: Vec<NextOffset>,
}

/// A change of a group member's partitions, to carry out between batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalance {
    /// These partitions (index into the source topics, partition) are now
    /// the member's: recover their tasks, then fetch them.
    Assigned(Vec<(u16, i32)>),
    /// These are no longer the member's. `lost`: taken away without a
    /// hand-off (the member was out of the group, e.g. paused past the
    /// session timeout): another member may own them already, so nothing
    /// of them may be committed or checkpointed.
    Revoked {
        partitions: Vec<(u16, i32)>,
        lost: bool,
    },
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
        let Err(error) = result else {
            return;
        };
        // Still safe: the task sends the newest offsets again (below), or
        // the records are re-delivered to whoever owns the partition next.
        tracing::warn!(%error, offsets = ?offsets.to_topic_map(), "offset commit failed");
        let mut ledger = self.commits.lock().unwrap_or_else(|e| e.into_inner());
        for e in offsets.elements() {
            let (Some(source), Offset::Offset(offset)) =
                (self.topics.iter().position(|t| t == e.topic()), e.offset())
            else {
                continue;
            };
            let key = (source as u16, e.partition());
            if ledger.sent.get(&key) == Some(&offset) {
                ledger.failed.push(NextOffset {
                    source: key.0,
                    partition: key.1,
                    offset,
                });
            }
        }
    }

    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let queue = self
            .rebalances
            .as_ref()
            .filter(|_| !self.closing.load(Ordering::Acquire));
        let Some(queue) = queue else {
            // Closing (its tasks ended), or a whole pipeline subscribed
            // without checkpoints: the group's assignment is taken as it
            // comes (librdkafka's default).
            let result = match (err, cooperative) {
                (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, true) => {
                    consumer.incremental_assign(tpl)
                }
                (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, false) => {
                    consumer.assign(tpl)
                }
                (RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS, true) => {
                    consumer.incremental_unassign(tpl)
                }
                _ => consumer.unassign(),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot take the group's assignment");
            }
            return;
        };
        let partitions: Vec<(u16, i32)> = tpl
            .elements()
            .iter()
            .filter_map(|e| {
                let source = self.topics.iter().position(|t| t == e.topic())?;
                Some((source as u16, e.partition()))
            })
            .collect();
        let event = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assigned(partitions),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoked {
                partitions,
                lost: consumer.assignment_lost(),
            },
            other => {
                // librdkafka's own answer to a failed rebalance: give up
                // the whole assignment, which may be another member's now.
                let code: RDKafkaErrorCode = other.into();
                tracing::warn!(error = %code, "rebalance failed; giving up every partition");
                Rebalance::Revoked {
                    partitions: consumer
                        .assignment()
                        .map(|a| {
                            a.elements()
                                .iter()
                                .filter_map(|e| {
                                    let source = self.topics.iter().position(|t| t == e.topic())?;
                                    Some((source as u16, e.partition()))
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    lost: true,
                }
            }
        };
        tracing::info!(?event, "rebalance");
        queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(event);
        self.rebalancing.store(true, Ordering::Release);
    }
}

pub struct KafkaSource {
    /// The source partitions' records, read in batches (`None`: one at a
    /// time through the consumer). Before `consumer`: fields drop in order.
    queues: Option<Queues>,
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
    /// Run as tasks: the tasks' partition numbers, in batch order.
    order: Vec<i32>,
    /// The rebalance last taken, until carried out (the group waits for
    /// it: closing answers it if the run failed before).
    unanswered: Option<Rebalance>,
    /// A static member's way out of the group once done (see
    /// [`Self::leave_when_closed`]). After `consumer`: fields drop in
    /// order, so it runs once the consumer has closed.
    leave: Option<Leave>,
}

/// Removes a static member from its group when dropped, if armed.
#[derive(Debug)]
struct Leave {
    brokers: String,
    group: String,
    instance: String,
    armed: bool,
}

impl Drop for Leave {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match super::leave::leave_group(&self.brokers, &self.group, &self.instance) {
            Ok(()) => tracing::info!(instance = %self.instance, "left the consumer group"),
            Err(e) => tracing::warn!(
                instance = %self.instance,
                error = format!("{e:#}"),
                "cannot leave the consumer group: the others wait out the session timeout"
            ),
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // Before the consumer closes (the fields drop after this): closing
        // leaves the group, which waits for rebalances handed to us to be
        // carried out. Those not carried out (the run failed) are taken
        // as they are, then given up with the rest.
        self.consumer
            .context()
            .closing
            .store(true, Ordering::Release);
        let mut left = self.unanswered.take();
        while let Some(event) = left.take().or_else(|| self.take_rebalance()) {
            self.unanswered = None;
            let result = match event {
                Rebalance::Assigned(partitions) => positioned(&self.topics, &partitions, None)
                    .and_then(|tpl| self.assign_more(&tpl)),
                Rebalance::Revoked { partitions, .. } => {
                    positioned(&self.topics, &partitions, None)
                        .and_then(|tpl| self.unassign_some(&tpl))
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "a rebalance left undone at close");
            }
        }
    }
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
        let config = Self::config(spec, until_caught_up);
        let ends = EndOffsets::default();
        let consumer: BaseConsumer<SourceContext> =
            config.create_with_context(SourceContext::new(spec, ends.clone(), false))?;
        let partitions: Vec<(u16, i32)> = check_topics(&consumer, spec)?
            .into_iter()
            .filter(|(_, p)| tasks.is_none_or(|tasks| tasks.contains(p)))
            .collect();
        // Before any partition is assigned, so that each is read through
        // one queue from its first record.
        let queues = Queues::split(&consumer, &spec.source.topics, &partitions);
        let remaining = if until_caught_up {
            Some(end_offsets(
                &consumer,
                &spec.source.topics,
                &partitions,
                |s| spec.start_of(s),
                positions,
            )?)
        } else {
            None
        };
        match positions {
            None if tasks.is_none() && !spec.sides_start_apart() => {
                let topic_refs: Vec<&str> = spec.source.topics.iter().map(String::as_str).collect();
                consumer.subscribe(&topic_refs)?;
            }
            _ if spec.sides_start_apart() => {
                // Join sides that start apart: each partition where the group
                // committed, else at its side's start.
                let tpl = started(&consumer, spec, &partitions, positions)?;
                consumer.assign(&tpl)?;
            }
            _ => {
                let tpl = positioned(&spec.source.topics, &partitions, positions)?;
                consumer.assign(&tpl)?;
            }
        }
        let mut source = Self::with(spec, consumer, ends, remaining, queues);
        if let Some(tasks) = tasks {
            source.order = tasks.to_vec();
            source.slots = Some(slots_of(&source.order));
        }
        Ok(source)
    }

    /// A member of the pipeline's consumer group whose tasks come and go
    /// with the group's assignment (cooperative-sticky by default, so that
    /// partitions that stay keep running through a rebalance). Starts
    /// without tasks: the owner carries out each [`Rebalance`] that
    /// [`Self::take_rebalance`] gives, with [`Self::add_tasks`] and
    /// [`Self::remove_tasks`]. `instance`: a `group.instance.id` (static
    /// membership: a member that comes back within the session timeout
    /// gets its partitions back without a rebalance).
    pub fn member(spec: &PipelineSpec, instance: Option<&str>) -> Result<Self, SourceError> {
        let mut config = Self::config(spec, false);
        if !spec
            .kafka
            .consumer
            .contains_key("partition.assignment.strategy")
        {
            config.set("partition.assignment.strategy", "cooperative-sticky");
        }
        if let Some(instance) = instance {
            config.set("group.instance.id", instance);
        }
        let ends = EndOffsets::default();
        let consumer: BaseConsumer<SourceContext> =
            config.create_with_context(SourceContext::new(spec, ends.clone(), true))?;
        let partitions = check_topics(&consumer, spec)?;
        let queues = Queues::split(&consumer, &spec.source.topics, &partitions);
        let topic_refs: Vec<&str> = spec.source.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs)?;
        let mut source = Self::with(spec, consumer, ends, None, queues);
        source.slots = Some(HashMap::new());
        source.leave = instance.map(|instance| Leave {
            brokers: spec.kafka.brokers.clone(),
            group: spec.group_id(),
            instance: instance.to_owned(),
            armed: false,
        });
        Ok(source)
    }

    /// The consumer's settings (the spec's own `kafka.consumer` last).
    fn config(spec: &PipelineSpec, until_caught_up: bool) -> ClientConfig {
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
        config
    }

    fn with(
        spec: &PipelineSpec,
        consumer: BaseConsumer<SourceContext>,
        ends: EndOffsets,
        remaining: Option<HashMap<(u16, i32), i64>>,
        queues: Option<Queues>,
    ) -> Self {
        Self {
            queues,
            consumer,
            topics: spec.source.topics.clone(),
            trigger: spec.batch.clone(),
            remaining,
            tick: None,
            ends,
            paused: HashSet::new(),
            held: VecDeque::new(),
            ends_asked: None,
            slots: None,
            order: Vec::new(),
            unanswered: None,
            leave: None,
        }
    }

    /// A static member (see [`Self::member`]) that is done for good: once
    /// its consumer has closed, it removes itself from the group, which
    /// then deals its partitions out at once instead of after the session
    /// timeout. Without a `group.instance.id` librdkafka leaves by itself.
    pub fn leave_when_closed(&mut self, spec: &PipelineSpec) {
        let Some(leave) = &mut self.leave else {
            return;
        };
        let protocol = spec
            .kafka
            .consumer
            .get("security.protocol")
            .map(|p| p.to_string().to_ascii_lowercase());
        if protocol.as_deref().is_none_or(|p| p == "plaintext") {
            leave.armed = true;
        } else {
            tracing::info!(
                instance = %leave.instance,
                "static member over {}: it stays in the group until its session times out",
                protocol.unwrap_or_default()
            );
        }
    }

    /// The next rebalance to carry out, if any (a member's; see
    /// [`Self::member`]). While one waits, [`Self::next_batches`] returns
    /// at once.
    pub fn take_rebalance(&mut self) -> Option<Rebalance> {
        let context = self.consumer.context();
        let queue = context.rebalances.as_ref()?;
        let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
        let next = queue.pop_front();
        context
            .rebalancing
            .store(!queue.is_empty(), Ordering::Release);
        self.unanswered.clone_from(&next);
        next
    }

    fn rebalancing(&self) -> bool {
        self.consumer.context().rebalancing.load(Ordering::Acquire)
    }

    /// The tasks (partition numbers) this source fetches for, in the order
    /// of [`Self::next_batches`]' batches.
    pub fn tasks(&self) -> &[i32] {
        &self.order
    }

    /// Takes on the tasks of assigned `partitions` (their batches come
    /// last), fetching each from `positions` where given, else from the
    /// group's committed offset (else the spec's `start`). While paused,
    /// they start paused.
    pub fn add_tasks(
        &mut self,
        partitions: &[(u16, i32)],
        positions: &HashMap<(u16, i32), i64>,
    ) -> Result<(), SourceError> {
        let tpl = positioned(&self.topics, partitions, Some(positions))?;
        self.unanswered = None;
        self.assign_more(&tpl)?;
        if self.paused.is_empty() {
            // librdkafka keeps a partition's pause across an unassignment:
            // one fenced off here (see `drop_tasks`) and assigned again
            // would stay stopped.
            self.consumer.resume(&tpl)?;
        } else {
            self.consumer.pause(&tpl)?;
            self.paused.extend(
                partitions
                    .iter()
                    .map(|&(s, p)| (self.topics[s as usize].clone(), p)),
            );
        }
        for &(_, p) in partitions {
            if !self.order.contains(&p) {
                self.order.push(p);
            }
        }
        self.slots = Some(slots_of(&self.order));
        Ok(())
    }

    /// Gives up revoked `partitions` (after their tasks handed them off):
    /// records of them fetched but not yet taken are dropped.
    pub fn remove_tasks(&mut self, partitions: &[(u16, i32)]) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for &(s, p) in partitions {
            tpl.add_partition(&self.topics[s as usize], p);
            self.paused.remove(&(self.topics[s as usize].clone(), p));
        }
        self.unanswered = None;
        self.unassign_some(&tpl)?;
        self.forget_sent(partitions);
        let gone: HashSet<i32> = partitions.iter().map(|&(_, p)| p).collect();
        self.order.retain(|p| !gone.contains(p));
        self.held.retain(|m| !gone.contains(&m.partition()));
        self.slots = Some(slots_of(&self.order));
        Ok(())
    }

    /// Stops fetching for the tasks of `partitions`, fenced off (another
    /// process took them over while this one was out of the group): they
    /// stay assigned, paused, until the group's revocation gives them up
    /// ([`Self::remove_tasks`]); records of them already fetched are
    /// dropped.
    pub fn drop_tasks(&mut self, partitions: &[(u16, i32)]) -> Result<(), SourceError> {
        let tpl = positioned(&self.topics, partitions, None)?;
        self.consumer.pause(&tpl)?;
        self.forget_sent(partitions);
        let gone: HashSet<i32> = partitions.iter().map(|&(_, p)| p).collect();
        self.order.retain(|p| !gone.contains(p));
        self.held.retain(|m| !gone.contains(&m.partition()));
        self.slots = Some(slots_of(&self.order));
        Ok(())
    }

    fn assign_more(&self, tpl: &TopicPartitionList) -> KafkaResult<()> {
        if matches!(
            self.consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        ) {
            self.consumer.incremental_assign(tpl)
        } else {
            // Eager (a `partition.assignment.strategy` of the spec's own):
            // each assignment is the whole of it.
            self.consumer.assign(tpl)
        }
    }

    fn unassign_some(&self, tpl: &TopicPartitionList) -> KafkaResult<()> {
        if matches!(
            self.consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        ) {
            self.consumer.incremental_unassign(tpl)
        } else {
            self.consumer.unassign()
        }
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

    /// Whether records are read many at a time from the source's own queue
    /// (see `kafka/queues.rs`), rather than one poll each.
    pub fn reads_in_batches(&self) -> bool {
        self.queues.is_some()
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
        let mut arrived = Vec::new();
        let mut hold = |polled: KafkaResult<OwnedMessage>| match polled {
            Ok(message) => arrived.push(message),
            Err(KafkaError::PartitionEOF(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "kafka consumer error while paused (the client retries)")
            }
        };
        while let Some(polled) = self.consumer.poll(Duration::ZERO) {
            hold(polled.map(|m| m.detach()));
        }
        if let Some(queues) = &mut self.queues {
            queues.read(Duration::ZERO, HELD_AT_ONCE, |_, polled| {
                hold(polled.map(|m| m.detach()))
            });
        }
        for message in arrived {
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
        {
            let mut ledger = self.ledger();
            for o in offsets {
                ledger.sent.insert((o.source, o.partition), o.offset);
            }
        }
        let result = self.consumer.commit(&tpl, mode);
        if result.is_err() && matches!(mode, CommitMode::Sync) {
            // Refused: sent again like a refused asynchronous one.
            let mut ledger = self.ledger();
            ledger.failed.extend_from_slice(offsets);
        }
        result
    }

    /// The newest offsets sent for `partition` (every partition: `None`),
    /// whatever became of them.
    pub fn sent_offsets(&self, partition: Option<i32>) -> Vec<NextOffset> {
        let mut sent: Vec<NextOffset> = self
            .ledger()
            .sent
            .iter()
            .filter(|((_, p), _)| partition.is_none_or(|want| *p == want))
            .map(|(&(source, partition), &offset)| NextOffset {
                source,
                partition,
                offset,
            })
            .collect();
        sent.sort_by_key(|o| (o.source, o.partition));
        sent
    }

    /// Commits again, synchronously, the newest offsets sent for the
    /// partitions this member kept through a rebalance. A commit sent while
    /// the group was rebalancing may have been refused (wrong generation)
    /// without librdkafka reporting it to the commit callback (it only
    /// logs it): the group would keep an older position for a partition
    /// that has nothing new to commit, and its next owner would read the
    /// records in between again.
    pub fn commit_kept(&self) {
        let kept: Vec<NextOffset> = self
            .sent_offsets(None)
            .into_iter()
            .filter(|o| self.order.contains(&o.partition))
            .collect();
        if kept.is_empty() {
            return;
        }
        if let Err(e) = self.commit(&kept, CommitMode::Sync) {
            tracing::warn!(error = %e, "cannot commit the kept partitions' offsets again after a rebalance; sent again later");
        }
    }

    /// Forgets what was sent for partitions no longer this member's: a
    /// later owner moves their committed offsets on.
    fn forget_sent(&self, partitions: &[(u16, i32)]) {
        let mut ledger = self.ledger();
        ledger
            .sent
            .retain(|&(_, p), _| !partitions.iter().any(|&(_, gone)| gone == p));
        ledger
            .failed
            .retain(|o| !partitions.iter().any(|&(_, gone)| gone == o.partition));
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, CommitLedger> {
        self.consumer
            .context()
            .commits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The refused commits of the newest offsets of `partition` (every
    /// partition: `None`), taken to be sent again.
    pub fn refused_commits(&self, partition: Option<i32>) -> Vec<NextOffset> {
        let mut ledger = self.ledger();
        let (mine, rest): (Vec<_>, _) = std::mem::take(&mut ledger.failed)
            .into_iter()
            .partition(|o| partition.is_none_or(|p| o.partition == p));
        ledger.failed = rest;
        // A newer offset sent since then covers it.
        mine.into_iter()
            .filter(|o| ledger.sent.get(&(o.source, o.partition)) == Some(&o.offset))
            .collect()
    }
}

impl SourceContext {
    fn new(spec: &PipelineSpec, ends: EndOffsets, member: bool) -> Self {
        Self {
            ends,
            topics: spec.source.topics.clone(),
            rebalances: member.then(Mutex::default),
            rebalancing: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            commits: Mutex::default(),
        }
    }
}

/// Per task's partition number, its batch's index.
fn slots_of(order: &[i32]) -> HashMap<i32, usize> {
    order.iter().enumerate().map(|(i, &p)| (p, i)).collect()
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
