//! Validation of the columnar batch layout, done once per batch, and O(1)
//! access to one record's fields afterwards.
//!
//! After [`ColumnsView::new`] succeeds every offset is known to be in bounds,
//! monotone and (for header names) on a UTF-8 boundary, so the accessors below
//! slice without further checks that could fail.

use std::ops::Range;

use crate::bindings::{Columns, InputBatch};

/// `record-flags.has-key`.
pub(crate) const HAS_KEY: u8 = 1 << 0;
/// `record-flags.has-value`.
pub(crate) const HAS_VALUE: u8 = 1 << 1;
/// `record-flags.has-timestamp`.
pub(crate) const HAS_TIMESTAMP: u8 = 1 << 2;

/// A validated, borrowed `columns` record.
#[derive(Clone, Copy)]
pub(crate) struct ColumnsView<'a> {
    keys: &'a [u8],
    key_offsets: &'a [u32],
    values: &'a [u8],
    value_offsets: &'a [u32],
    flags: &'a [u8],
    timestamps: &'a [i64],
    header_offsets: &'a [u32],
    header_names: &'a str,
    header_name_offsets: &'a [u32],
    header_values: &'a [u8],
    header_value_offsets: &'a [u32],
}

impl<'a> ColumnsView<'a> {
    /// Checks the layout of `cols`: `n` is the length of `flags`.
    pub(crate) fn new(cols: &'a Columns) -> Result<Self, String> {
        let n = cols.flags.len();
        if u32::try_from(n).is_err() {
            return Err(format!("{n} records do not fit u32 indices"));
        }
        check_len("timestamps", cols.timestamps.len(), n)?;
        check_offsets("key-offsets", &cols.key_offsets, n, "keys", cols.keys.len())?;
        check_offsets(
            "value-offsets",
            &cols.value_offsets,
            n,
            "values",
            cols.values.len(),
        )?;
        check_offsets("header-offsets", &cols.header_offsets, n, "", usize::MAX)?;
        let entries = cols.header_offsets[n] as usize;
        let names = &cols.header_names;
        check_offsets(
            "header-name-offsets",
            &cols.header_name_offsets,
            entries,
            "header-names",
            names.len(),
        )?;
        let values = cols.header_values.len();
        check_offsets(
            "header-value-offsets",
            &cols.header_value_offsets,
            entries,
            "header-values",
            values,
        )?;
        let header_names =
            std::str::from_utf8(names).map_err(|e| format!("header-names is not UTF-8: {e}"))?;
        if let Some(o) = cols
            .header_name_offsets
            .iter()
            .find(|&&o| !header_names.is_char_boundary(o as usize))
        {
            return Err(format!(
                "header-name-offsets entry {o} splits a UTF-8 character"
            ));
        }
        Ok(Self {
            keys: &cols.keys,
            key_offsets: &cols.key_offsets,
            values: &cols.values,
            value_offsets: &cols.value_offsets,
            flags: &cols.flags,
            timestamps: &cols.timestamps,
            header_offsets: &cols.header_offsets,
            header_names,
            header_name_offsets: &cols.header_name_offsets,
            header_values: &cols.header_values,
            header_value_offsets: &cols.header_value_offsets,
        })
    }

    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.flags.len()
    }

    /// Total bytes of keys, values, header names and header values, and the
    /// number of header entries: capacity hints for an output builder.
    pub(crate) fn sizes(&self) -> [usize; 5] {
        let headers = self.header_name_offsets.len() - 1;
        [
            self.keys.len(),
            self.values.len(),
            self.header_names.len(),
            self.header_values.len(),
            headers,
        ]
    }

    pub(crate) fn key(&self, i: usize) -> Option<&'a [u8]> {
        (self.flags[i] & HAS_KEY != 0).then(|| &self.keys[range(self.key_offsets, i)])
    }

    pub(crate) fn value(&self, i: usize) -> Option<&'a [u8]> {
        (self.flags[i] & HAS_VALUE != 0).then(|| &self.values[range(self.value_offsets, i)])
    }

    pub(crate) fn timestamp(&self, i: usize) -> Option<i64> {
        (self.flags[i] & HAS_TIMESTAMP != 0).then(|| self.timestamps[i])
    }

    /// Header entries of record `i`.
    pub(crate) fn header_range(&self, i: usize) -> Range<usize> {
        range(self.header_offsets, i)
    }

    /// Header entry `j` (an index into the header lists, not a record index).
    pub(crate) fn header(&self, j: usize) -> (&'a str, &'a [u8]) {
        let name = &self.header_names[range(self.header_name_offsets, j)];
        (
            name,
            &self.header_values[range(self.header_value_offsets, j)],
        )
    }
}

/// A validated input batch: columns plus source positions.
pub(crate) struct InputView<'a> {
    pub(crate) cols: ColumnsView<'a>,
    partitions: &'a [i32],
    offsets: &'a [i64],
}

