//! One join instance: the guest half of a stream-stream join. The host (see
//! `crate::join`) owns both sides' buffers, the matching and the
//! watermarks; this type only makes the two calls, under the same memory
//! cap and per-call deadline as transforms. A fault is isolated like a
//! transform's: the call is re-run one record (or one pair) at a time on
//! fresh instances, so that only what causes it is dead-lettered.

use super::aggregate::extracted;
pub use super::bindings::JoinSide;
use super::bindings::{self, JoinGuest};
use super::instance::{Fault, Instance, step_output, with_input};
use super::isolate::merge;
use super::module::InstantiateError;
use crate::batch::{Batch, Columns, Reason, StepOutput};

/// A live join instance.
pub type Joiner = Instance<JoinGuest>;

/// The join key and event time of each record of one side's batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Join keys, Arrow-style, one per record of the batch.
    pub keys: Vec<u8>,
    pub key_offsets: Vec<u32>,
    pub event_times: Vec<i64>,
    /// Records that cannot be joined: `(index, reason)`, in index order;
    /// their key and time entries are placeholders.
    pub dead_letters: Vec<(u32, Reason)>,
}

impl Keys {
    /// Record `i`'s key.
    pub fn key(&self, i: usize) -> &[u8] {
        &self.keys[self.key_offsets[i] as usize..self.key_offsets[i + 1] as usize]
    }

    /// Every record of `n` dead-lettered with `reason`.
    fn all_dead(n: usize, reason: &Reason) -> Self {
        Self {
            keys: Vec::new(),
            key_offsets: vec![0; n + 1],
            event_times: vec![0; n],
            dead_letters: (0..n as u32).map(|i| (i, reason.clone())).collect(),
        }
    }

    fn push(&mut self, key: &[u8], time: i64) {
        self.keys.extend_from_slice(key);
        self.key_offsets.push(self.keys.len() as u32);
        self.event_times.push(time);
    }
}

/// The pairs a batch completed, for the guest's `join`: the records taking
/// part, once each per side, and per pair an index into each side (`-1`:
/// that side absent, an outer row).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pairs {
    pub left: Columns,
    pub right: Columns,
    pub left_index: Vec<i32>,
    pub right_index: Vec<i32>,
}

impl Pairs {
    pub fn len(&self) -> usize {
        self.left_index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.left_index.is_empty()
    }

    /// Pair `i` alone.
    fn one(&self, i: usize) -> Self {
        let mut one = Self::default();
        for (columns, index, into, at) in [
            (
                &self.left,
                self.left_index[i],
                &mut one.left,
                &mut one.left_index,
            ),
            (
                &self.right,
                self.right_index[i],
                &mut one.right,
                &mut one.right_index,
            ),
        ] {
            if index >= 0 {
                into.push_ref(columns.get(index as usize), None);
                at.push(0);
            } else {
                at.push(-1);
            }
        }
        one
    }
}

impl Joiner {
    fn extract_call(
        &mut self,
        side: JoinSide,
        batch: &mut Batch,
    ) -> Result<Result<bindings::JoinKeyed, String>, Fault> {
        with_input(batch, |input| {
            self.enter(|guest, store| {
                guest
                    .sluice_transform_join()
                    .call_extract(store, side, input)
            })
        })
    }

    /// Checks the guest's answer for `n` records.
    fn checked_keys(keyed: bindings::JoinKeyed, n: usize) -> Result<Keys, String> {
        let bindings::JoinKeyed {
            keys,
            key_offsets,
            event_times,
            dead_letters,
        } = keyed;
        let e = extracted(
            bindings::Keyed {
                keys,
                key_offsets,
                event_times,
                dead_letters,
            },
            n,
        )?;
        let mut dead_letters = e.dead_letters;
        dead_letters.sort_by_key(|(i, _)| *i);
        dead_letters.dedup_by_key(|(i, _)| *i);
        Ok(Keys {
            keys: e.keys,
            key_offsets: e.key_offsets,
            event_times: e.event_times,
            dead_letters,
        })
    }

