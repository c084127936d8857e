//! The Kafka source on its own: records read many at a time from the
//! source's queue, batched by the spec's trigger, in each partition's offset
//! order, byte for byte.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use sluice::source::KafkaSource;
use sluice_tests::*;

const PARTITIONS: i32 = 4;
const PER_PARTITION: usize = 1500;
/// A header name that is not UTF-8.
const BAD_NAME: &[u8] = b"caf\xe9";

/// Record `n` of partition `p`: its value, key, timestamp and headers.
fn record(p: i32, n: usize) -> RawRecord {
    let value = format!("p{p}-{n:04}-{}", "x".repeat(n % 50));
    let mut r = RawRecord::new(
        &value,
        1_000_000 + n as i64,
        &[(b"n", n.to_string().as_bytes())],
    );
    r.key = Some(format!("user-{}", n % 7).into_bytes());
    if n % 100 == 3 {
        r.headers.push((BAD_NAME.to_vec(), None));
    }
    r
}

/// A topic of four partitions holding `PER_PARTITION` records each.
fn filled_topic() -> String {
    let topic = unique("source-in");
    create_topics(&[&topic], PARTITIONS);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for n in 0..PER_PARTITION {
        for p in 0..PARTITIONS {
            let r = record(p, n);
            let headers = r.headers.iter().map(|(n, v)| (n.as_slice(), v.as_deref()));
            let sent: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&topic)
                .partition(p)
                .key(r.key.as_deref().unwrap())
                .payload(r.value.as_deref().unwrap())
                .timestamp(r.timestamp.unwrap())
                .headers(sluice::kafka_headers::build(headers, r.headers.len()));
            producer
                .send(sent)
                .map_err(|(e, _)| e)
                .expect("queue a record");
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    topic
}

/// Reads `topic` to its end with `batch` as the trigger: the batches'
/// sizes, and per partition its records with their offsets.
fn read_all(topic: &str, batch: &str) -> (Vec<usize>, Vec<Vec<(i64, RawRecord)>>) {
    let (out, dlq) = (unique("source-out"), unique("source-dlq"));
    create_topics(&[&out, &dlq], 1);
    let spec = spec(&format!(
        "name: {}\nkafka: {{ brokers: \"{}\" }}\nsource: {{ topics: [{topic}], group: {} }}\n\
         batch: {batch}\ntransforms:\n  - module: {}\noutputs: {{ default: {{ topic: {out} }} }}\n\
         dead_letter: {{ topic: {dlq} }}\n",
        unique("source"),
        brokers(),
        unique("g"),
        guest("filter-heartbeats").display(),
    ));
    let mut source = KafkaSource::new(&spec, true, None, None).expect("source");
    assert!(
        source.reads_in_batches(),
        "the source fell back to one poll per record"
    );
    let (stop, wake) = (AtomicBool::new(false), AtomicBool::new(false));
    let mut sizes = Vec::new();
    let mut partitions = vec![Vec::new(); PARTITIONS as usize];
    while let Some(polled) = source.next_batch(&stop, &wake).expect("a batch") {
        let batch = polled.batch;
        if batch.is_empty() {
            continue;
        }
        sizes.push(batch.len());
        for (i, r) in batch.records.iter().enumerate() {
            // A null header value is carried as an empty one.
            let headers = r
                .headers
                .iter()
                .map(|(n, v)| (n.to_vec(), (!v.is_empty()).then(|| v.to_vec())))
                .collect();
            partitions[batch.partitions[i] as usize].push((
                batch.offsets[i],
                RawRecord {
                    key: r.key.map(<[u8]>::to_vec),
                    value: r.value.map(<[u8]>::to_vec),
                    timestamp: r.timestamp,
                    headers,
                },
            ));
        }
        // The commit covers exactly what the batch holds.
        for next in &polled.commit {
            let last = batch
                .offsets
                .iter()
                .zip(&batch.partitions)
                .filter(|&(_, &p)| p == next.partition)
                .map(|(&o, _)| o)
                .max();
            assert_eq!(last, Some(next.offset - 1), "commit {next:?}");
        }
    }
    (sizes, partitions)
}

fn assert_every_record_once_in_order(partitions: &[Vec<(i64, RawRecord)>]) {
    for (p, records) in partitions.iter().enumerate() {
        assert_eq!(records.len(), PER_PARTITION, "partition {p}");
        for (n, (offset, r)) in records.iter().enumerate() {
            assert_eq!(*offset, n as i64, "partition {p}");
            assert_eq!(r, &record(p as i32, n), "partition {p}, offset {offset}");
        }
    }
}

#[test]
fn records_are_read_in_full_batches_in_offset_order_byte_for_byte() {
    let topic = filled_topic();
    let (sizes, partitions) = read_all(&topic, "{ max_records: 1000, max_wait: 5s }");
    // Everything is there from the start: every batch closes full.
    assert_eq!(sizes, [1000; 6]);
    assert_every_record_once_in_order(&partitions);
}

#[test]
fn records_past_a_batch_full_by_its_bytes_open_the_next_batch() {
    let topic = filled_topic();
    let (sizes, partitions) = read_all(
        &topic,
        "{ max_records: 1000, max_bytes: 4 KiB, max_wait: 5s }",
    );
    // Each batch closes on its bytes (the records are 11-60 bytes of key
    // and value, plus their headers), far below 1,000 records; what was
    // read past it leads the next batch.
    let (last, full) = sizes.split_last().expect("batches");
    assert!(full.iter().all(|&n| (40..200).contains(&n)), "{sizes:?}");
    assert!(*last <= 200, "{sizes:?}");
    assert_eq!(
        sizes.iter().sum::<usize>(),
        PER_PARTITION * PARTITIONS as usize
    );
    assert_every_record_once_in_order(&partitions);
}
