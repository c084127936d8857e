//! Windowed aggregation, the guest half: [`Aggregate`] and [`Window`].
//!
//! The host owns time and state: it assigns records to event-time windows,
//! tracks watermarks, stores every accumulator and decides when a window's
//! result is due. An aggregate says which key and event time a record has,
//! folds records into accumulators, merges accumulators, and turns a finished
//! window's accumulator into output records.

use std::borrow::Cow;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Config, Emitter, Error, Record};

/// The dead-letter reason of the default [`Aggregate::fold`], reached only
/// by an impl without the macro that implements neither fold method.
const NO_FOLD: &str = "the aggregate implements neither `fold` nor `fold_parsed`";

/// A windowed aggregate. One value is built by [`Aggregate::init`] per
/// instance; the host then calls, per batch, [`Aggregate::key_and_time`] on
/// every record, [`Aggregate::fold`] to add records to the accumulators of
/// their windows, [`Aggregate::merge`] where windows combine (sessions that
/// a record bridges, panes of hopping windows), and [`Aggregate::finish`] for
/// every window whose result is due.
///
/// An aggregate that needs a record's content in `fold` too (an amount, a
/// user id) parses it once: [`Aggregate::extract`] returns what `fold` needs
/// as an [`Aggregate::Parsed`] value beside the key and event time, the SDK
/// keeps it for the batch, and [`Aggregate::fold_parsed`] receives it
/// instead of parsing the record again.
///
/// The accumulator, [`Aggregate::Acc`], lives in the host between calls, as
/// bytes: the SDK encodes it with [`postcard`](https://docs.rs/postcard), a
/// compact serde binary format, once per window per call (not per record).
/// A changed accumulator type cannot read accumulators checkpointed by an
/// older one, so evolve it the serde way: new fields at the end, with
/// `#[serde(default)]`.
///
/// A record whose key, event time or fold fails is dead-lettered with the
/// error's text; a window whose `finish` fails is reported as failed.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};
///
/// /// Counts records per key and window.
/// struct Count;
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Total {
///     records: u64,
/// }
///
/// impl Aggregate for Count {
///     type Acc = Total;
///     /// Nothing is kept per record. (Under `#[sluice_sdk::aggregate]`,
///     /// which exports the aggregate, this line may be left out.)
///     type Parsed = ();
///
///     fn init(_config: &Config) -> Result<Self, Error> {
///         Ok(Count)
///     }
///
///     fn fold(&mut self, acc: &mut Total, _record: &Record<'_>, _time: i64) -> Result<(), Error> {
///         acc.records += 1;
///         Ok(())
///     }
///
///     fn merge(&mut self, acc: &mut Total, other: Total) {
///         acc.records += other.records;
///     }
///
///     fn finish(&mut self, window: &Window<'_>, acc: &Total, out: &mut Emitter<'_>) -> Result<(), Error> {
///         out.emit(format!("{} {}..{}: {}", window.key_str()?, window.start, window.end, acc.records));
///         Ok(())
///     }
/// }
///
/// use sluice_sdk::testing::{run_aggregate, tumbling, TestRecord};
/// let records = [
///     TestRecord::new().key("a").timestamp(1_500),
///     TestRecord::new().key("a").timestamp(1_200),
///     TestRecord::new().key("b").timestamp(2_100),
/// ];
/// let output = run_aggregate::<Count>(&[], &records, tumbling(1_000)).unwrap();
/// assert_eq!(output.values_str(), ["a 1000..2000: 2", "b 2000..3000: 1"]);
/// ```
pub trait Aggregate: Sized + 'static {
    /// The accumulator of one window of one key. A new window starts from
    /// `Default::default()`.
    ///
    /// ```
    /// #[derive(Default, serde::Serialize, serde::Deserialize)]
    /// struct Acc {
    ///     count: u64,
    ///     sum: f64,
    ///     users: Vec<String>,
    /// }
    /// # let _ = Acc::default();
    /// ```
    type Acc: Serialize + DeserializeOwned + Default;

    /// What [`Aggregate::extract`] keeps of a record for
    /// [`Aggregate::fold_parsed`], so that `fold` does not parse the record
    /// again: `()` for an aggregate that keeps nothing.
    /// `#[sluice_sdk::aggregate]` declares `type Parsed = ();` for an impl
    /// that leaves it out.
    ///
    /// One value per record of the batch lives in the guest from `extract`
    /// to the batch's last `fold`; a value that owns memory (a `String`)
    /// costs an allocation per record, which is still much less than a
    /// second JSON parse. Records that `extract` refused hold
    /// `Default::default()`, never folded.
    ///
    /// ```
    /// /// The amount of an event, kept from `extract` for `fold`.
    /// #[derive(Default)]
    /// struct Amount(f64);
    /// # let _ = Amount::default().0;
    /// ```
    type Parsed: Default + 'static;

    /// Builds the aggregate from its configuration, once per instance before
    /// the first batch. An error refuses the configuration: the pipeline
    /// does not start and the message is shown to the user.
    ///
    /// ```
    /// # use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};
    /// struct Sum {
    ///     field: String,
    /// }
    ///
    /// impl Aggregate for Sum {
    ///     # type Acc = f64;
    ///     # type Parsed = ();
    ///     fn init(config: &Config) -> Result<Self, Error> {
    ///         Ok(Sum { field: config.get("field").unwrap_or("amount").to_owned() })
    ///     }
    ///     # fn fold(&mut self, _: &mut f64, _: &Record<'_>, _: i64) -> Result<(), Error> { Ok(()) }
    ///     # fn merge(&mut self, _: &mut f64, _: f64) {}
    ///     # fn finish(&mut self, _: &Window<'_>, _: &f64, _: &mut Emitter<'_>) -> Result<(), Error> { Ok(()) }
    /// }
    /// # assert_eq!(Sum::init(&Config::default()).unwrap().field, "amount");
    /// ```
    fn init(config: &Config) -> Result<Self, Error>;

    /// The grouping key of a record. The default is the record's Kafka key
    /// (empty if it has none). Return [`Cow::Borrowed`] bytes of the record
    /// where you can: they are copied once, with no allocation per record;
    /// [`str_key`] turns text into a key.
    ///
    /// ```
    /// # use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};
    /// use std::borrow::Cow;
    ///
    /// /// Groups by the `region` header.
    /// struct ByRegion;
    ///
    /// impl Aggregate for ByRegion {
    ///     # type Acc = u64;
    ///     # type Parsed = ();
    ///     # fn init(_: &Config) -> Result<Self, Error> { Ok(ByRegion) }
    ///     fn key<'r>(&mut self, record: &Record<'r>) -> Result<Cow<'r, [u8]>, Error> {
    ///         Ok(Cow::Borrowed(record.header("region").ok_or("no `region` header")?))
    ///     }
    ///     # fn fold(&mut self, n: &mut u64, _: &Record<'_>, _: i64) -> Result<(), Error> { *n += 1; Ok(()) }
    ///     # fn merge(&mut self, n: &mut u64, m: u64) { *n += m }
    ///     # fn finish(&mut self, w: &Window<'_>, n: &u64, out: &mut Emitter<'_>) -> Result<(), Error> {
    ///     #     out.emit(format!("{}={n}", w.key_str()?));
    ///     #     Ok(())
    ///     # }
    /// }
    /// # use sluice_sdk::testing::{run_aggregate, tumbling, TestRecord};
    /// # let records = [TestRecord::new().header("region", "eu").timestamp(0), TestRecord::new().timestamp(0)];
    /// # let output = run_aggregate::<ByRegion>(&[], &records, tumbling(10)).unwrap();
    /// # assert_eq!(output.values_str(), ["eu=1"]);
    /// # assert_eq!(output.dead_letters, [(1, "no `region` header".to_string())]);
    /// ```
    fn key<'r>(&mut self, record: &Record<'r>) -> Result<Cow<'r, [u8]>, Error> {
        Ok(Cow::Borrowed(record.key().unwrap_or_default()))
    }

    /// The event time of a record, in milliseconds since the Unix epoch. The
    /// default is the record's timestamp; a record without one is an error.
    ///
    /// ```
    /// # use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};
    /// /// Takes event time from a JSON field.
    /// struct ByField;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Event {
    ///     at_ms: i64,
    /// }
    ///
    /// impl Aggregate for ByField {
    ///     # type Acc = u64;
    ///     # type Parsed = ();
    ///     # fn init(_: &Config) -> Result<Self, Error> { Ok(ByField) }
    ///     fn event_time(&mut self, record: &Record<'_>) -> Result<i64, Error> {
    ///         Ok(record.json::<Event>()?.at_ms)
    ///     }
    ///     # fn fold(&mut self, n: &mut u64, _: &Record<'_>, _: i64) -> Result<(), Error> { *n += 1; Ok(()) }
    ///     # fn merge(&mut self, n: &mut u64, m: u64) { *n += m }
    ///     # fn finish(&mut self, w: &Window<'_>, n: &u64, out: &mut Emitter<'_>) -> Result<(), Error> {
    ///     #     out.emit(format!("{}: {n}", w.start));
    ///     #     Ok(())
    ///     # }
    /// }
    /// # use sluice_sdk::testing::{run_aggregate, tumbling, TestRecord};
    /// # let records = [TestRecord::new().value(r#"{"at_ms":1234}"#), TestRecord::new().value("{}")];
    /// # let output = run_aggregate::<ByField>(&[], &records, tumbling(1000)).unwrap();
    /// # assert_eq!(output.values_str(), ["1000: 1"]);
    /// # assert!(output.dead_letters[0].1.starts_with("invalid JSON in record value: missing field `at_ms`"));
    /// ```
    fn event_time(&mut self, record: &Record<'_>) -> Result<i64, Error> {
        record
            .timestamp()
            .ok_or_else(|| "record has no timestamp to take its event time from".into())
    }

    /// The key and event time of a record: what the SDK calls. The default
    /// calls [`Aggregate::key`] and [`Aggregate::event_time`]; override this
    /// instead of both to parse the record once.
    ///
    /// ```
    /// # use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};
    /// use std::borrow::Cow;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Event<'a> {
    ///     #[serde(borrow)]
    ///     user: Cow<'a, str>,
    ///     at_ms: i64,
    /// }
    ///
    /// struct PerUser;
    ///
    /// impl Aggregate for PerUser {
    ///     # type Acc = u64;
    ///     # type Parsed = ();
    ///     # fn init(_: &Config) -> Result<Self, Error> { Ok(PerUser) }
    ///     fn key_and_time<'r>(&mut self, record: &Record<'r>) -> Result<(Cow<'r, [u8]>, i64), Error> {
    ///         let event: Event<'r> = record.json()?;
    ///         Ok((sluice_sdk::str_key(event.user), event.at_ms))
    ///     }
    ///     # fn fold(&mut self, n: &mut u64, _: &Record<'_>, _: i64) -> Result<(), Error> { *n += 1; Ok(()) }
    ///     # fn merge(&mut self, n: &mut u64, m: u64) { *n += m }
    ///     # fn finish(&mut self, w: &Window<'_>, n: &u64, out: &mut Emitter<'_>) -> Result<(), Error> {
    ///     #     out.emit(format!("{} {}: {n}", w.key_str()?, w.start));
    ///     #     Ok(())
    ///     # }
    /// }
    /// # use sluice_sdk::testing::{run_aggregate, tumbling, TestRecord};
    /// # let records = [TestRecord::new().value(r#"{"user":"u1","at_ms":5}"#)];
    /// # let output = run_aggregate::<PerUser>(&[], &records, tumbling(10)).unwrap();
    /// # assert_eq!(output.values_str(), ["u1 0: 1"]);
    /// ```
    fn key_and_time<'r>(&mut self, record: &Record<'r>) -> Result<(Cow<'r, [u8]>, i64), Error> {
        Ok((self.key(record)?, self.event_time(record)?))
    }

    /// The key, event time and [`Aggregate::Parsed`] value of a record:
    /// what the SDK calls. The default calls [`Aggregate::key_and_time`] and
    /// keeps `Parsed::default()`; override this instead to parse the record
    /// once for both `extract` and [`Aggregate::fold_parsed`]. An error
    /// dead-letters the record.
    ///
    /// ```
    /// # use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};
    /// use std::borrow::Cow;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Event<'a> {
    ///     #[serde(borrow)]
    ///     user: Cow<'a, str>,
    ///     at_ms: i64,
    ///     amount: f64,
    /// }
    ///
    /// /// Sums amounts per user, parsing each record once.
    /// struct SumPerUser;
    ///
    /// impl Aggregate for SumPerUser {
    ///     type Acc = f64;
    ///     /// The record's amount.
    ///     type Parsed = f64;
    ///     # fn init(_: &Config) -> Result<Self, Error> { Ok(SumPerUser) }
    ///
    ///     fn extract<'r>(&mut self, record: &Record<'r>) -> Result<(Cow<'r, [u8]>, i64, f64), Error> {
    ///         let event: Event<'r> = record.json()?;
    ///         Ok((sluice_sdk::str_key(event.user), event.at_ms, event.amount))
    ///     }
    ///
    ///     fn fold_parsed(&mut self, sum: &mut f64, _: &Record<'_>, _: i64, amount: &f64) -> Result<(), Error> {
    ///         *sum += amount;
    ///         Ok(())
    ///     }
    ///     # fn merge(&mut self, sum: &mut f64, other: f64) { *sum += other }
    ///     # fn finish(&mut self, w: &Window<'_>, sum: &f64, out: &mut Emitter<'_>) -> Result<(), Error> {
    ///     #     out.emit(format!("{} {}: {sum}", w.key_str()?, w.start));
    ///     #     Ok(())
    ///     # }
    /// }
    /// # use sluice_sdk::testing::{run_aggregate, tumbling, TestRecord};
    /// let records = [
    ///     TestRecord::new().value(r#"{"user":"u1","at_ms":5,"amount":1.5}"#),
    ///     TestRecord::new().value(r#"{"user":"u1","at_ms":7,"amount":2}"#),
    ///     TestRecord::new().value(r#"{"user":"u1","at_ms":8}"#),
    /// ];
    /// let output = run_aggregate::<SumPerUser>(&[], &records, tumbling(10)).unwrap();
    /// assert_eq!(output.values_str(), ["u1 0: 3.5"]);
    /// assert!(output.dead_letters[0].1.contains("missing field `amount`"));
    /// ```
    fn extract<'r>(&mut self, record: &Record<'r>) -> Result<Extracted<'r, Self>, Error> {
        let (key, time) = self.key_and_time(record)?;
        Ok((key, time, Self::Parsed::default()))
    }

    /// Adds one record, whose event time is `event_time`, to the accumulator
    /// of one of its windows. Records of a window come in event-time order
    /// within one call. An error dead-letters the record and keeps the
    /// accumulator as `fold` left it, so check the record before changing
    /// `acc`.
    ///
    /// Implement this or [`Aggregate::fold_parsed`] (which by default calls
    /// this); `#[sluice_sdk::aggregate]` refuses an impl with neither, and
    /// without the macro the default dead-letters every record.
    ///
    /// ```
    /// # use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};
    /// #[derive(Default, serde::Serialize, serde::Deserialize)]
    /// struct Span {
    ///     first: Option<i64>,
    ///     last: i64,
    /// }
    ///
    /// struct Spans;
    ///
    /// impl Aggregate for Spans {
    ///     type Acc = Span;
    ///     # type Parsed = ();
    ///     # fn init(_: &Config) -> Result<Self, Error> { Ok(Spans) }
    ///     fn fold(&mut self, acc: &mut Span, _record: &Record<'_>, event_time: i64) -> Result<(), Error> {
    ///         acc.first = Some(acc.first.map_or(event_time, |t| t.min(event_time)));
    ///         acc.last = acc.last.max(event_time);
    ///         Ok(())
    ///     }
    ///     # fn merge(&mut self, _: &mut Span, _: Span) {}
    ///     # fn finish(&mut self, _: &Window<'_>, acc: &Span, out: &mut Emitter<'_>) -> Result<(), Error> {
    ///     #     out.emit(format!("{:?}..{}", acc.first, acc.last));
    ///     #     Ok(())
    ///     # }
    /// }
    /// # use sluice_sdk::testing::{run_aggregate, tumbling, TestRecord};
    /// # let records = [TestRecord::new().timestamp(7), TestRecord::new().timestamp(3)];
    /// # let output = run_aggregate::<Spans>(&[], &records, tumbling(10)).unwrap();
    /// # assert_eq!(output.values_str(), ["Some(3)..7"]);
    /// ```
    fn fold(
        &mut self,
        acc: &mut Self::Acc,
        record: &Record<'_>,
        event_time: i64,
    ) -> Result<(), Error> {
        let _ = (acc, record, event_time);
        Err(NO_FOLD.into())
    }

    /// [`Aggregate::fold`] with the record's [`Aggregate::Parsed`] value
    /// from [`Aggregate::extract`]: what the SDK calls. The default ignores
    /// `parsed` and calls `fold`. A record may be folded again after a
    /// fault elsewhere in its batch (on a new instance, after a new
    /// `extract`), so take from `parsed` by reference.
    ///
    /// ```
    /// # use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};
    /// # use std::borrow::Cow;
    /// /// Collects the distinct users of a window from `user=...` values.
    /// struct Users;
    ///
    /// impl Aggregate for Users {
    ///     type Acc = Vec<String>;
    ///     /// The user, parsed in `extract`.
    ///     type Parsed = String;
    ///     # fn init(_: &Config) -> Result<Self, Error> { Ok(Users) }
    ///     fn extract<'r>(&mut self, record: &Record<'r>) -> Result<(Cow<'r, [u8]>, i64, String), Error> {
    ///         let user = record.value_str()?.strip_prefix("user=").ok_or("no user")?;
    ///         Ok((Cow::Borrowed(b""), record.timestamp().ok_or("no timestamp")?, user.to_owned()))
    ///     }
    ///
    ///     fn fold_parsed(&mut self, users: &mut Vec<String>, _: &Record<'_>, _: i64, user: &String) -> Result<(), Error> {
    ///         if let Err(at) = users.binary_search(user) {
    ///             users.insert(at, user.clone());
    ///         }
    ///         Ok(())
    ///     }
    ///     # fn merge(&mut self, _: &mut Vec<String>, _: Vec<String>) {}
    ///     # fn finish(&mut self, _: &Window<'_>, users: &Vec<String>, out: &mut Emitter<'_>) -> Result<(), Error> {
    ///     #     out.emit(users.join(","));
    ///     #     Ok(())
    ///     # }
    /// }
    /// # use sluice_sdk::testing::{run_aggregate, tumbling, TestRecord};
    /// let records = ["user=b", "user=a", "user=b"].map(|v| TestRecord::new().value(v).timestamp(1));
    /// let output = run_aggregate::<Users>(&[], &records, tumbling(10)).unwrap();
    /// assert_eq!(output.values_str(), ["a,b"]);
    /// ```
    fn fold_parsed(
        &mut self,
        acc: &mut Self::Acc,
        record: &Record<'_>,
        event_time: i64,
        parsed: &Self::Parsed,
    ) -> Result<(), Error> {
        let _ = parsed;
        self.fold(acc, record, event_time)
    }

    /// Merges `other` into `acc`. When several accumulators merge they come
    /// in event-time order: `acc` holds the earlier records.
    ///
    /// ```
    /// # use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};
    /// struct Latest;
    ///
    /// impl Aggregate for Latest {
    ///     /// The latest record value seen.
    ///     type Acc = Option<String>;
    ///     # type Parsed = ();
    ///     # fn init(_: &Config) -> Result<Self, Error> { Ok(Latest) }
    ///     # fn fold(&mut self, acc: &mut Option<String>, r: &Record<'_>, _: i64) -> Result<(), Error> {
    ///     #     *acc = Some(r.value_str()?.to_owned());
    ///     #     Ok(())
    ///     # }
    ///     fn merge(&mut self, acc: &mut Option<String>, other: Option<String>) {
    ///         if other.is_some() {
    ///             *acc = other;
    ///         }
    ///     }
    ///     # fn finish(&mut self, _: &Window<'_>, _: &Option<String>, _: &mut Emitter<'_>) -> Result<(), Error> { Ok(()) }
    /// }
    /// let mut acc = Some("old".to_string());
    /// Latest.merge(&mut acc, Some("new".to_string()));
    /// assert_eq!(acc.as_deref(), Some("new"));
    /// ```
    fn merge(&mut self, acc: &mut Self::Acc, other: Self::Acc);

    /// Emits the result of a window through `out`. There is no input record
    /// here: an output without its own key gets the window's key, one
    /// without its own timestamp gets `window.end - 1`. An error (or
    /// [`Emitter::dead_letter`]) discards the window's outputs and reports
    /// the window as failed.
    ///
    /// ```
    /// # use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};
    /// struct Totals;
    ///
    /// impl Aggregate for Totals {
    ///     type Acc = u64;
    ///     # type Parsed = ();
    ///     # fn init(_: &Config) -> Result<Self, Error> { Ok(Totals) }
    ///     # fn fold(&mut self, n: &mut u64, _: &Record<'_>, _: i64) -> Result<(), Error> { *n += 1; Ok(()) }
    ///     # fn merge(&mut self, n: &mut u64, m: u64) { *n += m }
    ///     fn finish(&mut self, window: &Window<'_>, acc: &u64, out: &mut Emitter<'_>) -> Result<(), Error> {
    ///         out.emit_json(&serde_json::json!({
    ///             "key": window.key_str()?,
    ///             "start": window.start,
    ///             "count": acc,
    ///             "final": window.is_final,
    ///         }))
    ///     }
    /// }
    /// # use sluice_sdk::testing::{run_aggregate, tumbling, TestRecord};
    /// let output = run_aggregate::<Totals>(&[], &[TestRecord::new().key("k").timestamp(15)], tumbling(10)).unwrap();
    /// assert_eq!(output.values_str(), [r#"{"count":1,"final":true,"key":"k","start":10}"#]);
    /// assert_eq!(output.outputs[0].key.as_deref(), Some(&b"k"[..]));
    /// assert_eq!(output.outputs[0].timestamp, Some(19));
    /// ```
    fn finish(
        &mut self,
        window: &Window<'_>,
        acc: &Self::Acc,
        out: &mut Emitter<'_>,
    ) -> Result<(), Error>;
}

