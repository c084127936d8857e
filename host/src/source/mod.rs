//! Sources: where records come from. A source fills [`crate::batch::Batch`]es
//! under the spec's batch trigger and says which offsets each batch covers,
//! so that they can be committed once the batch's results are durable.

mod kafka;

pub use kafka::{KafkaSource, NextOffset, SourceBatch, SourceError};
