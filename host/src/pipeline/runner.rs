//! The run loop: batches through the chain into the sinks, with offsets
//! committed after acknowledgement and, when configured, checkpoints and
//! exactly-once recovery (`recovery.rs`).

mod progress;
mod recovery;
mod send;
mod swap;
mod tables;

pub(super) use swap::PAUSED_POLL;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::checkpoint::{Checkpoints, TaskLayout};
use super::control::{Control, Durations};
use super::deliver::{self, Eos, Routing};
use super::{Chain, RunOptions, Summary, TimeSpent};
use crate::batch::Batch;
use crate::batch::reason::Kind;
use crate::checkpoint::{Epoch, Fence};
use crate::runtime::Runtime;
use crate::sink::{BatchAck, DeltaSink, KafkaSink, ParquetSink, PostgresSink, Quarantine};
use crate::source::{CommitMode, KafkaSource, NextOffset, SourceBatch};
use crate::spec::{Delivery, PipelineSpec};

/// How long a pipeline with windows waits without records before letting
/// processing time pass in its window engine (idle partitions stop holding
/// the watermark back, and windows that became due are emitted).
pub(super) const TICK: Duration = Duration::from_secs(1);
/// The shortest idle wake-up for commits.
pub(super) const MIN_TICK: Duration = Duration::from_millis(10);

/// How many batches may be produced and not yet acknowledged. More than
/// one, so that the producer's linger and the broker's round trip never
/// stall the loop between two short batches; offsets are still committed
/// in batch order.
const MAX_IN_FLIGHT: usize = 16;

/// What a run shares with the other tasks of its pipeline: the producer
/// and the stage that feeds it.
#[derive(Clone)]
pub(super) struct Io {
    sink: Arc<KafkaSink>,
    send: Arc<send::SendStage>,
}

impl Io {
    /// The pipeline's producer, started, with a send stage of its own.
    pub fn new(spec: &PipelineSpec) -> anyhow::Result<Self> {
        Self::with_sink(spec, Self::producer(spec)?)
    }

    /// The pipeline's producer, started (shared by its workers' send
    /// stages).
    pub fn producer(spec: &PipelineSpec) -> anyhow::Result<Arc<KafkaSink>> {
        // Quarantined records are kept beside local checkpoints only (a
        // file appended to); with S3 checkpoints they are logged.
        let quarantine = match &spec.checkpoint {
            Some(checkpoint) if checkpoint.s3_url().is_none() => {
                Quarantine::in_dir(&checkpoint.dir)
            }
            _ => Quarantine::log_only(),
        };
        let mut kafka = std::borrow::Cow::Borrowed(&spec.kafka);
        if let Some(timeout) = zombie_timeout(spec) {
            kafka.to_mut().producer.insert(
                "message.timeout.ms".to_owned(),
                crate::spec::Scalar::Int(timeout),
            );
        }
        let sink = Arc::new(
            KafkaSink::new(&kafka, &spec.name, quarantine)
                .context("cannot create the Kafka producer")?,
        );
        sink.start(&spec.dead_letter.topic);
        Ok(sink)
    }

    /// Another send stage for `sink` (one per worker).
    pub fn with_sink(spec: &PipelineSpec, sink: Arc<KafkaSink>) -> anyhow::Result<Self> {
        let send = Arc::new(send::SendStage::start(sink.clone(), &spec.name)?);
        Ok(Self { sink, send })
    }
}

/// A batch produced but not yet acknowledged.
struct InFlight {
    ack: Arc<BatchAck>,
    commit: Vec<NextOffset>,
}

