//! What a guest can reach: the store's data. No filesystem, network,
//! environment or arguments; standard output and error go to the host's log;
//! linear memory is capped by a limiter.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{Level, LogHost, TypesHost};

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
        let skipped = std::mem::take(&mut self.log_budget).skipped;
        if skipped.lines > 0 {
            let Labels {
                pipeline,
                step,
                module,
            } = &self.labels;
            tracing::warn!(
                target: "sluice::guest",
                pipeline = &**pipeline,
                step = &**step,
                module = &**module,
                "guest logged {} more lines ({} bytes) in one call; not logged",
                skipped.lines,
                skipped.bytes
            );
        }
    }
}

/// Most bytes of guest output (each of stdout, stderr and the `log`
/// import) logged per call; the rest is counted and reported once.
pub const OUTPUT_BYTES_PER_CALL: usize = 64 * 1024;
/// Most lines of guest output (each stream) logged per call.
pub const OUTPUT_LINES_PER_CALL: usize = 256;

/// What one stream of guest output has logged, or skipped, in this call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Budget {
    logged: Volume,
    skipped: Volume,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Volume {
    lines: usize,
    bytes: usize,
}

impl Budget {
    /// Counts a line of `len` bytes; whether it may be logged.
    fn admit(&mut self, len: usize) -> bool {
        let within = self.logged.lines < OUTPUT_LINES_PER_CALL
            && self.logged.bytes + len <= OUTPUT_BYTES_PER_CALL;
        let volume = if within {
            &mut self.logged
        } else {
            &mut self.skipped
        };
        volume.lines += 1;
        volume.bytes += len;
        within
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

#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// A guest's stdout or stderr: complete lines go to the host log; the last
/// few KiB of stderr are kept to explain a trap.
#[derive(Clone)]
pub struct GuestOutput {
    labels: Labels,
    stream: Stream,
    state: Arc<Mutex<OutputState>>,
}

#[derive(Default)]
struct OutputState {
    line: Vec<u8>,
    tail: Vec<u8>,
    budget: Budget,
}

/// A longer line is logged in pieces.
const MAX_LINE: usize = 16 * 1024;
const TAIL: usize = 4 * 1024;

impl GuestOutput {
    fn new(labels: Labels, stream: Stream) -> Self {
        Self {
            labels,
            stream,
            state: Arc::default(),
        }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(self.stream, Stream::Stderr) {
            state.tail.extend_from_slice(bytes);
            if state.tail.len() > TAIL {
                let cut = state.tail.len() - TAIL;
                state.tail.drain(..cut);
            }
        }
        for &b in bytes {
            if b == b'\n' || state.line.len() >= MAX_LINE {
                let line = std::mem::take(&mut state.line);
                if state.budget.admit(line.len()) {
                    self.emit(&line);
                }
                if b == b'\n' {
                    continue;
                }
            }
            state.line.push(b);
        }
    }

    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let Labels {
            pipeline,
            step,
            module,
        } = &self.labels;
        let (pipeline, step, module) = (&**pipeline, &**step, &**module);
        match self.stream {
            Stream::Stdout => {
                tracing::info!(target: "sluice::guest::stdout", pipeline, step, module, "{text}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "sluice::guest::stderr", pipeline, step, module, "{text}")
            }
        }
    }

    /// The guest's panic message, if the end of stderr holds one, as
    /// `panicked at src/lib.rs:10:5: message`.
    pub fn take_panic_message(&self) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let tail = String::from_utf8_lossy(&std::mem::take(&mut state.tail)).into_owned();
        let at = tail.rfind("panicked at ")?;
        let panic = &tail[at..];
        // std writes "panicked at FILE:LINE:COL:\nMESSAGE\nnote: ..."
        let mut lines = panic.lines();
        let location = lines.next()?.trim_end_matches(':');
        let message: Vec<&str> = lines.take_while(|l| !l.starts_with("note: ")).collect();
        Some(format!("{location}: {}", message.join(" ").trim()))
    }

    /// Before a new call: forgets the stderr tail, reports what the last
    /// call wrote over its budget, and renews the budget.
    fn begin_call(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.tail.clear();
        let skipped = std::mem::take(&mut state.budget).skipped;
        drop(state);
        if skipped.lines > 0 {
            let stream = match self.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            let Labels {
                pipeline,
                step,
                module,
            } = &self.labels;
            tracing::warn!(
                target: "sluice::guest",
                pipeline = &**pipeline,
                step = &**step,
                module = &**module,
                "guest wrote {} more lines ({} bytes) to {stream} in one call; not logged",
                skipped.lines,
                skipped.bytes
            );
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    /// Writes go straight to the log, synchronously: a panic message must be
    /// recorded before the trap that follows it is classified.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        Labels {
            pipeline: "p".into(),
            step: "s".into(),
            module: "m".into(),
        }
    }

    #[test]
    fn panic_message_is_extracted_from_stderr_tail() {
        let out = GuestOutput::new(labels(), Stream::Stderr);
        out.write_bytes(b"some log\nthread '<unnamed>' panicked at src/lib.rs:12:9:\npoisoned ");
        out.write_bytes(b"record e42\nnote: run with `RUST_BACKTRACE=1` to display a backtrace\n");
        assert_eq!(
            out.take_panic_message().as_deref(),
            Some("panicked at src/lib.rs:12:9: poisoned record e42")
        );
        assert_eq!(out.take_panic_message(), None, "the tail is consumed");
    }

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
    fn output_over_the_budget_is_counted_not_logged() {
        let mut budget = Budget::default();
        for _ in 0..OUTPUT_LINES_PER_CALL {
            assert!(budget.admit(10));
        }
        assert!(!budget.admit(10), "one line too many");
        let mut budget = Budget::default();
        assert!(budget.admit(OUTPUT_BYTES_PER_CALL - 1));
        assert!(!budget.admit(2));
        assert!(budget.admit(1), "a line that still fits");
        assert_eq!(
            budget.logged,
            Volume {
                lines: 2,
                bytes: OUTPUT_BYTES_PER_CALL
            }
        );
        assert_eq!(budget.skipped, Volume { lines: 1, bytes: 2 });
    }

    #[test]
    fn a_flood_of_guest_output_renews_its_budget_each_call() {
        let out = GuestOutput::new(labels(), Stream::Stdout);
        for _ in 0..1000 {
            out.write_bytes(b"flood\n");
        }
        let budget = out.state.lock().unwrap().budget;
        assert_eq!(budget.logged.lines, OUTPUT_LINES_PER_CALL);
        assert_eq!(budget.skipped.lines, 1000 - OUTPUT_LINES_PER_CALL);
        out.begin_call();
        assert_eq!(out.state.lock().unwrap().budget, Budget::default());
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
