//! Rescales each reading's `value` by a piecewise strategy, from the
//! Kafka/PySpark tutorial this pipeline replaces.
//!
//! Input values are JSON `{strategy, value, ts}`. The output keeps the
//! record's key, headers and timestamp, and its value is
//! `{"strategy", "value", "ts"}` with the same `strategy`, `ts` passed through
//! byte for byte, and the new `value` as a JSON number:
//!
//! | input `value`      | output `value`        |
//! |--------------------|-----------------------|
//! | `v < 30`           | `v * 2`               |
//! | `30 <= v <= 60`    | `v * 1.5 + 10`        |
//! | `v > 60`           | `v² / 100`            |
//!
//! A value that is not such JSON is dead-lettered.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_sdk::{Emitter, Error, Record};

/// A reading, borrowed from the record.
#[derive(Deserialize)]
struct Reading<'a> {
    #[serde(borrow)]
    strategy: Cow<'a, str>,
    value: f64,
    #[serde(borrow)]
    ts: &'a RawValue,
}

/// The rescaled reading, serialized in this field order.
#[derive(Serialize)]
struct Rescaled<'a> {
    strategy: &'a str,
    value: f64,
    ts: &'a RawValue,
}

/// The piecewise strategy.
fn rescale(value: f64) -> f64 {
    if value < 30.0 {
        value * 2.0
    } else if value <= 60.0 {
        value * 1.5 + 10.0
    } else {
        value * value / 100.0
    }
}

/// Emits the reading with its `value` rescaled.
#[sluice_sdk::transform]
pub fn strategy_map(record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
    let reading: Reading<'_> = record.json()?;
    out.emit_json(&Rescaled {
        strategy: &reading.strategy,
        value: rescale(reading.value),
        ts: reading.ts,
    })
}

#[cfg(test)]
mod tests {
    use sluice_sdk::testing::{TestRecord, run_fn};

    use super::*;

    fn reading(value: &str) -> TestRecord {
        let json =
            format!(r#"{{"strategy":"s1","value":{value},"ts":"2024-01-01T00:00:00.000Z"}}"#);
        TestRecord::new()
            .key("s1")
            .value(json)
            .header("h", "1")
            .timestamp(42)
    }

    #[test]
    fn applies_the_piecewise_strategy_at_and_around_the_boundaries() {
        let records = ["10", "29.5", "30", "45", "60", "60.5", "100"].map(reading);
        let output = run_fn(strategy_map, &records);
        let ts = r#""ts":"2024-01-01T00:00:00.000Z""#;
        let expected: Vec<String> = ["20.0", "59.0", "55.0", "77.5", "100.0", "36.6025", "100.0"]
            .iter()
            .map(|v| format!(r#"{{"strategy":"s1","value":{v},{ts}}}"#))
            .collect();
        assert_eq!(output.values_str(), expected);
        assert!(output.dead_letters.is_empty());
    }

    #[test]
    fn keeps_key_headers_timestamp_and_raw_ts() {
        let record = TestRecord::new()
            .key("k")
            .value(r#"{"ts": 1700000000123 ,"value":1,"strategy":"fast"}"#)
            .header("trace", "t")
            .timestamp(7);
        let output = run_fn(strategy_map, &[record]);
        assert_eq!(
            output.values_str(),
            [r#"{"strategy":"fast","value":2.0,"ts":1700000000123}"#]
        );
        let emitted = &output.outputs[0];
        assert_eq!(emitted.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(emitted.headers, [("trace".to_string(), b"t".to_vec())]);
        assert_eq!(emitted.timestamp, Some(7));
    }

    #[test]
    fn dead_letters_unparseable_values() {
        let records = [
            TestRecord::new().value("{"),
            TestRecord::new().value(r#"{"strategy":"s","value":"high","ts":1}"#),
        ];
        let output = run_fn(strategy_map, &records);
        assert!(output.outputs.is_empty());
        assert_eq!(
            output.dead_letters,
            [
                (0, "invalid JSON in record value: EOF while parsing an object at line 1 column 1".to_string()),
                (1, "invalid JSON in record value: invalid type: string \"high\", expected f64 at line 1 column 30".to_string()),
            ]
        );
    }
}
