//! The sink stage on a thread of its own: it hands each batch's outputs and
//! dead letters to the Kafka producer while the run loop fetches and
//! transforms the next batch.
//!
//! Batches are sent in the order they are handed over, by one thread, so
//! records reach the producer in the same order as when the run loop sent
//! them itself (exactly-once numbers records by that order). A batch's
//! acknowledgement stays open until all its records are queued, so waiting
//! for it also waits for this stage.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::batch::Batch;
use crate::checkpoint::Durable;
use crate::pipeline::ChainOutput;
use crate::pipeline::checkpoint::failpoint;
use crate::pipeline::deliver::{self, Eos, Rejected, Routing};
use crate::sink::{BatchAck, KafkaSink};

/// Batches handed over and not yet sent, at most (the run loop waits
/// beyond that).
const QUEUE: usize = 2;

/// One batch to send.
pub(super) struct Job {
    pub batch: Batch,
    pub out: ChainOutput,
    pub rejected: Vec<Rejected>,
    pub routing: Arc<Routing>,
    /// Exactly-once: the batch's epoch.
    pub epoch: Option<u64>,
    /// Opened with [`BatchAck::unsealed`]; sealed once every record is queued.
    pub ack: Arc<BatchAck>,
    /// Exactly-once: the epoch log, which must hold the epoch before any of
    /// its records leaves.
    pub logged: Option<Arc<Durable>>,
}

pub(super) struct SendStage {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SendStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendStage").finish_non_exhaustive()
    }
}

impl SendStage {
    pub fn start(sink: Arc<KafkaSink>, pipeline: &str) -> anyhow::Result<Self> {
        let (jobs, queue) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name(format!("send-{pipeline}"))
            .spawn(move || run(&sink, &queue))?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Hands a batch over (waits while the stage is `QUEUE` batches behind).
    pub fn send(&self, job: Job) -> anyhow::Result<()> {
        let ack = job.ack.clone();
        let jobs = self.jobs.as_ref().expect("open until dropped");
        if jobs.send(job).is_err() {
            ack.seal(Some("the send stage stopped".to_owned()));
            anyhow::bail!("the send stage stopped");
        }
        Ok(())
    }
}

impl Drop for SendStage {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(sink: &KafkaSink, queue: &Receiver<Job>) {
    for job in queue {
        if let (Some(logged), Some(epoch)) = (&job.logged, job.epoch)
            && let Err(e) = logged.wait_for(epoch)
        {
            job.ack.seal(Some(format!("{e:#}")));
            continue;
        }
        if job.epoch.is_some() {
            // Crash tests: the epoch is logged, none of its records sent.
            failpoint("before-outputs");
        }
        if let Some(Err(fenced)) = job.routing.fence.as_ref().map(|f| f.check_lease()) {
            job.ack.seal(Some(fenced.to_string()));
            continue;
        }
        let eos = job.epoch.map(|epoch| Eos {
            epoch,
            written: None,
        });
        // A panic must not leave the acknowledgement open for ever.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            deliver::deliver(
                sink,
                &job.ack,
                &job.routing,
                &job.batch,
                &job.out,
                &job.rejected,
                eos,
            )
        }));
        if let Ok(Ok(delivered)) = &result {
            // When the records were handed to the producer (the fencing
            // test reads it).
            tracing::debug!(
                epoch = job.epoch,
                records = delivered.produced,
                queued_at_ms = crate::pipeline::now_ms(),
                fence = job.routing.fence.as_ref().map(|f| f.describe()),
                "batch queued"
            );
        }
        job.ack.seal(match result {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("cannot queue records for Kafka: {e}")),
            Err(_) => Some("the send stage panicked".to_owned()),
        });
    }
}
