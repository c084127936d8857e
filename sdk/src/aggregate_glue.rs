//! Runs an [`Aggregate`] behind the WIT `aggregate` interface: one function
//! per WIT call, over the generated types, taking the instance state. The
//! wasm export (through [`__export_aggregate!`](crate::__export_aggregate))
//! and the native harness and benchmarks all go through these.
//!
//! Accumulators cross the boundary as postcard bytes, decoded and encoded
//! once per group per call.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::batch::{InputView, check_count, check_offsets, range};
use crate::bindings::{
    Accumulators, DeadLetter, FinishRequest, FoldRequest, FoldResult, InputBatch, Keyed,
    MergeRequest, OutputBatch,
};
use crate::output::OutputBuilder;
use crate::{Aggregate, Config, Emitter, Record, Window};

const NOT_INITIALISED: &str = "aggregate not initialised";

/// The state of one aggregate instance: the aggregate (once `init` has
/// succeeded), and the batch last passed to `extract` with its event times
/// and parsed values, which `fold` refers to by index.
pub struct AggregateState<T: Aggregate> {
    aggregate: Option<T>,
    batch: Option<InputBatch>,
    event_times: Vec<i64>,
    /// [`Aggregate::Parsed`] of each record of `batch` (a default for those
    /// `extract` refused); empty storage when it is `()`.
    parsed: Vec<T::Parsed>,
}

impl<T: Aggregate> AggregateState<T> {
    /// A state before `init`.
    pub const fn new() -> Self {
        Self {
            aggregate: None,
            batch: None,
            event_times: Vec::new(),
            parsed: Vec::new(),
        }
    }

    /// A state around an aggregate built without `init`.
    pub fn with(aggregate: T) -> Self {
        Self {
            aggregate: Some(aggregate),
            ..Self::new()
        }
    }

    /// The aggregate, once initialised.
    pub fn aggregate_mut(&mut self) -> Option<&mut T> {
        self.aggregate.as_mut()
    }

    fn initialised(&mut self) -> Result<&mut T, String> {
        self.aggregate
            .as_mut()
            .ok_or_else(|| NOT_INITIALISED.into())
    }
}

impl<T: Aggregate> Default for AggregateState<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// `init`: builds the aggregate, forgetting any previous state; the state
/// is left uninitialised if `init` fails.
pub fn init<T: Aggregate>(
    state: &mut AggregateState<T>,
    config: Vec<(String, String)>,
) -> Result<(), String> {
    *state = AggregateState::new();
    state.aggregate = Some(T::init(&Config::from(config)).map_err(|e| e.to_string())?);
    Ok(())
}

/// `extract`: the key and event time of every record. The batch, the
/// event times and the parsed values are kept for `fold`; a malformed batch
/// fails the call and leaves no batch to fold from.
pub fn extract<T: Aggregate>(
    state: &mut AggregateState<T>,
    batch: InputBatch,
) -> Result<Keyed, String> {
    state.batch = None;
    state.event_times.clear();
    state.parsed.clear();
    let AggregateState {
        aggregate, parsed, ..
    } = state;
    let aggregate = aggregate.as_mut().ok_or(NOT_INITIALISED)?;
    let view = InputView::new(&batch)?;
    let n = view.len();
    parsed.reserve(n);
    let mut keyed = Keyed {
        keys: Vec::with_capacity(view.cols.sizes()[0]),
        key_offsets: Vec::with_capacity(n + 1),
        event_times: Vec::with_capacity(n),
        dead_letters: Vec::new(),
    };
    keyed.key_offsets.push(0);
    for index in 0..n {
        let record = Record::new(&view, index);
        match aggregate.extract(&record) {
            Ok((key, time, value)) => {
                keyed.keys.extend_from_slice(&key);
                keyed.event_times.push(time);
                parsed.push(value);
            }
            Err(e) => {
                keyed.event_times.push(0);
                parsed.push(T::Parsed::default());
                keyed.dead_letters.push(DeadLetter {
                    input: record.index(),
                    reason: e.to_string(),
                });
            }
        }
        keyed.key_offsets.push(keyed.keys.len() as u32);
    }
    fits_u32("keys", keyed.keys.len())?;
    state.event_times.clone_from(&keyed.event_times);
    state.batch = Some(batch);
    Ok(keyed)
}

