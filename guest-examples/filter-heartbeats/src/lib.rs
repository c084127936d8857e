//! Drops heartbeat events and forwards every other event unchanged.
//!
//! Input values are JSON events `{event_id, user_id, event_type, timestamp,
//! amount}`; only `event_type` is parsed, borrowed from the record. A value
//! that is not such JSON is dead-lettered.

use std::borrow::Cow;

use serde::Deserialize;
use sluice_sdk::{Emitter, Error, Record};

/// The one field this transform looks at.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    event_type: Cow<'a, str>,
}

/// Forwards the record unless its `event_type` is `"heartbeat"`.
#[sluice_sdk::transform]
pub fn filter_heartbeats(record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
    let event: Event<'_> = record.json()?;
    if event.event_type != "heartbeat" {
        out.forward();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::testing::{TestRecord, run_fn};

    use super::*;

    fn event(event_type: &str) -> String {
        format!(
            r#"{{"event_id":"e1","user_id":"u1","event_type":"{event_type}","timestamp":1700000000000,"amount":9.5}}"#
        )
    }

    #[test]
    fn drops_heartbeats_and_forwards_the_rest_unchanged() {
        let purchase = event("purchase");
        let records = [
            TestRecord::new()
                .key("u1")
                .value(event("heartbeat"))
                .timestamp(10),
            TestRecord::new()
                .key("u1")
                .value(&purchase)
                .header("source", "web")
                .timestamp(11),
            TestRecord::new().value(r#"{"event_type":"heart\u0062eat"}"#),
        ];
        let output = run_fn(filter_heartbeats, &records);
        assert_eq!(output.values_str(), [purchase.as_str()]);
        let forwarded = &output.outputs[0];
        assert_eq!(forwarded.input, 1);
        assert_eq!(forwarded.output, None);
        assert_eq!(forwarded.key.as_deref(), Some(&b"u1"[..]));
        assert_eq!(forwarded.headers, [("source".to_string(), b"web".to_vec())]);
        assert_eq!(forwarded.timestamp, Some(11));
        assert_eq!(output.dropped, [0, 2]);
        assert!(output.dead_letters.is_empty());
    }

    #[test]
    fn dead_letters_unparseable_values() {
        let records = [
            TestRecord::new().value("not json"),
            TestRecord::new().value(r#"{"event_id":"e1"}"#),
            TestRecord::new().key("tombstone"),
        ];
        let output = run_fn(filter_heartbeats, &records);
        assert!(output.outputs.is_empty());
        let reasons: Vec<(u32, &str)> = output
            .dead_letters
            .iter()
            .map(|(i, r)| (*i, r.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    0,
                    "invalid JSON in record value: expected ident at line 1 column 2"
                ),
                (
                    1,
                    "invalid JSON in record value: missing field `event_type` at line 1 column 17"
                ),
                (2, "record value is null, expected JSON"),
            ]
        );
    }
}
