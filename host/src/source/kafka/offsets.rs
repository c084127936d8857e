//! Where a source's partitions start and end: positions from a checkpoint,
//! the group's committed offsets or the spec's (or a join side's) start;
//! the topics' partitions; the end offsets `--until-caught-up` drains to;
//! and the group's view for a run of several members.

use std::collections::HashMap;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

use super::{EndOffsets, KafkaSource, METADATA_TIMEOUT, SourceContext, SourceError};
use crate::spec::{PipelineSpec, StartFrom};

/// `partitions` at `positions` where known, else at the group's committed
/// offset (else the spec's `start`).
pub(super) fn positioned(
    topics: &[String],
    partitions: &[(u16, i32)],
    positions: Option<&HashMap<(u16, i32), i64>>,
) -> KafkaResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for &(source, partition) in partitions {
        let offset = positions
            .and_then(|p| p.get(&(source, partition)))
            .map_or(Offset::Stored, |&o| Offset::Offset(o));
        tpl.add_partition_offset(&topics[source as usize], partition, offset)?;
    }
    Ok(tpl)
}

/// `partitions` at `positions` where known, else at the group's committed
/// offset, else where their topic's join side starts.
pub(super) fn started(
    consumer: &BaseConsumer<SourceContext>,
    spec: &PipelineSpec,
    partitions: &[(u16, i32)],
    positions: Option<&HashMap<(u16, i32), i64>>,
) -> Result<TopicPartitionList, SourceError> {
    let topics = &spec.source.topics;
    let mut asked = TopicPartitionList::new();
    for &(source, partition) in partitions {
        asked.add_partition(&topics[source as usize], partition);
    }
    let committed = consumer.committed_offsets(asked, METADATA_TIMEOUT)?;
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for &(source, partition) in partitions {
        let topic = &topics[source as usize];
        let known = positions.and_then(|p| p.get(&(source, partition)).copied());
        let offset = match known {
            Some(o) => Offset::Offset(o),
            None => match committed
                .find_partition(topic, partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => Offset::Offset(o),
                _ => match spec.start_of(source) {
                    StartFrom::Earliest => Offset::Beginning,
                    StartFrom::Latest => Offset::End,
                },
            },
        };
        tpl.add_partition_offset(topic, partition, offset)?;
    }
    Ok(tpl)
}

/// Checks that every topic the pipeline touches exists; the source topics'
/// partitions, as (index into the source topics, partition).
pub(super) fn check_topics(
    consumer: &BaseConsumer<SourceContext>,
    spec: &PipelineSpec,
) -> Result<Vec<(u16, i32)>, SourceError> {
    let mut partitions = Vec::new();
    let mut topics: Vec<&str> = spec.source.topics.iter().map(String::as_str).collect();
    topics.extend(spec.sink_topics());
    for topic in topics {
        let ids = topic_partitions(consumer, &spec.kafka.brokers, topic)?;
        if let Some(index) = spec.source.topics.iter().position(|s| s == topic) {
            partitions.extend(ids.into_iter().map(|p| (index as u16, p)));
        }
    }
    Ok(partitions)
}

/// The partition ids of `topic`; an error if it does not exist.
pub(super) fn topic_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    brokers: &str,
    topic: &str,
) -> Result<Vec<i32>, SourceError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|error| SourceError::Unreachable {
            brokers: brokers.to_owned(),
            error,
        })?;
    metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .ok_or_else(|| SourceError::MissingTopic(topic.to_owned()))
}

/// Every partition of the pipeline's source topics, as (index into the
/// source topics, partition), sorted.
pub fn source_partitions(spec: &PipelineSpec) -> Result<Vec<(u16, i32)>, SourceError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &spec.kafka.brokers)
        .create()?;
    let mut partitions = Vec::new();
    for (index, topic) in spec.source.topics.iter().enumerate() {
        let ids = topic_partitions(&consumer, &spec.kafka.brokers, topic)?;
        partitions.extend(ids.into_iter().map(|p| (index as u16, p)));
    }
    partitions.sort_unstable();
    Ok(partitions)
}

/// The consumer group's view of a pipeline's source, for a run of several
/// members that drains until caught up: where to drain to, and how far the
/// group (whichever member) has committed.
pub struct GroupOffsets {
    consumer: BaseConsumer<SourceContext>,
    topics: Vec<String>,
    partitions: Vec<(u16, i32)>,
}

impl GroupOffsets {
    pub fn new(spec: &PipelineSpec) -> Result<Self, SourceError> {
        let ends = EndOffsets::default();
        let consumer: BaseConsumer<SourceContext> = KafkaSource::config(spec, false)
            .create_with_context(SourceContext::new(spec, ends, false))?;
        let partitions = check_topics(&consumer, spec)?;
        Ok(Self {
            consumer,
            topics: spec.source.topics.clone(),
            partitions,
        })
    }

    /// Per partition not yet drained, its end offset now (see
    /// `--until-caught-up`).
    pub fn targets(&self, start: StartFrom) -> Result<HashMap<(u16, i32), i64>, SourceError> {
        end_offsets(
            &self.consumer,
            &self.topics,
            &self.partitions,
            |_| start,
            None,
        )
    }

    /// The group's committed offsets, of the partitions that have one.
    pub fn committed(&self) -> Result<HashMap<(u16, i32), i64>, SourceError> {
        let mut tpl = TopicPartitionList::new();
        for &(source, partition) in &self.partitions {
            tpl.add_partition(&self.topics[source as usize], partition);
        }
        let committed = self.consumer.committed_offsets(tpl, METADATA_TIMEOUT)?;
        Ok(self
            .partitions
            .iter()
            .filter_map(|&(source, partition)| {
                match committed
                    .find_partition(&self.topics[source as usize], partition)?
                    .offset()
                {
                    Offset::Offset(o) => Some(((source, partition), o)),
                    _ => None,
                }
            })
            .collect())
    }
}

/// For each partition, the end offset to drain to, leaving out partitions
/// whose committed (or starting) position is already there.
pub(super) fn end_offsets(
    consumer: &BaseConsumer<SourceContext>,
    topics: &[String],
    partitions: &[(u16, i32)],
    start: impl Fn(u16) -> StartFrom,
    positions: Option<&HashMap<(u16, i32), i64>>,
) -> Result<HashMap<(u16, i32), i64>, SourceError> {
    let mut tpl = TopicPartitionList::new();
    for &(source, partition) in partitions {
        tpl.add_partition(&topics[source as usize], partition);
    }
    let committed = consumer.committed_offsets(tpl, METADATA_TIMEOUT)?;
    let mut remaining = HashMap::new();
    for &(source, partition) in partitions {
        let topic = &topics[source as usize];
        let (low, high) = consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
        let known = positions.and_then(|p| p.get(&(source, partition)).copied());
        let committed = known.map(Offset::Offset).or_else(|| {
            committed
                .find_partition(topic, partition)
                .map(|e| e.offset())
        });
        let position = match committed {
            Some(Offset::Offset(o)) => o.max(low),
            _ => match start(source) {
                StartFrom::Earliest => low,
                StartFrom::Latest => high,
            },
        };
        if position < high {
            remaining.insert((source, partition), high);
        }
    }
    tracing::info!(
        partitions = remaining.len(),
        "draining until caught up with the end offsets seen at start"
    );
    Ok(remaining)
}