impl<'a> InputView<'a> {
    pub(crate) fn new(batch: &'a InputBatch) -> Result<Self, String> {
        let cols =
            ColumnsView::new(&batch.records).map_err(|e| format!("malformed input batch: {e}"))?;
        let n = cols.len();
        check_len("partitions", batch.partitions.len(), n)
            .map_err(|e| format!("malformed input batch: {e}"))?;
        check_len("offsets", batch.offsets.len(), n)
            .map_err(|e| format!("malformed input batch: {e}"))?;
        Ok(Self {
            cols,
            partitions: &batch.partitions,
            offsets: &batch.offsets,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.cols.len()
    }

    pub(crate) fn partition(&self, i: usize) -> i32 {
        self.partitions[i]
    }

    pub(crate) fn offset(&self, i: usize) -> i64 {
        self.offsets[i]
    }
}

pub(crate) fn range(offsets: &[u32], i: usize) -> Range<usize> {
    offsets[i] as usize..offsets[i + 1] as usize
}

pub(crate) fn check_len(what: &str, len: usize, n: usize) -> Result<(), String> {
    check_count(what, len, n, "record")
}

/// `what` must have `n` entries, one per `item`.
pub(crate) fn check_count(what: &str, len: usize, n: usize, item: &str) -> Result<(), String> {
    if len == n {
        Ok(())
    } else {
        Err(format!(
            "{what} has {len} entries, expected {n} (one per {item})"
        ))
    }
}

/// `offsets` must have `n + 1` entries, be non-decreasing and end within a
/// buffer of `buf_len` bytes.
pub(crate) fn check_offsets(
    what: &str,
    offsets: &[u32],
    n: usize,
    buf: &str,
    buf_len: usize,
) -> Result<(), String> {
    if offsets.len() != n + 1 {
        let len = offsets.len();
        return Err(format!(
            "{what} has {len} entries, expected {} (n + 1 for n = {n})",
            n + 1
        ));
    }
    if let Some(i) = offsets.windows(2).position(|w| w[0] > w[1]) {
        return Err(format!(
            "{what} decreases at entry {}: {} > {}",
            i + 1,
            offsets[i],
            offsets[i + 1]
        ));
    }
    let last = offsets[n] as usize;
    if last > buf_len {
        return Err(format!(
            "{what} ends at {last}, past the end of {buf} ({buf_len} bytes)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_columns(n: usize) -> Columns {
        Columns {
            keys: vec![],
            key_offsets: vec![0; n + 1],
            values: vec![],
            value_offsets: vec![0; n + 1],
            flags: vec![0; n],
            timestamps: vec![0; n],
            header_offsets: vec![0; n + 1],
            header_names: vec![],
            header_name_offsets: vec![0],
            header_values: vec![],
            header_value_offsets: vec![0],
        }
    }

    fn err(cols: &Columns) -> String {
        ColumnsView::new(cols).err().expect("should be rejected")
    }

    #[test]
    fn accepts_empty_and_null_records() {
        let cols = empty_columns(2);
        let view = ColumnsView::new(&cols).unwrap();
        assert_eq!(view.len(), 2);
        assert_eq!(view.key(1), None);
        assert_eq!(view.value(0), None);
        assert_eq!(view.timestamp(0), None);
        assert_eq!(view.header_range(1), 0..0);
    }

    #[test]
    fn rejects_wrong_offset_count() {
        let mut cols = empty_columns(2);
        cols.key_offsets.pop();
        assert_eq!(
            err(&cols),
            "key-offsets has 2 entries, expected 3 (n + 1 for n = 2)"
        );
        let mut cols = empty_columns(0);
        cols.header_name_offsets.clear();
        assert_eq!(
            err(&cols),
            "header-name-offsets has 0 entries, expected 1 (n + 1 for n = 0)"
        );
    }

    #[test]
    fn rejects_decreasing_offsets() {
        let mut cols = empty_columns(2);
        cols.values = b"abc".to_vec();
        cols.value_offsets = vec![0, 3, 2];
        assert_eq!(err(&cols), "value-offsets decreases at entry 2: 3 > 2");
    }

    #[test]
    fn rejects_offsets_past_the_buffer() {
        let mut cols = empty_columns(1);
        cols.keys = b"ab".to_vec();
        cols.key_offsets = vec![0, 3];
        assert_eq!(
            err(&cols),
            "key-offsets ends at 3, past the end of keys (2 bytes)"
        );
    }

    #[test]
    fn rejects_header_entry_mismatch() {
        let mut cols = empty_columns(1);
        cols.header_offsets = vec![0, 1];
        assert_eq!(
            err(&cols),
            "header-name-offsets has 1 entries, expected 2 (n + 1 for n = 1)"
        );
    }

    #[test]
    fn rejects_header_name_split_inside_a_character() {
        let mut cols = empty_columns(1);
        cols.header_offsets = vec![0, 2];
        cols.header_names = "é".as_bytes().to_vec();
        cols.header_name_offsets = vec![0, 1, 2];
        cols.header_value_offsets = vec![0, 0, 0];
        assert_eq!(
            err(&cols),
            "header-name-offsets entry 1 splits a UTF-8 character"
        );
        cols.header_names = vec![0xff, 0xfe];
        assert!(err(&cols).starts_with("header-names is not UTF-8"));
    }

    #[test]
    fn rejects_per_record_list_mismatch() {
        let mut cols = empty_columns(2);
        cols.timestamps.push(0);
        assert_eq!(
            err(&cols),
            "timestamps has 3 entries, expected 2 (one per record)"
        );
        let batch = InputBatch {
            records: empty_columns(2),
            partitions: vec![0],
            offsets: vec![0, 1],
        };
        let e = InputView::new(&batch).err().unwrap();
        assert_eq!(
            e,
            "malformed input batch: partitions has 1 entries, expected 2 (one per record)"
        );
    }
}