/// `fold`: folds records of the last extracted batch into the groups'
/// accumulators. A record whose fold fails is dead-lettered. A stored
/// accumulator that does not decode (say, written by an incompatible
/// version of the aggregate) is kept as it is and its group's records are
/// dead-lettered; a malformed request fails the call.
pub fn fold<T: Aggregate>(
    state: &mut AggregateState<T>,
    request: &FoldRequest,
) -> Result<FoldResult, String> {
    let AggregateState {
        aggregate,
        batch,
        event_times,
        parsed,
    } = state;
    let aggregate = aggregate.as_mut().ok_or(NOT_INITIALISED)?;
    let batch = batch.as_ref().ok_or("fold before a batch was extracted")?;
    let view = InputView::new(batch)?;
    let groups = request.fresh.len();
    let accumulators = AccView::new(&request.accumulators, Some(groups))
        .map_err(|e| format!("malformed fold request: {e}"))?;
    let (records, group_offsets) = (&request.records, &request.group_offsets);
    check_offsets(
        "group-offsets",
        group_offsets,
        groups,
        "records",
        records.len(),
    )
    .map_err(|e| format!("malformed fold request: {e}"))?;
    if let Some(r) = records.iter().find(|&&r| r as usize >= view.len()) {
        let n = view.len();
        return Err(format!(
            "malformed fold request: record {r} is past the end of the last extracted batch ({n} records)"
        ));
    }
    let mut out = AccBuilder::with_capacity(groups, request.accumulators.data.len());
    let mut dead_letters = Vec::new();
    for group in 0..groups {
        let records = &records[range(group_offsets, group)];
        let mut acc = if request.fresh[group] != 0 {
            T::Acc::default()
        } else {
            match decode::<T::Acc>(accumulators.get(group)) {
                Ok(acc) => acc,
                Err(e) => {
                    let reason =
                        format!("cannot decode the accumulator of the record's window: {e}");
                    let dead = records.iter().map(|&input| DeadLetter {
                        input,
                        reason: reason.clone(),
                    });
                    dead_letters.extend(dead);
                    out.push_bytes(accumulators.get(group));
                    continue;
                }
            }
        };
        for &index in records {
            let record = Record::new(&view, index as usize);
            let (time, parsed) = (event_times[index as usize], &parsed[index as usize]);
            if let Err(e) = aggregate.fold_parsed(&mut acc, &record, time, parsed) {
                let reason = e.to_string();
                dead_letters.push(DeadLetter {
                    input: index,
                    reason,
                });
            }
        }
        out.push(&acc)?;
    }
    Ok(FoldResult {
        accumulators: out.finish()?,
        dead_letters,
    })
}

/// `merge`: result `g` is the merge of group `g`'s accumulators, in order
/// (an empty group gives a new accumulator). An accumulator that does not
/// decode fails the call.
pub fn merge<T: Aggregate>(
    state: &mut AggregateState<T>,
    request: &MergeRequest,
) -> Result<Accumulators, String> {
    let aggregate = state.initialised()?;
    let malformed = |e: String| format!("malformed merge request: {e}");
    let accumulators = AccView::new(&request.accumulators, None).map_err(malformed)?;
    let offsets = &request.group_offsets;
    let groups = offsets
        .len()
        .checked_sub(1)
        .ok_or_else(|| malformed("group-offsets is empty, expected n + 1 entries".into()))?;
    check_offsets(
        "group-offsets",
        offsets,
        groups,
        "accumulators",
        accumulators.len(),
    )
    .map_err(malformed)?;
    let mut out = AccBuilder::with_capacity(groups, request.accumulators.data.len());
    for group in 0..groups {
        let mut accs = range(offsets, group).map(|i| {
            decode::<T::Acc>(accumulators.get(i))
                .map_err(|e| format!("cannot decode accumulator {i}: {e}"))
        });
        let mut acc = accs.next().transpose()?.unwrap_or_default();
        for other in accs {
            aggregate.merge(&mut acc, other?);
        }
        out.push(&acc)?;
    }
    out.finish()
}

/// `finish`: the output records of the due windows; `inputs` and dead
/// letters refer to groups. A window whose accumulator does not decode, or
/// whose `finish` fails, is dead-lettered and its outputs discarded.
pub fn finish<T: Aggregate>(
    state: &mut AggregateState<T>,
    request: &FinishRequest,
) -> Result<OutputBatch, String> {
    let aggregate = state.initialised()?;
    let groups = request.window_starts.len();
    let r = request;
    let malformed = |e: String| format!("malformed finish request: {e}");
    check_count("window-ends", r.window_ends.len(), groups, "group").map_err(malformed)?;
    check_count("final", r.final_.len(), groups, "group").map_err(malformed)?;
    check_offsets("key-offsets", &r.key_offsets, groups, "keys", r.keys.len())
        .map_err(malformed)?;
    let accumulators = AccView::new(&r.accumulators, Some(groups)).map_err(malformed)?;
    let mut out = OutputBuilder::with_capacity(groups, [0, 64 * groups, 0, 0, 0]);
    for group in 0..groups {
        let window = Window {
            key: &r.keys[range(&r.key_offsets, group)],
            start: r.window_starts[group],
            end: r.window_ends[group],
            is_final: r.final_[group] != 0,
        };
        let index = group as u32;
        let mark = out.mark();
        let mut emitter = Emitter::for_group(&mut out, index);
        let result = match decode::<T::Acc>(accumulators.get(group)) {
            Ok(acc) => aggregate.finish(&window, &acc, &mut emitter),
            Err(e) => Err(format!("cannot decode the window's accumulator: {e}").into()),
        };
        let reason = match (emitter.into_dead_letter(), result) {
            (Some(reason), _) => reason,
            (None, Err(e)) => e.to_string(),
            (None, Ok(())) => continue,
        };
        out.rollback(mark);
        out.dead_letter(index, reason);
    }
    out.finish()
}

