//! The engine: workers running mio loops over devices, UDP sockets and a waker.
//!
//! ## Workers
//! An engine runs one or more workers ([`EngineBuilder::worker`]), each a thread with its own
//! `mio::Poll`, its own queue of every device (a multi-queue TUN/TAP opened once per worker)
//! and its own UDP socket (all bound to one port with `SO_REUSEPORT`). Workers share nothing
//! but the routing snapshots ([`RouteTable`], read lock-free once per batch) and the
//! backend's shared state: the VXLAN FDB of L2 mode (one mutex per VNI, taken once per L2
//! frame) and the ICMP rate limits (mutexes taken only when an error is about to be
//! generated). Forwarding with the flannel UDP backend or VXLAN L3 takes no lock. Counters are
//! per worker and summed when read ([`Engine::stats`]); a policy ([`EngineBuilder::policy`])
//! is cloned into each worker.
//!
//! The kernel keeps a flow on one worker: a TUN with several queues hands a flow's packets to
//! the queue that last wrote that flow's packets, and `SO_REUSEPORT` hashes the outer
//! addresses and ports onto one socket. flannel's UDP backend uses port 8285 at both ends, so
//! that hash alone would send everything from one peer host to one worker's socket; `weft
//! run` attaches a classic BPF program to the reuseport group that hashes the inner flow
//! instead ([`crate::control::provision::steer_flannel_flows`]), and an embedder running
//! several workers with the UDP backend should call it on the first listening socket.
//! VXLAN's per-flow source ports spread flows over the workers without it.
//!
//! ## The loop
//! Each wake-up a worker alternates between the directions, one batch (up to
//! [`EngineBuilder::batch_size`] packets) at a time and at most [`MAX_BATCHES_PER_WAKE`]
//! batches per direction, until everything is drained to `WouldBlock` or the cap is hit; a
//! capped direction stays marked ready and the next poll does not block, so no direction
//! starves another and control messages are seen between rounds.
//!
//! - device -> socket: read packets into pooled buffers (headroom in front), let the
//!   [`Backend`] decide, send the batch with one `sendmmsg` per socket. A TCP/UDP
//!   super-packet read from a device with offloads is judged once, on its first segment, and
//!   cut into a GSO train of datagrams ([`crate::dataplane::offload`]). When a socket is full
//!   the unsent tail is kept and no device is read until it is writable again.
//! - socket -> device: one `recvmmsg` for the batch (a buffer may hold a UDP GRO train), let
//!   the backend decide each datagram, then write what is delivered: with offloads,
//!   consecutive segments of one TCP flow are coalesced into one super-packet written with
//!   `writev` (no userspace copy of the payload).
//!
//! The UDP source port: flannel's UDP backend sends from the listening socket (both ends
//! use port 8285). VXLAN asks for a per-flow source port (RFC 7348 section 5); each worker
//! keeps a small pool of sockets bound to ports in the configured range and sends each flow
//! from `pool[hash % pool.len()]`.
//!
//! No allocation happens per packet: buffers, mmsg arrays, train and coalescing state are
//! allocated when a worker starts (a flood to more peers than ever before grows a list once).

use std::any::Any;
use std::io;
use std::net::UdpSocket as StdUdpSocket;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::Waker;
use weft_encap::backend::Backend;
use weft_encap::flannel::{FlannelBackend, FlannelConfig};
use weft_encap::icmp::IcmpResponder;
use weft_encap::policy::{AllowAll, Policed, Policy, DEFAULT_REJECT_RATE};

use crate::dataplane::counters::{Counters, EngineCounters, Stats};
use crate::dataplane::device::Device;
use crate::dataplane::routes::RouteTable;
use crate::dataplane::worker::{Control, Inspect, Worker, WorkerIo};

/// Bytes kept free in front of every packet buffer (room for headers prepended in place).
pub const HEADROOM: usize = 64;
/// The largest packet or datagram payload a buffer holds.
pub const MAX_PACKET: usize = 65535;
/// Default and maximum packets per batch (one `recvmmsg`/`sendmmsg` call).
pub const MAX_BATCH: usize = 64;
/// Batches per direction per wake-up before the other direction and the waker get a turn.
pub const MAX_BATCHES_PER_WAKE: usize = 8;

/// An engine failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Setting up a worker's poll loop failed.
    #[error("cannot {what}: {source}")]
    Setup {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The devices given do not match what the backend serves (count, kind or name).
    #[error("worker {worker}: {problem}")]
    Devices {
        /// The worker whose devices are wrong.
        worker: usize,
        /// What is wrong.
        problem: String,
    },
    /// A worker stopped with an I/O error.
    #[error("worker stopped: {0}")]
    Worker(#[source] io::Error),
    /// A worker thread panicked.
    #[error("worker thread panicked")]
    Panicked,
}

/// The longest [`EngineBuilder::busy_poll`] window: one second.
pub const MAX_BUSY_POLL: Duration = Duration::from_secs(1);

/// What every worker of an engine is told besides its I/O.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// Packets per batch.
    pub(crate) batch: usize,
    /// Whether offloads may be used.
    pub(crate) mode: OffloadMode,
    /// How long to keep polling after the last packet.
    pub(crate) busy_poll: Duration,
}

