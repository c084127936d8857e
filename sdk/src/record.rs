//! Zero-copy views of input records.

use std::fmt;
use std::ops::Range;

use serde::Deserialize;

use crate::Error;
use crate::batch::InputView;

/// One input record: a zero-copy view into the batch the host sent.
///
/// Every accessor is O(1) slicing (only [`Record::headers`] walks the
/// record's headers); nothing is copied or allocated.
///
/// ```
/// use sluice_sdk::{Emitter, Error, Record};
///
/// fn keep_keyed(record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
///     if record.key().is_some() {
///         out.forward();
///     }
///     Ok(())
/// }
/// # use sluice_sdk::testing::{run_fn, TestRecord};
/// let output = run_fn(keep_keyed, &[TestRecord::new().key("k"), TestRecord::new()]);
/// assert_eq!(output.dropped, [1]);
/// ```
#[derive(Clone, Copy)]
pub struct Record<'a> {
    view: &'a InputView<'a>,
    index: usize,
}

impl<'a> Record<'a> {
    pub(crate) fn new(view: &'a InputView<'a>, index: usize) -> Self {
        Self { view, index }
    }

    /// The key, or `None` for a null key (which is not the same as an empty
    /// key).
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// run_fn(|record, _| {
    ///     assert_eq!(record.key(), Some(&b"user-7"[..]));
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new().key("user-7")]);
    /// ```
    pub fn key(&self) -> Option<&'a [u8]> {
        self.view.cols.key(self.index)
    }

    /// The value, or `None` for a null value (a Kafka tombstone).
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// run_fn(|record, _| {
    ///     assert_eq!(record.value(), None);
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new().key("deleted-key")]);
    /// ```
    pub fn value(&self) -> Option<&'a [u8]> {
        self.view.cols.value(self.index)
    }

    /// The value as UTF-8 text; a null value or invalid UTF-8 is an error.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// let output = run_fn(|record, out| {
    ///     out.emit(record.value_str()?.to_uppercase());
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new().value("hello"), TestRecord::new().value([0xff])]);
    /// assert_eq!(output.values_str(), ["HELLO"]);
    /// assert!(output.dead_letters[0].1.starts_with("record value is not valid UTF-8"));
    /// ```
    pub fn value_str(&self) -> Result<&'a str, Error> {
        let value = self
            .value()
            .ok_or("record value is null, expected UTF-8 text")?;
        std::str::from_utf8(value)
            .map_err(|e| format!("record value is not valid UTF-8: {e}").into())
    }

    /// Deserializes the value as JSON. Borrowed fields (`&'a str`,
    /// `Cow<'a, str>` with `#[serde(borrow)]`, `&'a RawValue`) point into the
    /// batch without copying. A null value is an error.
    ///
    /// ```
    /// use serde::Deserialize;
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    ///
    /// #[derive(Deserialize)]
    /// struct Reading<'a> {
    ///     sensor: &'a str,
    ///     celsius: f64,
    /// }
    ///
    /// let output = run_fn(|record, out| {
    ///     let reading: Reading<'_> = record.json()?;
    ///     out.emit(format!("{}={}", reading.sensor, reading.celsius * 1.8 + 32.0));
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new().value(r#"{"sensor":"s1","celsius":100}"#), TestRecord::new().value("{")]);
    /// assert_eq!(output.values_str(), ["s1=212"]);
    /// assert!(output.dead_letters[0].1.starts_with("invalid JSON in record value: "));
    /// ```
    pub fn json<T: Deserialize<'a>>(&self) -> Result<T, Error> {
        let value = self.value().ok_or("record value is null, expected JSON")?;
        serde_json::from_slice(value)
            .map_err(|e| format!("invalid JSON in record value: {e}").into())
    }

    /// The headers, in record order. Header names are UTF-8 (the host
    /// guarantees it and the SDK checks it once per batch); a null header
    /// value reads as empty.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// run_fn(|record, _| {
    ///     let names: Vec<&str> = record.headers().map(|(name, _)| name).collect();
    ///     assert_eq!(names, ["trace-id", "source"]);
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new().header("trace-id", "abc").header("source", "web")]);
    /// ```
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            view: self.view,
            entries: self.view.cols.header_range(self.index),
        }
    }

    /// The value of the last header called `name` (Kafka's `lastHeader`), if
    /// any.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// run_fn(|record, _| {
    ///     assert_eq!(record.header("v"), Some(&b"2"[..]));
    ///     assert_eq!(record.header("missing"), None);
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new().header("v", "1").header("v", "2")]);
    /// ```
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value)
    }

    /// The record's own timestamp in milliseconds since the Unix epoch, if it
    /// has one.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// run_fn(|record, _| {
    ///     assert_eq!(record.timestamp(), Some(1_700_000_000_000));
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new().timestamp(1_700_000_000_000)]);
    /// ```
    pub fn timestamp(&self) -> Option<i64> {
        self.view.cols.timestamp(self.index)
    }

    /// The source partition.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// run_fn(|record, _| {
    ///     assert_eq!(record.partition(), 3);
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new().partition(3)]);
    /// ```
    pub fn partition(&self) -> i32 {
        self.view.partition(self.index)
    }

    /// The offset within the source partition.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// run_fn(|record, _| {
    ///     assert_eq!(record.offset(), 42);
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new().offset(42)]);
    /// ```
    pub fn offset(&self) -> i64 {
        self.view.offset(self.index)
    }

    /// The position of the record in its batch.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// let output = run_fn(|record, out| {
    ///     out.emit(record.index().to_string());
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new(), TestRecord::new()]);
    /// assert_eq!(output.values_str(), ["0", "1"]);
    /// ```
    pub fn index(&self) -> u32 {
        // The batch was checked to hold at most `u32::MAX` records.
        self.index as u32
    }
}

impl fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("index", &self.index)
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("timestamp", &self.timestamp())
            .field("key", &self.key().map(String::from_utf8_lossy))
            .field("value", &self.value().map(String::from_utf8_lossy))
            .field("headers", &self.headers().len())
            .finish()
    }
}

/// The headers of a [`Record`]: `(name, value)` pairs in record order,
/// returned by [`Record::headers`].
///
/// ```
/// # use sluice_sdk::testing::{run_fn, TestRecord};
/// run_fn(|record, _| {
///     let mut headers = record.headers();
///     assert_eq!(headers.len(), 1);
///     assert_eq!(headers.next(), Some(("content-type", &b"application/json"[..])));
///     Ok::<_, sluice_sdk::Error>(())
/// }, &[TestRecord::new().header("content-type", "application/json")]);
/// ```
#[derive(Clone)]
pub struct Headers<'a> {
    view: &'a InputView<'a>,
    entries: Range<usize>,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        self.entries.next().map(|j| self.view.cols.header(j))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl DoubleEndedIterator for Headers<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.entries.next_back().map(|j| self.view.cols.header(j))
    }
}

impl ExactSizeIterator for Headers<'_> {}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self
            .clone()
            .map(|(name, value)| (name, String::from_utf8_lossy(value)));
        f.debug_list().entries(entries).finish()
    }
}
