//! A hostile transform that the SDK could not produce: it forwards every
//! record, except that the one whose value is the configured `trigger` goes to
//! a named output, and the batch's `output-names` list holds [`ALIASES`]
//! entries that all point at the same [`NAME_LEN`]-byte string. The guest
//! spends one string of its memory; lifting the list copies
//! `ALIASES * NAME_LEN` bytes to the host.

#![allow(unsafe_code, reason = "aliasing one allocation is the attack")]

use std::cell::RefCell;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "transform-guest",
});

use exports::sluice::transform::transform::Guest;
use sluice::transform::types::{InputBatch, OutputBatch};

/// How many output names alias the one string.
pub const ALIASES: usize = 100;
/// The length of that string.
pub const NAME_LEN: usize = 1 << 20;

thread_local! {
    static TRIGGER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

struct AliasBomb;

impl Guest for AliasBomb {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        let trigger = config
            .into_iter()
            .find(|(k, _)| k == "trigger")
            .map(|(_, v)| v)
            .ok_or("config needs `trigger`")?;
        TRIGGER.with(|t| *t.borrow_mut() = trigger.into_bytes());
        Ok(())
    }

    fn process(batch: InputBatch) -> Result<OutputBatch, String> {
        let records = batch.records;
        let n = records.flags.len();
        let value = |i: usize| {
            let (a, b) = (records.value_offsets[i], records.value_offsets[i + 1]);
            &records.values[a as usize..b as usize]
        };
        let hit = TRIGGER.with(|t| (0..n).find(|&i| value(i) == &t.borrow()[..]));
        let mut targets = vec![0; n];
        let mut output_names = Vec::new();
        if let Some(i) = hit {
            targets[i] = 1;
            let name = std::mem::ManuallyDrop::new("n".repeat(NAME_LEN));
            for _ in 0..ALIASES {
                // SAFETY: none. Every entry owns the same buffer, which is
                // the point; the host refuses the batch before the guest's
                // post-return could free it more than once.
                output_names.push(unsafe {
                    String::from_raw_parts(name.as_ptr().cast_mut(), name.len(), name.capacity())
                });
            }
        }
        Ok(OutputBatch {
            inputs: (0..n as u32).collect(),
            targets,
            output_names,
            dead_letters: Vec::new(),
            records,
        })
    }
}

export!(AliasBomb);
