//! Write [Sluice](https://github.com/sluice-rs/sluice) stream transforms and
//! windowed aggregates in Rust, compiled to `wasm32-wasip2` components.
//!
//! A transform sees every input record of a micro-batch and decides, per
//! record, to drop it, to emit zero or more output records (to the default
//! output or to named outputs), or to dead-letter it with a reason. Write one
//! function (or one [`Transform`] impl, if it needs configuration or state) and
//! put `#[sluice_sdk::transform]` on it: the macro exports it as a component.
//!
//! ```standalone_crate
//! use sluice_sdk::{Emitter, Error, Record};
//!
//! /// Drops records without a key.
//! #[sluice_sdk::transform]
//! fn keyed_only(record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
//!     if record.key().is_some() {
//!         out.forward();
//!     }
//!     Ok(())
//! }
//!
//! // The function stays a normal function, testable natively:
//! use sluice_sdk::testing::{run_fn, TestRecord};
//! let output = run_fn(keyed_only, &[TestRecord::new().key("k").value("v"), TestRecord::new().value("v")]);
//! assert_eq!(output.values_str(), ["v"]);
//! assert_eq!(output.dropped, [1]);
//! ```
//!
//! A windowed aggregate is an [`Aggregate`] impl under
//! `#[sluice_sdk::aggregate]`: the host owns windows, watermarks and the
//! stored accumulators; the aggregate gives each record a key and an event
//! time, folds records into accumulators, merges accumulators and turns a
//! finished [`Window`] into output records. A stream-stream join is a
//! [`Join`] impl under `#[sluice_sdk::join]`: the host buffers both sides
//! and matches them; the join gives each record a key and an event time
//! and builds the output of each matched pair (or outer row). A crate
//! exports one transform, one aggregate or one join.
//!
//! Build with `cargo build --target wasm32-wasip2` (crate type `cdylib`).
//! Natively the same code builds and runs with plain `cargo test`, through
//! [`testing`]; [`log`] then writes to standard error.
//!
//! Helpers that guests would otherwise each write: [`Config::deny_unknown`]
//! refuses configuration keys a step does not know, and [`time`] reads and
//! writes RFC 3339 timestamps as milliseconds since the Unix epoch.
//!
//! Errors: returning `Err` from a transform, or calling
//! [`Emitter::dead_letter`], discards the record's outputs and sends it to the
//! dead-letter queue with the error's text. A panic traps the instance; the
//! host isolates the offending record.

#![deny(missing_docs)]

mod aggregate;
mod aggregate_glue;
mod batch;
mod bindings;
mod config;
mod emit;
mod glue;
mod join;
mod join_glue;
pub mod log;
mod output;
mod record;
pub mod testing;
pub mod time;

pub use aggregate::{Aggregate, Extracted, Window, str_key};
pub use config::Config;
pub use emit::{Emitter, OutputRecord};
pub use join::{Join, Side};
pub use record::{Headers, Record};

/// Exports a transform from a guest crate. Put it on either
///
/// - a function `fn(&Record<'_>, &mut Emitter<'_>) -> Result<(), E>` with
///   `E: Into<Error>`, for a transform without configuration or state (its
///   `init` rejects any configuration key); the function stays callable, or
/// - an `impl Transform for MyType` block, for a configurable or stateful
///   transform.
///
/// One transform (or aggregate) per crate: a component exports one world.
/// The export glue exists only on `wasm32`, so many guest crates can be
/// linked into one native test binary.
///
/// ```standalone_crate
/// use sluice_sdk::{Config, Emitter, Error, Record, Transform};
///
/// /// Emits every record's value `times` times.
/// struct Repeat {
///     times: usize,
/// }
///
/// #[sluice_sdk::transform]
/// impl Transform for Repeat {
///     fn init(config: &Config) -> Result<Self, Error> {
///         Ok(Repeat { times: config.parse("times")?.unwrap_or(2) })
///     }
///
///     fn process(&mut self, record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
///         for _ in 0..self.times {
///             out.forward();
///         }
///         Ok(())
///     }
/// }
/// # use sluice_sdk::testing::{run, TestRecord};
/// let output = run::<Repeat>(&[("times", "3")], &[TestRecord::new().value("x")]).unwrap();
/// assert_eq!(output.values_str(), ["x", "x", "x"]);
/// ```
///
/// Misuse is a compile error: on anything but a function or a `Transform`
/// impl, with a signature other than the one above, on an `async`, generic
/// or `unsafe` function, and for a second transform in the same crate:
///
/// ```compile_fail,E0428
/// use sluice_sdk::{Emitter, Error, Record};
///
/// #[sluice_sdk::transform]
/// fn first(_: &Record<'_>, _: &mut Emitter<'_>) -> Result<(), Error> { Ok(()) }
///
/// #[sluice_sdk::transform] // error: `only_one_sluice_export_per_crate` is defined multiple times
/// fn second(_: &Record<'_>, _: &mut Emitter<'_>) -> Result<(), Error> { Ok(()) }
/// ```
pub use sluice_sdk_macros::transform;

