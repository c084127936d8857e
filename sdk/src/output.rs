//! The output batch under construction: flat columns that emitted records are
//! appended to, with cheap rollback of one input record's outputs.

use crate::batch::{ColumnsView, HAS_KEY, HAS_TIMESTAMP, HAS_VALUE};
use crate::bindings::{Columns, DeadLetter, OutputBatch};

/// The name that means "the default output" wherever a named output is
/// accepted.
const DEFAULT_OUTPUT: &str = "default";

/// Column lengths at some point, to roll back to.
#[derive(Clone, Copy)]
pub(crate) struct Mark {
    records: usize,
    keys: usize,
    values: usize,
    headers: usize,
    header_names: usize,
    header_values: usize,
    output_names: usize,
}

/// An [`OutputBatch`] being built, record by record.
pub(crate) struct OutputBuilder {
    cols: Columns,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    output_names: Vec<String>,
    dead_letters: Vec<DeadLetter>,
}

impl OutputBuilder {
    /// An empty builder with room for one output per input record, each the
    /// size of its input.
    pub(crate) fn for_input(input: &ColumnsView<'_>) -> Self {
        Self::with_capacity(input.len(), input.sizes())
    }

    /// An empty builder with room for `n` outputs and, in bytes, `[keys,
    /// values, header names, header values]` plus that many header entries.
    pub(crate) fn with_capacity(n: usize, sizes: [usize; 5]) -> Self {
        let [keys, values, header_names, header_values, headers] = sizes;
        let offsets = |len: usize| {
            let mut offsets = Vec::with_capacity(len + 1);
            offsets.push(0);
            offsets
        };
        Self {
            cols: Columns {
                keys: Vec::with_capacity(keys),
                key_offsets: offsets(n),
                values: Vec::with_capacity(values),
                value_offsets: offsets(n),
                flags: Vec::with_capacity(n),
                timestamps: Vec::with_capacity(n),
                header_offsets: offsets(n),
                header_names: Vec::with_capacity(header_names),
                header_name_offsets: offsets(headers),
                header_values: Vec::with_capacity(header_values),
                header_value_offsets: offsets(headers),
            },
            inputs: Vec::with_capacity(n),
            targets: Vec::with_capacity(n),
            output_names: Vec::new(),
            dead_letters: Vec::new(),
        }
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark {
            records: self.cols.flags.len(),
            keys: self.cols.keys.len(),
            values: self.cols.values.len(),
            headers: self.cols.header_name_offsets.len() - 1,
            header_names: self.cols.header_names.len(),
            header_values: self.cols.header_values.len(),
            output_names: self.output_names.len(),
        }
    }

    /// Forgets everything emitted since `mark` was taken.
    pub(crate) fn rollback(&mut self, mark: Mark) {
        let c = &mut self.cols;
        c.keys.truncate(mark.keys);
        c.key_offsets.truncate(mark.records + 1);
        c.values.truncate(mark.values);
        c.value_offsets.truncate(mark.records + 1);
        c.flags.truncate(mark.records);
        c.timestamps.truncate(mark.records);
        c.header_offsets.truncate(mark.records + 1);
        c.header_names.truncate(mark.header_names);
        c.header_name_offsets.truncate(mark.headers + 1);
        c.header_values.truncate(mark.header_values);
        c.header_value_offsets.truncate(mark.headers + 1);
        self.inputs.truncate(mark.records);
        self.targets.truncate(mark.records);
        self.output_names.truncate(mark.output_names);
    }

    /// The `targets` entry for output `name`, interning the name.
    pub(crate) fn target(&mut self, name: &str) -> u32 {
        if name == DEFAULT_OUTPUT {
            return 0;
        }
        let index = match self.output_names.iter().position(|n| n == name) {
            Some(index) => index,
            None => {
                self.output_names.push(name.to_owned());
                self.output_names.len() - 1
            }
        };
        index as u32 + 1
    }

    /// Appends one output record. `write_value` appends the value's bytes and
    /// says whether there is a value at all; if it fails, nothing is appended.
    pub(crate) fn push<'h, E>(
        &mut self,
        input: u32,
        target: u32,
        key: Option<&[u8]>,
        write_value: impl FnOnce(&mut Vec<u8>) -> Result<bool, E>,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
        timestamp: Option<i64>,
    ) -> Result<(), E> {
        let c = &mut self.cols;
        let values_len = c.values.len();
        let has_value = match write_value(&mut c.values) {
            Ok(has_value) => has_value,
            Err(e) => {
                c.values.truncate(values_len);
                return Err(e);
            }
        };
        c.value_offsets.push(c.values.len() as u32);
        if let Some(key) = key {
            c.keys.extend_from_slice(key);
        }
        c.key_offsets.push(c.keys.len() as u32);
        for (name, value) in headers {
            c.header_names.extend_from_slice(name.as_bytes());
            c.header_name_offsets.push(c.header_names.len() as u32);
            c.header_values.extend_from_slice(value);
            c.header_value_offsets.push(c.header_values.len() as u32);
        }
        c.header_offsets
            .push((c.header_name_offsets.len() - 1) as u32);
        let mut flags = 0;
        if key.is_some() {
            flags |= HAS_KEY;
        }
        if has_value {
            flags |= HAS_VALUE;
        }
        if timestamp.is_some() {
            flags |= HAS_TIMESTAMP;
        }
        c.flags.push(flags);
        c.timestamps.push(timestamp.unwrap_or(0));
        self.inputs.push(input);
        self.targets.push(target);
        Ok(())
    }

    pub(crate) fn dead_letter(&mut self, input: u32, reason: String) {
        self.dead_letters.push(DeadLetter { input, reason });
    }

    /// The finished batch. Fails only if a buffer outgrew `u32` offsets
    /// (impossible in 32-bit wasm, checked here for native runs).
    pub(crate) fn finish(self) -> Result<OutputBatch, String> {
        let c = &self.cols;
        let sizes = [
            ("keys", c.keys.len()),
            ("values", c.values.len()),
            ("header-names", c.header_names.len()),
            ("header-values", c.header_values.len()),
            ("header entries", c.header_name_offsets.len()),
        ];
        if let Some((what, len)) = sizes.iter().find(|(_, len)| u32::try_from(*len).is_err()) {
            return Err(format!(
                "output batch too large: {len} {what} do not fit u32 offsets"
            ));
        }
        Ok(OutputBatch {
            records: self.cols,
            inputs: self.inputs,
            targets: self.targets,
            output_names: self.output_names,
            dead_letters: self.dead_letters,
        })
    }
}
