//! Native test harness: run a transform or an aggregate over records with
//! plain `cargo test`.
//!
//! The harness encodes the records into the same columnar batch the host
//! sends, runs the same glue as the wasm export, and decodes the output batch,
//! so a native test exercises the real codec. Only the wasm boundary itself
//! (and traps) is left to the host's integration tests. For aggregates,
//! [`run_aggregate`] and [`run_sessions`] also play the host's part: windows,
//! and accumulators stored as the bytes the guest encoded. For joins,
//! [`join_keys`] and [`run_join`] run the two calls on the records and
//! pairs given.
//!
//! ```
//! use sluice_sdk::testing::{run_fn, TestRecord};
//! use sluice_sdk::{Emitter, Error, Record};
//!
//! fn non_empty(record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
//!     if record.value().is_some_and(|v| !v.is_empty()) {
//!         out.forward();
//!     }
//!     Ok(())
//! }
//!
//! let output = run_fn(non_empty, &[TestRecord::new().value("x"), TestRecord::new().value("")]);
//! assert_eq!(output.values_str(), ["x"]);
//! assert_eq!(output.dropped, [1]);
//! ```

mod aggregate;
mod join;

pub use aggregate::{run_aggregate, run_sessions, tumbling};
pub use join::{join_keys, run_join};

use crate::batch::ColumnsView;
use crate::bindings::{Columns, InputBatch, OutputBatch};
use crate::glue::{process_columns, process_columns_fn};
use crate::{Config, Emitter, Error, Record, Transform};

/// An input record for the harness. Everything is optional: key and value
/// default to null, the partition to 0, the offset to the record's position
/// in the batch, and there are no headers and no timestamp.
///
/// ```
/// use sluice_sdk::testing::TestRecord;
///
/// let record = TestRecord::new()
///     .key("user-1")
///     .value(r#"{"amount":10}"#)
///     .header("source", "web")
///     .timestamp(1_700_000_000_000)
///     .partition(2)
///     .offset(100);
/// # let _ = record;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestRecord {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    timestamp: Option<i64>,
    partition: i32,
    offset: Option<i64>,
}

impl TestRecord {
    /// A record with a null key and value.
    ///
    /// ```
    /// let tombstone = sluice_sdk::testing::TestRecord::new().key("k");
    /// # let _ = tombstone;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the key.
    ///
    /// ```
    /// let record = sluice_sdk::testing::TestRecord::new().key([0u8, 1]);
    /// # let _ = record;
    /// ```
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(key.as_ref().to_vec());
        self
    }

    /// Sets the value.
    ///
    /// ```
    /// let record = sluice_sdk::testing::TestRecord::new().value("hello");
    /// # let _ = record;
    /// ```
    pub fn value(mut self, value: impl AsRef<[u8]>) -> Self {
        self.value = Some(value.as_ref().to_vec());
        self
    }

    /// Appends a header.
    ///
    /// ```
    /// let record = sluice_sdk::testing::TestRecord::new().header("trace-id", "t1");
    /// # let _ = record;
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Sets the timestamp, in milliseconds since the Unix epoch.
    ///
    /// ```
    /// let record = sluice_sdk::testing::TestRecord::new().timestamp(1_000);
    /// # let _ = record;
    /// ```
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Sets the source partition.
    ///
    /// ```
    /// let record = sluice_sdk::testing::TestRecord::new().partition(1);
    /// # let _ = record;
    /// ```
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = partition;
        self
    }

    /// Sets the source offset.
    ///
    /// ```
    /// let record = sluice_sdk::testing::TestRecord::new().offset(7);
    /// # let _ = record;
    /// ```
    pub fn offset(mut self, offset: i64) -> Self {
        self.offset = Some(offset);
        self
    }
}

/// One output record, decoded from the output batch.
///
/// ```
/// # use sluice_sdk::testing::{run_fn, TestRecord};
/// let output = run_fn(|_, out| {
///     out.forward_to("copies");
///     Ok::<_, sluice_sdk::Error>(())
/// }, &[TestRecord::new().value("v").timestamp(3)]);
/// let emitted = &output.outputs[0];
/// assert_eq!((emitted.input, emitted.output.as_deref()), (0, Some("copies")));
/// assert_eq!(emitted.timestamp, Some(3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// Index of the input record it came from.
    pub input: u32,
    /// The named output, or `None` for the default output.
    pub output: Option<String>,
    /// The key; `None` is null.
    pub key: Option<Vec<u8>>,
    /// The value; `None` is null.
    pub value: Option<Vec<u8>>,
    /// The headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The timestamp the host will use: the record's own, else its input's.
    pub timestamp: Option<i64>,
}

impl Emitted {
    /// The value as UTF-8 text, `None` if it is null.
    ///
    /// # Panics
    ///
    /// If the value is not UTF-8.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// let output = run_fn(|_, out| { out.emit("ok"); Ok::<_, sluice_sdk::Error>(()) }, &[TestRecord::new()]);
    /// assert_eq!(output.outputs[0].value_str(), Some("ok"));
    /// ```
    pub fn value_str(&self) -> Option<&str> {
        let value = self.value.as_deref()?;
        Some(std::str::from_utf8(value).expect("output value is not UTF-8"))
    }
}

