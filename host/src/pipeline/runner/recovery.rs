//! Recovery and checkpoints of a run (a whole pipeline's, or a task's).
//!
//! Recovery, in order: open the newest valid checkpoint; restore the window
//! engine from it; open the Parquet sinks (which publish the files that
//! checkpoint listed and delete any other unfinished ones); re-execute, with
//! the same records in the same order at the same processing time, every
//! epoch logged after the checkpoint, skipping records the broker already
//! has; checkpoint; then continue from where the last epoch ended.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use super::{Runner, commit_offsets};
use crate::checkpoint::{Epoch, StepDigest, digests_by_step};
use crate::pipeline::Step;
use crate::pipeline::checkpoint::{Checkpoint, Checkpoints, SourcePosition, failpoint};
use crate::pipeline::deliver::Eos;
use crate::sink::{
    DeltaSink, EpochKey, ParquetCommit, ParquetSink, PostgresSink, SinkPosition, end_offsets,
    written_since,
};
use crate::source::{CommitMode, KafkaSource, NextOffset, ReplaySource, source_partitions};
use crate::spec::CheckpointSpec;
use crate::window::WindowEngine;

impl Runner<'_> {
    /// Restores state from the newest checkpoint and re-executes the epochs
    /// logged after it. Returns whether the pipeline is checkpointed.
    pub(super) fn recover(&mut self) -> anyhow::Result<bool> {
        let spec = self.spec;
        let Some(cspec) = &spec.checkpoint else {
            self.expect_partitions()?;
            self.parquet = self.open_parquet(None)?;
            self.postgres = self.open_postgres()?;
            self.delta = self.open_delta()?;
            return Ok(false);
        };
        let cspec = match &self.task {
            None => cspec.clone(),
            Some(task) => CheckpointSpec {
                dir: crate::pipeline::task::dir(&cspec.dir, task.partition),
                ..cspec.clone()
            },
        };
        let (checkpoints, recovered) = Checkpoints::open(
            &cspec,
            &spec.name,
            self.task.as_ref(),
            self.owner.as_deref(),
        )?;
        self.fence = checkpoints.fence();
        let routing = Arc::make_mut(&mut self.routing);
        routing.lineage = checkpoints.lineage().to_owned();
        routing.fence = self.fence.clone();
        self.checkpoints = Some(checkpoints);
        let checkpoint = recovered.checkpoint;
        if let Some(c) = &checkpoint {
            self.epoch = c.epoch;
            self.saved = Some(c.epoch);
            self.positions = c.positions(&spec.source.topics);
            if let Some(snapshot) = &c.windows
                && let Some(step) = self.chain.aggregate_mut()
            {
                let window = spec
                    .transforms
                    .last()
                    .and_then(|t| t.aggregate.clone())
                    .context("the aggregate step has no window spec")?;
                let engine = WindowEngine::restore(window, snapshot.clone())
                    .context("cannot restore the window state of the checkpoint")?;
                step.set_engine(engine);
            }
            if let Some(state) = &c.join
                && let Some(Step::Join(step)) = self.chain.steps_mut().first_mut()
            {
                step.restore_checkpoint(state.clone(), &spec.source.topics)?;
            }
        }
        // Before any re-execution: the original run had declared them too.
        self.expect_partitions()?;
        self.parquet = self.open_parquet(checkpoint.as_ref())?;
        self.postgres = self.open_postgres()?;
        self.delta = self.open_delta()?;

        match checkpoint {
            None if !self.exactly_once => {}
            // The starting point that exactly-once recovery reads back from,
            // before anything is produced.
            None if recovered.epochs.is_empty() => self.checkpoint(None)?,
            None => anyhow::bail!(
                "the epoch log holds {} epochs but there is no checkpoint to replay them from; \
                 remove the checkpoint directory to start over",
                recovered.epochs.len()
            ),
            Some(c) => self.replay(&c, &recovered.epochs)?,
        }
        Ok(true)
    }

    /// Tells the aggregate step (if any) which partitions to wait for.
    pub(super) fn expect_partitions(&mut self) -> anyhow::Result<()> {
        if let Some(Step::Join(step)) = self.chain.steps_mut().first_mut() {
            let mut partitions = source_partitions(self.spec)?;
            if let Some(task) = &self.task {
                partitions.retain(|&(_, p)| p == task.partition);
            }
            step.expect_partitions(&partitions);
        }
        if let Some(step) = self.chain.aggregate_mut() {
            let mut partitions = source_partitions(self.spec)?;
            if let Some(task) = &self.task {
                partitions.retain(|&(_, p)| p == task.partition);
            }
            if let Some(upstreams) = &self.spec.source.upstream_tasks {
                // A repartition topic: every upstream task may write to
                // each of its partitions.
                step.read_upstreams();
                partitions = partitions
                    .iter()
                    .flat_map(|&(_, p)| upstreams.iter().map(move |&u| (u as u16, p)))
                    .collect();
            }
            step.expect_partitions(&partitions);
        }
        Ok(())
    }

    pub(super) fn open_parquet(
        &self,
        checkpoint: Option<&Checkpoint>,
    ) -> anyhow::Result<Vec<Option<ParquetSink>>> {
        self.spec
            .outputs
            .iter()
            .map(|(name, output)| {
                output
                    .parquet
                    .as_ref()
                    .map(|p| {
                        let recovered = checkpoint.and_then(|c| c.parquet_commit(name));
                        match &self.task {
                            None => ParquetSink::open(name, p, recovered),
                            Some(task) => ParquetSink::open_for_task(
                                name,
                                p,
                                recovered,
                                task.partition,
                                self.spec.source.upstream_tasks.is_some(),
                            ),
                        }
                        .with_context(|| format!("outputs.{name}.parquet"))
                    })
                    .transpose()
            })
            .collect()
    }

    /// Opens each output's PostgreSQL sink; under exactly-once (once the
    /// checkpoint lineage is known), each keeps its progress per task.
    pub(super) fn open_postgres(&self) -> anyhow::Result<Vec<Option<PostgresSink>>> {
        let key = self.epoch_key();
        self.spec
            .outputs
            .iter()
            .map(|(name, output)| {
                output
                    .postgres
                    .as_ref()
                    .map(|p| {
                        PostgresSink::open(name, p, key.clone())
                            .with_context(|| format!("outputs.{name}.postgres"))
                    })
                    .transpose()
            })
            .collect()
    }

    /// Opens each output's Delta sink; under exactly-once, each commits
    /// with this run's transaction id.
    pub(super) fn open_delta(&self) -> anyhow::Result<Vec<Option<DeltaSink>>> {
        let key = self.epoch_key();
        let s3 = self
            .spec
            .checkpoint
            .as_ref()
            .map(|c| c.s3.clone())
            .unwrap_or_default();
        self.spec
            .outputs
            .iter()
            .map(|(name, output)| {
                output
                    .delta
                    .as_ref()
                    .map(|d| {
                        DeltaSink::open(name, d, &s3, key.clone())
                            .with_context(|| format!("outputs.{name}.delta"))
                    })
                    .transpose()
            })
            .collect()
    }

    /// The exactly-once identity of this run's table sinks (once the
    /// checkpoint lineage is known): pipeline, lineage and task.
    fn epoch_key(&self) -> Option<EpochKey> {
        (self.exactly_once && self.checkpoints.is_some()).then(|| EpochKey {
            pipeline: self.spec.name.clone(),
            lineage: self.routing.lineage.clone(),
            task: match &self.task {
                None => String::new(),
                Some(t) if self.spec.source.upstream_tasks.is_some() => {
                    format!("r{:05}", t.partition)
                }
                Some(t) => format!("t{:05}", t.partition),
            },
        })
    }

    /// Each step's module now (a swap changes them).
    pub(super) fn modules(&self) -> Vec<StepDigest> {
        self.routing
            .steps
            .iter()
            .map(|s| StepDigest::new(&s.name, &s.sha256))
            .collect()
    }

    /// Re-executes the epochs logged after checkpoint `c`.
    pub(super) fn replay(&mut self, c: &Checkpoint, epochs: &[(u64, Epoch)]) -> anyhow::Result<()> {
        let modules = self.modules();
        if epochs.is_empty() {
            let logged = digests_by_step(&c.modules);
            for m in &modules {
                if let Some(&before) = logged.get(m.step.as_str())
                    && *before != m.sha256
                {
                    tracing::info!(
                        step = %m.step,
                        checkpointed = %hex::encode(before),
                        now = %hex::encode(m.sha256),
                        "the step's module changed since the checkpoint; no epoch to re-execute"
                    );
                }
            }
            return Ok(());
        }
        if !self.exactly_once {
            tracing::warn!(
                epochs = epochs.len(),
                "the epoch log holds epochs from an exactly-once run; this run is at-least-once and resumes from the checkpoint"
            );
            return Ok(());
        }
        let mut epochs = epochs.to_vec();
        for (n, epoch) in &mut epochs {
            epoch
                .resolve(*n, &self.spec.source.topics, &modules)
                .context("refusing to recover")?;
        }
        let started = Instant::now();
        let written = written_since(
            &self.spec.kafka,
            &self.routing.lineage,
            &self.spec.sink_topics(),
            &c.sinks,
        )
        .context("cannot read back what the sinks already hold")?;
        let mut replay = ReplaySource::new(self.spec, epochs.iter().map(|(_, e)| &e.layout))?;
        let mut produced = 0;
        for (n, epoch) in &epochs {
            let batch = replay
                .read(&epoch.layout)
                .with_context(|| format!("cannot re-read epoch {n}"))?;
            self.epoch = *n;
            let eos = Some(Eos {
                epoch: *n,
                written: Some(&written),
            });
            produced += batch.len();
            let ack = self.process(batch, epoch.now_ms, eos)?;
            ack.wait()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("a replayed batch could not be delivered")?;
            for r in &epoch.layout.ranges {
                self.positions.insert((r.source, r.partition), r.to);
            }
        }
        tracing::info!(
            epochs = epochs.len(),
            records = produced,
            already_written = written.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "re-executed the epochs logged after the checkpoint"
        );
        self.checkpoint(None)
    }

    /// Takes a checkpoint: everything produced so far is acknowledged first.
    /// If the last one is of the current epoch, nothing ran since: it
    /// stands (an idle task asked to checkpoint at a swap or a pause).
    pub(super) fn checkpoint(&mut self, source: Option<&KafkaSource>) -> anyhow::Result<()> {
        if let Some(source) = source {
            self.drain(source)?;
        }
        if self.saved == Some(self.epoch) {
            return Ok(());
        }
        debug_assert!(self.in_flight.is_empty(), "a batch in flight has a source");
        let started = Instant::now();
        let spec = self.spec;
        let sinks = if self.exactly_once {
            self.sink_positions()?
        } else {
            Vec::new()
        };
        self.commit_delta()?;
        let mut parquet: Vec<(String, ParquetCommit)> = Vec::new();
        for (name, sink) in self.output_names.iter().zip(&mut self.parquet) {
            if let Some(sink) = sink {
                let commit = sink
                    .prepare_commit()
                    .with_context(|| format!("outputs.{name}: cannot close Parquet files"))?;
                parquet.push((name.clone(), commit));
            }
        }
        let mut sources: Vec<SourcePosition> = self
            .positions
            .iter()
            .map(|(&(s, partition), &offset)| SourcePosition {
                topic: spec.source.topics[s as usize].clone(),
                partition,
                offset,
            })
            .collect();
        sources.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let checkpoint = Checkpoint {
            epoch: self.epoch,
            sources,
            sinks,
            windows: self.chain.aggregate().map(|a| a.engine().snapshot()),
            join: match self.chain.steps().first() {
                Some(Step::Join(j)) => Some(j.checkpoint(&spec.source.topics)),
                _ => None,
            },
            parquet,
            lineage: self.routing.lineage.clone(),
            modules: self.modules(),
            task: self.task.clone(),
            ..Checkpoint::new(&spec.name)
        };
        failpoint("after-outputs");
        let checkpoints = self
            .checkpoints
            .as_mut()
            .expect("checkpoint() runs only with checkpoints");
        checkpoints.save(&checkpoint)?;
        self.saved = Some(self.epoch);
        failpoint("after-checkpoint");
        for ((name, commit), sink) in checkpoint
            .parquet
            .iter()
            .zip(self.parquet.iter_mut().flatten())
        {
            sink.commit(commit)
                .with_context(|| format!("outputs.{name}: cannot publish Parquet files"))?;
        }
        checkpoints.trim_log()?;
        for sink in self.postgres.iter_mut().flatten() {
            sink.checkpointed(self.epoch);
        }
        if let Some(source) = source {
            // For lag monitoring and tools; the checkpoint is what a restart uses.
            let offsets: Vec<NextOffset> = self
                .positions
                .iter()
                .map(|(&(source, partition), &offset)| NextOffset {
                    source,
                    partition,
                    offset,
                })
                .collect();
            commit_offsets(source, &offsets, CommitMode::Sync);
        }
        tracing::debug!(
            epoch = self.epoch,
            elapsed_us = started.elapsed().as_micros() as u64,
            "checkpoint saved"
        );
        Ok(())
    }
}

impl Runner<'_> {
    /// Where each sink partition's records of later epochs can start, at
    /// the earliest: asked of the broker once, then moved forward by the
    /// producer's own acknowledgements (so a checkpoint needs no round
    /// trip). Other producers' records after that point are skipped by the
    /// read-back, which looks at this pipeline's ids only.
    pub(super) fn sink_positions(&mut self) -> anyhow::Result<Vec<SinkPosition>> {
        if self.sink_ends.is_empty() {
            let spec = self.spec;
            self.sink_ends = end_offsets(&spec.kafka, &spec.sink_topics())
                .context("cannot read the sink topics' end offsets")?
                .into_iter()
                .map(|p| ((p.topic, p.partition), p.offset))
                .collect();
        }
        for (key, end) in self.sink.acknowledged_ends() {
            let known = self.sink_ends.entry(key).or_insert(end);
            *known = (*known).max(end);
        }
        let mut positions: Vec<SinkPosition> = self
            .sink_ends
            .iter()
            .map(|((topic, partition), &offset)| SinkPosition {
                topic: topic.clone(),
                partition: *partition,
                offset,
            })
            .collect();
        positions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(positions)
    }
}
