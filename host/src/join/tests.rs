use super::*;

/// Drives a join as the host does: each record is pushed, then its side's
/// watermark moves to the side's largest time so far minus `ooo`.
struct Driver {
    join: JoinState<String>,
    ooo: i64,
    max: [Option<i64>; 2],
    late: Vec<String>,
}

impl Driver {
    fn new(kind: JoinType, before_ms: i64, after_ms: i64, ooo: i64) -> Self {
        Self {
            join: JoinState::new(
                kind,
                Within {
                    before_ms,
                    after_ms,
                },
            ),
            ooo,
            max: [None, None],
            late: Vec::new(),
        }
    }

    /// Pushes one record; returns what it produced, as text.
    fn push(&mut self, side: Side, key: &str, time: i64, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        match self.join.push(
            side,
            key.as_bytes(),
            time,
            name.to_owned(),
            name.len(),
            &mut out,
        ) {
            Ok(()) => {}
            Err(late) => self
                .late
                .push(format!("{name} (watermark {})", late.watermark)),
        }
        let max = self.max[side.index()].map_or(time, |m| m.max(time));
        self.max[side.index()] = Some(max);
        self.join.advance(side, max - self.ooo, &mut out);
        texts(out)
    }

    fn flush(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        self.join.flush(&mut out);
        texts(out)
    }
}

fn texts(out: Vec<Joined<String>>) -> Vec<String> {
    out.into_iter()
        .map(|j| match j {
            Joined::Pair { left, right } => format!("{left}+{right}"),
            Joined::Alone {
                side: Side::Left,
                value,
            } => format!("{value}+_"),
            Joined::Alone {
                side: Side::Right,
                value,
            } => format!("_+{value}"),
        })
        .collect()
}

/// The hand-computed case, within 5 before and 5 after, watermarks 2
/// behind each side's largest time: what each record produces, per join
/// type (`[inner, left-outer, right-outer, full-outer]` where they differ).
#[test]
fn golden_interval_join_with_disorder_late_records_and_both_edges() {
    use JoinType::*;
    for kind in [Inner, LeftOuter, RightOuter, FullOuter] {
        let right_outer = matches!(kind, RightOuter | FullOuter);
        let left_outer = matches!(kind, LeftOuter | FullOuter);
        let mut d = Driver::new(kind, 5, 5, 2);
        // Left watermark 8.
        assert_eq!(d.push(Side::Left, "a", 10, "l1"), [] as [String; 0]);
        // 15 = 10 + after: the upper edge matches. Right watermark 13.
        assert_eq!(d.push(Side::Right, "a", 15, "r1"), ["l1+r1"]);
        // Behind the right watermark (13): late, whatever it would match.
        assert_eq!(d.push(Side::Right, "a", 4, "r2"), [] as [String; 0]);
        // 15 = 20 - before: the lower edge matches. Left watermark 18.
        assert_eq!(d.push(Side::Left, "a", 20, "l2"), ["l2+r1"]);
        // 26 is 1 past l2's interval. Right watermark 24 evicts l1 (its
        // last match was 15), matched: nothing more of it.
        assert_eq!(d.push(Side::Right, "a", 26, "r3"), [] as [String; 0]);
        // Another key. Left watermark 28 evicts r1 (last match 20).
        assert_eq!(d.push(Side::Left, "b", 30, "l3"), [] as [String; 0]);
        // Disorder within the left watermark (28 <= 29): accepted; it
        // matches r3 (26 in [24, 34]).
        assert_eq!(d.push(Side::Left, "a", 29, "l4"), ["l4+r3"]);
        // Left watermark 38 evicts r3 (last match 31); it matched l4.
        assert_eq!(d.push(Side::Left, "a", 40, "l5"), [] as [String; 0]);
        // Right watermark 45 evicts l2 (25, matched), l4 (34, matched)
        // and l3 (35, unmatched: an outer row now, not at the end); l5
        // (45) could still match a right record at 45.
        let want: &[&str] = if left_outer { &["l3+_"] } else { &[] };
        assert_eq!(d.push(Side::Right, "c", 47, "r4"), want, "{kind:?}");
        assert_eq!(d.late, ["r2 (watermark 13)"]);
        let stats = d.join.stats();
        assert_eq!(
            (
                stats[0].rows,
                stats[1].rows,
                stats[0].watermark,
                stats[1].watermark
            ),
            (1, 1, Some(38), Some(45))
        );
        assert_eq!((stats[0].bytes, stats[1].bytes), (2, 2));
        // The end: l5 and r4 never matched.
        let mut want = Vec::new();
        if left_outer {
            want.push("l5+_");
        }
        if right_outer {
            want.push("_+r4");
        }
        assert_eq!(d.flush(), want, "{kind:?}");
        assert_eq!(d.join.stats()[0].rows + d.join.stats()[1].rows, 0);
    }
}

