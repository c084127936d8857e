//! Runs a transform over one batch: decode the columns, call the transform per
//! record, encode the outputs. The wasm export (through
//! [`__export_transform!`](crate::__export_transform)) and the native test
//! harness both go through [`run_batch`], so native tests exercise the real
//! codec.

use crate::batch::InputView;
use crate::bindings::{InputBatch, OutputBatch};
use crate::output::OutputBuilder;
use crate::{Config, Emitter, Error, Record, Transform};

/// Calls `f` on every record of `batch`. A record whose call fails, or that
/// is dead-lettered, has its outputs rolled back and gets a dead-letter entry.
/// Fails only if the batch itself is malformed.
pub(crate) fn run_batch<F>(batch: &InputBatch, mut f: F) -> Result<OutputBatch, String>
where
    F: FnMut(&Record<'_>, &mut Emitter<'_>) -> Result<(), Error>,
{
    let view = InputView::new(batch)?;
    let mut out = OutputBuilder::for_input(&view.cols);
    for index in 0..view.len() {
        let record = Record::new(&view, index);
        let mark = out.mark();
        let mut emitter = Emitter::new(&mut out, record);
        let result = f(&record, &mut emitter);
        let reason = match (emitter.into_dead_letter(), result) {
            (Some(reason), _) => reason,
            (None, Err(e)) => e.to_string(),
            (None, Ok(())) => continue,
        };
        out.rollback(mark);
        out.dead_letter(record.index(), reason);
    }
    out.finish()
}

/// Runs `state` over an already-encoded batch: what the wasm export does per
/// `process` call, minus the boundary. For native benchmarks.
pub fn process_columns<T: Transform>(
    state: &mut T,
    batch: &InputBatch,
) -> Result<OutputBatch, String> {
    run_batch(batch, |record, out| state.process(record, out))
}

/// Like [`process_columns`], for a function-form transform (whose
/// `Transform` adapter is private to the guest crate): pass the function.
pub fn process_columns_fn<F, E>(mut f: F, batch: &InputBatch) -> Result<OutputBatch, String>
where
    F: FnMut(&Record<'_>, &mut Emitter<'_>) -> Result<(), E>,
    E: Into<Error>,
{
    run_batch(batch, |record, out| f(record, out).map_err(Into::into))
}

/// The export's `init`: builds the transform into `state`, which is left
/// empty if `init` fails.
pub fn init<T: Transform>(
    state: &mut Option<T>,
    config: Vec<(String, String)>,
) -> Result<(), String> {
    *state = None;
    *state = Some(T::init(&Config::from(config)).map_err(|e| e.to_string())?);
    Ok(())
}

/// The export's `process`: fails the batch if `init` has not succeeded.
pub fn process<T: Transform>(
    state: &mut Option<T>,
    batch: &InputBatch,
) -> Result<OutputBatch, String> {
    let state = state.as_mut().ok_or("transform not initialised")?;
    process_columns(state, batch)
}

/// `init` of a function-form transform, which takes no configuration.
pub fn expect_no_config(config: &Config) -> Result<(), Error> {
    match config.keys().next() {
        None => Ok(()),
        Some(key) => {
            Err(format!("this transform takes no configuration, but got key `{key}`").into())
        }
    }
}

/// Exports `$ty: Transform` as the component's `transform` interface.
///
/// The instance state (`None` until `init` succeeds) lives in a thread-local
/// of the guest crate; wasm components are single-threaded.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_transform {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct SluiceGuest;

            impl $crate::__private::Guest for SluiceGuest {
                fn init(
                    config: $crate::__private::types::Config,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    STATE.with_borrow_mut(|state| $crate::__private::init::<$ty>(state, config))
                }

                fn process(
                    batch: $crate::__private::types::InputBatch,
                ) -> ::core::result::Result<
                    $crate::__private::types::OutputBatch,
                    ::std::string::String,
                > {
                    STATE.with_borrow_mut(|state| $crate::__private::process::<$ty>(state, &batch))
                }
            }

            $crate::__private::bindings::transform::export_transform!(
                SluiceGuest with_types_in $crate::__private::bindings::transform
            );
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestRecord, encode_batch};

    struct Upper;

    impl Transform for Upper {
        fn init(config: &Config) -> Result<Self, Error> {
            expect_no_config(config)?;
            Ok(Self)
        }

        fn process(&mut self, record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
            out.emit(record.value_str()?.to_uppercase());
            Ok(())
        }
    }

    #[test]
    fn process_before_init_fails_the_batch() {
        let batch = encode_batch(&[TestRecord::new().value("a")]);
        let err = process::<Upper>(&mut None, &batch).unwrap_err();
        assert_eq!(err, "transform not initialised");
    }

    #[test]
    fn init_then_process() {
        let mut state = None;
        init::<Upper>(&mut state, vec![]).unwrap();
        let batch = encode_batch(&[TestRecord::new().value("a")]);
        let output = process(&mut state, &batch).unwrap();
        assert_eq!(output.records.values, b"A");
    }

    #[test]
    fn failed_init_leaves_no_state() {
        let mut state = None;
        init::<Upper>(&mut state, vec![]).unwrap();
        let err = init::<Upper>(&mut state, vec![("x".into(), "1".into())]).unwrap_err();
        assert_eq!(
            err,
            "this transform takes no configuration, but got key `x`"
        );
        assert!(state.is_none());
    }

    #[test]
    fn malformed_batch_is_a_batch_error() {
        let mut batch = encode_batch(&[TestRecord::new().value("abc")]);
        batch.records.value_offsets[1] = 4;
        let err = process_columns(&mut Upper, &batch).unwrap_err();
        assert_eq!(
            err,
            "malformed input batch: value-offsets ends at 4, past the end of values (3 bytes)"
        );
    }
}
