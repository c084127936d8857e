//! Emission semantics, checked on the raw output batch as well as through the
//! decoded harness output.

use serde::Serialize;

use crate::testing::{TestRecord, encode_batch, run_fn};
use crate::{Emitter, Error, OutputRecord, Record};

fn run(
    f: impl FnMut(&Record<'_>, &mut Emitter<'_>) -> Result<(), Error>,
    records: &[TestRecord],
) -> crate::bindings::OutputBatch {
    crate::glue::run_batch(&encode_batch(records), f).unwrap()
}

#[test]
fn an_error_rolls_back_the_records_outputs() {
    let records = [
        TestRecord::new().value("a"),
        TestRecord::new().value("b"),
        TestRecord::new().value("c"),
    ];
    let output = run_fn(
        |record, out| {
            out.forward();
            out.emit_to("side", "x");
            out.emit_record(OutputRecord::new().header("h", "v"));
            if record.value() == Some(b"b") {
                Err("b is bad")
            } else {
                Ok(())
            }
        },
        &records,
    );
    let inputs: Vec<u32> = output.outputs.iter().map(|e| e.input).collect();
    assert_eq!(inputs, [0, 0, 0, 2, 2, 2]);
    assert_eq!(output.dead_letters, [(1, "b is bad".to_string())]);
    assert_eq!(
        output.outputs[5].headers,
        [("h".to_string(), b"v".to_vec())]
    );
}

#[test]
fn rollback_forgets_output_names_only_that_record_used() {
    let records = [
        TestRecord::new().value("keep"),
        TestRecord::new().value("fail"),
    ];
    let batch = run(
        |record, out| {
            out.emit_to("kept", "1");
            out.emit_to("only-in-failed-record", "2");
            if record.value() == Some(b"fail") {
                out.dead_letter("no");
            }
            Ok(())
        },
        &records,
    );
    // Record 0 interned both names; record 1 is rolled back to after record 0.
    assert_eq!(batch.output_names, ["kept", "only-in-failed-record"]);
    let batch = run(
        |record, out| {
            if record.index() == 1 {
                out.emit_to("late", "x");
                return Err("fail".into());
            }
            out.emit_to("kept", "1");
            Ok(())
        },
        &records,
    );
    assert_eq!(batch.output_names, ["kept"]);
    assert_eq!(batch.targets, [1]);
    assert_eq!(batch.records.value_offsets, [0, 1]);
    assert_eq!(batch.records.header_offsets, [0, 0]);
}

#[test]
fn the_first_dead_letter_reason_wins() {
    let output = run_fn(
        |_, out| {
            out.dead_letter("first");
            out.dead_letter("second");
            out.forward();
            Err("third")
        },
        &[TestRecord::new()],
    );
    assert!(output.outputs.is_empty());
    assert_eq!(output.dead_letters, [(0, "first".to_string())]);
}

#[test]
fn default_is_the_default_output() {
    let batch = run(
        |_, out| {
            out.emit_to("default", "a");
            out.forward_to("default");
            out.emit_to("named", "b");
            out.emit_to("other", "c");
            out.emit_to("named", "d");
            Ok(())
        },
        &[TestRecord::new().value("v")],
    );
    assert_eq!(batch.targets, [0, 0, 1, 2, 1]);
    assert_eq!(batch.output_names, ["named", "other"]);
}

#[test]
fn forward_copies_the_record_exactly() {
    let records = [
        TestRecord::new()
            .key("")
            .value("")
            .header("a", "1")
            .header("", "")
            .timestamp(-5),
        TestRecord::new().header("é", [0xff]),
        TestRecord::new().key("k"),
    ];
    let batch = encode_batch(&records);
    let output = crate::glue::run_batch(&batch, |_, out| {
        out.forward();
        Ok(())
    })
    .unwrap();
    let (input, output) = (&batch.records, &output.records);
    assert_eq!(output.flags, input.flags);
    assert_eq!(output.keys, input.keys);
    assert_eq!(output.key_offsets, input.key_offsets);
    assert_eq!(output.values, input.values);
    assert_eq!(output.value_offsets, input.value_offsets);
    assert_eq!(output.timestamps, input.timestamps);
    assert_eq!(output.header_offsets, input.header_offsets);
    assert_eq!(output.header_names, input.header_names);
    assert_eq!(output.header_name_offsets, input.header_name_offsets);
    assert_eq!(output.header_values, input.header_values);
    assert_eq!(output.header_value_offsets, input.header_value_offsets);
}

