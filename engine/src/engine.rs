//! The engine: one worker thread running a mio loop over a device, a UDP socket and a waker.
//!
//! ## The loop
//! A worker owns one [`Device`] queue and one UDP socket, both non-blocking and registered
//! edge-triggered with its own `mio::Poll`. Each wake-up it alternates between the two
//! directions, one batch (up to [`EngineBuilder::batch_size`] packets) at a time and at
//! most [`MAX_BATCHES_PER_WAKE`] batches per direction, until both are drained to
//! `WouldBlock` or the cap is hit; a capped direction stays marked ready and the next poll
//! does not block, so neither direction starves the other and control messages are seen
//! between rounds.
//!
//! - device -> socket: read packets one by one into pooled buffers (headroom in front), let
//!   the backend decide, send the batch with one `sendmmsg`. When the socket is full the
//!   unsent tail is kept and the device is not read until the socket is writable again
//!   (back-pressure instead of loss).
//! - socket -> device: one `recvmmsg` for the batch, let the backend decide each datagram,
//!   write the delivered packets to the device.
//!
//! The routing snapshot is loaded once per batch ([`RouteTable`]: a wait-free read). No
//! allocation happens per packet: the buffers, the mmsg arrays and the message lists are
//! allocated when the worker starts.

use std::io;
use std::net::UdpSocket as StdUdpSocket;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use weft_encap::flannel::{FlannelBackend, FlannelConfig};
use weft_encap::verdict::{DropReason, Verdict};

use crate::counters::{Counters, LocalCounters, Stats};
use crate::device::Device;
use crate::routes::RouteTable;
use crate::sys::{Mmsg, RecvMeta, SendMsg};

/// Bytes kept free in front of every packet buffer (room for headers prepended in place).
pub const HEADROOM: usize = 64;
/// The largest packet or datagram payload a buffer holds.
pub const MAX_PACKET: usize = 65535;
/// Default and maximum packets per batch (one `recvmmsg`/`sendmmsg` call).
pub const MAX_BATCH: usize = 64;
/// Batches per direction per wake-up before the other direction and the waker get a turn.
pub const MAX_BATCHES_PER_WAKE: usize = 8;

const DEVICE: Token = Token(0);
const SOCKET: Token = Token(1);
const WAKER: Token = Token(2);

/// An engine failure.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Setting up the worker's poll loop failed.
    #[error("cannot {what}: {source}")]
    Setup {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The worker stopped with an I/O error.
    #[error("worker stopped: {0}")]
    Worker(#[source] io::Error),
    /// The worker thread panicked.
    #[error("worker thread panicked")]
    Panicked,
}

enum Control {
    Shutdown,
}

/// Builds an [`Engine`] from a device, a bound UDP socket and routes.
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
pub struct EngineBuilder<D> {
    device: D,
    socket: StdUdpSocket,
    routes: RouteTable,
    flannel: FlannelConfig,
    batch: usize,
}

impl<D: Device> EngineBuilder<D> {
    /// Uses this route table (a shared handle: keep a clone to edit routes later).
    pub fn routes(mut self, routes: RouteTable) -> Self {
        self.routes = routes;
        self
    }

    /// Settings of the flannel UDP backend.
    pub fn flannel(mut self, config: FlannelConfig) -> Self {
        self.flannel = config;
        self
    }

    /// Packets per batch, 1 to [`MAX_BATCH`] (default [`MAX_BATCH`]); 1 behaves like
    /// flanneld's one-syscall-per-packet proxy.
    pub fn batch_size(mut self, batch: usize) -> Self {
        self.batch = batch.clamp(1, MAX_BATCH);
        self
    }

    /// Starts the worker thread.
    pub fn spawn(self) -> Result<Engine, EngineError> {
        let setup = |what| move |source| EngineError::Setup { what, source };
        let poll = Poll::new().map_err(setup("create the poll instance"))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(setup("create the waker"))?);
        self.socket
            .set_nonblocking(true)
            .map_err(setup("make the UDP socket non-blocking"))?;
        let mut socket = UdpSocket::from_std(self.socket);
        let mut device = self.device;
        poll.registry()
            .register(&mut device, DEVICE, Interest::READABLE)
            .map_err(setup("register the device"))?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE | Interest::WRITABLE)
            .map_err(setup("register the UDP socket"))?;
        let counters = Arc::new(Counters::default());
        let (control_tx, control_rx) = mpsc::channel();
        let worker = Worker {
            poll,
            device,
            socket,
            routes: self.routes.clone(),
            backend: FlannelBackend::new(self.flannel),
            counters: counters.clone(),
            local: LocalCounters::default(),
            icmp_rate_limited_seen: 0,
            control: control_rx,
            tx_bufs: buffers(self.batch),
            rx_bufs: buffers(self.batch),
            mmsg: Mmsg::new(self.batch),
            meta: vec![RecvMeta::default(); self.batch],
            tx_msgs: Vec::with_capacity(self.batch),
            tx_sent: 0,
            reply_msgs: Vec::with_capacity(self.batch),
            epoch: Instant::now(),
            batch: self.batch,
        };
        let thread = std::thread::Builder::new()
            .name("weft-worker".into())
            .spawn(move || worker.run())
            .map_err(setup("start the worker thread"))?;
        Ok(Engine {
            routes: self.routes,
            counters,
            waker,
            control: control_tx,
            thread: Some(thread),
        })
    }
}

