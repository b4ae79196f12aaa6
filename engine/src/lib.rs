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
//! ## Threads: workers and the control side
//! [`Engine::builder`] takes the first worker's device and socket;
//! [`EngineBuilder::worker`] adds one more worker with its own queue of every device (a
//! multi-queue TUN/TAP opened once per worker, the devices in the same order as the first
//! worker's), its own listening socket bound to the same address with `SO_REUSEPORT` (every
//! worker's, the first one's included: [`control::provision::bind_udp_shared`] binds them)
//! and its own source-port sockets.
//! [`EngineBuilder::spawn`] checks the devices against the backend (count, TUN or TAP, name)
//! and starts one thread per worker, `weft-worker-<i>`. A worker is a `mio` loop over its
//! device queues, its sockets and a waker; it moves a batch of up to
//! [`EngineBuilder::batch_size`] packets at a time in each direction (one `recvmmsg` or
//! `sendmmsg` per batch), alternating so that neither direction starves the other, and
//! runs its own clone of the backend (what the clones share is listed below).
//!
//! The kernel keeps a flow on one worker: a multi-queue TUN hands a flow's packets to the
//! queue that last wrote that flow's packets, and `SO_REUSEPORT` hashes the outer addresses
//! and ports. VXLAN's per-flow source ports spread flows over the workers that way. flannel's
//! UDP backend sends from port 8285 to port 8285, so everything one peer host sends would
//! reach one worker; with several workers, call
//! [`control::provision::steer_flannel_flows`] on the first listening socket (it applies to
//! the whole `SO_REUSEPORT` group) to spread datagrams by their inner flow instead, as
//! `weft run` does. Source-port sockets only send: [`control::provision::refuse_input`] makes
//! the kernel drop what arrives for them.
//!
//! The [`Engine`] handle is the control side, used from whichever threads the caller likes;
//! nothing on it takes a lock a worker waits for:
//!
//! - routes: [`Engine::routes`] and [`Engine::device_routes`] give [`RouteTable`] handles
//!   (`Clone + Send + Sync`, clones edit the same table); an edit, or a whole
//!   [`RouteTable::apply`] batch of them, builds one new snapshot, and workers use it from
//!   their next batch;
//! - counters: [`Engine::stats`] sums every worker's counters into a [`Stats`] (names such as
//!   `tx_packets`, `drop_no_route`; [`Stats::drops`] by
//!   [`DropReason`](weft_encap::verdict::DropReason)), and
//!   [`Engine::counters_handle`] gives a handle that outlives borrows of the engine;
//!   [`Engine::status`] says how many workers run and which offloads are in use;
//! - [`Engine::inspector`]: an [`Inspector`](dataplane::engine::Inspector) runs a closure on
//!   the first worker's backend between two batches (listing a VXLAN FDB, for instance), via
//!   a channel and the worker's waker;
//! - [`Engine::replace_device`] hands every worker a new queue of a device that vanished;
//! - [`Engine::shutdown`] (or dropping the engine) stops the workers, joins them and closes
//!   the devices and sockets.
//!
//! ## Buffers
//! Each worker allocates its buffers when it starts, and nothing per packet: a receive and a
//! transmit buffer per batch slot, each of `headroom + 65,535` bytes, where the headroom is
//! the larger of [`dataplane::engine::HEADROOM`] (64 bytes) and the backend's
//! ([`Backend::headroom`](weft_encap::backend::Backend::headroom)); a 128 KB train buffer per
//! slot for the segments of a super-packet; the `mmsg` arrays and the coalescer. A packet is
//! read from the device (or received from the socket) to just after the headroom, handed to
//! the backend as a [`PacketBuf`](weft_encap::backend::PacketBuf) over that buffer, and the
//! returned [`Verdict`](weft_encap::verdict::Verdict)'s ranges are sent or written straight
//! from it: no copy between device and socket. The engine checks every range against the
//! buffer first (a bad one is counted as `drop_bad_verdict`, never used). A backend cannot
//! keep a packet: its borrow ends with the call. On the receive path only the first datagram
//! of a UDP GRO train has headroom in front of it (in front of the others lies the previous
//! datagram, which must stay intact until it is written), and only the last datagram of a
//! receive buffer has tailroom (the rest of the buffer, after it).
//!
//! ## What each verdict does
//! `SendToPeer`, `SendTrain` and `Flood` queue the datagrams on the socket of the flow (the
//! listening socket for `flow: None`, else one of the source-port sockets by the hash) for
//! the batch's `sendmmsg`; `DeliverToDevice` is written to the device after the batch
//! (coalesced where it can be); `ReplyToDevice` and `ReplyToPeer` count their cause as a
//! drop and write or send the answer (counted as `icmp_sent`, or `neigh_replies` for ARP/ND);
//! `AnswerToDevice` (the VXLAN L2 ARP/ND proxy) writes its answer into the device and
//! counts `neigh_proxied`; every `Flood` counts one `flood_packets`;
//! `Drop(reason)` counts `drop_<name>`. A verdict the engine does not know is counted as
//! `drop_bad_verdict`. Every drop is a counter, not a log line.
//!
//! ## What is lock-free, what is shared
//! - Routes: [`RouteTable`] keeps the canonical routes behind a mutex that only the control
//!   side takes, and publishes each change as a new immutable
//!   [`SubnetTable`](weft_encap::table::SubnetTable) through `arc-swap`. A worker loads the
//!   current snapshot once per batch (a lock-free pointer read), so a batch sees one
//!   consistent table and a route change never pauses the data path.
//! - Counters: each worker counts into plain integers and publishes the deltas to its own
//!   atomic counters once per loop iteration; reading sums the workers (so a count may lag a
//!   loop iteration behind).
//! - Shared through the backend's clones: the VXLAN FDB of L2 mode (one mutex per VNI, taken
//!   once per L2 frame: a MAC learnt by one worker is known to all) and the ICMP rate limit
//!   (a mutex taken only when an ICMP error is about to be generated, so the rate holds for
//!   the whole engine). Forwarding a packet with the flannel UDP backend or VXLAN L3 takes
//!   no lock at all.
//!
//! A per-packet policy hook ([`weft_encap::policy`], with ready-made rule sets in
//! [`weft_encap::acl`]) can judge every inner flow between the backend and the sockets and
//! devices.
//!
//! ## Offloads
//! A device opened with vnet headers (`TunOptions { vnet_hdr: true, .. }` and
//! [`Tun::set_offload`], or [`control::provision::create_tun`], which negotiates them) puts a
//! 10-byte `virtio_net_hdr` in front of every packet both ways (the engine reads it into the
//! end of the headroom, so the packet still starts right after the headroom), and changes
//! what crosses the device:
//!
//! - **Reads** may be TCP (or, with USO, UDP) super-packets of up to 64 KB. The engine judges
//!   each once, on its first segment (the backend sees that segment alone, its IP length
//!   rewritten), and a drop or an ICMP error for it stands for the whole super-packet. A
//!   packet to a peer is cut behind the backend's encapsulation prefix into the datagrams its
//!   segments would have made one by one, and sent as UDP GSO trains (one `sendmmsg` entry
//!   with `UDP_SEGMENT` carries up to 64 datagrams, 65,507 bytes); a socket that refuses GSO
//!   gets them one by one. A partial checksum (`NEEDS_CSUM`) is finished before the backend
//!   sees the packet.
//! - **Writes**: datagrams received as UDP GRO trains are judged one by one, then the
//!   packets delivered in one batch are coalesced (consecutive segments of one TCP flow, or
//!   UDP flow where the device accepted USO, each checksum verified first) into one
//!   super-packet, written with a single `writev` of
//!   `[vnet header][merged headers][payload slices...]` where the device passed a start-up
//!   probe of such writes. Other packets are written alone, behind a zero vnet header, or
//!   with `NEEDS_CSUM` and a GSO type when they are longer than the device's MTU or carry a
//!   partial checksum. Without vnet headers the device only ever sees plain packets, of at
//!   most its MTU where the engine knows it ([`Device::mtu`]).
//!
//! [`OffloadMode::Off`] turns all of that off; [`Engine::status`] says what is in use. The
//! pure parts (split, coalesce, checksums) are in `weft_encap::offload` and can be used
//! without the engine.
//!
//! ## API stability
//! weft is 0.x: a breaking change to the embedding surface bumps the minor version. That
//! surface is the items re-exported at the crate root, the rest of [`dataplane`] and the
//! whole `weft-encap` crate. [`control`] is the daemon's own machinery. It is public for the
//! `weft` binary and for the examples, and it can change in any release. So can the fields
//! of the counter structs in [`dataplane::counters`] (read counters through [`Stats`], by
//! name). Enums that can grow (errors, modes, drop reasons, verdicts) are
//! `#[non_exhaustive]`, so adding a variant to one is not a breaking change.
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

/// Makes every checksum `weft-encap` computes in this process use the widest vectors this
/// CPU has (AVX-512 or AVX2 on x86-64, detected at run time) and returns their width in
/// bits: 512, 256, or 128 when only the portable summer applies. Building an engine does
/// this; call it to get the same speed from `weft-encap` alone (its offload code, say). Once
/// per process; later calls change nothing and return the same width.
pub fn accelerate_checksums() -> u16 {
    sys::csum::install()
}
