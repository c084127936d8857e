//! Per user and window: how many events and the sum of their amounts. The
//! smallest useful aggregate, for the window benchmarks (`tests/benches/windows/`).
//!
//! Input values are the sample events `{event_id, user_id, event_type,
//! timestamp, amount}`; only `user_id` (the key, borrowed) and `amount` are
//! parsed. The event time is the record's Kafka timestamp (the SDK default),
//! so no time parsing is involved. A finished window emits
//!
//! ```json
//! {"user_id":"u7","window_start":1767225600000,"window_end":1767225660000,"count":4,"sum":12.5}
//! ```
//!
//! A value that is not such JSON, or a record without a timestamp, is
//! dead-lettered.
//!
//! Each record is parsed twice, as an aggregate that keeps nothing per
//! record is: once in `extract` (for the key) and once in `fold` (for the
//! amount). With the config `parse_once: "true"`, `fold` takes the amount
//! that `extract` kept as the SDK's per-record `Parsed` value instead, which
//! measures what the second parse costs.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};

/// The two fields of an event this aggregate reads, borrowed from the record.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    amount: f64,
}

/// The accumulator of one user in one window.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CountSum {
    count: u64,
    sum: f64,
}

/// The result of a window, serialized in this field order.
#[derive(Serialize)]
struct Summary<'a> {
    user_id: &'a str,
    window_start: i64,
    window_end: i64,
    count: u64,
    sum: f64,
}

/// Counts events and sums their amounts per user and window.
pub struct CountSumAgg {
    /// With `parse_once`: `fold` uses the amount `extract` parsed.
    parse_once: bool,
    /// With `panic_on_amount`: `fold` panics on a record with this amount
    /// (a data-dependent bug, for the host's fault-isolation tests).
    panic_on: Option<f64>,
    /// With `panic_in_finish_for`: `finish` panics on this user's windows.
    panic_in_finish_for: Option<String>,
    /// With `panic_in_merge_on_sum`: `merge` panics when the accumulator
    /// merged in has this sum.
    panic_in_merge_on_sum: Option<f64>,
}

#[sluice_sdk::aggregate]
impl Aggregate for CountSumAgg {
    type Acc = CountSum;
    /// The record's amount, as `extract` parsed it.
    type Parsed = f64;

    fn init(config: &Config) -> Result<Self, Error> {
        config.deny_unknown(&[
            "parse_once",
            "panic_on_amount",
            "panic_in_finish_for",
            "panic_in_merge_on_sum",
        ])?;
        let parse_once = match config.get("parse_once") {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(format!("parse_once: expected true or false, got `{other}`").into());
            }
        };
        let panic_on = match config.get("panic_on_amount") {
            None => None,
            Some(v) => Some(
                v.parse()
                    .map_err(|_| format!("panic_on_amount: `{v}` is not a number"))?,
            ),
        };
        Ok(CountSumAgg {
            parse_once,
            panic_on,
            panic_in_finish_for: config.get("panic_in_finish_for").map(str::to_owned),
            panic_in_merge_on_sum: match config.get("panic_in_merge_on_sum") {
                None => None,
                Some(v) => Some(
                    v.parse()
                        .map_err(|_| format!("panic_in_merge_on_sum: `{v}` is not a number"))?,
                ),
            },
        })
    }

    fn extract<'r>(&mut self, record: &Record<'r>) -> Result<(Cow<'r, [u8]>, i64, f64), Error> {
        let event: Event<'r> = record.json()?;
        let time = self.event_time(record)?;
        Ok((sluice_sdk::str_key(event.user_id), time, event.amount))
    }

    fn fold_parsed(
        &mut self,
        acc: &mut CountSum,
        record: &Record<'_>,
        _time: i64,
        parsed: &f64,
    ) -> Result<(), Error> {
        let amount = match self.parse_once {
            true => *parsed,
            false => record.json::<Event<'_>>()?.amount,
        };
        if self.panic_on == Some(amount) {
            panic!("unlucky amount {amount}");
        }
        acc.count += 1;
        acc.sum += amount;
        Ok(())
    }

    fn merge(&mut self, acc: &mut CountSum, other: CountSum) {
        if self.panic_in_merge_on_sum == Some(other.sum) {
            panic!("cannot merge a pane of sum {}", other.sum);
        }
        acc.count += other.count;
        acc.sum += other.sum;
    }

    fn finish(
        &mut self,
        window: &Window<'_>,
        acc: &CountSum,
        out: &mut Emitter<'_>,
    ) -> Result<(), Error> {
        let user_id = window.key_str()?;
        if self.panic_in_finish_for.as_deref() == Some(user_id) {
            panic!("cannot finish the windows of {user_id}");
        }
        out.emit_json(&Summary {
            user_id,
            window_start: window.start,
            window_end: window.end,
            count: acc.count,
            sum: acc.sum,
        })
    }
}

