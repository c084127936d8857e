//! The Kafka sink: one idempotent producer for every output and the
//! dead-letter topic, with per-batch delivery tracking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::quarantine::{Quarantine, Quarantined};
use super::size::{DEFAULT_MESSAGE_MAX_BYTES, TooLarge, wire_size};
use crate::kafka_headers;
use crate::spec::KafkaSpec;

/// How long the producer's start waits for an answer to one metadata
/// request.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Producer defaults tuned for throughput with idempotent, acknowledged
/// writes; any of them can be overridden in `kafka.producer`. The queue is
/// bounded (256 MiB, a million records): a burst of large outputs waits
/// for deliveries instead of growing host memory.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "5"),
    ("batch.size", "1000000"),
    ("compression.type", "lz4"),
    ("queue.buffering.max.messages", "1000000"),
    ("queue.buffering.max.kbytes", "262144"),
];

/// Deliveries of one batch: how many are still in flight, and the first
/// failure, if any.
#[derive(Debug, Default)]
pub struct BatchAck {
    pending: AtomicUsize,
    failure: Mutex<Option<String>>,
    done: Mutex<bool>,
    signal: Condvar,
}

impl BatchAck {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// An acknowledgement that stays open, whatever the deliveries, until
    /// [`Self::seal`]: for records queued by another thread.
    pub fn unsealed() -> Arc<Self> {
        let ack = Self::new();
        ack.started();
        ack
    }

    /// Every record is queued (or, with `failure`, could not be).
    pub fn seal(&self, failure: Option<String>) {
        self.finished(failure);
    }

    fn started(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    fn finished(&self, failure: Option<String>) {
        if let Some(f) = failure {
            self.failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(f);
        }
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.wake();
        }
    }

    fn wake(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.signal.notify_all();
    }

    /// Whether every record sent under this ack is acknowledged (or one
    /// failed): [`Self::wait`] would not block.
    pub fn is_done(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    /// Blocks until every record sent under this ack is acknowledged, or one
    /// failed for good (the producer retries transient errors itself).
    pub fn wait(&self) -> Result<(), String> {
        if self.pending.load(Ordering::Acquire) > 0 {
            let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
            while !*done && self.pending.load(Ordering::Acquire) > 0 {
                done = self
                    .signal
                    .wait_timeout(done, Duration::from_millis(100))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        }
        match self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

/// Per topic partition, the offset after the last record this producer
/// had acknowledged.
type Acked = Mutex<HashMap<String, HashMap<i32, i64>>>;

struct AckContext {
    acked: Arc<Acked>,
    pipeline: String,
    limit: usize,
    quarantine: Arc<Quarantine>,
}

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Arc<BatchAck>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        use rdkafka::Message;
        let m = match result {
            Ok(m) => m,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), m)) => {
                // The broker's limit is below the producer's: retrying cannot
                // help, and failing the batch would meet it again on every
                // restart. Skipped loudly instead.
                self.quarantine_refused(m);
                ack.finished(None);
                return;
            }
            Err((e, m)) => {
                ack.finished(Some(format!(
                    "delivery to {}[{}] failed: {e}",
                    m.topic(),
                    m.partition()
                )));
                return;
            }
        };
        {
            let mut acked = self.acked.lock().unwrap_or_else(|p| p.into_inner());
            // No allocation per record: the topic's entry exists after its first.
            let partitions = match acked.get_mut(m.topic()) {
                Some(p) => p,
                None => acked.entry(m.topic().to_owned()).or_default(),
            };
            let end = partitions.entry(m.partition()).or_insert(0);
            *end = (*end).max(m.offset() + 1);
        }
        ack.finished(None);
    }
}

impl AckContext {
    /// Quarantines a record the broker refused as too large: under its
    /// source coordinates when it is a dead letter (they are in its
    /// headers), else under the topic it was for.
    fn quarantine_refused(&self, m: &rdkafka::message::BorrowedMessage<'_>) {
        use rdkafka::Message;
        let headers: Vec<_> = kafka_headers::message_headers(m).collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name.as_bytes())
                .and_then(|(_, v)| std::str::from_utf8((*v)?).ok())
        };
        let reason = format!(
            "the broker refused it as too large (the producer's limit is {})",
            self.limit
        );
        let bytes = wire_size(
            m.key().map_or(0, <[u8]>::len),
            m.payload().map_or(0, <[u8]>::len),
            headers
                .iter()
                .map(|(n, v)| (n.len(), v.map_or(0, <[u8]>::len))),
        );
        let source = header("sluice.source.topic");
        self.quarantine.record(&Quarantined {
            pipeline: &self.pipeline,
            topic: source.unwrap_or(m.topic()),
            partition: source.and_then(|_| header("sluice.source.partition")?.parse().ok()),
            offset: source.and_then(|_| header("sluice.source.offset")?.parse().ok()),
            reason: &reason,
            bytes,
            limit: self.limit,
            key: m.key(),
            value: m.payload(),
        });
    }
}