#[test]
fn emit_keeps_key_headers_and_timestamp() {
    let output = run_fn(
        |_, out| {
            out.emit("new");
            Ok::<_, Error>(())
        },
        &[TestRecord::new()
            .key("k")
            .value("old")
            .header("h", "1")
            .timestamp(9)],
    );
    let emitted = &output.outputs[0];
    assert_eq!(emitted.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(emitted.value_str(), Some("new"));
    assert_eq!(emitted.headers, [("h".to_string(), b"1".to_vec())]);
    assert_eq!(emitted.timestamp, Some(9));
}

#[test]
fn output_records_inherit_only_the_timestamp() {
    let records = [TestRecord::new()
        .key("k")
        .value("v")
        .header("h", "1")
        .timestamp(9)];
    let batch = run(
        |_, out| {
            out.emit_record(OutputRecord::new());
            out.emit_record(OutputRecord::new().key("k2").value("v2").timestamp(1));
            Ok(())
        },
        &records,
    );
    assert_eq!(batch.records.flags, [0, 0b111]);
    assert_eq!(batch.records.timestamps, [0, 1]);
    assert_eq!(batch.records.keys, b"k2");
    assert_eq!(batch.records.header_offsets, [0, 0, 0]);
}

struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("cannot serialize this"))
    }
}

#[test]
fn a_failed_emit_json_emits_nothing() {
    let batch = run(
        |_, out| {
            out.emit("before");
            let err = out.emit_json_to("json", &[Unserializable]).unwrap_err();
            assert_eq!(
                err.to_string(),
                "cannot serialize output value as JSON: cannot serialize this"
            );
            out.emit("after");
            Ok(())
        },
        &[TestRecord::new()],
    );
    assert_eq!(batch.records.values, b"beforeafter");
    assert_eq!(batch.records.value_offsets, [0, 6, 11]);
    assert!(batch.output_names.is_empty());
    assert!(batch.dead_letters.is_empty());
}

#[test]
fn emit_json_writes_into_the_values_buffer() {
    #[derive(Serialize)]
    struct Out<'a> {
        id: u32,
        name: &'a str,
    }
    let output = run_fn(
        |record, out| {
            out.emit_json(&Out {
                id: record.index(),
                name: "n",
            })
        },
        &[TestRecord::new().key("k"), TestRecord::new()],
    );
    assert_eq!(
        output.values_str(),
        [r#"{"id":0,"name":"n"}"#, r#"{"id":1,"name":"n"}"#]
    );
    assert_eq!(output.outputs[0].key.as_deref(), Some(&b"k"[..]));
}

#[test]
fn an_empty_batch_gives_an_empty_output() {
    let batch = run(|_, _| unreachable!(), &[]);
    assert!(batch.inputs.is_empty());
    assert_eq!(batch.records.key_offsets, [0]);
    assert_eq!(batch.records.header_name_offsets, [0]);
}

#[test]
fn records_see_their_source_position() {
    let records = [
        TestRecord::new().partition(3).offset(100),
        TestRecord::new(),
    ];
    let output = run_fn(
        |record, out| {
            out.emit(format!(
                "{}/{}/{}",
                record.index(),
                record.partition(),
                record.offset()
            ));
            Ok::<_, Error>(())
        },
        &records,
    );
    assert_eq!(output.values_str(), ["0/3/100", "1/0/1"]);
}