/// Whether the engine may use offloads (vnet headers, GSO/GRO) where devices and sockets
/// offer them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OffloadMode {
    /// Use what the kernel accepts: TUN super-packets (split here), coalesced writes (after a
    /// start-up probe), UDP GSO and GRO.
    #[default]
    Auto,
    /// One packet per datagram and per device write, whatever the kernel offers.
    Off,
}

/// What a running engine uses, as detected when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OffloadStatus {
    /// Workers running.
    pub workers: usize,
    /// Devices read with a vnet header (super-packets and partial checksums possible).
    pub tun_vnet_hdr: bool,
    /// The kernel may hand over TCP super-packets (TSO).
    pub tun_tso: bool,
    /// The kernel may hand over UDP super-packets (USO, Linux 6.2).
    pub tun_uso: bool,
    /// Coalesced super-packets are written to the devices (the write probe passed).
    pub tun_gso_write: bool,
    /// Datagrams go out as UDP GSO trains.
    pub udp_gso: bool,
    /// Datagrams come in as UDP GRO trains.
    pub udp_gro: bool,
    /// Width in bits of the vectors the checksums are summed with: 512 (AVX-512), 256
    /// (AVX2) or 128 (the portable summer, SSE2 on x86-64's baseline).
    pub checksum_bits: u16,
}

impl OffloadStatus {
    fn gauges(&self) -> Vec<(String, u64)> {
        [
            ("workers", self.workers as u64),
            ("offload_tun_vnet_hdr", u64::from(self.tun_vnet_hdr)),
            ("offload_tun_tso", u64::from(self.tun_tso)),
            ("offload_tun_uso", u64::from(self.tun_uso)),
            ("offload_tun_gso_write", u64::from(self.tun_gso_write)),
            ("offload_udp_gso", u64::from(self.udp_gso)),
            ("offload_udp_gro", u64::from(self.udp_gro)),
            ("offload_checksum_bits", u64::from(self.checksum_bits)),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect()
    }
}

/// Builds an [`Engine`] from devices, bound UDP sockets, routes and a backend.
///
/// ```no_run
/// use std::net::UdpSocket;
/// use weft::{Engine, MemoryDevice, RouteTable};
/// use weft_encap::flannel::FlannelConfig;
///
/// let (device, _kernel_side) = MemoryDevice::pair()?;
/// let socket = UdpSocket::bind("198.18.0.1:8285")?;
/// let routes = RouteTable::default();
/// let engine = Engine::builder(device, socket)
///     .routes(routes.clone())
///     .flannel(FlannelConfig::default())
///     .spawn()?;
/// routes.insert(weft_encap::table::Route {
///     subnet: "100.96.2.0/24".parse().unwrap(),
///     endpoint: "198.18.0.2:8285".parse().unwrap(),
///     vtep_mac: None,
/// }).unwrap();
/// println!("{}", engine.stats());
/// engine.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct EngineBuilder<D, B, P = AllowAll> {
    workers: Vec<WorkerIo<D>>,
    routes: Vec<RouteTable>,
    backend: B,
    policy: P,
    batch: usize,
    offload: OffloadMode,
    busy_poll: Duration,
}

impl<D: Device, B: Backend + Clone, P: Policy + Clone> EngineBuilder<D, B, P> {
    /// Uses this route table for the first device (a shared handle: keep a clone to edit
    /// routes later).
    pub fn routes(mut self, routes: RouteTable) -> Self {
        self.routes[0] = routes;
        self
    }

    /// Adds another device to the first worker, with its own routes (VXLAN: one per VNI, in
    /// the backend's VNI order; the engine checks the order when it starts).
    pub fn device(mut self, device: D, routes: RouteTable) -> Self {
        self.workers[0].devices.push(device);
        self.routes.push(routes);
        self
    }

    /// Adds a worker with its own queue of every device (in the same order as the first
    /// worker's), its own listening socket (bound to the same address with `SO_REUSEPORT`)
    /// and its own source-port sockets. Every worker's listening socket, the first one's
    /// included, must be bound with `SO_REUSEPORT`
    /// ([`crate::control::provision::bind_udp_shared`]`(addr, true)`).
    pub fn worker(
        mut self,
        devices: Vec<D>,
        socket: StdUdpSocket,
        source_sockets: Vec<StdUdpSocket>,
    ) -> Self {
        self.workers.push(WorkerIo {
            devices,
            socket,
            source_sockets,
            other_socket: None,
            group_socket: None,
        });
        self
    }

    /// Gives the worker added last (the first worker if no other was added) a second
    /// listening socket, of the other address family than its first: a dual-stack underlay,
    /// where peers of either family are reached (and heard) each through the socket of its
    /// family. The engine refuses a socket of the first one's family when it starts.
    pub fn other_family_socket(mut self, socket: StdUdpSocket) -> Self {
        if let Some(last) = self.workers.last_mut() {
            last.other_socket = Some(socket);
        }
        self
    }

    /// Gives the worker added last (the first worker if no other was added) a socket bound
    /// to a VXLAN multicast group address and port and joined to the group: what the group
    /// carries is read from it and handled like any datagram (floods sent to the group come
    /// back this way from the other members); nothing is sent from it.
    pub fn group_socket(mut self, socket: StdUdpSocket) -> Self {
        if let Some(last) = self.workers.last_mut() {
            last.group_socket = Some(socket);
        }
        self
    }

