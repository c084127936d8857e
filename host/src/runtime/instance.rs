//! One transform instance: a store, its memory cap and deadline, and the
//! calls across the boundary.

use wasmtime::{Store, Trap};

use super::bindings::{self, AggregateGuest, InputBatch, JoinGuest, OutputBatch, TransformGuest};
use super::engine::EPOCH_TICK;
use super::module::{InstantiateError, Module, Pre};
use super::sandbox::{HostState, Labels, MemoryLimitExceeded};
use crate::batch::reason::Kind;
use crate::batch::{Batch, Columns, Reason, StepOutput};
use crate::spec::Limits;

/// How a call into the guest failed, other than by returning an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The guest trapped (e.g. panicked); with the trap and panic message.
    Trap(String),
    /// The call ran past its deadline.
    Deadline,
    /// The guest tried to grow its memory past the limit.
    MemoryLimit,
    /// The guest returned an output batch that breaks the contract.
    InvalidOutput(String),
}

impl Fault {
    /// The kind of dead letter a record that caused this fault becomes.
    pub fn kind(&self) -> Kind {
        match self {
            Fault::Trap(_) => Kind::Trap,
            Fault::Deadline => Kind::Deadline,
            Fault::MemoryLimit => Kind::MemoryLimit,
            Fault::InvalidOutput(_) => Kind::InvalidOutput,
        }
    }

    /// The dead-letter reason for a record that caused this fault.
    pub fn reason(&self) -> Reason {
        Reason::new(self.kind(), self.to_string())
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Trap(msg) => write!(f, "trap: {msg}"),
            Fault::Deadline => f.write_str("deadline exceeded"),
            Fault::MemoryLimit => f.write_str("memory limit"),
            Fault::InvalidOutput(msg) => write!(f, "invalid output: {msg}"),
        }
    }
}

/// Counters of one transform, across instance restarts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TransformStats {
    /// Calls of `process`, including the re-runs that isolate faults.
    pub calls: u64,
    pub traps: u64,
    pub deadline_hits: u64,
    pub memory_hits: u64,
    /// Instances replaced after a fault.
    pub restarts: u64,
}

impl TransformStats {
    pub(super) fn count(&mut self, fault: &Fault) {
        match fault {
            Fault::Deadline => self.deadline_hits += 1,
            Fault::MemoryLimit => self.memory_hits += 1,
            _ => self.traps += 1,
        }
    }
}

/// A world a guest can be: how to find its pre-instantiated component in a
/// [`Module`], instantiate it and run its `init`.
pub trait World: Sized {
    /// What a module of this world is (for errors).
    const KIND: &'static str;
    /// Instantiates the guest in `store` and runs its `init`; `None` if
    /// the module is of the other world.
    fn start(
        pre: &Pre,
        store: &mut Store<HostState>,
        config: &[(String, String)],
    ) -> Option<wasmtime::Result<(Self, Result<(), String>)>>;
}

/// `World` for a generated guest type: its `Pre` variant and the accessor
/// of its exported interface.
macro_rules! world {
    ($guest:ty, $variant:ident, $interface:ident, $kind:literal) => {
        impl World for $guest {
            const KIND: &'static str = $kind;
            fn start(
                pre: &Pre,
                store: &mut Store<HostState>,
                config: &[(String, String)],
            ) -> Option<wasmtime::Result<(Self, Result<(), String>)>> {
                let Pre::$variant(pre) = pre else {
                    return None;
                };
                Some(pre.instantiate(&mut *store).and_then(|guest| {
                    let init = guest
                        .$interface()
                        .call_init(&mut *store, &config.to_vec())?;
                    Ok((guest, init))
                }))
            }
        }
    };
}

world!(
    TransformGuest,
    Transform,
    sluice_transform_transform,
    "a transform"
);
world!(
    AggregateGuest,
    Aggregate,
    sluice_transform_aggregate,
    "an aggregate"
);
world!(JoinGuest, Join, sluice_transform_join, "a join");

/// A live guest instance of world `W`: its module, its store (memory cap,
/// deadline) and counters that outlive restarts. See the module docs of
/// `runtime`.
pub struct Instance<W> {
    module: Module,
    pub(super) labels: Labels,
    limits: Limits,
    config: Vec<(String, String)>,
    store: Store<HostState>,
    guest: W,
    pub(super) stats: TransformStats,
}

/// A live transform instance.
pub type Transform = Instance<TransformGuest>;

impl<W> std::fmt::Debug for Instance<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("module", &self.module)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<W> Instance<W> {
    pub fn module(&self) -> &Module {
        &self.module
    }

    pub fn stats(&self) -> TransformStats {
        self.stats
    }
}

