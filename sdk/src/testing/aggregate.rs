//! The aggregate half of the harness: plays the host's part (windows,
//! accumulator storage) just enough to run an [`Aggregate`] over records
//! through the same glue, and the same accumulator encoding, as the wasm
//! export.

use std::collections::BTreeMap;

use super::{TestOutput, TestRecord, decode_records, encode_batch};
use crate::aggregate_glue::{AggregateState, extract, finish, fold, init, merge};
use crate::bindings::{Accumulators, FinishRequest, FoldRequest, Keyed, MergeRequest};
use crate::{Aggregate, Error};

/// Tumbling windows of `size` milliseconds, for [`run_aggregate`]: the
/// window of event time `t` is `[t - t mod size, t - t mod size + size)`.
///
/// ```
/// let windows = sluice_sdk::testing::tumbling(60_000);
/// assert_eq!(windows(90_000), (60_000, 120_000));
/// assert_eq!(windows(-1), (-60_000, 0));
/// ```
pub fn tumbling(size: i64) -> impl Fn(i64) -> (i64, i64) {
    move |t| {
        let start = t.div_euclid(size) * size;
        (start, start + size)
    }
}

/// Runs an aggregate over `records`, with `windows` giving the window
/// `(start, end)` of an event time: `init` with `config`, then `extract`,
/// one `fold` of each (key, window) from a new accumulator in event-time
/// order, and a final `finish` of every window, in (end, start, key) order.
///
/// In the result, an output's `input` is the index of its window in that
/// order, and its key and timestamp are what the host gives it (the window's
/// key, and `end - 1`) unless it set its own; `dead_letters` lists the
/// records (by index) that `key_and_time` or `fold` refused; `dropped` is
/// empty. An `init` error, or a window whose `finish` failed, is an `Err`.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use sluice_sdk::testing::{run_aggregate, tumbling, TestRecord};
/// use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};
///
/// /// Sums numeric record values per key and window.
/// struct Sum;
///
/// impl Aggregate for Sum {
///     type Acc = f64;
///     # type Parsed = ();
///
///     fn init(_config: &Config) -> Result<Self, Error> {
///         Ok(Sum)
///     }
///
///     fn fold(&mut self, acc: &mut f64, record: &Record<'_>, _time: i64) -> Result<(), Error> {
///         *acc += record.value_str()?.parse::<f64>()?;
///         Ok(())
///     }
///
///     fn merge(&mut self, acc: &mut f64, other: f64) {
///         *acc += other;
///     }
///
///     fn finish(&mut self, _window: &Window<'_>, acc: &f64, out: &mut Emitter<'_>) -> Result<(), Error> {
///         out.emit(acc.to_string());
///         Ok(())
///     }
/// }
///
/// let records = [
///     TestRecord::new().key("a").value("1.5").timestamp(10),
///     TestRecord::new().key("a").value("x").timestamp(11),
///     TestRecord::new().key("a").value("2").timestamp(12),
///     TestRecord::new().key("a").value("4").timestamp(1_000),
/// ];
/// let output = run_aggregate::<Sum>(&[], &records, tumbling(1_000)).unwrap();
/// assert_eq!(output.values_str(), ["3.5", "4"]);
/// assert_eq!(output.outputs[1].key.as_deref(), Some(&b"a"[..]));
/// assert_eq!(output.outputs[1].timestamp, Some(1_999));
/// assert_eq!(output.dead_letters, [(1, "invalid float literal".to_string())]);
/// ```
pub fn run_aggregate<T: Aggregate>(
    config: &[(&str, &str)],
    records: &[TestRecord],
    windows: impl Fn(i64) -> (i64, i64),
) -> Result<TestOutput, Error> {
    let mut harness = Harness::<T>::start(config, records)?;
    let mut groups = Groups::new();
    for (index, key, time) in harness.extracted() {
        let (start, end) = windows(time);
        let members = groups.entry((end, start, key.to_vec())).or_default();
        members.push((time, index));
    }
    let mut request = FoldRequest {
        accumulators: Accumulators {
            data: Vec::new(),
            offsets: vec![0; groups.len() + 1],
        },
        fresh: vec![1; groups.len()],
        records: Vec::new(),
        group_offsets: vec![0],
    };
    for members in groups.values_mut() {
        members.sort_unstable();
        request
            .records
            .extend(members.iter().map(|&(_, index)| index));
        request.group_offsets.push(request.records.len() as u32);
    }
    let folded = harness.fold(&request)?;
    let finished = groups
        .into_iter()
        .zip(accumulators(&folded))
        .filter(|((_, members), _)| members.iter().any(|(_, i)| harness.folded(*i)))
        .map(|(((end, start, key), _), acc)| Finished {
            key,
            start,
            end,
            acc: acc.to_vec(),
        })
        .collect();
    harness.finish(finished)
}