    /// Uses the flannel UDP backend with these settings.
    pub fn flannel(self, config: FlannelConfig) -> EngineBuilder<D, FlannelBackend, P> {
        self.backend(FlannelBackend::new(config))
    }

    /// Uses this backend (e.g. [`weft_encap::vxlan::VxlanBackend`]); every worker runs a
    /// clone of it.
    pub fn backend<B2: Backend + Clone>(self, backend: B2) -> EngineBuilder<D, B2, P> {
        EngineBuilder {
            workers: self.workers,
            routes: self.routes,
            backend,
            policy: self.policy,
            batch: self.batch,
            offload: self.offload,
            busy_poll: self.busy_poll,
        }
    }

    /// Judges every packet with `policy` ([`weft_encap::policy`]): each worker runs a clone
    /// of it, after the backend on the way out (so it sees the peer) and before the device
    /// on the way in. Refused packets are counted as `drop_policy`. Without this the engine
    /// allows everything at no cost ([`AllowAll`]). A closure
    /// `|flow: &FlowKey, ctx: &PolicyContext| -> Decision` is a policy, and so is
    /// [`weft_encap::acl::Acl::policy`] (rules that can be replaced while the engine runs).
    pub fn policy<P2: Policy + Clone>(self, policy: P2) -> EngineBuilder<D, B, P2> {
        EngineBuilder {
            workers: self.workers,
            routes: self.routes,
            backend: self.backend,
            policy,
            batch: self.batch,
            offload: self.offload,
            busy_poll: self.busy_poll,
        }
    }

    /// Sockets for the first worker to send per-flow traffic from (VXLAN source ports);
    /// without any, everything is sent from the listening socket.
    pub fn source_sockets(mut self, sockets: Vec<StdUdpSocket>) -> Self {
        self.workers[0].source_sockets = sockets;
        self
    }

    /// Packets per batch, 1 to [`MAX_BATCH`] (default [`MAX_BATCH`]); 1 behaves like
    /// flanneld's one-syscall-per-packet proxy.
    pub fn batch_size(mut self, batch: usize) -> Self {
        self.batch = batch.clamp(1, MAX_BATCH);
        self
    }

    /// Whether to use offloads where the devices and sockets offer them (default
    /// [`OffloadMode::Auto`]).
    pub fn offload(mut self, mode: OffloadMode) -> Self {
        self.offload = mode;
        self
    }

    /// How long a worker keeps polling its device and socket without sleeping after it last
    /// had packets to move (default zero: it sleeps as soon as both are drained), at most
    /// [`MAX_BUSY_POLL`].
    ///
    /// Waking a sleeping thread costs tens of microseconds where the CPU it runs on has gone
    /// idle (more in a virtual machine), and a packet crossing two weft hosts and back wakes
    /// up to four of them; a worker that is still polling when the next packet comes saves
    /// that, at the price of a CPU kept busy for this long after every burst.
    pub fn busy_poll(mut self, window: Duration) -> Self {
        self.busy_poll = window.min(MAX_BUSY_POLL);
        self
    }

    /// Checks the devices against the backend and starts the workers.
    pub fn spawn(self) -> Result<Engine, EngineError> {
        for (w, io) in self.workers.iter().enumerate() {
            check_devices(w, &io.devices, &self.backend, self.routes.len())?;
        }
        let mut status = OffloadStatus {
            workers: self.workers.len(),
            checksum_bits: crate::sys::csum::install(),
            ..OffloadStatus::default()
        };
        let mut handles = Vec::with_capacity(self.workers.len());
        // One limit on policy rejections for all the workers together.
        let icmp = IcmpResponder::new(DEFAULT_REJECT_RATE, DEFAULT_REJECT_RATE);
        let mut counters = Vec::with_capacity(self.workers.len());
        for (w, io) in self.workers.into_iter().enumerate() {
            let worker_counters = Arc::new(Counters::default());
            let (control_tx, control_rx) = mpsc::channel();
            let (worker, waker, worker_status) = Worker::new(
                w,
                io,
                self.routes.clone(),
                Policed::new(self.backend.clone(), self.policy.clone()).with_icmp(icmp.clone()),
                worker_counters.clone(),
                control_rx,
                Tuning {
                    batch: self.batch,
                    mode: self.offload,
                    busy_poll: self.busy_poll,
                },
            )?;
            if w == 0 {
                status = OffloadStatus {
                    workers: status.workers,
                    checksum_bits: status.checksum_bits,
                    ..worker_status
                };
            }
            let thread = std::thread::Builder::new()
                .name(format!("weft-worker-{w}"))
                .spawn(move || worker.run())
                .map_err(|source| EngineError::Setup {
                    what: "start a worker thread",
                    source,
                })?;
            counters.push(worker_counters);
            handles.push(WorkerHandle {
                waker,
                control: control_tx,
                thread: Some(thread),
            });
        }
        let counters = EngineCounters::new(counters, status.gauges());
        Ok(Engine {
            routes: self.routes,
            counters,
            status,
            workers: handles,
        })
    }
}

