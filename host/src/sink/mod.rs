//! Sinks: where a batch's results go. Kafka topics report per batch when
//! everything they were given is durably acknowledged, because source
//! offsets are committed only after that; Parquet files become visible with
//! the checkpoint that lists them; PostgreSQL tables commit each batch in a
//! transaction (with its epoch, under exactly-once); Delta tables commit
//! at checkpoints (with the epoch as the `txn` version, under exactly-once).

mod delta;
mod kafka;
mod parquet;
mod partitioner;
mod postgres;
mod quarantine;
mod row;
mod size;
mod topics;
mod written;

pub use self::parquet::{FileRename, ParquetCommit, ParquetError, ParquetSink};
pub use delta::{DeltaError, DeltaSink, DeltaStats};
pub use kafka::{BatchAck, KafkaSink, PRODUCER_DEFAULTS, headers};
pub use partitioner::partition_for_key;
pub use postgres::{EpochKey, PostgresError, PostgresSink, PostgresStats};
pub use quarantine::{Quarantine, Quarantined};
pub use row::TableRecord;
pub use size::{TooLarge, wire_size};
pub use topics::{create_topics, ensure_topic};
pub use written::{
    EOS_HEADER, EosId, ReadBackError, SinkPosition, WINDOW_INPUT, end_offsets, write_eos_id,
    written_since,
};