pub(super) struct Runner<'a> {
    spec: &'a PipelineSpec,
    runtime: Runtime,
    chain: Chain,
    routing: Arc<Routing>,
    control: Option<&'a Control>,
    /// A swapped-in module waiting for its first batch.
    trial: Option<swap::Trial>,
    /// Where the current batch's time went.
    durations: Durations,
    /// When the last batch finished.
    last_batch_end: Instant,
    /// Where the run's time went so far (the sum of every batch's).
    spent: Durations,
    output_names: Vec<String>,
    sink: Arc<KafkaSink>,
    /// Hands batches to `sink` on a thread of its own.
    send: Arc<send::SendStage>,
    /// The task this run is (partition `p` of every source topic), or
    /// `None` for a run of the whole pipeline.
    task: Option<TaskLayout>,
    /// Whether the run keeps checkpoints (set by [`Self::start`]).
    checkpointed: bool,
    /// Per configured output, its Parquet sink if it has one.
    parquet: Vec<Option<ParquetSink>>,
    /// Per configured output, its PostgreSQL sink if it has one.
    postgres: Vec<Option<PostgresSink>>,
    /// Per output: its Delta table, if it has one.
    delta: Vec<Option<DeltaSink>>,
    checkpoints: Option<Checkpoints>,
    exactly_once: bool,
    /// Number of the last batch run.
    epoch: u64,
    /// Epoch of the last checkpoint saved by this run.
    saved: Option<u64>,
    /// Per source partition, the offset to resume from (to commit, or to
    /// checkpoint).
    positions: HashMap<(u16, i32), i64>,
    /// Per source partition, the offset after the last record run. Ahead
    /// of `positions` while open windows hold back the commit of their
    /// records (a pipeline with windows and no checkpoints).
    read: HashMap<(u16, i32), i64>,
    /// Exactly-once: per sink partition, a lower bound of where records of
    /// epochs after the last checkpoint start (see `sink_positions`).
    sink_ends: HashMap<(String, i32), i64>,
    /// The name this process takes the task's checkpoint directory over
    /// with, when the group assigns the task (see [`Self::fence_as`]).
    owner: Option<String>,
    /// This process's generation of the task (with `owner`).
    fence: Option<Arc<Fence>>,
    /// Batches produced but not yet acknowledged, oldest first.
    in_flight: VecDeque<InFlight>,
    /// Offsets of acknowledged batches, to commit (without checkpoints).
    commits: PendingCommits,
    pub summary: Summary,
    /// The sink's count of outputs dead-lettered for their size, as far as
    /// the summary has it.
    too_large_counted: u64,
}

impl<'a> Runner<'a> {
    pub fn new(
        spec: &'a PipelineSpec,
        runtime: Runtime,
        chain: Chain,
        routing: Routing,
        control: Option<&'a Control>,
        io: Io,
        task: Option<TaskLayout>,
    ) -> anyhow::Result<Self> {
        let output_names: Vec<String> = spec.outputs.keys().cloned().collect();
        let Io { sink, send } = io;
        Ok(Self {
            spec,
            runtime,
            chain,
            routing: Arc::new(routing),
            control,
            trial: None,
            durations: Durations::default(),
            last_batch_end: Instant::now(),
            spent: Durations::default(),
            summary: Summary {
                outputs: output_names.iter().map(|n| (n.clone(), 0)).collect(),
                ..Summary::default()
            },
            output_names,
            sink,
            send,
            task,
            checkpointed: false,
            parquet: Vec::new(),
            postgres: Vec::new(),
            delta: Vec::new(),
            checkpoints: None,
            exactly_once: spec.delivery == Delivery::ExactlyOnce,
            epoch: 0,
            saved: None,
            positions: HashMap::new(),
            read: HashMap::new(),
            sink_ends: HashMap::new(),
            in_flight: VecDeque::new(),
            owner: None,
            fence: None,
            commits: PendingCommits::new(spec.source.commit_interval),
            too_large_counted: 0,
        })
    }

    /// Runs until `stop` is set, or until caught up if asked. `started` is
    /// when the pipeline began loading, for the recovery time in the log.
    pub fn run(
        mut self,
        options: RunOptions,
        stop: &AtomicBool,
        started: Instant,
    ) -> anyhow::Result<Summary> {
        self.start()?;
        let positions = self.checkpointed.then_some(&self.positions);
        let mut source = KafkaSource::new(self.spec, options.until_caught_up, positions, None)?;
        tracing::info!(
            topics = ?self.spec.source.topics,
            group = %self.spec.group_id(),
            steps = self.spec.transforms.len(),
            epoch = self.epoch,
            ready_ms = started.elapsed().as_millis() as u64,
            "pipeline started"
        );
        if let Some(control) = self.control {
            control.part_started();
        }
        if let Some(tick) = self.tick() {
            source.set_tick(tick);
        }
        self.begin(&source);
        let never = AtomicBool::new(false);
        let wake = self.control.map_or(&never, Control::woken);
        loop {
            if let Some(control) = self.control
                && wake.load(Ordering::Relaxed)
            {
                self.attend(control, &mut source, stop)?;
            }
            let fetch_started = Instant::now();
            let Some(next) = source.next_batch(stop, wake)? else {
                break;
            };
            self.finish_acknowledged(&source)?;
            if next.batch.is_empty() && self.chain.aggregate().is_none() {
                continue; // woken up by a request, or a tick
            }
            self.run_batch(next, ms(fetch_started.elapsed()), &source)?;
        }
        self.end(&source)
    }

