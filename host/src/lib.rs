//! Sluice host runtime.
//!
//! Modules follow the path of a record:
//! [`source`] (Kafka consumer) -> [`batch`] (columnar micro-batches) ->
//! [`runtime`] (sandboxed Wasm transforms) -> [`window`] (event-time windows
//! and their state) -> [`pipeline`] (the chain, routing, dead letters,
//! offsets, recovery) -> [`sink`] (Kafka producer, Parquet files), with
//! [`checkpoint`] (durable checkpoints and the epoch log) beside them and
//! [`spec`] describing a pipeline. Above one pipeline, `sluice serve` keeps
//! [`registry`] (the module store: numbered versions of components) and
//! [`manager`] (many pipelines: their documents, restarts, pauses and
//! swaps), served over HTTP by [`api`] (routes, auth, rendering only);
//! [`cli`] is the edge. Dependencies point down: cli -> api -> manager ->
//! registry -> pipeline -> the rest.

pub mod api;
pub mod batch;
pub mod checkpoint;
pub mod cli;
pub mod join;
pub mod kafka_headers;
pub mod manager;
pub mod pipeline;
pub mod registry;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod spec;
pub mod window;
