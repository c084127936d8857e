//! `wasi:io/poll` bounded by the call's deadline.
//!
//! WASI is linked synchronously, so a guest waiting on a pollable (a sleep
//! is `monotonic-clock.subscribe-duration` then `pollable.block`) blocks the
//! host thread, where the epoch deadline cannot interrupt it: only compiled
//! guest code checks the epoch. These host functions replace WASI's `poll`
//! and `pollable.block` and wait at most until the store's deadline, then
//! trap with [`Trap::Interrupt`], exactly as a guest that loops past it.

use std::time::Instant;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime::{Result, Trap};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::io::poll as wait;
use wasmtime_wasi::p2::bindings::sync::io::poll;
use wasmtime_wasi::runtime::in_tokio;

use super::sandbox::HostState;

/// The pollables of a store and the instant its current call must end by.
pub(super) struct BoundedPoll<'a> {
    table: &'a mut ResourceTable,
    deadline: Instant,
}

struct HasBoundedPoll;

impl HasData for HasBoundedPoll {
    type Data<'a> = BoundedPoll<'a>;
}

/// Replaces WASI's `wasi:io/poll` in `linker` (which must already hold it).
pub(super) fn shadow_wasi_poll(linker: &mut Linker<HostState>) -> Result<()> {
    linker.allow_shadowing(true);
    poll::add_to_linker::<HostState, HasBoundedPoll>(linker, |state| {
        let deadline = state.deadline;
        BoundedPoll {
            table: state.table(),
            deadline,
        }
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Runs `wait` to completion, or traps at `deadline`.
fn until<T>(deadline: Instant, wait: impl Future<Output = Result<T>>) -> Result<T> {
    let deadline = tokio::time::Instant::from_std(deadline);
    in_tokio(async { tokio::time::timeout_at(deadline, wait).await })
        .unwrap_or_else(|_elapsed| Err(Trap::Interrupt.into()))
}

impl poll::Host for BoundedPoll<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> Result<Vec<u32>> {
        until(self.deadline, wait::Host::poll(self.table, pollables))
    }
}

impl poll::HostPollable for BoundedPoll<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> Result<bool> {
        in_tokio(wait::HostPollable::ready(self.table, pollable))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> Result<()> {
        until(
            self.deadline,
            wait::HostPollable::block(self.table, pollable),
        )
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> Result<()> {
        wait::HostPollable::drop(self.table, pollable)
    }
}