    /// Exactly-once: the sink partitions' end offsets as asked for once
    /// for all tasks (instead of once per task). Any point before this
    /// run's first record is a valid start for its later records.
    pub fn know_sink_ends(&mut self, ends: &HashMap<(String, i32), i64>) {
        self.sink_ends.clone_from(ends);
    }

    /// Before [`Self::start`], for a task the group assigned: its
    /// checkpoint directory is taken over as `owner` (see
    /// `checkpoint::Fence`), and the task writes nothing once another
    /// process took it over.
    pub fn fence_as(&mut self, owner: String) {
        self.owner = Some(owner);
    }

    /// Recovers (see the module docs); then the run is ready for
    /// [`Self::begin`].
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.checkpointed = self.recover()?;
        Ok(())
    }

    /// Where to resume each source partition from, if the run keeps
    /// checkpoints (else the consumer group knows).
    pub fn resume_positions(&self) -> Option<&HashMap<(u16, i32), i64>> {
        self.checkpointed.then_some(&self.positions)
    }

    /// How long the source may wait without records before this run wants
    /// an empty batch: processing time for windows, or commits.
    pub fn tick(&self) -> Option<Duration> {
        if self.chain.aggregate().is_some() {
            Some(TICK)
        } else if !self.checkpointed {
            // Wake up while idle, to commit what was acknowledged since.
            Some(self.spec.source.commit_interval.clamp(MIN_TICK, TICK))
        } else {
            None
        }
    }

    /// Whether an empty batch means anything to this run (processing
    /// time passing for its windows).
    pub fn wants_ticks(&self) -> bool {
        self.chain.aggregate().is_some()
    }

    /// When its last batch ended.
    pub fn last_batch_end(&self) -> Instant {
        self.last_batch_end
    }

    /// Before the first batch from `source`.
    pub fn begin(&mut self, source: &KafkaSource) {
        self.read = self.positions.clone();
        if let Some(control) = self.control {
            control.watch_ends(source.reported_ends());
        }
        self.last_batch_end = Instant::now();
    }

    /// Runs one batch from the source (empty: a tick), which took
    /// `fetch_ms` to gather.
    pub fn run_batch(
        &mut self,
        next: SourceBatch,
        fetch_ms: f64,
        source: &KafkaSource,
    ) -> anyhow::Result<()> {
        self.durations = Durations {
            fetch: fetch_ms,
            ..Durations::default()
        };
        // An empty batch is a tick: processing time passing for the
        // windows. It is an epoch like any other, so a replay sees it.
        self.epoch += 1;
        let now_ms = super::now_ms();
        if self.exactly_once && self.checkpoints.is_some() {
            let epoch = Epoch::of(
                &next.batch,
                now_ms,
                &self.spec.source.topics,
                self.modules(),
            );
            if let Some(c) = &mut self.checkpoints {
                c.log(self.epoch, &epoch)?;
            }
        }
        let eos = self.exactly_once.then_some(Eos {
            epoch: self.epoch,
            written: None,
        });
        let records = next.batch.len();
        let ack = self.process(next.batch, now_ms, eos)?;
        for o in &next.commit {
            self.read.insert((o.source, o.partition), o.offset);
        }
        let commit = if self.checkpointed {
            next.commit
        } else {
            super::hold_back(next.commit, &self.chain)
        };
        for o in &commit {
            self.positions.insert((o.source, o.partition), o.offset);
        }
        self.in_flight.push_back(InFlight { ack, commit });
        let waiting = Instant::now();
        while self.in_flight.len() > MAX_IN_FLIGHT {
            let done = self.in_flight.pop_front().expect("not empty");
            self.finish(source, done)?;
        }
        if self.checkpoints.as_ref().is_some_and(Checkpoints::due) {
            self.checkpoint(Some(source))?;
        }
        self.durations.checkpoint = ms(waiting.elapsed());
        self.add_time();
        if let Some(control) = self.control {
            self.publish(control, records);
        }
        self.last_batch_end = Instant::now();
        Ok(())
    }

    /// After the last batch: everything acknowledged, committed and
    /// checkpointed, the producer flushed.
    pub fn end(mut self, source: &KafkaSource) -> anyhow::Result<Summary> {
        self.abandon_trial(true);
        self.drain(source)?;
        if self.checkpoints.is_some() && self.saved != Some(self.epoch) {
            self.checkpoint(Some(source))?;
        }
        self.sink
            .flush(Duration::from_secs(30))
            .context("cannot flush the Kafka producer")?;
        tracing::info!(task = ?self.task.as_ref().map(|t| t.partition), summary = ?self.summary, "stopped");
        Ok(self.summary)
    }

    /// Gives the task up in a rebalance: everything acknowledged,
    /// committed and checkpointed first, so that its next owner starts
    /// exactly where this one stopped.
    pub fn release(mut self, source: &KafkaSource) -> anyhow::Result<Summary> {
        self.abandon_trial(false);
        self.settle(source)?;
        tracing::info!(task = ?self.partition(), summary = ?self.summary, "task handed off");
        Ok(self.summary)
    }

    /// Drops a task taken away without a hand-off (its assignment lost):
    /// another member may own it already, so nothing of it is committed or
    /// checkpointed. Its batches in flight are still waited for (their
    /// records reach the outputs or fail), so that what it wrote is in
    /// place before it lets go; the next owner reads it back.
    pub fn drop_lost(mut self) -> Summary {
        self.abandon_trial(false);
        while let Some(done) = self.in_flight.pop_front() {
            if let Err(e) = done.ack.wait() {
                tracing::warn!(task = ?self.partition(), error = %e, "a batch of a lost task was not delivered; its next owner runs it again");
            }
        }
        tracing::warn!(task = ?self.partition(), "task lost (out of the group): dropped without a checkpoint or a commit");
        self.summary
    }

    /// The partition number of the task this run is (`None`: a whole
    /// pipeline).
    pub fn partition(&self) -> Option<i32> {
        self.task.as_ref().map(|t| t.partition)
    }

    /// Runs one batch through the chain and hands the results to the sinks:
    /// to the send stage, or (re-executing with ids already written to
    /// skip) to the producer directly.
    fn process(
        &mut self,
        mut batch: Batch,
        now_ms: i64,
        eos: Option<Eos<'_>>,
    ) -> anyhow::Result<Arc<BatchAck>> {
        let started = Instant::now();
        let out = self.run_chain(&mut batch, now_ms)?;
        self.durations.transform = ms(started.elapsed());
        let sinking = Instant::now();
        let mut rejected = self.write_parquet(&out)?;
        rejected.extend(self.write_delta(&out)?);
        tracing::debug!(
            epoch = self.epoch,
            records = batch.len(),
            dead_lettered = out.dead_letters.len() + rejected.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "batch processed"
        );
        if let Some(fence) = &self.fence {
            // Right before the batch's records leave: not if another
            // process took the task over.
            fence.check_lease()?;
        }
        rejected.extend(self.write_postgres(&out)?);
        self.summary.record(&batch, &out, &self.output_names);
        self.summary.dead_lettered += rejected.len() as u64;
        for r in &rejected {
            *self
                .summary
                .dead_letter_reasons
                .entry(r.reason.kind)
                .or_default() += 1;
        }
        if let Some(aggregate) = self.chain.aggregate() {
            let progress = aggregate.engine().progress();
            tracing::debug!(
                watermark = ?progress.watermark,
                partitions = ?progress.partitions.iter().map(|p| (p.partition, p.min_event_time, p.max_event_time, p.idle)).collect::<Vec<_>>(),
                state_rows = progress.state_rows,
                late = progress.late_records,
                "event-time progress"
            );
            self.summary.windows = Some(progress);
        }
        let ack = match eos {
            Some(
                eos @ Eos {
                    written: Some(_), ..
                },
            ) => {
                if let Some(c) = &mut self.checkpoints {
                    // The epoch must be durable in the log before its outputs leave.
                    c.wait_logged()?;
                }
                let ack = BatchAck::new();
                let delivered = deliver::deliver(
                    &self.sink,
                    &ack,
                    &self.routing,
                    &batch,
                    &out,
                    &rejected,
                    Some(eos),
                )
                .context("cannot queue records for Kafka")?;
                tracing::debug!(skipped = delivered.skipped, "batch re-executed");
                ack
            }
            _ => {
                let ack = BatchAck::unsealed();
                self.send.send(send::Job {
                    batch,
                    out,
                    rejected,
                    routing: self.routing.clone(),
                    epoch: eos.map(|e| e.epoch),
                    ack: ack.clone(),
                    // The send stage waits until the epoch is durable.
                    logged: eos.and(self.checkpoints.as_ref()).map(Checkpoints::durable),
                })?;
                ack
            }
        };
        self.durations.sink = ms(sinking.elapsed());
        Ok(ack)
    }

    /// Waits for a batch's deliveries; then, without checkpoints, its
    /// offsets are due for the next commit.
    fn finish(&mut self, source: &KafkaSource, done: InFlight) -> anyhow::Result<()> {
        done.ack
            .wait()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("a batch could not be delivered; its offsets are not committed")?;
        self.count_undeliverable();
        if self.checkpoints.is_none() {
            self.commits.add(&done.commit);
            if let Some(offsets) = self.commits.take_if_due() {
                commit_offsets(source, &offsets, CommitMode::Async);
            }
        }
        Ok(())
    }

    /// Brings the summary up to date with what the sink could not send:
    /// outputs dead-lettered for their size, records quarantined.
    fn count_undeliverable(&mut self) {
        if self.task.is_some() {
            // The producer is the pipeline's: its workers count for it.
            return;
        }
        let too_large = self.sink.too_large();
        let new = too_large - self.too_large_counted;
        if new > 0 {
            self.too_large_counted = too_large;
            self.summary.dead_lettered += new;
            *self
                .summary
                .dead_letter_reasons
                .entry(Kind::TooLarge)
                .or_default() += new;
        }
        self.summary.quarantined = self.sink.quarantine().count();
    }

    /// Finishes the oldest batches as long as they are acknowledged,
    /// without waiting.
    pub fn finish_acknowledged(&mut self, source: &KafkaSource) -> anyhow::Result<()> {
        while self.in_flight.front().is_some_and(|b| b.ack.is_done()) {
            let done = self.in_flight.pop_front().expect("not empty");
            self.finish(source, done)?;
        }
        Ok(())
    }

    /// Between batches, for a task that got none this round: what is due
    /// without one (the offsets acknowledged since the last commit, or a
    /// checkpoint of epochs run since the last), so that an idle task's
    /// progress reaches the group (other processes draining until caught
    /// up wait for it) and its checkpoint is as fresh as the interval says.
    ///
    /// `draining`: the group drains until caught up, and other processes
    /// wait for this task's position to be committed: a checkpointed task
    /// takes its checkpoint (which commits) as soon as it is idle.
    pub fn idle(&mut self, source: &KafkaSource, draining: bool) -> anyhow::Result<()> {
        self.finish_acknowledged(source)?;
        match &self.checkpoints {
            None => {
                // Sent again; newer offsets acknowledged since stand.
                let refused = source.refused_commits(self.partition());
                self.commits.restore(&refused);
                if self.in_flight.is_empty() {
                    let due = if draining {
                        Some(self.commits.take()).filter(|o| !o.is_empty())
                    } else {
                        self.commits.take_if_due()
                    };
                    if let Some(offsets) = due {
                        commit_offsets(source, &offsets, CommitMode::Async);
                    }
                }
            }
            Some(c) => {
                if (draining || c.due()) && self.saved != Some(self.epoch) {
                    self.checkpoint(Some(source))?;
                }
            }
        }
        Ok(())
    }

    /// Waits for every batch in flight, then commits every acknowledged
    /// offset and waits for the broker's answer.
    fn drain(&mut self, source: &KafkaSource) -> anyhow::Result<()> {
        while let Some(done) = self.in_flight.pop_front() {
            self.finish(source, done)?;
        }
        let mut offsets = self.commits.take();
        if self.checkpoints.is_none() {
            // With the newest offsets already sent, once more: one sent
            // during a rebalance may have been refused unreported (see
            // `KafkaSource::commit_kept`), and this is the last word.
            for sent in source.sent_offsets(self.partition()) {
                if !offsets
                    .iter()
                    .any(|o| (o.source, o.partition) == (sent.source, sent.partition))
                {
                    offsets.push(sent);
                }
            }
        }
        commit_offsets(source, &offsets, CommitMode::Sync);
        Ok(())
    }

    /// Everything so far acknowledged, committed and (with checkpoints)
    /// checkpointed: before a pause.
    pub fn settle(&mut self, source: &KafkaSource) -> anyhow::Result<()> {
        self.drain(source)?;
        if self.checkpoints.is_some() {
            self.checkpoint(Some(source))?;
        }
        Ok(())
    }
}

