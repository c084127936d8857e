//! Per event type and window: how many events, the sum of their amounts, and
//! how many distinct users.
//!
//! Input values are JSON events `{event_id, user_id, event_type, timestamp,
//! amount}`, `timestamp` in RFC 3339 (`2026-01-01T00:00:00.400Z`). The key is
//! `event_type`, the event time `timestamp`; the host's pipeline spec picks
//! the windows. A finished window emits, keyed by the event type,
//!
//! ```json
//! {"window_start":"2026-01-01T00:00:00.000Z","window_end":"2026-01-01T00:01:00.000Z",
//!  "event_type":"click","count":4,"sum_amount":3.6,"unique_users":2}
//! ```
//!
//! with `sum_amount` rounded to 2 decimals and the distinct users counted
//! exactly. A value that is not such JSON is dead-lettered.
//!
//! Each record is parsed once, in `extract`: what `fold` needs of it (the
//! amount and the user) is kept as the aggregate's `Parsed` value.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use sluice_sdk::time::{Rfc3339Millis, parse_rfc3339};
use sluice_sdk::{Aggregate, Config, Emitter, Error, Extracted, Record, Window};

/// An input event, borrowed from the record (`event_id` is not needed).
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    amount: f64,
}

/// The accumulator of one event type in one window.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    count: u64,
    sum_amount: f64,
    /// The distinct user ids, sorted.
    users: Vec<String>,
}

impl Stats {
    fn add_user(&mut self, user: &str) {
        if let Err(at) = self.users.binary_search_by(|u| u.as_str().cmp(user)) {
            self.users.insert(at, user.to_owned());
        }
    }
}

/// What `fold` needs of an event, parsed in `extract`.
#[derive(Debug, Default)]
pub struct Fold {
    amount: f64,
    user_id: String,
}

/// The result of a window, serialized in this field order.
#[derive(Serialize)]
struct Summary<'a> {
    window_start: Rfc3339Millis,
    window_end: Rfc3339Millis,
    event_type: &'a str,
    count: u64,
    sum_amount: f64,
    unique_users: usize,
}

/// Counts, sums and distinct users per event type and window.
pub struct EventWindowAgg;

#[sluice_sdk::aggregate]
impl Aggregate for EventWindowAgg {
    type Acc = Stats;
    type Parsed = Fold;

    fn init(config: &Config) -> Result<Self, Error> {
        config.deny_unknown(&[])?;
        Ok(EventWindowAgg)
    }

    fn extract<'r>(&mut self, record: &Record<'r>) -> Result<Extracted<'r, Self>, Error> {
        let event: Event<'r> = record.json()?;
        let time = parse_rfc3339(&event.timestamp)?;
        let fold = Fold {
            amount: event.amount,
            user_id: event.user_id.into_owned(),
        };
        Ok((sluice_sdk::str_key(event.event_type), time, fold))
    }

    fn fold_parsed(
        &mut self,
        acc: &mut Stats,
        _record: &Record<'_>,
        _time: i64,
        event: &Fold,
    ) -> Result<(), Error> {
        acc.count += 1;
        acc.sum_amount += event.amount;
        acc.add_user(&event.user_id);
        Ok(())
    }

    fn merge(&mut self, acc: &mut Stats, other: Stats) {
        acc.count += other.count;
        acc.sum_amount += other.sum_amount;
        acc.users.extend(other.users);
        acc.users.sort_unstable();
        acc.users.dedup();
    }

    fn finish(
        &mut self,
        window: &Window<'_>,
        acc: &Stats,
        out: &mut Emitter<'_>,
    ) -> Result<(), Error> {
        out.emit_json(&Summary {
            window_start: Rfc3339Millis(window.start),
            window_end: Rfc3339Millis(window.end),
            event_type: window.key_str()?,
            count: acc.count,
            sum_amount: (acc.sum_amount * 100.0).round() / 100.0,
            unique_users: acc.users.len(),
        })
    }
}

#[cfg(test)]
mod tests;