/// Records of equal times on both sides, and an interval that is not
/// symmetric (before 0: the right record may not come earlier).
#[test]
fn equal_times_and_a_one_sided_interval() {
    let mut d = Driver::new(JoinType::FullOuter, 0, 10, 0);
    assert_eq!(d.push(Side::Left, "k", 100, "l1"), [] as [String; 0]);
    assert_eq!(d.push(Side::Left, "k", 100, "l2"), [] as [String; 0]);
    // Equal to both: each pair once.
    assert_eq!(d.push(Side::Right, "k", 100, "r1"), ["l1+r1", "l2+r1"]);
    // A left record after r1 by 1 does not take it (before is 0), but a
    // right one 10 after l3 does.
    assert_eq!(d.push(Side::Left, "k", 101, "l3"), [] as [String; 0]);
    assert_eq!(d.push(Side::Right, "k", 111, "r2"), ["l3+r2"]);
    assert_eq!(d.flush(), [] as [String; 0]);
    assert!(d.late.is_empty());
}

/// A small random generator (xorshift), seeded, so that a failure repeats.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the join must produce from two sides' sequences, computed the
/// slow way: accepted records are those not behind their own side's
/// watermark; pairs are every accepted left/right of one key within the
/// interval; outer rows the accepted ones that matched nothing.
fn expected(
    kind: JoinType,
    within: Within,
    ooo: i64,
    sides: &[Vec<(String, i64, String)>; 2],
) -> Vec<String> {
    let accepted: Vec<Vec<&(String, i64, String)>> = sides
        .iter()
        .map(|records| {
            let mut max: Option<i64> = None;
            records
                .iter()
                .filter(|(_, time, _)| {
                    let on_time = max.is_none_or(|m| *time >= m - ooo);
                    max = Some(max.map_or(*time, |m| m.max(*time)));
                    on_time
                })
                .collect()
        })
        .collect();
    let matches = |l: &(String, i64, String), r: &(String, i64, String)| {
        l.0 == r.0 && l.1 - within.before_ms <= r.1 && r.1 <= l.1 + within.after_ms
    };
    let mut out = Vec::new();
    for l in &accepted[0] {
        for r in &accepted[1] {
            if matches(l, r) {
                out.push(format!("{}+{}", l.2, r.2));
            }
        }
    }
    if kind.keeps(Side::Left) {
        for l in &accepted[0] {
            if !accepted[1].iter().any(|r| matches(l, r)) {
                out.push(format!("{}+_", l.2));
            }
        }
    }
    if kind.keeps(Side::Right) {
        for r in &accepted[1] {
            if !accepted[0].iter().any(|l| matches(l, r)) {
                out.push(format!("_+{}", r.2));
            }
        }
    }
    out.sort();
    out
}

/// The same pairs and outer rows whatever the interleaving of the two
/// sides and wherever batches end (each side's order kept), and equal to
/// the slow computation.
#[test]
fn any_interleaving_and_batching_gives_the_same_result() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for round in 0..300 {
        let kind = [
            JoinType::Inner,
            JoinType::LeftOuter,
            JoinType::RightOuter,
            JoinType::FullOuter,
        ][round % 4];
        let within = Within {
            before_ms: rng.below(6) as i64,
            after_ms: rng.below(6) as i64,
        };
        let ooo = rng.below(4) as i64;
        // Times drift up with disorder, so that some records are late.
        let sides: [Vec<(String, i64, String)>; 2] = ["l", "r"].map(|name| {
            let mut t = 0i64;
            (0..rng.below(40))
                .map(|i| {
                    t += rng.below(3) as i64;
                    let time = t - rng.below(6) as i64;
                    let key = ["a", "b", "c"][rng.below(3) as usize].to_owned();
                    (key, time, format!("{name}{i}"))
                })
                .collect()
        });
        let want = expected(kind, within, ooo, &sides);
        for _ in 0..5 {
            let mut d = Driver::new(kind, within.before_ms, within.after_ms, ooo);
            let mut at = [0, 0];
            let mut got = Vec::new();
            // Batches of random sizes from a random side until both are done.
            while at[0] < sides[0].len() || at[1] < sides[1].len() {
                let left_done = at[0] == sides[0].len();
                let right_done = at[1] == sides[1].len();
                let side = if !left_done && (right_done || rng.below(2) == 0) {
                    Side::Left
                } else {
                    Side::Right
                };
                let i = side.index();
                let n = 1 + rng.below(5) as usize;
                for (key, time, name) in sides[i].iter().skip(at[i]).take(n) {
                    got.extend(d.push(side, key, *time, name));
                }
                at[i] = (at[i] + n).min(sides[i].len());
            }
            got.extend(d.flush());
            got.sort();
            assert_eq!(
                got, want,
                "round {round}: {kind:?} {within:?} ooo {ooo} {sides:?}"
            );
        }
    }
}

