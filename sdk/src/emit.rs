//! What a transform does with an input record: [`Emitter`] and
//! [`OutputRecord`].

use std::convert::Infallible;
use std::fmt::Display;

use serde::Serialize;

use crate::Error;
use crate::output::OutputBuilder;
use crate::record::{Headers, Record};

/// Sends output records for the current input record, writing them straight
/// into the batch's output columns.
///
/// An input record for which nothing is emitted is dropped. Outputs go to the
/// default output, or to a named output (`*_to` methods) that the pipeline
/// spec maps to a sink; the name `"default"` means the default output. If the
/// transform returns an error or calls [`Emitter::dead_letter`], everything it
/// emitted for this record is discarded and the record is dead-lettered.
///
/// In [`Aggregate::finish`](crate::Aggregate::finish) there is no input
/// record: the emitter stands for the finished window. `emit*` then sets no
/// key, headers or timestamp, so the host gives each output the group key
/// and the window's `end - 1` as timestamp (an [`OutputRecord`] may set its
/// own); `forward` has nothing to forward and dead-letters the window;
/// [`Emitter::dead_letter`] and an error discard the window's outputs and
/// report it as failed.
///
/// ```
/// use sluice_sdk::{Emitter, Error, Record};
///
/// fn split_lines(record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
///     for line in record.value_str()?.lines() {
///         out.emit(line);
///     }
///     Ok(())
/// }
/// # use sluice_sdk::testing::{run_fn, TestRecord};
/// let output = run_fn(split_lines, &[TestRecord::new().value("a\nb")]);
/// assert_eq!(output.values_str(), ["a", "b"]);
/// ```
pub struct Emitter<'a> {
    out: &'a mut OutputBuilder,
    origin: Origin<'a>,
    dead_letter: Option<String>,
}

/// What the outputs of an [`Emitter`] come from.
#[derive(Clone, Copy)]
enum Origin<'a> {
    /// An input record of a transform: outputs inherit its key, headers and
    /// timestamp.
    Record(Record<'a>),
    /// Group `g` of an aggregate's `finish`: outputs inherit nothing; the
    /// host gives a record without a key the group key, and one without a
    /// timestamp the window's `end - 1`.
    Group(u32),
}

impl<'a> Origin<'a> {
    /// The `inputs` entry of the outputs.
    fn index(&self) -> u32 {
        match self {
            Origin::Record(record) => record.index(),
            Origin::Group(group) => *group,
        }
    }

    /// Key, headers and timestamp that `emit*` keeps.
    fn inherited(&self) -> (Option<&'a [u8]>, Option<Headers<'a>>, Option<i64>) {
        match self {
            Origin::Record(r) => (r.key(), Some(r.headers()), r.timestamp()),
            Origin::Group(_) => (None, None, None),
        }
    }
}

impl<'a> Emitter<'a> {
    pub(crate) fn new(out: &'a mut OutputBuilder, input: Record<'a>) -> Self {
        Self {
            out,
            origin: Origin::Record(input),
            dead_letter: None,
        }
    }

    /// The emitter of group `group` of an aggregate's `finish`.
    pub(crate) fn for_group(out: &'a mut OutputBuilder, group: u32) -> Self {
        Self {
            out,
            origin: Origin::Group(group),
            dead_letter: None,
        }
    }

    /// The dead-letter reason given for this record, if any.
    pub(crate) fn into_dead_letter(self) -> Option<String> {
        self.dead_letter
    }

