//! Epochs: what one batch consisted of, written to the epoch log before any
//! of its outputs is produced, so that after a crash the batch can be run
//! again exactly as it ran.
//!
//! A batch is fully determined by the records it held, in their order, and
//! the processing time it ran at (the window engine's idle-partition logic
//! reads it). Records of one partition arrive in offset order, so a batch is
//! described by one offset range per partition plus the interleaving of the
//! partitions as runs (`(range, count)`): the client delivers a partition's
//! records in long runs, so the descriptor stays small whatever the batch
//! size.
//!
//! A descriptor also names the source topics its ranges index (so a replay
//! reads the same topics when the spec's list has changed since) and each
//! step's module digest (a replay with another module would not produce the
//! same records; a hot swap can change a step between two checkpoints).
//!
//! # Format
//!
//! Version 2: the bytes `0x7f 0x02`, then the postcard encoding of
//! [`Epoch`]. Version 1 (no marker) was the postcard encoding of
//! `now_ms, ranges, runs` only; it still decodes, as [`Epoch::legacy`]. A
//! version 1 entry begins with `now_ms` as a zigzag varint, whose first
//! byte is `0x7f` only for `now_ms == -64`: never a real processing time.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::batch::{Batch, Layout};

/// First bytes of a version 2 descriptor.
const MARKER: [u8; 2] = [0x7f, 2];

/// The module a step ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDigest {
    pub step: String,
    pub sha256: [u8; 32],
}

impl StepDigest {
    /// From a step name and a hex sha256 (a malformed one reads as zeros,
    /// which matches no module).
    pub fn new(step: &str, sha256_hex: &str) -> Self {
        let mut sha256 = [0; 32];
        let _ = hex::decode_to_slice(sha256_hex, &mut sha256);
        Self {
            step: step.to_owned(),
            sha256,
        }
    }
}

/// Why a logged epoch cannot be re-executed by this run.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EpochError {
    #[error(
        "epoch {epoch} read source topic `{topic}`, which the spec no longer lists in source.topics; \
         restore it to re-execute the epoch, or remove the checkpoint directory to start over"
    )]
    TopicGone { epoch: u64, topic: String },
    #[error(
        "epoch {epoch} ran step `{step}` with module sha256 {logged}, but this run has {now}; \
         re-executing it with another module would not produce the same records. Run the module \
         it ran with until a checkpoint is taken, or remove the checkpoint directory to start over"
    )]
    ModuleChanged {
        epoch: u64,
        step: String,
        logged: String,
        now: String,
    },
    #[error(
        "epoch {epoch} was logged by an older Sluice (epoch log format 1), whose record ids this \
         version cannot match; finish it with that version (a clean stop takes a checkpoint), or \
         remove the checkpoint directory to start over"
    )]
    Legacy { epoch: u64 },
}

/// What each step of a run runs now, by step name, for comparisons.
pub fn digests_by_step(modules: &[StepDigest]) -> HashMap<&str, &[u8; 32]> {
    modules
        .iter()
        .map(|m| (m.step.as_str(), &m.sha256))
        .collect()
}

/// The descriptor of one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    /// Processing time the batch ran at (ms since the Unix epoch).
    pub now_ms: i64,
    /// Which records the batch held, in which order. (Encoded as its two
    /// fields, `ranges` then `runs`, in place.) Each range's `source` is
    /// an index into [`Epoch::topics`] (and, once resolved, into the spec's
    /// source topics).
    pub layout: Layout,
    /// The source topics, in the order of the spec the batch ran with.
    pub topics: Vec<String>,
    /// Each step's module, in order.
    pub modules: Vec<StepDigest>,
    /// Decoded from a version 1 entry (no topics, no modules).
    #[serde(skip)]
    pub legacy: bool,
}

#[derive(Deserialize)]
struct EpochV1 {
    now_ms: i64,
    layout: Layout,
}

impl Epoch {
    /// Describes `batch`, read from `topics` and run at `now_ms` by
    /// `modules`.
    pub fn of(batch: &Batch, now_ms: i64, topics: &[String], modules: Vec<StepDigest>) -> Self {
        Self {
            now_ms,
            layout: Layout::of(batch),
            topics: topics.to_vec(),
            modules,
            legacy: false,
        }
    }

