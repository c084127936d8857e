//! The join glue over the generated types: keys and times per side, pairs
//! with absent sides, and what a malformed request or a failing pair gets.

use std::borrow::Cow;

use super::*;
use crate::testing::TestRecord;
use crate::testing::encode_batch;
use crate::{Error, Record};

/// Joins on the key; fails on a record whose value is `boom`; outputs
/// `left+right` with `-` for an absent side.
struct Plus;

impl Join for Plus {
    fn init(config: &Config) -> Result<Self, Error> {
        config.deny_unknown(&[])?;
        Ok(Plus)
    }

    fn key_and_time<'r>(
        &mut self,
        side: Side,
        record: &Record<'r>,
    ) -> Result<(Cow<'r, [u8]>, i64), Error> {
        let key = record
            .key()
            .ok_or(format!("{side:?} record without a key"))?;
        Ok((Cow::Borrowed(key), record.timestamp().unwrap_or(-1)))
    }

    fn join(
        &mut self,
        left: Option<&Record<'_>>,
        right: Option<&Record<'_>>,
        out: &mut Emitter<'_>,
    ) -> Result<(), Error> {
        let text = |r: Option<&Record<'_>>| -> Result<String, Error> {
            Ok(r.map(|r| r.value_str())
                .transpose()?
                .unwrap_or("-")
                .to_owned())
        };
        let (l, r) = (text(left)?, text(right)?);
        if l == "boom" || r == "boom" {
            out.emit("half");
            return Err("boom".into());
        }
        out.emit(format!("{l}+{r}"));
        Ok(())
    }
}

fn ready() -> JoinState<Plus> {
    let mut state = JoinState::new();
    init(&mut state, Vec::new()).unwrap();
    state
}

#[test]
fn extract_keys_each_record_and_dead_letters_the_ones_it_cannot() {
    let mut state = ready();
    let batch = encode_batch(&[
        TestRecord::new().key("a").timestamp(10),
        TestRecord::new().timestamp(11),
        TestRecord::new().key("bc"),
    ]);
    let keyed = extract(&mut state, JoinSide::Right, batch).unwrap();
    assert_eq!(keyed.keys, b"abc");
    assert_eq!(keyed.key_offsets, [0, 1, 1, 3]);
    assert_eq!(keyed.event_times, [10, 0, -1]);
    assert_eq!(keyed.dead_letters.len(), 1);
    assert_eq!(keyed.dead_letters[0].input, 1);
    assert_eq!(keyed.dead_letters[0].reason, "Right record without a key");
}

#[test]
fn join_builds_each_pair_and_dead_letters_a_failing_one_without_its_outputs() {
    let mut state = ready();
    let left = encode_batch(&[
        TestRecord::new().key("a").value("l0"),
        TestRecord::new().key("b").value("boom"),
    ]);
    let right = encode_batch(&[TestRecord::new().key("a").value("r0")]);
    let output = join(
        &mut state,
        JoinRequest {
            left: left.records,
            right: right.records,
            left_index: vec![0, 0, -1, 1],
            right_index: vec![0, -1, 0, -1],
        },
    )
    .unwrap();
    assert_eq!(output.inputs, [0, 1, 2]);
    assert_eq!(output.values_text(), ["l0+r0", "l0+-", "-+r0"]);
    assert_eq!(output.dead_letters.len(), 1);
    assert_eq!(
        (
            output.dead_letters[0].input,
            output.dead_letters[0].reason.as_str()
        ),
        (3, "boom")
    );
}

#[test]
fn a_malformed_join_request_fails_the_call() {
    let mut state = ready();
    let left = encode_batch(&[TestRecord::new().key("a")]);
    let request = |left_index: Vec<i32>, right_index: Vec<i32>| JoinRequest {
        left: left.records.clone(),
        right: encode_batch(&[]).records,
        left_index,
        right_index,
    };
    assert_eq!(
        join(&mut state, request(vec![1], vec![-1])).unwrap_err(),
        "malformed join request: left-index 1 is neither -1 nor one of the 1 records"
    );
    assert_eq!(
        join(&mut state, request(vec![-1], vec![-1])).unwrap_err(),
        "malformed join request: pair 0 has neither side"
    );
    assert_eq!(
        join(&mut state, request(vec![0, 0], vec![-1])).unwrap_err(),
        "malformed join request: right-index has 1 entries, expected 2 (one per pair)"
    );
    let mut fresh: JoinState<Plus> = JoinState::new();
    assert_eq!(
        join(&mut fresh, request(vec![0], vec![-1])).unwrap_err(),
        "join not initialised"
    );
}

/// The values of an output batch, as text.
trait ValuesText {
    fn values_text(&self) -> Vec<String>;
}

impl ValuesText for OutputBatch {
    fn values_text(&self) -> Vec<String> {
        let r = &self.records;
        (0..r.flags.len())
            .map(|i| {
                String::from_utf8(
                    r.values[r.value_offsets[i] as usize..r.value_offsets[i + 1] as usize].to_vec(),
                )
                .unwrap()
            })
            .collect()
    }
}