/// Writes records to Kafka topics.
pub struct KafkaSink {
    producer: ThreadedProducer<AckContext>,
    acked: Arc<Acked>,
    /// The producer's `message.max.bytes`.
    limit: usize,
    quarantine: Arc<Quarantine>,
    /// Outputs dead-lettered for their size, so far.
    too_large: AtomicU64,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// A producer for `pipeline`, which skips into `quarantine` what can
    /// be neither delivered nor dead-lettered.
    pub fn new(
        kafka: &KafkaSpec,
        pipeline: &str,
        quarantine: Quarantine,
    ) -> Result<Self, KafkaError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &kafka.brokers);
        for (k, v) in PRODUCER_DEFAULTS {
            config.set(*k, *v);
        }
        for (k, v) in &kafka.producer {
            config.set(k, v.to_string());
        }
        let limit = kafka
            .producer
            .get("message.max.bytes")
            .and_then(|v| v.to_string().parse().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
        let acked = Arc::new(Acked::default());
        let quarantine = Arc::new(quarantine);
        Ok(Self {
            producer: config.create_with_context(AckContext {
                acked: acked.clone(),
                pipeline: pipeline.to_owned(),
                limit,
                quarantine: quarantine.clone(),
            })?,
            acked,
            limit,
            quarantine,
            too_large: AtomicU64::new(0),
        })
    }

    /// The largest record the producer sends (`message.max.bytes`), as
    /// [`wire_size`] counts.
    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn quarantine(&self) -> &Quarantine {
        &self.quarantine
    }

    /// Counts an output dead-lettered for its size.
    pub fn note_too_large(&self) {
        self.too_large.fetch_add(1, Ordering::Relaxed);
    }

    /// Outputs dead-lettered for their size so far.
    pub fn too_large(&self) -> u64 {
        self.too_large.load(Ordering::Relaxed)
    }

    /// Gets the producer going in the background, so that the first
    /// batch's records are not held waiting for it. An idempotent
    /// librdkafka producer delivers nothing before it has a producer id,
    /// which it asks for when a metadata answer arrives, else on a 500 ms
    /// timer once a broker is up: a new pipeline's first acknowledgements
    /// came 0.6-1 s after its start here. Two metadata requests for
    /// `topic` (the first can arrive before the connection is ready for
    /// the id) took that to ~0.15 s.
    pub fn start(self: &Arc<Self>, topic: &str) {
        let sink = Arc::downgrade(self);
        let topic = topic.to_owned();
        let started = std::thread::Builder::new()
            .name("sluice-producer-start".into())
            .spawn(move || {
                for _ in 0..2 {
                    let Some(sink) = sink.upgrade() else { return };
                    if let Err(e) = sink
                        .producer
                        .client()
                        .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
                    {
                        tracing::debug!(error = %e, "producer start: no metadata yet");
                    }
                }
            });
        if let Err(e) = started {
            tracing::debug!(error = %e, "producer start: no thread; the producer starts on its own");
        }
    }

    /// Per topic partition written to, the offset after the last record
    /// acknowledged so far: where the next record can be at the earliest.
    pub fn acknowledged_ends(&self) -> HashMap<(String, i32), i64> {
        let acked = self.acked.lock().unwrap_or_else(|p| p.into_inner());
        acked
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions
                    .iter()
                    .map(move |(&p, &end)| ((topic.clone(), p), end))
            })
            .collect()
    }

    /// Queues one record; its delivery is tracked by `ack`. Waits while the
    /// producer's queue is full. A record of `bytes` ([`wire_size`]) beyond
    /// the producer's limit is not queued: `Ok(Err(TooLarge))`.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &self,
        ack: &Arc<BatchAck>,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: Option<i64>,
        headers: Option<OwnedHeaders>,
        bytes: usize,
    ) -> Result<Result<(), TooLarge>, KafkaError> {
        let too_large = TooLarge {
            bytes,
            limit: self.limit,
        };
        if bytes > self.limit {
            return Ok(Err(too_large));
        }
        let mut record: BaseRecord<'_, [u8], [u8], Arc<BatchAck>> =
            BaseRecord::with_opaque_to(topic, ack.clone());
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        if let Some(ts) = timestamp {
            record = record.timestamp(ts);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        ack.started();
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(Ok(())),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                    back,
                )) => {
                    // librdkafka counted differently from `wire_size`: the same answer.
                    back.delivery_opaque.finished(None);
                    return Ok(Err(too_large));
                }
                Err((e, back)) => {
                    // The record never entered the queue: its opaque comes back with it.
                    back.delivery_opaque
                        .finished(Some(format!("cannot produce to {topic}: {e}")));
                    return Err(e);
                }
            }
        }
    }

    /// Waits for everything queued to be delivered (on shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

/// Builds headers from `(name, value)` pairs plus extra ones.
pub fn headers<'a>(
    existing: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
    extra: &[(&str, &[u8])],
) -> Option<OwnedHeaders> {
    if existing.len() == 0 && extra.is_empty() {
        return None;
    }
    let capacity = existing.len() + extra.len();
    // Names as bytes: a record's headers are written back exactly as read.
    let all = existing
        .map(|(n, v)| (n, Some(v)))
        .chain(extra.iter().map(|(n, v)| (n.as_bytes(), Some(*v))));
    Some(kafka_headers::build(all, capacity))
}

#[cfg(test)]
#[path = "kafka_tests.rs"]
mod tests;
