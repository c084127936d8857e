//! What a step makes of a batch, as the runtime hands it to the window
//! engine and the pipeline.

use super::{Columns, Reason};

/// What one step made of a batch: the guest's output plus the records the
/// host dead-lettered for it (faults). Indices refer to the step's input.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StepOutput {
    pub records: Columns,
    /// Input index of each output record, non-decreasing.
    pub inputs: Vec<u32>,
    /// 0 for the default output, `k` for `output_names[k - 1]`.
    pub targets: Vec<u32>,
    pub output_names: Vec<String>,
    /// `(input index, reason)`, in input order.
    pub dead_letters: Vec<(u32, Reason)>,
}
