//! The transform chain: runs a source batch through every step and routes
//! what comes out. Every source record ends up accounted for: in an output,
//! in the dead-letter list, or counted as dropped on purpose.

use std::collections::HashMap;

use crate::batch::{Batch, Columns};
use crate::runtime::{InstantiateError, Transform};

/// Records bound for one configured output, with the source record each
/// came from.
#[derive(Debug, Default)]
pub struct Routed {
    pub records: Columns,
    /// Index into the source batch, per record.
    pub origins: Vec<u32>,
}

/// A source record sent to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Index into the source batch.
    pub origin: u32,
    /// Index of the step that rejected it.
    pub step: usize,
    pub reason: String,
}

/// Everything one source batch turned into.
#[derive(Debug, Default)]
pub struct ChainOutput {
    /// One entry per configured output, in the spec's order.
    pub outputs: Vec<Routed>,
    pub dead_letters: Vec<DeadLetter>,
    /// Source records that a step dropped on purpose (no output, no dead
    /// letter).
    pub dropped: u64,
}

/// The steps of a pipeline and how named outputs map to configured ones.
pub struct Chain {
    steps: Vec<Transform>,
    /// Output name -> index in the spec's `outputs`.
    outputs: HashMap<String, usize>,
    default_output: usize,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("steps", &self.steps.len())
            .finish_non_exhaustive()
    }
}

impl Chain {
    /// `outputs` lists the configured output names in spec order and must
    /// include `default_name`.
    pub fn new(steps: Vec<Transform>, outputs: &[String], default_name: &str) -> Self {
        let outputs: HashMap<String, usize> = outputs
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let default_output = outputs[default_name];
        Self {
            steps,
            outputs,
            default_output,
        }
    }

    pub fn steps(&self) -> &[Transform] {
        &self.steps
    }

    /// Runs `source` through every step.
    pub fn run(&mut self, source: &mut Batch) -> Result<ChainOutput, InstantiateError> {
        let mut out = ChainOutput {
            outputs: (0..self.outputs.len()).map(|_| Routed::default()).collect(),
            ..ChainOutput::default()
        };
        let mut origins: Vec<u32> = (0..source.len() as u32).collect();
        // The input of the current step; the source batch itself for step 0.
        let mut owned: Option<Batch> = None;
        for step in 0..self.steps.len() {
            let input = match &mut owned {
                Some(batch) => batch,
                None => &mut *source,
            };
            let last_step = step + 1 == self.steps.len();
            if input.is_empty() {
                return Ok(out);
            }
            let result = self.steps[step].process(input)?;
            let mut next = Batch::with_capacity(result.records.len(), result.records.values.len());
            let mut next_origins = Vec::with_capacity(result.records.len());
            let mut accounted = vec![false; input.len()];
            for (i, reason) in result.dead_letters {
                accounted[i as usize] = true;
                out.dead_letters.push(DeadLetter {
                    origin: origins[i as usize],
                    step,
                    reason,
                });
            }
            let named: Vec<Option<usize>> = result
                .output_names
                .iter()
                .map(|n| self.outputs.get(n).copied())
                .collect();
            for (j, record) in result.records.iter().enumerate() {
                let i = result.inputs[j] as usize;
                accounted[i] = true;
                let fallback = input.records.get(i).timestamp;
                match result.targets[j] {
                    0 if last_step => {
                        let default = &mut out.outputs[self.default_output];
                        default.records.push_ref(record, fallback);
                        default.origins.push(origins[i]);
                    }
                    0 => {
                        next.records.push_ref(record, fallback);
                        next.partitions.push(input.partitions[i]);
                        next.offsets.push(input.offsets[i]);
                        next.sources.push(input.sources[i]);
                        next_origins.push(origins[i]);
                    }
                    k => match named[k as usize - 1] {
                        Some(o) => {
                            out.outputs[o].records.push_ref(record, fallback);
                            out.outputs[o].origins.push(origins[i]);
                        }
                        None => out.dead_letters.push(DeadLetter {
                            origin: origins[i],
                            step,
                            reason: format!(
                                "unknown output `{}`",
                                result.output_names[k as usize - 1]
                            ),
                        }),
                    },
                }
            }
            out.dropped += accounted.iter().filter(|a| !**a).count() as u64;
            owned = Some(next);
            origins = next_origins;
        }
        if self.steps.is_empty() {
            let default = &mut out.outputs[self.default_output];
            for (i, record) in source.records.iter().enumerate() {
                default.records.push_ref(record, None);
                default.origins.push(i as u32);
            }
        }
        out.dead_letters.sort_by_key(|d| d.origin);
        Ok(out)
    }
}
