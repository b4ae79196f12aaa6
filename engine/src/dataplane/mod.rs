//! The data plane: what moves packets.
//!
//! - [`engine`]: the builder, the running [`Engine`](engine::Engine) handle and the worker
//!   loop (one mio `Poll` over devices, UDP sockets and a waker).
//! - [`routes`]: [`RouteTable`](routes::RouteTable), lock-free route snapshots with runtime
//!   edits applied as batches.
//! - [`device`]: the [`Device`](device::Device) trait, real TUN/TAP queues and the in-memory
//!   device.
//! - [`counters`]: traffic and per-reason drop counters, per worker, summed when read.
//! - [`offload`]: vnet headers, super-packets and coalesced writes toward the devices.

pub mod counters;
pub mod device;
pub mod engine;
pub mod offload;
pub mod routes;
mod worker;
