//! What the broker already has: the sink half of exactly-once without
//! Kafka transactions.
//!
//! In `exactly-once` mode every record a pipeline produces (outputs and dead
//! letters alike) carries the header `sluice.eos: <lineage>/<epoch>/<input>.<k>`:
//! the checkpoint directory's random lineage id, the epoch, the position of
//! the source record it came from in the epoch's batch (`w` for window
//! results) and its index among the records of that input. So a record
//! whose fate differs on a re-execution (a deadline that fired once and
//! not again) changes only its own ids. A checkpoint records each sink
//! partition's end offset at a moment when nothing of a later epoch had
//! been produced yet. After a crash, the records of this lineage from those
//! offsets (from the beginning, for a partition added since) to the current
//! end are exactly those of the epochs re-executed from the epoch log that
//! reached the broker; their ids are read back and those records are not
//! produced again. If retention already removed some of them, the recovery
//! is refused: the ids it needs are gone.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use thiserror::Error;

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

/// Which record of an epoch an exactly-once id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EosId {
    pub epoch: u64,
    /// Position of the source record in the epoch's batch; [`WINDOW_INPUT`]
    /// for records made from window state.
    pub input: u32,
    /// Index among the records of that input, in the order they are sent.
    pub index: u32,
}

/// [`EosId::input`] of a record made from window state (written `w`).
pub const WINDOW_INPUT: u32 = u32::MAX;

/// Writes the exactly-once id of `eos` under `lineage` into `id`
/// (replacing what it held: one buffer serves every record of a batch).
pub fn write_eos_id(id: &mut String, lineage: &str, eos: EosId) {
    use std::fmt::Write;
    id.clear();
    let _ = write!(id, "{lineage}/{}/", eos.epoch);
    let _ = match eos.input {
        WINDOW_INPUT => write!(id, "w.{}", eos.index),
        input => write!(id, "{input}.{}", eos.index),
    };
}

fn parse_eos_id(lineage: &str, value: &[u8]) -> Option<EosId> {
    let s = std::str::from_utf8(value).ok()?;
    let rest = s.strip_prefix(lineage)?.strip_prefix('/')?;
    let (epoch, seq) = rest.split_once('/')?;
    let (input, index) = seq.split_once('.')?;
    let input = match input {
        "w" => WINDOW_INPUT,
        n => n.parse().ok().filter(|&n| n != WINDOW_INPUT)?,
    };
    Some(EosId {
        epoch: epoch.parse().ok()?,
        input,
        index: index.parse().ok()?,
    })
}

/// Why the read-back cannot be done.
#[derive(Debug, Error)]
pub enum ReadBackError {
    /// Retention (or a delete) removed records the recovery must see.
    #[error(
        "refusing to recover: sink partition {topic}/{partition} starts at offset {low} now, \
         but the records from offset {from} on must be read back to know what the epochs to \
         re-execute already wrote (retention removed them); re-executing would duplicate records. \
         Remove the checkpoint directory to start over from the group's committed offsets"
    )]
    Gone {
        topic: String,
        partition: i32,
        from: i64,
        low: i64,
    },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// One sink partition as the broker has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermarks {
    pub topic: String,
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

/// What to read back: offsets `from .. to` of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRange {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

/// Plans the read-back: every current partition, from its checkpointed end
/// (or from 0 for a partition the checkpoint does not know: all its
/// records were written after it) to its current end. Refused if a range
/// starts below the partition's low watermark.
pub fn plan_read_back(
    checkpointed: &[SinkPosition],
    now: &[Watermarks],
) -> Result<Vec<ReadRange>, ReadBackError> {
    let known: HashMap<(&str, i32), i64> = checkpointed
        .iter()
        .map(|p| ((p.topic.as_str(), p.partition), p.offset))
        .collect();
    let mut ranges = Vec::new();
    for w in now {
        let from = known
            .get(&(w.topic.as_str(), w.partition))
            .copied()
            .unwrap_or(0);
        if w.low > from {
            return Err(ReadBackError::Gone {
                topic: w.topic.clone(),
                partition: w.partition,
                from,
                low: w.low,
            });
        }
        if w.high > from {
            ranges.push(ReadRange {
                topic: w.topic.clone(),
                partition: w.partition,
                from,
                to: w.high,
            });
        }
    }
    Ok(ranges)
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
    // Reading from an offset retention removed meanwhile must fail the
    // recovery, not jump to an end and miss ids.
    config.set("auto.offset.reset", "error");
    config.create()
}

/// The watermarks of every partition of `topics`, now.
fn watermarks(consumer: &BaseConsumer, topics: &[&str]) -> Result<Vec<Watermarks>, KafkaError> {
    let mut now = Vec::new();
    for &topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?;
                now.push(Watermarks {
                    topic: topic.to_owned(),
                    partition: p.id(),
                    low,
                    high,
                });
            }
        }
    }
    Ok(now)
}