/// What [`Aggregate::extract`] returns for a record: its grouping key, its
/// event time and its [`Aggregate::Parsed`] value. Implementations may
/// write the tuple out instead.
///
/// ```
/// use std::borrow::Cow;
/// # use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};
/// # struct Amounts;
/// # impl Aggregate for Amounts {
/// #     type Acc = f64;
/// #     type Parsed = f64;
/// #     fn init(_: &Config) -> Result<Self, Error> { Ok(Amounts) }
/// #     fn fold_parsed(&mut self, a: &mut f64, _: &Record<'_>, _: i64, p: &f64) -> Result<(), Error> { *a += p; Ok(()) }
/// #     fn merge(&mut self, a: &mut f64, b: f64) { *a += b }
/// #     fn finish(&mut self, _: &Window<'_>, _: &f64, _: &mut Emitter<'_>) -> Result<(), Error> { Ok(()) }
/// # }
/// let extracted: sluice_sdk::Extracted<'_, Amounts> = (Cow::Borrowed(b"user-1"), 1_000, 2.5);
/// assert_eq!(extracted.2, 2.5);
/// ```
pub type Extracted<'r, A> = (Cow<'r, [u8]>, i64, <A as Aggregate>::Parsed);

/// A window whose result is due, as [`Aggregate::finish`] sees it: the
/// group key and the window `[start, end)`, in milliseconds since the Unix
/// epoch.
///
/// ```
/// use sluice_sdk::Window;
///
/// let window = Window { key: b"click", start: 60_000, end: 120_000, is_final: true };
/// assert_eq!(window.key_str().unwrap(), "click");
/// assert!(window.contains(60_000) && !window.contains(120_000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window<'a> {
    /// The group key, as [`Aggregate::key_and_time`] returned it.
    pub key: &'a [u8],
    /// The first millisecond of the window.
    pub start: i64,
    /// The first millisecond after the window.
    pub end: i64,
    /// Whether this is the window's final result, rather than an
    /// intermediate one (the host's `update` output mode).
    pub is_final: bool,
}