/// Exports a windowed aggregate from a guest crate. Put it on an
/// `impl Aggregate for MyType` block; the impl is kept as written, except
/// that `type Parsed = ();` is declared if the impl leaves
/// [`Aggregate::Parsed`] out.
///
/// One aggregate (or transform) per crate: a component exports one world.
/// The export glue exists only on `wasm32`, so the impl stays testable
/// natively with [`testing::run_aggregate`] and [`testing::run_sessions`].
///
/// ```standalone_crate
/// use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};
///
/// /// Counts records per key and window.
/// struct Count;
///
/// #[sluice_sdk::aggregate]
/// impl Aggregate for Count {
///     type Acc = u64;
///
///     fn init(_config: &Config) -> Result<Self, Error> {
///         Ok(Count)
///     }
///
///     fn fold(&mut self, acc: &mut u64, _record: &Record<'_>, _time: i64) -> Result<(), Error> {
///         *acc += 1;
///         Ok(())
///     }
///
///     fn merge(&mut self, acc: &mut u64, other: u64) {
///         *acc += other;
///     }
///
///     fn finish(&mut self, window: &Window<'_>, acc: &u64, out: &mut Emitter<'_>) -> Result<(), Error> {
///         out.emit_json(&serde_json::json!({ "key": window.key_str()?, "start": window.start, "count": acc }))
///     }
/// }
/// # use sluice_sdk::testing::{run_aggregate, tumbling, TestRecord};
/// let records = [TestRecord::new().key("a").timestamp(5), TestRecord::new().key("a").timestamp(7)];
/// let output = run_aggregate::<Count>(&[], &records, tumbling(10)).unwrap();
/// assert_eq!(output.values_str(), [r#"{"count":2,"key":"a","start":0}"#]);
/// ```
///
/// Misuse is a compile error: on anything but an `Aggregate` impl, on a
/// generic or `unsafe` impl, on an impl with neither `fold` nor
/// `fold_parsed`, and next to another aggregate or a transform in the same
/// crate:
///
/// ```compile_fail,E0428
/// use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};
///
/// #[sluice_sdk::transform]
/// fn route(_: &Record<'_>, _: &mut Emitter<'_>) -> Result<(), Error> { Ok(()) }
///
/// struct Count;
///
/// #[sluice_sdk::aggregate] // error: `only_one_sluice_export_per_crate` is defined multiple times
/// impl Aggregate for Count {
///     type Acc = u64;
///     fn init(_: &Config) -> Result<Self, Error> { Ok(Count) }
///     fn fold(&mut self, n: &mut u64, _: &Record<'_>, _: i64) -> Result<(), Error> { *n += 1; Ok(()) }
///     fn merge(&mut self, n: &mut u64, m: u64) { *n += m }
///     fn finish(&mut self, _: &Window<'_>, _: &u64, _: &mut Emitter<'_>) -> Result<(), Error> { Ok(()) }
/// }
/// ```
///
/// ```compile_fail
/// use sluice_sdk::{Aggregate, Config, Emitter, Error, Window};
///
/// struct Count;
///
/// #[sluice_sdk::aggregate]
/// impl Aggregate for Count { // error: an aggregate must define `fold` (or `fold_parsed`, ...)
///     type Acc = u64;
///     fn init(_: &Config) -> Result<Self, Error> { Ok(Count) }
///     fn merge(&mut self, n: &mut u64, m: u64) { *n += m }
///     fn finish(&mut self, _: &Window<'_>, _: &u64, _: &mut Emitter<'_>) -> Result<(), Error> { Ok(()) }
/// }
/// ```
///
/// ```compile_fail
/// use sluice_sdk::{Emitter, Error, Record};
///
/// #[sluice_sdk::aggregate] // error: goes on an `impl Aggregate for YourType` block, not on a function
/// fn count(_: &Record<'_>, _: &mut Emitter<'_>) -> Result<(), Error> { Ok(()) }
/// ```
pub use sluice_sdk_macros::aggregate;

