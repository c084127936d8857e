//! The transform chain: runs a source batch through every step and routes
//! what comes out. Every source record ends up accounted for: in an output,
//! in the dead-letter list, or counted as dropped on purpose.

use std::collections::HashMap;

use super::aggregate::{AggregateStep, StepError, WindowDeadLetter};
use super::join::JoinStep;
use crate::batch::reason::Kind;
use crate::batch::{Batch, Columns, Reason};
use crate::runtime::{Aggregator, Transform};

/// The origin of a record that comes from no single source record: a
/// window result.
pub const NO_ORIGIN: u32 = u32::MAX;

/// One step of a chain.
#[derive(Debug)]
pub enum Step {
    Transform(Transform),
    /// Only ever the last step. Boxed: its window state is large.
    Aggregate(Box<AggregateStep>),
    /// Only ever the last step, of a stage that feeds a repartition topic
    /// (see `spec::Stages`): the aggregate guest's `extract` keys each
    /// record by its aggregate key, and nothing else changes.
    Rekey(Box<Rekey>),
    /// Only ever the first step: a stream-stream join of the source's two
    /// sides. Boxed: it holds both sides' buffers.
    Join(Box<JoinStep>),
}

/// The aggregate's guest, keying records for a repartition topic.
#[derive(Debug)]
pub struct Rekey {
    pub aggregator: Aggregator,
    /// The aggregate's horizon (`watermark.max_ahead`), ms: a record
    /// stamped further past the processing time will be dead-lettered by
    /// the aggregating task and must not advance its watermark.
    pub max_ahead: i64,
}

/// Records bound for one configured output, with the source record each
/// came from.
#[derive(Debug, Default)]
pub struct Routed {
    pub records: Columns,
    /// Index into the source batch, per record ([`NO_ORIGIN`] for window
    /// results).
    pub origins: Vec<u32>,
    /// The window of each window result: `(index in records, window)`, in
    /// record order. Delivery turns it into the `sluice.window.*` headers;
    /// a Parquet output partitions by its start.
    pub windows: Vec<(u32, ResultWindow)>,
}

/// The window a result was computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultWindow {
    /// `[start, end)`, in ms since the Unix epoch.
    pub start: i64,
    pub end: i64,
    /// The window's final result (else an `update`-mode intermediate one).
    pub is_final: bool,
}

impl Routed {
    /// The window of each record (`None` for records that are not window
    /// results), in record order.
    pub fn record_windows(&self) -> impl Iterator<Item = Option<ResultWindow>> + '_ {
        let mut windows = self.windows.iter().peekable();
        (0..self.records.len() as u32).map(move |j| {
            windows
                .next_if(|(index, _)| *index == j)
                .map(|(_, window)| *window)
        })
    }
}

/// A source record sent to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Index into the source batch.
    pub origin: u32,
    /// Index of the step that rejected it.
    pub step: usize,
    pub reason: Reason,
}

/// Everything one source batch turned into.
#[derive(Debug, Default)]
pub struct ChainOutput {
    /// One entry per configured output, in the spec's order.
    pub outputs: Vec<Routed>,
    pub dead_letters: Vec<DeadLetter>,
    /// Windows an aggregate step could not finish, with the step's index.
    pub window_dead_letters: Vec<(usize, WindowDeadLetter)>,
    /// Dead letters that are no source record of the batch: records a
    /// join made (refused by a later step) and the records of pairs the
    /// join's guest refused. One reason (with its step) per record.
    pub held_dead: Columns,
    pub held_reasons: Vec<(usize, Reason)>,
    /// Source records that a step dropped on purpose (no output, no dead
    /// letter).
    pub dropped: u64,
    /// A stage that feeds a repartition topic: per source partition, the
    /// largest event time of its records keyed in this batch (within the
    /// horizon). Delivery sends it to every partition of the topic as a
    /// watermark marker, so that the aggregating tasks' watermarks are those
    /// of a whole pipeline (see `spec::Stages`).
    pub exchange_times: Vec<(i32, i64)>,
    /// Reading a repartition topic: the watermark markers among the source
    /// records (not records of the pipeline: not counted in).
    pub marks: u64,
}

