//! The WIT-level behaviour of the aggregate glue, on the raw requests and
//! results.

use serde::{Deserialize, Serialize};

use super::*;
use crate::testing::{TestRecord, encode_batch};
use crate::{Error, OutputRecord};

/// Keeps every folded value, with its event time, in fold order.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Log {
    items: Vec<String>,
}

struct Collect;

impl Aggregate for Collect {
    type Acc = Log;
    type Parsed = ();

    fn init(config: &Config) -> Result<Self, Error> {
        match config.get("fail") {
            Some(message) => Err(message.into()),
            None => Ok(Collect),
        }
    }

    fn fold(&mut self, acc: &mut Log, record: &Record<'_>, time: i64) -> Result<(), Error> {
        let value = record.value_str()?;
        if value == "bad" {
            return Err("bad value".into());
        }
        acc.items.push(format!("{value}@{time}"));
        Ok(())
    }

    fn merge(&mut self, acc: &mut Log, other: Log) {
        acc.items.extend(other.items);
    }

    fn finish(
        &mut self,
        window: &Window<'_>,
        acc: &Log,
        out: &mut Emitter<'_>,
    ) -> Result<(), Error> {
        let summary = format!(
            "{} [{}, {}) final={}: {}",
            window.key_str()?,
            window.start,
            window.end,
            window.is_final,
            acc.items.join(",")
        );
        match window.key {
            b"forward" => out.forward(),
            b"error" => {
                out.emit("discarded");
                return Err("finish failed".into());
            }
            b"record" => {
                out.emit_record(OutputRecord::new().key("own").value(&summary).timestamp(5))
            }
            _ => out.emit(summary),
        }
        Ok(())
    }
}

fn started() -> AggregateState<Collect> {
    let mut state = AggregateState::new();
    init(&mut state, vec![]).unwrap();
    state
}

fn encoded(acc: &Log) -> Vec<u8> {
    postcard::to_allocvec(acc).unwrap()
}

fn log(items: &[&str]) -> Log {
    Log {
        items: items.iter().map(|s| s.to_string()).collect(),
    }
}

/// Accumulators `accs`, Arrow-style.
fn accs(accs: &[Vec<u8>]) -> Accumulators {
    let mut out = Accumulators {
        data: Vec::new(),
        offsets: vec![0],
    };
    for acc in accs {
        out.data.extend_from_slice(acc);
        out.offsets.push(out.data.len() as u32);
    }
    out
}

fn decoded(accs: &Accumulators) -> Vec<Log> {
    let view = AccView::new(accs, None).unwrap();
    (0..view.len())
        .map(|i| decode(view.get(i)).unwrap())
        .collect()
}

fn dead(letters: &[DeadLetter]) -> Vec<(u32, &str)> {
    letters
        .iter()
        .map(|d| (d.input, d.reason.as_str()))
        .collect()
}

fn records() -> Vec<TestRecord> {
    vec![
        TestRecord::new().key("a").value("x").timestamp(10),
        TestRecord::new().value("y").timestamp(20),
        TestRecord::new().key("a").value("bad").timestamp(30),
        TestRecord::new().key("b").value("z"),
    ]
}

#[test]
fn calls_before_init_fail() {
    let mut state = AggregateState::<Collect>::new();
    let err = extract(&mut state, encode_batch(&records())).unwrap_err();
    assert_eq!(err, "aggregate not initialised");
    let request = MergeRequest {
        accumulators: accs(&[]),
        group_offsets: vec![0],
    };
    assert_eq!(
        merge(&mut state, &request).unwrap_err(),
        "aggregate not initialised"
    );
    let err = init(&mut state, vec![("fail".into(), "no".into())]).unwrap_err();
    assert_eq!(err, "no");
    assert!(state.aggregate_mut().is_none());
}

#[test]
fn extract_gives_default_keys_and_times_and_dead_letters_the_rest() {
    let mut state = started();
    let keyed = extract(&mut state, encode_batch(&records())).unwrap();
    // The key defaults to the Kafka key (empty without one), the event time
    // to the timestamp; a record without one is dead-lettered.
    assert_eq!(keyed.keys, b"aa");
    assert_eq!(keyed.key_offsets, [0, 1, 1, 2, 2]);
    assert_eq!(keyed.event_times, [10, 20, 30, 0]);
    assert_eq!(
        dead(&keyed.dead_letters),
        [(3, "record has no timestamp to take its event time from")]
    );
    assert_eq!(state.event_times, [10, 20, 30, 0]);
}