/// Everything a transform made of the records given to the harness.
///
/// ```
/// # use sluice_sdk::testing::{run_fn, TestRecord};
/// let output = run_fn(|record, out| {
///     match record.value_str()? {
///         "drop" => {}
///         "bad" => out.dead_letter("bad record"),
///         other => out.emit(other),
///     }
///     Ok::<_, sluice_sdk::Error>(())
/// }, &[TestRecord::new().value("drop"), TestRecord::new().value("bad"), TestRecord::new().value("ok")]);
/// assert_eq!(output.values_str(), ["ok"]);
/// assert_eq!(output.dead_letters, [(1, "bad record".to_string())]);
/// assert_eq!(output.dropped, [0]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestOutput {
    /// Output records, in emission order.
    pub outputs: Vec<Emitted>,
    /// `(input index, reason)` of dead-lettered input records, in input order.
    pub dead_letters: Vec<(u32, String)>,
    /// Indices of input records with neither outputs nor a dead letter.
    pub dropped: Vec<u32>,
}

impl TestOutput {
    /// The values of all outputs, in emission order, as text.
    ///
    /// # Panics
    ///
    /// If a value is null or not UTF-8.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// let output = run_fn(|_, out| { out.forward(); Ok::<_, sluice_sdk::Error>(()) }, &[TestRecord::new().value("a")]);
    /// assert_eq!(output.values_str(), ["a"]);
    /// ```
    pub fn values_str(&self) -> Vec<&str> {
        fn text(e: &Emitted) -> &str {
            e.value_str()
                .unwrap_or_else(|| panic!("output of input {} has a null value", e.input))
        }
        self.outputs.iter().map(text).collect()
    }

    /// The outputs sent to `output`; `"default"` selects the default output.
    ///
    /// ```
    /// # use sluice_sdk::testing::{run_fn, TestRecord};
    /// let output = run_fn(|_, out| {
    ///     out.emit("main");
    ///     out.emit_to("side", "extra");
    ///     Ok::<_, sluice_sdk::Error>(())
    /// }, &[TestRecord::new()]);
    /// assert_eq!(output.to("default")[0].value_str(), Some("main"));
    /// assert_eq!(output.to("side")[0].value_str(), Some("extra"));
    /// ```
    pub fn to(&self, output: &str) -> Vec<&Emitted> {
        let wanted = (output != "default").then_some(output);
        self.outputs
            .iter()
            .filter(|e| e.output.as_deref() == wanted)
            .collect()
    }
}

/// Runs a function-form transform over `records`.
///
/// # Panics
///
/// If the SDK produced an inconsistent output batch (a bug in the SDK).
///
/// ```
/// use sluice_sdk::testing::{run_fn, TestRecord};
///
/// let output = run_fn(|record, out| {
///     out.emit(record.value().unwrap_or_default().len().to_string());
///     Ok::<_, sluice_sdk::Error>(())
/// }, &[TestRecord::new().value("four")]);
/// assert_eq!(output.values_str(), ["4"]);
/// ```
pub fn run_fn<F, E>(f: F, records: &[TestRecord]) -> TestOutput
where
    F: FnMut(&Record<'_>, &mut Emitter<'_>) -> Result<(), E>,
    E: Into<Error>,
{
    let batch = encode_batch(records);
    let output = process_columns_fn(f, &batch);
    let output = output.unwrap_or_else(|e| panic!("the harness encoded a malformed batch: {e}"));
    decode_output(&batch, &output).unwrap_or_else(|e| panic!("inconsistent output batch: {e}"))
}

/// Runs a trait-form transform over `records`: `init` with `config`, then one
/// batch. An `init` error is returned as `Err`.
///
/// ```
/// use sluice_sdk::testing::{run, TestRecord};
/// use sluice_sdk::{Config, Emitter, Error, Record, Transform};
///
/// struct Prefix(String);
///
/// impl Transform for Prefix {
///     fn init(config: &Config) -> Result<Self, Error> {
///         Ok(Prefix(config.require("prefix")?.to_owned()))
///     }
///
///     fn process(&mut self, record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
///         out.emit(format!("{}{}", self.0, record.value_str()?));
///         Ok(())
///     }
/// }
///
/// let output = run::<Prefix>(&[("prefix", "> ")], &[TestRecord::new().value("hi")]).unwrap();
/// assert_eq!(output.values_str(), ["> hi"]);
/// let err = run::<Prefix>(&[], &[]).unwrap_err();
/// assert_eq!(err.to_string(), "missing config key `prefix`");
/// ```
pub fn run<T: Transform>(
    config: &[(&str, &str)],
    records: &[TestRecord],
) -> Result<TestOutput, Error> {
    let config: Config = config.iter().copied().collect();
    let mut transform = T::init(&config)?;
    let batch = encode_batch(records);
    let output = process_columns(&mut transform, &batch)?;
    Ok(decode_output(&batch, &output)?)
}

