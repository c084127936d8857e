//! The partition of a keyed record, as Kafka's Java producer (and
//! librdkafka's `murmur2` partitioner) chooses it: records the host
//! repartitions land where a Kafka Streams application would put the same
//! key, whatever partitioner the pipeline's producer is configured with.

/// `toPositive(murmur2(key)) mod partitions`; `partitions` must be positive.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

/// 32-bit MurmurHash2 with Kafka's seed, 4-byte blocks little-endian
/// (`org.apache.kafka.common.utils.Utils.murmur2`).
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes(block.try_into().expect("4 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = blocks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(&first) = tail.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// librdkafka's own `murmur2` partitioner (Java-compatible), called
    /// directly: it only hashes the key. The one unsafe call of the crate,
    /// in a test, to compare against the reference implementation.
    #[allow(unsafe_code)]
    fn librdkafka(key: &[u8], partitions: i32) -> i32 {
        // SAFETY: the murmur2 partitioner reads `keylen` bytes of `key` and
        // nothing else (the topic and opaques are not touched).
        unsafe {
            rdkafka::bindings::rd_kafka_msg_partitioner_murmur2(
                std::ptr::null(),
                key.as_ptr().cast(),
                key.len(),
                partitions,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        }
    }

    #[test]
    fn keys_land_where_kafkas_producers_put_them() {
        // Kafka's `UtilsTest.testMurmur2` values.
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
        let mut keys: Vec<Vec<u8>> =
            vec![Vec::new(), b"a".to_vec(), b"ab".to_vec(), b"abc".to_vec()];
        keys.extend((0..500u32).map(|i| format!("key-{i}").into_bytes()));
        keys.extend((0..64u8).map(|n| (0..n).map(|b| b.wrapping_mul(37)).collect()));
        for key in &keys {
            for partitions in [1, 2, 3, 4, 16, 17, 1000] {
                assert_eq!(
                    partition_for_key(key, partitions),
                    librdkafka(key, partitions),
                    "{key:?} over {partitions}"
                );
            }
        }
    }
}
