//! Micro-batches: records in flat, Arrow-style columns.
//!
//! This is the one representation a batch has between the source and the
//! sinks. Its layout is the WIT contract's `columns` record field for field
//! (see `wit/transform.wit`), so handing a batch to a guest moves the vectors
//! without copying them, and lowering them into guest memory is one memcpy per
//! column. Nothing here knows about Kafka or wasmtime.
//!
//! Beside the batch itself, this module holds the other plain data that
//! crosses layers: what a step made of a batch ([`StepOutput`]) and the
//! aggregate calls between the window engine and the runtime ([`calls`]),
//! which records a batch held ([`Layout`], for the epoch log and replays),
//! and why a record was dead-lettered ([`reason`]).

pub mod calls;
mod layout;
pub mod reason;
mod step;

pub use layout::{Layout, Range};
pub use reason::Reason;
pub use step::StepOutput;

/// Bit of [`Columns::flags`]: the record has a key.
pub const HAS_KEY: u8 = 1 << 0;
/// Bit of [`Columns::flags`]: the record has a value.
pub const HAS_VALUE: u8 = 1 << 1;
/// Bit of [`Columns::flags`]: the record carries its own timestamp.
pub const HAS_TIMESTAMP: u8 = 1 << 2;

/// Records in columnar form: see the `columns` record of the WIT contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub keys: Vec<u8>,
    pub key_offsets: Vec<u32>,
    pub values: Vec<u8>,
    pub value_offsets: Vec<u32>,
    pub flags: Vec<u8>,
    pub timestamps: Vec<i64>,
    pub header_offsets: Vec<u32>,
    pub header_names: Vec<u8>,
    pub header_name_offsets: Vec<u32>,
    pub header_values: Vec<u8>,
    pub header_value_offsets: Vec<u32>,
}

impl Default for Columns {
    fn default() -> Self {
        Self::with_capacity(0, 0)
    }
}

/// One record, borrowed from a [`Columns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp: Option<i64>,
    pub headers: HeadersRef<'a>,
}

/// The headers of one record, borrowed from a [`Columns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadersRef<'a> {
    columns: &'a Columns,
    start: usize,
    end: usize,
}

impl<'a> HeadersRef<'a> {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let c = self.columns;
        (self.start..self.end).map(move |h| {
            (
                span(&c.header_names, &c.header_name_offsets, h),
                span(&c.header_values, &c.header_value_offsets, h),
            )
        })
    }
}

fn span<'a>(data: &'a [u8], offsets: &[u32], i: usize) -> &'a [u8] {
    &data[offsets[i] as usize..offsets[i + 1] as usize]
}

fn offset(len: usize) -> u32 {
    u32::try_from(len).expect("a batch column exceeds 4 GiB; max_bytes keeps batches far below")
}

