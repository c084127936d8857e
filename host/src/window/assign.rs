//! Which windows a record belongs to: pure arithmetic on event times, and the
//! session planner that decides which sessions a batch creates and merges.

use std::ops::Range;
use std::time::{Duration, UNIX_EPOCH};

use crate::batch::Reason;
use crate::batch::reason::Kind;

/// The multiple of `step` at or below `t`.
pub(super) fn floor(t: i64, step: i64) -> i64 {
    t.div_euclid(step).saturating_mul(step)
}

/// Starts of the windows (of `size`, every `slide`) that contain the pane
/// starting at `pane`, earliest first. The last one, `pane` itself, is the
/// window that outlives the pane's others.
pub(super) fn windows_of_pane(pane: i64, size: i64, slide: i64) -> impl Iterator<Item = i64> {
    let first = pane.saturating_sub(size - slide);
    (0..size / slide).map(move |k| first.saturating_add(k * slide))
}

/// Starts of the panes of the window starting at `start`, earliest first.
pub(super) fn panes_of_window(start: i64, size: i64, slide: i64) -> impl Iterator<Item = i64> {
    (0..size / slide).map(move |k| start.saturating_add(k * slide))
}

/// The largest time `humantime` formats (9999-12-31T23:59:59.999Z).
const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

/// `ms` since the epoch in RFC 3339 with milliseconds; times outside years
/// 1970..=9999 (which only a confused guest produces) as a plain number.
pub(super) fn rfc3339(ms: i64) -> String {
    if (0..=MAX_RFC3339_MS).contains(&ms) {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
    } else {
        format!("{ms}ms")
    }
}

/// Why a record beyond the horizon is dead-lettered.
pub(super) fn ahead_reason(t: i64, max_ahead: i64) -> Reason {
    let max_ahead = std::time::Duration::from_millis(max_ahead.max(0) as u64);
    let text = format!(
        "event time too far ahead: {} is more than {} past the processing time",
        rfc3339(t),
        humantime::format_duration(max_ahead)
    );
    Reason::new(Kind::TooFarAhead, text)
}

/// The dead-letter reason of a late record.
pub(super) fn late_reason(start: i64, end: i64) -> Reason {
    let text = format!(
        "late: window [{}, {}) was already finalized",
        rfc3339(start),
        rfc3339(end)
    );
    Reason::new(Kind::Late, text)
}

/// Records of one key that fall into one new session: `[start, end)` and a
/// range of the key's records (sorted by event time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cluster {
    pub start: i64,
    pub end: i64,
    pub records: Range<usize>,
}

/// Splits a key's event times (sorted) into sessions of `gap`: a record
/// joins the previous one's session when `[t, t + gap)` overlaps or touches it.
pub(super) fn clusters(times: &[i64], gap: i64) -> Vec<Cluster> {
    let mut out: Vec<Cluster> = Vec::new();
    for (i, &t) in times.iter().enumerate() {
        let end = t.saturating_add(gap);
        match out.last_mut() {
            Some(c) if t <= c.end => {
                c.end = c.end.max(end);
                c.records.end = i + 1;
            }
            _ => out.push(Cluster {
                start: t,
                end,
                records: i..i + 1,
            }),
        }
    }
    out
}

/// One session after a batch: the existing sessions and new clusters it is
/// made of (both contiguous ranges, in start order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Component {
    pub start: i64,
    pub end: i64,
    pub existing: Range<usize>,
    pub clusters: Range<usize>,
}