impl<W: World> Instance<W> {
    /// A new instance of `module` in its own store, with `init(config)`
    /// already run (`Transform::new`, `Aggregator::new`).
    pub fn new(
        module: &Module,
        labels: Labels,
        limits: Limits,
        config: Vec<(String, String)>,
    ) -> Result<Self, InstantiateError> {
        let (store, guest) = start(module, &labels, limits, &config)?;
        Ok(Self {
            module: module.clone(),
            labels,
            limits,
            config,
            store,
            guest,
            stats: TransformStats::default(),
        })
    }

    /// Replaces the instance with a fresh one (after a fault: a trapped
    /// instance must not be entered again).
    pub(super) fn restart(&mut self) -> Result<(), InstantiateError> {
        let (store, guest) = start(&self.module, &self.labels, self.limits, &self.config)?;
        self.store = store;
        self.guest = guest;
        self.stats.restarts += 1;
        Ok(())
    }

    /// Runs one guest call under the deadline; a trap, an interrupt or the
    /// memory limit becomes a [`Fault`], counted.
    pub(super) fn enter<R>(
        &mut self,
        f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        self.stats.calls += 1;
        arm(&mut self.store, self.limits);
        f(&self.guest, &mut self.store).map_err(|error| {
            let fault = classify(&mut self.store, &error);
            self.stats.count(&fault);
            fault
        })
    }
}

impl Transform {
    /// One call of `process` over the whole of `batch`. The batch's vectors
    /// are moved into the call and back, never copied on the host side.
    ///
    /// `Ok(Err(message))` is the guest's own batch-level error.
    pub(super) fn call(&mut self, batch: &mut Batch) -> Result<Result<StepOutput, String>, Fault> {
        let n = batch.len();
        let result = with_input(batch, |input| {
            self.enter(|guest, store| {
                guest
                    .sluice_transform_transform()
                    .call_process(store, input)
            })
        })?;
        match result {
            Ok(output) => step_output(output, n).map(Ok).map_err(Fault::InvalidOutput),
            Err(message) => Ok(Err(message)),
        }
    }
}

/// Lends `batch` to a call as the WIT input batch, moving its vectors in
/// and back out (no copy on the host side).
pub(super) fn with_input<R>(batch: &mut Batch, call: impl FnOnce(&InputBatch) -> R) -> R {
    let input = InputBatch {
        records: std::mem::take(&mut batch.records).into(),
        partitions: std::mem::take(&mut batch.partitions),
        offsets: std::mem::take(&mut batch.offsets),
    };
    let result = call(&input);
    batch.records = input.records.into();
    batch.partitions = input.partitions;
    batch.offsets = input.offsets;
    result
}

/// A store of `module` with its guest instantiated and `init` run.
fn start<W: World>(
    module: &Module,
    labels: &Labels,
    limits: Limits,
    config: &[(String, String)],
) -> Result<(Store<HostState>, W), InstantiateError> {
    let mut store = new_store(module, labels, limits);
    let Some(started) = W::start(module.pre(), &mut store, config) else {
        return Err(InstantiateError::WrongKind {
            expected: W::KIND,
            actual: module.kind().described(),
        });
    };
    match started {
        Ok((guest, Ok(()))) => Ok((store, guest)),
        Ok((_, Err(message))) => Err(InstantiateError::ConfigRejected(message)),
        Err(e) => Err(InstantiateError::Trapped(
            classify(&mut store, &e).to_string(),
        )),
    }
}

/// A store with the memory cap and a deadline for what runs first.
pub(super) fn new_store(module: &Module, labels: &Labels, limits: Limits) -> Store<HostState> {
    let memory = usize::try_from(limits.memory.as_u64()).unwrap_or(usize::MAX);
    let mut store = Store::new(
        &module.runtime().engine,
        HostState::new(labels.clone(), memory),
    );
    store.limiter(|state| &mut state.limiter);
    store.set_hostcall_fuel(copy_budget(memory));
    arm(&mut store, limits);
    store
}

/// How many bytes of host memory lifting one call's results (or one host
/// call's arguments) may take: twice the guest's memory limit. Everything a
/// guest returns lives in its own memory, but a host `String` or record in a
/// list takes more room than its lowered form (24 bytes for 8), and strings
/// inside lists may all point at the same guest bytes: without this bound, a
/// `list<string>` of a million entries aliasing one megabyte would be
/// copied out in full (wasmtime's default is a fixed 128 MiB per call,
/// whatever the guest's limit).
pub(super) fn copy_budget(memory_limit: usize) -> usize {
    memory_limit.saturating_mul(2)
}

/// wasmtime's error when lifting runs past [`copy_budget`] (its type is
/// private; its message is the one way to know it).
fn is_copy_budget_exceeded(error: &wasmtime::Error) -> bool {
    error.chain().any(|e| {
        e.to_string()
            .contains("fuel allocated for hostcalls has been exhausted")
    })
}

