//! Sinks: where a batch's results go. Kafka topics for now; each sink reports
//! per batch when everything it was given is durably acknowledged, because
//! source offsets are committed only after that.

mod kafka;

pub use kafka::{BatchAck, KafkaSink, headers};