    /// Sends the input record unchanged (key, value, headers, timestamp) to
    /// the default output.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// let output = run_fn(|_, out| {
    ///     out.forward();
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new().key("k").value("v").header("h", "1").timestamp(5)]);
    /// let emitted = &output.outputs[0];
    /// assert_eq!((emitted.key.as_deref(), emitted.value.as_deref()), (Some(&b"k"[..]), Some(&b"v"[..])));
    /// assert_eq!(emitted.timestamp, Some(5));
    /// ```
    pub fn forward(&mut self) {
        self.forward_target(0);
    }

    /// Sends the input record unchanged to the named output.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// let output = run_fn(|_, out| {
    ///     out.forward_to("audit");
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new().value("v")]);
    /// assert_eq!(output.to("audit").len(), 1);
    /// ```
    pub fn forward_to(&mut self, output: &str) {
        let target = self.out.target(output);
        self.forward_target(target);
    }

    fn forward_target(&mut self, target: u32) {
        let Origin::Record(input) = self.origin else {
            self.dead_letter(
                "`Emitter::forward` has no input record to forward in `Aggregate::finish`",
            );
            return;
        };
        let value = input.value();
        let write_value = |buf: &mut Vec<u8>| {
            if let Some(value) = value {
                buf.extend_from_slice(value);
            }
            Ok::<_, Infallible>(value.is_some())
        };
        let (key, headers, timestamp) = (input.key(), input.headers(), input.timestamp());
        let Ok(()) = self
            .out
            .push(input.index(), target, key, write_value, headers, timestamp);
    }

    /// Sends `value` to the default output, keeping the input's key, headers
    /// and timestamp.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// let output = run_fn(|record, out| {
    ///     out.emit(record.value_str()?.trim());
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new().key("k").value("  padded  ")]);
    /// assert_eq!(output.values_str(), ["padded"]);
    /// assert_eq!(output.outputs[0].key.as_deref(), Some(&b"k"[..]));
    /// ```
    pub fn emit(&mut self, value: impl AsRef<[u8]>) {
        self.emit_target(0, value.as_ref());
    }

    /// Sends `value` to the named output, keeping the input's key, headers and
    /// timestamp.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// let output = run_fn(|_, out| {
    ///     out.emit_to("counts", "1");
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new().value("v")]);
    /// assert_eq!(output.to("counts")[0].value.as_deref(), Some(&b"1"[..]));
    /// ```
    pub fn emit_to(&mut self, output: &str, value: impl AsRef<[u8]>) {
        let target = self.out.target(output);
        self.emit_target(target, value.as_ref());
    }

    fn emit_target(&mut self, target: u32, value: &[u8]) {
        let write_value = |buf: &mut Vec<u8>| {
            buf.extend_from_slice(value);
            Ok::<_, Infallible>(true)
        };
        let (key, headers, timestamp) = self.origin.inherited();
        let headers = headers.into_iter().flatten();
        let index = self.origin.index();
        let Ok(()) = self
            .out
            .push(index, target, key, write_value, headers, timestamp);
    }

    /// Serializes `value` as JSON straight into the output buffer and sends it
    /// to the default output, keeping the input's key, headers and timestamp.
    /// If serialization fails nothing is emitted.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// let output = run_fn(|record, out| {
    ///     out.emit_json(&serde_json::json!({ "length": record.value().map_or(0, <[u8]>::len) }))
    /// }, &[TestRecord::new().value("abc")]);
    /// assert_eq!(output.values_str(), [r#"{"length":3}"#]);
    /// ```
    pub fn emit_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.emit_json_target(0, value)
    }

    /// Like [`Emitter::emit_json`], to the named output.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// let output = run_fn(|_, out| out.emit_json_to("metrics", &[1, 2]), &[TestRecord::new()]);
    /// assert_eq!(output.to("metrics")[0].value.as_deref(), Some(&b"[1,2]"[..]));
    /// ```
    pub fn emit_json_to<T: Serialize + ?Sized>(
        &mut self,
        output: &str,
        value: &T,
    ) -> Result<(), Error> {
        let mark = self.out.mark();
        let target = self.out.target(output);
        self.emit_json_target(target, value)
            .inspect_err(|_| self.out.rollback(mark))
    }

    fn emit_json_target<T: Serialize + ?Sized>(
        &mut self,
        target: u32,
        value: &T,
    ) -> Result<(), Error> {
        let write_value = |buf: &mut Vec<u8>| serde_json::to_writer(buf, value).map(|()| true);
        let (key, headers, timestamp) = self.origin.inherited();
        let headers = headers.into_iter().flatten();
        let index = self.origin.index();
        self.out
            .push(index, target, key, write_value, headers, timestamp)
            .map_err(|e| format!("cannot serialize output value as JSON: {e}").into())
    }

    /// Sends a record built from scratch to the default output: nothing is
    /// inherited from the input except, when the record sets none, its
    /// timestamp.
    ///
    /// ```
    /// use sluice_sdk::OutputRecord;
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// let output = run_fn(|record, out| {
    ///     out.emit_record(OutputRecord::new().key("summary").value(record.key().unwrap_or_default()));
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new().key("k").header("dropped", "yes").timestamp(9)]);
    /// let emitted = &output.outputs[0];
    /// assert_eq!(emitted.key.as_deref(), Some(&b"summary"[..]));
    /// assert!(emitted.headers.is_empty());
    /// assert_eq!(emitted.timestamp, Some(9));
    /// ```
    pub fn emit_record(&mut self, record: OutputRecord<'_>) {
        self.emit_record_target(0, record);
    }

    /// Like [`Emitter::emit_record`], to the named output.
    ///
    /// ```
    /// use sluice_sdk::OutputRecord;
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// let output = run_fn(|_, out| {
    ///     out.emit_record_to("tombstones", OutputRecord::new().key("gone"));
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new()]);
    /// assert_eq!(output.to("tombstones")[0].value, None);
    /// ```
    pub fn emit_record_to(&mut self, output: &str, record: OutputRecord<'_>) {
        let target = self.out.target(output);
        self.emit_record_target(target, record);
    }

    fn emit_record_target(&mut self, target: u32, record: OutputRecord<'_>) {
        let write_value = |buf: &mut Vec<u8>| {
            if let Some(value) = record.value {
                buf.extend_from_slice(value);
            }
            Ok::<_, Infallible>(record.value.is_some())
        };
        let headers = record.headers.iter().copied();
        let index = self.origin.index();
        let Ok(()) = self.out.push(
            index,
            target,
            record.key,
            write_value,
            headers,
            record.timestamp,
        );
    }

    /// Sends the input record to the dead-letter queue with `reason`,
    /// discarding whatever was or will be emitted for it. Only the first
    /// reason given for a record is kept.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// let output = run_fn(|record, out| {
    ///     out.forward();
    ///     if record.key().is_none() {
    ///         out.dead_letter("record has no key");
    ///     }
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new().value("v")]);
    /// assert!(output.outputs.is_empty());
    /// assert_eq!(output.dead_letters, [(0, "record has no key".to_string())]);
    /// ```
    pub fn dead_letter(&mut self, reason: impl Display) {
        if self.dead_letter.is_none() {
            self.dead_letter = Some(reason.to_string());
        }
    }

    /// Drops the input record. This does nothing: a record with no output is
    /// dropped anyway; it only makes the intent explicit.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// let output = run_fn(|_, out| {
    ///     out.drop();
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new()]);
    /// assert_eq!(output.dropped, [0]);
    /// ```
    #[allow(clippy::should_implement_trait)] // Not `Drop::drop`: the record is dropped, not the emitter.
    pub fn drop(&mut self) {}
}