/// Starts the deadline of a call (or of instantiation and `init`): for the
/// guest's code (the epoch) and for its waits in `wasi:io/poll`.
pub(super) fn arm(store: &mut Store<HostState>, limits: Limits) {
    store.set_epoch_deadline(deadline_ticks(limits));
    let deadline = std::time::Instant::now() + limits.deadline;
    store.data_mut().begin_call(deadline);
}

pub(super) fn deadline_ticks(limits: Limits) -> u64 {
    // One extra tick: the current tick may be about to end.
    (limits.deadline.as_nanos() / EPOCH_TICK.as_nanos()) as u64 + 1
}

pub(super) fn classify(store: &mut Store<HostState>, error: &wasmtime::Error) -> Fault {
    if store.data().limiter.exceeded || error.downcast_ref::<MemoryLimitExceeded>().is_some() {
        store.data_mut().limiter.exceeded = false;
        return Fault::MemoryLimit;
    }
    let trap = error.downcast_ref::<Trap>();
    if trap == Some(&Trap::Interrupt) {
        return Fault::Deadline;
    }
    if trap.is_none() && is_copy_budget_exceeded(error) {
        let memory = store.data().limiter.limit();
        return Fault::InvalidOutput(format!(
            "the results would take more than {} bytes to copy to the host, twice the guest's \
             memory limit",
            copy_budget(memory)
        ));
    }
    let what = match trap {
        Some(trap) => trap
            .to_string()
            .trim_start_matches("wasm trap: ")
            .to_owned(),
        None => format!("{error:#}"),
    };
    match store.data().stderr.take_panic_message() {
        Some(panic) => Fault::Trap(format!("{what} (guest {panic})")),
        None => Fault::Trap(what),
    }
}

/// The longest output name: Kafka topic names have at most 249 characters.
pub const MAX_OUTPUT_NAME: usize = 249;
/// Most output records one input record may make (a flat-map bomb).
pub const MAX_OUTPUTS_PER_INPUT: usize = 100_000;
/// Checks a guest's output against the contract and converts it.
pub(super) fn step_output(output: OutputBatch, inputs_len: usize) -> Result<StepOutput, String> {
    let OutputBatch {
        records,
        inputs,
        targets,
        output_names,
        dead_letters,
    } = output;
    let records = Columns::from(records);
    records.validate()?;
    let n = records.len();
    if inputs.len() != n || targets.len() != n {
        return Err(format!(
            "{n} output records but {} input indices and {} targets",
            inputs.len(),
            targets.len()
        ));
    }
    if inputs.windows(2).any(|w| w[0] > w[1]) {
        return Err("output input indices are not non-decreasing".to_owned());
    }
    if let Some(&last) = inputs.last()
        && last as usize >= inputs_len
    {
        return Err(format!(
            "output refers to input {last}, but the batch has {inputs_len} records"
        ));
    }
    if let Some(name) = output_names.iter().find(|n| n.len() > MAX_OUTPUT_NAME) {
        return Err(format!(
            "an output name of {} bytes, over the limit of {MAX_OUTPUT_NAME} bytes",
            name.len()
        ));
    }
    if let Some(run) = inputs
        .chunk_by(|a, b| a == b)
        .map(<[u32]>::len)
        .find(|&run| run > MAX_OUTPUTS_PER_INPUT)
    {
        return Err(format!(
            "{run} output records for one input record, over the limit of {MAX_OUTPUTS_PER_INPUT}"
        ));
    }
    if let Some(&t) = targets.iter().find(|&&t| t as usize > output_names.len()) {
        return Err(format!(
            "output target {t} but only {} output names",
            output_names.len()
        ));
    }
    let mut dead = Vec::with_capacity(dead_letters.len());
    for bindings::DeadLetter { input, reason } in dead_letters {
        if input as usize >= inputs_len {
            return Err(format!(
                "dead letter for input {input}, but the batch has {inputs_len} records"
            ));
        }
        dead.push((input, Reason::from_guest(reason)));
    }
    Ok(StepOutput {
        records,
        inputs,
        targets,
        output_names,
        dead_letters: dead,
    })
}

/// The batch's columns are the WIT record field for field: converting
/// moves the vectors, both ways, from one list of the fields (a field
/// added on one side only does not compile).
macro_rules! columns_conversions {
    ($($field:ident),* $(,)?) => {
        impl From<Columns> for bindings::Columns {
            fn from(c: Columns) -> Self {
                Self { $($field: c.$field),* }
            }
        }

        impl From<bindings::Columns> for Columns {
            fn from(c: bindings::Columns) -> Self {
                Self { $($field: c.$field),* }
            }
        }
    };
}

columns_conversions!(
    keys,
    key_offsets,
    values,
    value_offsets,
    flags,
    timestamps,
    header_offsets,
    header_names,
    header_name_offsets,
    header_values,
    header_value_offsets,
);
