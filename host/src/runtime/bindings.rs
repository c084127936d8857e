//! The host side of the contract in `wit/`: one `bindgen!` per world, the
//! aggregate and join worlds reusing the transform world's `types` and
//! `log` interfaces so that all share one set of Rust types.

mod generated {
    pub mod transform {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "sluice:transform/transform-guest",
        });
    }

    pub mod aggregate {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "sluice:transform/aggregate-guest",
            with: {
                "sluice:transform/types": super::transform::sluice::transform::types,
                "sluice:transform/log": super::transform::sluice::transform::log,
            },
        });
    }

    pub mod join {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "sluice:transform/join-guest",
            with: {
                "sluice:transform/types": super::transform::sluice::transform::types,
                "sluice:transform/log": super::transform::sluice::transform::log,
            },
        });
    }
}

pub use generated::aggregate::exports::sluice::transform::aggregate::{
    Accumulators, FinishRequest, FoldRequest, FoldResult, Keyed, MergeRequest,
};
pub use generated::aggregate::{AggregateGuest, AggregateGuestPre};
pub use generated::join::exports::sluice::transform::join::{
    JoinRequest, Keyed as JoinKeyed, Side as JoinSide,
};
pub use generated::join::{JoinGuest, JoinGuestPre};
pub use generated::transform::sluice::transform::log::{Host as LogHost, Level};
pub use generated::transform::sluice::transform::types::{
    Columns, DeadLetter, Host as TypesHost, InputBatch, OutputBatch,
};
pub use generated::transform::{TransformGuest, TransformGuestPre};

/// Adds the host's imports (the `log` interface; `types` has no functions).
/// Every world imports the same interfaces, so one linker serves all.
pub fn add_to_linker<T: LogHost + TypesHost + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    generated::transform::TransformGuest::add_to_linker::<T, wasmtime::component::HasSelf<T>>(
        linker,
        |s| s,
    )
}

/// The fully qualified names of the exported interfaces, for error messages.
pub const TRANSFORM_EXPORT: &str = "sluice:transform/transform@0.1.0";
pub const AGGREGATE_EXPORT: &str = "sluice:transform/aggregate@0.1.0";
pub const JOIN_EXPORT: &str = "sluice:transform/join@0.1.0";
