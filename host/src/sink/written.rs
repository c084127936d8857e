//! What the broker already has: the sink half of exactly-once without
//! Kafka transactions.
//!
//! In `exactly-once` mode every record a pipeline produces (outputs and dead
//! letters alike) carries the header `sluice.eos: <pipeline>/<epoch>/<seq>`,
//! where `seq` numbers the batch's records in the (deterministic) order they
//! are produced. A checkpoint records each sink partition's end offset at a
//! moment when nothing of a later epoch had been produced yet. After a
//! crash, the records of this pipeline from those offsets to the current
//! end are exactly those of the epochs re-executed from the epoch log that
//! reached the broker; their ids are read back and those records are not
//! produced again.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::kafka_headers::message_headers;
use crate::spec::KafkaSpec;

/// The header carrying a record's exactly-once id.
pub const EOS_HEADER: &str = "sluice.eos";

const TIMEOUT: Duration = Duration::from_secs(10);
/// How long the read-back may take before the recovery gives up.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(120);

/// A sink partition's end offset at a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Writes the exactly-once id of record `seq` of `epoch` into `id`
/// (replacing what it held: one buffer serves every record of a batch).
pub fn write_eos_id(id: &mut String, pipeline: &str, epoch: u64, seq: u32) {
    use std::fmt::Write;
    id.clear();
    let _ = write!(id, "{pipeline}/{epoch}/{seq}");
}

fn parse_eos_id(pipeline: &str, value: &[u8]) -> Option<(u64, u32)> {
    let s = std::str::from_utf8(value).ok()?;
    let rest = s.strip_prefix(pipeline)?.strip_prefix('/')?;
    let (epoch, seq) = rest.split_once('/')?;
    Some((epoch.parse().ok()?, seq.parse().ok()?))
}

fn consumer(kafka: &KafkaSpec) -> Result<BaseConsumer, KafkaError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", "sluice-read-back")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    for (k, v) in &kafka.consumer {
        config.set(k, v.to_string());
    }
    config.create()
}

/// The end offset of every partition of `topics`, now.
pub fn end_offsets(kafka: &KafkaSpec, topics: &[&str]) -> Result<Vec<SinkPosition>, KafkaError> {
    let consumer = consumer(kafka)?;
    let mut positions = Vec::new();
    for &topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (_, high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?;
                positions.push(SinkPosition {
                    topic: topic.to_owned(),
                    partition: p.id(),
                    offset: high,
                });
            }
        }
    }
    Ok(positions)
}

/// The ids (epoch, seq) of this pipeline's records written after
/// `positions`, up to the current end of each partition.
pub fn written_since(
    kafka: &KafkaSpec,
    pipeline: &str,
    positions: &[SinkPosition],
) -> Result<HashSet<(u64, u32)>, KafkaError> {
    let consumer = consumer(kafka)?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = std::collections::HashMap::new();
    for p in positions {
        let (_, high) = consumer.fetch_watermarks(&p.topic, p.partition, TIMEOUT)?;
        if high > p.offset {
            tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.offset))?;
            remaining.insert((p.topic.clone(), p.partition), high);
        }
    }
    let mut ids = HashSet::new();
    if remaining.is_empty() {
        return Ok(ids);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + READ_BACK_TIMEOUT;
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(KafkaError::Global(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        // Header names as bytes: a name that is not UTF-8 is no reason to fail.
        for (name, value) in message_headers(&m) {
            if name == EOS_HEADER.as_bytes()
                && let Some(id) = value.and_then(|v| parse_eos_id(pipeline, v))
            {
                ids.insert(id);
            }
        }
        let key = (m.topic().to_owned(), m.partition());
        if remaining
            .get(&key)
            .is_some_and(|&end| m.offset() + 1 >= end)
        {
            remaining.remove(&key);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_roundtrip_and_other_pipelines_are_ignored() {
        let mut id = "left over".to_owned();
        write_eos_id(&mut id, "orders", 12, 7);
        assert_eq!(id, "orders/12/7");
        assert_eq!(parse_eos_id("orders", id.as_bytes()), Some((12, 7)));
        assert_eq!(parse_eos_id("order", id.as_bytes()), None);
        assert_eq!(parse_eos_id("orders-2", id.as_bytes()), None);
        assert_eq!(parse_eos_id("orders", b"orders/x/1"), None);
    }
}
