//! A guest's stdout and stderr, and the budget of what its output may put
//! in the host's log per call.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::sandbox::Labels;

/// Most bytes of guest output (each of stdout, stderr and the `log`
/// import) logged per call; the rest is counted and reported once.
pub const OUTPUT_BYTES_PER_CALL: usize = 64 * 1024;
/// Most lines of guest output (each stream) logged per call.
pub const OUTPUT_LINES_PER_CALL: usize = 256;

/// What one stream of guest output has logged, or skipped, in this call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Budget {
    pub(super) logged: Volume,
    pub(super) skipped: Volume,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Volume {
    pub(super) lines: usize,
    pub(super) bytes: usize,
}

impl Budget {
    /// Counts a line of `len` bytes; whether it may be logged.
    pub(super) fn admit(&mut self, len: usize) -> bool {
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

    /// Ends a call: starts a fresh budget and, if anything was skipped,
    /// says so in one warning (`what`: e.g. "wrote ... to stdout").
    pub(super) fn end_call(&mut self, labels: &Labels, what: &str) {
        let skipped = std::mem::take(self).skipped;
        if skipped.lines == 0 {
            return;
        }
        let Labels {
            pipeline,
            step,
            module,
        } = labels;
        tracing::warn!(
            target: "sluice::guest",
            pipeline = &**pipeline,
            step = &**step,
            module = &**module,
            "guest {what}: {} more lines ({} bytes) in one call, not logged",
            skipped.lines,
            skipped.bytes
        );
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Stream {
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
    pub(super) fn new(labels: Labels, stream: Stream) -> Self {
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
    pub(super) fn begin_call(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.tail.clear();
        let what = match self.stream {
            Stream::Stdout => "wrote to stdout",
            Stream::Stderr => "wrote to stderr",
        };
        state.budget.end_call(&self.labels, what);
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
}
