//! A hostile guest, for the host's sandbox tests: each mode attacks one
//! limit of the sandbox on the records that trigger it.
//!
//! Configuration: `mode` (required) and `trigger` (optional bytes; without
//! it, every record triggers). A record triggers when its value contains
//! `trigger`; records that do not trigger are forwarded.
//!
//! | `mode`             | what it does on a triggering record                          |
//! |--------------------|--------------------------------------------------------------|
//! | `sleep`            | sleeps an hour (`std::thread::sleep`: subscribe + block)     |
//! | `poll`             | subscribes to an hour on the clock and waits in `poll`       |
//! | `busy-loop`        | spins for ever                                               |
//! | `memory-bomb`      | allocates 1 MiB blocks for ever                              |
//! | `output-name-bomb` | forwards to [`NAME_BOMB_OUTPUTS`] outputs with 64 KiB names  |
//! | `huge-output`      | emits [`HUGE_OUTPUT_RECORDS`] records                        |
//! | `reason-bomb`      | dead-letters with a 1 MiB reason                             |
//! | `stdout-flood`     | writes [`FLOOD_BYTES`] to stdout and as many to `log`, then forwards |
//! | `trap-in-init`     | (any record) panics inside `init`                            |
//! | `sleep-in-init`    | (any record) sleeps an hour inside `init`                    |

use std::io::Write;

use sluice_sdk::{Config, Emitter, Error, Record, Transform};

/// How many named outputs `output-name-bomb` uses.
pub const NAME_BOMB_OUTPUTS: usize = 64;
/// The length of each of those names.
pub const NAME_BOMB_LEN: usize = 64 * 1024;
/// How many records `huge-output` emits for one input.
pub const HUGE_OUTPUT_RECORDS: usize = 200_000;
/// The length of the `reason-bomb` reason.
pub const REASON_BOMB_LEN: usize = 1 << 20;
/// How much `stdout-flood` writes to stdout (and to `log`), per record.
pub const FLOOD_BYTES: usize = 4 << 20;

const MODES: &str = "sleep, poll, busy-loop, memory-bomb, output-name-bomb, huge-output, \
                     reason-bomb, stdout-flood, trap-in-init, sleep-in-init";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sleep,
    Poll,
    BusyLoop,
    MemoryBomb,
    OutputNameBomb,
    HugeOutput,
    ReasonBomb,
    StdoutFlood,
}

/// The configured attack.
#[derive(Debug)]
pub struct Evil {
    mode: Mode,
    trigger: String,
}

#[sluice_sdk::transform]
impl Transform for Evil {
    fn init(config: &Config) -> Result<Self, Error> {
        config.deny_unknown(&["mode", "trigger"])?;
        let mode = match config.require("mode")? {
            "sleep" => Mode::Sleep,
            "poll" => Mode::Poll,
            "busy-loop" => Mode::BusyLoop,
            "memory-bomb" => Mode::MemoryBomb,
            "output-name-bomb" => Mode::OutputNameBomb,
            "huge-output" => Mode::HugeOutput,
            "reason-bomb" => Mode::ReasonBomb,
            "stdout-flood" => Mode::StdoutFlood,
            "trap-in-init" => panic!("trap-in-init: panicking inside init as configured"),
            "sleep-in-init" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                return Err("woke up after an hour".into());
            }
            other => return Err(format!("unknown mode `{other}` (expected one of {MODES})").into()),
        };
        let trigger = config.get("trigger").unwrap_or_default().to_owned();
        Ok(Evil { mode, trigger })
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
        let value = record.value().unwrap_or_default();
        let needle = self.trigger.as_bytes();
        if !(needle.is_empty() || value.windows(needle.len()).any(|w| w == needle)) {
            out.forward();
            return Ok(());
        }
        match self.mode {
            Mode::Sleep => std::thread::sleep(std::time::Duration::from_secs(3600)),
            Mode::Poll => poll_an_hour(),
            Mode::BusyLoop => spin(),
            Mode::MemoryBomb => exhaust_memory(),
            Mode::OutputNameBomb => {
                for i in 0..NAME_BOMB_OUTPUTS {
                    let mut name = format!("{i}-");
                    name.extend(std::iter::repeat_n('n', NAME_BOMB_LEN - name.len()));
                    out.forward_to(&name);
                }
            }
            Mode::HugeOutput => {
                for _ in 0..HUGE_OUTPUT_RECORDS {
                    out.forward();
                }
            }
            Mode::ReasonBomb => out.dead_letter("r".repeat(REASON_BOMB_LEN)),
            Mode::StdoutFlood => {
                let line = [b'x'; 1023];
                let mut stdout = std::io::stdout().lock();
                for _ in 0..FLOOD_BYTES / 1024 {
                    stdout.write_all(&line)?;
                    stdout.write_all(b"\n")?;
                    sluice_sdk::log::info("flooding the log");
                }
                stdout.flush()?;
                out.forward();
            }
        }
        Ok(())
    }
}

/// Waits on an hour-long clock subscription through `wasi:io/poll.poll`.
#[cfg(target_os = "wasi")]
fn poll_an_hour() {
    let pollable = wasip2::clocks::monotonic_clock::subscribe_duration(3_600_000_000_000);
    wasip2::io::poll::poll(&[&pollable]);
}

#[cfg(not(target_os = "wasi"))]
fn poll_an_hour() {
    std::thread::sleep(std::time::Duration::from_secs(3600));
}

/// Never returns; `black_box` keeps the optimiser from reasoning about it.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n).wrapping_add(1);
    }
}

/// Never returns: grows the heap 1 MiB at a time until the allocator fails.
fn exhaust_memory() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
        std::hint::black_box(&mut hoard);
    }
}

#[cfg(test)]
mod tests {
    use sluice_sdk::testing::{TestRecord, run};

    use super::*;

    #[test]
    fn records_that_do_not_trigger_are_forwarded() {
        let records = [
            TestRecord::new().value("fine"),
            TestRecord::new().value("ok"),
        ];
        let output = run::<Evil>(&[("mode", "sleep"), ("trigger", "evil")], &records).unwrap();
        assert_eq!(output.values_str(), ["fine", "ok"]);
    }

    #[test]
    fn huge_output_emits_many_records_for_one_input() {
        let records = [TestRecord::new().value("x")];
        let output = run::<Evil>(&[("mode", "huge-output")], &records).unwrap();
        assert_eq!(output.outputs.len(), HUGE_OUTPUT_RECORDS);
    }

    #[test]
    fn rejects_unknown_modes() {
        let err = run::<Evil>(&[("mode", "nice")], &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("unknown mode `nice`"), "{err}");
    }
}