/// librdkafka's default `session.timeout.ms`.
const SESSION_TIMEOUT_MS: i64 = 45_000;

/// For a checkpointed pipeline whose tasks the group assigns, unless its
/// spec says otherwise: a `message.timeout.ms` below the session timeout.
/// A process paused long enough to lose its tasks then finds the records
/// it had queued before the pause expired, instead of sending them after
/// the next owner took over (see `checkpoint::Fence` for the records it
/// would queue after).
fn zombie_timeout(spec: &PipelineSpec) -> Option<i64> {
    let producer = &spec.kafka.producer;
    if spec.checkpoint.is_none()
        || !spec.parallelism.tasks()
        || !super::task::grouped(spec)
        || producer.contains_key("message.timeout.ms")
        || producer.contains_key("delivery.timeout.ms")
    {
        return None;
    }
    let session = spec
        .kafka
        .consumer
        .get("session.timeout.ms")
        .and_then(|v| v.to_string().parse::<i64>().ok())
        .unwrap_or(SESSION_TIMEOUT_MS);
    Some((session * 2 / 3).max(1000))
}

impl Runner<'_> {
    /// Adds the batch's durations to the summary's.
    fn add_time(&mut self) {
        self.spent += self.durations;
        self.summary.time = TimeSpent::from(self.spent);
    }
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// Acknowledged offsets not yet committed: batches are acknowledged every
/// few milliseconds, and a commit per batch would be a round trip to the
/// group coordinator per batch (on this machine it took more time than the
/// rest of a batch's work).
struct PendingCommits {
    /// Per (source, partition), the offset after the last acknowledged
    /// record (later batches replace earlier ones, in batch order).
    offsets: BTreeMap<(u16, i32), i64>,
    interval: Duration,
    last: Instant,
}