    /// The join key and event time of every record of `batch`, one side's.
    /// A batch whose call faults is re-run record by record on fresh
    /// instances, so that only the faulty records are dead-lettered.
    pub fn extract(&mut self, side: JoinSide, batch: &mut Batch) -> Result<Keys, InstantiateError> {
        let n = batch.len();
        match self.extract_call(side, batch) {
            Ok(Ok(keyed)) => match Self::checked_keys(keyed, n) {
                Ok(keys) => return Ok(keys),
                Err(invalid) => self.isolate_note("extract", &Fault::InvalidOutput(invalid)),
            },
            Ok(Err(message)) => return Ok(Keys::all_dead(n, &Reason::guest_error(&message))),
            Err(fault) => self.isolate_note("extract", &fault),
        }
        self.restart()?;
        let mut keys = Keys {
            key_offsets: vec![0],
            ..Keys::default()
        };
        for i in 0..n as u32 {
            let mut one = batch.select(&[i]);
            let dead = match self.extract_call(side, &mut one) {
                Ok(Ok(keyed)) => match Self::checked_keys(keyed, 1) {
                    Ok(k) if k.dead_letters.is_empty() => {
                        keys.push(k.key(0), k.event_times[0]);
                        continue;
                    }
                    Ok(mut k) => k.dead_letters.remove(0).1,
                    Err(invalid) => Fault::InvalidOutput(invalid).reason(),
                },
                Ok(Err(message)) => Reason::guest_error(&message),
                Err(fault) => {
                    self.restart()?;
                    fault.reason()
                }
            };
            keys.push(&[], 0);
            keys.dead_letters.push((i, dead));
        }
        Ok(keys)
    }

    fn join_call(&mut self, pairs: &Pairs) -> Result<Result<StepOutput, String>, Fault> {
        let request = bindings::JoinRequest {
            left: pairs.left.clone().into(),
            right: pairs.right.clone().into(),
            left_index: pairs.left_index.clone(),
            right_index: pairs.right_index.clone(),
        };
        let result =
            self.enter(|guest, store| guest.sluice_transform_join().call_join(store, &request))?;
        match result {
            Ok(output) => step_output(output, pairs.len())
                .map(Ok)
                .map_err(Fault::InvalidOutput),
            Err(message) => Ok(Err(message)),
        }
    }

    /// The output records of `pairs` (`inputs` and dead letters refer to
    /// pairs). The guest's own error dead-letters every pair; a fault is
    /// isolated pair by pair.
    pub fn join(&mut self, pairs: &Pairs) -> Result<StepOutput, InstantiateError> {
        let n = pairs.len();
        match self.join_call(pairs) {
            Ok(Ok(output)) => return Ok(output),
            Ok(Err(message)) => {
                let reason = Reason::guest_error(&message);
                return Ok(StepOutput {
                    dead_letters: (0..n as u32).map(|i| (i, reason.clone())).collect(),
                    ..StepOutput::default()
                });
            }
            Err(fault) => self.isolate_note("join", &fault),
        }
        self.restart()?;
        let mut out = StepOutput::default();
        for i in 0..n {
            match self.join_call(&pairs.one(i)) {
                Ok(Ok(one)) => merge(&mut out, one, |_| i as u32),
                Ok(Err(message)) => out
                    .dead_letters
                    .push((i as u32, Reason::guest_error(&message))),
                Err(fault) => {
                    out.dead_letters.push((i as u32, fault.reason()));
                    self.restart()?;
                }
            }
        }
        Ok(out)
    }

    fn isolate_note(&self, call: &str, fault: &Fault) {
        tracing::warn!(
            pipeline = &*self.labels.pipeline,
            step = &*self.labels.step,
            reason = %fault,
            "join guest fault in {call}; isolating the records that cause it"
        );
    }
}
