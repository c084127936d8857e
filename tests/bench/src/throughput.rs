//! The throughput rows: a plain consume -> produce copy (the baseline), and
//! real pipelines run in-process until caught up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use sluice::pipeline::{self, RunOptions, Summary};
use sluice::runtime::Runtime;
use sluice::source::KafkaSource;
use sluice::spec::PipelineSpec;

/// The host sink's producer settings, so that the baseline produces the
/// way the host does.
pub const HOST_PRODUCER: &[(&str, &str)] = sluice::sink::PRODUCER_DEFAULTS;

/// Extra librdkafka properties, applied after the defaults.
pub type Properties = [(String, String)];

/// A producer context that counts deliveries and notes when every
/// `MARK_EVERY`-th one succeeded (for the steady-state rate).
#[derive(Debug, Default)]
pub struct Deliveries {
    pub failed: AtomicU64,
    done: AtomicU64,
    marks: Mutex<Timeline>,
}

const MARK_EVERY: u64 = 1000;

impl Deliveries {
    /// When deliveries succeeded: (time, deliveries so far), every
    /// `MARK_EVERY`.
    pub fn timeline(&self) -> Timeline {
        self.marks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if done.is_multiple_of(MARK_EVERY) {
            self.marks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((Instant::now(), done));
        }
    }
}

/// Progress of a row: (time, records done so far), ascending.
pub type Timeline = Vec<(Instant, u64)>;

/// The rate between the moments `from` and `to` (fractions of `total`) of
/// the records were done: the row's throughput without its start and end.
pub fn steady_rate(timeline: &[(Instant, u64)], total: u64, from: f64, to: f64) -> Option<f64> {
    let at = |f: f64| {
        timeline
            .iter()
            .find(|(_, n)| *n as f64 >= f * total as f64)
            .copied()
    };
    let ((t0, n0), (t1, n1)) = (at(from)?, at(to)?);
    let seconds = t1.duration_since(t0).as_secs_f64();
    (seconds > 0.0 && n1 > n0).then(|| (n1 - n0) as f64 / seconds)
}

/// Records, from the host's per-batch `batch processed` debug event, when
/// each batch was processed and how many records it had. The host keeps
/// only a few batches awaiting acknowledgement (`MAX_IN_FLIGHT` in
/// `pipeline/runner.rs`), so this follows the acknowledged progress within
/// those few batches.
#[derive(Debug, Clone, Default)]
pub struct BatchProgress(Arc<Mutex<Timeline>>);

impl BatchProgress {
    /// The timeline so far (cumulative records); starts a new one.
    pub fn take(&self) -> Timeline {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for BatchProgress {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            batch: bool,
            records: Option<u64>,
        }
        impl tracing::field::Visit for Fields {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "records" {
                    self.records = Some(value);
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.batch = format!("{value:?}") == "batch processed";
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let (true, Some(records)) = (fields.batch, fields.records) {
            let mut timeline = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let done = timeline.last().map_or(0, |&(_, n)| n) + records;
            timeline.push((Instant::now(), done));
        }
    }
}

/// Sends one record, waiting while the producer's queue is full.
pub fn send(
    producer: &ThreadedProducer<Deliveries>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e).context("produce failed"),
        }
    }
}

/// What the baseline copied.
#[derive(Debug, Clone)]
pub struct Copied {
    pub records: u64,
    pub bytes: u64,
    /// From the start of the row to the first record read (client start,
    /// metadata, group join, first fetch).
    pub first_record_s: f64,
    /// Acknowledged deliveries over time.
    pub timeline: Timeline,
}

/// The baseline's producer, with the host's settings, started ahead of its
/// row: it delivers one record to `output` first. An idempotent librdkafka
/// producer cannot deliver until it has a producer id, which it requests
/// only once it has a connection to a broker (not the bootstrap one), on a
/// 500 ms timer: about 1 s after it is created, here. The baseline leaves
/// that start out so that its deliveries flow from its first record; the
/// host's own start is in the pipeline rows (not in their steady rate).
pub fn raw_producer(
    brokers: &str,
    output: &str,
    extra: &Properties,
) -> anyhow::Result<ThreadedProducer<Deliveries>> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in HOST_PRODUCER {
        config.set(*k, *v);
    }
    for (k, v) in extra {
        config.set(k, v);
    }
    let producer: ThreadedProducer<Deliveries> =
        config.create_with_context(Deliveries::default())?;
    send(&producer, BaseRecord::to(output).payload(&b"warm-up"[..]))?;
    producer
        .flush(Duration::from_secs(30))
        .context("the baseline's producer did not start")?;
    Ok(producer)
}

