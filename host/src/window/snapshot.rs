//! Snapshots of a window engine, for checkpoints: the engine's whole state
//! as plain, owned, deterministic data, and the restore that rebuilds it.
//!
//! What is kept: open rows (key, start, end, accumulator, held offsets),
//! the timers of windows not yet final (kept as they are rather than
//! derived from rows, so a restore under another allowed lateness does not
//! re-register windows), per-partition event times and last-seen processing
//! time, the pipeline watermark with the `now_ms` of its last advance (which
//! decides the idle flags), the late count and whether the engine had
//! failed. What is not: the rows' "changed in this batch" stamps, which never
//! reach past a batch, and the spec's lateness, bound, idle timeout and
//! output mode, which the restoring spec supplies.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::engine::WindowEngine;
use super::spec::{InvalidSpec, Shape, WindowSpec};
use super::watermark::{PartitionTime, Watermarks};

/// The layout this code writes and reads.
const VERSION: u32 = 1;

/// Everything a [`WindowEngine`] needs to continue exactly where it was.
///
/// Plain data in a canonical order (rows by (key, start), timers by (end,
/// start, key), partitions by (source, partition)), so the same state
/// always serializes to the same bytes. The first field is a layout
/// version: with postcard, a reader can decode it alone
/// (`take_from_bytes::<u32>`) before choosing how to read the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    pub(super) version: u32,
    pub(super) shape: SnapshotShape,
    pub(super) rows: Vec<SnapshotRow>,
    /// Windows (for hopping: not panes) not yet final.
    pub(super) timers: Vec<SnapshotTimer>,
    pub(super) partitions: Vec<SnapshotPartition>,
    /// Partitions declared but without data yet, and since when they are
    /// waited for (see [`WindowEngine::expect_partitions`]).
    pub(super) expected: Vec<(u16, i32, Option<i64>)>,
    pub(super) watermark: Option<i64>,
    /// `now_ms` of the last `process` or `tick`; `i64::MIN` before any.
    pub(super) last_now_ms: i64,
    pub(super) late_records: u64,
    /// A call had failed: the state may hold part of a batch.
    pub(super) poisoned: bool,
}

/// The window shape in milliseconds: what must not change across a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum SnapshotShape {
    /// Tumbling (`slide == size`) or hopping.
    Panes {
        size_ms: i64,
        slide_ms: i64,
    },
    Session {
        gap_ms: i64,
    },
}

/// One open window (tumbling, session) or pane (hopping) of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SnapshotRow {
    pub key: Vec<u8>,
    pub start: i64,
    pub end: i64,
    pub acc: Vec<u8>,
    /// Lowest offset folded in, per partition, sorted by partition.
    pub held: Vec<SnapshotHeld>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SnapshotHeld {
    pub source: u16,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SnapshotTimer {
    pub end: i64,
    pub start: i64,
    pub key: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SnapshotPartition {
    pub source: u16,
    pub partition: i32,
    pub min_event_time: i64,
    pub max_event_time: i64,
    pub last_seen_ms: i64,
}

/// Why [`WindowEngine::restore`] refused a snapshot. None of these goes
/// away on retry: the spec or the checkpoint has to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot restore window state: {0}")]
    InvalidSpec(#[from] InvalidSpec),
    /// The window kind, size, slide or gap changed since the snapshot.
    #[error(
        "cannot restore window state taken with {snapshot} windows under a spec with \
         {spec} windows: open windows do not carry over a change of window shape"
    )]
    ShapeChanged { snapshot: String, spec: String },
    #[error("window state snapshot has layout version {found}; this build reads version {VERSION}")]
    Version { found: u32 },
    #[error(
        "window state snapshot was taken after the engine had failed; its state is not \
         trustworthy"
    )]
    Poisoned,
    /// Corrupt or hand-made: duplicate or unordered rows, timers that do
    /// not fit the shape, and the like.
    #[error("inconsistent window state snapshot: {0}")]
    Inconsistent(String),
}

impl From<Shape> for SnapshotShape {
    fn from(shape: Shape) -> Self {
        match shape {
            Shape::Panes { size, slide } => Self::Panes {
                size_ms: size,
                slide_ms: slide,
            },
            Shape::Session { gap } => Self::Session { gap_ms: gap },
        }
    }
}

fn show(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => humantime::format_duration(Duration::from_millis(ms)).to_string(),
        Err(_) => format!("{ms}ms"),
    }
}