    /// Makes epoch `n` runnable by a run reading `topics` with `modules`:
    /// maps its ranges to indices into `topics`. Refused if it read a topic
    /// no longer listed, ran another module in a step, or is legacy.
    pub fn resolve(
        &mut self,
        n: u64,
        topics: &[String],
        modules: &[StepDigest],
    ) -> Result<(), EpochError> {
        if self.legacy {
            return Err(EpochError::Legacy { epoch: n });
        }
        let now = digests_by_step(modules);
        for logged in &self.modules {
            let current = now.get(logged.step.as_str());
            if current != Some(&&logged.sha256) {
                return Err(EpochError::ModuleChanged {
                    epoch: n,
                    step: logged.step.clone(),
                    logged: hex::encode(logged.sha256),
                    now: current.map_or("no such step".to_owned(), hex::encode),
                });
            }
        }
        if let Some(added) = modules
            .iter()
            .find(|m| !self.modules.iter().any(|l| l.step == m.step))
        {
            return Err(EpochError::ModuleChanged {
                epoch: n,
                step: added.step.clone(),
                logged: "no such step".to_owned(),
                now: hex::encode(added.sha256),
            });
        }
        let mut map = Vec::with_capacity(self.topics.len());
        for topic in &self.topics {
            let index =
                topics
                    .iter()
                    .position(|t| t == topic)
                    .ok_or_else(|| EpochError::TopicGone {
                        epoch: n,
                        topic: topic.clone(),
                    })?;
            map.push(index as u16);
        }
        for range in &mut self.layout.ranges {
            // A descriptor always names the topics of its ranges.
            range.source = map[range.source as usize];
        }
        self.topics = topics.to_vec();
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_extend(self, MARKER.to_vec()).expect("an epoch descriptor always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        let epoch: Self = match bytes.strip_prefix(&MARKER) {
            Some(body) => postcard::from_bytes(body)?,
            None => {
                let v1: EpochV1 = postcard::from_bytes(bytes)?;
                Self {
                    now_ms: v1.now_ms,
                    layout: v1.layout,
                    topics: Vec::new(),
                    modules: Vec::new(),
                    legacy: true,
                }
            }
        };
        // Every range must name one of the descriptor's topics.
        if !epoch.legacy
            && epoch
                .layout
                .ranges
                .iter()
                .any(|r| r.source as usize >= epoch.topics.len())
        {
            return Err(postcard::Error::DeserializeBadEncoding);
        }
        Ok(epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Range;

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

    fn topics(names: &[&str]) -> Vec<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    fn modules(steps: &[(&str, u8)]) -> Vec<StepDigest> {
        steps
            .iter()
            .map(|&(step, d)| StepDigest {
                step: step.to_owned(),
                sha256: [d; 32],
            })
            .collect()
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
        let e = Epoch::of(&b, 42, &topics(&["a", "b"]), modules(&[("m", 1)]));
        assert_eq!(
            e.layout.ranges,
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
        assert_eq!(e.layout.runs, vec![(0, 2), (1, 1), (2, 1), (0, 1), (1, 1)]);
        assert_eq!(
            (
                e.layout.len(),
                e.layout.count(0),
                e.layout.count(1),
                e.layout.count(2)
            ),
            (6, 3, 2, 1)
        );
        assert_eq!(Epoch::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn an_empty_batch_has_no_ranges() {
        let e = Epoch::of(&batch(&[]), 1, &topics(&["a"]), Vec::new());
        assert!(e.layout.is_empty() && e.layout.ranges.is_empty());
    }

    #[test]
    fn ranges_follow_their_topic_when_the_topic_list_changes() {
        let b = batch(&[(0, 0, 5), (1, 3, 9), (0, 0, 6)]);
        let mut e =
            Epoch::decode(&Epoch::of(&b, 7, &topics(&["a", "b"]), modules(&[("m", 1)])).encode())
                .unwrap();
        e.resolve(3, &topics(&["c", "b", "a"]), &modules(&[("m", 1)]))
            .unwrap();
        let sources: Vec<(u16, i32)> = e
            .layout
            .ranges
            .iter()
            .map(|r| (r.source, r.partition))
            .collect();
        assert_eq!(sources, vec![(2, 0), (1, 3)]);
        let mut e = Epoch::of(&b, 7, &topics(&["a", "b"]), Vec::new());
        assert_eq!(
            e.resolve(3, &topics(&["a"]), &[]).unwrap_err(),
            EpochError::TopicGone {
                epoch: 3,
                topic: "b".to_owned()
            }
        );
    }

    #[test]
    fn an_epoch_run_with_another_module_is_refused() {
        let b = batch(&[(0, 0, 5)]);
        let mut e = Epoch::of(&b, 7, &topics(&["a"]), modules(&[("parse", 1), ("agg", 2)]));
        let same = modules(&[("parse", 1), ("agg", 2)]);
        e.clone().resolve(4, &topics(&["a"]), &same).unwrap();
        let error = e
            .clone()
            .resolve(4, &topics(&["a"]), &modules(&[("parse", 1), ("agg", 3)]))
            .unwrap_err();
        assert_eq!(
            error,
            EpochError::ModuleChanged {
                epoch: 4,
                step: "agg".to_owned(),
                logged: "02".repeat(32),
                now: "03".repeat(32),
            }
        );
        assert!(
            error.to_string().starts_with(&format!(
                "epoch 4 ran step `agg` with module sha256 {}, but this run has {}",
                "02".repeat(32),
                "03".repeat(32)
            )),
            "{error}"
        );
        let error = e
            .resolve(
                4,
                &topics(&["a"]),
                &modules(&[("parse", 1), ("agg", 2), ("x", 9)]),
            )
            .unwrap_err();
        assert!(
            matches!(&error, EpochError::ModuleChanged { step, .. } if step == "x"),
            "{error:?}"
        );
    }

    #[test]
    fn a_version_1_entry_decodes_as_legacy_and_is_refused() {
        #[derive(Serialize)]
        struct V1 {
            now_ms: i64,
            ranges: Vec<Range>,
            runs: Vec<(u32, u32)>,
        }
        let old = postcard::to_allocvec(&V1 {
            now_ms: 1_764_000_000_000,
            ranges: vec![Range {
                source: 0,
                partition: 2,
                from: 10,
                to: 12,
            }],
            runs: vec![(0, 2)],
        })
        .unwrap();
        let mut e = Epoch::decode(&old).unwrap();
        assert!(e.legacy && e.topics.is_empty() && e.layout.len() == 2);
        assert_eq!(
            e.resolve(9, &topics(&["a"]), &[]).unwrap_err(),
            EpochError::Legacy { epoch: 9 }
        );
    }
}