/// Joins a key's new clusters with its existing sessions (`[start, end)`,
/// sorted, pairwise disjoint and not touching). Returns the sessions the
/// batch changes: each has at least one cluster; existing sessions no
/// cluster touches are left out.
pub(super) fn components(existing: &[(i64, i64)], clusters: &[Cluster]) -> Vec<Component> {
    let mut out = Vec::new();
    let (mut e, mut c) = (0, 0);
    while c < clusters.len() {
        // Sessions ending before this cluster starts are untouched.
        while e < existing.len() && existing[e].1 < clusters[c].start {
            e += 1;
        }
        let mut comp = Component {
            start: clusters[c].start,
            end: clusters[c].end,
            existing: e..e,
            clusters: c..c + 1,
        };
        c += 1;
        loop {
            if e < existing.len() && existing[e].0 <= comp.end {
                comp.start = comp.start.min(existing[e].0);
                comp.end = comp.end.max(existing[e].1);
                e += 1;
                comp.existing.end = e;
            } else if c < clusters.len() && clusters[c].start <= comp.end {
                comp.end = comp.end.max(clusters[c].end);
                c += 1;
                comp.clusters.end = c;
            } else {
                break;
            }
        }
        out.push(comp);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_negative_times_down() {
        assert_eq!(floor(59, 60), 0);
        assert_eq!(floor(60, 60), 60);
        assert_eq!(floor(-1, 60), -60);
    }

    #[test]
    fn panes_and_windows() {
        assert_eq!(
            windows_of_pane(60, 60, 20).collect::<Vec<_>>(),
            vec![20, 40, 60]
        );
        assert_eq!(
            panes_of_window(20, 60, 20).collect::<Vec<_>>(),
            vec![20, 40, 60]
        );
        assert_eq!(windows_of_pane(60, 60, 60).collect::<Vec<_>>(), vec![60]);
    }

    #[test]
    fn formats_times() {
        assert_eq!(
            late_reason(1_767_225_600_000, 1_767_225_660_000),
            Reason::new(
                Kind::Late,
                "late: window [2026-01-01T00:00:00.000Z, 2026-01-01T00:01:00.000Z) was already finalized"
            )
        );
        assert_eq!(rfc3339(-5), "-5ms");
        assert_eq!(rfc3339(i64::MAX), format!("{}ms", i64::MAX));
    }

    #[test]
    fn clusters_split_on_gaps_and_join_on_touch() {
        assert_eq!(
            clusters(&[0, 10, 40, 100], 30),
            vec![
                Cluster {
                    start: 0,
                    end: 70,
                    records: 0..3
                },
                Cluster {
                    start: 100,
                    end: 130,
                    records: 3..4
                },
            ]
        );
    }

    #[test]
    fn components_bridge_existing_sessions() {
        let cl = |start, end| Cluster {
            start,
            end,
            records: 0..1,
        };
        // Existing [0, 30) [60, 90) [200, 230); a cluster [30, 60) touches
        // both first ones; a cluster [100, 130) is alone; [230, 260) touches
        // the last; [500, 530) alone.
        let existing = [(0, 30), (60, 90), (200, 230)];
        let got = components(
            &existing,
            &[cl(30, 60), cl(100, 130), cl(230, 260), cl(500, 530)],
        );
        assert_eq!(
            got,
            vec![
                Component {
                    start: 0,
                    end: 90,
                    existing: 0..2,
                    clusters: 0..1
                },
                Component {
                    start: 100,
                    end: 130,
                    existing: 2..2,
                    clusters: 1..2
                },
                Component {
                    start: 200,
                    end: 260,
                    existing: 2..3,
                    clusters: 2..3
                },
                Component {
                    start: 500,
                    end: 530,
                    existing: 3..3,
                    clusters: 3..4
                },
            ]
        );
        // One existing session spanning two clusters.
        let got = components(&[(0, 100)], &[cl(10, 40), cl(60, 90)]);
        assert_eq!(
            got,
            vec![Component {
                start: 0,
                end: 100,
                existing: 0..1,
                clusters: 0..2
            }]
        );
        // A cluster that extends an existing session backwards, then another
        // that chains on through a second session.
        let got = components(&[(50, 80), (110, 140)], &[cl(20, 50), cl(80, 110)]);
        assert_eq!(
            got,
            vec![Component {
                start: 20,
                end: 140,
                existing: 0..2,
                clusters: 0..2
            }]
        );
    }
}