/// Exports a stream-stream join from a guest crate. Put it on an
/// `impl Join for MyType` block; the impl is kept as written. The host
/// buffers both sides and matches them (see the spec's `join` section);
/// the join gives each record's key and event time and builds each pair's
/// output.
///
/// One join (or transform, or aggregate) per crate: a component exports
/// one world. The export glue exists only on `wasm32`, so the impl stays
/// testable natively with [`testing::run_join`] and [`testing::join_keys`].
///
/// ```standalone_crate
/// use std::borrow::Cow;
/// use sluice_sdk::{Config, Emitter, Error, Join, Record, Side};
///
/// /// Orders and payments by the record key: the payment's value.
/// struct Paid;
///
/// #[sluice_sdk::join]
/// impl Join for Paid {
///     fn init(_config: &Config) -> Result<Self, Error> {
///         Ok(Paid)
///     }
///
///     fn key_and_time<'r>(&mut self, _side: Side, record: &Record<'r>) -> Result<(Cow<'r, [u8]>, i64), Error> {
///         Ok((Cow::Borrowed(record.key().ok_or("no key")?), record.timestamp().ok_or("no time")?))
///     }
///
///     fn join(&mut self, _order: Option<&Record<'_>>, payment: Option<&Record<'_>>, out: &mut Emitter<'_>) -> Result<(), Error> {
///         if let Some(payment) = payment {
///             out.emit(payment.value().unwrap_or_default());
///         }
///         Ok(())
///     }
/// }
/// # use sluice_sdk::testing::{run_join, TestRecord};
/// let order = TestRecord::new().key("o1").value("order").timestamp(1);
/// let payment = TestRecord::new().key("o1").value("paid").timestamp(2);
/// let output = run_join::<Paid>(&[], &[(Some(order), Some(payment))]).unwrap();
/// assert_eq!(output.values_str(), ["paid"]);
/// ```
pub use sluice_sdk_macros::join;