/// The steps of a pipeline and how named outputs map to configured ones.
pub struct Chain {
    steps: Vec<Step>,
    /// A task's chain with an aggregate: records keep their source key up
    /// to the aggregate, whose key must be it (see [`Chain::keep_keys`]).
    keep_keys: bool,
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
    pub fn new(steps: Vec<Step>, outputs: &[String], default_name: &str) -> Self {
        let outputs: HashMap<String, usize> = outputs
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let default_output = outputs[default_name];
        Self {
            steps,
            keep_keys: false,
            outputs,
            default_output,
        }
    }

    /// For a task (one partition's records): if the chain aggregates, the
    /// steps before it must keep each record's Kafka key and the aggregate
    /// must group by it, or the batch fails with
    /// [`StepError::NotPartitionKey`]; a key is then never aggregated in
    /// two tasks.
    pub fn keep_keys(&mut self) {
        if let Some(aggregate) = self.aggregate_mut() {
            aggregate.require_partition_keys();
            self.keep_keys = true;
        }
        if let Some(Step::Join(join)) = self.steps.first_mut() {
            join.require_partition_keys();
        }
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn steps_mut(&mut self) -> &mut [Step] {
        &mut self.steps
    }

    /// The aggregate step, if the chain ends with one.
    pub fn aggregate(&self) -> Option<&AggregateStep> {
        match self.steps.last() {
            Some(Step::Aggregate(a)) => Some(a),
            _ => None,
        }
    }

    pub fn aggregate_mut(&mut self) -> Option<&mut AggregateStep> {
        match self.steps.last_mut() {
            Some(Step::Aggregate(a)) => Some(a),
            _ => None,
        }
    }

    /// Runs `source` through every step; `now_ms` is the processing time.
    pub fn run(&mut self, source: &mut Batch, now_ms: i64) -> Result<ChainOutput, StepError> {
        let mut out = ChainOutput {
            outputs: (0..self.outputs.len()).map(|_| Routed::default()).collect(),
            ..ChainOutput::default()
        };
        let mut origins: Vec<u32> = (0..source.len() as u32).collect();
        // The input of the current step; the source batch itself for step 0.
        let mut owned: Option<Batch> = None;
        // Records a guest must not see are dead letters of the first step,
        // and the batch is copied only when there is one (names are nearly
        // always ASCII).
        if !self.steps.is_empty() && !source.records.header_names.is_ascii() {
            let (good, bad): (Vec<u32>, Vec<u32>) = origins
                .iter()
                .partition(|&&i| source.records.header_names_are_utf8(i as usize));
            if !bad.is_empty() {
                out.dead_letters
                    .extend(bad.into_iter().map(|origin| DeadLetter {
                        origin,
                        step: 0,
                        reason: Reason::new(Kind::HeaderNotUtf8, Kind::HeaderNotUtf8.label()),
                    }));
                owned = Some(source.select(&good));
                origins = good;
            }
        }
        for step in 0..self.steps.len() {
            let input = match &mut owned {
                Some(batch) => batch,
                None => &mut *source,
            };
            let last_step = step + 1 == self.steps.len();
            let transform = match &mut self.steps[step] {
                // Without records, an aggregate still sees time pass.
                Step::Aggregate(a) if input.is_empty() => {
                    let result = a.tick(now_ms)?;
                    self.route_windows(result, &origins, step, &mut out);
                    break;
                }
                Step::Aggregate(a) => {
                    let result = a.process(input, now_ms)?;
                    self.route_windows(result, &origins, step, &mut out);
                    break;
                }
                _ if input.is_empty() => return Ok(out),
                Step::Join(j) => {
                    let result = j.process(input)?;
                    for (i, reason) in result.dead_letters {
                        out.dead_letters.push(DeadLetter {
                            origin: origins[i as usize],
                            step,
                            reason,
                        });
                    }
                    for record in result.held_dead.iter() {
                        out.held_dead.push_ref(record, None);
                    }
                    out.held_reasons
                        .extend(result.held_reasons.into_iter().map(|r| (step, r)));
                    let named = self.configured(&result.output.output_names);
                    let mut next = Batch::default();
                    for (j, record) in result.output.records.iter().enumerate() {
                        let pair = &result.pairs[result.output.inputs[j] as usize];
                        let key = record.key.or(Some(&pair.key));
                        let timestamp = record.timestamp.or(Some(pair.time));
                        let headers = record.headers.iter().map(|(n, v)| (n, Some(v)));
                        let target = match result.output.targets[j] {
                            0 if !last_step => {
                                next.records.push(key, record.value, timestamp, headers);
                                next.partitions.push(pair.partition);
                                next.offsets.push(pair.offset);
                                next.sources.push(0);
                                continue;
                            }
                            0 => Some(self.default_output),
                            k => named[k as usize - 1],
                        };
                        match target {
                            Some(o) => {
                                let routed = &mut out.outputs[o];
                                routed.records.push(key, record.value, timestamp, headers);
                                routed.origins.push(NO_ORIGIN);
                            }
                            None => {
                                let k = result.output.targets[j] as usize - 1;
                                out.held_dead.push(key, record.value, timestamp, headers);
                                out.held_reasons
                                    .push((step, unknown_output(&result.output.output_names[k])));
                            }
                        }
                    }
                    origins = vec![NO_ORIGIN; next.len()];
                    owned = Some(next);
                    continue;
                }
                Step::Rekey(r) => {
                    let horizon = now_ms.saturating_add(r.max_ahead);
                    out.exchange_times = rekey(
                        &mut r.aggregator,
                        input,
                        &origins,
                        step,
                        horizon,
                        &mut out.outputs[self.default_output],
                        &mut out.dead_letters,
                    )?;
                    break;
                }
                Step::Transform(t) => t,
            };
            let result = transform.process(input)?;
            let mut next = Batch::with_capacity(result.records.len(), result.records.values.len());
            let mut next_origins = Vec::with_capacity(result.records.len());
            let mut accounted = vec![false; input.len()];
            for (i, reason) in result.dead_letters {
                accounted[i as usize] = true;
                match origins[i as usize] {
                    NO_ORIGIN => {
                        out.held_dead.push_ref(input.records.get(i as usize), None);
                        out.held_reasons.push((step, reason));
                    }
                    origin => out.dead_letters.push(DeadLetter {
                        origin,
                        step,
                        reason,
                    }),
                }
            }
            let named = self.configured(&result.output_names);
            for (j, record) in result.records.iter().enumerate() {
                let i = result.inputs[j] as usize;
                accounted[i] = true;
                let fallback = input.records.get(i).timestamp;
                if self.keep_keys
                    && result.targets[j] == 0
                    && record.key != input.records.get(i).key
                {
                    return Err(StepError::NotPartitionKey {
                        what: format!(
                            "step {step} changed the Kafka key of the record at partition {} offset {} \
                             from `{}` to `{}` before the aggregate",
                            input.partitions[i],
                            input.offsets[i],
                            String::from_utf8_lossy(input.records.get(i).key.unwrap_or_default()),
                            String::from_utf8_lossy(record.key.unwrap_or_default())
                        ),
                    });
                }
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
                        None => {
                            let reason = unknown_output(&result.output_names[k as usize - 1]);
                            match origins[i] {
                                NO_ORIGIN => {
                                    out.held_dead.push_ref(record, fallback);
                                    out.held_reasons.push((step, reason));
                                }
                                origin => out.dead_letters.push(DeadLetter {
                                    origin,
                                    step,
                                    reason,
                                }),
                            }
                        }
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

    /// The configured output each of a step's output names stands for.
    fn configured(&self, names: &[String]) -> Vec<Option<usize>> {
        names.iter().map(|n| self.outputs.get(n).copied()).collect()
    }

    /// Routes an aggregate step's results (with their window) and dead
    /// letters.
    fn route_windows(
        &self,
        result: super::AggregateOutput,
        origins: &[u32],
        step: usize,
        out: &mut ChainOutput,
    ) {
        out.marks += result.marks;
        for (i, reason) in result.dead_letters {
            out.dead_letters.push(DeadLetter {
                origin: origins[i as usize],
                step,
                reason,
            });
        }
        out.window_dead_letters
            .extend(result.window_dead_letters.into_iter().map(|w| (step, w)));
        let named = self.configured(&result.output_names);
        for (j, record) in result.records.iter().enumerate() {
            let window = &result.windows[result.inputs[j] as usize];
            let target = match result.targets[j] {
                0 => Some(self.default_output),
                k => named[k as usize - 1],
            };
            let Some(target) = target else {
                tracing::warn!(output = %result.output_names[result.targets[j] as usize - 1], "window result sent to an unknown output; dropped");
                continue;
            };
            let routed = &mut out.outputs[target];
            let index = routed.records.len() as u32;
            routed.records.push(
                record.key.or(Some(&window.key)),
                record.value,
                record.timestamp.or(Some(window.end - 1)),
                record.headers.iter().map(|(n, v)| (n, Some(v))),
            );
            routed.origins.push(NO_ORIGIN);
            routed.windows.push((
                index,
                ResultWindow {
                    start: window.start,
                    end: window.end,
                    is_final: window.is_final,
                },
            ));
        }
    }
}

fn unknown_output(name: &str) -> Reason {
    Reason::new(Kind::UnknownOutput, format!("unknown output `{name}`"))
}

/// Runs `input` through `aggregator`'s `extract` into `output`: each
/// record as it is, with its aggregate key as its Kafka key; the records
/// the guest could not key become dead letters of `step`. Returns, per
/// source partition, the largest event time keyed up to `horizon`.
#[allow(clippy::too_many_arguments)]
fn rekey(
    aggregator: &mut Aggregator,
    input: &mut Batch,
    origins: &[u32],
    step: usize,
    horizon: i64,
    output: &mut Routed,
    dead_letters: &mut Vec<DeadLetter>,
) -> Result<Vec<(i32, i64)>, StepError> {
    let extracted = aggregator.extract(input)?;
    // Dead letters are batch indices; keys are per held record (every
    // record, or after a fault the `kept` ones).
    let mut dead = vec![false; input.len()];
    for (i, reason) in extracted.dead_letters {
        dead[i as usize] = true;
        dead_letters.push(DeadLetter {
            origin: origins[i as usize],
            step,
            reason,
        });
    }
    let held = extracted.key_offsets.len().saturating_sub(1);
    let mut times: Vec<(i32, i64)> = Vec::with_capacity(1);
    for j in 0..held {
        let i = extracted.kept.as_ref().map_or(j, |kept| kept[j] as usize);
        if dead[i] {
            continue;
        }
        let t = extracted.event_times[j];
        if t <= horizon {
            let partition = input.partitions[i];
            match times.iter_mut().find(|(p, _)| *p == partition) {
                Some((_, max)) => *max = (*max).max(t),
                None => times.push((partition, t)),
            }
        }
        let key = &extracted.keys
            [extracted.key_offsets[j] as usize..extracted.key_offsets[j + 1] as usize];
        let record = input.records.get(i);
        output.records.push(
            Some(key),
            record.value,
            record.timestamp,
            record.headers.iter().map(|(n, v)| (n, Some(v))),
        );
        output.origins.push(origins[i]);
    }
    times.sort_unstable();
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_record_gets_its_own_window_or_none() {
        let mut routed = Routed::default();
        for _ in 0..4 {
            routed.records.push(None, Some(b"v"), Some(1), []);
        }
        let w = |start| ResultWindow {
            start,
            end: start + 10,
            is_final: start == 20,
        };
        routed.windows = vec![(1, w(10)), (2, w(20))];
        assert_eq!(
            routed.record_windows().collect::<Vec<_>>(),
            [None, Some(w(10)), Some(w(20)), None]
        );
    }
}