fn buffers(n: usize) -> Vec<Box<[u8]>> {
    (0..n)
        .map(|_| vec![0u8; HEADROOM + MAX_PACKET].into_boxed_slice())
        .collect()
}

/// A running engine: its routes, its counters, and the way to stop it.
///
/// Dropping an `Engine` stops its worker too (errors are then only logged).
pub struct Engine {
    routes: RouteTable,
    counters: Arc<Counters>,
    waker: Arc<Waker>,
    control: Sender<Control>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Engine {
    /// Starts building an engine over `device` and the bound UDP `socket`.
    pub fn builder<D: Device>(device: D, socket: StdUdpSocket) -> EngineBuilder<D> {
        EngineBuilder {
            device,
            socket,
            routes: RouteTable::default(),
            flannel: FlannelConfig::default(),
            batch: MAX_BATCH,
        }
    }

    /// The engine's route table; edits take effect for the next batch.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// The shared counters themselves, for a control plane that outlives borrows of `self`.
    pub fn counters_handle(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// True while the worker thread runs.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the worker, waits for it, and releases the device and socket.
    pub fn shutdown(mut self) -> Result<(), EngineError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), EngineError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        // Either may fail only if the worker is already gone; join tells why.
        let _ = self.control.send(Control::Shutdown);
        let _ = self.waker.wake();
        match thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(EngineError::Worker(e)),
            Err(_) => Err(EngineError::Panicked),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::error!("{e}");
        }
    }
}

struct Worker<D> {
    poll: Poll,
    device: D,
    socket: UdpSocket,
    routes: RouteTable,
    backend: FlannelBackend,
    counters: Arc<Counters>,
    local: LocalCounters,
    icmp_rate_limited_seen: u64,
    control: Receiver<Control>,
    tx_bufs: Vec<Box<[u8]>>,
    rx_bufs: Vec<Box<[u8]>>,
    mmsg: Mmsg,
    meta: Vec<RecvMeta>,
    /// Datagrams from `tx_bufs` waiting to be sent; `tx_sent` of them already went out.
    tx_msgs: Vec<SendMsg>,
    tx_sent: usize,
    /// ICMP errors from `rx_bufs` going back to peers.
    reply_msgs: Vec<SendMsg>,
    epoch: Instant,
    batch: usize,
}

/// Writes one packet to the device, counting a failure as a drop.
fn write_device<D: Device>(device: &mut D, local: &mut LocalCounters, packet: &[u8]) -> bool {
    loop {
        match device.send(packet) {
            Ok(_) => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::debug!("device write of {} bytes failed: {e}", packet.len());
                local.drop(DropReason::IoError);
                return false;
            }
        }
    }
}

