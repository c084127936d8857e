//! Stream-stream interval joins: the state the host keeps between the two
//! sides (the guest gives each record's key and time, and builds the output
//! of each pair; see the join step).
//!
//! A left record `l` and a right record `r` of the same key match when
//! `l.time - before <= r.time <= l.time + after` (both ends included).
//! Every record not refused as late is buffered under its key, in event-time
//! order, and joins every buffered record of the other side it matches, in
//! both directions, so a pair is found whichever of the two comes first.
//!
//! # Watermarks, lateness and eviction
//!
//! Each side has its own watermark, which only moves forward
//! ([`JoinState::advance`]); a record whose time is below its side's
//! watermark is refused as late (the caller dead-letters it with reason
//! `late`). Once the right watermark passes `l.time + after`, no right
//! record that can still be accepted matches `l` (its time would be at
//! least the watermark), so `l` is evicted; likewise `r` once the left
//! watermark passes `r.time + before`. State is thus bounded by the
//! watermarks and the interval, not by the length of the streams.
//!
//! An outer join emits a record of its outer side(s) that never matched
//! when it is evicted, and only then: exactly once, and never for a record
//! that could still match. A record that arrives when the other side's
//! watermark has already passed its deadline (its side lags) joins the
//! buffered records it matches and is evicted at once.
//!
//! # Determinism
//!
//! Which records are refused depends only on each side's own sequence (a
//! side's watermark is computed from its own records). Given that, the
//! pairs and the outer rows are the same whatever the interleaving of the
//! two sides and wherever batches end: eviction only removes records that
//! can no longer match anything accepted later, and a pair is found when
//! its second record arrives, whichever that is. Only the order of the
//! output differs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which records of a join are kept without a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JoinType {
    Inner,
    LeftOuter,
    RightOuter,
    FullOuter,
}

impl JoinType {
    /// Whether an unmatched record of `side` is emitted alone.
    fn keeps(self, side: Side) -> bool {
        matches!(
            (self, side),
            (Self::FullOuter, _) | (Self::LeftOuter, Side::Left) | (Self::RightOuter, Side::Right)
        )
    }
}

/// One of the two inputs of a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    Left,
    Right,
}

impl Side {
    fn index(self) -> usize {
        self as usize
    }

    fn other(self) -> Self {
        match self {
            Self::Left => Self::Right,
            Self::Right => Self::Left,
        }
    }
}

/// The interval: a right record matches a left one when its time lies in
/// `[left.time - before_ms, left.time + after_ms]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Within {
    pub before_ms: i64,
    pub after_ms: i64,
}

/// What the join produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined<T> {
    Pair {
        left: T,
        right: T,
    },
    /// An outer row: a record of one side that matched nothing.
    Alone {
        side: Side,
        value: T,
    },
}

impl<T> Joined<T> {
    /// The left and the right record; an outer row's absent side is `None`.
    pub fn sides(&self) -> (Option<&T>, Option<&T>) {
        match self {
            Self::Pair { left, right } => (Some(left), Some(right)),
            Self::Alone {
                side: Side::Left,
                value,
            } => (Some(value), None),
            Self::Alone { value, .. } => (None, Some(value)),
        }
    }
}

/// A record refused because its side's watermark had passed its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "late: event time {time} is behind the {side:?} side's watermark {watermark} (the records it \
     could match may be gone)"
)]
pub struct Late {
    pub side: Side,
    pub time: i64,
    pub watermark: i64,
}

/// A buffered record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row<T> {
    value: T,
    bytes: usize,
    matched: bool,
}

/// One side's rows of one key, by (time, arrival number).
type Rows<T> = BTreeMap<(i64, u64), Row<T>>;

/// Per side: rows by key, when each row expires, the watermark and the
/// counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SideState<T> {
    rows: BTreeMap<Vec<u8>, Rows<T>>,
    /// (the other side's watermark that evicts it, time, arrival) -> key.
    expiry: BTreeMap<(i64, i64, u64), Vec<u8>>,
    watermark: Option<i64>,
    buffered: usize,
    bytes: usize,
}

impl<T> Default for SideState<T> {
    fn default() -> Self {
        Self {
            rows: BTreeMap::new(),
            expiry: BTreeMap::new(),
            watermark: None,
            buffered: 0,
            bytes: 0,
        }
    }
}

/// What a side holds now (for progress and `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SideStats {
    pub rows: usize,
    pub bytes: usize,
    pub watermark: Option<i64>,
}

/// The state of one join (one task's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "T: Serialize", deserialize = "T: Deserialize<'de>"))]
pub struct JoinState<T> {
    kind: JoinType,
    within: Within,
    sides: [SideState<T>; 2],
    /// Arrival number of the next record (ties of equal times).
    next: u64,
    /// The rows evicted since last taken, when asked for (see
    /// [`Self::track_evictions`]). Not part of a snapshot.
    #[serde(skip)]
    evicted: Option<Vec<T>>,
}

impl<T: Clone> JoinState<T> {
    pub fn new(kind: JoinType, within: Within) -> Self {
        Self {
            kind,
            within,
            sides: [SideState::default(), SideState::default()],
            next: 0,
            evicted: None,
        }
    }

