//! One result per user session: how many events, and how long from the
//! first to the last.
//!
//! Input values are JSON events `{event_id, user_id, event_type, timestamp,
//! amount}`, `timestamp` in RFC 3339 (`2026-01-01T00:00:00.400Z`). The key is
//! `user_id`, the event time `timestamp`; run it with session windows, which
//! the host merges when an event bridges two sessions. A finished session
//! emits, keyed by the user id,
//!
//! ```json
//! {"user_id":"u1","session_start":"2026-01-01T00:00:00.000Z",
//!  "session_end":"2026-01-01T00:01:50.000Z","events":4,"duration_ms":80000}
//! ```
//!
//! where `session_start` and `session_end` are the window's bounds (the
//! session's last event plus the gap) and `duration_ms` is the time from the
//! first event to the last. A value that is not such JSON is dead-lettered.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use sluice_sdk::time::{Rfc3339Millis, parse_rfc3339};
use sluice_sdk::{Aggregate, Config, Emitter, Error, Record, Window};

/// The fields of an input event this aggregate reads, borrowed from the
/// record.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
}

/// The accumulator of one session: its event count and the event times of
/// its first and last events (meaningless while `events` is 0).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    events: u64,
    first: i64,
    last: i64,
}

/// The result of a session, serialized in this field order.
#[derive(Serialize)]
struct Summary<'a> {
    user_id: &'a str,
    session_start: Rfc3339Millis,
    session_end: Rfc3339Millis,
    events: u64,
    duration_ms: i64,
}

/// Counts events and measures durations per user session.
pub struct UserSessions;

#[sluice_sdk::aggregate]
impl Aggregate for UserSessions {
    type Acc = Session;

    fn init(config: &Config) -> Result<Self, Error> {
        config.deny_unknown(&[])?;
        Ok(UserSessions)
    }

    fn key_and_time<'r>(&mut self, record: &Record<'r>) -> Result<(Cow<'r, [u8]>, i64), Error> {
        let event: Event<'r> = record.json()?;
        let time = parse_rfc3339(&event.timestamp)?;
        Ok((sluice_sdk::str_key(event.user_id), time))
    }

    /// Needs only the event time: the record is not parsed again.
    fn fold(&mut self, acc: &mut Session, _record: &Record<'_>, time: i64) -> Result<(), Error> {
        self.merge(
            acc,
            Session {
                events: 1,
                first: time,
                last: time,
            },
        );
        Ok(())
    }

    fn merge(&mut self, acc: &mut Session, other: Session) {
        if other.events == 0 {
            return;
        }
        if acc.events == 0 {
            *acc = other;
            return;
        }
        acc.events += other.events;
        acc.first = acc.first.min(other.first);
        acc.last = acc.last.max(other.last);
    }

    fn finish(
        &mut self,
        window: &Window<'_>,
        acc: &Session,
        out: &mut Emitter<'_>,
    ) -> Result<(), Error> {
        out.emit_json(&Summary {
            user_id: window.key_str()?,
            session_start: Rfc3339Millis(window.start),
            session_end: Rfc3339Millis(window.end),
            events: acc.events,
            duration_ms: acc.last - acc.first,
        })
    }
}

#[cfg(test)]
mod tests;
