//! Stamps each record with the variant of the component it runs in, so that
//! a test can tell which module version processed which record.
//!
//! The variant is the last byte of [`MARKER`], which sits in the
//! component's data section: a test makes versions that differ only in
//! that byte by replacing it in the built `.wasm` (same length, so the
//! component stays valid). Each record is forwarded unchanged to the next
//! step, and a copy with the value `<value>|v<variant>` goes to the named
//! output `tagged`. Variant `X` traps on every record (a broken version,
//! for rollback tests).

use sluice_sdk::{Emitter, Error, Record};

/// The marker a test looks for in the `.wasm`; its last byte is the variant.
pub const MARKER_PREFIX: &[u8] = b"SLUICE-VARIANT-";

#[used]
static MARKER: [u8; 16] = *b"SLUICE-VARIANT-1";

/// The variant, read from memory: `black_box` keeps the compiler from
/// folding the constant into the code.
fn variant() -> u8 {
    std::hint::black_box(&MARKER)[15]
}

#[sluice_sdk::transform]
pub fn tagger(record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
    let variant = variant();
    if variant == b'X' {
        panic!("variant X fails on every record");
    }
    let mut tagged = record.value().unwrap_or_default().to_vec();
    tagged.extend_from_slice(b"|v");
    tagged.push(variant);
    out.forward();
    out.emit_to("tagged", tagged);
    Ok(())
}
