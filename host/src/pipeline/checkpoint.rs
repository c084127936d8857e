//! What a pipeline checkpoint holds, and when one is due.
//!
//! A checkpoint is taken between two batches, once every record of the
//! batches before it is acknowledged by the broker and nothing of a later
//! batch has been produced. It holds, for epoch (batch number) `n`:
//! - per source partition, the offset after the last record of batches
//!   `..= n` (where the next run resumes);
//! - per sink partition, the broker's end offset (exactly-once recovery
//!   reads back from there what later epochs already wrote);
//! - the aggregate step's windows, watermarks and accumulators, or the
//!   join step's buffered records and watermarks;
//! - per Parquet output, the files closed for this checkpoint, which become
//!   visible only once the checkpoint is durable.
//!
//! - the checkpoint directory's lineage id (exactly-once record ids start
//!   with it) and each step's module digest.
//!
//! Everything is keyed by topic name and partition, not by the spec's
//! order, so that a checkpoint stays meaningful when a spec is reordered,
//! and state per source partition can later move between processes.
//!
//! Format 2 added the lineage and the digests; a format 1 checkpoint still
//! loads (with neither). Format 3 added the task: a pipeline that runs as
//! tasks keeps one checkpoint directory per task, and each checkpoint says
//! which source partition it holds and the source topics' partition counts
//! it was taken with; a checkpoint of the whole pipeline has none. Format 4
//! added the join step's state.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    CheckpointError, CheckpointStore, Durable, Epoch, EpochLog, Fence, LocalDirStore, LogWriter,
    LoggedEpoch, ObjectCheckpoints, ObjectDir, ObjectLog, ObjectTask, StepDigest, Taken,
};
use crate::sink::{ParquetCommit, SinkPosition};
use crate::spec::CheckpointSpec;
use crate::window::EngineSnapshot;

use super::join::JoinCheckpoint;

/// Bumped when the layout of [`Checkpoint`] changes incompatibly.
const FORMAT: u32 = 4;

/// A source partition's next offset to process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Everything a pipeline needs to continue exactly where it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: u32,
    pub pipeline: String,
    /// The last epoch (batch number) included; 0 before the first batch.
    pub epoch: u64,
    pub sources: Vec<SourcePosition>,
    /// Sink end offsets (exactly-once only; empty otherwise).
    pub sinks: Vec<SinkPosition>,
    pub windows: Option<EngineSnapshot>,
    /// Per Parquet output name, the files this checkpoint publishes.
    pub parquet: Vec<(String, ParquetCommit)>,
    /// The checkpoint directory's lineage id (empty: format 1).
    pub lineage: String,
    /// Each step's module when the checkpoint was taken (empty: format 1).
    pub modules: Vec<StepDigest>,
    /// The task this checkpoint belongs to; `None` for the whole pipeline.
    pub task: Option<TaskLayout>,
    /// The join step's state, for a pipeline that starts with one.
    pub join: Option<JoinCheckpoint>,
}

/// Format 3: [`Checkpoint`] without the join state.
#[derive(Serialize, Deserialize)]
struct CheckpointV3 {
    format: u32,
    pipeline: String,
    epoch: u64,
    sources: Vec<SourcePosition>,
    sinks: Vec<SinkPosition>,
    windows: Option<EngineSnapshot>,
    parquet: Vec<(String, ParquetCommit)>,
    lineage: String,
    modules: Vec<StepDigest>,
    task: Option<TaskLayout>,
}

impl From<CheckpointV3> for Checkpoint {
    /// No join state (joins were not checkpointed before format 4).
    fn from(c: CheckpointV3) -> Self {
        Self {
            format: c.format,
            pipeline: c.pipeline,
            epoch: c.epoch,
            sources: c.sources,
            sinks: c.sinks,
            windows: c.windows,
            parquet: c.parquet,
            lineage: c.lineage,
            modules: c.modules,
            task: c.task,
            join: None,
        }
    }
}

/// Which task a checkpoint belongs to, and the partition layout of the
/// source it was cut from: a task's state is only valid for the same
/// layout (a key's partition depends on the partition count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLayout {
    /// The source partition number the task owns (of every source topic).
    pub partition: i32,
    /// Each source topic and its partition count.
    pub topics: Vec<(String, i32)>,
}

