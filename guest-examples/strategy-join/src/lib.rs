//! The tutorial's last step: strategy C's output joined with strategy D's
//! input, per sensor, within an interval of event time (the spec says which:
//! ±5 minutes in `deploy/demo/strategy-join.yaml`), into D's input made
//! ready.
//!
//! Both sides are readings `{"strategy","value","ts"}` keyed by sensor (C's
//! as `strategy-map` rescaled them); the join key is the record's Kafka key,
//! the event time its `ts` (RFC 3339). Left is C's output, right D's input.
//! A matched pair becomes
//!
//! ```json
//! {"sensor":"sensor-3","value":41,"ts":"2026-01-01T00:00:30.000Z","c_value":58.5,"c_ts":"2026-01-01T00:00:00.000Z"}
//! ```
//!
//! (D's reading with the C value it is ready with); an outer row of an
//! outer join has `null` for the C fields, or for D's. A reading without a
//! key, or whose value is not such JSON, is dead-lettered.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use sluice_sdk::time::parse_rfc3339;
use sluice_sdk::{Config, Emitter, Error, Join, Record, Side};

/// A reading, borrowed from the record.
#[derive(Deserialize)]
struct Reading<'a> {
    value: f64,
    #[serde(borrow)]
    ts: Cow<'a, str>,
}

/// D's input, ready: the output value.
#[derive(Serialize)]
struct Ready<'a> {
    sensor: &'a str,
    value: Option<f64>,
    ts: Option<&'a str>,
    c_value: Option<f64>,
    c_ts: Option<&'a str>,
}

/// The C-output / D-input join.
pub struct StrategyJoin;

fn reading<'r>(record: &Record<'r>) -> Result<Reading<'r>, Error> {
    record.json()
}

#[sluice_sdk::join]
impl Join for StrategyJoin {
    fn init(config: &Config) -> Result<Self, Error> {
        config.deny_unknown(&[])?;
        Ok(StrategyJoin)
    }

    fn key_and_time<'r>(
        &mut self,
        _side: Side,
        record: &Record<'r>,
    ) -> Result<(Cow<'r, [u8]>, i64), Error> {
        let sensor = record
            .key()
            .ok_or("a reading needs its sensor as the key")?;
        let time = parse_rfc3339(&reading(record)?.ts)?;
        Ok((Cow::Borrowed(sensor), time))
    }

    fn join(
        &mut self,
        c: Option<&Record<'_>>,
        d: Option<&Record<'_>>,
        out: &mut Emitter<'_>,
    ) -> Result<(), Error> {
        let sensor = c.or(d).and_then(|r| r.key()).unwrap_or_default();
        let sensor = std::str::from_utf8(sensor)?;
        let (c, d) = (c.map(reading).transpose()?, d.map(reading).transpose()?);
        out.emit_json(&Ready {
            sensor,
            value: d.as_ref().map(|d| d.value),
            ts: d.as_ref().map(|d| &*d.ts),
            c_value: c.as_ref().map(|c| c.value),
            c_ts: c.as_ref().map(|c| &*c.ts),
        })
    }
}

#[cfg(test)]
mod tests {
    use sluice_sdk::Side;
    use sluice_sdk::testing::{TestRecord, join_keys, run_join};

    use super::StrategyJoin;

    fn reading(sensor: &str, value: f64, ts: &str) -> TestRecord {
        TestRecord::new()
            .key(sensor)
            .value(format!(r#"{{"strategy":"X","value":{value},"ts":"{ts}"}}"#))
    }

    #[test]
    fn the_sensor_is_the_key_and_ts_the_event_time() {
        let keys = join_keys::<StrategyJoin>(
            &[],
            Side::Left,
            &[
                reading("sensor-1", 3.0, "2026-01-01T00:00:10Z"),
                TestRecord::new().value(r#"{"value":1,"ts":"2026-01-01T00:00:10Z"}"#),
                TestRecord::new().key("s").value("not json"),
            ],
        )
        .unwrap();
        assert_eq!(keys[0], Ok((b"sensor-1".to_vec(), 1_767_225_610_000)));
        assert_eq!(
            keys[1],
            Err("a reading needs its sensor as the key".to_owned())
        );
        assert_eq!(
            keys[2],
            Err("invalid JSON in record value: expected ident at line 1 column 2".to_owned())
        );
    }

    #[test]
    fn d_input_is_made_ready_with_the_c_value_it_joined() {
        let c = reading("sensor-3", 58.5, "2026-01-01T00:00:00.000Z");
        let d = reading("sensor-3", 41.0, "2026-01-01T00:00:30.000Z");
        let output =
            run_join::<StrategyJoin>(&[], &[(Some(c), Some(d.clone())), (None, Some(d))]).unwrap();
        assert_eq!(
            output.values_str(),
            [
                r#"{"sensor":"sensor-3","value":41.0,"ts":"2026-01-01T00:00:30.000Z","c_value":58.5,"c_ts":"2026-01-01T00:00:00.000Z"}"#,
                r#"{"sensor":"sensor-3","value":41.0,"ts":"2026-01-01T00:00:30.000Z","c_value":null,"c_ts":null}"#,
            ]
        );
    }
}
