//! Compiling a component: under a time limit and a process-wide limit on
//! concurrent compiles.
//!
//! A compile cannot be interrupted, so it runs on a thread of its own and the
//! caller stops waiting at the time limit; the thread keeps its slot until
//! the compile really ends, so at most `concurrent` compile threads exist,
//! however many give up waiting.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::module::ModuleError;

/// How long a compile may take, and how many may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    pub timeout: Duration,
    pub concurrent: usize,
}

impl Default for CompileLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            timeout: Duration::from_secs(60),
            concurrent: (cores / 2).max(1),
        }
    }
}

/// The slots of concurrent compiles (a counting semaphore).
#[derive(Debug)]
pub(super) struct CompileGate {
    limits: CompileLimits,
    running: Mutex<usize>,
    freed: Condvar,
}

/// A held compile slot, given back when dropped.
struct Slot(Arc<CompileGate>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        *running -= 1;
        self.0.freed.notify_one();
    }
}

impl CompileGate {
    pub(super) fn new(limits: CompileLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            running: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    /// The gate every runtime of the process shares, with the default limits.
    pub(super) fn process_wide() -> Arc<Self> {
        static GATE: std::sync::OnceLock<Arc<CompileGate>> = std::sync::OnceLock::new();
        GATE.get_or_init(|| Self::new(CompileLimits::default()))
            .clone()
    }

    /// Waits until `until` for a slot.
    fn slot(self: &Arc<Self>, until: Instant) -> Option<Slot> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *running >= self.limits.concurrent {
            let left = until.checked_duration_since(Instant::now())?;
            running = self
                .freed
                .wait_timeout(running, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *running += 1;
        Some(Slot(self.clone()))
    }

    /// Compiles `bytes`, or gives up at the time limit (waiting for a slot
    /// counts).
    pub(super) fn compile(
        self: &Arc<Self>,
        engine: &Engine,
        bytes: &[u8],
    ) -> Result<Component, ModuleError> {
        let CompileLimits {
            timeout,
            concurrent,
        } = self.limits;
        let until = Instant::now() + timeout;
        let slot = self.slot(until).ok_or(ModuleError::TooManyCompiles {
            concurrent,
            timeout,
        })?;
        let (done, result) = mpsc::sync_channel(1);
        let (engine, bytes) = (engine.clone(), bytes.to_vec());
        std::thread::Builder::new()
            .name("sluice-compile".into())
            .spawn(move || {
                let compiled = Component::new(&engine, &bytes);
                drop(slot);
                let _ = done.send(compiled);
            })
            .map_err(|e| ModuleError::CompileThread(e.to_string()))?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ModuleError::CompileTimeout(timeout));
        }
        match result.recv_timeout(left) {
            Ok(compiled) => compiled.map_err(|e| ModuleError::Invalid(format!("{e:#}"))),
            Err(_) => Err(ModuleError::CompileTimeout(timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_and_given_back() {
        let gate = CompileGate::new(CompileLimits {
            timeout: Duration::from_secs(1),
            concurrent: 1,
        });
        let soon = || Instant::now() + Duration::from_millis(20);
        let first = gate.slot(soon()).expect("a free slot");
        assert!(gate.slot(soon()).is_none(), "the only slot is taken");
        drop(first);
        assert!(gate.slot(soon()).is_some(), "the slot was given back");
    }

    #[test]
    fn a_compile_past_its_time_limit_is_abandoned() {
        let gate = CompileGate::new(CompileLimits {
            timeout: Duration::ZERO,
            concurrent: 1,
        });
        let engine = Engine::default();
        let err = gate.compile(&engine, b"\0asm\x0d\0\x01\0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "compiling the module took longer than 0ns; it is too large or too complex"
        );
    }
}
