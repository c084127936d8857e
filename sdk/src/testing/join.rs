//! The join half of the harness: runs a [`Join`] through the same glue as
//! the wasm export. The host's part (buffers, matching, watermarks) is the
//! caller's: give the keys to check with [`join_keys`] and the pairs to
//! build with [`run_join`].

use super::{TestOutput, TestRecord, decode_records, encode_batch};
use crate::bindings::{JoinRequest, JoinSide};
use crate::join_glue::{JoinState, extract, init, join};
use crate::{Error, Join, Side};

fn started<T: Join>(config: &[(&str, &str)]) -> Result<JoinState<T>, Error> {
    let mut state = JoinState::new();
    let config = config.iter().map(|&(k, v)| (k.into(), v.into()));
    init(&mut state, config.collect())?;
    Ok(state)
}

fn wit_side(side: Side) -> JoinSide {
    match side {
        Side::Left => JoinSide::Left,
        Side::Right => JoinSide::Right,
    }
}

type Keys = Vec<Result<(Vec<u8>, i64), String>>;

/// Each record of `side`'s key and event time, or the reason it is
/// dead-lettered, through the join's `extract` of one batch.
///
/// ```
/// use std::borrow::Cow;
/// use sluice_sdk::testing::{join_keys, TestRecord};
/// use sluice_sdk::{Config, Emitter, Error, Join, Record, Side};
///
/// struct ByKey;
///
/// impl Join for ByKey {
///     fn init(_: &Config) -> Result<Self, Error> { Ok(ByKey) }
///     fn key_and_time<'r>(&mut self, _: Side, r: &Record<'r>) -> Result<(Cow<'r, [u8]>, i64), Error> {
///         Ok((Cow::Borrowed(r.key().ok_or("no key")?), r.timestamp().unwrap_or(0)))
///     }
///     fn join(&mut self, _: Option<&Record<'_>>, _: Option<&Record<'_>>, _: &mut Emitter<'_>) -> Result<(), Error> {
///         Ok(())
///     }
/// }
///
/// let keys = join_keys::<ByKey>(&[], Side::Left, &[TestRecord::new().key("a").timestamp(5), TestRecord::new()]).unwrap();
/// assert_eq!(keys, [Ok((b"a".to_vec(), 5)), Err("no key".to_string())]);
/// ```
pub fn join_keys<T: Join>(
    config: &[(&str, &str)],
    side: Side,
    records: &[TestRecord],
) -> Result<Keys, Error> {
    let mut state = started::<T>(config)?;
    keys(&mut state, side, records)
}

fn keys<T: Join>(
    state: &mut JoinState<T>,
    side: Side,
    records: &[TestRecord],
) -> Result<Keys, Error> {
    let keyed = extract(state, wit_side(side), encode_batch(records))?;
    Ok((0..records.len())
        .map(
            |i| match keyed.dead_letters.iter().find(|d| d.input as usize == i) {
                Some(d) => Err(d.reason.clone()),
                None => Ok((
                    keyed.keys[keyed.key_offsets[i] as usize..keyed.key_offsets[i + 1] as usize]
                        .to_vec(),
                    keyed.event_times[i],
                )),
            },
        )
        .collect())
}

/// Runs the join's `join` over `pairs` (a side `None`: an outer row), the
/// way the host calls it once a batch completed them. In the result,
/// `input` is the pair's index; an output without its own key gets the
/// pair's join key and one without a timestamp the later of its event
/// times, as the host gives them (both from the join's `extract`).
pub fn run_join<T: Join>(
    config: &[(&str, &str)],
    pairs: &[(Option<TestRecord>, Option<TestRecord>)],
) -> Result<TestOutput, Error> {
    let mut state = started::<T>(config)?;
    let (mut left, mut right) = (Vec::new(), Vec::new());
    let (mut left_index, mut right_index) = (Vec::new(), Vec::new());
    for (l, r) in pairs {
        if l.is_none() && r.is_none() {
            return Err("a pair needs at least one side".into());
        }
        for (record, records, index) in [
            (l, &mut left, &mut left_index),
            (r, &mut right, &mut right_index),
        ] {
            match record {
                Some(record) => {
                    index.push(records.len() as i32);
                    records.push(record.clone());
                }
                None => index.push(-1),
            }
        }
    }
    // What the host falls back on: the join key and the later time.
    let left_keys = keys(&mut state, Side::Left, &left)?;
    let right_keys = keys(&mut state, Side::Right, &right)?;
    let fallback: Vec<(Option<Vec<u8>>, Option<i64>)> = (0..pairs.len())
        .map(|p| {
            let l = usize::try_from(left_index[p]).ok().map(|i| &left_keys[i]);
            let r = usize::try_from(right_index[p]).ok().map(|i| &right_keys[i]);
            let known: Vec<&(Vec<u8>, i64)> = [l, r].into_iter().flatten().flatten().collect();
            (
                known.first().map(|(k, _)| k.clone()),
                known.iter().map(|(_, t)| *t).max(),
            )
        })
        .collect();
    let request = JoinRequest {
        left: encode_batch(&left).records,
        right: encode_batch(&right).records,
        left_index,
        right_index,
    };
    let output = join(&mut state, request)?;
    let outputs = decode_records(&output, pairs.len(), |p| fallback[p as usize].clone())?;
    let dead_letters: Vec<(u32, String)> = output
        .dead_letters
        .iter()
        .map(|d| (d.input, d.reason.clone()))
        .collect();
    let dropped = (0..pairs.len() as u32)
        .filter(|p| {
            output.inputs.binary_search(p).is_err() && !dead_letters.iter().any(|d| d.0 == *p)
        })
        .collect();
    Ok(TestOutput {
        outputs,
        dead_letters,
        dropped,
    })
}
