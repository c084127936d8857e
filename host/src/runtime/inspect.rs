//! What a component is, before anything runs it for a pipeline: its world
//! and its exports, and whether it starts with a given configuration. The
//! module store records the answer with each uploaded version.

use super::engine::Runtime;
use super::module::{InstantiateError, ModuleError, ModuleKind};
use super::sandbox::Labels;
use super::{Aggregator, Joiner, Transform};
use crate::spec::Limits;

/// A component that passed [`inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The Sluice world it implements.
    pub kind: ModuleKind,
    /// Its top-level exports (e.g. `sluice:transform/transform@0.1.0`).
    pub exports: Vec<String>,
}

/// Why a component did not pass [`inspect`].
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Not a component Sluice can load (not wasm, another world, ...).
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// It loads, but its `init` rejected the configuration or trapped.
    #[error(transparent)]
    Instantiate(#[from] InstantiateError),
}

/// Checks a component as a pipeline step would load it: compiled, of a
/// Sluice world, and started (its `init` run with `config`) within
/// `limits`; `name` labels its log lines (pipeline `(upload)`). Blocks for
/// the compile: call it off the async runtime.
pub fn inspect(
    runtime: &Runtime,
    name: &str,
    bytes: &[u8],
    limits: Limits,
    config: Vec<(String, String)>,
) -> Result<Inspection, InspectError> {
    let module = runtime.load(name, bytes)?;
    let labels = Labels {
        pipeline: "(upload)".into(),
        step: name.into(),
        module: name.into(),
    };
    match module.kind() {
        ModuleKind::Transform => drop(Transform::new(&module, labels, limits, config)?),
        ModuleKind::Aggregate => drop(Aggregator::new(&module, labels, limits, config)?),
        ModuleKind::Join => drop(Joiner::new(&module, labels, limits, config)?),
    }
    Ok(Inspection {
        kind: module.kind(),
        exports: component_exports(bytes),
    })
}

/// The names a component exports at its top level (not those of the
/// modules and components nested in it). Bytes that do not parse end the
/// list where they start.
pub fn component_exports(bytes: &[u8]) -> Vec<String> {
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else { break };
        match payload {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentExportSection(reader) if depth == 0 => {
                exports.extend(reader.into_iter().flatten().map(|e| e.name.name.to_owned()));
            }
            _ => {}
        }
    }
    exports
}