impl fmt::Display for SnapshotShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Panes { size_ms, slide_ms } if size_ms == slide_ms => {
                write!(f, "tumbling {}", show(size_ms))
            }
            Self::Panes { size_ms, slide_ms } => {
                write!(f, "hopping {} (slide {})", show(size_ms), show(slide_ms))
            }
            Self::Session { gap_ms } => write!(f, "session (gap {})", show(gap_ms)),
        }
    }
}

impl WindowEngine {
    /// Everything needed to continue exactly where the engine is: see
    /// [`EngineSnapshot`]. Take it between batches.
    pub fn snapshot(&self) -> EngineSnapshot {
        let mut rows: Vec<SnapshotRow> = self
            .state
            .all_rows()
            .map(|(key, row)| {
                let mut held: Vec<SnapshotHeld> = row
                    .held
                    .iter()
                    .map(|&((source, partition), offset)| SnapshotHeld {
                        source,
                        partition,
                        offset,
                    })
                    .collect();
                held.sort_unstable_by_key(|h| (h.source, h.partition));
                SnapshotRow {
                    key: key.to_vec(),
                    start: row.start,
                    end: row.end,
                    acc: row.acc.to_vec(),
                    held,
                }
            })
            .collect();
        rows.sort_unstable_by(|a, b| (&a.key, a.start).cmp(&(&b.key, b.start)));
        let timers = self
            .state
            .all_timers()
            .into_iter()
            .map(|(end, start, key)| SnapshotTimer {
                end,
                start,
                key: key.to_vec(),
            })
            .collect();
        let (partitions, watermark, last_now_ms) = self.watermarks.parts();
        let partitions = partitions
            .into_iter()
            .map(|((source, partition), t)| SnapshotPartition {
                source,
                partition,
                min_event_time: t.min,
                max_event_time: t.max,
                last_seen_ms: t.last_seen,
            })
            .collect();
        EngineSnapshot {
            version: VERSION,
            shape: self.shape.into(),
            rows,
            timers,
            partitions,
            expected: self
                .watermarks
                .expected()
                .into_iter()
                .map(|((s, p), t)| (s, p, t))
                .collect(),
            watermark,
            last_now_ms,
            late_records: self.late,
            poisoned: self.poisoned,
        }
    }

    /// Rebuilds an engine from `spec` and a snapshot taken under a
    /// compatible spec: the same window shape (kind, size, slide, gap). The
    /// lateness, watermark bound, idle timeout and output mode may differ;
    /// they apply from the restore on, to the state as it is (a larger
    /// allowed lateness can let a record into a window already emitted,
    /// which then starts afresh and gets a second result).
    pub fn restore(spec: WindowSpec, snapshot: EngineSnapshot) -> Result<Self, RestoreError> {
        let (bound, idle_timeout) = (spec.bound_ms(), spec.idle_timeout_ms());
        let mut engine = Self::new(spec)?;
        if snapshot.version != VERSION {
            return Err(RestoreError::Version {
                found: snapshot.version,
            });
        }
        let shape = SnapshotShape::from(engine.shape);
        if snapshot.shape != shape {
            return Err(RestoreError::ShapeChanged {
                snapshot: snapshot.shape.to_string(),
                spec: shape.to_string(),
            });
        }
        if snapshot.poisoned {
            return Err(RestoreError::Poisoned);
        }
        check(&snapshot).map_err(RestoreError::Inconsistent)?;

        let mut held = Vec::new();
        for row in &snapshot.rows {
            held.clear();
            held.extend(row.held.iter().map(|h| ((h.source, h.partition), h.offset)));
            engine
                .state
                .upsert(&row.key, row.start, row.end, &row.acc, &held);
        }
        engine.state.settle();
        for t in &snapshot.timers {
            let key = engine.state.intern(&t.key);
            engine.state.add_timer((t.end, t.start, key));
        }
        let partitions = snapshot.partitions.iter().map(|p| {
            let time = PartitionTime {
                min: p.min_event_time,
                max: p.max_event_time,
                last_seen: p.last_seen_ms,
            };
            ((p.source, p.partition), time)
        });
        engine.watermarks = Watermarks::from_parts(
            bound,
            idle_timeout,
            partitions,
            snapshot.expected.iter().map(|&(s, p, t)| ((s, p), t)),
            snapshot.watermark,
            snapshot.last_now_ms,
        );
        engine.late = snapshot.late_records;
        Ok(engine)
    }
}

fn show_key(key: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(key))
}

