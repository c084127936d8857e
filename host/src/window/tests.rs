//! Engine tests against a native test double of an aggregate guest: the
//! accumulator is a little-endian `u64` count and `i64` sum of each record's
//! value (from a side table); a negative value is refused by `fold`.
//! Times are written in seconds after 2026-01-01T00:00:00Z.

use std::collections::HashMap;

use super::*;
use crate::batch::calls::{
    Accumulators, AggregateCalls, AggregateError, FinishRequest, FoldRequest, FoldResult,
    MergeRequest, MergeResult,
};
use crate::batch::reason::Kind;
use crate::batch::{Reason, StepOutput};
use crate::spec::window::WindowSpec;

const T0: i64 = 1_767_225_600_000;

fn s(secs: i64) -> i64 {
    T0 + secs * 1000
}

fn enc(count: u64, sum: i64) -> Vec<u8> {
    [count.to_le_bytes(), sum.to_le_bytes()].concat()
}

fn dec(acc: &[u8]) -> (u64, i64) {
    if acc.is_empty() {
        return (0, 0);
    }
    assert_eq!(acc.len(), 16, "accumulator {acc:?}");
    (
        u64::from_le_bytes(acc[..8].try_into().unwrap()),
        i64::from_le_bytes(acc[8..].try_into().unwrap()),
    )
}

fn groups(offsets: &[u32]) -> Vec<u32> {
    offsets.windows(2).map(|w| w[1] - w[0]).collect()
}

/// The guest double; `log` records each call's shape.
#[derive(Default)]
pub(super) struct Guest {
    values: Vec<i64>,
    pub(super) log: Vec<String>,
    fail_fold: bool,
    /// Reports every merge group as failed (as fault isolation does).
    fail_merge: bool,
}

impl AggregateCalls for Guest {
    fn fold(&mut self, r: FoldRequest) -> Result<FoldResult, AggregateError> {
        self.log.push(format!(
            "fold {:?} fresh {:?}",
            groups(&r.group_offsets),
            r.fresh
        ));
        if self.fail_fold {
            return Err(AggregateError::Guest(Reason::guest_error("boom")));
        }
        let mut out = FoldResult::default();
        for g in 0..r.fresh.len() {
            let (mut n, mut sum) = if r.fresh[g] == 1 {
                (0, 0)
            } else {
                dec(r.accumulators.get(g))
            };
            for &rec in &r.records[r.group_offsets[g] as usize..r.group_offsets[g + 1] as usize] {
                let v = self.values[rec as usize];
                if v < 0 {
                    out.dead_letters
                        .push((rec, Reason::from_guest(format!("negative value {v}"))));
                } else {
                    n += 1;
                    sum += v;
                }
            }
            out.accumulators.push(&enc(n, sum));
        }
        Ok(out)
    }

    fn merge(&mut self, r: MergeRequest) -> Result<Accumulators, AggregateError> {
        self.log
            .push(format!("merge {:?}", groups(&r.group_offsets)));
        let mut out = Accumulators::default();
        for g in r.group_offsets.windows(2) {
            let (n, sum) = (g[0]..g[1])
                .map(|i| dec(r.accumulators.get(i as usize)))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            out.push(&enc(n, sum));
        }
        Ok(out)
    }

    fn merge_isolated(&mut self, r: MergeRequest) -> Result<MergeResult, AggregateError> {
        if !self.fail_merge {
            return self.merge(r).map(|accumulators| MergeResult {
                accumulators,
                failed: Vec::new(),
            });
        }
        self.log
            .push(format!("merge {:?} fails", groups(&r.group_offsets)));
        let mut out = MergeResult::default();
        for g in 0..r.group_offsets.len() - 1 {
            out.accumulators.push(&[]);
            out.failed.push((g as u32, Reason::new(Kind::Trap, "boom")));
        }
        Ok(out)
    }

    fn finish(&mut self, r: FinishRequest) -> Result<StepOutput, AggregateError> {
        self.log.push(format!("finish {}", r.final_.len()));
        let mut out = StepOutput::default();
        for g in 0..r.final_.len() {
            let key = &r.keys[r.key_offsets[g] as usize..r.key_offsets[g + 1] as usize];
            let (n, sum) = dec(r.accumulators.get(g));
            let value = format!(
                "{} [{}s,{}s) n={n} sum={sum}{}",
                String::from_utf8_lossy(key),
                (r.window_starts[g] - T0) / 1000,
                (r.window_ends[g] - T0) / 1000,
                if r.final_[g] == 1 { " final" } else { "" }
            );
            // No key and no timestamp: the engine fills them in.
            out.records.push(None, Some(value.as_bytes()), None, []);
            out.inputs.push(g as u32);
            out.targets.push(0);
        }
        Ok(out)
    }
}

