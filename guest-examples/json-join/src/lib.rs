//! A generic join of JSON records: configured with each side's key field
//! (and, optionally, time field), it needs no code for the simple case.
//!
//! Config:
//! - `left_key`, `right_key` (required): the field holding the join key, a
//!   dotted path into nested objects (`order.id`). A string key is used as
//!   it is; a number or boolean by its JSON text (`42`, `true`).
//! - `left_time`, `right_time` (optional): the field holding the event time,
//!   RFC 3339 text or epoch milliseconds. Without one, the record's Kafka
//!   timestamp.
//!
//! Each pair becomes `{"left": {...}, "right": {...}}`, the two records'
//! JSON objects as they came; an outer row has `null` for its absent side.
//! The host gives the output the join key as its Kafka key and the later of
//! the two event times as its timestamp. A record whose value is not a JSON
//! object, or lacks the key or time field, is dead-lettered with the reason.

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sluice_sdk::time::parse_rfc3339;
use sluice_sdk::{Config, Emitter, Error, Join, Record, Side};

/// Where a side's key and time are.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    key: Vec<String>,
    time: Option<Vec<String>>,
}

/// The JSON-merge join.
#[derive(Debug)]
pub struct JsonJoin {
    left: Fields,
    right: Fields,
}

fn path(text: &str) -> Result<Vec<String>, Error> {
    let parts: Vec<String> = text.split('.').map(str::to_owned).collect();
    if parts.iter().any(String::is_empty) {
        return Err(format!("`{text}` is not a field path (names separated by dots)").into());
    }
    Ok(parts)
}

/// The value at `path` in `object`.
fn at<'v>(object: &'v Map<String, Value>, path: &[String]) -> Option<&'v Value> {
    let (last, parents) = path.split_last()?;
    let mut here = object;
    for name in parents {
        here = here.get(name)?.as_object()?;
    }
    here.get(last)
}

fn object<'r>(record: &Record<'r>) -> Result<Map<String, Value>, Error> {
    match serde_json::from_slice::<Value>(record.value().ok_or("the record has no value")?) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the value is not a JSON object".into()),
        Err(e) => Err(format!("the value is not JSON: {e}").into()),
    }
}

impl JsonJoin {
    fn fields(&self, side: Side) -> &Fields {
        match side {
            Side::Left => &self.left,
            Side::Right => &self.right,
        }
    }
}

#[sluice_sdk::join]
impl Join for JsonJoin {
    fn init(config: &Config) -> Result<Self, Error> {
        config.deny_unknown(&["left_key", "right_key", "left_time", "right_time"])?;
        let fields = |key: &str, time: &str| -> Result<Fields, Error> {
            Ok(Fields {
                key: path(config.require(key)?)?,
                time: config.get(time).map(path).transpose()?,
            })
        };
        Ok(JsonJoin {
            left: fields("left_key", "left_time")?,
            right: fields("right_key", "right_time")?,
        })
    }

    fn key_and_time<'r>(
        &mut self,
        side: Side,
        record: &Record<'r>,
    ) -> Result<(Cow<'r, [u8]>, i64), Error> {
        let fields = self.fields(side);
        let object = object(record)?;
        let name = |p: &[String]| p.join(".");
        let key = match at(&object, &fields.key) {
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string().into_bytes(),
            Some(_) => {
                return Err(format!(
                    "key field `{}` is not a string, number or boolean",
                    name(&fields.key)
                )
                .into());
            }
            None => return Err(format!("no key field `{}`", name(&fields.key)).into()),
        };
        let time = match &fields.time {
            None => record.timestamp().ok_or("the record has no timestamp")?,
            Some(p) => match at(&object, p) {
                Some(Value::String(s)) => parse_rfc3339(s)?,
                Some(Value::Number(n)) => n
                    .as_i64()
                    .ok_or_else(|| format!("time field `{}` is not whole milliseconds", name(p)))?,
                Some(_) => {
                    return Err(format!(
                        "time field `{}` is neither RFC 3339 text nor milliseconds",
                        name(p)
                    )
                    .into());
                }
                None => return Err(format!("no time field `{}`", name(p)).into()),
            },
        };
        Ok((Cow::Owned(key), time))
    }

    fn join(
        &mut self,
        left: Option<&Record<'_>>,
        right: Option<&Record<'_>>,
        out: &mut Emitter<'_>,
    ) -> Result<(), Error> {
        // The records' JSON as it came, not re-encoded.
        let raw = |r: Option<&Record<'_>>| -> Result<Option<Box<RawValue>>, Error> {
            r.map(|r| {
                let text = r.value_str()?;
                Ok(RawValue::from_string(text.to_owned())?)
            })
            .transpose()
        };
        #[derive(serde::Serialize)]
        struct Joined {
            left: Option<Box<RawValue>>,
            right: Option<Box<RawValue>>,
        }
        out.emit_json(&Joined {
            left: raw(left)?,
            right: raw(right)?,
        })
    }
}

#[cfg(test)]
mod tests;
