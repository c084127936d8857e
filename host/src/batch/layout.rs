//! Which source records a batch held, and in which order: one offset range
//! per partition plus the interleaving of the partitions as runs. Records
//! of one partition arrive in offset order and the client delivers a
//! partition's records in long runs, so a layout stays small whatever the
//! batch size. The epoch log records it (`checkpoint::Epoch`); a replay
//! reads the batch back from it (`source::ReplaySource`).

use serde::{Deserialize, Serialize};

use super::Batch;

/// One partition's records in a batch: offsets `from .. to` (exclusive),
/// as far as the log still has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// Index into the source topics the layout was made with.
    pub source: u16,
    pub partition: i32,
    /// Offset of the partition's first record in the batch.
    pub from: i64,
    /// Offset after its last record.
    pub to: i64,
}

/// The records of a batch: see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// One per partition, in order of first appearance in the batch.
    pub ranges: Vec<Range>,
    /// The batch's records in order: `count` records of `ranges[range]`,
    /// then the next run.
    pub runs: Vec<(u32, u32)>,
}

impl Layout {
    /// The layout of `batch`.
    pub fn of(batch: &Batch) -> Self {
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
        Self { ranges, runs }
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
}
