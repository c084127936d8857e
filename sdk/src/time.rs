//! Event times as RFC 3339 text: [`parse_rfc3339`] reads a record's
//! timestamp field into the milliseconds an aggregate returns as its event
//! time, and [`Rfc3339Millis`] writes window bounds back as text.
//!
//! Both go through [`humantime`](https://docs.rs/humantime): UTC only (a
//! trailing `Z`), years 1970 to 9999, at most nanosecond fractions, which
//! are truncated to milliseconds.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::Error;

/// The first millisecond of the year 10000: RFC 3339 years are 0000..=9999,
/// and humantime formats 1970..=9999.
const YEAR_10000_MS: u64 = 253_402_300_800_000;

/// Milliseconds since the Unix epoch of an RFC 3339 UTC time such as
/// `2026-01-01T00:00:00.400Z`. An error names the text and what is wrong
/// with it, ready to be a dead-letter reason.
///
/// ```
/// use sluice_sdk::time::parse_rfc3339;
///
/// assert_eq!(parse_rfc3339("2026-01-01T00:00:00.400Z").unwrap(), 1_767_225_600_400);
/// assert_eq!(
///     parse_rfc3339("2026-01-01 00:00:00").unwrap_err().to_string(),
///     "invalid timestamp `2026-01-01 00:00:00`: timestamp format is invalid"
/// );
/// ```
pub fn parse_rfc3339(text: &str) -> Result<i64, Error> {
    let time =
        humantime::parse_rfc3339(text).map_err(|e| format!("invalid timestamp `{text}`: {e}"))?;
    let since_epoch = time.duration_since(UNIX_EPOCH)?;
    Ok(i64::try_from(since_epoch.as_millis())?)
}

/// Milliseconds since the Unix epoch, written as RFC 3339 UTC text with
/// milliseconds (`2026-01-01T00:00:00.400Z`): a window bound in a result.
/// Serializing a time outside 1970..=9999 is an error, which fails the
/// window's `finish`; [`Rfc3339Millis::to_text`] gives the same text or
/// error outside serde.
///
/// ```
/// use sluice_sdk::time::Rfc3339Millis;
///
/// #[derive(serde::Serialize)]
/// struct Result {
///     window_start: Rfc3339Millis,
/// }
///
/// let json = serde_json::to_string(&Result { window_start: Rfc3339Millis(1_767_225_600_400) }).unwrap();
/// assert_eq!(json, r#"{"window_start":"2026-01-01T00:00:00.400Z"}"#);
/// let err = serde_json::to_string(&Rfc3339Millis(-1)).unwrap_err();
/// assert_eq!(err.to_string(), "time -1 ms is outside 1970..=9999");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rfc3339Millis(pub i64);

impl Rfc3339Millis {
    /// The time as text, or an error if it is outside 1970..=9999.
    ///
    /// ```
    /// use sluice_sdk::time::Rfc3339Millis;
    ///
    /// assert_eq!(Rfc3339Millis(0).to_text().unwrap(), "1970-01-01T00:00:00.000Z");
    /// assert_eq!(
    ///     Rfc3339Millis(i64::MAX).to_text().unwrap_err().to_string(),
    ///     format!("time {} ms is outside 1970..=9999", i64::MAX)
    /// );
    /// ```
    pub fn to_text(self) -> Result<String, Error> {
        Ok(self.formatted()?.to_string())
    }

    /// The humantime formatter of the time, or the out-of-range message.
    fn formatted(self) -> Result<impl fmt::Display, String> {
        match u64::try_from(self.0) {
            Ok(ms) if ms < YEAR_10000_MS => {
                let time: SystemTime = UNIX_EPOCH + Duration::from_millis(ms);
                Ok(humantime::format_rfc3339_millis(time))
            }
            _ => Err(format!("time {} ms is outside 1970..=9999", self.0)),
        }
    }
}

impl Serialize for Rfc3339Millis {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.formatted() {
            Ok(text) => serializer.collect_str(&text),
            Err(message) => Err(serde::ser::Error::custom(message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z.
    const T0: i64 = 1_767_225_600_000;

    fn json(ms: i64) -> Result<String, String> {
        serde_json::to_string(&Rfc3339Millis(ms)).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_utc_times_to_milliseconds() {
        assert_eq!(parse_rfc3339("2026-01-01T00:00:00Z").unwrap(), T0);
        assert_eq!(parse_rfc3339("2026-01-01T00:00:00.400Z").unwrap(), T0 + 400);
        // Finer fractions are truncated, not rounded.
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:00.123999999Z").unwrap(),
            T0 + 123
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_rfc3339("9999-12-31T23:59:59.999Z").unwrap(),
            YEAR_10000_MS as i64 - 1
        );
    }

    #[test]
    fn refuses_other_forms_naming_the_text() {
        for (text, reason) in [
            ("2026-01-01 00:00:00", "timestamp format is invalid"),
            (
                "2026-01-01T00:00:00.000+01:00",
                "timestamp format is invalid",
            ),
            ("yesterday", "timestamp format is invalid"),
            ("", "timestamp format is invalid"),
            ("2026-13-01T00:00:00Z", "numeric component is out of range"),
            ("2026-02-30T00:00:00Z", "numeric component is out of range"),
            ("2026-01-01T24:00:00Z", "numeric component is out of range"),
        ] {
            let err = parse_rfc3339(text).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("invalid timestamp `{text}`: {reason}"),
                "{text}"
            );
        }
    }

    #[test]
    fn formats_with_milliseconds_and_round_trips() {
        assert_eq!(json(T0 + 400).unwrap(), r#""2026-01-01T00:00:00.400Z""#);
        assert_eq!(json(0).unwrap(), r#""1970-01-01T00:00:00.000Z""#);
        for ms in [0, 1, T0, T0 + 59_999, YEAR_10000_MS as i64 - 1] {
            let text = Rfc3339Millis(ms).to_text().unwrap();
            assert_eq!(parse_rfc3339(&text).unwrap(), ms, "{text}");
        }
    }

    #[test]
    fn refuses_to_format_times_outside_1970_to_9999() {
        for ms in [-1, YEAR_10000_MS as i64, i64::MIN, i64::MAX] {
            let message = format!("time {ms} ms is outside 1970..=9999");
            assert_eq!(json(ms).unwrap_err(), message);
            assert_eq!(
                Rfc3339Millis(ms).to_text().unwrap_err().to_string(),
                message
            );
        }
    }
}
