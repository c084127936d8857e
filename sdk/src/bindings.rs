//! The guest side's `wit_bindgen::generate!`s, one per world of
//! `wit/transform.wit`. A component exports one world: guests pick theirs
//! through the `#[transform]`, `#[aggregate]` or `#[join]` macro, which
//! expand to `__export_transform!`, `__export_aggregate!` or `__export_join!`.
//!
//! Both worlds share the `types` and `log` interfaces. They are generated once,
//! with the transform world, and the aggregate world points at them (`with`),
//! so both worlds see the same `InputBatch`, `OutputBatch` and so on, and the
//! batch codec serves both.
//!
//! `pub_export_macro` makes each generated export macro usable from guest
//! crates (through `sluice_sdk::__private::bindings`), so the guest never
//! depends on wit-bindgen itself. It also keeps each world's exports out of
//! the custom section that `generate!` always links in: only the export macro
//! a guest invokes adds its world's exports to the component.

/// Code generated from the `transform-guest` world, plus the shared `types`
/// and `log` interfaces.
#[allow(unsafe_code, missing_docs, unreachable_pub, clippy::all)]
pub mod transform {
    wit_bindgen::generate!({
        path: "../wit",
        world: "transform-guest",
        pub_export_macro: true,
        export_macro_name: "export_transform",
        default_bindings_module: "::sluice_sdk::__private::bindings::transform",
    });
}

/// Code generated from the `aggregate-guest` world.
#[allow(unsafe_code, missing_docs, unreachable_pub, clippy::all)]
pub mod aggregate {
    wit_bindgen::generate!({
        path: "../wit",
        world: "aggregate-guest",
        with: {
            "sluice:transform/types@0.1.0": crate::bindings::transform::sluice::transform::types,
            "sluice:transform/log@0.1.0": crate::bindings::transform::sluice::transform::log,
        },
        pub_export_macro: true,
        export_macro_name: "export_aggregate",
        default_bindings_module: "::sluice_sdk::__private::bindings::aggregate",
    });
}

/// Code generated from the `join-guest` world.
#[allow(unsafe_code, missing_docs, unreachable_pub, clippy::all)]
pub mod join {
    wit_bindgen::generate!({
        path: "../wit",
        world: "join-guest",
        with: {
            "sluice:transform/types@0.1.0": crate::bindings::transform::sluice::transform::types,
            "sluice:transform/log@0.1.0": crate::bindings::transform::sluice::transform::log,
        },
        pub_export_macro: true,
        export_macro_name: "export_join",
        default_bindings_module: "::sluice_sdk::__private::bindings::join",
    });
}

pub use join::exports::sluice::transform::join::{
    Guest as JoinGuest, JoinRequest, Keyed as JoinKeyed, Side as JoinSide,
};

pub use aggregate::exports::sluice::transform::aggregate::{
    Accumulators, FinishRequest, FoldRequest, FoldResult, Keyed, MergeRequest,
};
pub use transform::exports::sluice::transform::transform::Guest as TransformGuest;
pub use transform::sluice::transform::log::Level;
pub use transform::sluice::transform::types::{Columns, DeadLetter, InputBatch, OutputBatch};

pub use aggregate::exports::sluice::transform::aggregate::Guest as AggregateGuest;