/// An output record built from scratch, for [`Emitter::emit_record`]. Every
/// part is optional: a missing key or value is null, no headers means none,
/// and a missing timestamp means the input record's timestamp. The record
/// borrows its bytes; nothing is copied until it is emitted.
///
/// ```
/// use sluice_sdk::OutputRecord;
///
/// let body = format!("{{\"id\":{}}}", 7);
/// let record = OutputRecord::new()
///     .key("7")
///     .value(&body)
///     .header("content-type", "application/json")
///     .timestamp(1_700_000_000_000);
/// # let _ = record;
/// ```
#[derive(Debug, Clone, Default)]
pub struct OutputRecord<'a> {
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a str, &'a [u8])>,
    timestamp: Option<i64>,
}

impl<'a> OutputRecord<'a> {
    /// A record with a null key, a null value, no headers and the input's
    /// timestamp.
    ///
    /// ```
    /// let tombstone = sluice_sdk::OutputRecord::new();
    /// # let _ = tombstone;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the key.
    ///
    /// ```
    /// let record = sluice_sdk::OutputRecord::new().key(b"\x00\x01");
    /// # let _ = record;
    /// ```
    pub fn key<K: AsRef<[u8]> + ?Sized>(mut self, key: &'a K) -> Self {
        self.key = Some(key.as_ref());
        self
    }

    /// Sets the value.
    ///
    /// ```
    /// let value = serde_json::to_vec(&[1, 2, 3]).unwrap();
    /// let record = sluice_sdk::OutputRecord::new().value(&value);
    /// # let _ = record;
    /// ```
    pub fn value<V: AsRef<[u8]> + ?Sized>(mut self, value: &'a V) -> Self {
        self.value = Some(value.as_ref());
        self
    }

    /// Appends a header; names may repeat.
    ///
    /// ```
    /// let record = sluice_sdk::OutputRecord::new().header("a", "1").header("a", "2");
    /// # let _ = record;
    /// ```
    pub fn header<V: AsRef<[u8]> + ?Sized>(mut self, name: &'a str, value: &'a V) -> Self {
        self.headers.push((name, value.as_ref()));
        self
    }

    /// Sets the timestamp, in milliseconds since the Unix epoch.
    ///
    /// ```
    /// let record = sluice_sdk::OutputRecord::new().timestamp(0);
    /// # let _ = record;
    /// ```
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

#[cfg(test)]
mod tests;
