//! Sluice host runtime.
//!
//! Modules follow the path of a record:
//! [`source`] (Kafka consumer) -> [`batch`] (columnar micro-batches) ->
//! [`runtime`] (sandboxed Wasm transforms) -> [`window`] (event-time windows
//! and their state) -> [`pipeline`] (the chain, routing, dead letters,
//! offsets, recovery) -> [`sink`] (Kafka producer, Parquet files), with
//! [`checkpoint`] (durable checkpoints and the epoch log) beside them,
//! [`spec`] describing a pipeline, and [`api`] (HTTP control plane) and
//! [`cli`] at the edge.

pub mod api;
pub mod batch;
pub mod checkpoint;
pub mod cli;
pub mod kafka_headers;
pub mod pipeline;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod spec;
pub mod window;
