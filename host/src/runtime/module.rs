//! Loading a component: check it, compile it once, pre-instantiate it.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::bindings::{
    AGGREGATE_EXPORT, AggregateGuestPre, JOIN_EXPORT, JoinGuestPre, TRANSFORM_EXPORT,
    TransformGuestPre,
};
use super::engine::Runtime;
use super::sandbox::HostState;

/// Why a module cannot be loaded. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("not a WebAssembly binary (it does not start with `\\0asm`)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, but Sluice needs a component: build the guest with `cargo build --target wasm32-wasip2`"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error("compiling the module took longer than {0:?}; it is too large or too complex")]
    CompileTimeout(std::time::Duration),
    #[error(
        "too many modules are compiling at once (at most {concurrent}); none finished within {timeout:?}, try again later"
    )]
    TooManyCompiles {
        concurrent: usize,
        timeout: std::time::Duration,
    },
    #[error("cannot start a thread to compile the module: {0}")]
    CompileThread(String),
    #[error("the component needs imports Sluice does not provide: {0}")]
    UnsupportedImports(String),
    #[error(
        "the component implements none of `{TRANSFORM_EXPORT}`, `{AGGREGATE_EXPORT}` and `{JOIN_EXPORT}`: {0}"
    )]
    WrongWorld(String),
}

/// Which Sluice world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// A record transform (`transform-guest`).
    Transform,
    /// A windowed aggregate (`aggregate-guest`).
    Aggregate,
    /// A stream-stream join (`join-guest`).
    Join,
}

impl ModuleKind {
    /// What a module of this kind is, in words.
    pub fn described(self) -> &'static str {
        match self {
            Self::Transform => "a transform",
            Self::Aggregate => "an aggregate",
            Self::Join => "a join",
        }
    }
}

/// Why a transform instance could not be made from a module.
#[derive(Debug, thiserror::Error)]
pub enum InstantiateError {
    #[error("the transform rejected its configuration: {0}")]
    ConfigRejected(String),
    #[error("the transform failed while starting: {0}")]
    Trapped(String),
    #[error("this module is {actual}, but the step needs {expected}")]
    WrongKind {
        expected: &'static str,
        actual: &'static str,
    },
}

pub enum Pre {
    Transform(TransformGuestPre<HostState>),
    Aggregate(AggregateGuestPre<HostState>),
    Join(JoinGuestPre<HostState>),
}

/// A checked, compiled, pre-instantiated component. Cheap to clone.
#[derive(Clone)]
pub struct Module {
    inner: Arc<ModuleInner>,
}

struct ModuleInner {
    name: String,
    sha256: String,
    size: usize,
    runtime: Runtime,
    pre: Pre,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.inner.name)
            .field("sha256", &self.inner.sha256)
            .finish()
    }
}

impl Module {
    pub(super) fn new(runtime: &Runtime, name: &str, bytes: &[u8]) -> Result<Self, ModuleError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(ModuleError::NotWasm);
        }
        if wasmparser::Parser::is_core_wasm(bytes) {
            return Err(ModuleError::CoreModule);
        }
        let component = runtime.compiles.compile(&runtime.engine, bytes)?;
        let pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| ModuleError::UnsupportedImports(format!("{e:#}")))?;
        let pre = match TransformGuestPre::new(pre.clone()) {
            Ok(transform) => Pre::Transform(transform),
            Err(e) => match AggregateGuestPre::new(pre.clone()) {
                Ok(aggregate) => Pre::Aggregate(aggregate),
                Err(_) => match JoinGuestPre::new(pre) {
                    Ok(join) => Pre::Join(join),
                    Err(_) => return Err(ModuleError::WrongWorld(format!("{e:#}"))),
                },
            },
        };
        Ok(Self {
            inner: Arc::new(ModuleInner {
                name: name.to_owned(),
                sha256: hex::encode(Sha256::digest(bytes)),
                size: bytes.len(),
                runtime: runtime.clone(),
                pre,
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Hex SHA-256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    pub fn size(&self) -> usize {
        self.inner.size
    }

    pub(super) fn pre(&self) -> &Pre {
        &self.inner.pre
    }

    pub fn kind(&self) -> ModuleKind {
        match self.inner.pre {
            Pre::Transform(_) => ModuleKind::Transform,
            Pre::Aggregate(_) => ModuleKind::Aggregate,
            Pre::Join(_) => ModuleKind::Join,
        }
    }

    pub(super) fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }
}
