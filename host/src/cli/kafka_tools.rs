//! Small Kafka tools for development, demos and tests: create topics,
//! produce a sample event stream, read a topic back. Production pipelines do
//! not use them.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Creates topics (idempotently: an existing topic is fine).
pub fn create_topics(brokers: &str, topics: &[&str], partitions: i32) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    crate::sink::create_topics(&config, topics, partitions, Some(1))
}

/// Deletes topics (a topic that does not exist is an error).
pub fn delete_topics(brokers: &str, topics: &[&str]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("cannot create admin client")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = rt.block_on(admin.delete_topics(
        topics,
        &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
    ))?;
    for r in results {
        if let Err((topic, code)) = r {
            bail!("cannot delete topic `{topic}`: {code}");
        }
    }
    Ok(())
}

/// One event of the sample stream: the tutorials' event shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleEvent {
    pub event_id: String,
    pub user_id: String,
    pub event_type: &'static str,
    pub timestamp: String,
    pub amount: f64,
}

/// Options of the sample stream.
#[derive(Debug, Clone, Copy)]
pub struct SampleOptions {
    pub count: u64,
    pub users: u64,
    /// Every n-th record is malformed JSON (0: none).
    pub malformed_every: u64,
    /// Event time of the first event, in ms since the epoch; events are 100 ms apart.
    pub start_ms: i64,
    pub seed: u64,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            count: 1000,
            users: 50,
            malformed_every: 0,
            start_ms: 1_767_225_600_000,
            seed: 7,
        }
    }
}

const EVENT_TYPES: [&str; 10] = [
    "click",
    "view",
    "click",
    "heartbeat",
    "purchase",
    "view",
    "heartbeat",
    "click",
    "error",
    "view",
];

/// The `n`-th record of the sample stream: `(key, value)`. Deterministic.
pub fn sample_record(o: &SampleOptions, n: u64) -> (String, Vec<u8>) {
    let mut x = (n + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ o.seed;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    let user = format!("u{}", x % o.users.max(1));
    if o.malformed_every > 0 && (n + 1).is_multiple_of(o.malformed_every) {
        return (
            user,
            format!("{{\"event_id\": \"e{n}\", broken").into_bytes(),
        );
    }
    let ts = UNIX_EPOCH + Duration::from_millis((o.start_ms + n as i64 * 100) as u64);
    let event = SampleEvent {
        event_id: format!("e{n}"),
        user_id: user.clone(),
        event_type: EVENT_TYPES[((x >> 8) % EVENT_TYPES.len() as u64) as usize],
        timestamp: humantime::format_rfc3339_millis(ts).to_string(),
        amount: ((x >> 16) % 10_000) as f64 / 100.0,
    };
    (user, serde_json::to_vec(&event).expect("plain struct"))
}

/// Produces the sample stream to `topic`, with record timestamps equal to
/// event times. Returns how many records were acknowledged.
pub fn produce_sample(brokers: &str, topic: &str, o: &SampleOptions) -> anyhow::Result<u64> {
    produce_sample_range(brokers, topic, o, 0..o.count)
}

/// Produces events `range` of the sample stream (see [`produce_sample`]).
pub fn produce_sample_range(
    brokers: &str,
    topic: &str,
    o: &SampleOptions,
    range: std::ops::Range<u64>,
) -> anyhow::Result<u64> {
    produce(
        brokers,
        topic,
        range.map(|n| {
            let (k, v) = sample_record(o, n);
            (
                Some(k.into_bytes()),
                Some(v),
                Some(o.start_ms + n as i64 * 100),
                vec![],
            )
        }),
    )
}

/// Produces `count` readings of `strategy` (the tutorial's data), keyed
/// by sensor (`sensor-0` .. `sensor-{sensors - 1}`, in turn), values
/// `{"strategy","value","ts"}` with `value` in 0..100 and `ts` (RFC 3339)
/// `every_ms` apart from [`SampleOptions::default`]'s start, plus
/// `offset_s` seconds (so that two strategies' readings interleave).
pub fn produce_readings(
    brokers: &str,
    topic: &str,
    strategy: &str,
    count: u64,
    sensors: u64,
    offset_s: i64,
    every_ms: i64,
) -> anyhow::Result<u64> {
    let start = SampleOptions::default().start_ms;
    produce(
        brokers,
        topic,
        (0..count).map(|n| {
            let ms = start + n as i64 * every_ms + offset_s * 1000;
            let ts = humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64),
            );
            let value = (n * 37 + strategy.len() as u64 * 11) % 100;
            let json = format!(r#"{{"strategy":"{strategy}","value":{value},"ts":"{ts}"}}"#);
            (
                Some(format!("sensor-{}", n % sensors.max(1)).into_bytes()),
                Some(json.into_bytes()),
                Some(ms),
                vec![],
            )
        }),
    )
}

/// A record to produce: key, value, timestamp, headers.
pub type Produce = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<i64>,
    Vec<(String, Vec<u8>)>,
);

/// Produces records and waits until all are acknowledged.
pub fn produce(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = Produce>,
) -> anyhow::Result<u64> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let mut count = 0;
    for (key, value, ts, headers) in records {
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if let Some(k) = &key {
            r = r.key(k.as_slice());
        }
        if let Some(v) = &value {
            r = r.payload(v.as_slice());
        }
        if let Some(ts) = ts {
            r = r.timestamp(ts);
        }
        if !headers.is_empty() {
            let mut h = OwnedHeaders::new();
            for (name, value) in &headers {
                h = h.insert(Header {
                    key: name,
                    value: Some(value),
                });
            }
            r = r.headers(h);
        }
        loop {
            match producer.send(r) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    r = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e).context("produce failed"),
            }
        }
        count += 1;
    }
    producer
        .flush(Duration::from_secs(60))
        .context("flush failed")?;
    Ok(count)
}

/// A record read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub timestamp: Option<i64>,
    pub headers: BTreeMap<String, String>,
}

/// Reads every record of `topic` that exists now, partition by partition
/// (in offset order within each). Text is decoded lossily.
pub fn read_topic(brokers: &str, topic: &str) -> anyhow::Result<Vec<TopicRecord>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sluice-tail")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let Some(t) = metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
    else {
        bail!("topic `{topic}` does not exist");
    };
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?;
        if high > low {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
            ends.insert(p.id(), high);
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            bail!(
                "timed out reading `{topic}`; still waiting for partitions {:?}",
                ends.keys()
            );
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        if ends
            .get(&m.partition())
            .is_some_and(|&end| m.offset() + 1 >= end)
        {
            ends.remove(&m.partition());
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        out.push(TopicRecord {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(text),
            value: m.payload().map(text),
            timestamp: m.timestamp().to_millis(),
            // Names as bytes, decoded lossily like the rest: rdkafka's own
            // accessor panics on a name that is not UTF-8.
            headers: crate::kafka_headers::message_headers(&m)
                .map(|(n, v)| (text(n), v.map(text).unwrap_or_default()))
                .collect(),
        });
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}

pub use crate::pipeline::now_ms;
