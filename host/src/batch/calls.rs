//! The calls into an aggregate guest, as plain types that mirror the WIT
//! `aggregate` interface field for field (so the runtime converts by moving
//! vectors), and the trait through which the window engine makes them: the
//! contract between `window` (which calls) and `runtime` (which answers),
//! kept below both so that neither imports the other.

use super::{Reason, StepOutput};

/// A set of accumulators, Arrow-style: accumulator `i` is
/// `data[offsets[i] .. offsets[i + 1]]` (`offsets` has one entry per
/// accumulator, plus one, starting at 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accumulators {
    pub data: Vec<u8>,
    pub offsets: Vec<u32>,
}

impl Default for Accumulators {
    fn default() -> Self {
        Self {
            data: Vec::new(),
            offsets: vec![0],
        }
    }
}

impl Accumulators {
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Accumulator `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    pub fn push(&mut self, acc: &[u8]) {
        self.data.extend_from_slice(acc);
        self.offsets
            .push(u32::try_from(self.data.len()).expect("accumulators of one call exceed 4 GiB"));
    }

    /// Checks that these are `expected` well-formed accumulators (they came
    /// from an untrusted guest).
    pub fn check(&self, expected: usize) -> Result<(), String> {
        if self.offsets.len() != expected + 1 {
            return Err(format!(
                "{} accumulator offsets for {expected} groups",
                self.offsets.len()
            ));
        }
        if self.offsets[0] != 0
            || self.offsets.windows(2).any(|w| w[0] > w[1])
            || self.offsets[expected] as usize != self.data.len()
        {
            return Err("invalid accumulator offsets".to_owned());
        }
        Ok(())
    }
}

/// Records to fold, grouped: group `g` folds records
/// `records[group_offsets[g] .. group_offsets[g + 1]]` (indices into the batch
/// last passed to `extract`, in event-time order) into accumulator `g`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldRequest {
    /// The current accumulator of each group; empty where `fresh` is 1.
    pub accumulators: Accumulators,
    /// One byte per group: 1 if the group starts from a new accumulator.
    pub fresh: Vec<u8>,
    pub records: Vec<u32>,
    /// `groups + 1` offsets into `records`.
    pub group_offsets: Vec<u32>,
}

impl Default for FoldRequest {
    fn default() -> Self {
        Self {
            accumulators: Accumulators::default(),
            fresh: Vec::new(),
            records: Vec::new(),
            group_offsets: vec![0],
        }
    }
}

/// What `fold` made of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldResult {
    /// The new accumulator of each group, in request order.
    pub accumulators: Accumulators,
    /// `(record index, reason)` of records that could not be folded.
    pub dead_letters: Vec<(u32, Reason)>,
}

/// Accumulators to merge: result `g` merges accumulators
/// `group_offsets[g] .. group_offsets[g + 1]`, in that (event-time) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRequest {
    pub accumulators: Accumulators,
    /// `groups + 1` offsets into `accumulators`.
    pub group_offsets: Vec<u32>,
}

impl Default for MergeRequest {
    fn default() -> Self {
        Self {
            accumulators: Accumulators::default(),
            group_offsets: vec![0],
        }
    }
}

/// Windows whose result is due; one entry per group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishRequest {
    /// Group keys, Arrow-style (`groups + 1` offsets).
    pub keys: Vec<u8>,
    pub key_offsets: Vec<u32>,
    /// The window of each group is `[start, end)`, in ms since the epoch.
    pub window_starts: Vec<i64>,
    pub window_ends: Vec<i64>,
    pub accumulators: Accumulators,
    /// 1 for a window's final result, 0 for an update.
    pub final_: Vec<u8>,
}

impl Default for FinishRequest {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            key_offsets: vec![0],
            window_starts: Vec::new(),
            window_ends: Vec::new(),
            accumulators: Accumulators::default(),
            final_: Vec::new(),
        }
    }
}

/// What a `merge` with fault isolation made of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeResult {
    /// One per group; empty for the groups in `failed`.
    pub accumulators: Accumulators,
    /// `(group, reason)` of the groups the guest could not merge.
    pub failed: Vec<(u32, Reason)>,
}

/// A failed aggregate call. Not retryable on the same engine: see the
/// module docs (the engine is poisoned).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    /// The guest returned an error, trapped, ran out of time or memory:
    /// the reason its records or windows are dead-lettered with.
    #[error("aggregate guest failed: {0}")]
    Guest(Reason),
    /// The guest answered, but not as the contract says.
    #[error("aggregate guest broke the contract: {0}")]
    Invalid(String),
    /// A fresh instance of the guest, needed to go on after a fault,
    /// could not be made ready.
    #[error("aggregate guest failed: {0}")]
    Restart(String),
    /// An earlier call failed; the engine's state is no longer trustworthy.
    #[error("the window engine failed earlier and must be restarted")]
    Poisoned,
}

/// The guest's `fold`, `merge` and `finish`. `fold` records are indices into
/// the batch last passed to the guest's `extract`, which the caller makes
/// before handing the batch's keys to the engine.
pub trait AggregateCalls {
    fn fold(&mut self, request: FoldRequest) -> Result<FoldResult, AggregateError>;
    fn merge(&mut self, request: MergeRequest) -> Result<Accumulators, AggregateError>;
    /// Like `merge`, but a group the guest cannot merge may be reported in
    /// the result instead of failing the call. By default, it fails it.
    fn merge_isolated(&mut self, request: MergeRequest) -> Result<MergeResult, AggregateError> {
        self.merge(request).map(|accumulators| MergeResult {
            accumulators,
            failed: Vec::new(),
        })
    }
    /// `inputs` of the result are group indices of the request.
    fn finish(&mut self, request: FinishRequest) -> Result<StepOutput, AggregateError>;
}