/// Refuses devices that do not match what the backend serves.
fn check_devices<D: Device, B: Backend>(
    worker: usize,
    devices: &[D],
    backend: &B,
    tables: usize,
) -> Result<(), EngineError> {
    let problem = |problem: String| EngineError::Devices { worker, problem };
    if devices.len() != backend.devices() || devices.len() != tables {
        return Err(problem(format!(
            "{} device(s) and {} route table(s) given, the backend serves {}",
            devices.len(),
            tables,
            backend.devices()
        )));
    }
    for (i, device) in devices.iter().enumerate() {
        if let (Some(has), Some(wants)) = (device.layer(), backend.device_layer(i)) {
            if has != wants {
                return Err(problem(format!(
                    "device #{i} ({}) carries {has:?} but the backend's device #{i} is {wants:?}",
                    device.name().unwrap_or("unnamed")
                )));
            }
        }
        if let (Some(has), Some(wants)) = (device.name(), backend.device_name(i)) {
            if has != wants {
                return Err(problem(format!(
                    "device #{i} is {has:?} but the backend's device #{i} is {wants:?}"
                )));
            }
        }
    }
    Ok(())
}

struct WorkerHandle {
    waker: Arc<Waker>,
    control: Sender<Control>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// A running engine: its routes, its counters, and the way to stop it.
///
/// Dropping an `Engine` stops its workers too (errors are then only logged).
pub struct Engine {
    routes: Vec<RouteTable>,
    counters: EngineCounters,
    status: OffloadStatus,
    workers: Vec<WorkerHandle>,
}

impl Engine {
    /// Starts building an engine over `device` and the bound UDP `socket` (the first
    /// worker), with the flannel UDP backend and an empty route table until told otherwise.
    pub fn builder<D: Device>(device: D, socket: StdUdpSocket) -> EngineBuilder<D, FlannelBackend> {
        EngineBuilder {
            workers: vec![WorkerIo {
                devices: vec![device],
                socket,
                source_sockets: Vec::new(),
                other_socket: None,
                group_socket: None,
            }],
            routes: vec![RouteTable::default()],
            backend: FlannelBackend::new(FlannelConfig::default()),
            policy: AllowAll,
            batch: MAX_BATCH,
            offload: OffloadMode::Auto,
            busy_poll: Duration::ZERO,
        }
    }

    /// The route table of the first device; edits take effect for the next batch.
    pub fn routes(&self) -> &RouteTable {
        &self.routes[0]
    }

    /// The route table of device `device` (VXLAN: of the VNI with that index).
    pub fn device_routes(&self, device: usize) -> Option<&RouteTable> {
        self.routes.get(device)
    }

    /// A snapshot of the counters, summed over the workers, with the offload gauges.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// The counters themselves, for a control plane that outlives borrows of `self`.
    pub fn counters_handle(&self) -> EngineCounters {
        self.counters.clone()
    }

    /// The workers and offloads in use.
    pub fn status(&self) -> OffloadStatus {
        self.status
    }

    /// A handle that can look into the running backend; see [`Inspector::inspect`].
    pub fn inspector(&self) -> Inspector {
        Inspector {
            control: self.workers[0].control.clone(),
            waker: self.workers[0].waker.clone(),
        }
    }

    /// Replaces device `device` with `queues`, one per worker in worker order (the first
    /// worker's queue first): how a control plane puts back a device that vanished (deleted
    /// by an operator) without restarting the engine. Each worker closes its old queue,
    /// takes its new one between batches and detects its offloads again. The queues must be
    /// of the type the engine was built with, or the workers ignore them.
    pub fn replace_device<D: Device + 'static>(
        &self,
        device: usize,
        queues: Vec<D>,
    ) -> Result<(), EngineError> {
        if queues.len() != self.workers.len() || device >= self.routes.len() {
            return Err(EngineError::Devices {
                worker: 0,
                problem: format!(
                    "replacing device #{device} needs one queue per worker ({}), got {}",
                    self.workers.len(),
                    queues.len()
                ),
            });
        }
        for (w, queue) in self.workers.iter().zip(queues) {
            // A worker that is gone cannot take it; is_running says so.
            let _ = w
                .control
                .send(Control::ReplaceDevice(device, Box::new(queue)));
            let _ = w.waker.wake();
        }
        Ok(())
    }

    /// True while every worker runs.
    pub fn is_running(&self) -> bool {
        self.workers
            .iter()
            .all(|w| w.thread.as_ref().is_some_and(|t| !t.is_finished()))
    }

    /// Stops the workers, waits for them, and releases the devices and sockets.
    pub fn shutdown(mut self) -> Result<(), EngineError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), EngineError> {
        for w in &self.workers {
            // Either may fail only if the worker is already gone; join tells why.
            let _ = w.control.send(Control::Shutdown);
            let _ = w.waker.wake();
        }
        let mut result = Ok(());
        for w in &mut self.workers {
            let Some(thread) = w.thread.take() else {
                continue;
            };
            let outcome = match thread.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(EngineError::Worker(e)),
                Err(_) => Err(EngineError::Panicked),
            };
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!("{e}");
        }
    }
}

/// Runs queries on the first worker's backend (e.g. listing a VXLAN FDB, which all workers
/// share), between batches.
#[derive(Clone)]
pub struct Inspector {
    control: Sender<Control>,
    waker: Arc<Waker>,
}