/// A record: key, event time (s after T0), partition, value.
pub(super) type Rec<'a> = (&'a str, i64, i32, i64);

#[derive(Debug, PartialEq, Eq)]
struct Out {
    results: Vec<String>,
    dead: Vec<(u32, String)>,
    calls: Vec<String>,
}

pub(super) struct Run {
    pub(super) engine: WindowEngine,
    pub(super) guest: Guest,
    pub(super) next_offset: HashMap<i32, i64>,
}

/// Processing times here count from 0 while event times are in 2026:
/// without `max_ahead` in `yaml`, there is no horizon.
pub(super) fn test_spec(yaml: &str) -> WindowSpec {
    let mut spec: WindowSpec = serde_yaml_ng::from_str(yaml).unwrap();
    if !yaml.contains("max_ahead") {
        spec.watermark.max_ahead = std::time::Duration::MAX;
    }
    spec
}

impl Run {
    pub(super) fn new(yaml: &str) -> Self {
        let spec = test_spec(yaml);
        Self {
            engine: WindowEngine::new(spec).unwrap(),
            guest: Guest::default(),
            next_offset: HashMap::new(),
        }
    }

    fn batch(&mut self, now_ms: i64, recs: &[Rec<'_>]) -> Out {
        let out = self.process(now_ms, recs);
        self.render(out)
    }

    /// Offsets count up from 0 per partition.
    pub(super) fn process(&mut self, now_ms: i64, recs: &[Rec<'_>]) -> WindowOutput {
        let mut keys = Vec::new();
        let mut key_offsets = vec![0];
        let (mut times, mut sources, mut partitions, mut offsets) =
            (vec![], vec![], vec![], vec![]);
        for &(key, t, p, _) in recs {
            keys.extend_from_slice(key.as_bytes());
            key_offsets.push(keys.len() as u32);
            times.push(s(t));
            sources.push(0);
            partitions.push(p);
            let o = self.next_offset.entry(p).or_default();
            offsets.push(*o);
            *o += 1;
        }
        self.guest.values = recs.iter().map(|r| r.3).collect();
        let batch = BatchKeys {
            keys: &keys,
            key_offsets: &key_offsets,
            event_times: &times,
            skip: &[],
            sources: &sources,
            partitions: &partitions,
            offsets: &offsets,
            upstreams: &[],
            marks: &[],
        };
        self.engine.process(&mut self.guest, batch, now_ms).unwrap()
    }

    fn tick(&mut self, now_ms: i64) -> Out {
        let out = self.engine.tick(&mut self.guest, now_ms).unwrap();
        self.render(out)
    }

    fn render(&mut self, out: WindowOutput) -> Out {
        let r = &out.results;
        assert_eq!(r.inputs, (0..out.windows.len() as u32).collect::<Vec<_>>());
        let results = (0..r.records.len())
            .map(|i| {
                let (rec, w) = (r.records.get(i), &out.windows[i]);
                assert_eq!(rec.key, Some(&w.key[..]));
                assert_eq!(rec.timestamp, Some(w.end - 1));
                let text = String::from_utf8(rec.value.unwrap().to_vec()).unwrap();
                assert_eq!(text.ends_with(" final"), w.is_final);
                text
            })
            .collect();
        assert_eq!(
            out.late,
            out.dead_letters
                .iter()
                .filter(|d| d.1.kind == Kind::Late)
                .count() as u64
        );
        Out {
            results,
            dead: out
                .dead_letters
                .into_iter()
                .map(|(i, r)| (i, r.text))
                .collect(),
            calls: std::mem::take(&mut self.guest.log),
        }
    }
}

fn out(results: &[&str], dead: &[(u32, &str)], calls: &[&str]) -> Out {
    Out {
        results: results.iter().map(|s| s.to_string()).collect(),
        dead: dead.iter().map(|(i, s)| (*i, s.to_string())).collect(),
        calls: calls.iter().map(|s| s.to_string()).collect(),
    }
}

const TUMBLING: &str = "window: { tumbling: 1m }\n\
    watermark: { max_out_of_orderness: 10s, idle_timeout: 30s }\n";

const LATE_0_60: &str =
    "late: window [2026-01-01T00:00:00.000Z, 2026-01-01T00:01:00.000Z) was already finalized";

#[test]
fn tumbling_in_order_with_several_keys() {
    let mut r = Run::new(TUMBLING);
    assert_eq!(
        r.batch(
            0,
            &[
                ("b", 5, 0, 1),
                ("a", 10, 0, 2),
                ("aa", 20, 0, 4),
                ("a", 50, 0, 8)
            ]
        ),
        out(&[], &[], &["fold [2, 1, 1] fresh [1, 1, 1]"])
    );
    assert_eq!(r.engine.watermark(), Some(s(40)));
    assert_eq!(
        r.batch(1, &[("a", 65, 0, 16), ("b", 71, 0, 32)]),
        out(
            &[
                "a [0s,60s) n=2 sum=10 final",
                "aa [0s,60s) n=1 sum=4 final",
                "b [0s,60s) n=1 sum=1 final"
            ],
            &[],
            &["fold [1, 1] fresh [1, 1]", "finish 3"]
        )
    );
    assert_eq!(r.tick(2), out(&[], &[], &[]));
    assert_eq!(
        r.batch(3, &[("a", 100, 0, 64), ("c", 130, 0, 128)]),
        out(
            &[
                "a [60s,120s) n=2 sum=80 final",
                "b [60s,120s) n=1 sum=32 final"
            ],
            &[],
            &["fold [1, 1] fresh [0, 1]", "finish 2"]
        )
    );
    assert_eq!((r.engine.state_rows(), r.engine.state_bytes()), (1, 16));
}

#[test]
fn out_of_order_within_the_bound_is_folded() {
    let mut r = Run::new(TUMBLING);
    r.batch(0, &[("k", 40, 0, 1), ("k", 45, 0, 2), ("k", 37, 0, 4)]);
    // Watermark 45 s: a record at 38 s still belongs to the open [0, 60).
    r.batch(1, &[("k", 55, 0, 8), ("k", 38, 0, 16)]);
    assert_eq!(
        r.batch(2, &[("k", 69, 0, 32)]).results,
        Vec::<String>::new()
    );
    assert_eq!(
        r.batch(3, &[("k", 59, 0, 64), ("k", 72, 0, 128)]),
        out(
            &["k [0s,60s) n=6 sum=95 final"],
            &[],
            &["fold [1, 1] fresh [0, 0]", "finish 1"]
        )
    );
}

#[test]
fn late_records_are_dead_lettered_with_the_window() {
    let mut r = Run::new(TUMBLING);
    r.batch(0, &[("click", 5, 0, 1), ("click", 50, 0, 2)]);
    assert_eq!(
        r.batch(1, &[("click", 75, 0, 3)]).results,
        vec!["click [0s,60s) n=2 sum=3 final"]
    );
    assert_eq!(
        r.batch(
            2,
            &[("click", 59, 0, 4), ("view", 10, 0, 5), ("click", 62, 0, 6)]
        ),
        out(
            &[],
            &[(0, LATE_0_60), (1, LATE_0_60)],
            &["fold [1] fresh [0]"]
        )
    );
    assert_eq!(r.engine.progress().late_records, 2);
    assert_eq!(
        r.batch(3, &[("click", 135, 0, 7)]).results,
        vec!["click [60s,120s) n=2 sum=9 final"]
    );
}

#[test]
fn allowed_lateness_keeps_a_window_open() {
    let mut r = Run::new(&format!("{TUMBLING}allowed_lateness: 30s\n"));
    r.batch(0, &[("k", 5, 0, 1)]);
    r.batch(1, &[("k", 75, 0, 2)]);
    assert_eq!(r.engine.watermark(), Some(s(65)));
    // Behind the watermark, but [0, 60) stays open until it reaches 90 s.
    assert_eq!(
        r.batch(2, &[("k", 30, 0, 4)]),
        out(&[], &[], &["fold [1] fresh [0]"])
    );
    assert_eq!(
        r.batch(3, &[("k", 105, 0, 8)]).results,
        vec!["k [0s,60s) n=2 sum=5 final"]
    );
    assert_eq!(
        r.batch(4, &[("k", 40, 0, 16)]).dead,
        vec![(0, LATE_0_60.to_owned())]
    );
}

/// The `allowed-lateness-update` golden case of the reference model.
#[test]
fn update_mode_emits_changes_then_the_final_result() {
    let mut r = Run::new(&format!(
        "{TUMBLING}allowed_lateness: 30s\noutput: update\n"
    ));
    assert_eq!(
        r.batch(0, &[("click", 5, 0, 1)]).results,
        vec!["click [0s,60s) n=1 sum=1"]
    );
    assert_eq!(
        r.batch(100, &[("click", 75, 0, 2)]).results,
        vec!["click [60s,120s) n=1 sum=2"]
    );
    assert_eq!(
        r.batch(200, &[("click", 30, 0, 3)]).results,
        vec!["click [0s,60s) n=2 sum=4"]
    );
    assert_eq!(
        r.batch(300, &[("click", 105, 0, 4)]).results,
        vec![
            "click [0s,60s) n=2 sum=4 final",
            "click [60s,120s) n=2 sum=6"
        ]
    );
    let late = r.batch(400, &[("click", 40, 0, 5)]);
    assert_eq!((late.results.len(), late.dead.len()), (0, 1));
    assert_eq!(
        r.batch(500, &[("click", 200, 0, 6)]),
        out(
            &[
                "click [60s,120s) n=2 sum=6 final",
                "click [180s,240s) n=1 sum=6"
            ],
            &[],
            &["fold [1] fresh [1]", "finish 2"]
        )
    );
}

#[test]
fn update_mode_emits_only_the_final_result_of_a_window_closing_now() {
    let mut r = Run::new(&format!("{TUMBLING}output: update\n"));
    r.batch(0, &[("k", 5, 0, 1)]);
    assert_eq!(
        r.batch(1, &[("k", 50, 0, 2), ("k", 80, 0, 4)]).results,
        vec!["k [0s,60s) n=2 sum=3 final", "k [60s,120s) n=1 sum=4"]
    );
    // Append mode: only the final one.
    let mut r = Run::new(TUMBLING);
    r.batch(0, &[("k", 5, 0, 1)]);
    assert_eq!(
        r.batch(1, &[("k", 50, 0, 2), ("k", 80, 0, 4)]).results,
        vec!["k [0s,60s) n=2 sum=3 final"]
    );
}

/// The `idle-partition` golden case, and release by `tick`.
#[test]
fn an_idle_partition_stops_holding_the_watermark() {
    let mut r = Run::new(TUMBLING);
    r.batch(0, &[("click", 1, 0, 1), ("view", 2, 1, 2)]);
    r.batch(10_000, &[("click", 40, 0, 4)]);
    r.batch(20_000, &[("click", 60, 0, 8)]);
    assert_eq!(r.engine.watermark(), Some(s(-8)));
    assert_eq!(
        r.batch(30_000, &[("click", 80, 0, 16)]).results,
        vec![
            "click [0s,60s) n=2 sum=5 final",
            "view [0s,60s) n=1 sum=2 final"
        ]
    );
    assert_eq!(r.engine.watermark(), Some(s(70)));

    let mut r = Run::new(TUMBLING);
    r.batch(0, &[("click", 1, 0, 1), ("view", 2, 1, 2)]);
    r.batch(1000, &[("click", 75, 0, 4)]);
    assert_eq!(r.tick(29_999).results, Vec::<String>::new());
    assert_eq!(
        r.tick(30_000).results,
        vec![
            "click [0s,60s) n=1 sum=1 final",
            "view [0s,60s) n=1 sum=2 final"
        ]
    );
    assert_eq!(r.engine.watermark(), Some(s(65)));
    // Everything idle: the watermark stays.
    assert_eq!(r.tick(1_000_000), out(&[], &[], &[]));
    assert_eq!(r.engine.watermark(), Some(s(65)));
    let p = r.engine.progress();
    assert_eq!(
        p.partitions
            .iter()
            .map(|p| (p.partition, p.min_event_time, p.max_event_time, p.idle))
            .collect::<Vec<_>>(),
        vec![(0, s(1), s(75), true), (1, s(2), s(2), true)]
    );
}

const HOPPING: &str = "window: { hopping: { size: 1m, slide: 20s } }\n\
    watermark: { max_out_of_orderness: 5s, idle_timeout: 30s }\n";

#[test]
fn hopping_windows_merge_their_panes() {
    let mut r = Run::new(HOPPING);
    // Panes [0, 20): a 0 s, 11 s, b 15 s; [20, 40): a 22 s, 33 s.
    assert_eq!(
        r.batch(
            0,
            &[
                ("a", 0, 0, 1),
                ("a", 11, 0, 2),
                ("a", 22, 0, 4),
                ("a", 33, 0, 8),
                ("b", 15, 0, 16)
            ]
        ),
        out(
            &[
                "a [-40s,20s) n=2 sum=3 final",
                "b [-40s,20s) n=1 sum=16 final"
            ],
            &[],
            &["fold [2, 2, 1] fresh [1, 1, 1]", "finish 2"]
        )
    );
    assert_eq!(
        r.batch(1, &[("a", 45, 0, 32)]),
        out(
            &[
                "a [-20s,40s) n=4 sum=15 final",
                "b [-20s,40s) n=1 sum=16 final"
            ],
            &[],
            &["fold [1] fresh [1]", "merge [2]", "finish 2"]
        )
    );
    assert_eq!(
        r.batch(2, &[("a", 200, 0, 256)]),
        out(
            &[
                "a [0s,60s) n=5 sum=47 final",
                "b [0s,60s) n=1 sum=16 final",
                "a [20s,80s) n=3 sum=44 final",
                "a [40s,100s) n=1 sum=32 final"
            ],
            &[],
            &["fold [1] fresh [1]", "merge [3, 2]", "finish 4"]
        )
    );
    // Only a's pane [200, 220) is left.
    assert_eq!(r.engine.state_rows(), 1);
    // 150 s is folded for [140, 200), the one of its windows still open;
    // 130 s has only closed windows, the latest [120, 180).
    assert_eq!(
        r.batch(3, &[("a", 150, 0, 64), ("a", 130, 0, 128)]),
        out(
            &[],
            &[(
                1,
                "late: window [2026-01-01T00:02:00.000Z, 2026-01-01T00:03:00.000Z) was already finalized"
            )],
            &["fold [1] fresh [1]"]
        )
    );
    assert_eq!(
        r.batch(4, &[("a", 300, 0, 512)]).results,
        vec![
            "a [140s,200s) n=1 sum=64 final",
            "a [160s,220s) n=1 sum=256 final",
            "a [180s,240s) n=1 sum=256 final",
            "a [200s,260s) n=1 sum=256 final"
        ]
    );
    assert_eq!(r.engine.state_rows(), 1);
}

#[test]
fn hopping_update_mode_reports_every_open_window_of_a_changed_pane() {
    let mut r = Run::new(&format!("{HOPPING}output: update\n"));
    assert_eq!(
        r.batch(0, &[("a", 0, 0, 1)]).results,
        vec![
            "a [-40s,20s) n=1 sum=1",
            "a [-20s,40s) n=1 sum=1",
            "a [0s,60s) n=1 sum=1"
        ]
    );
    assert_eq!(
        r.batch(1, &[("a", 30, 0, 2)]),
        out(
            &[
                "a [-40s,20s) n=1 sum=1 final",
                "a [-20s,40s) n=2 sum=3",
                "a [0s,60s) n=2 sum=3",
                "a [20s,80s) n=1 sum=2"
            ],
            &[],
            &["fold [1] fresh [1]", "merge [2, 2]", "finish 4"]
        )
    );
}

const SESSION: &str = "window: { session: { gap: 30s } }\n\
    watermark: { max_out_of_orderness: 1m, idle_timeout: 30s }\n";

/// The `session` golden case of the reference model.
#[test]
fn sessions_merge_when_a_record_bridges_them() {
    let mut r = Run::new(SESSION);
    assert_eq!(
        r.batch(0, &[("u1", 0, 0, 1), ("u1", 20, 0, 2), ("u2", 5, 0, 4)])
            .calls,
        vec!["fold [2, 1] fresh [1, 1]"]
    );
    // u1 opens [80, 110); u2's 35 s touches [5, 35) and extends it.
    assert_eq!(
        r.batch(100, &[("u1", 80, 0, 8), ("u2", 35, 0, 16)]).calls,
        vec!["fold [1, 1] fresh [1, 0]"]
    );
    assert_eq!(r.engine.state_rows(), 3);
    // 50 s touches [0, 50) and [80, 110): one session [0, 110).
    assert_eq!(
        r.batch(200, &[("u1", 50, 0, 32)]).calls,
        vec!["fold [1] fresh [0]", "merge [2]"]
    );
    assert_eq!(r.engine.state_rows(), 2);
    assert_eq!(
        r.batch(300, &[("u3", 200, 0, 64)]).results,
        vec![
            "u2 [5s,65s) n=2 sum=20 final",
            "u1 [0s,110s) n=4 sum=43 final"
        ]
    );
    assert_eq!(
        r.batch(400, &[("u1", 30, 0, 128)]).dead,
        vec![(
            0,
            "late: window [2026-01-01T00:00:30.000Z, 2026-01-01T00:01:00.000Z) was already finalized"
                .to_owned()
        )]
    );
}

/// When a key's only sessions merge, its map entry goes and comes back:
/// the new session's timer still shares the key's one allocation.
#[test]
fn a_merged_session_shares_its_key_with_its_timer() {
    let mut r = Run::new(SESSION);
    r.batch(0, &[("u1", 0, 0, 1), ("u1", 40, 0, 2)]);
    assert_eq!(r.engine.state_rows(), 2);
    // 20 s bridges [0, 30) and [40, 70): u1's only two sessions.
    r.batch(100, &[("u1", 20, 0, 4)]);
    assert_eq!(r.engine.state_rows(), 1);
    let shared = r.engine.state.intern(b"u1");
    let due = r.engine.state.pop_due(i64::MAX);
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].0, due[0].1), (s(70), s(0)));
    assert!(std::sync::Arc::ptr_eq(&shared, &due[0].2));
}

