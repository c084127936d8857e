//! [`Aggregate::Parsed`]: what `extract` parsed reaches `fold_parsed`
//! without a second parse.

use std::borrow::Cow;

use super::*;
use crate::Error;
use crate::testing::{TestRecord, encode_batch};

/// Sums the amounts of `key:amount` values, parsing each record once in
/// `extract` and counting its parses.
#[derive(Default)]
struct Amounts {
    parses: usize,
}

impl Aggregate for Amounts {
    type Acc = Vec<f64>;
    type Parsed = f64;

    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Amounts::default())
    }

    fn extract<'r>(&mut self, record: &Record<'r>) -> Result<(Cow<'r, [u8]>, i64, f64), Error> {
        self.parses += 1;
        let (key, amount) = record.value_str()?.split_once(':').ok_or("no `:`")?;
        let time = record.timestamp().ok_or("no timestamp")?;
        Ok((crate::str_key(key), time, amount.parse()?))
    }

    fn fold_parsed(
        &mut self,
        acc: &mut Vec<f64>,
        _record: &Record<'_>,
        _time: i64,
        amount: &f64,
    ) -> Result<(), Error> {
        if *amount < 0.0 {
            return Err(format!("negative amount {amount}").into());
        }
        acc.push(*amount);
        Ok(())
    }

    fn merge(&mut self, acc: &mut Vec<f64>, other: Vec<f64>) {
        acc.extend(other);
    }

    fn finish(&mut self, _: &Window<'_>, _: &Vec<f64>, _: &mut Emitter<'_>) -> Result<(), Error> {
        Ok(())
    }
}

fn record(value: &str) -> TestRecord {
    TestRecord::new().value(value).timestamp(1)
}

/// A request that folds `records` (indices into the last extracted batch)
/// as one fresh group.
fn one_group(records: &[u32]) -> FoldRequest {
    FoldRequest {
        accumulators: Accumulators {
            data: vec![],
            offsets: vec![0, 0],
        },
        fresh: vec![1],
        records: records.to_vec(),
        group_offsets: vec![0, records.len() as u32],
    }
}

/// Folds `records` as one fresh group: the group's amounts and the dead
/// letters.
fn fold_group(
    state: &mut AggregateState<Amounts>,
    records: &[u32],
) -> (Vec<f64>, Vec<(u32, String)>) {
    let result = fold(state, &one_group(records)).unwrap();
    let acc = postcard::from_bytes(&result.accumulators.data).unwrap();
    let dead = result.dead_letters.into_iter().map(|d| (d.input, d.reason));
    (acc, dead.collect())
}

fn started() -> AggregateState<Amounts> {
    let mut state = AggregateState::new();
    init(&mut state, vec![]).unwrap();
    state
}

#[test]
fn fold_gets_what_extract_parsed_and_parses_nothing_itself() {
    let mut state = started();
    let batch = [record("a:1.5"), record("b:2"), record("a:0.25")];
    let keyed = extract(&mut state, encode_batch(&batch)).unwrap();
    assert_eq!(keyed.keys, b"aba");
    // Record 0 twice in one request: the value is lent, not taken.
    let (acc, dead) = fold_group(&mut state, &[2, 0, 0]);
    assert_eq!(acc, [0.25, 1.5, 1.5]);
    assert!(dead.is_empty());
    assert_eq!(state.aggregate_mut().unwrap().parses, 3);
}

#[test]
fn refused_records_hold_a_default_and_fold_errors_dead_letter() {
    let mut state = started();
    let batch = [record("a:x"), record("a:-1"), record("a:4")];
    let keyed = extract(&mut state, encode_batch(&batch)).unwrap();
    let dead = keyed
        .dead_letters
        .iter()
        .map(|d| (d.input, d.reason.as_str()));
    assert_eq!(dead.collect::<Vec<_>>(), [(0, "invalid float literal")]);
    assert_eq!(state.parsed, [0.0, -1.0, 4.0]);
    let (acc, dead) = fold_group(&mut state, &[1, 2]);
    assert_eq!(acc, [4.0]);
    assert_eq!(dead, [(1, "negative amount -1".to_string())]);
}

#[test]
fn each_extract_replaces_the_parsed_values_of_the_last_batch() {
    let mut state = started();
    extract(&mut state, encode_batch(&[record("a:1"), record("a:2")])).unwrap();
    extract(&mut state, encode_batch(&[record("a:30")])).unwrap();
    assert_eq!(state.parsed, [30.0]);
    assert_eq!(fold_group(&mut state, &[0]).0, [30.0]);
    assert_eq!(
        fold(&mut state, &one_group(&[1])).unwrap_err(),
        "malformed fold request: record 1 is past the end of the last extracted batch (1 records)"
    );
}

/// An impl written without the macro that defines no fold method.
struct NoFold;

impl Aggregate for NoFold {
    type Acc = u64;
    type Parsed = ();

    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(NoFold)
    }

    fn merge(&mut self, _: &mut u64, _: u64) {}

    fn finish(&mut self, _: &Window<'_>, _: &u64, _: &mut Emitter<'_>) -> Result<(), Error> {
        Ok(())
    }
}

#[test]
fn without_a_fold_method_every_record_is_dead_lettered_with_the_reason() {
    let mut state = AggregateState::<NoFold>::new();
    init(&mut state, vec![]).unwrap();
    extract(&mut state, encode_batch(&[record("a")])).unwrap();
    let result = fold(&mut state, &one_group(&[0])).unwrap();
    assert_eq!(result.dead_letters.len(), 1);
    assert_eq!(
        result.dead_letters[0].reason,
        "the aggregate implements neither `fold` nor `fold_parsed`"
    );
}