impl Columns {
    /// Empty columns with room for `records` records of about `bytes` bytes.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        let mut key_offsets = Vec::with_capacity(records + 1);
        key_offsets.push(0);
        let mut header_offsets = Vec::with_capacity(records + 1);
        header_offsets.push(0);
        Self {
            keys: Vec::new(),
            key_offsets,
            values: Vec::with_capacity(bytes),
            value_offsets: {
                let mut v = Vec::with_capacity(records + 1);
                v.push(0);
                v
            },
            flags: Vec::with_capacity(records),
            timestamps: Vec::with_capacity(records),
            header_offsets,
            header_names: Vec::new(),
            header_name_offsets: vec![0],
            header_values: Vec::new(),
            header_value_offsets: vec![0],
        }
    }

    pub fn len(&self) -> usize {
        self.flags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// Bytes held by keys, values and headers.
    pub fn data_bytes(&self) -> usize {
        self.keys.len() + self.values.len() + self.header_names.len() + self.header_values.len()
    }

    pub fn get(&self, i: usize) -> RecordRef<'_> {
        let flags = self.flags[i];
        RecordRef {
            key: (flags & HAS_KEY != 0).then(|| span(&self.keys, &self.key_offsets, i)),
            value: (flags & HAS_VALUE != 0).then(|| span(&self.values, &self.value_offsets, i)),
            timestamp: (flags & HAS_TIMESTAMP != 0).then(|| self.timestamps[i]),
            headers: HeadersRef {
                columns: self,
                start: self.header_offsets[i] as usize,
                end: self.header_offsets[i + 1] as usize,
            },
        }
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordRef<'_>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Append one record. Headers with a null value are appended with an
    /// empty value, as the contract documents.
    pub fn push<'h>(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: Option<i64>,
        headers: impl IntoIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
    ) {
        let mut flags = 0;
        if let Some(key) = key {
            flags |= HAS_KEY;
            self.keys.extend_from_slice(key);
        }
        self.key_offsets.push(offset(self.keys.len()));
        if let Some(value) = value {
            flags |= HAS_VALUE;
            self.values.extend_from_slice(value);
        }
        self.value_offsets.push(offset(self.values.len()));
        if timestamp.is_some() {
            flags |= HAS_TIMESTAMP;
        }
        self.timestamps.push(timestamp.unwrap_or(0));
        self.flags.push(flags);
        for (name, value) in headers {
            self.header_names.extend_from_slice(name);
            self.header_name_offsets
                .push(offset(self.header_names.len()));
            self.header_values
                .extend_from_slice(value.unwrap_or_default());
            self.header_value_offsets
                .push(offset(self.header_values.len()));
        }
        self.header_offsets
            .push(offset(self.header_name_offsets.len() - 1));
    }

    /// Whether every header name of record `i` is UTF-8, as the contract
    /// promises guests. Kafka does not: a name is any bytes on the wire.
    pub fn header_names_are_utf8(&self, i: usize) -> bool {
        let (start, end) = (
            self.header_offsets[i] as usize,
            self.header_offsets[i + 1] as usize,
        );
        (start..end).all(|h| {
            std::str::from_utf8(span(&self.header_names, &self.header_name_offsets, h)).is_ok()
        })
    }

    /// Append a record borrowed from other columns, with a timestamp to use
    /// where the record has none.
    pub fn push_ref(&mut self, record: RecordRef<'_>, fallback_timestamp: Option<i64>) {
        self.push(
            record.key,
            record.value,
            record.timestamp.or(fallback_timestamp),
            record.headers.iter().map(|(n, v)| (n, Some(v))),
        );
    }

    /// Checks the invariants the contract promises, for columns that came
    /// from an untrusted guest. Returns what is wrong, if anything.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.flags.len();
        let check_offsets = |name: &str, offsets: &[u32], count: usize, data: usize| {
            if offsets.len() != count + 1 {
                return Err(format!(
                    "{name} has {} entries, expected {}",
                    offsets.len(),
                    count + 1
                ));
            }
            if offsets[0] != 0 {
                return Err(format!("{name} does not start at 0"));
            }
            if offsets.windows(2).any(|w| w[0] > w[1]) {
                return Err(format!("{name} is not non-decreasing"));
            }
            if offsets[count] as usize != data {
                return Err(format!(
                    "{name} ends at {}, but its data has {data} bytes",
                    offsets[count]
                ));
            }
            Ok(())
        };
        check_offsets("key-offsets", &self.key_offsets, n, self.keys.len())?;
        check_offsets("value-offsets", &self.value_offsets, n, self.values.len())?;
        if self.timestamps.len() != n {
            return Err(format!(
                "timestamps has {} entries, expected {n}",
                self.timestamps.len()
            ));
        }
        let headers = self.header_name_offsets.len().saturating_sub(1);
        check_offsets("header-offsets", &self.header_offsets, n, headers)?;
        check_offsets(
            "header-name-offsets",
            &self.header_name_offsets,
            headers,
            self.header_names.len(),
        )?;
        check_offsets(
            "header-value-offsets",
            &self.header_value_offsets,
            headers,
            self.header_values.len(),
        )?;
        Ok(())
    }
}

/// A micro-batch of input records: the columns plus where each record came
/// from. `partitions` and `offsets` cross into the guest; `sources` (an index
/// into the pipeline's list of source topics) stays in the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub records: Columns,
    pub partitions: Vec<i32>,
    pub offsets: Vec<i64>,
    pub sources: Vec<u16>,
}

