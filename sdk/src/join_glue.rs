//! Runs a [`Join`] behind the WIT `join` interface: one function per WIT
//! call, over the generated types, taking the instance state. The wasm
//! export (through [`__export_join!`](crate::__export_join)) and the native
//! harness both go through these.

use crate::batch::{InputView, check_count};
use crate::bindings::{
    Columns, DeadLetter, InputBatch, JoinKeyed, JoinRequest, JoinSide, OutputBatch,
};
use crate::output::OutputBuilder;
use crate::{Config, Emitter, Join, Record, Side};

const NOT_INITIALISED: &str = "join not initialised";

/// The state of one join instance: the join, once `init` has succeeded.
pub struct JoinState<T: Join> {
    join: Option<T>,
}

impl<T: Join> JoinState<T> {
    /// A state before `init`.
    pub const fn new() -> Self {
        Self { join: None }
    }

    fn initialised(&mut self) -> Result<&mut T, String> {
        self.join.as_mut().ok_or_else(|| NOT_INITIALISED.into())
    }
}

impl<T: Join> Default for JoinState<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// `init`: builds the join; the state is left uninitialised if `init`
/// fails.
pub fn init<T: Join>(
    state: &mut JoinState<T>,
    config: Vec<(String, String)>,
) -> Result<(), String> {
    state.join = None;
    state.join = Some(T::init(&Config::from(config)).map_err(|e| e.to_string())?);
    Ok(())
}

/// `extract`: the key and event time of every record of one side's batch;
/// a record whose key or time fails is dead-lettered (placeholders in its
/// key and time entries).
pub fn extract<T: Join>(
    state: &mut JoinState<T>,
    side: JoinSide,
    batch: InputBatch,
) -> Result<JoinKeyed, String> {
    let join = state.initialised()?;
    let side = match side {
        JoinSide::Left => Side::Left,
        JoinSide::Right => Side::Right,
    };
    let view = InputView::new(&batch)?;
    let n = view.len();
    let mut keyed = JoinKeyed {
        keys: Vec::with_capacity(view.cols.sizes()[0]),
        key_offsets: Vec::with_capacity(n + 1),
        event_times: Vec::with_capacity(n),
        dead_letters: Vec::new(),
    };
    keyed.key_offsets.push(0);
    for index in 0..n {
        let record = Record::new(&view, index);
        match join.key_and_time(side, &record) {
            Ok((key, time)) => {
                keyed.keys.extend_from_slice(&key);
                keyed.event_times.push(time);
            }
            Err(e) => {
                keyed.event_times.push(0);
                keyed.dead_letters.push(DeadLetter {
                    input: record.index(),
                    reason: e.to_string(),
                });
            }
        }
        keyed.key_offsets.push(offset(keyed.keys.len())?);
    }
    Ok(keyed)
}

/// `join`: the output records of every pair of the request; `inputs` and
/// dead letters refer to pairs. A pair whose `join` fails (or that
/// dead-letters itself) is dead-lettered and its outputs discarded.
pub fn join<T: Join>(
    state: &mut JoinState<T>,
    request: JoinRequest,
) -> Result<OutputBatch, String> {
    let join = state.initialised()?;
    let JoinRequest {
        left,
        right,
        left_index,
        right_index,
    } = request;
    let pairs = left_index.len();
    let malformed = |e: String| format!("malformed join request: {e}");
    check_count("right-index", right_index.len(), pairs, "pair").map_err(malformed)?;
    let (left, right) = (side_batch(left), side_batch(right));
    let left_view = InputView::new(&left).map_err(malformed)?;
    let right_view = InputView::new(&right).map_err(malformed)?;
    let record = |view: &'_ InputView<'_>, i: i32, what: &str| -> Result<Option<usize>, String> {
        match usize::try_from(i) {
            Err(_) if i == -1 => Ok(None),
            Ok(i) if i < view.len() => Ok(Some(i)),
            _ => Err(malformed(format!(
                "{what} {i} is neither -1 nor one of the {} records",
                view.len()
            ))),
        }
    };
    let mut out = OutputBuilder::with_capacity(pairs, [0, 64 * pairs, 0, 0, 0]);
    for pair in 0..pairs {
        let l = record(&left_view, left_index[pair], "left-index")?;
        let r = record(&right_view, right_index[pair], "right-index")?;
        if l.is_none() && r.is_none() {
            return Err(malformed(format!("pair {pair} has neither side")));
        }
        let l = l.map(|i| Record::new(&left_view, i));
        let r = r.map(|i| Record::new(&right_view, i));
        let index = pair as u32;
        let mark = out.mark();
        let mut emitter = Emitter::for_group(&mut out, index);
        let result = join.join(l.as_ref(), r.as_ref(), &mut emitter);
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

/// One side's records as an input batch (positions unknown: 0).
fn side_batch(records: Columns) -> InputBatch {
    let n = records.flags.len();
    InputBatch {
        records,
        partitions: vec![0; n],
        offsets: vec![0; n],
    }
}

/// Offsets are `u32`: impossible to exceed in 32-bit wasm, checked for
/// native runs.
fn offset(len: usize) -> Result<u32, String> {
    u32::try_from(len).map_err(|_| format!("{len} key bytes do not fit u32 offsets"))
}

/// Exports `$ty: Join` as the component's `join` interface.
///
/// The instance state lives in a thread-local of the guest crate; wasm
/// components are single-threaded.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_join {
    ($ty:ty) => {
        const _: () = {
            use $crate::__private::join as glue;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<glue::JoinState<$ty>> =
                    const { ::core::cell::RefCell::new(glue::JoinState::new()) };
            }

            struct SluiceGuest;

            impl glue::Guest for SluiceGuest {
                fn init(
                    config: $crate::__private::types::Config,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    STATE.with_borrow_mut(|state| glue::init(state, config))
                }

                fn extract(
                    side: glue::types::Side,
                    batch: $crate::__private::types::InputBatch,
                ) -> ::core::result::Result<glue::types::Keyed, ::std::string::String> {
                    STATE.with_borrow_mut(|state| glue::extract(state, side, batch))
                }

                fn join(
                    request: glue::types::JoinRequest,
                ) -> ::core::result::Result<
                    $crate::__private::types::OutputBatch,
                    ::std::string::String,
                > {
                    STATE.with_borrow_mut(|state| glue::join(state, request))
                }
            }

            $crate::__private::bindings::join::export_join!(
                SluiceGuest with_types_in $crate::__private::bindings::join
            );
        };
    };
}

#[cfg(test)]
mod tests;