/// Sessions the guest cannot merge leave the state for the dead-letter
/// topic: the new records' fold result first, then the other session.
#[test]
fn sessions_that_cannot_be_merged_are_reported_with_their_accumulators() {
    let mut r = Run::new(SESSION);
    r.batch(0, &[("u1", 0, 0, 1), ("u1", 20, 0, 2), ("u2", 5, 0, 4)]);
    r.batch(100, &[("u1", 80, 0, 8)]);
    r.guest.fail_merge = true;
    let out = r.process(200, &[("u1", 50, 0, 32)]);
    assert_eq!(
        out.failed
            .iter()
            .map(|f| (
                String::from_utf8_lossy(&f.key).into_owned(),
                (f.start - T0) / 1000,
                (f.end - T0) / 1000,
                f.accumulators.iter().map(dec).collect::<Vec<_>>(),
                f.reason.text.as_str()
            ))
            .collect::<Vec<_>>(),
        vec![("u1".to_owned(), 0, 110, vec![(3, 35), (1, 8)], "boom")]
    );
    assert_eq!(r.engine.state_rows(), 1, "only u2's session is left");
    r.guest.fail_merge = false;
    assert_eq!(
        r.batch(300, &[("u3", 200, 0, 64)]).results,
        vec!["u2 [5s,35s) n=1 sum=4 final"]
    );
}

