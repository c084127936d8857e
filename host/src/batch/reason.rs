//! Why a record went to the dead-letter topic: a [`Kind`], which counters,
//! metrics and decisions (a hot swap's roll-back) read, and a text for
//! people, which becomes the `sluice.error` header. Whoever decides a
//! record's fate names the kind; nothing reads it back out of the text.

use std::fmt;

use serde::Serialize;

/// The kind of a dead-letter reason. Serialized (and shown in metrics) as
/// its [`label`](Kind::label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    /// The guest dead-lettered the record itself, with a reason of its own.
    #[serde(rename = "rejected")]
    Rejected,
    /// The guest returned an error for the whole call.
    #[serde(rename = "guest error")]
    GuestError,
    /// The guest trapped (a panic, an unreachable, an out-of-bounds access).
    #[serde(rename = "trap")]
    Trap,
    /// The call ran past its deadline.
    #[serde(rename = "deadline exceeded")]
    Deadline,
    /// The guest tried to grow its memory past its limit.
    #[serde(rename = "memory limit")]
    MemoryLimit,
    /// The guest answered, but not as the contract says.
    #[serde(rename = "invalid output")]
    InvalidOutput,
    /// The guest sent a record to an output the spec does not have.
    #[serde(rename = "unknown output")]
    UnknownOutput,
    /// A header name of the source record is not UTF-8 (the contract
    /// promises guests UTF-8 names), so no guest sees the record.
    #[serde(rename = "header key is not UTF-8")]
    HeaderNotUtf8,
    /// The record's event time is further ahead of processing time than
    /// the watermark's `max_ahead`.
    #[serde(rename = "event time too far ahead")]
    TooFarAhead,
    /// Every window the record belongs to was already final; or, in a
    /// join, its side's watermark had passed its event time.
    #[serde(rename = "late")]
    Late,
    /// A join run as tasks (one per partition) got a record whose join key
    /// is not its Kafka key: its matches may be in another task.
    #[serde(rename = "join key is not the Kafka key")]
    JoinKeyNotKafkaKey,
    /// An output of the record is larger than the producer may send.
    #[serde(rename = "output record too large")]
    TooLarge,
    /// A Parquet output refused the record (it does not fit the schema).
    #[serde(rename = "parquet")]
    Parquet,
    /// A PostgreSQL output refused the record: it does not fit the table's
    /// columns, or the database refused the row (a constraint, a value out
    /// of the column's range).
    #[serde(rename = "postgres")]
    Postgres,
    /// A Delta Lake output refused the record (it does not fit the table's
    /// columns).
    #[serde(rename = "delta")]
    Delta,
}

impl Kind {
    /// Every kind, in order.
    pub const ALL: [Kind; 15] = [
        Kind::Rejected,
        Kind::GuestError,
        Kind::Trap,
        Kind::Deadline,
        Kind::MemoryLimit,
        Kind::InvalidOutput,
        Kind::UnknownOutput,
        Kind::HeaderNotUtf8,
        Kind::TooFarAhead,
        Kind::Late,
        Kind::JoinKeyNotKafkaKey,
        Kind::TooLarge,
        Kind::Parquet,
        Kind::Postgres,
        Kind::Delta,
    ];

    /// The kind's name in summaries, the progress document and `/metrics`
    /// (also the start of the text of most reasons of the kind).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Rejected => "rejected",
            Kind::GuestError => "guest error",
            Kind::Trap => "trap",
            Kind::Deadline => "deadline exceeded",
            Kind::MemoryLimit => "memory limit",
            Kind::InvalidOutput => "invalid output",
            Kind::UnknownOutput => "unknown output",
            Kind::HeaderNotUtf8 => "header key is not UTF-8",
            Kind::TooFarAhead => "event time too far ahead",
            Kind::Late => "late",
            Kind::JoinKeyNotKafkaKey => "join key is not the Kafka key",
            Kind::TooLarge => "output record too large",
            Kind::Parquet => "parquet",
            Kind::Postgres => "postgres",
            Kind::Delta => "delta",
        }
    }

    /// A fault of the guest's code (as opposed to a decision of the guest
    /// or of the host about the record): what a hot swap's trial watches.
    pub fn is_fault(self) -> bool {
        matches!(
            self,
            Kind::Trap | Kind::Deadline | Kind::MemoryLimit | Kind::InvalidOutput
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The longest reason text kept; a longer one (a guest's) is cut.
pub const MAX_REASON: usize = 4096;

/// A dead-letter reason: its kind, and the text people read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub kind: Kind,
    pub text: String,
}

impl Reason {
    pub fn new(kind: Kind, text: impl Into<String>) -> Self {
        Self {
            kind,
            text: text.into(),
        }
    }

    /// A reason the guest gave for one of its records, cut to
    /// [`MAX_REASON`] bytes.
    pub fn from_guest(text: String) -> Self {
        Self::new(Kind::Rejected, bounded(text))
    }

    /// The guest's error for a whole call (`guest error: ...`).
    pub fn guest_error(message: &str) -> Self {
        Self::new(Kind::GuestError, format!("guest error: {message}"))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `text`, cut to [`MAX_REASON`] bytes (at a character boundary) with a
/// marker that gives its full length.
pub fn bounded(mut text: String) -> String {
    if text.len() <= MAX_REASON {
        return text;
    }
    let len = text.len();
    let cut = (0..=MAX_REASON)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text.truncate(cut);
    format!("{text}... ({len} bytes, truncated)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_reason_is_the_guests_whatever_its_words() {
        let r = Reason::from_guest("trap: I refuse this record".to_owned());
        assert_eq!(r.kind, Kind::Rejected);
        assert_eq!(r.to_string(), "trap: I refuse this record");
    }

    #[test]
    fn kinds_serialize_as_their_labels() {
        for kind in Kind::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.label().to_owned())
            );
        }
        let faults: Vec<Kind> = Kind::ALL.into_iter().filter(|k| k.is_fault()).collect();
        assert_eq!(
            faults,
            [
                Kind::Trap,
                Kind::Deadline,
                Kind::MemoryLimit,
                Kind::InvalidOutput
            ]
        );
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_REASON);
        let cut = bounded(long.clone());
        assert!(cut.starts_with(&"é".repeat(MAX_REASON / 2)));
        assert!(cut.ends_with(&format!("... ({} bytes, truncated)", long.len())));
        assert_eq!(bounded("short".to_owned()), "short");
    }
}