impl<D: Device> Worker<D> {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn tx_pending(&self) -> bool {
        self.tx_sent < self.tx_msgs.len()
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        // Edge-triggered: anything queued before registration has no edge, so start ready.
        let mut device_ready = true;
        let mut socket_ready = true;
        loop {
            let busy = (device_ready && !self.tx_pending()) || socket_ready;
            let timeout = if busy { Some(Duration::ZERO) } else { None };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    DEVICE => device_ready |= event.is_readable() || event.is_read_closed(),
                    SOCKET => socket_ready |= event.is_readable(),
                    WAKER => {
                        // Shutdown is the only message so far; a closed channel (the
                        // Engine handle is gone) means the same.
                        match self.control.try_recv() {
                            Ok(Control::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => {
                                return Ok(())
                            }
                            Err(mpsc::TryRecvError::Empty) => {}
                        }
                    }
                    _ => {}
                }
            }
            if self.tx_pending() {
                self.flush_tx();
            }
            for _ in 0..MAX_BATCHES_PER_WAKE {
                let mut worked = false;
                if device_ready && !self.tx_pending() {
                    device_ready = self.device_to_socket();
                    worked = true;
                }
                if socket_ready {
                    socket_ready = self.socket_to_device();
                    worked = true;
                }
                if !worked {
                    break;
                }
            }
            self.publish();
        }
    }

    fn publish(&mut self) {
        let limited = self.backend.icmp_stats().rate_limited;
        self.local.icmp_rate_limited += limited - self.icmp_rate_limited_seen;
        self.icmp_rate_limited_seen = limited;
        self.counters.publish(&mut self.local);
    }

    /// One batch from the device to the socket. Returns whether the device may have more.
    fn device_to_socket(&mut self) -> bool {
        let table = self.routes.load();
        let now = self.now_ms();
        self.tx_msgs.clear();
        self.tx_sent = 0;
        let mut more = true;
        for i in 0..self.batch {
            let buf = &mut self.tx_bufs[i];
            let n = match self.device.recv(&mut buf[HEADROOM..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("device read failed: {e}");
                    more = false;
                    break;
                }
            };
            self.local.device_rx_packets += 1;
            match self
                .backend
                .handle_device_packet(&table, buf, HEADROOM, n, now)
            {
                Verdict::SendToPeer { peer, range } | Verdict::ReplyToPeer { peer, range, .. } => {
                    if let Some(p) = table.peer(peer) {
                        self.tx_msgs.push(SendMsg {
                            buf: i,
                            range,
                            dest: p.endpoint,
                        });
                    }
                }
                Verdict::ReplyToDevice { range, cause } => {
                    self.local.drop(cause);
                    if write_device(&mut self.device, &mut self.local, &buf[range]) {
                        self.local.icmp_sent += 1;
                    }
                }
                Verdict::DeliverToDevice { range } => {
                    write_device(&mut self.device, &mut self.local, &buf[range]);
                }
                Verdict::Drop(reason) => self.local.drop(reason),
            }
        }
        self.flush_tx();
        more
    }

    /// Sends what is pending from `tx_bufs`; leaves the rest pending if the socket is full.
    fn flush_tx(&mut self) {
        let fd = self.socket.as_raw_fd();
        while self.tx_pending() {
            match self
                .mmsg
                .send(fd, &self.tx_bufs, &self.tx_msgs[self.tx_sent..])
            {
                Ok(n) => {
                    self.local.send_batches += 1;
                    for m in &self.tx_msgs[self.tx_sent..self.tx_sent + n] {
                        self.local.tx_packets += 1;
                        self.local.tx_bytes += m.range.len() as u64;
                    }
                    self.tx_sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // The first message failed (e.g. EMSGSIZE, ENETUNREACH): drop it alone.
                    let m = &self.tx_msgs[self.tx_sent];
                    log::debug!("send of {} bytes to {} failed: {e}", m.range.len(), m.dest);
                    self.local.drop(DropReason::IoError);
                    self.tx_sent += 1;
                }
            }
        }
    }

    /// One batch from the socket to the device. Returns whether the socket may have more.
    fn socket_to_device(&mut self) -> bool {
        let fd = self.socket.as_raw_fd();
        let n = match self
            .mmsg
            .recv(fd, &mut self.rx_bufs, HEADROOM, &mut self.meta)
        {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            Err(e) => {
                log::warn!("UDP receive failed: {e}");
                return false;
            }
        };
        self.local.recv_batches += 1;
        let table = self.routes.load();
        let now = self.now_ms();
        self.reply_msgs.clear();
        for (i, meta) in self.meta[..n].iter().enumerate() {
            self.local.udp_rx_packets += 1;
            if meta.truncated {
                self.local.drop(DropReason::Truncated);
                continue;
            }
            let buf = &mut self.rx_bufs[i];
            let source = meta.source.ip();
            match self
                .backend
                .handle_datagram(&table, source, buf, HEADROOM, meta.len, now)
            {
                Verdict::DeliverToDevice { range } => {
                    let len = range.len() as u64;
                    if write_device(&mut self.device, &mut self.local, &buf[range]) {
                        self.local.rx_packets += 1;
                        self.local.rx_bytes += len;
                    }
                }
                Verdict::ReplyToPeer { peer, range, cause } => {
                    self.local.drop(cause);
                    if let Some(p) = table.peer(peer) {
                        self.reply_msgs.push(SendMsg {
                            buf: i,
                            range,
                            dest: p.endpoint,
                        });
                    }
                }
                Verdict::SendToPeer { peer, range } => {
                    if let Some(p) = table.peer(peer) {
                        self.reply_msgs.push(SendMsg {
                            buf: i,
                            range,
                            dest: p.endpoint,
                        });
                    }
                }
                Verdict::ReplyToDevice { range, cause } => {
                    self.local.drop(cause);
                    if write_device(&mut self.device, &mut self.local, &buf[range]) {
                        self.local.icmp_sent += 1;
                    }
                }
                Verdict::Drop(reason) => self.local.drop(reason),
            }
        }
        self.send_replies(fd);
        n == self.batch
    }

    /// Sends the ICMP errors produced on the receive path; rare, so best effort.
    fn send_replies(&mut self, fd: std::os::fd::RawFd) {
        let mut sent = 0;
        while sent < self.reply_msgs.len() {
            match self.mmsg.send(fd, &self.rx_bufs, &self.reply_msgs[sent..]) {
                Ok(n) => {
                    self.local.icmp_sent += n as u64;
                    sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.local.drop(DropReason::IoError);
                    sent += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The engine's logic over in-memory devices and real UDP sockets on loopback, in a
    //! private network namespace per test.
    use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    use weft_encap::table::Route;
    use weft_encap::verdict::DropReason;
    use weft_encap::wire::{icmpv4, ipv4, PROTO_UDP};

    use super::*;
    use crate::device::MemoryDevice;

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

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::yield_now();
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
        let (a, b) = pair();
        let mut buf = [0u8; 2048];
        for i in 0..300u16 {
            let size = 1 + usize::from(i) * 4;
            let pkt = packet([100, 96, 1, 5], [100, 96, 2, 7], 64, size);
            a.kernel.send(&pkt).unwrap();
            let n = b.kernel.recv(&mut buf).expect("delivered at B");
            let got = ipv4::Packet::new_checked(&buf[..n]).unwrap();
            assert_eq!(n, pkt.len());
            assert_eq!(got.ttl(), 62, "decremented on send and on receive");
            assert!(got.verify_checksum());
            assert_eq!(got.payload(), &pkt[20..]);
        }
        wait_for("counters to be published", || {
            a.engine.stats().get("tx_packets") == Some(300)
        });
        wait_for("B's counters", || {
            b.engine.stats().get("rx_packets") == Some(300)
        });
        assert_eq!(b.engine.stats().get("udp_rx_packets"), Some(300));
    }

    #[test]
    fn a_route_removed_at_runtime_turns_into_net_unreachable() {
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

    #[test]
    fn shutdown_stops_the_worker_and_releases_the_socket() {
        let (a, _b) = pair();
        let addr = a.addr;
        assert!(a.engine.is_running());
        a.engine.shutdown().unwrap();
        UdpSocket::bind(addr).expect("the port is free again after shutdown");
    }
}