#[test]
fn one_batch_chains_several_sessions_in_one_fold_and_one_merge() {
    let mut r =
        Run::new("window: { session: { gap: 30s } }\nwatermark: { max_out_of_orderness: 5m }\n");
    r.batch(0, &[("a", 0, 0, 1), ("a", 60, 0, 2), ("a", 120, 0, 4)]);
    assert_eq!(r.engine.state_rows(), 3);
    // a: 30 s and 90 s bridge all three sessions; b: three records make
    // two new sessions, one of them a chain of two records.
    assert_eq!(
        r.batch(
            1,
            &[
                ("b", 100, 0, 8),
                ("a", 90, 0, 16),
                ("b", 0, 0, 32),
                ("a", 30, 0, 64),
                ("b", 20, 0, 128)
            ]
        ),
        out(&[], &[], &["fold [2, 2, 1] fresh [0, 1, 1]", "merge [3]"])
    );
    assert_eq!(r.engine.state_rows(), 3);
    assert_eq!(
        r.batch(2, &[("c", 1000, 0, 0)]).results,
        vec![
            "b [0s,50s) n=2 sum=160 final",
            "b [100s,130s) n=1 sum=8 final",
            "a [0s,150s) n=5 sum=87 final"
        ]
    );
}

#[test]
fn held_offsets_move_forward_as_windows_finalize() {
    let mut r = Run::new(TUMBLING);
    // Offsets: partition 0 counts 0, 1, ...; partition 1 likewise.
    r.batch(0, &[("k", 10, 0, 1), ("k", 20, 1, 1), ("k", 70, 0, 1)]);
    assert_eq!(
        r.engine.held_offsets(),
        HashMap::from([((0, 0), 0), ((0, 1), 0)])
    );
    // Watermark 65 s: [0, 60) final; [60, 120) holds partition 0 from offset 1.
    r.batch(1, &[("k", 75, 1, 1), ("k", 80, 0, 1)]);
    assert_eq!(
        r.engine.held_offsets(),
        HashMap::from([((0, 0), 1), ((0, 1), 1)])
    );
    // A late record is not held.
    r.batch(2, &[("k", 5, 1, 1)]);
    assert_eq!(
        r.engine.held_offsets(),
        HashMap::from([((0, 0), 1), ((0, 1), 1)])
    );
    r.batch(3, &[("k", 200, 0, 1), ("k", 195, 1, 1)]);
    assert_eq!(
        r.engine.held_offsets(),
        HashMap::from([((0, 0), 3), ((0, 1), 3)])
    );
    r.tick(1_000_000);
    assert_eq!(
        r.engine.held_offsets(),
        HashMap::from([((0, 0), 3), ((0, 1), 3)])
    );
}