impl Batch {
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        Self {
            records: Columns::with_capacity(records, bytes),
            partitions: Vec::with_capacity(records),
            offsets: Vec::with_capacity(records),
            sources: Vec::with_capacity(records),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// A new batch holding the records at `indices`, in that order.
    pub fn select(&self, indices: &[u32]) -> Batch {
        let mut out = Batch::with_capacity(indices.len(), 0);
        for &i in indices {
            let i = i as usize;
            out.records.push_ref(self.records.get(i), None);
            out.partitions.push(self.partitions[i]);
            out.offsets.push(self.offsets[i]);
            out.sources.push(self.sources[i]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Header<'a> = (&'a [u8], Option<&'a [u8]>);
    type Row<'a> = (
        Option<&'a [u8]>,
        Option<&'a [u8]>,
        Option<i64>,
        Vec<Header<'a>>,
    );

    #[test]
    fn header_names_that_are_not_utf8_are_found_per_record() {
        let mut c = Columns::default();
        c.push(
            None,
            None,
            None,
            [(&b"ok"[..], None), (&b"caf\xc3\xa9"[..], None)],
        );
        c.push(
            None,
            None,
            None,
            [(&b"ok"[..], None), (&b"caf\xc3"[..], None)],
        );
        c.push(None, None, None, [(&b"\xa9"[..], None)]);
        c.push(None, None, None, []);
        let found: Vec<bool> = (0..4).map(|i| c.header_names_are_utf8(i)).collect();
        assert_eq!(found, [true, false, false, true]);
    }

    fn sample() -> Batch {
        let mut b = Batch::with_capacity(3, 64);
        let rows: [Row<'_>; 3] = [
            (Some(b"k1"), Some(b"v1"), Some(10), vec![(b"h", Some(b"x"))]),
            (None, Some(b""), None, vec![]),
            (
                Some(b""),
                None,
                Some(30),
                vec![(b"a", None), (b"b", Some(b"yy"))],
            ),
        ];
        for (i, (k, v, t, h)) in rows.into_iter().enumerate() {
            b.records.push(k, v, t, h);
            b.partitions.push(i as i32);
            b.offsets.push(100 + i as i64);
            b.sources.push(0);
        }
        b
    }

    #[test]
    fn push_and_get_round_trip_nulls_and_headers() {
        let b = sample();
        b.records.validate().unwrap();
        let r0 = b.records.get(0);
        assert_eq!(
            (r0.key, r0.value, r0.timestamp),
            (Some(&b"k1"[..]), Some(&b"v1"[..]), Some(10))
        );
        assert_eq!(
            r0.headers.iter().collect::<Vec<_>>(),
            vec![(&b"h"[..], &b"x"[..])]
        );
        let r1 = b.records.get(1);
        assert_eq!(
            (r1.key, r1.value, r1.timestamp),
            (None, Some(&b""[..]), None)
        );
        assert!(r1.headers.is_empty());
        let r2 = b.records.get(2);
        assert_eq!((r2.key, r2.value), (Some(&b""[..]), None));
        assert_eq!(
            r2.headers.iter().collect::<Vec<_>>(),
            vec![(&b"a"[..], &b""[..]), (&b"b"[..], &b"yy"[..])]
        );
    }

    #[test]
    fn select_keeps_records_and_provenance_in_requested_order() {
        let b = sample();
        let s = b.select(&[2, 0]);
        s.records.validate().unwrap();
        assert_eq!(s.partitions, vec![2, 0]);
        assert_eq!(s.offsets, vec![102, 100]);
        let (first, original) = (s.records.get(0), b.records.get(2));
        assert_eq!(
            (first.key, first.value, first.timestamp),
            (original.key, original.value, original.timestamp)
        );
        assert_eq!(
            first.headers.iter().collect::<Vec<_>>(),
            original.headers.iter().collect::<Vec<_>>()
        );
        assert_eq!(s.records.get(1).key, Some(&b"k1"[..]));
    }

    #[test]
    fn validate_rejects_out_of_range_offsets() {
        let mut c = sample().records;
        c.value_offsets[1] = 99;
        assert_eq!(
            c.validate().unwrap_err(),
            "value-offsets is not non-decreasing"
        );
        let mut c = sample().records;
        c.key_offsets.pop();
        assert_eq!(
            c.validate().unwrap_err(),
            "key-offsets has 3 entries, expected 4"
        );
        let mut c = sample().records;
        *c.header_value_offsets.last_mut().unwrap() = 1000;
        assert_eq!(
            c.validate().unwrap_err(),
            "header-value-offsets ends at 1000, but its data has 3 bytes"
        );
    }
}