/// Checks what the engine relies on and a snapshot it wrote satisfies.
fn check(s: &EngineSnapshot) -> Result<(), String> {
    for pair in s.rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        match (&a.key, a.start).cmp(&(&b.key, b.start)) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => {
                return Err(format!(
                    "two rows for key {} starting at {}",
                    show_key(&a.key),
                    a.start
                ));
            }
            std::cmp::Ordering::Greater => {
                return Err("rows are not sorted by (key, start)".to_owned());
            }
        }
        if let SnapshotShape::Session { .. } = s.shape
            && a.key == b.key
            && a.end >= b.start
        {
            return Err(format!(
                "sessions [{}, {}) and [{}, {}) of key {} overlap or touch",
                a.start,
                a.end,
                b.start,
                b.end,
                show_key(&a.key)
            ));
        }
    }
    for row in &s.rows {
        let fits = match s.shape {
            SnapshotShape::Panes { size_ms, .. } => row.end == row.start.saturating_add(size_ms),
            SnapshotShape::Session { .. } => row.start <= row.end,
        };
        if !fits {
            return Err(format!(
                "row [{}, {}) of key {} does not fit {} windows",
                row.start,
                row.end,
                show_key(&row.key),
                s.shape
            ));
        }
        let partitions = row
            .held
            .windows(2)
            .all(|h| (h[0].source, h[0].partition) < (h[1].source, h[1].partition));
        if !partitions {
            return Err(format!(
                "held offsets of row [{}, {}) of key {} are duplicated or not sorted",
                row.start,
                row.end,
                show_key(&row.key)
            ));
        }
    }
    if s.timers
        .windows(2)
        .any(|t| (t[0].end, t[0].start, &t[0].key) >= (t[1].end, t[1].start, &t[1].key))
    {
        return Err("timers are duplicated or not sorted by (end, start, key)".to_owned());
    }
    for t in &s.timers {
        let fits = match s.shape {
            SnapshotShape::Panes { size_ms, .. } => t.end == t.start.saturating_add(size_ms),
            // A session's timer is its row's, one for one.
            SnapshotShape::Session { .. } => s
                .rows
                .binary_search_by(|r| (&r.key, r.start).cmp(&(&t.key, t.start)))
                .is_ok_and(|i| s.rows[i].end == t.end),
        };
        if !fits {
            return Err(format!(
                "timer [{}, {}) of key {} does not fit the rows or {} windows",
                t.start,
                t.end,
                show_key(&t.key),
                s.shape
            ));
        }
    }
    if let SnapshotShape::Session { .. } = s.shape
        && s.timers.len() != s.rows.len()
    {
        return Err(format!(
            "{} sessions but {} timers",
            s.rows.len(),
            s.timers.len()
        ));
    }
    let partition = |p: &SnapshotPartition| (p.source, p.partition);
    if s.partitions
        .windows(2)
        .any(|p| partition(&p[0]) >= partition(&p[1]))
    {
        return Err("partitions are duplicated or not sorted".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Restores at every point of runs that have it all: several keys and
    //! partitions, out-of-order, late and refused records, an idle
    //! partition; for every window kind and output mode.

    use super::*;
    use crate::window::tests::{Guest, Rec, Run};
    use crate::window::{Progress, WindowOutput};

    const WM: &str = "watermark: { max_out_of_orderness: 10s, idle_timeout: 30s }\n";
    const TUMBLING: &str = "window: { tumbling: 1m }\n";
    const HOPPING: &str = "window: { hopping: { size: 1m, slide: 20s } }\nallowed_lateness: 10s\n";
    const SESSION: &str = "window: { session: { gap: 30s } }\nallowed_lateness: 5s\n";

    /// `(now_ms, records)`, no records for a `tick`; records are (key, event
    /// time in s, partition, value), a negative value refused by `fold`.
    /// Partition 2 goes quiet after the second batch, is idle from 31 s of
    /// processing time on (step 5 releases the watermark), and wakes up.
    #[rustfmt::skip]
    const STEPS: &[(i64, &[Rec<'static>])] = &[
        (0, &[("a", 5, 0, 1), ("b", 12, 1, 2), ("a", 58, 0, 3), ("c", 3, 2, 4)]),
        (1000, &[("b", 40, 1, 5), ("a", 30, 0, 6), ("c", 20, 2, 7), ("b", 41, 1, 8)]),
        (2000, &[("a", 75, 0, 9), ("b", 61, 1, 10), ("a", 62, 1, -1)]),
        (3000, &[]),
        (10_000, &[("a", 90, 0, 11), ("b", 95, 1, 12), ("a", 10, 0, 13)]),
        (31_000, &[]),
        (32_000, &[("a", 50, 0, 14), ("c", 100, 2, 15), ("b", 119, 1, 16), ("d", 85, 0, 17)]),
        (33_000, &[("a", 130, 0, 18), ("b", 125, 1, 19), ("c", 128, 2, 20)]),
        (100_000, &[]),
        (100_500, &[("d", 400, 0, 21)]),
        (101_000, &[("d", 395, 1, 22), ("e", 380, 2, 23), ("a", 20, 0, 24)]),
    ];

    /// One step's output and the guest calls it made.
    fn step(run: &mut Run, &(now, recs): &(i64, &[Rec<'_>])) -> (WindowOutput, Vec<String>) {
        let out = if recs.is_empty() {
            run.engine.tick(&mut run.guest, now).unwrap()
        } else {
            run.process(now, recs)
        };
        (out, std::mem::take(&mut run.guest.log))
    }

    /// Progress but for the overhead estimate, which counts the allocated
    /// capacity of the held-offset index, and a restore allocates afresh.
    fn progress(engine: &WindowEngine) -> Progress {
        Progress {
            overhead_bytes_per_row: 0,
            ..engine.progress()
        }
    }

    fn bytes(snapshot: &EngineSnapshot) -> Vec<u8> {
        postcard::to_allocvec(snapshot).unwrap()
    }

    fn spec(yaml: &str) -> WindowSpec {
        crate::window::tests::test_spec(yaml)
    }

    /// Engine A runs all steps; B runs the first `j`, is snapshotted and
    /// restored into C, which runs the rest: B then C must say what A said.
    fn continues_exactly_at_every_split(yaml: &str) {
        let mut a = Run::new(yaml);
        let mut snapshots = vec![bytes(&a.engine.snapshot())];
        let mut expected = Vec::new();
        for s in STEPS {
            expected.push(step(&mut a, s));
            snapshots.push(bytes(&a.engine.snapshot()));
        }
        let outs = || expected.iter().map(|e| &e.0);
        assert!(outs().map(|o| o.late).sum::<u64>() > 0, "{yaml}");
        assert!(
            outs()
                .flat_map(|o| &o.dead_letters)
                .any(|d| d.1.text.starts_with("negative")),
            "{yaml}"
        );
        assert!(expected[5].0.windows.iter().any(|w| w.is_final), "{yaml}");

        for j in 0..=STEPS.len() {
            let mut b = Run::new(yaml);
            let mut got: Vec<_> = STEPS[..j].iter().map(|s| step(&mut b, s)).collect();
            let snapshot = b.engine.snapshot();
            // Same state, same bytes, though A's hash maps are seeded apart.
            assert_eq!(bytes(&snapshot), snapshots[j], "{yaml}after step {j}");
            let back: EngineSnapshot = postcard::from_bytes(&bytes(&snapshot)).unwrap();
            assert_eq!(back, snapshot);
            let mut c = Run {
                engine: WindowEngine::restore(spec(yaml), back).unwrap(),
                guest: Guest::default(),
                next_offset: b.next_offset.clone(),
            };
            assert_eq!(c.engine.snapshot(), snapshot);
            assert_eq!(progress(&c.engine), progress(&b.engine));
            assert_eq!(c.engine.held_offsets(), b.engine.held_offsets());
            got.extend(STEPS[j..].iter().map(|s| step(&mut c, s)));
            assert_eq!(got.len(), expected.len());
            for (i, (got, want)) in got.iter().zip(&expected).enumerate() {
                assert_eq!(got, want, "{yaml}restored after step {j}, step {i}");
            }
            assert_eq!(progress(&c.engine), progress(&a.engine), "{yaml}{j}");
            assert_eq!(c.engine.held_offsets(), a.engine.held_offsets());
        }
    }

    fn in_both_modes(window: &str) {
        for mode in ["append", "update"] {
            continues_exactly_at_every_split(&format!("{window}{WM}output: {mode}\n"));
        }
    }

    #[test]
    fn tumbling_windows_continue_exactly_after_a_restore() {
        in_both_modes(TUMBLING);
    }

    #[test]
    fn hopping_windows_continue_exactly_after_a_restore() {
        in_both_modes(HOPPING);
    }

    #[test]
    fn session_windows_continue_exactly_after_a_restore() {
        in_both_modes(SESSION);
    }

    #[test]
    fn a_fresh_engine_roundtrips() {
        for window in [TUMBLING, HOPPING, SESSION] {
            let yaml = format!("{window}{WM}");
            let fresh = Run::new(&yaml).engine;
            let snapshot = fresh.snapshot();
            assert_eq!((snapshot.rows.len(), snapshot.watermark), (0, None));
            let back = postcard::from_bytes(&bytes(&snapshot)).unwrap();
            let restored = WindowEngine::restore(spec(&yaml), back).unwrap();
            assert_eq!(restored.snapshot(), snapshot);
            assert_eq!(restored.progress(), fresh.progress());
        }
    }

    #[test]
    fn a_changed_window_shape_is_refused() {
        let mut run = Run::new(&format!("{TUMBLING}{WM}"));
        step(&mut run, &STEPS[0]);
        let snapshot = run.engine.snapshot();
        let restore =
            |yaml: &str| WindowEngine::restore(spec(yaml), snapshot.clone()).map(|e| e.snapshot());
        let changed = |to: &str| {
            let e = restore(&format!("{to}{WM}")).unwrap_err();
            assert!(matches!(e, RestoreError::ShapeChanged { .. }), "{e:?}");
            e.to_string()
        };
        assert_eq!(
            changed(HOPPING),
            "cannot restore window state taken with tumbling 1m windows under a spec with \
             hopping 1m (slide 20s) windows: open windows do not carry over a change of \
             window shape"
        );
        assert!(changed("window: { tumbling: 2m }\n").contains("under a spec with tumbling 2m"));
        assert!(changed(SESSION).contains("under a spec with session (gap 30s) windows"));
        // A hopping window that slides by its size is a tumbling one.
        let same = format!("window: {{ hopping: {{ size: 1m, slide: 1m }} }}\n{WM}");
        assert_eq!(restore(&same), Ok(snapshot.clone()));
        // Lateness, bound, idle timeout and output mode may change.
        let other = "window: { tumbling: 1m }\n\
            watermark: { max_out_of_orderness: 1m, idle_timeout: 5s }\n\
            allowed_lateness: 1h\noutput: update\n";
        assert_eq!(restore(other), Ok(snapshot.clone()));
        assert_eq!(
            restore(&format!("window: {{ tumbling: 0s }}\n{WM}")),
            Err(RestoreError::InvalidSpec(InvalidSpec(
                "tumbling window size must be at least 1ms".to_owned()
            )))
        );
    }

    #[test]
    fn inconsistent_snapshots_are_refused() {
        let yaml = format!("{SESSION}{WM}");
        let mut run = Run::new(&yaml);
        step(&mut run, &STEPS[0]);
        // Sessions a [5 s, 35 s), a [58 s, 88 s), b [12 s, 42 s), c [3 s, 33 s).
        let good = run.engine.snapshot();
        assert_eq!((good.rows.len(), good.timers.len()), (4, 4));
        let refuse = |edit: &dyn Fn(&mut EngineSnapshot)| {
            let mut s = good.clone();
            edit(&mut s);
            let e = WindowEngine::restore(spec(&yaml), s)
                .unwrap_err()
                .to_string();
            e.strip_prefix("inconsistent window state snapshot: ")
                .unwrap_or(&e)
                .to_owned()
        };
        let (a0, a1) = (&good.rows[0], &good.rows[1]);
        assert_eq!(
            refuse(&|s| s.rows.insert(1, s.rows[0].clone())),
            format!("two rows for key \"a\" starting at {}", a0.start)
        );
        assert_eq!(
            refuse(&|s| s.rows.swap(1, 2)),
            "rows are not sorted by (key, start)"
        );
        assert_eq!(
            refuse(&|s| s.rows[0].end = s.rows[1].start),
            format!(
                "sessions [{}, {}) and [{}, {}) of key \"a\" overlap or touch",
                a0.start, a1.start, a1.start, a1.end
            )
        );
        assert_eq!(refuse(&|s| s.timers.truncate(3)), "4 sessions but 3 timers");
        assert_eq!(
            refuse(&|s| s.partitions.push(s.partitions[0])),
            "partitions are duplicated or not sorted"
        );
        assert_eq!(
            refuse(&|s| s.version = 7),
            "window state snapshot has layout version 7; this build reads version 1"
        );
        assert_eq!(
            refuse(&|s| s.poisoned = true),
            "window state snapshot was taken after the engine had failed; its state is \
             not trustworthy"
        );
    }
}