    /// From now on, keeps every evicted row for [`Self::take_evicted`]
    /// (whoever tracks what the state still holds, e.g. the offsets a
    /// restart must read again).
    pub fn track_evictions(&mut self) {
        self.evicted.get_or_insert_with(Vec::new);
    }

    /// The rows evicted since the last call, oldest deadline first.
    pub fn take_evicted(&mut self) -> Vec<T> {
        self.evicted
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Takes record `value` of `side` (`bytes`: its size, for the
    /// counters): every pair it makes with the other side's buffered
    /// records is appended to `out`, and it is buffered. Refused when its
    /// time is behind its side's watermark.
    pub fn push(
        &mut self,
        side: Side,
        key: &[u8],
        time: i64,
        value: T,
        bytes: usize,
        out: &mut Vec<Joined<T>>,
    ) -> Result<(), Late> {
        if let Some(watermark) = self.sides[side.index()].watermark
            && time < watermark
        {
            return Err(Late {
                side,
                time,
                watermark,
            });
        }
        let Within {
            before_ms,
            after_ms,
        } = self.within;
        // The other side's times this record matches.
        let (low, high) = match side {
            Side::Left => (
                time.saturating_sub(before_ms),
                time.saturating_add(after_ms),
            ),
            Side::Right => (
                time.saturating_sub(after_ms),
                time.saturating_add(before_ms),
            ),
        };
        let mut matched = false;
        if let Some(rows) = self.sides[side.other().index()].rows.get_mut(key) {
            for row in rows
                .range_mut((low, 0)..=(high, u64::MAX))
                .map(|(_, row)| row)
            {
                matched = true;
                row.matched = true;
                let (left, right) = match side {
                    Side::Left => (value.clone(), row.value.clone()),
                    Side::Right => (row.value.clone(), value.clone()),
                };
                out.push(Joined::Pair { left, right });
            }
        }
        let arrival = self.next;
        self.next += 1;
        // Evicted once the other side's watermark passes the last time of
        // it this record matches.
        let deadline = high;
        // Passed already (this side lags the other): nothing the other side
        // may still bring can match it, so it is not kept; unmatched, an
        // outer row now. The result does not depend on which side was read
        // first.
        if self.sides[side.other().index()]
            .watermark
            .is_some_and(|w| deadline < w)
        {
            if let Some(evicted) = &mut self.evicted {
                evicted.push(value.clone());
            }
            if self.kind.keeps(side) && !matched {
                out.push(Joined::Alone { side, value });
            }
            return Ok(());
        }
        let s = &mut self.sides[side.index()];
        s.rows.entry(key.to_vec()).or_default().insert(
            (time, arrival),
            Row {
                value,
                bytes,
                matched,
            },
        );
        s.expiry.insert((deadline, time, arrival), key.to_vec());
        s.buffered += 1;
        s.bytes += bytes;
        Ok(())
    }

    /// Moves `side`'s watermark to `watermark` (never back): the other
    /// side's records that can no longer match are evicted, the unmatched
    /// ones of an outer side appended to `out`.
    pub fn advance(&mut self, side: Side, watermark: i64, out: &mut Vec<Joined<T>>) {
        let s = &mut self.sides[side.index()];
        if s.watermark.is_some_and(|w| w >= watermark) {
            return;
        }
        s.watermark = Some(watermark);
        self.evict(side.other(), |deadline| deadline < watermark, out);
    }

    /// The end of both inputs: every buffered record is evicted (the
    /// unmatched ones of an outer side appended to `out`).
    pub fn flush(&mut self, out: &mut Vec<Joined<T>>) {
        self.evict(Side::Left, |_| true, out);
        self.evict(Side::Right, |_| true, out);
    }

    /// Evicts `side`'s rows whose deadline `gone` says has passed, oldest
    /// deadline first.
    fn evict(&mut self, side: Side, gone: impl Fn(i64) -> bool, out: &mut Vec<Joined<T>>) {
        let keeps = self.kind.keeps(side);
        let s = &mut self.sides[side.index()];
        while let Some(entry) = s.expiry.first_entry() {
            let &(deadline, time, arrival) = entry.key();
            if !gone(deadline) {
                break;
            }
            let key = entry.remove();
            let Some(rows) = s.rows.get_mut(&key) else {
                continue;
            };
            if let Some(row) = rows.remove(&(time, arrival)) {
                s.buffered -= 1;
                s.bytes -= row.bytes;
                if let Some(evicted) = &mut self.evicted {
                    evicted.push(row.value.clone());
                }
                if keeps && !row.matched {
                    out.push(Joined::Alone {
                        side,
                        value: row.value,
                    });
                }
            }
            if rows.is_empty() {
                s.rows.remove(&key);
            }
        }
    }

    /// Every record held, left ones first.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.sides
            .iter()
            .flat_map(|s| s.rows.values())
            .flat_map(|rows| rows.values())
            .map(|row| &row.value)
    }

    /// What each side holds now: `[left, right]`.
    pub fn stats(&self) -> [SideStats; 2] {
        self.sides.each_ref().map(|s| SideStats {
            rows: s.buffered,
            bytes: s.bytes,
            watermark: s.watermark,
        })
    }
}

#[cfg(test)]
mod tests;
