//! Epochs: what one batch consisted of, written to the epoch log before any
//! of its outputs is produced, so that after a crash the batch can be run
//! again exactly as it ran.
//!
//! A batch is fully determined by the records it held, in their order, and
//! the processing time it ran at (the window engine's idle-partition logic
//! reads it). Records of one partition arrive in offset order, so a batch is
//! described by one offset range per partition plus the interleaving of the
//! partitions as runs (`(range, count)`): the client delivers a partition's
//! records in long runs, so the descriptor stays a few dozen bytes whatever
//! the batch size.

use serde::{Deserialize, Serialize};

use crate::batch::Batch;

/// One partition's records in a batch: offsets `from .. to` (exclusive),
/// as far as the log still has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// Index into the pipeline's source topics.
    pub source: u16,
    pub partition: i32,
    /// Offset of the partition's first record in the batch.
    pub from: i64,
    /// Offset after its last record.
    pub to: i64,
}

/// The descriptor of one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    /// Processing time the batch ran at (ms since the Unix epoch).
    pub now_ms: i64,
    /// One per partition, in order of first appearance in the batch.
    pub ranges: Vec<Range>,
    /// The batch's records in order: `count` records of `ranges[range]`,
    /// then the next run.
    pub runs: Vec<(u32, u32)>,
}

impl Epoch {
    /// Describes `batch`, run at `now_ms`.
    pub fn of(batch: &Batch, now_ms: i64) -> Self {
        let mut ranges: Vec<Range> = Vec::new();
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for i in 0..batch.len() {
            let (source, partition, offset) =
                (batch.sources[i], batch.partitions[i], batch.offsets[i]);
            // The current run's partition is by far the likeliest.
            let current = runs.last().map(|&(r, _)| r as usize);
            let r = match current
                .filter(|&r| ranges[r].source == source && ranges[r].partition == partition)
            {
                Some(r) => r,
                None => match ranges
                    .iter()
                    .position(|g| g.source == source && g.partition == partition)
                {
                    Some(r) => r,
                    None => {
                        ranges.push(Range {
                            source,
                            partition,
                            from: offset,
                            to: offset + 1,
                        });
                        ranges.len() - 1
                    }
                },
            };
            ranges[r].to = ranges[r].to.max(offset + 1);
            match runs.last_mut() {
                Some((last, count)) if *last as usize == r => *count += 1,
                _ => runs.push((r as u32, 1)),
            }
        }
        Self {
            now_ms,
            ranges,
            runs,
        }
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.runs.iter().map(|&(_, n)| n as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// How many records of `ranges[range]` the batch held.
    pub fn count(&self, range: usize) -> usize {
        self.runs
            .iter()
            .filter(|&&(r, _)| r as usize == range)
            .map(|&(_, n)| n as usize)
            .sum()
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("an epoch descriptor always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(records: &[(u16, i32, i64)]) -> Batch {
        let mut b = Batch::with_capacity(records.len(), 0);
        for &(s, p, o) in records {
            b.records.push(None, Some(b"v"), None, []);
            b.sources.push(s);
            b.partitions.push(p);
            b.offsets.push(o);
        }
        b
    }

    #[test]
    fn ranges_and_runs_describe_the_interleaving() {
        let b = batch(&[
            (0, 1, 10),
            (0, 1, 11),
            (0, 0, 5),
            (1, 0, 7),
            (0, 1, 13),
            (0, 0, 6),
        ]);
        let e = Epoch::of(&b, 42);
        assert_eq!(
            e.ranges,
            vec![
                Range {
                    source: 0,
                    partition: 1,
                    from: 10,
                    to: 14
                },
                Range {
                    source: 0,
                    partition: 0,
                    from: 5,
                    to: 7
                },
                Range {
                    source: 1,
                    partition: 0,
                    from: 7,
                    to: 8
                },
            ]
        );
        assert_eq!(e.runs, vec![(0, 2), (1, 1), (2, 1), (0, 1), (1, 1)]);
        assert_eq!((e.len(), e.count(0), e.count(1), e.count(2)), (6, 3, 2, 1));
        assert_eq!(Epoch::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn an_empty_batch_has_no_ranges() {
        let e = Epoch::of(&batch(&[]), 1);
        assert!(e.is_empty() && e.ranges.is_empty());
    }
}
