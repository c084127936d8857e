//! Re-reading logged batches exactly: after a crash, the batches recorded
//! in the epoch log since the last checkpoint are rebuilt record for record,
//! in their original order, from their offset ranges.
//!
//! A consumer outside any group is assigned every partition the epochs
//! touch, at the first logged offset; records it reads ahead of the epoch
//! being rebuilt wait in a per-partition buffer for the next one.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use super::SourceError;
use crate::batch::{Batch, Layout};
use crate::spec::PipelineSpec;

/// How long to wait for a logged record before concluding it is gone.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a logged batch cannot be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "{topic}[{partition}] offsets {from}..{to}: expected {expected} records, found {found} (deleted by retention or compaction since the batch ran?)"
    )]
    Changed {
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
        expected: usize,
        found: usize,
    },
    #[error("{topic}[{partition}]: no record up to offset {to} within {REPLAY_TIMEOUT:?}")]
    Timeout {
        topic: String,
        partition: i32,
        to: i64,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
}

pub struct ReplaySource {
    consumer: BaseConsumer,
    topics: Vec<String>,
    /// Records read, per partition, not yet used.
    buffers: HashMap<(u16, i32), VecDeque<OwnedMessage>>,
    /// Per partition, the offset after the last record read.
    read_to: HashMap<(u16, i32), i64>,
}

impl std::fmt::Debug for ReplaySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplaySource")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl ReplaySource {
    /// A reader for the batches `layouts` describe (in order), whose
    /// ranges index the pipeline's source topics.
    pub fn new<'a>(
        spec: &PipelineSpec,
        layouts: impl IntoIterator<Item = &'a Layout>,
    ) -> Result<Self, SourceError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &spec.kafka.brokers)
            .set("group.id", format!("{}-replay", spec.group_id()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "error");
        for (k, v) in &spec.kafka.consumer {
            config.set(k, v.to_string());
        }
        let consumer: BaseConsumer = config.create()?;
        let mut first: HashMap<(u16, i32), i64> = HashMap::new();
        for r in layouts.into_iter().flat_map(|l| &l.ranges) {
            let from = first.entry((r.source, r.partition)).or_insert(r.from);
            *from = (*from).min(r.from);
        }
        let mut tpl = TopicPartitionList::new();
        for (&(source, partition), &from) in &first {
            tpl.add_partition_offset(
                &spec.source.topics[source as usize],
                partition,
                Offset::Offset(from),
            )?;
        }
        consumer.assign(&tpl)?;
        Ok(Self {
            consumer,
            topics: spec.source.topics.clone(),
            buffers: HashMap::new(),
            read_to: first,
        })
    }

    /// Rebuilds the batch `layout` describes.
    pub fn read(&mut self, layout: &Layout) -> Result<Batch, ReplayError> {
        let deadline = Instant::now() + REPLAY_TIMEOUT;
        for r in &layout.ranges {
            while self
                .read_to
                .get(&(r.source, r.partition))
                .copied()
                .unwrap_or(i64::MIN)
                < r.to
            {
                if Instant::now() >= deadline {
                    return Err(ReplayError::Timeout {
                        topic: self.topics[r.source as usize].clone(),
                        partition: r.partition,
                        to: r.to,
                    });
                }
                self.poll_one()?;
            }
        }
        // Each range's records, in offset order.
        let mut taken: Vec<VecDeque<OwnedMessage>> = Vec::with_capacity(layout.ranges.len());
        for (i, r) in layout.ranges.iter().enumerate() {
            let buffer = self.buffers.entry((r.source, r.partition)).or_default();
            while buffer.front().is_some_and(|m| m.offset() < r.from) {
                buffer.pop_front();
            }
            let n = buffer.iter().take_while(|m| m.offset() < r.to).count();
            let records: VecDeque<OwnedMessage> = buffer.drain(..n).collect();
            if records.len() != layout.count(i) {
                return Err(ReplayError::Changed {
                    topic: self.topics[r.source as usize].clone(),
                    partition: r.partition,
                    from: r.from,
                    to: r.to,
                    expected: layout.count(i),
                    found: records.len(),
                });
            }
            taken.push(records);
        }
        let mut batch = Batch::with_capacity(layout.len(), 0);
        for &(r, count) in &layout.runs {
            let range = layout.ranges[r as usize];
            for m in taken[r as usize].drain(..count as usize) {
                super::push_message(&mut batch, range.source, &m);
            }
        }
        Ok(batch)
    }

    fn poll_one(&mut self) -> Result<(), SourceError> {
        match self.consumer.poll(Duration::from_millis(100)) {
            None => Ok(()),
            Some(Ok(m)) => {
                let Some(source) = self.topics.iter().position(|t| t == m.topic()) else {
                    return Ok(());
                };
                let key = (source as u16, m.partition());
                self.read_to.insert(key, m.offset() + 1);
                self.buffers.entry(key).or_default().push_back(m.detach());
                Ok(())
            }
            Some(Err(e)) => Err(e.into()),
        }
    }
}
