//! # weft: an embeddable userspace overlay dataplane
//!
//! weft carries IP packets (or Ethernet frames) between hosts by wrapping them in UDP,
//! wire-compatible with flanneld's UDP backend (the raw inner packet as the UDP payload, port
//! 8285) and with the Linux kernel's vxlan device (RFC 7348, port 8472). It is a library
//! first; the `weft` binary is a thin wrapper over [`control::daemon::run`].
//!
//! ## Embedding
//! Bring your own device (a TUN you opened, a descriptor from elsewhere, or the in-memory
//! [`MemoryDevice`] in tests), a bound UDP socket and routes; the engine runs a worker
//! thread with a mio loop and batched `recvmmsg`/`sendmmsg` (more workers with
//! [`EngineBuilder::worker`], one queue of a multi-queue device and one `SO_REUSEPORT`
//! socket each):
//!
//! ```no_run
//! use std::net::UdpSocket;
//! use weft::{Engine, RouteTable, Tun, TunOptions};
//! use weft_encap::table::Route;
//!
//! let tun = Tun::open("vpn0", &TunOptions::default())?;   // configure it with `ip` or weft::control::provision
//! let socket = UdpSocket::bind("198.18.0.1:8285")?;
//! let routes = RouteTable::new([Route {
//!     subnet: "100.96.2.0/24".parse()?,
//!     endpoint: "198.18.0.2:8285".parse()?,
//!     vtep_mac: None,
//! }])?;
//! let engine = Engine::builder(tun, socket).routes(routes.clone()).spawn()?;
//! // ... later, while traffic flows:
//! routes.remove(&"100.96.2.0/24".parse()?);
//! println!("{}", engine.stats());
//! engine.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The UDP backend is the default; `.backend(weft_encap::vxlan::VxlanBackend::new(...))`
//! selects VXLAN, `.device(...)` adds a device per further VNI, and `.source_sockets(...)`
//! gives VXLAN its per-flow source ports.
//!
//! ## Offloads
//! A device opened with vnet headers (`TunOptions { vnet_hdr: true, .. }` and
//! [`Tun::set_offload`], or [`control::provision::create_tun`], which negotiates them) hands
//! the engine TCP super-packets of up to 64 KB; the engine judges each once, on its first
//! segment, and sends it as UDP GSO trains; received GRO trains are coalesced and written
//! back as one super-packet with `writev`. [`OffloadMode::Off`] turns all of that off;
//! [`Engine::status`] says what is in use. The pure parts (split, coalesce, checksums) are
//! in `weft_encap::offload`.
//!
//! ## Modules
//! - [`dataplane`]: the engine and its workers, devices, routes and counters.
//! - [`control`]: the flanneld-style daemon (`weft run`): configuration, device
//!   provisioning, the control socket, reload.
//! - `sys` (private): every `unsafe` line of the crate (TUN ioctls, rtnetlink, mmsg,
//!   namespaces).

pub mod control;
pub mod dataplane;
mod sys;

pub use dataplane::counters::Stats;
pub use dataplane::device::{Device, DeviceKind, MemoryDevice, Tun, TunOptions};
pub use dataplane::engine::{
    Engine, EngineBuilder, EngineError, OffloadMode, OffloadStatus, MAX_BUSY_POLL,
};
pub use dataplane::routes::{RouteEdit, RouteTable};