#[test]
fn fold_dead_letters_and_skipped_records() {
    let mut r = Run::new(TUMBLING);
    let out = r.batch(0, &[("k", 10, 0, 1), ("k", 20, 0, -1), ("k", 30, 0, 4)]);
    assert_eq!(out.dead, vec![(1, "negative value -1".to_owned())]);
    assert_eq!(
        r.batch(1, &[("k", 80, 0, 0)]).results,
        vec!["k [0s,60s) n=2 sum=5 final"]
    );

    // Records dead-lettered in extract are ignored, even for the watermark.
    let mut guest = Guest::default();
    let spec = test_spec(TUMBLING);
    let mut engine = WindowEngine::new(spec).unwrap();
    guest.values = vec![1, 2];
    let batch = BatchKeys {
        keys: b"kk",
        key_offsets: &[0, 1, 2],
        event_times: &[s(10), s(1000)],
        skip: &[false, true],
        sources: &[0, 0],
        partitions: &[0, 0],
        offsets: &[0, 1],
        upstreams: &[],
        marks: &[],
    };
    let out = engine.process(&mut guest, batch, 0).unwrap();
    assert_eq!(out.dead_letters, vec![]);
    assert_eq!(guest.log, vec!["fold [1] fresh [1]"]);
    assert_eq!(engine.watermark(), Some(s(0)));
    assert_eq!(engine.held_offsets(), HashMap::from([((0, 0), 0)]));
}