impl<'a> Window<'a> {
    /// The key as UTF-8 text; invalid UTF-8 is an error.
    ///
    /// ```
    /// let window = sluice_sdk::Window { key: &[0xff], start: 0, end: 1, is_final: true };
    /// assert!(window.key_str().unwrap_err().to_string().starts_with("window key is not valid UTF-8"));
    /// ```
    pub fn key_str(&self) -> Result<&'a str, Error> {
        std::str::from_utf8(self.key)
            .map_err(|e| format!("window key is not valid UTF-8: {e}").into())
    }

    /// Whether the event time `t` falls in the window.
    ///
    /// ```
    /// let window = sluice_sdk::Window { key: b"", start: 10, end: 20, is_final: false };
    /// assert!(window.contains(19));
    /// assert!(!window.contains(9));
    /// ```
    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }
}

/// Text as a grouping key, for [`Aggregate::key`]: borrowed text stays
/// borrowed.
///
/// ```
/// use std::borrow::Cow;
///
/// assert_eq!(sluice_sdk::str_key("click"), Cow::Borrowed(&b"click"[..]));
/// assert_eq!(sluice_sdk::str_key(String::from("view")).into_owned(), b"view");
/// ```
pub fn str_key<'r>(key: impl Into<Cow<'r, str>>) -> Cow<'r, [u8]> {
    match key.into() {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    }
}
