//! The Wasm runtime: the only part of the host that knows wasmtime.
//!
//! A [`Runtime`] owns the engine (with an epoch ticker for deadlines) and the
//! linker (WASI with nothing granted, plus the `log` import). [`Runtime::load`]
//! checks and compiles a component once into a [`Module`], pre-instantiated.
//! `Transform::new` (or `Aggregator::new`, the same generic `Instance`
//! for the other world) makes a store with a memory cap, an instance, and
//! its `init` already run. `Transform::process` runs one
//! micro-batch in one call across the boundary and, when the guest traps,
//! runs out of time or memory, isolates the records responsible (see
//! `isolate.rs`) so that only they are dead-lettered.

mod aggregate;
mod bindings;
mod compile;
mod engine;
mod fold_isolate;
mod guest_output;
mod inspect;
mod instance;
mod isolate;
mod join;
mod module;
mod poll;
mod sandbox;

pub use aggregate::{Aggregator, CallError, Extracted};
pub use compile::CompileLimits;
pub use engine::Runtime;
pub use fold_isolate::BatchCalls;
pub use inspect::{InspectError, Inspection, component_exports, inspect};
pub use instance::{Fault, Transform, TransformStats};
pub use join::{JoinSide, Joiner, Keys as JoinKeys, Pairs};
pub use module::{InstantiateError, Module, ModuleError, ModuleKind};
pub use sandbox::Labels;
