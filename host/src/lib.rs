//! Sluice host runtime.
//!
//! Modules follow the path of a record:
//! [`source`] (Kafka consumer) -> [`batch`] (columnar micro-batches) ->
//! [`runtime`] (sandboxed Wasm transforms) -> [`pipeline`] (the chain, routing,
//! dead letters, offsets) -> [`sink`] (Kafka producer), with [`spec`] describing
//! a pipeline and [`cli`] at the edge.

pub mod batch;
pub mod checkpoint;
pub mod cli;
pub mod pipeline;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod spec;
pub mod window;
