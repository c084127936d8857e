use sluice_sdk::testing::{TestRecord, run_aggregate, run_sessions, tumbling};

use super::*;

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn event(id: u32, user: &str, kind: &str, timestamp: &str, amount: f64) -> TestRecord {
    TestRecord::new().value(format!(
        r#"{{"event_id":"e{id}","user_id":"{user}","event_type":"{kind}","timestamp":"{timestamp}","amount":{amount}}}"#
    ))
}

#[test]
fn counts_sums_and_distinct_users_per_type_and_window() {
    let records = [
        event(0, "u1", "click", "2026-01-01T00:00:00.400Z", 1.1),
        event(1, "u2", "click", "2026-01-01T00:00:30.000Z", 2.2),
        event(2, "u1", "click", "2026-01-01T00:00:59.999Z", 0.1),
        event(3, "u1", "view", "2026-01-01T00:00:10.000Z", 5.0),
        event(4, "u3", "click", "2026-01-01T00:01:00.000Z", 3.0),
        // Out of order, back into the first window.
        event(5, "u2", "click", "2026-01-01T00:00:01.000Z", 0.2),
    ];
    let output = run_aggregate::<EventWindowAgg>(&[], &records, tumbling(60_000)).unwrap();
    assert_eq!(
        output.values_str(),
        [
            // 1.1 + 0.2 + 2.2 + 0.1 is 3.6000000000000005 in f64.
            r#"{"window_start":"2026-01-01T00:00:00.000Z","window_end":"2026-01-01T00:01:00.000Z","event_type":"click","count":4,"sum_amount":3.6,"unique_users":2}"#,
            r#"{"window_start":"2026-01-01T00:00:00.000Z","window_end":"2026-01-01T00:01:00.000Z","event_type":"view","count":1,"sum_amount":5.0,"unique_users":1}"#,
            r#"{"window_start":"2026-01-01T00:01:00.000Z","window_end":"2026-01-01T00:02:00.000Z","event_type":"click","count":1,"sum_amount":3.0,"unique_users":1}"#,
        ]
    );
    let keys: Vec<&[u8]> = output
        .outputs
        .iter()
        .map(|o| o.key.as_deref().unwrap())
        .collect();
    assert_eq!(keys, [&b"click"[..], b"view", b"click"]);
    let timestamps: Vec<Option<i64>> = output.outputs.iter().map(|o| o.timestamp).collect();
    assert_eq!(
        timestamps,
        [Some(T0 + 59_999), Some(T0 + 59_999), Some(T0 + 119_999)]
    );
    assert!(output.dead_letters.is_empty());
}

#[test]
fn dead_letters_malformed_events_and_timestamps() {
    let records = [
        TestRecord::new().value("{"),
        event(1, "u1", "click", "2026-01-01 00:00:00", 1.0),
        event(2, "u1", "click", "2026-01-01T00:00:00.000+01:00", 1.0),
        TestRecord::new()
            .value(r#"{"user_id":"u1","event_type":"click","timestamp":"2026-01-01T00:00:00Z"}"#),
        event(4, "u1", "click", "2026-01-01T00:00:00Z", 1.0),
    ];
    let output = run_aggregate::<EventWindowAgg>(&[], &records, tumbling(60_000)).unwrap();
    assert_eq!(
        output.dead_letters,
        [
            (
                0,
                "invalid JSON in record value: EOF while parsing an object at line 1 column 1"
                    .to_string()
            ),
            (
                1,
                "invalid timestamp `2026-01-01 00:00:00`: timestamp format is invalid".to_string()
            ),
            (
                2,
                "invalid timestamp `2026-01-01T00:00:00.000+01:00`: timestamp format is invalid"
                    .to_string()
            ),
            (
                3,
                "invalid JSON in record value: missing field `amount` at line 1 column 72"
                    .to_string()
            ),
        ]
    );
    assert_eq!(
        output.values_str(),
        [
            r#"{"window_start":"2026-01-01T00:00:00.000Z","window_end":"2026-01-01T00:01:00.000Z","event_type":"click","count":1,"sum_amount":1.0,"unique_users":1}"#
        ]
    );
}

#[test]
fn merge_adds_counts_and_sums_and_unions_users() {
    let mut agg = EventWindowAgg::init(&Config::default()).unwrap();
    let stats = |count, sum_amount, users: &[&str]| Stats {
        count,
        sum_amount,
        users: users.iter().map(|u| u.to_string()).collect(),
    };
    let mut acc = stats(2, 1.5, &["u1", "u3"]);
    agg.merge(&mut acc, stats(3, 2.25, &["u2", "u3", "u4"]));
    assert_eq!(acc, stats(5, 3.75, &["u1", "u2", "u3", "u4"]));
    agg.merge(&mut acc, Stats::default());
    assert_eq!(acc, stats(5, 3.75, &["u1", "u2", "u3", "u4"]));
}

#[test]
fn merged_windows_report_the_union() {
    // As session windows (gap 30 s), the 00:00:30 event bridges the other two.
    let records = [
        event(0, "u1", "click", "2026-01-01T00:00:00.000Z", 1.0),
        event(1, "u2", "click", "2026-01-01T00:01:00.000Z", 2.0),
        event(2, "u1", "click", "2026-01-01T00:00:30.000Z", 0.5),
    ];
    let output = run_sessions::<EventWindowAgg>(&[], &records, 30_000).unwrap();
    assert_eq!(
        output.values_str(),
        [
            r#"{"window_start":"2026-01-01T00:00:00.000Z","window_end":"2026-01-01T00:01:30.000Z","event_type":"click","count":3,"sum_amount":3.5,"unique_users":2}"#
        ]
    );
}

#[test]
fn refuses_configuration() {
    let err = run_aggregate::<EventWindowAgg>(&[("size", "1m")], &[], tumbling(1)).unwrap_err();
    assert_eq!(err.to_string(), "unknown config key `size`");
}