#[cfg(test)]
mod tests {
    use sluice_sdk::testing::{TestRecord, run_aggregate, tumbling};

    use super::*;

    /// 2026-01-01T00:00:00Z.
    const T0: i64 = 1_767_225_600_000;

    fn event(id: u32, user: &str, amount: f64, at: i64) -> TestRecord {
        TestRecord::new()
            .key(user)
            .value(format!(
                r#"{{"event_id":"e{id}","user_id":"{user}","event_type":"click","timestamp":"ignored","amount":{amount}}}"#
            ))
            .timestamp(at)
    }

    #[test]
    fn counts_and_sums_per_user_and_window() {
        for config in [
            &[][..],
            &[("parse_once", "false")],
            &[("parse_once", "true")],
        ] {
            counts_and_sums(config);
        }
    }

    fn counts_and_sums(config: &[(&str, &str)]) {
        let records = [
            event(0, "u1", 1.5, T0 + 100),
            event(1, "u2", 2.25, T0 + 200),
            event(2, "u1", 0.5, T0 + 59_999),
            event(3, "u1", 4.0, T0 + 60_000),
            // Out of order, back into the first window.
            event(4, "u1", 0.25, T0 + 5),
        ];
        let output = run_aggregate::<CountSumAgg>(config, &records, tumbling(60_000)).unwrap();
        assert_eq!(
            output.values_str(),
            [
                r#"{"user_id":"u1","window_start":1767225600000,"window_end":1767225660000,"count":3,"sum":2.25}"#,
                r#"{"user_id":"u2","window_start":1767225600000,"window_end":1767225660000,"count":1,"sum":2.25}"#,
                r#"{"user_id":"u1","window_start":1767225660000,"window_end":1767225720000,"count":1,"sum":4.0}"#,
            ]
        );
        let keys: Vec<&[u8]> = output
            .outputs
            .iter()
            .map(|o| o.key.as_deref().unwrap())
            .collect();
        assert_eq!(keys, [&b"u1"[..], b"u2", b"u1"]);
        let timestamps: Vec<Option<i64>> = output.outputs.iter().map(|o| o.timestamp).collect();
        assert_eq!(
            timestamps,
            [Some(T0 + 59_999), Some(T0 + 59_999), Some(T0 + 119_999)]
        );
        assert!(output.dead_letters.is_empty());
    }

    #[test]
    fn dead_letters_bad_json_and_missing_timestamps() {
        let records = [
            TestRecord::new().value("{").timestamp(T0),
            TestRecord::new()
                .value(r#"{"user_id":"u1","amount":1.0}"#)
                .timestamp(T0),
            TestRecord::new().value(r#"{"user_id":"u1","amount":2.0}"#),
            TestRecord::new().value(r#"{"user_id":"u1"}"#).timestamp(T0),
        ];
        let output = run_aggregate::<CountSumAgg>(&[], &records, tumbling(60_000)).unwrap();
        assert_eq!(
            output.values_str(),
            [
                r#"{"user_id":"u1","window_start":1767225600000,"window_end":1767225660000,"count":1,"sum":1.0}"#
            ]
        );
        let dead: Vec<u32> = output.dead_letters.iter().map(|d| d.0).collect();
        assert_eq!(dead, [0, 2, 3]);
        assert_eq!(
            output.dead_letters[1].1,
            "record has no timestamp to take its event time from"
        );
    }

    #[test]
    fn refuses_config() {
        let refused = |config: &[(&str, &str)]| {
            run_aggregate::<CountSumAgg>(config, &[], tumbling(10))
                .err()
                .unwrap()
                .to_string()
        };
        assert_eq!(refused(&[("x", "1")]), "unknown config key `x`");
        assert_eq!(
            refused(&[("parse_once", "yes")]),
            "parse_once: expected true or false, got `yes`"
        );
    }
}