/// Encodes records the way the host does.
#[doc(hidden)]
pub fn encode_batch(records: &[TestRecord]) -> InputBatch {
    let mut c = Columns {
        keys: Vec::new(),
        key_offsets: vec![0],
        values: Vec::new(),
        value_offsets: vec![0],
        flags: Vec::new(),
        timestamps: Vec::new(),
        header_offsets: vec![0],
        header_names: Vec::new(),
        header_name_offsets: vec![0],
        header_values: Vec::new(),
        header_value_offsets: vec![0],
    };
    let offset = |len: usize| u32::try_from(len).expect("test batch exceeds u32 offsets");
    for r in records {
        let mut flags = 0;
        if let Some(key) = &r.key {
            c.keys.extend_from_slice(key);
            flags |= crate::batch::HAS_KEY;
        }
        c.key_offsets.push(offset(c.keys.len()));
        if let Some(value) = &r.value {
            c.values.extend_from_slice(value);
            flags |= crate::batch::HAS_VALUE;
        }
        c.value_offsets.push(offset(c.values.len()));
        if r.timestamp.is_some() {
            flags |= crate::batch::HAS_TIMESTAMP;
        }
        c.flags.push(flags);
        c.timestamps.push(r.timestamp.unwrap_or(0));
        for (name, value) in &r.headers {
            c.header_names.extend_from_slice(name.as_bytes());
            c.header_name_offsets.push(offset(c.header_names.len()));
            c.header_values.extend_from_slice(value);
            c.header_value_offsets.push(offset(c.header_values.len()));
        }
        c.header_offsets
            .push(offset(c.header_name_offsets.len() - 1));
    }
    InputBatch {
        records: c,
        partitions: records.iter().map(|r| r.partition).collect(),
        offsets: (0..)
            .zip(records)
            .map(|(i, r)| r.offset.unwrap_or(i))
            .collect(),
    }
}

/// Decodes and checks an output batch against the input it came from.
#[doc(hidden)]
pub fn decode_output(input: &InputBatch, output: &OutputBatch) -> Result<TestOutput, String> {
    let inputs = ColumnsView::new(&input.records)?;
    let defaults = |input: u32| (None, inputs.timestamp(input as usize));
    let outputs = decode_records(output, inputs.len(), defaults)?;
    let dead_letters: Vec<(u32, String)> = output
        .dead_letters
        .iter()
        .map(|d| (d.input, d.reason.clone()))
        .collect();
    if dead_letters.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(format!(
            "dead letters are not in input order: {dead_letters:?}"
        ));
    }
    let dead = |i: &u32| dead_letters.binary_search_by_key(i, |d| d.0).is_ok();
    if let Some(i) = output.inputs.iter().find(|i| dead(i)) {
        return Err(format!("input {i} is dead-lettered but has outputs"));
    }
    let dropped = (0..inputs.len() as u32)
        .filter(|i| output.inputs.binary_search(i).is_err() && !dead(i))
        .collect();
    Ok(TestOutput {
        outputs,
        dead_letters,
        dropped,
    })
}

/// Decodes and checks the records of an output batch made from `inputs`
/// inputs; `defaults(input)` gives the key and timestamp the host uses for
/// an output of `input` that has none of its own.
pub(crate) fn decode_records(
    output: &OutputBatch,
    inputs: usize,
    defaults: impl Fn(u32) -> (Option<Vec<u8>>, Option<i64>),
) -> Result<Vec<Emitted>, String> {
    let cols = ColumnsView::new(&output.records)?;
    let n = cols.len();
    if output.inputs.len() != n || output.targets.len() != n {
        return Err(format!(
            "{n} output records but {} inputs and {} targets",
            output.inputs.len(),
            output.targets.len()
        ));
    }
    if output.inputs.windows(2).any(|w| w[0] > w[1]) {
        return Err(format!(
            "inputs are not non-decreasing: {:?}",
            output.inputs
        ));
    }
    let mut outputs = Vec::with_capacity(n);
    for (i, (&input, &target)) in output.inputs.iter().zip(&output.targets).enumerate() {
        if input as usize >= inputs {
            return Err(format!(
                "output {i} comes from input {input}, but there are {inputs} inputs"
            ));
        }
        let output_name = match target {
            0 => None,
            k => Some(
                output
                    .output_names
                    .get(k as usize - 1)
                    .ok_or(format!("output {i} has target {k}"))?
                    .clone(),
            ),
        };
        let headers = cols
            .header_range(i)
            .map(|j| cols.header(j))
            .map(|(k, v)| (k.to_owned(), v.to_vec()));
        let (default_key, default_timestamp) = defaults(input);
        outputs.push(Emitted {
            input,
            output: output_name,
            key: cols.key(i).map(<[u8]>::to_vec).or(default_key),
            value: cols.value(i).map(<[u8]>::to_vec),
            headers: headers.collect(),
            timestamp: cols.timestamp(i).or(default_timestamp),
        });
    }
    Ok(outputs)
}
