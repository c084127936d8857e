//! The one `wit_bindgen::generate!` of the guest side, for `wit/transform.wit`.
//!
//! Nothing outside the SDK names these items directly: guests get them through
//! the `#[transform]` macro, which expands to `__export_transform!`.

/// Code generated from the `transform-guest` world.
///
/// `pub_export_macro` makes the generated `export!` usable from guest crates
/// (through `sluice_sdk::__private::bindings::export!`), so the guest never
/// depends on wit-bindgen itself.
#[allow(unsafe_code, missing_docs, unreachable_pub, clippy::all)]
pub mod generated {
    wit_bindgen::generate!({
        path: "../wit",
        world: "transform-guest",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "::sluice_sdk::__private::bindings",
    });
}

pub use generated::exports::sluice::transform::transform::Guest;
pub use generated::sluice::transform::types::{Columns, DeadLetter, InputBatch, OutputBatch};