#[test]
fn a_failed_call_poisons_the_engine() {
    let mut r = Run::new(TUMBLING);
    r.guest.fail_fold = true;
    r.guest.values = vec![1];
    let batch = BatchKeys {
        keys: b"k",
        key_offsets: &[0, 1],
        event_times: &[s(1)],
        skip: &[],
        sources: &[0],
        partitions: &[0],
        offsets: &[0],
        upstreams: &[],
        marks: &[],
    };
    assert_eq!(
        r.engine.process(&mut r.guest, batch, 0),
        Err(AggregateError::Guest(Reason::guest_error("boom")))
    );
    r.guest.fail_fold = false;
    assert_eq!(
        r.engine.tick(&mut r.guest, 0),
        Err(AggregateError::Poisoned)
    );
}

#[test]
fn state_size_is_reported() {
    let mut r = Run::new(TUMBLING);
    r.batch(
        0,
        &[
            ("key-1", 10, 0, 1),
            ("key-2", 10, 0, 1),
            ("key-1", 65, 0, 1),
        ],
    );
    let p = r.engine.progress();
    assert_eq!((p.state_rows, p.state_bytes, p.open_windows), (3, 48, 3));
    // A row costs its struct, a share of its key's entry, a timer and a
    // held offset: on the order of 150 to 300 bytes on a 64-bit target.
    assert!(
        (150..300).contains(&p.overhead_bytes_per_row),
        "{}",
        p.overhead_bytes_per_row
    );
}

