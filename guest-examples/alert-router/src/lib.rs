//! Routes error events to the `alerts` output and everything else to the
//! default output, unchanged.
//!
//! Input values are JSON events with an `event_type` field; only that field is
//! parsed, borrowed from the record. A value that is not such JSON is
//! dead-lettered.

use std::borrow::Cow;

use serde::Deserialize;
use sluice_sdk::{Emitter, Error, Record};

/// The named output that error events go to.
pub const ALERTS: &str = "alerts";

/// The one field this transform looks at.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    event_type: Cow<'a, str>,
}

/// Forwards `"error"` events to [`ALERTS`], others to the default output.
#[sluice_sdk::transform]
pub fn alert_router(record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
    let event: Event<'_> = record.json()?;
    if event.event_type == "error" {
        out.forward_to(ALERTS);
    } else {
        out.forward();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::testing::{TestRecord, run_fn};

    use super::*;

    #[test]
    fn routes_errors_to_alerts_and_the_rest_to_default() {
        let records = [
            TestRecord::new()
                .key("a")
                .value(r#"{"event_type":"error","code":500}"#)
                .timestamp(1),
            TestRecord::new()
                .key("b")
                .value(r#"{"event_type":"click"}"#),
            TestRecord::new().value("{oops"),
            TestRecord::new()
                .key("d")
                .value(r#"{"event_type":"error"}"#)
                .header("x", "y"),
        ];
        let output = run_fn(alert_router, &records);
        let routed: Vec<(u32, Option<&str>, &str)> = output
            .outputs
            .iter()
            .map(|e| (e.input, e.output.as_deref(), e.value_str().unwrap()))
            .collect();
        assert_eq!(
            routed,
            [
                (0, Some("alerts"), r#"{"event_type":"error","code":500}"#),
                (1, None, r#"{"event_type":"click"}"#),
                (3, Some("alerts"), r#"{"event_type":"error"}"#),
            ]
        );
        assert_eq!(output.outputs[0].timestamp, Some(1));
        assert_eq!(
            output.outputs[2].headers,
            [("x".to_string(), b"y".to_vec())]
        );
        assert_eq!(
            output.dead_letters,
            [(
                2,
                "invalid JSON in record value: key must be a string at line 1 column 2".to_string()
            )]
        );
        assert!(output.dropped.is_empty());
    }
}
