//! Log lines from a transform into the host's structured logs, where each line
//! is labelled with the pipeline, the step and the module.
//!
//! Per-record logging is throttled by the host's log filter; prefer dead
//! letters or counters for per-record problems. Natively (tests, benchmarks)
//! the lines go to standard error, prefixed with the level.
//!
//! ```
//! sluice_sdk::log::info("transform started");
//! ```

use crate::bindings::Level;

/// Logs very detailed tracing.
///
/// ```
/// sluice_sdk::log::trace("entering the slow path");
/// ```
pub fn trace(message: &str) {
    write(Level::Trace, message);
}

/// Logs debugging detail.
///
/// ```
/// sluice_sdk::log::debug("cache warmed");
/// ```
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// Logs normal operation.
///
/// ```
/// sluice_sdk::log::info("configured with 3 rules");
/// ```
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// Logs something off that the transform carries on from.
///
/// ```
/// sluice_sdk::log::warn("unknown field `foo` ignored");
/// ```
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// Logs a failure.
///
/// ```
/// sluice_sdk::log::error("lookup table is empty");
/// ```
pub fn error(message: &str) {
    write(Level::Error, message);
}

#[cfg(target_arch = "wasm32")]
fn write(level: Level, message: &str) {
    crate::bindings::transform::sluice::transform::log::log(level, message);
}

/// Native stand-in for the host's `log` import.
#[cfg(not(target_arch = "wasm32"))]
fn write(level: Level, message: &str) {
    let level = match level {
        Level::Trace => "TRACE",
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    };
    eprintln!("[{level}] {message}");
}