/// Format 2: [`Checkpoint`] without the task.
#[derive(Serialize, Deserialize)]
struct CheckpointV2 {
    format: u32,
    pipeline: String,
    epoch: u64,
    sources: Vec<SourcePosition>,
    sinks: Vec<SinkPosition>,
    windows: Option<EngineSnapshot>,
    parquet: Vec<(String, ParquetCommit)>,
    lineage: String,
    modules: Vec<StepDigest>,
}

/// Format 1: [`Checkpoint`] without the lineage and the digests.
#[derive(Serialize, Deserialize)]
struct CheckpointV1 {
    format: u32,
    pipeline: String,
    epoch: u64,
    sources: Vec<SourcePosition>,
    sinks: Vec<SinkPosition>,
    windows: Option<EngineSnapshot>,
    parquet: Vec<(String, ParquetCommit)>,
}

impl From<CheckpointV1> for CheckpointV2 {
    /// No lineage, no digests.
    fn from(c: CheckpointV1) -> Self {
        Self {
            format: c.format,
            pipeline: c.pipeline,
            epoch: c.epoch,
            sources: c.sources,
            sinks: c.sinks,
            windows: c.windows,
            parquet: c.parquet,
            lineage: String::new(),
            modules: Vec::new(),
        }
    }
}

impl From<CheckpointV2> for Checkpoint {
    /// A checkpoint of the whole pipeline.
    fn from(c: CheckpointV2) -> Self {
        Self {
            format: c.format,
            pipeline: c.pipeline,
            epoch: c.epoch,
            sources: c.sources,
            sinks: c.sinks,
            windows: c.windows,
            parquet: c.parquet,
            lineage: c.lineage,
            modules: c.modules,
            task: None,
            join: None,
        }
    }
}

impl Checkpoint {
    pub fn new(pipeline: &str) -> Self {
        Self {
            format: FORMAT,
            pipeline: pipeline.to_owned(),
            epoch: 0,
            sources: Vec::new(),
            sinks: Vec::new(),
            windows: None,
            parquet: Vec::new(),
            lineage: String::new(),
            modules: Vec::new(),
            task: None,
            join: None,
        }
    }

    fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a checkpoint always serializes")
    }

    fn decode(bytes: &[u8]) -> anyhow::Result<Self> {
        let (format, _) =
            postcard::take_from_bytes::<u32>(bytes).context("cannot decode the checkpoint")?;
        match format {
            FORMAT => postcard::from_bytes(bytes).context("cannot decode the checkpoint"),
            3 => postcard::from_bytes::<CheckpointV3>(bytes)
                .map(Self::from)
                .context("cannot decode the checkpoint"),
            2 => postcard::from_bytes::<CheckpointV2>(bytes)
                .map(Self::from)
                .context("cannot decode the checkpoint"),
            1 => postcard::from_bytes::<CheckpointV1>(bytes)
                .map(|c| Self::from(CheckpointV2::from(c)))
                .context("cannot decode the checkpoint"),
            _ => anyhow::bail!(
                "checkpoint format {format} is not supported (this Sluice reads 1 to {FORMAT})"
            ),
        }
    }

    /// Source positions by (index into `topics`, partition); positions of
    /// topics the spec no longer reads are left out.
    pub fn positions(&self, topics: &[String]) -> HashMap<(u16, i32), i64> {
        self.sources
            .iter()
            .filter_map(|p| {
                let source = topics.iter().position(|t| *t == p.topic)?;
                Some(((source as u16, p.partition), p.offset))
            })
            .collect()
    }

    pub fn parquet_commit(&self, output: &str) -> Option<&ParquetCommit> {
        self.parquet
            .iter()
            .find(|(name, _)| name == output)
            .map(|(_, c)| c)
    }
}

/// How long a new owner waits for a task's checkpoint directory held by
/// the previous one, at most.
const LOCK_WAIT: Duration = Duration::from_secs(120);
const LOCK_RETRY: Duration = Duration::from_millis(100);

/// The checkpoint store, the epoch log and the interval.
#[derive(Debug)]
pub struct Checkpoints {
    /// This process's generation of the task, when the group assigns it.
    fence: Option<Arc<Fence>>,
    store: Box<dyn CheckpointStore>,
    lineage: String,
    log: LogWriter,
    interval: Duration,
    last: Instant,
    keep: usize,
    /// Epochs of the checkpoints kept, oldest first. The epoch log keeps
    /// every epoch after the oldest, so that falling back to it (when the
    /// newer ones are damaged) can still re-execute what followed.
    kept: VecDeque<u64>,
}

