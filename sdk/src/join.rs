//! Stream-stream joins, the guest half: [`Join`] and [`Side`].
//!
//! The host owns time and state: it buffers both inputs per key in
//! event-time order, matches every record with the records of the other
//! side within the step's interval, tracks each side's watermark, evicts
//! what can no longer match and decides when an outer join's unmatched
//! record is final. A join says which key and event time a record of either
//! side has, and what a matched pair (or a lone outer row) becomes.

use std::borrow::Cow;

use crate::{Config, Emitter, Error, Record};

/// One of the two inputs of a join, as the spec's `join.left` and
/// `join.right` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The records of the topics in `join.left.topics`.
    Left,
    /// The records of the topics in `join.right.topics`.
    Right,
}

/// A stream-stream join. One value is built by [`Join::init`] per
/// instance; the host then calls, per batch, [`Join::key_and_time`] on every
/// record of each side, and [`Join::join`] once per pair the batch
/// completed (and per outer row that became final, with the absent side
/// `None`).
///
/// A record whose key or time fails is dead-lettered with the error's text;
/// a pair whose `join` fails dead-letters both its records.
///
/// ```
/// use std::borrow::Cow;
/// use sluice_sdk::{Config, Emitter, Error, Join, Record, Side};
///
/// /// Joins on the record key; the output is `left|right`.
/// struct Concat;
///
/// impl Join for Concat {
///     fn init(_config: &Config) -> Result<Self, Error> {
///         Ok(Concat)
///     }
///
///     fn key_and_time<'r>(&mut self, _side: Side, record: &Record<'r>) -> Result<(Cow<'r, [u8]>, i64), Error> {
///         Ok((Cow::Borrowed(record.key().ok_or("no key")?), record.timestamp().ok_or("no time")?))
///     }
///
///     fn join(&mut self, left: Option<&Record<'_>>, right: Option<&Record<'_>>, out: &mut Emitter<'_>) -> Result<(), Error> {
///         let text = |r: Option<&Record<'_>>| r.map_or(String::from("-"), |r| r.value_str().unwrap_or("?").to_owned());
///         out.emit(format!("{}|{}", text(left), text(right)));
///         Ok(())
///     }
/// }
///
/// use sluice_sdk::testing::{run_join, TestRecord};
/// let l = TestRecord::new().key("k").value("a").timestamp(1_000);
/// let r = TestRecord::new().key("k").value("b").timestamp(1_500);
/// let output = run_join::<Concat>(&[], &[(Some(l.clone()), Some(r)), (Some(l), None)]).unwrap();
/// assert_eq!(output.values_str(), ["a|b", "a|-"]);
/// ```
pub trait Join: Sized + 'static {
    /// Builds the join from its configuration, once per instance before
    /// the first batch. An error refuses the configuration: the pipeline
    /// does not start and the message is shown to the user.
    fn init(config: &Config) -> Result<Self, Error>;

    /// The join key and the event time (milliseconds since the Unix epoch)
    /// of a record of `side`. Records of the two sides with equal keys may
    /// join.
    fn key_and_time<'r>(
        &mut self,
        side: Side,
        record: &Record<'r>,
    ) -> Result<(Cow<'r, [u8]>, i64), Error>;

    /// The output of a matched pair (both present) or of an outer join's
    /// unmatched record (the other side `None`), emitted through `out`. An
    /// output record without a key gets the join key, one without a
    /// timestamp the later of the two event times. A record's
    /// [`Record::partition`] and [`Record::offset`] are not known here
    /// (0): it may have been read several batches ago.
    fn join(
        &mut self,
        left: Option<&Record<'_>>,
        right: Option<&Record<'_>>,
        out: &mut Emitter<'_>,
    ) -> Result<(), Error>;
}
