//! Watermarks: per source partition, and the pipeline's (the minimum over
//! partitions that are not idle, never going backwards).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::PartitionId;

/// Event-time progress of one source partition, for progress reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionProgress {
    pub source: u16,
    pub partition: i32,
    /// Smallest and largest event time seen, ms since the epoch.
    pub min_event_time: i64,
    pub max_event_time: i64,
    /// `max_event_time - max_out_of_orderness`.
    pub watermark: i64,
    /// Processing time of the last record, as passed by the caller.
    pub last_record_ms: i64,
    /// Idle as of the last `process` or `tick`: not holding the watermark.
    pub idle: bool,
}

/// Event times of one partition: smallest, largest, and the processing
/// time of its last record.
#[derive(Debug, Clone, Copy)]
pub(super) struct PartitionTime {
    pub min: i64,
    pub max: i64,
    pub last_seen: i64,
}

#[derive(Debug)]
pub(super) struct Watermarks {
    bound: i64,
    idle_timeout: i64,
    partitions: HashMap<PartitionId, PartitionTime>,
    /// Partitions the source is assigned but that have not had a record
    /// yet, with the processing time from which they count as silent
    /// (`None` until the next `advance`). Until such a partition has data
    /// or has been silent for the idle timeout, the watermark holds: its
    /// first records may be far behind the other partitions'.
    expected: BTreeMap<PartitionId, Option<i64>>,
    current: Option<i64>,
    /// `now_ms` of the last `advance`.
    last_now: i64,
}

impl Watermarks {
    pub(super) fn new(bound: i64, idle_timeout: i64) -> Self {
        Self {
            bound,
            idle_timeout,
            partitions: HashMap::new(),
            expected: BTreeMap::new(),
            current: None,
            last_now: i64::MIN,
        }
    }

    /// Watermarks as [`Self::parts`] left them, under a possibly different
    /// bound and idle timeout (snapshot restore).
    pub(super) fn from_parts(
        bound: i64,
        idle_timeout: i64,
        partitions: impl IntoIterator<Item = (PartitionId, PartitionTime)>,
        expected: impl IntoIterator<Item = (PartitionId, Option<i64>)>,
        current: Option<i64>,
        last_now: i64,
    ) -> Self {
        Self {
            partitions: partitions.into_iter().collect(),
            expected: expected.into_iter().collect(),
            current,
            last_now,
            ..Self::new(bound, idle_timeout)
        }
    }

    /// What is not in the spec: the partitions (sorted), the pipeline
    /// watermark and the `now_ms` of the last `advance` (snapshots).
    pub(super) fn parts(&self) -> (Vec<(PartitionId, PartitionTime)>, Option<i64>, i64) {
        let mut partitions: Vec<_> = self.partitions.iter().map(|(&p, &t)| (p, t)).collect();
        partitions.sort_unstable_by_key(|e| e.0);
        (partitions, self.current, self.last_now)
    }

    /// The expected partitions without data yet, sorted (snapshots).
    pub(super) fn expected(&self) -> Vec<(PartitionId, Option<i64>)> {
        self.expected.iter().map(|(&p, &t)| (p, t)).collect()
    }

    /// Declares the partitions the source reads: those without a record
    /// yet hold the watermark until they have one or go idle.
    pub(super) fn expect(&mut self, partitions: &[PartitionId]) {
        for p in partitions {
            if !self.partitions.contains_key(p) {
                self.expected.entry(*p).or_insert(None);
            }
        }
    }

    /// The pipeline watermark, `None` before the first record.
    pub(super) fn current(&self) -> Option<i64> {
        self.current
    }

    /// Notes event times of one partition's records (`min..=max`) at `now`.
    pub(super) fn observe(&mut self, partition: PartitionId, min: i64, max: i64, now: i64) {
        if !self.expected.is_empty() {
            self.expected.remove(&partition);
        }
        let p = self.partitions.entry(partition).or_insert(PartitionTime {
            min,
            max,
            last_seen: now,
        });
        p.min = p.min.min(min);
        p.max = p.max.max(max);
        p.last_seen = p.last_seen.max(now);
    }

    /// Notes the event times of a batch: first per partition in a short
    /// list (a batch holds records of a few partitions, grouped or
    /// interleaved), then once per partition in the map. Beyond
    /// `LISTED` partitions, records go to the map one by one.
    pub(super) fn observe_batch(
        &mut self,
        partitions: impl Iterator<Item = (PartitionId, i64)>,
        now: i64,
    ) {
        const LISTED: usize = 16;
        let mut seen: Vec<(PartitionId, i64, i64)> = Vec::new();
        let mut last = 0;
        for (p, t) in partitions {
            let i = if seen.get(last).is_some_and(|s| s.0 == p) {
                Some(last)
            } else {
                seen.iter().position(|s| s.0 == p)
            };
            match i {
                Some(i) => {
                    let s = &mut seen[i];
                    s.1 = s.1.min(t);
                    s.2 = s.2.max(t);
                    last = i;
                }
                None if seen.len() < LISTED => {
                    last = seen.len();
                    seen.push((p, t, t));
                }
                None => self.observe(p, t, t, now),
            }
        }
        for (p, min, max) in seen {
            self.observe(p, min, max, now);
        }
    }