/// What was on disk when the pipeline started.
#[derive(Debug)]
pub struct Recovered {
    pub checkpoint: Option<Checkpoint>,
    /// Epochs logged after the checkpoint: run but not checkpointed.
    pub epochs: Vec<(u64, Epoch)>,
}

impl Checkpoints {
    /// Opens the checkpoint directory and reads the newest valid checkpoint
    /// and the epochs logged after it. Refuses to start when checkpoints
    /// exist but none is valid. `task`: the task whose directory `spec.dir`
    /// is (`None`: the whole pipeline's); a checkpoint of another task or
    /// another partition layout is refused.
    ///
    /// `owner`: this process's name for the task, when the consumer group
    /// assigns it: the task's generation is raised first (fencing off a
    /// previous owner that has not noticed it lost the task), then the
    /// directory's lock is waited for (that owner may still be handing it
    /// off, or be paused holding it).
    pub fn open(
        spec: &CheckpointSpec,
        pipeline: &str,
        task: Option<&TaskLayout>,
        owner: Option<&str>,
    ) -> anyhow::Result<(Self, Recovered)> {
        let opened = match spec.s3_url() {
            Some(url) => open_object(spec, url, pipeline, owner)?,
            None => open_local(spec, owner)?,
        };
        let Opened {
            fence,
            store,
            lineage,
            latest,
            log,
            entries,
        } = opened;
        let checkpoint = match latest {
            None => None,
            Some((id, bytes)) => {
                let c = Checkpoint::decode(&bytes)
                    .with_context(|| format!("checkpoint {id} in {}", spec.dir.display()))?;
                anyhow::ensure!(
                    c.pipeline == pipeline,
                    "the checkpoints in {} belong to pipeline `{}`, not `{pipeline}`",
                    spec.dir.display(),
                    c.pipeline
                );
                anyhow::ensure!(
                    c.lineage.is_empty() || c.lineage == lineage,
                    "checkpoint {id} in {} is of lineage {}, but the directory's LINEAGE is {}: \
                     files of two checkpoint directories were mixed; restore the directory whole",
                    spec.dir.display(),
                    c.lineage,
                    lineage
                );
                check_task(&c, id, &spec.dir, task)?;
                Some(c)
            }
        };
        let after = checkpoint.as_ref().map_or(0, |c| c.epoch);
        let epochs = entries
            .into_iter()
            .filter(|(n, _)| *n > after)
            .map(|(n, bytes)| {
                Epoch::decode(&bytes)
                    .map(|e| (n, e))
                    .with_context(|| format!("epoch {n} in the epoch log"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(c) = &checkpoint {
            tracing::info!(epoch = c.epoch, logged_after = epochs.len(), dir = %spec.dir.display(), "recovering from checkpoint");
        }
        let after = checkpoint.as_ref().map(|c| c.epoch);
        let checkpoints = Self {
            fence: fence.map(Arc::new),
            store,
            lineage,
            log,
            interval: spec.interval,
            last: Instant::now(),
            keep: spec.keep,
            kept: after.into_iter().collect(),
        };
        Ok((checkpoints, Recovered { checkpoint, epochs }))
    }

    /// The checkpoint directory's lineage id.
    pub fn lineage(&self) -> &str {
        &self.lineage
    }

    pub fn due(&self) -> bool {
        self.last.elapsed() >= self.interval
    }

    /// Starts writing epoch `n`'s descriptor (and fsyncing it) on the log's
    /// own thread, so that the write overlaps the batch's Wasm work; none
    /// of its output may be produced before it is durable
    /// ([`Self::wait_logged`], or [`Durable::wait_for`] from elsewhere).
    pub fn log(&mut self, n: u64, epoch: &Epoch) -> anyhow::Result<()> {
        self.log.append(n, epoch.encode())
    }

    /// Waits until the last epoch given to [`Self::log`] is durable.
    pub fn wait_logged(&mut self) -> anyhow::Result<()> {
        self.log.wait()
    }

    /// How far the epoch log is durable, to wait on from another thread.
    pub fn durable(&self) -> Arc<Durable> {
        self.log.durable()
    }

    /// This process's generation of the task, if the group assigns it.
    pub fn fence(&self) -> Option<Arc<Fence>> {
        self.fence.clone()
    }

    /// Saves `checkpoint` durably; the epoch log is then trimmed. Refused
    /// when a newer owner took the task over.
    pub fn save(&mut self, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        if let Some(fence) = &self.fence {
            fence.check()?;
        }
        self.store
            .save(checkpoint.epoch, &checkpoint.encode())
            .with_context(|| format!("cannot save checkpoint {}", checkpoint.epoch))?;
        self.last = Instant::now();
        if self.kept.back() != Some(&checkpoint.epoch) {
            self.kept.push_back(checkpoint.epoch);
        }
        while self.kept.len() > self.keep {
            self.kept.pop_front();
        }
        Ok(())
    }

    /// Drops the epochs that no kept checkpoint needs.
    pub fn trim_log(&mut self) -> anyhow::Result<()> {
        let Some(&oldest) = self.kept.front() else {
            return Ok(());
        };
        self.log.truncate_through(oldest)
    }
}

/// A checkpoint directory opened: where its checkpoints and epoch log go,
/// and what they held.
struct Opened {
    fence: Option<Fence>,
    store: Box<dyn CheckpointStore>,
    lineage: String,
    /// The newest valid checkpoint (id, body).
    latest: Option<(u64, Vec<u8>)>,
    log: LogWriter,
    entries: Vec<LoggedEpoch>,
}

/// A local (or shared) directory: the generation raised in its `OWNER`
/// file first when the group assigns the task (fencing off a previous
/// owner that has not noticed it lost it), then its lock waited for (that
/// owner may still be handing it off, or be paused holding it).
fn open_local(spec: &CheckpointSpec, owner: Option<&str>) -> anyhow::Result<Opened> {
    let fence = owner
        .map(|owner| Fence::take(&spec.dir, owner))
        .transpose()
        .with_context(|| format!("cannot take over {}", spec.dir.display()))?;
    let mut waited = None;
    let store = loop {
        match LocalDirStore::open(&spec.dir, spec.keep) {
            Err(CheckpointError::InUse { .. })
                if fence.is_some() && waited.is_none_or(|w: Instant| w.elapsed() < LOCK_WAIT) =>
            {
                if waited.is_none() {
                    tracing::warn!(dir = %spec.dir.display(), "the task's previous owner still holds its checkpoint directory (paused, or handing it off); waiting");
                }
                waited.get_or_insert_with(Instant::now);
                std::thread::sleep(LOCK_RETRY);
            }
            result => {
                break result.with_context(|| {
                    format!(
                        "cannot open the checkpoint directory {}",
                        spec.dir.display()
                    )
                })?;
            }
        }
    };
    if let Some(fence) = &fence {
        // Taken over again while waiting: not ours any more.
        fence.check()?;
    }
    let latest = store.load_latest().context(
        "refusing to start: no checkpoint can be used (restore one, or remove the directory to start over)",
    )?;
    let (log, entries) =
        EpochLog::open(Path::new(&spec.dir), spec.sync).context("cannot open the epoch log")?;
    Ok(Opened {
        fence,
        lineage: store.lineage().to_owned(),
        store: Box::new(store),
        latest,
        log: LogWriter::spawn(log),
        entries,
    })
}

/// A directory in object storage: always taken over with a generation of
/// its own (there is no lock), by the group's member or, for a pipeline
/// not run in a group, by the pipeline.
fn open_object(
    spec: &CheckpointSpec,
    url: &str,
    pipeline: &str,
    owner: Option<&str>,
) -> anyhow::Result<Opened> {
    let dir = ObjectDir::open(url, &spec.s3)?;
    let (task, taken) = ObjectTask::take(dir, owner.unwrap_or(pipeline), spec.keep)
        .with_context(|| format!("cannot take over {url}"))?;
    let Taken {
        checkpoints,
        problems,
        epochs,
    } = taken;
    let latest = checkpoints.into_iter().next();
    if latest.is_none() && !problems.is_empty() {
        return Err(CheckpointError::NoValidCheckpoint {
            dir: url.into(),
            problems,
        })
        .context(
            "refusing to start: no checkpoint can be used (restore one, or remove the directory to start over)",
        );
    }
    Ok(Opened {
        fence: Some(Fence::object(task.clone())),
        lineage: task.lineage().to_owned(),
        store: Box::new(ObjectCheckpoints(task.clone())),
        latest,
        log: LogWriter::spawn(ObjectLog(task)),
        entries: epochs,
    })
}

/// Refuses checkpoint `id` of `dir` unless it belongs to `task` (and the
/// same source partition layout).
fn check_task(
    c: &Checkpoint,
    id: u64,
    dir: &Path,
    task: Option<&TaskLayout>,
) -> anyhow::Result<()> {
    let dir = dir.display();
    match (&c.task, task) {
        (None, None) => Ok(()),
        (Some(had), None) => anyhow::bail!(
            "checkpoint {id} in {dir} belongs to the task of partition {}, not to the whole \
             pipeline",
            had.partition
        ),
        (None, Some(_)) => anyhow::bail!(
            "checkpoint {id} in {dir} is a checkpoint of the whole pipeline, not of a task"
        ),
        (Some(had), Some(now)) if had.partition != now.partition => anyhow::bail!(
            "checkpoint {id} in {dir} belongs to the task of partition {}, not {}",
            had.partition,
            now.partition
        ),
        // A topic added to or removed from the source moves no key between
        // tasks; a topic whose partition count changed does.
        (Some(had), Some(now))
            if had
                .topics
                .iter()
                .any(|(t, n)| now.topics.iter().any(|(u, m)| u == t && m != n)) =>
        {
            anyhow::bail!(
                "checkpoint {id} in {dir} was taken when the source topics had {} partitions; they now \
             have {}: a task's state is only valid for the partition layout it was cut from (keys \
             move between partitions when the count changes). Restore the partition counts, or \
             remove the checkpoint directory to start over",
                layout_text(&had.topics),
                layout_text(&now.topics)
            )
        }
        _ => Ok(()),
    }
}

/// `a: 4, b: 4`
fn layout_text(topics: &[(String, i32)]) -> String {
    topics
        .iter()
        .map(|(t, n)| format!("{t}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Crashes the process here when `SLUICE_FAILPOINT` names this point, for
/// crash tests: `before-outputs` (exactly-once: an epoch logged, none of its
/// records sent), `after-outputs` (outputs acknowledged, checkpoint not yet
/// written) or `after-checkpoint` (checkpoint written, offsets not yet
/// committed to the group, Parquet files not yet renamed). `NAME:k` crashes
/// at the k-th time the point is reached (default the first).
pub fn failpoint(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Ok(setting) = std::env::var("SLUICE_FAILPOINT") else {
        return;
    };
    let (point, nth) = match setting.split_once(':') {
        Some((p, k)) => (p.to_owned(), k.parse().unwrap_or(1)),
        None => (setting, 1),
    };
    if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        eprintln!("failpoint {name} reached: aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_1_checkpoint_loads_without_lineage_or_digests() {
        let old = CheckpointV1 {
            format: 1,
            pipeline: "p".to_owned(),
            epoch: 4,
            sources: vec![SourcePosition {
                topic: "in".to_owned(),
                partition: 0,
                offset: 10,
            }],
            sinks: Vec::new(),
            windows: None,
            parquet: Vec::new(),
        };
        let c = Checkpoint::decode(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert_eq!(
            c,
            Checkpoint {
                format: 1,
                epoch: 4,
                sources: old.sources.clone(),
                ..Checkpoint::new("p")
            }
        );
        let new = Checkpoint {
            lineage: "00112233aabbccdd".to_owned(),
            modules: vec![StepDigest::new("s", &"ab".repeat(32))],
            ..Checkpoint::new("p")
        };
        assert_eq!(Checkpoint::decode(&new.encode()).unwrap(), new);
        assert_eq!(new.modules[0].sha256, [0xab; 32]);
    }

    #[test]
    fn a_format_2_checkpoint_loads_as_the_whole_pipelines() {
        let old = CheckpointV2 {
            format: 2,
            pipeline: "p".to_owned(),
            epoch: 9,
            sources: Vec::new(),
            sinks: Vec::new(),
            windows: None,
            parquet: Vec::new(),
            lineage: "00112233aabbccdd".to_owned(),
            modules: Vec::new(),
        };
        let c = Checkpoint::decode(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert_eq!(
            c,
            Checkpoint {
                format: 2,
                epoch: 9,
                lineage: old.lineage.clone(),
                ..Checkpoint::new("p")
            }
        );
        let task = Checkpoint {
            task: Some(layout(3, 4)),
            ..Checkpoint::new("p")
        };
        assert_eq!(Checkpoint::decode(&task.encode()).unwrap(), task);
    }

    #[test]
    fn a_format_3_checkpoint_loads_without_join_state() {
        let old = CheckpointV3 {
            format: 3,
            pipeline: "p".to_owned(),
            epoch: 12,
            sources: Vec::new(),
            sinks: Vec::new(),
            windows: None,
            parquet: Vec::new(),
            lineage: "00112233aabbccdd".to_owned(),
            modules: Vec::new(),
            task: Some(layout(1, 2)),
        };
        let c = Checkpoint::decode(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert_eq!(
            c,
            Checkpoint {
                format: 3,
                epoch: 12,
                lineage: old.lineage.clone(),
                task: old.task.clone(),
                ..Checkpoint::new("p")
            }
        );
    }

    fn layout(partition: i32, partitions: i32) -> TaskLayout {
        TaskLayout {
            partition,
            topics: vec![
                ("in".to_owned(), partitions),
                ("more".to_owned(), partitions),
            ],
        }
    }

    #[test]
    fn a_task_takes_only_its_own_checkpoints_of_the_same_layout() {
        let dir = Path::new("/cp/tasks/00003");
        let of = |task: Option<TaskLayout>| Checkpoint {
            task,
            ..Checkpoint::new("p")
        };
        let refusal = |c: &Checkpoint, task: Option<&TaskLayout>| {
            check_task(c, 7, dir, task).map_err(|e| e.to_string()).err()
        };
        assert_eq!(refusal(&of(Some(layout(3, 4))), Some(&layout(3, 4))), None);
        assert_eq!(refusal(&of(None), None), None);
        // A topic added or removed moves no key between tasks.
        let mut added = layout(3, 4);
        added.topics.push(("new".to_owned(), 8));
        assert_eq!(refusal(&of(Some(layout(3, 4))), Some(&added)), None);
        assert_eq!(refusal(&of(Some(added)), Some(&layout(3, 4))), None);
        assert_eq!(
            refusal(&of(Some(layout(3, 4))), Some(&layout(2, 4))).unwrap(),
            "checkpoint 7 in /cp/tasks/00003 belongs to the task of partition 3, not 2"
        );
        assert_eq!(
            refusal(&of(Some(layout(3, 4))), Some(&layout(3, 8))).unwrap(),
            "checkpoint 7 in /cp/tasks/00003 was taken when the source topics had in: 4, more: 4 \
             partitions; they now have in: 8, more: 8: a task's state is only valid for the \
             partition layout it was cut from (keys move between partitions when the count \
             changes). Restore the partition counts, or remove the checkpoint directory to start \
             over"
        );
        assert_eq!(
            refusal(&of(None), Some(&layout(3, 4))).unwrap(),
            "checkpoint 7 in /cp/tasks/00003 is a checkpoint of the whole pipeline, not of a task"
        );
        assert_eq!(
            refusal(&of(Some(layout(3, 4))), None).unwrap(),
            "checkpoint 7 in /cp/tasks/00003 belongs to the task of partition 3, not to the whole \
             pipeline"
        );
    }

    #[test]
    fn checkpoints_of_another_lineage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = CheckpointSpec {
            dir: dir.path().to_path_buf(),
            s3: Default::default(),
            interval: Duration::from_secs(5),
            keep: 3,
            sync: false,
        };
        let (mut checkpoints, _) = Checkpoints::open(&spec, "p", None, None).unwrap();
        let lineage = checkpoints.lineage().to_owned();
        checkpoints
            .save(&Checkpoint {
                lineage: "00112233aabbccdd".to_owned(),
                ..Checkpoint::new("p")
            })
            .unwrap();
        drop(checkpoints);
        let error = format!(
            "{:#}",
            Checkpoints::open(&spec, "p", None, None).unwrap_err()
        );
        assert_eq!(
            error,
            format!(
                "checkpoint 0 in {} is of lineage 00112233aabbccdd, but the directory's LINEAGE is {lineage}: \
                 files of two checkpoint directories were mixed; restore the directory whole",
                dir.path().display()
            )
        );
    }
}