/// Copies every record of `spec`'s source to `output`: the host's own
/// batched reader (`sluice::source::KafkaSource`, librdkafka's batch
/// consume, the consumer settings a pipeline gets) into a plain
/// `ThreadedProducer` (key, value and timestamp; no Wasm, no state, no
/// exactly-once, nothing committed), then waits for every delivery. The
/// fastest honest copy on the same broker: what a pipeline adds is the
/// difference.
pub fn raw_passthrough(
    producer: &ThreadedProducer<Deliveries>,
    spec: &PipelineSpec,
    output: &str,
) -> anyhow::Result<Copied> {
    let started = Instant::now();
    let mut source = KafkaSource::new(spec, true, None, None)?;
    let (stop, wake) = (AtomicBool::new(false), AtomicBool::new(false));
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut first_record_s = None;
    while let Some(polled) = source.next_batch(&stop, &wake)? {
        if polled.batch.is_empty() {
            continue;
        }
        first_record_s.get_or_insert_with(|| started.elapsed().as_secs_f64());
        for record in polled.batch.records.iter() {
            records += 1;
            let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(output);
            if let Some(k) = record.key {
                bytes += k.len() as u64;
                r = r.key(k);
            }
            if let Some(v) = record.value {
                bytes += v.len() as u64;
                r = r.payload(v);
            }
            if let Some(ts) = record.timestamp {
                r = r.timestamp(ts);
            }
            send(producer, r)?;
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("cannot flush the producer")?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} deliveries failed");
    }
    Ok(Copied {
        records,
        bytes,
        first_record_s: first_record_s.unwrap_or_default(),
        timeline: producer.context().timeline(),
    })
}

/// What a run of the host's own start costs before it reads: the Wasm
/// runtime and the steps' modules, compiled (or loaded from wasmtime's
/// compilation cache) and initialised. A first, untimed load fills the
/// cache, so the timed one is what every pipeline row pays.
pub fn wasm_start_s(spec: &PipelineSpec) -> anyhow::Result<f64> {
    let mut elapsed = 0.0;
    for _ in 0..2 {
        let started = Instant::now();
        let runtime = Runtime::new()?;
        let steps = pipeline::load_steps(spec, &runtime)?;
        elapsed = started.elapsed().as_secs_f64();
        drop(steps);
    }
    Ok(elapsed)
}

/// Runs a pipeline in-process with `--until-caught-up`; returns what it did.
pub fn run_pipeline(spec: &PipelineSpec) -> anyhow::Result<Summary> {
    pipeline::run(
        spec,
        RunOptions {
            until_caught_up: true,
        },
        &AtomicBool::new(false),
    )
    .with_context(|| format!("pipeline `{}` failed", spec.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_leaves_out_the_start_and_the_end() {
        let t = Instant::now();
        let s = |ms: u64| t + Duration::from_millis(ms);
        // A slow start (1 s for the first 100 records), then 1000 records/s.
        let timeline: Timeline = vec![
            (s(1000), 100),
            (s(1100), 200),
            (s(1500), 600),
            (s(1900), 1000),
        ];
        let rate = steady_rate(&timeline, 1000, 0.1, 0.9).unwrap();
        assert!((rate - 1000.0).abs() < 1e-6, "{rate}");
        // From the 20% mark (200) to the 100% mark (1000).
        let rate = steady_rate(&timeline, 1000, 0.2, 1.0).unwrap();
        assert!((rate - 1000.0).abs() < 1e-6, "{rate}");
        assert_eq!(steady_rate(&timeline, 2000, 0.1, 0.9), None);
        assert_eq!(steady_rate(&[], 1000, 0.1, 0.9), None);
        assert_eq!(steady_rate(&timeline[..1], 1000, 0.1, 0.1), None);
    }

    #[test]
    fn batch_progress_follows_the_hosts_batch_events() {
        use tracing_subscriber::layer::SubscriberExt;
        let progress = BatchProgress::default();
        let subscriber = tracing_subscriber::registry().with(progress.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(epoch = 1, records = 1000usize, "batch processed");
            tracing::debug!(records = 7usize, "something else");
            tracing::debug!(epoch = 2, records = 500usize, "batch processed");
        });
        let done: Vec<u64> = progress.take().iter().map(|&(_, n)| n).collect();
        assert_eq!(done, [1000, 1500]);
        assert!(progress.take().is_empty());
    }
}