/// Runs an aggregate over `records` in session windows with a gap of `gap`
/// milliseconds, the way the host merges them: records arrive in the given
/// order; each starts a session `[t, t + gap)` of its key, from a new
/// accumulator, which merges with every session of that key it overlaps or
/// touches (in start order). Then every session is finished, as for
/// [`run_aggregate`], whose result this has.
///
/// ```
/// use sluice_sdk::testing::{run_sessions, TestRecord};
/// use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};
///
/// /// Counts the records of a session.
/// struct Visits;
///
/// impl Aggregate for Visits {
///     type Acc = u32;
///     # type Parsed = ();
///
///     fn init(_config: &Config) -> Result<Self, Error> {
///         Ok(Visits)
///     }
///
///     fn fold(&mut self, acc: &mut u32, _record: &Record<'_>, _time: i64) -> Result<(), Error> {
///         *acc += 1;
///         Ok(())
///     }
///
///     fn merge(&mut self, acc: &mut u32, other: u32) {
///         *acc += other;
///     }
///
///     fn finish(&mut self, window: &Window<'_>, acc: &u32, out: &mut Emitter<'_>) -> Result<(), Error> {
///         out.emit(format!("{} [{}, {}): {acc}", window.key_str()?, window.start, window.end));
///         Ok(())
///     }
/// }
///
/// // 0 and 20 are two sessions until 10 bridges them.
/// let records = [0, 20, 10, 100].map(|t| TestRecord::new().key("u1").timestamp(t));
/// let output = run_sessions::<Visits>(&[], &records, 10).unwrap();
/// assert_eq!(output.values_str(), ["u1 [0, 30): 3", "u1 [100, 110): 1"]);
/// ```
pub fn run_sessions<T: Aggregate>(
    config: &[(&str, &str)],
    records: &[TestRecord],
    gap: i64,
) -> Result<TestOutput, Error> {
    let mut harness = Harness::<T>::start(config, records)?;
    let mut sessions: Vec<Finished> = Vec::new();
    let arrivals: Vec<(u32, Vec<u8>, i64)> = harness
        .extracted()
        .map(|(index, key, time)| (index, key.to_vec(), time))
        .collect();
    for (index, key, time) in arrivals {
        let request = FoldRequest {
            accumulators: Accumulators {
                data: Vec::new(),
                offsets: vec![0, 0],
            },
            fresh: vec![1],
            records: vec![index],
            group_offsets: vec![0, 1],
        };
        let folded = harness.fold(&request)?;
        if !harness.folded(index) {
            continue;
        }
        let new = Finished {
            key,
            start: time,
            end: time + gap,
            acc: folded.data,
        };
        let (mut merging, rest): (Vec<Finished>, Vec<Finished>) = sessions
            .into_iter()
            .partition(|s| s.key == new.key && s.start <= new.end && new.start <= s.end);
        sessions = rest;
        if merging.is_empty() {
            sessions.push(new);
            continue;
        }
        merging.push(new);
        merging.sort_by_key(|s| (s.start, s.end));
        let mut request = MergeRequest {
            accumulators: Accumulators {
                data: Vec::new(),
                offsets: vec![0],
            },
            group_offsets: vec![0, merging.len() as u32],
        };
        for s in &merging {
            request.accumulators.data.extend_from_slice(&s.acc);
            let len = request.accumulators.data.len() as u32;
            request.accumulators.offsets.push(len);
        }
        let merged = merge(&mut harness.state, &request)?;
        sessions.push(Finished {
            key: merging[0].key.clone(),
            start: merging.iter().map(|s| s.start).min().unwrap_or(time),
            end: merging.iter().map(|s| s.end).max().unwrap_or(time + gap),
            acc: merged.data,
        });
    }
    sessions.sort_by(|a, b| (a.end, a.start, &a.key).cmp(&(b.end, b.start, &b.key)));
    harness.finish(sessions)
}

