//! What a guest can reach: the store's data. No filesystem, network,
//! environment or arguments; standard output and error go to the host's log;
//! linear memory is capped by a limiter.

use std::sync::{Arc, Mutex};

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
}

impl HostState {
    pub fn new(labels: Labels, memory_limit: usize) -> Self {
        let stdout = GuestOutput::new(labels.clone(), Stream::Stdout);
        let stderr = GuestOutput::new(labels.clone(), Stream::Stderr);
        let wasi = WasiCtx::builder()
            .stdout(stdout)
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: memory_limit,
                exceeded: false,
            },
            labels,
            stderr,
        }
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

/// Caps a guest's linear memory. Growing past the cap traps (rather than
/// failing the `memory.grow`), and the flag lets the host name the reason.
pub struct MemoryLimiter {
    limit: usize,
    pub exceeded: bool,
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
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            return Err(MemoryLimitExceeded {
                desired,
                limit: self.limit,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
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
                self.emit(&line);
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

    /// Forgets the stderr tail (before a new call).
    pub fn clear_tail(&self) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tail
            .clear();
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
    fn limiter_traps_past_the_cap_and_remembers_it() {
        let mut l = MemoryLimiter {
            limit: 1 << 20,
            exceeded: false,
        };
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
