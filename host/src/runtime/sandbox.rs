//! What a guest can reach: the store's data. No filesystem, network,
//! environment or arguments; standard output and error go to the host's log;
//! linear memory is capped by a limiter.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{Level, LogHost, TypesHost};
pub use super::guest_output::GuestOutput;
use super::guest_output::{Budget, Stream};

/// Labels a guest's log lines carry.
#[derive(Debug, Clone)]
pub struct Labels {
    pub pipeline: Arc<str>,
    pub step: Arc<str>,
    pub module: Arc<str>,
}

/// The data of a transform's `Store`.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    labels: Labels,
    /// The end of what the guest wrote to stderr, for trap reasons (a Rust
    /// guest's panic message is written there just before it traps).
    pub stderr: GuestOutput,
    stdout: GuestOutput,
    /// What the `log` import may still write in this call.
    log_budget: Budget,
    /// When the current call must end: waiting in `wasi:io/poll` stops here.
    pub deadline: Instant,
}

impl HostState {
    pub fn new(labels: Labels, memory_limit: usize) -> Self {
        let stdout = GuestOutput::new(labels.clone(), Stream::Stdout);
        let stderr = GuestOutput::new(labels.clone(), Stream::Stderr);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_limit),
            labels,
            stderr,
            stdout,
            log_budget: Budget::default(),
            deadline: Instant::now(),
        }
    }

    pub(super) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Before each call into the guest: reports what the last call wrote
    /// over its output budget and renews the budget.
    pub fn begin_call(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.stdout.begin_call();
        self.stderr.begin_call();
        self.log_budget.end_call(&self.labels, "logged");
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl TypesHost for HostState {}

impl LogHost for HostState {
    fn log(&mut self, level: Level, message: String) {
        if !self.log_budget.admit(message.len()) {
            return;
        }
        let Labels {
            pipeline,
            step,
            module,
        } = &self.labels;
        let (pipeline, step, module) = (&**pipeline, &**step, &**module);
        match level {
            Level::Trace => {
                tracing::trace!(target: "sluice::guest", pipeline, step, module, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "sluice::guest", pipeline, step, module, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "sluice::guest", pipeline, step, module, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "sluice::guest", pipeline, step, module, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "sluice::guest", pipeline, step, module, "{message}")
            }
        }
    }
}

/// Caps what a store may hold: its linear memories together (a component
/// has several), its tables, instances and memories. Growing memory past
/// the cap traps (rather than failing the `memory.grow`), and the flag lets
/// the host name the reason.
pub struct MemoryLimiter {
    limit: usize,
    /// The bytes of all the store's linear memories.
    total: usize,
    /// The elements of all the store's tables.
    table_elements: usize,
    pub exceeded: bool,
}

impl MemoryLimiter {
    /// The cap on all the store's linear memories together, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Most core instances, tables and memories one store may create: a
/// component built by `wasm32-wasip2` has a handful of each.
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 8;
/// Most table elements, all tables of a store together.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl MemoryLimiter {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            total: 0,
            table_elements: 0,
            exceeded: false,
        }
    }
}

/// The error behind a trap caused by the memory cap.
#[derive(Debug, thiserror::Error)]
#[error("guest memory would grow to {desired} bytes, over its limit of {limit} bytes")]
pub struct MemoryLimitExceeded {
    pub desired: usize,
    pub limit: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = (self.total - current.min(self.total)).saturating_add(desired);
        if total > self.limit {
            self.exceeded = true;
            return Err(MemoryLimitExceeded {
                desired: total,
                limit: self.limit,
            }
            .into());
        }
        self.total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total =
            (self.table_elements - current.min(self.table_elements)).saturating_add(desired);
        if total > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_cap_is_for_all_memories_of_a_store_together() {
        let mut l = MemoryLimiter::new(1 << 20);
        assert!(l.memory_growing(0, 600 << 10, None).unwrap());
        assert!(l.memory_growing(600 << 10, 700 << 10, None).unwrap());
        let e = l.memory_growing(0, 400 << 10, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "guest memory would grow to 1126400 bytes, over its limit of 1048576 bytes"
        );
        assert_eq!((l.instances(), l.tables(), l.memories()), (64, 64, 8));
    }

    #[test]
    fn table_elements_are_capped_for_all_tables_together() {
        let mut l = MemoryLimiter::new(1 << 20);
        assert!(l.table_growing(0, 600_000, None).unwrap());
        assert!(!l.table_growing(0, 600_000, None).unwrap());
        assert!(l.table_growing(0, 400_000, None).unwrap());
    }

    #[test]
    fn limiter_traps_past_the_cap_and_remembers_it() {
        let mut l = MemoryLimiter::new(1 << 20);
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!l.exceeded);
        let e = l.memory_growing(1 << 20, 2 << 20, None).unwrap_err();
        assert!(l.exceeded);
        assert_eq!(
            e.to_string(),
            "guest memory would grow to 2097152 bytes, over its limit of 1048576 bytes"
        );
    }
}
