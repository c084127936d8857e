//! A guest that misbehaves on demand, for the host's fault-isolation tests and
//! boundary-cost benchmarks.
//!
//! Configuration: `mode` (required) and `trigger` (optional bytes; without it,
//! every record triggers). A record triggers when its value contains
//! `trigger`; a null value reads as empty.
//!
//! | `mode`        | what it does                                                  |
//! |---------------|---------------------------------------------------------------|
//! | `trap`        | panics (`poisoned record {trigger}`) on a triggering record   |
//! | `loop`        | spins forever on a triggering record                          |
//! | `alloc`       | allocates 1 MiB blocks forever on a triggering record         |
//! | `passthrough` | forwards every record                                         |
//! | `noop`        | drops every record (boundary-cost benchmarks)                 |
//! | `bad-output`  | forwards every record to the undeclared output `nowhere`      |
//! | `init-trap`   | panics inside `init`                                          |
//! | `double`      | emits the value twice over (`vv`) for a triggering record     |
//! | `reject`      | dead-letters a triggering record, with the reason `trap: refused {trigger}` (the guest's own decision, worded like a fault) |
//!
//! `trap`, `loop`, `alloc`, `double` and `reject` forward the records that do not trigger. Any
//! other configuration key is refused.

use sluice_sdk::{Config, Emitter, Error, Record, Transform};

/// The output `bad-output` mode sends to; no pipeline declares it.
pub const UNKNOWN_OUTPUT: &str = "nowhere";

const MODES: &str = "trap, loop, alloc, passthrough, noop, bad-output, init-trap, double, reject";

/// How the guest misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Trap,
    Loop,
    Alloc,
    Passthrough,
    Noop,
    BadOutput,
    Double,
    Reject,
}

/// The configured misbehaviour.
#[derive(Debug)]
pub struct Faulty {
    mode: Mode,
    trigger: String,
}

#[sluice_sdk::transform]
impl Transform for Faulty {
    fn init(config: &Config) -> Result<Self, Error> {
        config
            .deny_unknown(&["mode", "trigger"])
            .map_err(|e| format!("{e} (expected `mode` and optionally `trigger`)"))?;
        let mode = match config.require("mode")? {
            "trap" => Mode::Trap,
            "loop" => Mode::Loop,
            "alloc" => Mode::Alloc,
            "passthrough" => Mode::Passthrough,
            "noop" => Mode::Noop,
            "bad-output" => Mode::BadOutput,
            "double" => Mode::Double,
            "reject" => Mode::Reject,
            "init-trap" => panic!("init-trap: panicking inside init as configured"),
            other => return Err(format!("unknown mode `{other}` (expected one of {MODES})").into()),
        };
        let trigger = config.get("trigger").unwrap_or_default().to_owned();
        // Also exercises the host's `log` import.
        sluice_sdk::log::info(&format!(
            "faulty guest ready: mode {mode:?}, trigger {trigger:?}"
        ));
        Ok(Faulty { mode, trigger })
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
        let triggered = || contains(record.value().unwrap_or_default(), self.trigger.as_bytes());
        match self.mode {
            Mode::Trap if triggered() => panic!("poisoned record {}", self.trigger),
            Mode::Loop if triggered() => spin(),
            Mode::Alloc if triggered() => exhaust_memory(),
            Mode::Double if triggered() => {
                let value = record.value().unwrap_or_default();
                out.emit([value, value].concat());
            }
            Mode::Reject if triggered() => {
                out.dead_letter(format!("trap: refused {}", self.trigger))
            }
            Mode::Trap
            | Mode::Loop
            | Mode::Alloc
            | Mode::Double
            | Mode::Reject
            | Mode::Passthrough => out.forward(),
            Mode::Noop => out.drop(),
            Mode::BadOutput => out.forward_to(UNKNOWN_OUTPUT),
        }
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Never returns; `black_box` keeps the optimiser from reasoning about it.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n).wrapping_add(1);
    }
}

/// Never returns: grows the heap 1 MiB at a time (touching every page) until
/// the allocator fails, which aborts (traps, in wasm).
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

    fn records() -> [TestRecord; 3] {
        [
            TestRecord::new().key("a").value("fine"),
            TestRecord::new().key("b").value("also fine").timestamp(5),
            TestRecord::new(),
        ]
    }

    #[test]
    fn passthrough_forwards_everything() {
        let output = run::<Faulty>(&[("mode", "passthrough")], &records()).unwrap();
        let inputs: Vec<u32> = output.outputs.iter().map(|e| e.input).collect();
        assert_eq!(inputs, [0, 1, 2]);
        assert_eq!(output.outputs[1].value_str(), Some("also fine"));
        assert_eq!(output.outputs[2].value, None);
    }

    #[test]
    fn noop_drops_everything() {
        let output = run::<Faulty>(&[("mode", "noop")], &records()).unwrap();
        assert!(output.outputs.is_empty());
        assert_eq!(output.dropped, [0, 1, 2]);
    }

    #[test]
    fn bad_output_targets_an_undeclared_output() {
        let output = run::<Faulty>(&[("mode", "bad-output")], &records()).unwrap();
        assert_eq!(output.to(UNKNOWN_OUTPUT).len(), 3);
    }

    #[test]
    fn faulty_modes_forward_records_without_the_trigger() {
        for mode in ["trap", "loop", "alloc"] {
            let output =
                run::<Faulty>(&[("mode", mode), ("trigger", "poison")], &records()).unwrap();
            assert_eq!(output.outputs.len(), 3, "mode {mode}");
        }
    }

    #[test]
    fn reject_dead_letters_the_trigger_in_words_of_its_own() {
        let records = [
            TestRecord::new().value("ok"),
            TestRecord::new().value("xx poison xx"),
        ];
        let output = run::<Faulty>(&[("mode", "reject"), ("trigger", "poison")], &records).unwrap();
        let inputs: Vec<u32> = output.outputs.iter().map(|e| e.input).collect();
        assert_eq!(inputs, [0]);
        assert_eq!(
            output.dead_letters,
            [(1, "trap: refused poison".to_owned())]
        );
    }

    #[test]
    #[should_panic(expected = "poisoned record poison")]
    fn trap_panics_on_the_trigger() {
        let records = [
            TestRecord::new().value("ok"),
            TestRecord::new().value("xx poison xx"),
        ];
        let _ = run::<Faulty>(&[("mode", "trap"), ("trigger", "poison")], &records);
    }

    #[test]
    #[should_panic(expected = "init-trap")]
    fn init_trap_panics_in_init() {
        let _ = run::<Faulty>(&[("mode", "init-trap")], &[]);
    }

    #[test]
    fn rejects_bad_configuration() {
        let err = |config: &[(&str, &str)]| run::<Faulty>(config, &[]).unwrap_err().to_string();
        assert_eq!(
            err(&[("mode", "explode")]),
            "unknown mode `explode` (expected one of trap, loop, alloc, passthrough, noop, bad-output, init-trap, double, reject)"
        );
        assert_eq!(err(&[]), "missing config key `mode`");
        assert_eq!(
            err(&[("mode", "noop"), ("trigers", "x")]),
            "unknown config key `trigers` (expected `mode` and optionally `trigger`)"
        );
    }

    #[test]
    fn contains_matches_substrings() {
        assert!(contains(b"abc", b""));
        assert!(contains(b"abc", b"bc"));
        assert!(!contains(b"abc", b"cd"));
        assert!(!contains(b"", b"a"));
    }
}
