//! Sources: where records come from. A source fills [`crate::batch::Batch`]es
//! under the spec's batch trigger and says which offsets each batch covers,
//! so that they can be committed once the batch's results are durable.

mod kafka;
mod leave;
mod replay;

pub use kafka::{
    CommitMode, EndOffsets, GroupOffsets, KafkaSource, NextOffset, Rebalance, SourceBatch,
    SourceError, source_partitions,
};
pub use replay::{ReplayError, ReplaySource};

use rdkafka::Timestamp;
use rdkafka::message::Message;

use crate::batch::Batch;
use crate::kafka_headers::{AsBorrowedHeaders, message_headers};

/// Appends a consumed record to a batch: the one way source records enter
/// Sluice, so that a replayed batch is byte for byte the batch that ran.
/// Header names are kept as bytes (see [`crate::kafka_headers`]).
fn push_message<M: Message>(batch: &mut Batch, source: u16, m: &M)
where
    M::Headers: AsBorrowedHeaders,
{
    let timestamp = match m.timestamp() {
        Timestamp::NotAvailable => None,
        Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => Some(t),
    };
    batch
        .records
        .push(m.key(), m.payload(), timestamp, message_headers(m));
    batch.sources.push(source);
    batch.partitions.push(m.partition());
    batch.offsets.push(m.offset());
}
