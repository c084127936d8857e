//! The engine and linker every module of a process shares.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine};

use super::bindings;
use super::compile::{CompileGate, CompileLimits};
use super::module::{Module, ModuleError};
use super::poll;
use super::sandbox::HostState;

/// How often the engine's epoch advances; deadlines are whole ticks.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Shared compilation and linking state. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    pub(super) engine: Engine,
    pub(super) linker: Arc<Linker<HostState>>,
    pub(super) compiles: Arc<CompileGate>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine and linker, and starts the epoch ticker thread (it
    /// stops when the last clone of the engine is dropped).
    pub fn new() -> anyhow::Result<Self> {
        Self::build(true)
    }

    /// A runtime whose compiled code has no deadline checks, so a guest that
    /// loops never returns. Only for measuring what enforcing deadlines
    /// costs (the runtime benchmark reports it); never for running pipelines.
    pub fn without_deadlines() -> anyhow::Result<Self> {
        Self::build(false)
    }

    fn build(deadlines: bool) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(deadlines);
        match wasmtime::Cache::new(wasmtime::CacheConfig::new()) {
            Ok(cache) => {
                config.cache(Some(cache));
            }
            Err(e) => tracing::debug!("compilation cache unavailable: {e:#}"),
        }
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
        poll::shadow_wasi_poll(&mut linker).map_err(anyhow::Error::from)?;
        bindings::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;

        if deadlines {
            let weak = engine.weak();
            std::thread::Builder::new()
                .name("sluice-epoch".into())
                .spawn(move || {
                    while let Some(engine) = weak.upgrade() {
                        engine.increment_epoch();
                        drop(engine);
                        std::thread::sleep(EPOCH_TICK);
                    }
                })?;
        }
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            compiles: CompileGate::process_wide(),
        })
    }

    /// The same runtime with other compile limits (a fresh set of compile
    /// slots); see [`CompileLimits`].
    pub fn with_compile_limits(mut self, limits: CompileLimits) -> Self {
        self.compiles = CompileGate::new(limits);
        self
    }

    /// Checks and compiles a component; see [`Module`].
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Module, ModuleError> {
        Module::new(self, name, bytes)
    }
}