impl Inspector {
    /// Runs `f` on the backend, if it is a `B`, and returns its result; `None` if the
    /// backend is another type, the worker is gone, or it does not answer within 5 s.
    pub fn inspect<B: Any, R: Send + 'static>(
        &self,
        f: impl FnOnce(&B) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        let query: Inspect = Box::new(move |backend: &dyn Any| {
            let _ = tx.send(backend.downcast_ref::<B>().map(f));
        });
        self.control.send(Control::Inspect(query)).ok()?;
        self.waker.wake().ok()?;
        rx.recv_timeout(Duration::from_secs(5)).ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    //! The engine's logic over in-memory devices and real UDP sockets on loopback, in a
    //! private network namespace per test.
    use crate::sys::test_support::skip_unless_root;
    use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    use weft_encap::table::Route;
    use weft_encap::verdict::DropReason;
    use weft_encap::wire::{icmpv4, ipv4, PROTO_UDP};

    use super::*;
    use crate::dataplane::device::MemoryDevice;

    fn private_loopback() {
        crate::sys::unshare_netns().expect("unshare a network namespace (tests run as root)");
        let mut nl = crate::sys::Netlink::open().unwrap();
        let lo = nl.link_by_name("lo").unwrap().unwrap();
        nl.set_up(lo.index).unwrap();
    }

    fn packet(src: [u8; 4], dst: [u8; 4], ttl: u8, payload: usize) -> Vec<u8> {
        let repr = ipv4::Repr {
            src_addr: Ipv4Addr::from(src),
            dst_addr: Ipv4Addr::from(dst),
            protocol: PROTO_UDP,
            payload_len: payload,
            ttl,
        };
        let mut bytes = vec![0u8; 20 + payload];
        repr.emit(&mut ipv4::Packet::new_unchecked(&mut bytes[..]));
        bytes
    }

    struct Host {
        engine: Engine,
        kernel: UnixDatagram,
        addr: SocketAddr,
    }

    fn host(ip: &str, routes: Vec<Route>) -> Host {
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        let addr = socket.local_addr().unwrap();
        let (device, kernel) = MemoryDevice::pair().unwrap();
        kernel
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let engine = Engine::builder(device, socket)
            .routes(RouteTable::new(routes).unwrap())
            .flannel(FlannelConfig {
                local_v4: Some(Ipv4Addr::new(100, 96, 1, 0)),
                ..FlannelConfig::default()
            })
            .spawn()
            .unwrap();
        Host {
            engine,
            kernel,
            addr,
        }
    }

    fn route(subnet: &str, endpoint: SocketAddr) -> Route {
        Route {
            subnet: subnet.parse().unwrap(),
            endpoint,
            vtep_mac: None,
        }
    }

    /// Polls `cond` until it holds (1 ms apart at first, backing off to 20 ms), for at most
    /// 5 s.
    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut pause = Duration::from_millis(1);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Two engines joined over loopback; B's endpoint is known before A starts because B's
    /// socket is bound first, and A's is patched into B's routes afterwards.
    fn pair() -> (Host, Host) {
        private_loopback();
        let b = host("127.0.0.2", vec![]);
        let a = host("127.0.0.1", vec![route("100.96.2.0/24", b.addr)]);
        b.engine
            .routes()
            .insert(route("100.96.1.0/24", a.addr))
            .unwrap();
        (a, b)
    }

    #[test]
    fn packets_cross_between_two_engines_in_batches() {
        skip_unless_root!();
        let (a, b) = pair();
        let mut buf = [0u8; 2048];
        // Bursts of 50 written before any is read: the workers find several packets waiting
        // and move them with one system call.
        let packets: Vec<Vec<u8>> = (0..300u16)
            .map(|i| packet([100, 96, 1, 5], [100, 96, 2, 7], 64, 1 + usize::from(i) * 4))
            .collect();
        for burst in packets.chunks(50) {
            for pkt in burst {
                a.kernel.send(pkt).unwrap();
            }
            for pkt in burst {
                let n = b.kernel.recv(&mut buf).expect("delivered at B");
                let got = ipv4::Packet::new_checked(&buf[..n]).unwrap();
                assert_eq!(n, pkt.len(), "in order, whole");
                assert_eq!(got.ttl(), 62, "decremented on send and on receive");
                assert!(got.verify_checksum());
                assert_eq!(got.payload(), &pkt[20..]);
            }
        }
        wait_for("counters to be published", || {
            a.engine.stats().get("tx_packets") == Some(300)
        });
        wait_for("B's counters", || {
            b.engine.stats().get("rx_packets") == Some(300)
        });
        let (sa, sb) = (a.engine.stats(), b.engine.stats());
        assert_eq!(sb.get("udp_rx_packets"), Some(300));
        // Batches of more than one, on both sides: fewer system calls than packets.
        let sends = sa.get("send_batches").unwrap();
        let recvs = sb.get("recv_batches").unwrap();
        assert!(sends < 300, "A sent 300 packets in {sends} sendmmsg calls");
        assert!(
            recvs < 300,
            "B received 300 datagrams in {recvs} recvmmsg calls"
        );
    }