/// The end offset of every partition of `topics`, now.
pub fn end_offsets(kafka: &KafkaSpec, topics: &[&str]) -> Result<Vec<SinkPosition>, KafkaError> {
    let consumer = consumer(kafka)?;
    Ok(watermarks(&consumer, topics)?
        .into_iter()
        .map(|w| SinkPosition {
            topic: w.topic,
            partition: w.partition,
            offset: w.high,
        })
        .collect())
}

/// The ids of this lineage's records written after `positions`, up to the
/// current end of every partition of `topics`.
pub fn written_since(
    kafka: &KafkaSpec,
    lineage: &str,
    topics: &[&str],
    positions: &[SinkPosition],
) -> Result<HashSet<EosId>, ReadBackError> {
    let consumer = consumer(kafka)?;
    let ranges = plan_read_back(positions, &watermarks(&consumer, topics)?)?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = HashMap::new();
    for r in ranges {
        tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.from))?;
        remaining.insert((r.topic, r.partition), r.to);
    }
    let mut ids = HashSet::new();
    if remaining.is_empty() {
        return Ok(ids);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + READ_BACK_TIMEOUT;
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(
                KafkaError::Global(rdkafka::types::RDKafkaErrorCode::OperationTimedOut).into(),
            );
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        // Header names as bytes: a name that is not UTF-8 is no reason to fail.
        for (name, value) in message_headers(&m) {
            if name == EOS_HEADER.as_bytes()
                && let Some(id) = value.and_then(|v| parse_eos_id(lineage, v))
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
    fn ids_roundtrip_and_other_lineages_are_ignored() {
        let mut id = "left over".to_owned();
        let eos = EosId {
            epoch: 12,
            input: 3,
            index: 1,
        };
        write_eos_id(&mut id, "00aa11bb22cc33dd", eos);
        assert_eq!(id, "00aa11bb22cc33dd/12/3.1");
        assert_eq!(parse_eos_id("00aa11bb22cc33dd", id.as_bytes()), Some(eos));
        assert_eq!(parse_eos_id("00aa11bb22cc33de", id.as_bytes()), None);
        assert_eq!(parse_eos_id("00aa11bb22cc33d", id.as_bytes()), None);
        let window = EosId {
            epoch: 4,
            input: WINDOW_INPUT,
            index: 0,
        };
        write_eos_id(&mut id, "l", window);
        assert_eq!(id, "l/4/w.0");
        assert_eq!(parse_eos_id("l", id.as_bytes()), Some(window));
        // The old form (`<pipeline>/<epoch>/<seq>`) and junk are not ids.
        assert_eq!(parse_eos_id("orders", b"orders/12/7"), None);
        assert_eq!(parse_eos_id("l", b"l/x/1.0"), None);
        assert_eq!(parse_eos_id("l", b"l/1/4294967295.0"), None);
    }

    fn at(topic: &str, partition: i32, offset: i64) -> SinkPosition {
        SinkPosition {
            topic: topic.to_owned(),
            partition,
            offset,
        }
    }

    fn now(topic: &str, partition: i32, low: i64, high: i64) -> Watermarks {
        Watermarks {
            topic: topic.to_owned(),
            partition,
            low,
            high,
        }
    }

    fn range(topic: &str, partition: i32, from: i64, to: i64) -> ReadRange {
        ReadRange {
            topic: topic.to_owned(),
            partition,
            from,
            to,
        }
    }

    #[test]
    fn the_read_back_covers_every_current_partition_new_ones_from_the_beginning() {
        let checkpointed = [at("out", 0, 10), at("out", 1, 5), at("dlq", 0, 0)];
        let current = [
            now("out", 0, 0, 14),
            now("out", 1, 2, 5),
            // Added after the checkpoint.
            now("out", 2, 0, 3),
            now("out", 3, 0, 0),
            now("dlq", 0, 0, 1),
        ];
        assert_eq!(
            plan_read_back(&checkpointed, &current).unwrap(),
            vec![
                range("out", 0, 10, 14),
                range("out", 2, 0, 3),
                range("dlq", 0, 0, 1)
            ]
        );
    }

    #[test]
    fn records_removed_past_the_checkpoint_refuse_the_recovery() {
        let error = plan_read_back(&[at("out", 0, 10)], &[now("out", 0, 12, 20)]).unwrap_err();
        assert!(
            matches!(&error, ReadBackError::Gone { topic, partition: 0, from: 10, low: 12 } if topic == "out"),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("refusing to recover: sink partition out/0 starts at offset 12 now, but the records from offset 10 on must be read back"),
            "{error}"
        );
        // A partition added since whose first records are gone, too.
        let error = plan_read_back(&[], &[now("out", 1, 3, 3)]).unwrap_err();
        assert!(
            matches!(
                error,
                ReadBackError::Gone {
                    partition: 1,
                    from: 0,
                    low: 3,
                    ..
                }
            ),
            "{error:?}"
        );
        // At the low watermark exactly is fine.
        assert_eq!(
            plan_read_back(&[at("out", 0, 12)], &[now("out", 0, 12, 20)]).unwrap(),
            vec![range("out", 0, 12, 20)]
        );
    }
}
