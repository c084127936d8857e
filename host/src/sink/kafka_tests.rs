//! Tests of the Kafka sink: sizes against librdkafka, and records the
//! broker refuses.

mod size {
    use super::super::*;
    use rdkafka::producer::DefaultProducerContext;

    /// librdkafka refuses a record in `send` itself (no broker needed) when
    /// its wire size passes `message.max.bytes`: `wire_size` must agree to
    /// the byte, long header values (two-byte varints) included.
    #[test]
    fn wire_size_is_the_size_librdkafka_holds_against_its_limit() {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.max.bytes", "1000")
            .create()
            .unwrap();
        let reason = "x".repeat(70);
        let names: [(&[u8], Option<&[u8]>); 2] = [
            (b"sluice.error", Some(reason.as_bytes())),
            (b"h", Some(b"")),
        ];
        let size = |value: usize| {
            wire_size(
                3,
                value,
                names
                    .iter()
                    .map(|(n, v)| (n.len(), v.map_or(0, <[u8]>::len))),
            )
        };
        let fits = (0..1000).rev().find(|&v| size(v) <= 1000).unwrap();
        assert_eq!(size(fits), 1000);
        for (value, accepted) in [(fits, true), (fits + 1, false)] {
            let payload = vec![0u8; value];
            let record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to("t")
                .key(&b"key"[..])
                .payload(&payload[..])
                .headers(kafka_headers::build(names, 2));
            let result = producer.send(record).map_err(|(e, _)| e);
            assert_eq!(
                result.is_ok(),
                accepted,
                "value of {value} bytes: {result:?}"
            );
        }
    }

    #[test]
    fn the_producer_queue_is_bounded_by_default() {
        let get = |k: &str| {
            PRODUCER_DEFAULTS
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| *v)
        };
        assert_eq!(get("queue.buffering.max.kbytes"), Some("262144"));
        assert_eq!(get("queue.buffering.max.messages"), Some("1000000"));
    }
}

mod refused {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::super::*;

    /// A broker whose limit is below the producer's answers
    /// MESSAGE_TOO_LARGE in the delivery report: the record is quarantined
    /// (under its source coordinates, for a dead letter) and the batch is
    /// delivered, not failed. (librdkafka's mock cluster: the test broker
    /// stores such records silently instead of refusing them.)
    #[test]
    fn a_record_the_broker_refuses_as_too_large_is_quarantined_not_fatal() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("dlq", 1, 1).unwrap();
        let kafka: KafkaSpec =
            serde_yaml_ng::from_str(&format!("brokers: \"{}\"\n", cluster.bootstrap_servers()))
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sink = KafkaSink::new(&kafka, "p", Quarantine::in_dir(dir.path())).unwrap();
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
        );
        let ack = BatchAck::new();
        let extra: [(&str, &[u8]); 3] = [
            ("sluice.source.topic", b"in"),
            ("sluice.source.partition", b"2"),
            ("sluice.source.offset", b"41"),
        ];
        let h = headers(std::iter::empty(), &extra);
        let sent = sink
            .send(&ack, "dlq", None, Some(b"k"), Some(b"v"), None, h, 100)
            .unwrap();
        assert_eq!(sent, Ok(()));
        assert_eq!(ack.wait(), Ok(()));
        assert_eq!(sink.quarantine().count(), 1);
        let line: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("quarantine/quarantine.jsonl")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (
                &line["topic"],
                &line["partition"],
                &line["offset"],
                &line["reason"]
            ),
            (
                &serde_json::json!("in"),
                &serde_json::json!(2),
                &serde_json::json!(41),
                &serde_json::json!(
                    "the broker refused it as too large (the producer's limit is 1000000)"
                )
            )
        );
    }
}
