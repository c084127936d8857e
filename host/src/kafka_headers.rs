//! Kafka record headers as raw bytes, read and written without rdkafka's
//! `&str` header names.
//!
//! Kafka header names are bytes on the wire, and any client can send one
//! that is not UTF-8; rdkafka 0.39's `Headers::get`/`iter` unwrap the
//! conversion of the name to `&str` and panic on such a record. One record
//! would then stop a pipeline on every restart. Sluice reads and writes
//! names through librdkafka itself, so such a record is carried (and
//! dead-lettered) byte for byte.
//!
//! The two functions below are the only unsafe code in the crate.

use std::ffi::CStr;

use rdkafka::Message;
use rdkafka::bindings::{
    rd_kafka_header_add, rd_kafka_header_get_all, rd_kafka_headers_t,
    rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
};
use rdkafka::message::{BorrowedHeaders, Headers, OwnedHeaders};

/// One header: its name and its value (`None`: a null value).
pub type RawHeader<'a> = (&'a [u8], Option<&'a [u8]>);

/// Headers that rdkafka can lend as [`BorrowedHeaders`]: those of a
/// consumed message and those of a detached one.
pub trait AsBorrowedHeaders: Headers {
    fn borrowed_headers(&self) -> &BorrowedHeaders;
}

impl AsBorrowedHeaders for BorrowedHeaders {
    fn borrowed_headers(&self) -> &BorrowedHeaders {
        self
    }
}

impl AsBorrowedHeaders for OwnedHeaders {
    fn borrowed_headers(&self) -> &BorrowedHeaders {
        self.as_borrowed()
    }
}

/// The headers of `m`, in order, names as raw bytes. Never panics.
pub fn message_headers<M: Message>(m: &M) -> impl Iterator<Item = RawHeader<'_>>
where
    M::Headers: AsBorrowedHeaders,
{
    m.headers()
        .map(|h| h.borrowed_headers())
        .into_iter()
        .flat_map(|h| (0..h.count()).map_while(move |i| get(h, i)))
}

/// Header `idx` of `headers`, or `None` past the last one.
#[allow(unsafe_code)]
fn get(headers: &BorrowedHeaders, idx: usize) -> Option<RawHeader<'_>> {
    let mut name = std::ptr::null();
    let mut value = std::ptr::null();
    let mut size = 0usize;
    // SAFETY: rdkafka's `BorrowedHeaders` is a zero-sized stand-in whose
    // address is librdkafka's `rd_kafka_headers_t *` (rdkafka 0.39
    // `message.rs`, `as_native_ptr` does the same cast; pinned by
    // Cargo.lock, and `tests::names_survive_as_bytes` fails if it changes).
    // librdkafka returns pointers into the headers, which live as long as
    // `headers` is borrowed: the name NUL-terminated, the value `size` bytes
    // or null.
    unsafe {
        let native = std::ptr::from_ref(headers).cast::<rd_kafka_headers_t>();
        let err = rd_kafka_header_get_all(native, idx, &mut name, &mut value, &mut size);
        if err != RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            return None;
        }
        let value =
            (!value.is_null()).then(|| std::slice::from_raw_parts(value.cast::<u8>(), size));
        Some((CStr::from_ptr(name).to_bytes(), value))
    }
}

/// Headers built from raw `(name, value)` pairs, for a produced record.
pub fn build<'a>(
    entries: impl IntoIterator<Item = RawHeader<'a>>,
    capacity: usize,
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(capacity);
    for (name, value) in entries {
        add(&mut headers, name, value);
    }
    headers
}

/// Appends one header; librdkafka copies name and value.
#[allow(unsafe_code)]
fn add(headers: &mut OwnedHeaders, name: &[u8], value: Option<&[u8]>) {
    let (value_ptr, value_len) = match value {
        Some(v) => (v.as_ptr().cast(), v.len()),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: the address of `as_borrowed()` is the `rd_kafka_headers_t *`
    // that `headers` owns (see `get`); `&mut` makes this the only user, and
    // the zero-sized `BorrowedHeaders` covers no Rust memory that the write
    // could alias. librdkafka copies `name_len` bytes of the name and
    // `value_len` bytes of the value (none for a null value), so neither
    // needs a terminator nor outlives the call. The only error it returns
    // is for read-only headers, which these are not.
    unsafe {
        let native = std::ptr::from_ref(headers.as_borrowed())
            .cast::<rd_kafka_headers_t>()
            .cast_mut();
        rd_kafka_header_add(
            native,
            name.as_ptr().cast(),
            name.len() as isize,
            value_ptr,
            value_len as isize,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    #[test]
    fn names_survive_as_bytes() {
        let entries: [RawHeader<'_>; 3] = [
            (b"plain", Some(b"v1")),
            (b"caf\xe9 \xff", Some(b"\x00\x01")),
            (b"null", None),
        ];
        let headers = build(entries, 3);
        let message = OwnedMessage::new(
            None,
            None,
            "t".to_owned(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(headers),
        );
        let read: Vec<RawHeader<'_>> = message_headers(&message).collect();
        assert_eq!(read, entries);
    }

    #[test]
    fn a_message_without_headers_has_none() {
        let message = OwnedMessage::new(
            None,
            None,
            "t".to_owned(),
            Timestamp::NotAvailable,
            0,
            0,
            None,
        );
        assert_eq!(message_headers(&message).count(), 0);
    }
}