    fn is_idle(&self, p: &PartitionTime, now: i64) -> bool {
        now.saturating_sub(p.last_seen) >= self.idle_timeout
    }

    /// Recomputes the pipeline watermark at processing time `now`.
    pub(super) fn advance(&mut self, now: i64) -> Option<i64> {
        self.last_now = now;
        let mut waiting = false;
        for since in self.expected.values_mut() {
            let since = *since.get_or_insert(now);
            waiting |= now.saturating_sub(since) < self.idle_timeout;
        }
        if waiting {
            return self.current;
        }
        let active = self
            .partitions
            .values()
            .filter(|p| !self.is_idle(p, now))
            .map(|p| p.max.saturating_sub(self.bound))
            .min();
        if let Some(w) = active {
            self.current = Some(self.current.map_or(w, |c| c.max(w)));
        }
        self.current
    }

    /// Per-partition progress, ordered by (source, partition).
    pub(super) fn progress(&self) -> Vec<PartitionProgress> {
        let mut out: Vec<PartitionProgress> = self
            .partitions
            .iter()
            .map(|(&(source, partition), p)| PartitionProgress {
                source,
                partition,
                min_event_time: p.min,
                max_event_time: p.max,
                watermark: p.max.saturating_sub(self.bound),
                last_record_ms: p.last_seen,
                idle: self.is_idle(p, self.last_now),
            })
            .collect();
        out.sort_unstable_by_key(|p| (p.source, p.partition));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_active_partitions_and_never_backwards() {
        let mut w = Watermarks::new(10, 30);
        assert_eq!(w.advance(0), None);
        w.observe_batch([((0, 0), 100), ((0, 0), 90), ((0, 1), 50)].into_iter(), 0);
        assert_eq!(w.advance(0), Some(40));
        w.observe_batch([((0, 0), 100)].into_iter(), 20);
        // Partition 1 is idle from now = 30 on: partition 0 alone decides.
        assert_eq!(w.advance(29), Some(40));
        assert_eq!(w.advance(30), Some(90));
        // Partition 1 wakes up far behind: the watermark does not go back.
        w.observe_batch([((0, 1), 60)].into_iter(), 31);
        assert_eq!(w.advance(31), Some(90));
        // Everything idle: it stays.
        assert_eq!(w.advance(1000), Some(90));
        let p = w.progress();
        assert_eq!(
            p,
            vec![
                PartitionProgress {
                    source: 0,
                    partition: 0,
                    min_event_time: 90,
                    max_event_time: 100,
                    watermark: 90,
                    last_record_ms: 20,
                    idle: true,
                },
                PartitionProgress {
                    source: 0,
                    partition: 1,
                    min_event_time: 50,
                    max_event_time: 60,
                    watermark: 50,
                    last_record_ms: 31,
                    idle: true,
                },
            ]
        );
    }

    #[test]
    fn an_expected_partition_holds_the_watermark_until_data_or_idle() {
        let mut w = Watermarks::new(10, 30);
        w.expect(&[(0, 0), (0, 1), (0, 2)]);
        w.observe_batch([((0, 0), 100)].into_iter(), 5);
        // Partitions 1 and 2 have had nothing yet: no watermark.
        assert_eq!(w.advance(5), None);
        w.observe_batch([((0, 1), 80)].into_iter(), 20);
        assert_eq!(w.advance(20), None);
        assert_eq!(w.expected(), vec![((0, 2), Some(5))]);
        // Partition 2 has been silent for the idle timeout since it was
        // first waited for (at 5): it stops holding.
        assert_eq!(w.advance(35), Some(70));
        // Declaring known partitions again changes nothing.
        w.expect(&[(0, 0), (0, 1)]);
        assert_eq!(w.expected(), vec![((0, 2), Some(5))]);
        w.observe_batch([((0, 2), 200)].into_iter(), 36);
        assert!(w.expected().is_empty());
    }

    #[test]
    fn interleaved_and_many_partitions() {
        let mut w = Watermarks::new(0, 100);
        let records = (0..100).map(|i| ((0, i % 40), 1000 + i as i64));
        w.observe_batch(records, 0);
        let p = w.progress();
        assert_eq!(p.len(), 40);
        assert!(
            p.iter()
                .all(|p| p.min_event_time == 1000 + p.partition as i64)
        );
        let spread = |partition: i32| if partition < 20 { 80 } else { 40 };
        assert!(
            p.iter()
                .all(|p| p.max_event_time == p.min_event_time + spread(p.partition))
        );
        assert_eq!(w.advance(0), Some(1060));
    }

    #[test]
    fn sources_are_distinct_partitions() {
        let mut w = Watermarks::new(0, 100);
        w.observe_batch([((0, 0), 100), ((1, 0), 20), ((0, 0), 120)].into_iter(), 0);
        assert_eq!(w.advance(0), Some(20));
        assert_eq!(w.progress().len(), 2);
    }
}