impl PendingCommits {
    fn new(interval: Duration) -> Self {
        Self {
            offsets: BTreeMap::new(),
            interval,
            last: Instant::now(),
        }
    }

    fn add(&mut self, offsets: &[NextOffset]) {
        for o in offsets {
            self.offsets.insert((o.source, o.partition), o.offset);
        }
    }

    /// Offsets whose commit was refused, unless newer ones wait already.
    fn restore(&mut self, offsets: &[NextOffset]) {
        for o in offsets {
            self.offsets
                .entry((o.source, o.partition))
                .or_insert(o.offset);
        }
    }

    /// The offsets to commit now, if the interval since the last commit
    /// has passed.
    fn take_if_due(&mut self) -> Option<Vec<NextOffset>> {
        (self.last.elapsed() >= self.interval && !self.offsets.is_empty()).then(|| self.take())
    }

    /// Every offset not yet committed.
    fn take(&mut self) -> Vec<NextOffset> {
        self.last = Instant::now();
        std::mem::take(&mut self.offsets)
            .into_iter()
            .map(|((source, partition), offset)| NextOffset {
                source,
                partition,
                offset,
            })
            .collect()
    }
}

fn commit_offsets(source: &KafkaSource, offsets: &[NextOffset], mode: CommitMode) {
    if offsets.is_empty() {
        return;
    }
    if let Err(e) = source.commit(offsets, mode) {
        // Still safe: the next commit covers these offsets, or the records
        // are re-delivered to whoever owns the partition next.
        tracing::warn!(error = %e, "offset commit failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(source: u16, partition: i32, offset: i64) -> NextOffset {
        NextOffset {
            source,
            partition,
            offset,
        }
    }

    #[test]
    fn pending_commits_keep_each_partitions_latest_offset_until_due() {
        let mut commits = PendingCommits::new(Duration::from_secs(3600));
        commits.add(&[offset(0, 1, 10), offset(0, 0, 5)]);
        commits.add(&[offset(0, 1, 12), offset(1, 0, 3)]);
        assert_eq!(commits.take_if_due(), None, "the interval has not passed");
        assert_eq!(
            commits.take(),
            [offset(0, 0, 5), offset(0, 1, 12), offset(1, 0, 3)]
        );
        assert_eq!(commits.take(), []);
    }

    #[test]
    fn pending_commits_are_due_after_the_interval_and_only_when_any() {
        let mut commits = PendingCommits::new(Duration::ZERO);
        assert_eq!(commits.take_if_due(), None, "nothing to commit");
        commits.add(&[offset(0, 2, 7)]);
        assert_eq!(commits.take_if_due(), Some(vec![offset(0, 2, 7)]));
        assert_eq!(commits.take_if_due(), None);
    }
}
