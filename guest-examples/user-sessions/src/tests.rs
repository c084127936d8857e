use sluice_sdk::testing::{TestRecord, run_aggregate, run_sessions, tumbling};

use super::*;

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn event(id: u32, user: &str, timestamp: &str) -> TestRecord {
    TestRecord::new().value(format!(
        r#"{{"event_id":"e{id}","user_id":"{user}","event_type":"click","timestamp":"{timestamp}","amount":1.0}}"#
    ))
}

/// The events of the integration tests' golden `session` case, all in one
/// batch (there, e7 comes too late to count).
#[test]
fn sessions_merge_when_an_event_bridges_them() {
    let records = [
        event(0, "u1", "2026-01-01T00:00:00.000Z"),
        event(1, "u1", "2026-01-01T00:00:20.000Z"),
        event(2, "u2", "2026-01-01T00:00:05.000Z"),
        event(3, "u1", "2026-01-01T00:01:20.000Z"),
        event(4, "u2", "2026-01-01T00:00:35.000Z"),
        // Bridges u1's [0 s, 50 s) and [80 s, 110 s).
        event(5, "u1", "2026-01-01T00:00:50.000Z"),
        event(6, "u3", "2026-01-01T00:03:20.000Z"),
        event(7, "u1", "2026-01-01T00:00:30.000Z"),
    ];
    let output = run_sessions::<UserSessions>(&[], &records, 30_000).unwrap();
    assert_eq!(
        output.values_str(),
        [
            r#"{"user_id":"u2","session_start":"2026-01-01T00:00:05.000Z","session_end":"2026-01-01T00:01:05.000Z","events":2,"duration_ms":30000}"#,
            r#"{"user_id":"u1","session_start":"2026-01-01T00:00:00.000Z","session_end":"2026-01-01T00:01:50.000Z","events":5,"duration_ms":80000}"#,
            r#"{"user_id":"u3","session_start":"2026-01-01T00:03:20.000Z","session_end":"2026-01-01T00:03:50.000Z","events":1,"duration_ms":0}"#,
        ]
    );
    let keys: Vec<&[u8]> = output
        .outputs
        .iter()
        .map(|o| o.key.as_deref().unwrap())
        .collect();
    assert_eq!(keys, [&b"u2"[..], b"u1", b"u3"]);
    assert_eq!(output.outputs[0].timestamp, Some(T0 + 65_000 - 1));
    assert!(output.dead_letters.is_empty());
}

#[test]
fn merge_adds_counts_and_keeps_the_earliest_and_latest_times() {
    let mut agg = UserSessions::init(&Config::default()).unwrap();
    let session = |events, first, last| Session {
        events,
        first,
        last,
    };
    let mut acc = session(2, 100, 300);
    agg.merge(&mut acc, session(3, 50, 200));
    assert_eq!(acc, session(5, 50, 300));
    agg.merge(&mut acc, session(1, 400, 400));
    assert_eq!(acc, session(6, 50, 400));
    // An empty accumulator is neutral, on either side.
    agg.merge(&mut acc, Session::default());
    assert_eq!(acc, session(6, 50, 400));
    let mut empty = Session::default();
    agg.merge(&mut empty, session(1, -5, -5));
    assert_eq!(empty, session(1, -5, -5));
}

#[test]
fn fold_tracks_count_and_extremes_in_other_windows_too() {
    let records = [
        event(0, "u1", "2026-01-01T00:00:40.000Z"),
        event(1, "u1", "2026-01-01T00:00:10.250Z"),
        event(2, "u1", "2026-01-01T00:00:30.000Z"),
    ];
    let output = run_aggregate::<UserSessions>(&[], &records, tumbling(60_000)).unwrap();
    assert_eq!(
        output.values_str(),
        [
            r#"{"user_id":"u1","session_start":"2026-01-01T00:00:00.000Z","session_end":"2026-01-01T00:01:00.000Z","events":3,"duration_ms":29750}"#
        ]
    );
}

#[test]
fn dead_letters_events_without_a_user_or_a_valid_timestamp() {
    let records = [
        TestRecord::new().value(r#"{"timestamp":"2026-01-01T00:00:00.000Z"}"#),
        event(1, "u1", "yesterday"),
        TestRecord::new(),
        event(3, "u1", "2026-01-01T00:00:00.000Z"),
    ];
    let output = run_sessions::<UserSessions>(&[], &records, 1_000).unwrap();
    assert_eq!(
        output.dead_letters,
        [
            (
                0,
                "invalid JSON in record value: missing field `user_id` at line 1 column 40"
                    .to_string()
            ),
            (
                1,
                "invalid timestamp `yesterday`: timestamp format is invalid".to_string()
            ),
            (2, "record value is null, expected JSON".to_string()),
        ]
    );
    assert_eq!(
        output.values_str(),
        [
            r#"{"user_id":"u1","session_start":"2026-01-01T00:00:00.000Z","session_end":"2026-01-01T00:00:01.000Z","events":1,"duration_ms":0}"#
        ]
    );
}
