//! Fault isolation: when a batch makes the guest trap, run out of time or
//! memory, or break the contract, the host bisects the batch on fresh
//! instances until each fault is pinned on a single record. Only those
//! records are dead-lettered (with the fault as the reason); every other
//! record is processed normally. Costs about `2 log2(n)` extra calls per
//! faulty record, paid only when a fault happens.

use super::instance::{Fault, Transform};
use super::module::InstantiateError;
use crate::batch::StepOutput;
use crate::batch::{Batch, Reason};

impl Transform {
    /// Runs one micro-batch through the guest: one call across the boundary
    /// in the normal case. Fails only if a fresh instance cannot be started
    /// after a fault (its `init` now fails), which stops the pipeline.
    pub fn process(&mut self, batch: &mut Batch) -> Result<StepOutput, InstantiateError> {
        let fault = match self.call(batch) {
            Ok(Ok(output)) => return Ok(output),
            Ok(Err(message)) => return Ok(all_dead(batch.len(), &message)),
            Err(fault) => fault,
        };
        tracing::warn!(
            pipeline = &*self.labels.pipeline,
            step = &*self.labels.step,
            records = batch.len(),
            reason = %fault,
            "guest fault; isolating the records that cause it"
        );
        self.restart()?;
        let all: Vec<u32> = (0..batch.len() as u32).collect();
        let mut output = StepOutput::default();
        self.bisect(batch, &all, fault, &mut output)?;
        Ok(output)
    }

    /// `indices` (ascending) failed together with `fault`: split them.
    fn bisect(
        &mut self,
        batch: &Batch,
        indices: &[u32],
        fault: Fault,
        output: &mut StepOutput,
    ) -> Result<(), InstantiateError> {
        if let [only] = indices {
            tracing::warn!(
                pipeline = &*self.labels.pipeline,
                step = &*self.labels.step,
                partition = batch.partitions[*only as usize],
                offset = batch.offsets[*only as usize],
                reason = %fault,
                "record dead-lettered: guest fault"
            );
            output.dead_letters.push((*only, fault.reason()));
            return Ok(());
        }
        let (left, right) = indices.split_at(indices.len() / 2);
        self.isolate(batch, left, output)?;
        self.isolate(batch, right, output)
    }

    fn isolate(
        &mut self,
        batch: &Batch,
        indices: &[u32],
        output: &mut StepOutput,
    ) -> Result<(), InstantiateError> {
        let mut sub = batch.select(indices);
        match self.call(&mut sub) {
            Ok(Ok(part)) => merge(output, part, |i| indices[i as usize]),
            Ok(Err(message)) => {
                let reason = Reason::guest_error(&message);
                output
                    .dead_letters
                    .extend(indices.iter().map(|&i| (i, reason.clone())));
            }
            Err(fault) => {
                self.restart()?;
                self.bisect(batch, indices, fault, output)?;
            }
        }
        Ok(())
    }
}

/// The guest failed the whole batch with `message`: dead-letter every record.
fn all_dead(len: usize, message: &str) -> StepOutput {
    let reason = Reason::guest_error(message);
    StepOutput {
        dead_letters: (0..len as u32).map(|i| (i, reason.clone())).collect(),
        ..StepOutput::default()
    }
}

/// Appends the output of a sub-batch (or of a part of a request), mapping
/// its input indices back with `index` and re-interning its output names.
pub(super) fn merge(into: &mut StepOutput, part: StepOutput, index: impl Fn(u32) -> u32) {
    // Part-local target -> merged target, interned on first use.
    let mut targets: Vec<Option<u32>> = vec![None; part.output_names.len()];
    for (i, record) in part.records.iter().enumerate() {
        into.records.push_ref(record, None);
        into.inputs.push(index(part.inputs[i]));
        let target = match part.targets[i] {
            0 => 0,
            k => *targets[k as usize - 1].get_or_insert_with(|| {
                let name = &part.output_names[k as usize - 1];
                match into.output_names.iter().position(|n| n == name) {
                    Some(p) => p as u32 + 1,
                    None => {
                        into.output_names.push(name.clone());
                        into.output_names.len() as u32
                    }
                }
            }),
        };
        into.targets.push(target);
    }
    into.dead_letters.extend(
        part.dead_letters
            .into_iter()
            .map(|(i, reason)| (index(i), reason)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Columns;

    fn part(values: &[&str], inputs: Vec<u32>, targets: Vec<u32>, names: &[&str]) -> StepOutput {
        let mut records = Columns::default();
        for v in values {
            records.push(None, Some(v.as_bytes()), Some(1), []);
        }
        StepOutput {
            records,
            inputs,
            targets,
            output_names: names.iter().map(|s| s.to_string()).collect(),
            dead_letters: vec![],
        }
    }

    #[test]
    fn merge_maps_indices_and_reinterns_output_names() {
        let mut out = StepOutput::default();
        merge(
            &mut out,
            part(&["a", "b"], vec![0, 1], vec![1, 0], &["alerts"]),
            |i| [3, 5][i as usize],
        );
        let mut second = part(&["c"], vec![0], vec![2], &["x", "alerts"]);
        second
            .dead_letters
            .push((1, Reason::from_guest("bad".into())));
        merge(&mut out, second, |i| [7, 9][i as usize]);
        assert_eq!(out.inputs, vec![3, 5, 7]);
        assert_eq!(out.output_names, vec!["alerts".to_string()]);
        assert_eq!(out.targets, vec![1, 0, 1]);
        assert_eq!(
            out.dead_letters,
            vec![(9, Reason::from_guest("bad".into()))]
        );
        let values: Vec<_> = out
            .records
            .iter()
            .map(|r| r.value.unwrap().to_vec())
            .collect();
        assert_eq!(values, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn a_guest_error_dead_letters_every_record() {
        let out = all_dead(2, "not initialised");
        assert_eq!(
            out.dead_letters,
            vec![
                (0, Reason::guest_error("not initialised")),
                (1, Reason::guest_error("not initialised"))
            ]
        );
    }
}
