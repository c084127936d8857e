//! What a pipeline checkpoint holds, and when one is due.
//!
//! A checkpoint is taken between two batches, once every record of the
//! batches before it is acknowledged by the broker and nothing of a later
//! batch has been produced. It holds, for epoch (batch number) `n`:
//! - per source partition, the offset after the last record of batches
//!   `..= n` (where the next run resumes);
//! - per sink partition, the broker's end offset (exactly-once recovery
//!   reads back from there what later epochs already wrote);
//! - the aggregate step's windows, watermarks and accumulators;
//! - per Parquet output, the files closed for this checkpoint, which become
//!   visible only once the checkpoint is durable.
//!
//! Everything is keyed by topic name and partition, not by the spec's
//! order, so that a checkpoint stays meaningful when a spec is reordered,
//! and state per source partition can later move between processes.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::Epoch;
use crate::checkpoint::{CheckpointError, CheckpointStore, EpochLog, LocalDirStore};
use crate::sink::{ParquetCommit, SinkPosition};
use crate::spec::CheckpointSpec;
use crate::window::EngineSnapshot;

/// Bumped when the layout of [`Checkpoint`] changes incompatibly.
const FORMAT: u32 = 1;

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
        }
    }

    fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a checkpoint always serializes")
    }

    fn decode(bytes: &[u8]) -> anyhow::Result<Self> {
        let c: Self = postcard::from_bytes(bytes).context("cannot decode the checkpoint")?;
        anyhow::ensure!(
            c.format == FORMAT,
            "checkpoint format {} is not supported (this Sluice reads {FORMAT})",
            c.format
        );
        Ok(c)
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

/// The checkpoint store, the epoch log and the interval.
#[derive(Debug)]
pub struct Checkpoints {
    store: LocalDirStore,
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
    /// exist but none is valid.
    pub fn open(spec: &CheckpointSpec, pipeline: &str) -> anyhow::Result<(Self, Recovered)> {
        let store = LocalDirStore::open(&spec.dir, spec.keep).with_context(|| {
            format!(
                "cannot open the checkpoint directory {}",
                spec.dir.display()
            )
        })?;
        let checkpoint = match store.load_latest().context(
            "refusing to start: no checkpoint can be used (restore one, or remove the directory to start over)",
        )? {
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
                Some(c)
            }
        };
        let (log, entries) =
            EpochLog::open(Path::new(&spec.dir), spec.sync).context("cannot open the epoch log")?;
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
            store,
            log: LogWriter::spawn(log),
            interval: spec.interval,
            last: Instant::now(),
            keep: spec.keep,
            kept: after.into_iter().collect(),
        };
        Ok((checkpoints, Recovered { checkpoint, epochs }))
    }

    pub fn due(&self) -> bool {
        self.last.elapsed() >= self.interval
    }

    /// Starts writing epoch `n`'s descriptor (and fsyncing it) on the log's
    /// own thread, so that the write overlaps the batch's Wasm work;
    /// [`Self::wait_logged`] must return before any of its output is
    /// produced.
    pub fn log(&mut self, n: u64, epoch: &Epoch) -> anyhow::Result<()> {
        self.log.append(n, epoch.encode())
    }

    /// Waits until the last epoch given to [`Self::log`] is durable.
    pub fn wait_logged(&mut self) -> anyhow::Result<()> {
        self.log.wait()
    }

    /// Saves `checkpoint` durably; the epoch log is then trimmed.
    pub fn save(&mut self, checkpoint: &Checkpoint) -> anyhow::Result<()> {
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

/// The epoch log on a thread of its own: an fsync costs milliseconds on
/// common disks, as long as a batch's Wasm work, so the two overlap.
/// Requests are handled in order; at most one append is outstanding.
#[derive(Debug)]
struct LogWriter {
    requests: Option<mpsc::Sender<LogRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The answer to the outstanding append, if any.
    pending: Option<(u64, mpsc::Receiver<Result<(), CheckpointError>>)>,
}

enum LogRequest {
    Append(u64, Vec<u8>, mpsc::Sender<Result<(), CheckpointError>>),
    Truncate(u64, mpsc::Sender<Result<(), CheckpointError>>),
}

impl LogWriter {
    fn spawn(mut log: EpochLog) -> Self {
        let (requests, inbox) = mpsc::channel::<LogRequest>();
        let thread = std::thread::Builder::new()
            .name("sluice-epoch-log".into())
            .spawn(move || {
                for request in inbox {
                    // A requester that went away no longer needs the answer.
                    let _ = match request {
                        LogRequest::Append(n, bytes, reply) => reply.send(log.append(n, &bytes)),
                        LogRequest::Truncate(n, reply) => reply.send(log.truncate_through(n)),
                    };
                }
            })
            .expect("cannot start the epoch log thread");
        Self {
            requests: Some(requests),
            thread: Some(thread),
            pending: None,
        }
    }

    fn send(&self, request: LogRequest) -> anyhow::Result<()> {
        self.requests
            .as_ref()
            .and_then(|r| r.send(request).ok())
            .context("the epoch log thread has stopped")
    }

    fn append(&mut self, n: u64, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.wait()?;
        let (reply, answer) = mpsc::channel();
        self.send(LogRequest::Append(n, bytes, reply))?;
        self.pending = Some((n, answer));
        Ok(())
    }

    fn wait(&mut self) -> anyhow::Result<()> {
        let Some((n, answer)) = self.pending.take() else {
            return Ok(());
        };
        answer
            .recv()
            .context("the epoch log thread has stopped")?
            .with_context(|| format!("cannot log epoch {n}"))
    }

    fn truncate_through(&mut self, through: u64) -> anyhow::Result<()> {
        self.wait()?;
        let (reply, answer) = mpsc::channel();
        self.send(LogRequest::Truncate(through, reply))?;
        answer
            .recv()
            .context("the epoch log thread has stopped")?
            .context("cannot trim the epoch log")
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Crashes the process here when `SLUICE_FAILPOINT` names this point, for
/// crash tests: `after-outputs` (outputs acknowledged, checkpoint not yet
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
