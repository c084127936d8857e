//! Record sizes as librdkafka counts them against `message.max.bytes`,
//! so that a record too large is known before it is produced.

/// librdkafka's default `message.max.bytes`.
pub(super) const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// librdkafka's bound on a record's framing in a v2 batch
/// (`RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`: length, attributes, timestamp and
/// offset deltas, key and value lengths, header count, as varints).
const RECORD_OVERHEAD: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;

/// The size librdkafka holds against `message.max.bytes` for a record with
/// these key, value and header lengths (`rd_kafka_msg_max_wire_size`):
/// framing, key, value, and each header's name and value with their
/// zig-zag varint lengths.
pub fn wire_size(
    key: usize,
    value: usize,
    headers: impl IntoIterator<Item = (usize, usize)>,
) -> usize {
    fn varint(n: usize) -> usize {
        let zigzag = (n as u64) << 1;
        (64 - zigzag.max(1).leading_zeros() as usize).div_ceil(7)
    }
    let headers: usize = headers
        .into_iter()
        .map(|(n, v)| n + v + varint(n) + varint(v))
        .sum();
    RECORD_OVERHEAD + key + value + headers
}

/// [`super::KafkaSink::send`] did not queue a record: it is larger than the
/// producer's `message.max.bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    pub bytes: usize,
    pub limit: usize,
}