#[test]
fn a_malformed_batch_fails_extract_and_leaves_nothing_to_fold() {
    let mut state = started();
    extract(&mut state, encode_batch(&records())).unwrap();
    let mut batch = encode_batch(&records());
    batch.offsets.pop();
    let err = extract(&mut state, batch).unwrap_err();
    assert_eq!(
        err,
        "malformed input batch: offsets has 3 entries, expected 4 (one per record)"
    );
    let request = FoldRequest {
        accumulators: accs(&[vec![]]),
        fresh: vec![1],
        records: vec![0],
        group_offsets: vec![0, 1],
    };
    assert_eq!(
        fold(&mut state, &request).unwrap_err(),
        "fold before a batch was extracted"
    );
}

#[test]
fn fold_starts_fresh_groups_new_and_continues_existing_ones() {
    let mut state = started();
    extract(&mut state, encode_batch(&records())).unwrap();
    let request = FoldRequest {
        // Group 0 is fresh: its bytes are ignored, even if garbage.
        accumulators: accs(&[vec![0xff, 0xff], encoded(&log(&["old@1"]))]),
        fresh: vec![1, 0],
        records: vec![1, 0, 0],
        group_offsets: vec![0, 2, 3],
    };
    let result = fold(&mut state, &request).unwrap();
    assert!(result.dead_letters.is_empty());
    assert_eq!(
        decoded(&result.accumulators),
        [log(&["y@20", "x@10"]), log(&["old@1", "x@10"])]
    );
}

#[test]
fn fold_dead_letters_failed_records_and_folds_the_rest_of_their_group() {
    let mut state = started();
    extract(&mut state, encode_batch(&records())).unwrap();
    let request = FoldRequest {
        accumulators: accs(&[vec![]]),
        fresh: vec![1],
        records: vec![0, 2, 1],
        group_offsets: vec![0, 3],
    };
    let result = fold(&mut state, &request).unwrap();
    assert_eq!(dead(&result.dead_letters), [(2, "bad value")]);
    assert_eq!(decoded(&result.accumulators), [log(&["x@10", "y@20"])]);
}

#[test]
fn an_undecodable_accumulator_dead_letters_its_group_and_is_kept() {
    let mut state = started();
    extract(&mut state, encode_batch(&records())).unwrap();
    let garbage = vec![0x05, b'a'];
    let request = FoldRequest {
        accumulators: accs(&[garbage.clone(), vec![]]),
        fresh: vec![0, 1],
        records: vec![0, 1, 1],
        group_offsets: vec![0, 2, 3],
    };
    let result = fold(&mut state, &request).unwrap();
    let inputs: Vec<u32> = result.dead_letters.iter().map(|d| d.input).collect();
    assert_eq!(inputs, [0, 1]);
    assert!(
        result.dead_letters[0]
            .reason
            .starts_with("cannot decode the accumulator of the record's window: "),
        "{:?}",
        result.dead_letters
    );
    assert_eq!(
        result.accumulators.offsets,
        [0, 2, 2 + encoded(&log(&["y@20"])).len() as u32]
    );
    assert_eq!(result.accumulators.data[..2], garbage);
}

#[test]
fn malformed_fold_requests_fail_the_call() {
    let mut state = started();
    extract(&mut state, encode_batch(&records())).unwrap();
    let mut request = FoldRequest {
        accumulators: accs(&[vec![]]),
        fresh: vec![1],
        records: vec![4],
        group_offsets: vec![0, 1],
    };
    assert_eq!(
        fold(&mut state, &request).unwrap_err(),
        "malformed fold request: record 4 is past the end of the last extracted batch (4 records)"
    );
    request.records = vec![0];
    request.fresh = vec![1, 1];
    assert_eq!(
        fold(&mut state, &request).unwrap_err(),
        "malformed fold request: accumulators.offsets has 2 entries, expected 3 (n + 1 for n = 2)"
    );
}

#[test]
fn merge_combines_each_group_in_order() {
    let mut state = started();
    let request = MergeRequest {
        accumulators: accs(&[
            encoded(&log(&["a"])),
            encoded(&log(&["b"])),
            encoded(&log(&["c"])),
            encoded(&log(&["d"])),
        ]),
        // Group 0 is a, b, c; group 1 is empty; group 2 is d.
        group_offsets: vec![0, 3, 3, 4],
    };
    let merged = merge(&mut state, &request).unwrap();
    assert_eq!(
        decoded(&merged),
        [log(&["a", "b", "c"]), Log::default(), log(&["d"])]
    );
}