#[test]
fn an_event_time_beyond_the_horizon_is_dead_lettered_and_moves_nothing() {
    let yaml = "window: { tumbling: 1m }\n\
        watermark: { max_out_of_orderness: 10s, idle_timeout: 30s, max_ahead: 1h }\n";
    let (mut with, mut without) = (Run::new(yaml), Run::new(yaml));
    // Processing time 2026-01-01T00:01:00Z; the horizon is 01:01:00.
    let now = s(60);
    let first = with.batch(now, &[("a", 5, 0, 1), ("a", 3661, 0, 2), ("b", 20, 0, 4)]);
    assert_eq!(
        first.dead,
        [(
            1,
            "event time too far ahead: 2026-01-01T01:01:01.000Z is more than 1h past the \
             processing time"
                .to_owned()
        )]
    );
    let reference = without.batch(now, &[("a", 5, 0, 1), ("b", 20, 0, 4)]);
    assert_eq!(
        (first.results, first.calls),
        (reference.results, reference.calls)
    );
    assert_eq!(with.engine.watermark(), Some(s(10)));
    assert_eq!(with.engine.progress().partitions[0].max_event_time, s(20));

    // Exactly at the horizon is not too far; later records aggregate as if
    // the refused one had never come.
    let later = [("a", 65, 0, 8), ("b", 80 + 3600, 0, 16)];
    let second = with.batch(s(80), &later);
    assert_eq!(second, without.batch(s(80), &later));
    assert!(second.dead.is_empty(), "{:?}", second.dead);
    assert_eq!(with.engine.watermark(), Some(s(3670)));
}