/// Decodes one accumulator.
fn decode<A: DeserializeOwned>(bytes: &[u8]) -> Result<A, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// A validated `accumulators` record.
struct AccView<'a> {
    data: &'a [u8],
    offsets: &'a [u32],
}

impl<'a> AccView<'a> {
    /// Checks the layout; `n`, if given, is the expected number of
    /// accumulators.
    fn new(accs: &'a Accumulators, n: Option<usize>) -> Result<Self, String> {
        let offsets = &accs.offsets;
        let n = match n {
            Some(n) => n,
            None => offsets
                .len()
                .checked_sub(1)
                .ok_or("accumulators.offsets is empty, expected n + 1 entries".to_string())?,
        };
        let (data, len) = ("accumulators.data", accs.data.len());
        check_offsets("accumulators.offsets", offsets, n, data, len)?;
        Ok(Self {
            data: &accs.data,
            offsets,
        })
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    fn get(&self, i: usize) -> &'a [u8] {
        &self.data[range(self.offsets, i)]
    }
}

/// An `accumulators` record being built.
struct AccBuilder(Accumulators);

impl AccBuilder {
    fn with_capacity(n: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        Self(Accumulators {
            data: Vec::with_capacity(bytes),
            offsets,
        })
    }

    /// Appends `acc`, encoded. Failing to encode is a bug of the
    /// accumulator type (postcard encodes any plain serde data), so it fails
    /// the call.
    fn push<A: Serialize>(&mut self, acc: &A) -> Result<(), String> {
        let data = std::mem::take(&mut self.0.data);
        self.0.data = postcard::to_extend(acc, data)
            .map_err(|e| format!("cannot encode an accumulator: {e}"))?;
        self.0.offsets.push(self.0.data.len() as u32);
        Ok(())
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        self.0.data.extend_from_slice(bytes);
        self.0.offsets.push(self.0.data.len() as u32);
    }

    fn finish(self) -> Result<Accumulators, String> {
        fits_u32("accumulator bytes", self.0.data.len())?;
        Ok(self.0)
    }
}

/// Offsets are `u32`: impossible to exceed in 32-bit wasm, checked for
/// native runs.
fn fits_u32(what: &str, len: usize) -> Result<(), String> {
    match u32::try_from(len) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("{len} {what} do not fit u32 offsets")),
    }
}

/// Exports `$ty: Aggregate` as the component's `aggregate` interface.
///
/// The instance state lives in a thread-local of the guest crate; wasm
/// components are single-threaded.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_aggregate {
    ($ty:ty) => {
        const _: () = {
            use $crate::__private::aggregate as glue;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<glue::AggregateState<$ty>> =
                    const { ::core::cell::RefCell::new(glue::AggregateState::new()) };
            }

            struct SluiceGuest;

            impl glue::Guest for SluiceGuest {
                fn init(
                    config: $crate::__private::types::Config,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    STATE.with_borrow_mut(|state| glue::init(state, config))
                }

                fn extract(
                    batch: $crate::__private::types::InputBatch,
                ) -> ::core::result::Result<glue::types::Keyed, ::std::string::String> {
                    STATE.with_borrow_mut(|state| glue::extract(state, batch))
                }

                fn fold(
                    request: glue::types::FoldRequest,
                ) -> ::core::result::Result<glue::types::FoldResult, ::std::string::String>
                {
                    STATE.with_borrow_mut(|state| glue::fold(state, &request))
                }

                fn merge(
                    request: glue::types::MergeRequest,
                ) -> ::core::result::Result<glue::types::Accumulators, ::std::string::String>
                {
                    STATE.with_borrow_mut(|state| glue::merge(state, &request))
                }

                fn finish(
                    request: glue::types::FinishRequest,
                ) -> ::core::result::Result<
                    $crate::__private::types::OutputBatch,
                    ::std::string::String,
                > {
                    STATE.with_borrow_mut(|state| glue::finish(state, &request))
                }
            }

            $crate::__private::bindings::aggregate::export_aggregate!(
                SluiceGuest with_types_in $crate::__private::bindings::aggregate
            );
        };
    };
}

#[cfg(test)]
mod parsed_tests;
#[cfg(test)]
mod tests;