#[test]
fn merge_fails_on_an_undecodable_accumulator_or_a_malformed_request() {
    let mut state = started();
    let request = MergeRequest {
        accumulators: accs(&[encoded(&log(&["a"])), vec![0x09]]),
        group_offsets: vec![0, 2],
    };
    let err = merge(&mut state, &request).unwrap_err();
    assert!(err.starts_with("cannot decode accumulator 1: "), "{err}");
    let request = MergeRequest {
        accumulators: accs(&[vec![]]),
        group_offsets: vec![0, 2],
    };
    assert_eq!(
        merge(&mut state, &request).unwrap_err(),
        "malformed merge request: group-offsets ends at 2, past the end of accumulators (1 bytes)"
    );
}

fn finish_request(windows: &[(&str, i64, i64, bool, &[&str])]) -> FinishRequest {
    let mut request = FinishRequest {
        keys: Vec::new(),
        key_offsets: vec![0],
        window_starts: Vec::new(),
        window_ends: Vec::new(),
        accumulators: accs(&[]),
        final_: Vec::new(),
    };
    for (key, start, end, is_final, items) in windows {
        request.keys.extend_from_slice(key.as_bytes());
        request.key_offsets.push(request.keys.len() as u32);
        request.window_starts.push(*start);
        request.window_ends.push(*end);
        request.final_.push(u8::from(*is_final));
        request.accumulators.data.extend(encoded(&log(items)));
        let len = request.accumulators.data.len() as u32;
        request.accumulators.offsets.push(len);
    }
    request
}

#[test]
fn finish_leaves_key_and_timestamp_to_the_host() {
    let mut state = started();
    let request = finish_request(&[
        ("k", 0, 10, true, &["x@1", "y@2"]),
        ("record", 10, 20, false, &[]),
    ]);
    let output = finish(&mut state, &request).unwrap();
    assert_eq!(output.inputs, [0, 1]);
    assert_eq!(output.targets, [0, 0]);
    let cols = &output.records;
    // No key, no timestamp, no headers: the host gives the group key and
    // the window's end - 1. An output record may set its own.
    assert_eq!(cols.flags, [0b010, 0b111]);
    assert_eq!(cols.keys, b"own");
    assert_eq!(cols.timestamps, [0, 5]);
    assert_eq!(cols.header_offsets, [0, 0, 0]);
    let values = String::from_utf8(cols.values.clone()).unwrap();
    assert_eq!(
        values,
        "k [0, 10) final=true: x@1,y@2record [10, 20) final=false: "
    );
    assert!(output.dead_letters.is_empty());
}

#[test]
fn a_failed_finish_dead_letters_its_window_and_discards_its_outputs() {
    let mut state = started();
    let request = finish_request(&[
        ("error", 0, 10, true, &[]),
        ("forward", 0, 10, true, &[]),
        ("ok", 0, 10, true, &[]),
    ]);
    let output = finish(&mut state, &request).unwrap();
    assert_eq!(output.inputs, [2]);
    assert_eq!(
        dead(&output.dead_letters),
        [
            (0, "finish failed"),
            (
                1,
                "`Emitter::forward` has no input record to forward in `Aggregate::finish`"
            ),
        ]
    );
    assert_eq!(output.records.values, b"ok [0, 10) final=true: ");
}

#[test]
fn finish_dead_letters_an_undecodable_window_and_rejects_malformed_requests() {
    let mut state = started();
    let mut request = finish_request(&[("k", 0, 10, true, &[])]);
    request.accumulators = accs(&[vec![0x02, 0x01]]);
    let output = finish(&mut state, &request).unwrap();
    assert!(output.inputs.is_empty());
    assert!(
        output.dead_letters[0]
            .reason
            .starts_with("cannot decode the window's accumulator: "),
        "{:?}",
        output.dead_letters
    );
    request.final_.clear();
    assert_eq!(
        finish(&mut state, &request).unwrap_err(),
        "malformed finish request: final has 0 entries, expected 1 (one per group)"
    );
}

#[test]
fn accumulators_are_postcard() {
    let mut state = AggregateState::with(Collect);
    extract(&mut state, encode_batch(&records()[..1])).unwrap();
    let request = FoldRequest {
        accumulators: accs(&[vec![]]),
        fresh: vec![1],
        records: vec![0],
        group_offsets: vec![0, 1],
    };
    let result = fold(&mut state, &request).unwrap();
    // A struct is its fields in order; a Vec its length then its items; a
    // string its length then its bytes.
    assert_eq!(result.accumulators.data, b"\x01\x04x@10");
}