    #[test]
    fn a_route_removed_at_runtime_turns_into_net_unreachable() {
        skip_unless_root!();
        let (a, b) = pair();
        let mut buf = [0u8; 2048];
        let pkt = packet([100, 96, 1, 5], [100, 96, 2, 7], 64, 100);
        a.kernel.send(&pkt).unwrap();
        b.kernel.recv(&mut buf).unwrap();
        a.engine
            .routes()
            .remove(&"100.96.2.0/24".parse().unwrap())
            .unwrap();
        a.kernel.send(&pkt).unwrap();
        let n = a
            .kernel
            .recv(&mut buf)
            .expect("an ICMP error back into A's device");
        let ip = ipv4::Packet::new_checked(&buf[..n]).unwrap();
        let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!((icmp.msg_type(), icmp.code()), (3, 0));
        wait_for("drop_no_route", || {
            a.engine.stats().drops(DropReason::NoRoute) == 1
        });
        assert_eq!(a.engine.stats().get("icmp_sent"), Some(1));
        // Re-adding it restores traffic.
        a.engine
            .routes()
            .insert(route("100.96.2.0/24", b.addr))
            .unwrap();
        a.kernel.send(&pkt).unwrap();
        let n = b.kernel.recv(&mut buf).unwrap();
        assert_eq!(n, pkt.len());
    }

    #[test]
    fn datagrams_from_strangers_are_dropped_and_counted() {
        skip_unless_root!();
        let (_a, b) = pair();
        let stranger = UdpSocket::bind("127.0.0.3:0").unwrap();
        stranger
            .send_to(&packet([100, 96, 1, 5], [100, 96, 2, 7], 64, 10), b.addr)
            .unwrap();
        wait_for("drop_unknown_peer", || {
            b.engine.stats().drops(DropReason::UnknownPeer) == 1
        });
        assert_eq!(b.engine.stats().get("rx_packets"), Some(0));
    }

    const MSS: usize = 1432;