#[test]
fn the_horizon_defaults_to_an_hour() {
    let spec: WindowSpec = serde_yaml_ng::from_str(
        "window: { tumbling: 1m }\nwatermark: { max_out_of_orderness: 10s }\n",
    )
    .unwrap();
    assert_eq!(
        spec.watermark.max_ahead,
        std::time::Duration::from_secs(3600)
    );
}

/// Records of a repartition topic's partition, written by two upstream
/// tasks: each upstream has a watermark of its own, so the records of a
/// slow one are not late for being behind a fast one's. Without
/// upstreams, the same records share one watermark and the slow one's
/// record is late.
#[test]
fn each_upstream_of_a_partition_has_a_watermark_of_its_own() {
    let run = |upstreams: &[u16; 2], later: &[u16; 1]| {
        let mut engine = WindowEngine::new(test_spec(TUMBLING)).unwrap();
        let mut guest = Guest::default();
        let mut expected: Vec<_> = upstreams.iter().map(|&u| (u, 0)).collect();
        expected.dedup();
        engine.expect_partitions(&expected);
        guest.values = vec![1, 1];
        let first = BatchKeys {
            keys: b"ab",
            key_offsets: &[0, 1, 2],
            event_times: &[s(100), s(10)],
            skip: &[],
            sources: &[0, 0],
            partitions: &[0, 0],
            offsets: &[0, 1],
            upstreams,
            marks: &[],
        };
        engine.process(&mut guest, first, 0).unwrap();
        let after_first = engine.watermark();
        guest.values = vec![1];
        let second = BatchKeys {
            keys: b"b",
            key_offsets: &[0, 1],
            event_times: &[s(12)],
            skip: &[],
            sources: &[0],
            partitions: &[0],
            offsets: &[2],
            upstreams: later,
            marks: &[],
        };
        let out = engine.process(&mut guest, second, 0).unwrap();
        (after_first, engine.watermark(), out.late)
    };
    // Upstream 0 is at 100 s, upstream 1 at 10 s then 12 s (bound 10 s).
    assert_eq!(run(&[0, 1], &[1]), (Some(s(0)), Some(s(2)), 0));
    // Both as one: the record at 12 s is behind the watermark of 90 s.
    assert_eq!(run(&[0, 0], &[0]), (Some(s(90)), Some(s(90)), 1));
}

/// Watermark markers of a repartition topic advance event time like
/// records, within the same horizon: one stamped beyond it (a hostile
/// writer, a clock gone wrong) moves nothing.
#[test]
fn marks_advance_the_watermark_within_the_horizon_only() {
    let spec = test_spec(
        "window: { tumbling: 1m }\n\
         watermark: { max_out_of_orderness: 10s, idle_timeout: 30s, max_ahead: 1h }\n",
    );
    let mut engine = WindowEngine::new(spec).unwrap();
    let mut guest = Guest::default();
    let now = s(100);
    let far = [((0, 0), now + 2 * 3_600_000)];
    let marks = BatchKeys {
        marks: &far,
        ..BatchKeys::EMPTY
    };
    engine.process(&mut guest, marks, now).unwrap();
    assert_eq!(engine.watermark(), None);
    let near = [((0, 0), s(100)), ((1, 0), s(50))];
    let marks = BatchKeys {
        marks: &near,
        ..BatchKeys::EMPTY
    };
    engine.process(&mut guest, marks, now).unwrap();
    assert_eq!(engine.watermark(), Some(s(40)), "the slower upstream's");
}