/// The error a transform returns: anything that converts into it with `?` or
/// `.into()`, such as a `serde_json::Error`, a `String` or a `&str`. Its text
/// becomes the dead-letter reason (or, from [`Transform::init`], the message
/// shown to the user).
///
/// ```
/// fn check(n: i64) -> Result<i64, sluice_sdk::Error> {
///     if n < 0 {
///         return Err(format!("negative amount {n}").into());
///     }
///     let parsed: i64 = "42".parse()?;
///     Ok(n + parsed)
/// }
/// assert_eq!(check(-1).unwrap_err().to_string(), "negative amount -1");
/// ```
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A configurable or stateful transform. One value is built by
/// [`Transform::init`] per instance and then sees every record of every batch
/// that instance processes, in order.
///
/// ```
/// use sluice_sdk::{Config, Emitter, Error, Record, Transform};
///
/// /// Numbers records per instance.
/// struct Count(u64);
///
/// impl Transform for Count {
///     fn init(_config: &Config) -> Result<Self, Error> {
///         Ok(Count(0))
///     }
///
///     fn process(&mut self, _record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
///         self.0 += 1;
///         out.emit(self.0.to_string());
///         Ok(())
///     }
/// }
/// # use sluice_sdk::testing::{run, TestRecord};
/// let output = run::<Count>(&[], &[TestRecord::new(), TestRecord::new()]).unwrap();
/// assert_eq!(output.values_str(), ["1", "2"]);
/// ```
pub trait Transform: Sized + 'static {
    /// Builds the transform from its configuration, once per instance before
    /// the first batch. An error refuses the configuration: the pipeline
    /// does not start and the message is shown to the user.
    ///
    /// ```
    /// # use sluice_sdk::{Config, Emitter, Error, Record, Transform};
    /// struct Threshold(f64);
    ///
    /// impl Transform for Threshold {
    ///     fn init(config: &Config) -> Result<Self, Error> {
    ///         Ok(Threshold(config.parse("min")?.ok_or("`min` is required")?))
    ///     }
    /// #   fn process(&mut self, _: &Record<'_>, _: &mut Emitter<'_>) -> Result<(), Error> { Ok(()) }
    /// }
    /// # let config: Config = [("min", "1.5")].into_iter().collect();
    /// # assert_eq!(Threshold::init(&config).unwrap().0, 1.5);
    /// ```
    fn init(config: &Config) -> Result<Self, Error>;

    /// Handles one input record, emitting its outputs through `out`. An
    /// error dead-letters the record and discards what it emitted.
    ///
    /// ```
    /// # use sluice_sdk::{Config, Emitter, Error, Record, Transform};
    /// struct NonEmpty;
    ///
    /// impl Transform for NonEmpty {
    /// #   fn init(_: &Config) -> Result<Self, Error> { Ok(NonEmpty) }
    ///     fn process(&mut self, record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
    ///         match record.value() {
    ///             Some(value) if !value.is_empty() => out.forward(),
    ///             _ => out.dead_letter("empty value"),
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// # let output = sluice_sdk::testing::run::<NonEmpty>(&[], &[sluice_sdk::testing::TestRecord::new()]).unwrap();
    /// # assert_eq!(output.dead_letters, [(0, "empty value".to_string())]);
    /// ```
    fn process(&mut self, record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error>;
}

/// What the `#[transform]` expansion and the host's native benchmarks use.
/// Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::TransformGuest as Guest;
    pub use crate::glue::{expect_no_config, init, process, process_columns, process_columns_fn};
    pub use crate::testing::{decode_output, encode_batch};

    /// The generated bindings of each world, for the export macros.
    pub mod bindings {
        pub use crate::bindings::{aggregate, join, transform};
    }

    /// The join world: one function per WIT call, over the generated
    /// types, taking the instance state.
    pub mod join {
        pub use crate::bindings::JoinGuest as Guest;
        pub use crate::join_glue::{JoinState, extract, init, join};

        /// The wit-bindgen types of the `join` interface.
        pub mod types {
            pub use crate::bindings::{JoinKeyed as Keyed, JoinRequest, JoinSide as Side};
        }
    }

    /// The aggregate world: one function per WIT call, over the generated
    /// types, taking the instance state.
    pub mod aggregate {
        pub use crate::aggregate_glue::{AggregateState, extract, finish, fold, init, merge};
        pub use crate::bindings::AggregateGuest as Guest;

        /// The wit-bindgen types of the `aggregate` interface.
        pub mod types {
            pub use crate::bindings::{
                Accumulators, FinishRequest, FoldRequest, FoldResult, Keyed, MergeRequest,
            };
        }
    }

    /// The wit-bindgen types of the `types` interface.
    pub mod types {
        pub use crate::bindings::{Columns, DeadLetter, InputBatch, OutputBatch};

        /// `types.config`: what the host passes to `init`.
        pub type Config = Vec<(String, String)>;
    }

    /// An encoded input batch, as `process` receives it.
    pub type InputBatchData = types::InputBatch;
    /// An encoded output batch, as `process` returns it.
    pub type OutputBatchData = types::OutputBatch;
}
