//! The one `bindgen!` of the host side of the contract in `wit/`.

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sluice:transform/transform-guest",
    });
}

pub use generated::sluice::transform::log::{Host as LogHost, Level};
pub use generated::sluice::transform::types::{
    Columns, DeadLetter, Host as TypesHost, InputBatch, OutputBatch,
};
pub use generated::{TransformGuest, TransformGuestPre};

/// Adds the host's imports of the transform world (the `log` interface).
pub fn add_to_linker<T: LogHost + TypesHost + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    generated::TransformGuest::add_to_linker::<T, wasmtime::component::HasSelf<T>>(linker, |s| s)
}

/// The fully qualified name of the exported interface, for error messages.
pub const TRANSFORM_EXPORT: &str = "sluice:transform/transform@0.1.0";