/// The windows of [`run_aggregate`], in finish order: `(end, start, key)` to
/// the `(event time, index)` of its records.
type Groups = BTreeMap<(i64, i64, Vec<u8>), Vec<(i64, u32)>>;

/// A window to finish.
struct Finished {
    key: Vec<u8>,
    start: i64,
    end: i64,
    acc: Vec<u8>,
}

/// The accumulators of a result, in order.
fn accumulators(accs: &Accumulators) -> impl Iterator<Item = &[u8]> {
    accs.offsets
        .windows(2)
        .map(|w| &accs.data[w[0] as usize..w[1] as usize])
}

/// One aggregate instance and what it has refused so far.
struct Harness<T: Aggregate> {
    state: AggregateState<T>,
    keyed: Keyed,
    dead_letters: Vec<(u32, String)>,
}

impl<T: Aggregate> Harness<T> {
    /// `init`, then `extract` of all the records.
    fn start(config: &[(&str, &str)], records: &[TestRecord]) -> Result<Self, Error> {
        let mut state = AggregateState::new();
        let config = config.iter().map(|&(k, v)| (k.into(), v.into()));
        init(&mut state, config.collect())?;
        let keyed = extract(&mut state, encode_batch(records))?;
        let dead_letters = keyed
            .dead_letters
            .iter()
            .map(|d| (d.input, d.reason.clone()))
            .collect();
        Ok(Self {
            state,
            keyed,
            dead_letters,
        })
    }

    /// `(index, key, event time)` of the records `extract` accepted.
    fn extracted(&self) -> impl Iterator<Item = (u32, &[u8], i64)> {
        let k = &self.keyed;
        (0..k.event_times.len() as u32)
            .filter(|i| self.folded(*i))
            .map(move |i| {
                let key = &k.keys
                    [k.key_offsets[i as usize] as usize..k.key_offsets[i as usize + 1] as usize];
                (i, key, k.event_times[i as usize])
            })
    }

    /// Whether record `index` has not been dead-lettered.
    fn folded(&self, index: u32) -> bool {
        self.dead_letters.iter().all(|(i, _)| *i != index)
    }

    fn fold(&mut self, request: &FoldRequest) -> Result<Accumulators, Error> {
        let result = fold(&mut self.state, request)?;
        let dead = result.dead_letters.into_iter();
        self.dead_letters.extend(dead.map(|d| (d.input, d.reason)));
        Ok(result.accumulators)
    }

    /// Finishes `windows` (final results), in order.
    fn finish(mut self, windows: Vec<Finished>) -> Result<TestOutput, Error> {
        let mut request = FinishRequest {
            keys: Vec::new(),
            key_offsets: vec![0],
            window_starts: Vec::new(),
            window_ends: Vec::new(),
            accumulators: Accumulators {
                data: Vec::new(),
                offsets: vec![0],
            },
            final_: vec![1; windows.len()],
        };
        for w in &windows {
            request.keys.extend_from_slice(&w.key);
            request.key_offsets.push(request.keys.len() as u32);
            request.window_starts.push(w.start);
            request.window_ends.push(w.end);
            request.accumulators.data.extend_from_slice(&w.acc);
            let len = request.accumulators.data.len() as u32;
            request.accumulators.offsets.push(len);
        }
        let output = finish(&mut self.state, &request)?;
        if let Some(dead) = output.dead_letters.first() {
            let w = &windows[dead.input as usize];
            let key = String::from_utf8_lossy(&w.key);
            let (start, end, reason) = (w.start, w.end, &dead.reason);
            return Err(format!("window [{start}, {end}) of key `{key}` failed: {reason}").into());
        }
        let defaults = |g: u32| {
            let w = &windows[g as usize];
            (Some(w.key.clone()), Some(w.end - 1))
        };
        let outputs = decode_records(&output, windows.len(), defaults)?;
        self.dead_letters.sort_by_key(|d| d.0);
        Ok(TestOutput {
            outputs,
            dead_letters: self.dead_letters,
            dropped: Vec::new(),
        })
    }
}