    /// A TCP/IPv4 super-packet of `segments` full segments from 100.96.1.5 to 100.96.2.7, as
    /// a TUN with TSO hands it over: vnet header (TCPV4, NEEDS_CSUM), one header whose IP
    /// length covers the whole packet, the pseudo-header sum in the TCP checksum field.
    fn super_packet(segments: usize, seq: u32, fill: u8) -> Vec<u8> {
        let hdr = weft_encap::offload::vnet::VnetHdr {
            flags: 1,
            gso_type: 1,
            hdr_len: 40,
            gso_size: MSS as u16,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut p = weft_testbed::tcp_super_packet(10, MSS, segments, seq, false, |i| {
            fill.wrapping_add((i % 251) as u8)
        });
        p[..10].copy_from_slice(&hdr.emit());
        p
    }

    /// Two engines over loopback on in-memory devices with vnet headers; `tweak` may change
    /// A's socket before it starts.
    fn offload_pair(tweak: impl FnOnce(&UdpSocket)) -> (Host, Host) {
        private_loopback();
        let sb = UdpSocket::bind("127.0.0.2:0").unwrap();
        let sa = UdpSocket::bind("127.0.0.1:0").unwrap();
        tweak(&sa);
        let (addr_a, addr_b) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
        let start = |socket, local: [u8; 4], peer: &str, endpoint| {
            let (device, kernel) = MemoryDevice::pair().unwrap();
            kernel
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let engine = Engine::builder(device.with_vnet_hdr(1472), socket)
                .routes(RouteTable::new(vec![route(peer, endpoint)]).unwrap())
                .flannel(FlannelConfig {
                    local_v4: Some(Ipv4Addr::from(local)),
                    ..FlannelConfig::default()
                })
                .spawn()
                .unwrap();
            // The GSO write probe.
            let mut probe = [0u8; 512];
            kernel.recv(&mut probe).expect("the probe");
            Host {
                engine,
                kernel,
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            }
        };
        let a = start(sa, [100, 96, 1, 0], "100.96.2.0/24", addr_b);
        let b = start(sb, [100, 96, 2, 0], "100.96.1.0/24", addr_a);
        (a, b)
    }

    /// Sends `count` super-packets into A and returns the TCP payload B's device got, in
    /// order, with the number of writes it took.
    fn carry_super_packets(a: &Host, b: &Host, count: usize) -> (Vec<u8>, Vec<u8>, usize) {
        let mut sent = Vec::new();
        let mut got = Vec::new();
        let mut writes = 0;
        let mut buf = vec![0u8; 70_000];
        for k in 0..count {
            let seq = 1000 + (k * MSS * 44) as u32;
            let p = super_packet(44, seq, k as u8);
            sent.extend_from_slice(&p[50..]);
            a.kernel.send(&p).unwrap();
            while got.len() < sent.len() {
                let n = b
                    .kernel
                    .recv(&mut buf)
                    .expect("B's device gets the segments");
                let hdr = weft_encap::offload::vnet::VnetHdr::parse(&buf[..10]).unwrap();
                let ip = ipv4::Packet::new_checked(&buf[10..n]).unwrap();
                let hl = 20 + usize::from(buf[10 + 20 + 12] >> 4) * 4;
                if !hdr.is_gso() {
                    // A packet written alone carries a complete, valid checksum.
                    assert_eq!(
                        weft_encap::offload::vnet::l4_checksum_state(&buf[10..n], 0),
                        weft_encap::offload::vnet::L4Checksum::Valid
                    );
                }
                got.extend_from_slice(&buf[10 + hl..10 + usize::from(ip.total_len())]);
                writes += 1;
            }
        }
        (sent, got, writes)
    }

    #[test]
    fn super_packets_cross_as_gso_trains_and_arrive_coalesced() {
        skip_unless_root!();
        let (a, b) = offload_pair(|_| {});
        let (sent, got, writes) = carry_super_packets(&a, &b, 20);
        assert!(sent == got, "the payload arrives intact and in order");
        assert!(writes <= 20 * 4, "{writes} writes for 20 super-packets");
        wait_for("A's counters", || {
            a.engine.stats().get("device_rx_super") == Some(20)
        });
        let (sa, sb) = (a.engine.stats(), b.engine.stats());
        assert_eq!(sa.get("device_rx_segments"), Some(20 * 44), "{sa}");
        // 44 datagrams of 1,472 bytes fit one train (at most 65,507 bytes).
        assert_eq!(sa.get("gso_trains"), Some(20), "{sa}");
        assert_eq!(sa.get("gso_fallbacks"), Some(0), "{sa}");
        assert!(sb.get("gro_trains").unwrap() > 0, "{sb}");
        assert!(sb.get("coalesced_packets").unwrap() > 0, "{sb}");
    }

    #[test]
    fn a_socket_that_refuses_gso_falls_back_to_single_datagrams() {
        skip_unless_root!();
        let (a, b) = offload_pair(|s| crate::sys::set_udp_no_check(s).unwrap());
        let (sent, got, _) = carry_super_packets(&a, &b, 5);
        assert!(sent == got, "the payload arrives intact and in order");
        wait_for("A's counters", || {
            a.engine.stats().get("device_rx_super") == Some(5)
        });
        let sa = a.engine.stats();
        assert_eq!(
            sa.get("gso_fallbacks"),
            Some(1),
            "GSO turned off once: {sa}"
        );
        assert_eq!(sa.get("gso_trains"), Some(0), "{sa}");
        assert_eq!(sa.get("tx_packets"), Some(5 * 44), "{sa}");
        assert_eq!(sa.drops(DropReason::IoError), 0, "{sa}");
    }

    #[test]
    fn trains_longer_than_the_path_allows_are_recut_down_to_single_datagrams() {
        skip_unless_root!();
        // The loopback's MTU below what the engines were told (1,500): every 1,472-byte
        // datagram of a train is too big for the path (EMSGSIZE), while a single one is
        // still sent (fragmented by the kernel).
        let (a, b) = offload_pair(|_| {
            let mut nl = crate::sys::Netlink::open().unwrap();
            let lo = nl.link_by_name("lo").unwrap().unwrap();
            nl.set_mtu(lo.index, 1400).unwrap();
        });
        let (sent, got, _) = carry_super_packets(&a, &b, 3);
        assert!(sent == got, "the payload arrives intact and in order");
        wait_for("A's counters", || {
            a.engine.stats().get("device_rx_super") == Some(3)
        });
        let sa = a.engine.stats();
        assert!(sa.get("gso_recuts").unwrap() >= 1, "{sa}");
        assert_eq!(sa.get("tx_packets"), Some(3 * 44), "{sa}");
        assert_eq!(sa.drops(DropReason::IoError), 0, "{sa}");
    }

    #[test]
    fn a_dual_stack_underlay_sends_and_hears_each_family_on_its_own_socket() {
        skip_unless_root!();
        private_loopback();
        let peer6 = UdpSocket::bind("[::1]:0").unwrap();
        peer6
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let socket6 = UdpSocket::bind("[::1]:0").unwrap();
        let addr6 = socket6.local_addr().unwrap();
        let (device, kernel) = MemoryDevice::pair().unwrap();
        kernel
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let routes =
            RouteTable::new(vec![route("100.96.2.0/24", peer6.local_addr().unwrap())]).unwrap();
        let engine = Engine::builder(device, socket)
            .other_family_socket(socket6)
            .routes(routes)
            .flannel(FlannelConfig {
                local_v4: Some(Ipv4Addr::new(100, 96, 1, 0)),
                ..FlannelConfig::default()
            })
            .spawn()
            .unwrap();

        // Out: a packet for the IPv6 peer leaves from the IPv6 socket.
        let pkt = packet([100, 96, 1, 5], [100, 96, 2, 7], 64, 100);
        kernel.send(&pkt).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = peer6.recv_from(&mut buf).expect("sent over IPv6");
        assert_eq!(from, addr6, "from the IPv6 listening socket");
        assert_eq!(&buf[20..n], &pkt[20..], "the flannel datagram");

        // In: the peer's answer to the IPv6 socket reaches the device.
        let reply = packet([100, 96, 2, 7], [100, 96, 1, 5], 64, 80);
        peer6.send_to(&reply, addr6).unwrap();
        let n = kernel
            .recv(&mut buf)
            .expect("delivered from the IPv6 socket");
        assert_eq!(&buf[20..n], &reply[20..]);

        // Both families for one engine from one builder, so the family check is the
        // engine's: a second socket of the first one's family is refused.
        let (device, _kernel) = MemoryDevice::pair().unwrap();
        let refused = Engine::builder(device, UdpSocket::bind("127.0.0.1:0").unwrap())
            .other_family_socket(UdpSocket::bind("127.0.0.1:0").unwrap())
            .spawn();
        assert!(matches!(refused, Err(EngineError::Setup { .. })));

        // Without an IPv6 socket, a packet for an IPv6 endpoint is counted, not sent.
        let (device, kernel) = MemoryDevice::pair().unwrap();
        let v4_only = Engine::builder(device, UdpSocket::bind("127.0.0.1:0").unwrap())
            .routes(
                RouteTable::new(vec![route("100.96.3.0/24", "[::1]:9".parse().unwrap())]).unwrap(),
            )
            .spawn()
            .unwrap();
        kernel
            .send(&packet([100, 96, 1, 5], [100, 96, 3, 7], 64, 100))
            .unwrap();
        wait_for("the unsendable packet to be counted", || {
            v4_only.stats().drops(DropReason::IoError) == 1
        });
        assert_eq!(v4_only.stats().get("tx_packets"), Some(0));
        drop(engine);
    }

    /// A VXLAN datagram from a peer whose answer is longer than itself: a neighbour
    /// solicitation without options (86 bytes with the VXLAN header) for the VTEP's IPv6
    /// address gets a 94-byte advertisement, written in place into the tailroom of the
    /// receive buffer (the last datagram of a buffer may use it).
    #[test]
    fn an_answer_longer_than_the_received_datagram_fits_in_the_tailroom() {
        use weft_encap::vxlan::{VniConfig, VxlanBackend, VxlanConfig, VxlanMode};
        use weft_encap::wire::ethernet::{self, EthernetAddress, ETHERTYPE_IPV6};
        use weft_encap::wire::{icmpv6, ipv6, vxlan, PROTO_ICMPV6};

        skip_unless_root!();
        private_loopback();
        let mac_a = EthernetAddress([0x02, 0, 0, 0, 0x01, 0]);
        let mac_b = EthernetAddress([0x02, 0, 0, 0, 0x02, 0]);
        let ours: std::net::Ipv6Addr = "fd00:100:96:1::".parse().unwrap();
        let theirs: std::net::Ipv6Addr = "fd00:100:96:2::".parse().unwrap();
        let group: std::net::Ipv6Addr = "ff02::1:ff00:0".parse().unwrap();
        // The peer: a plain socket; answers go to its address at the VXLAN port, its own.
        let peer = UdpSocket::bind("127.0.0.2:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let peer_addr = peer.local_addr().unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let (device, _kernel) = MemoryDevice::pair().unwrap();
        let routes = RouteTable::new(vec![Route {
            subnet: "fd00:100:96:2::/64".parse().unwrap(),
            endpoint: peer_addr,
            vtep_mac: Some(mac_b),
        }])
        .unwrap();
        let engine = Engine::builder(device, socket)
            .routes(routes)
            .backend(VxlanBackend::new(VxlanConfig {
                vnis: vec![VniConfig {
                    vni: 1,
                    mode: VxlanMode::L3,
                    vtep_mac: mac_a,
                    local_v4: None,
                    local_v6: Some(ours),
                    fdb: Default::default(),
                    device: None,
                }],
                port: peer_addr.port(),
                ..VxlanConfig::default()
            }))
            .spawn()
            .unwrap();

        // VXLAN 8 | Ethernet 14 | IPv6 40 | solicitation 24, no source link-layer option.
        let mut datagram = vec![0u8; 8 + 14 + 40 + 24];
        vxlan::Repr { vni: 1 }.emit(&mut vxlan::Header::new_unchecked(&mut datagram[..8]));
        ethernet::Repr {
            src_addr: mac_b,
            dst_addr: EthernetAddress([0x33, 0x33, 0xff, 0, 0, 0]),
            ethertype: ETHERTYPE_IPV6,
        }
        .emit(&mut ethernet::Frame::new_unchecked(&mut datagram[8..22]));
        ipv6::Repr {
            src_addr: theirs,
            dst_addr: group,
            next_header: PROTO_ICMPV6,
            payload_len: 24,
            hop_limit: 255,
        }
        .emit(&mut ipv6::Packet::new_unchecked(&mut datagram[22..62]));
        let mut ns = icmpv6::Packet::new_unchecked(&mut datagram[62..]);
        ns.set_msg_type(icmpv6::TYPE_NEIGHBOR_SOLICITATION);
        ns.data_mut()[..16].copy_from_slice(&ours.octets());
        ns.fill_checksum(&theirs, &group);
        peer.send_to(&datagram, addr).unwrap();

        let mut buf = [0u8; 2048];
        let (n, _) = peer
            .recv_from(&mut buf)
            .expect("the advertisement comes back");
        assert_eq!(n, 8 + 86, "longer than the solicitation");
        let answer = &buf[..n];
        assert_eq!(vxlan::Header::new_checked(answer).unwrap().vni(), 1);
        let eth = ethernet::Frame::new_checked(&answer[8..]).unwrap();
        assert_eq!((eth.src_addr(), eth.dst_addr()), (mac_a, mac_b));
        let ip = ipv6::Packet::new_checked(eth.payload()).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (ours, theirs));
        let na = icmpv6::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(na.msg_type(), icmpv6::TYPE_NEIGHBOR_ADVERTISEMENT);
        assert!(na.verify_checksum(&ours, &theirs));
        assert_eq!(
            &na.data()[16..24],
            &[2, 1, 2, 0, 0, 0, 1, 0],
            "our link-layer address"
        );
        wait_for("neigh_replies", || {
            engine.stats().get("neigh_replies") == Some(1)
        });
        assert_eq!(engine.stats().drops(DropReason::WrongDestMac), 0);
    }

    #[test]
    fn shutdown_stops_the_worker_and_releases_the_socket() {
        skip_unless_root!();
        let (a, _b) = pair();
        let addr = a.addr;
        assert!(a.engine.is_running());
        a.engine.shutdown().unwrap();
        UdpSocket::bind(addr).expect("the port is free again after shutdown");
    }
}
