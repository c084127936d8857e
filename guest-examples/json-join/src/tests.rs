//! The JSON-merge join natively: keys and times per side, pairs and outer
//! rows, and the records it dead-letters.

use serde_json::json;
use sluice_sdk::Side;
use sluice_sdk::testing::{TestRecord, join_keys, run_join};

use super::JsonJoin;

const CONFIG: &[(&str, &str)] = &[
    ("left_key", "order.id"),
    ("right_key", "order_id"),
    ("left_time", "ts"),
    ("right_time", "paid_at"),
];

fn record(value: &serde_json::Value) -> TestRecord {
    TestRecord::new().value(value.to_string()).timestamp(7)
}

#[test]
fn keys_come_from_the_configured_fields_and_times_from_text_or_milliseconds() {
    let left = [
        record(&json!({ "order": { "id": "o-1" }, "ts": "2026-01-01T00:00:01Z" })),
        record(&json!({ "order": { "id": 42 }, "ts": 5_000 })),
        record(&json!({ "order": { "id": true }, "ts": 6_000 })),
    ];
    let keys = join_keys::<JsonJoin>(CONFIG, Side::Left, &left).unwrap();
    assert_eq!(
        keys,
        [
            Ok((b"o-1".to_vec(), 1_767_225_601_000)),
            Ok((b"42".to_vec(), 5_000)),
            Ok((b"true".to_vec(), 6_000)),
        ]
    );
    let right = [record(&json!({ "order_id": "o-1", "paid_at": 9 }))];
    let keys = join_keys::<JsonJoin>(CONFIG, Side::Right, &right).unwrap();
    assert_eq!(keys, [Ok((b"o-1".to_vec(), 9))]);
}

#[test]
fn without_a_time_field_the_kafka_timestamp_is_the_event_time() {
    let config = [("left_key", "id"), ("right_key", "id")];
    let keys = join_keys::<JsonJoin>(&config, Side::Right, &[record(&json!({ "id": "x" }))]);
    assert_eq!(keys.unwrap(), [Ok((b"x".to_vec(), 7))]);
}

#[test]
fn records_without_a_usable_key_or_time_are_dead_lettered_with_the_reason() {
    let records = [
        TestRecord::new().value("not json"),
        record(&json!([1, 2])),
        record(&json!({ "ts": 1 })),
        record(&json!({ "order": { "id": { "nested": 1 } }, "ts": 1 })),
        record(&json!({ "order": { "id": "a" } })),
        record(&json!({ "order": { "id": "a" }, "ts": 1.5 })),
        record(&json!({ "order": { "id": "a" }, "ts": "yesterday" })),
        TestRecord::new(),
    ];
    let keys = join_keys::<JsonJoin>(CONFIG, Side::Left, &records).unwrap();
    let reasons: Vec<String> = keys.into_iter().map(|k| k.unwrap_err()).collect();
    assert_eq!(
        reasons[0],
        "the value is not JSON: expected ident at line 1 column 2"
    );
    assert_eq!(reasons[1], "the value is not a JSON object");
    assert_eq!(reasons[2], "no key field `order.id`");
    assert_eq!(
        reasons[3],
        "key field `order.id` is not a string, number or boolean"
    );
    assert_eq!(reasons[4], "no time field `ts`");
    assert_eq!(reasons[5], "time field `ts` is not whole milliseconds");
    assert_eq!(
        reasons[6],
        "invalid timestamp `yesterday`: timestamp format is invalid"
    );
    assert_eq!(reasons[7], "the record has no value");
}

#[test]
fn a_pair_keeps_both_records_as_they_came_and_an_outer_row_has_null_for_the_absent_side() {
    let order = TestRecord::new()
        .value(r#"{"order":{"id":"o-1"}, "ts":1000, "z":1, "a":2}"#)
        .timestamp(1);
    let payment = TestRecord::new()
        .value(r#"{"order_id":"o-1","paid_at":4000}"#)
        .timestamp(2);
    let output = run_join::<JsonJoin>(
        CONFIG,
        &[
            (Some(order.clone()), Some(payment.clone())),
            (Some(order), None),
            (None, Some(payment)),
        ],
    )
    .unwrap();
    assert_eq!(
        output.values_str(),
        [
            r#"{"left":{"order":{"id":"o-1"}, "ts":1000, "z":1, "a":2},"right":{"order_id":"o-1","paid_at":4000}}"#,
            r#"{"left":{"order":{"id":"o-1"}, "ts":1000, "z":1, "a":2},"right":null}"#,
            r#"{"left":null,"right":{"order_id":"o-1","paid_at":4000}}"#,
        ]
    );
    // The host's fallbacks: the join key, the later event time.
    let keys: Vec<Option<&[u8]>> = output.outputs.iter().map(|o| o.key.as_deref()).collect();
    assert_eq!(keys, [Some(&b"o-1"[..]); 3]);
    let times: Vec<Option<i64>> = output.outputs.iter().map(|o| o.timestamp).collect();
    assert_eq!(times, [Some(4000), Some(1000), Some(4000)]);
    assert!(output.dead_letters.is_empty());
}

#[test]
fn a_configuration_without_keys_or_with_unknown_keys_is_refused() {
    let missing = run_join::<JsonJoin>(&[("left_key", "id")], &[]).unwrap_err();
    assert_eq!(missing.to_string(), "missing config key `right_key`");
    let unknown = run_join::<JsonJoin>(
        &[("left_key", "id"), ("right_key", "id"), ("left_tme", "t")],
        &[],
    )
    .unwrap_err();
    assert!(unknown.to_string().contains("left_tme"), "{unknown}");
    let empty_part = run_join::<JsonJoin>(&[("left_key", "a..b"), ("right_key", "id")], &[]);
    assert_eq!(
        empty_part.unwrap_err().to_string(),
        "`a..b` is not a field path (names separated by dots)"
    );
}