/// Ten minutes of event time, a million records a side, within five
/// minutes either way: the state never holds more than about the
/// interval's worth of each side, however long the streams run.
#[test]
fn state_is_bounded_by_the_watermarks_and_the_interval() {
    const PER_SIDE: i64 = 1_000_000;
    const SPAN_MS: i64 = 10 * 60_000;
    const WITHIN_MS: i64 = 5 * 60_000;
    const OOO_MS: i64 = 5_000;
    let mut join: JoinState<u32> = JoinState::new(
        JoinType::FullOuter,
        Within {
            before_ms: WITHIN_MS,
            after_ms: WITHIN_MS,
        },
    );
    let mut rng = Rng(42);
    let mut out = Vec::new();
    let (mut max, mut peak, mut pairs, mut alone) = ([0i64; 2], [0usize; 2], 0u64, 0u64);
    for i in 0..PER_SIDE {
        for side in [Side::Left, Side::Right] {
            let time = i * SPAN_MS / PER_SIDE - rng.below(OOO_MS as u64) as i64;
            let key = (rng.below(100_000) as u32).to_le_bytes();
            let s = side.index();
            // Each record carries its own number: 4 bytes.
            if join.push(side, &key, time, i as u32, 4, &mut out).is_ok() {
                max[s] = max[s].max(time);
            }
            join.advance(side, max[s] - OOO_MS, &mut out);
            for j in out.drain(..) {
                match j {
                    Joined::Pair { .. } => pairs += 1,
                    Joined::Alone { .. } => alone += 1,
                }
            }
        }
        let stats = join.stats();
        for s in 0..2 {
            peak[s] = peak[s].max(stats[s].rows);
        }
    }
    // A record waits until the other side's watermark is past its time
    // plus five minutes: five minutes and the disorder (a little more than
    // half of the ten-minute stream), never the whole stream.
    let per_ms = PER_SIDE as f64 / SPAN_MS as f64;
    let bound = ((WITHIN_MS + 2 * OOO_MS) as f64 * per_ms) as usize;
    assert!(peak[0] <= bound && peak[1] <= bound, "{peak:?} > {bound}");
    assert!(
        peak[0] > bound / 2,
        "{peak:?}: the interval's records are kept"
    );
    let stats = join.stats();
    assert_eq!(stats[0].bytes, 4 * stats[0].rows);
    join.flush(&mut out);
    alone += out.len() as u64;
    assert!(pairs > 0);
    // Every record accepted either matched or is an outer row.
    assert!(alone < 2 * PER_SIDE as u64);
}

/// A checkpoint of the state mid-stream, restored, carries on exactly as
/// the state never stopped (what recovery from a checkpoint relies on).
#[test]
fn a_snapshot_restored_mid_stream_carries_on_as_if_never_stopped() {
    let mut rng = Rng(7);
    let records: Vec<(Side, String, i64, String)> = (0..400)
        .map(|i| {
            let side = if rng.below(2) == 0 {
                Side::Left
            } else {
                Side::Right
            };
            let key = ["a", "b"][rng.below(2) as usize].to_owned();
            (side, key, i / 4 - rng.below(5) as i64, format!("x{i}"))
        })
        .collect();
    let run = |cut: Option<usize>| {
        let mut d = Driver::new(JoinType::FullOuter, 3, 2, 2);
        let mut got = Vec::new();
        for (i, (side, key, time, name)) in records.iter().enumerate() {
            if cut == Some(i) {
                let bytes = postcard::to_allocvec(&d.join).unwrap();
                d.join = postcard::from_bytes(&bytes).unwrap();
            }
            got.extend(d.push(*side, key, *time, name));
        }
        got.extend(d.flush());
        (got, d.late)
    };
    let whole = run(None);
    assert!(!whole.0.is_empty() && !whole.1.is_empty());
    for cut in [1, 57, 200, 399] {
        assert_eq!(run(Some(cut)), whole, "cut at {cut}");
    }
}

/// A side that lags (its records arrive after the other side's watermark
/// passed what they could match): each record still joins what is
/// buffered, and is not kept; an unmatched one is an outer row at once,
/// whichever side was read first.
#[test]
fn a_record_of_a_lagging_side_joins_what_is_buffered_and_is_evicted_at_once() {
    let mut d = Driver::new(JoinType::FullOuter, 10, 10, 30);
    assert!(d.push(Side::Right, "k", 50, "r50").is_empty());
    // The right watermark is now 70.
    assert!(d.push(Side::Right, "k", 100, "r100").is_empty());
    // l45 matches r50 (within 10); nothing right of 70 can match it (its
    // last match is 55).
    assert_eq!(d.push(Side::Left, "k", 45, "l45"), ["l45+r50"]);
    // l20 matches nothing and never will.
    assert_eq!(d.push(Side::Left, "k", 20, "l20"), ["l20+_"]);
    let [left, right] = d.join.stats();
    assert_eq!((left.rows, right.rows), (0, 2));
    assert!(d.late.is_empty());
    assert_eq!(d.flush(), ["_+r100"]);
}
