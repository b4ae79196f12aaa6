//! The engine: one worker thread running a mio loop over devices, UDP sockets and a waker.
//!
//! ## The loop
//! A worker owns its devices (one for the UDP backend, one per VNI for VXLAN), the
//! listening UDP socket and optional source-port sockets, all non-blocking and registered
//! edge-triggered with its own `mio::Poll`. Each wake-up it alternates between the
//! directions, one batch (up to [`EngineBuilder::batch_size`] packets) at a time and at
//! most [`MAX_BATCHES_PER_WAKE`] batches per direction, until everything is drained to
//! `WouldBlock` or the cap is hit; a capped direction stays marked ready and the next poll
//! does not block, so no direction starves another and control messages are seen between
//! rounds.
//!
//! - device -> socket: read packets one by one into pooled buffers (headroom in front), let
//!   the [`Backend`] decide, send the batch with one `sendmmsg` per socket. When a socket is
//!   full the unsent tail is kept and no device is read until it is writable again
//!   (back-pressure instead of loss).
//! - socket -> device: one `recvmmsg` for the batch, let the backend decide each datagram,
//!   write the delivered packets to their devices.
//!
//! The UDP source port: flannel's UDP backend sends from the listening socket (both ends
//! use port 8285). VXLAN asks for a per-flow source port (RFC 7348 section 5); the engine
//! keeps a small pool of sockets bound to ports in the configured range and sends each flow
//! from `pool[hash % pool.len()]`, so one flow keeps one port and flows spread over several.
//!
//! The routing snapshots are loaded once per batch ([`RouteTable`]: a wait-free read). No
//! allocation happens per packet: buffers, mmsg arrays and message lists are allocated when
//! the worker starts (a flood to more peers than ever before grows a list once).

use std::any::Any;
use std::io;
use std::net::UdpSocket as StdUdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use weft_encap::backend::Backend;
use weft_encap::flannel::{FlannelBackend, FlannelConfig};
use weft_encap::table::SubnetTable;
use weft_encap::verdict::{DropReason, Verdict};

use crate::dataplane::counters::{Counters, LocalCounters, Stats};
use crate::dataplane::device::Device;
use crate::dataplane::routes::RouteTable;
use crate::sys::{Mmsg, RecvMeta, SendMsg};

/// Bytes kept free in front of every packet buffer (room for headers prepended in place).
pub const HEADROOM: usize = 64;
/// The largest packet or datagram payload a buffer holds.
pub const MAX_PACKET: usize = 65535;
/// Default and maximum packets per batch (one `recvmmsg`/`sendmmsg` call).
pub const MAX_BATCH: usize = 64;
/// Batches per direction per wake-up before the other direction and the waker get a turn.
pub const MAX_BATCHES_PER_WAKE: usize = 8;
/// How often the backend's housekeeping ([`Backend::on_tick`]) runs.
const TICK: Duration = Duration::from_secs(1);

const WAKER: Token = Token(0);
const SOCKET_BASE: usize = 1;
/// Devices get tokens from here on; sockets below.
const DEVICE_BASE: usize = 1 << 16;

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

type Inspect = Box<dyn FnOnce(&dyn Any) + Send>;

enum Control {
    Shutdown,
    Inspect(Inspect),
}

/// Builds an [`Engine`] from devices, a bound UDP socket, routes and a backend.
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
pub struct EngineBuilder<D, B> {
    devices: Vec<(D, RouteTable)>,
    socket: StdUdpSocket,
    source_sockets: Vec<StdUdpSocket>,
    backend: B,
    batch: usize,
}

impl<D: Device, B: Backend> EngineBuilder<D, B> {
    /// Uses this route table for the first device (a shared handle: keep a clone to edit
    /// routes later).
    pub fn routes(mut self, routes: RouteTable) -> Self {
        self.devices[0].1 = routes;
        self
    }

    /// Adds another device with its own routes (VXLAN: one per VNI, in the backend's VNI
    /// order).
    pub fn device(mut self, device: D, routes: RouteTable) -> Self {
        self.devices.push((device, routes));
        self
    }

    /// Uses the flannel UDP backend with these settings.
    pub fn flannel(self, config: FlannelConfig) -> EngineBuilder<D, FlannelBackend> {
        self.backend(FlannelBackend::new(config))
    }

    /// Uses this backend (e.g. [`weft_encap::vxlan::VxlanBackend`]).
    pub fn backend<B2: Backend>(self, backend: B2) -> EngineBuilder<D, B2> {
        EngineBuilder {
            devices: self.devices,
            socket: self.socket,
            source_sockets: self.source_sockets,
            backend,
            batch: self.batch,
        }
    }

    /// Sockets to send per-flow traffic from (VXLAN source ports); without any, everything
    /// is sent from the listening socket.
    pub fn source_sockets(mut self, sockets: Vec<StdUdpSocket>) -> Self {
        self.source_sockets = sockets;
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
        let mut sockets = Vec::with_capacity(1 + self.source_sockets.len());
        for (i, s) in std::iter::once(self.socket)
            .chain(self.source_sockets)
            .enumerate()
        {
            s.set_nonblocking(true)
                .map_err(setup("make a UDP socket non-blocking"))?;
            let mut s = UdpSocket::from_std(s);
            // Only the listening socket is read; source-port sockets only send.
            let interest = if i == 0 {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::WRITABLE
            };
            poll.registry()
                .register(&mut s, Token(SOCKET_BASE + i), interest)
                .map_err(setup("register a UDP socket"))?;
            sockets.push(s);
        }
        let mut devices = Vec::with_capacity(self.devices.len());
        let mut routes = Vec::with_capacity(self.devices.len());
        for (i, (mut device, table)) in self.devices.into_iter().enumerate() {
            poll.registry()
                .register(&mut device, Token(DEVICE_BASE + i), Interest::READABLE)
                .map_err(setup("register a device"))?;
            devices.push(device);
            routes.push(table);
        }
        let headroom = HEADROOM.max(self.backend.headroom());
        let counters = Arc::new(Counters::default());
        let (control_tx, control_rx) = mpsc::channel();
        let batch = self.batch;
        let worker = Worker {
            poll,
            device_ready: vec![true; devices.len()],
            devices,
            tables: routes.iter().map(RouteTable::snapshot).collect(),
            routes: routes.clone(),
            queues: (0..sockets.len())
                .map(|_| TxQueue::with_capacity(batch))
                .collect(),
            sockets,
            backend: self.backend,
            counters: counters.clone(),
            local: LocalCounters::default(),
            icmp_rate_limited_seen: 0,
            control: control_rx,
            tx_bufs: buffers(batch, headroom),
            rx_bufs: buffers(batch, headroom),
            headroom,
            mmsg: Mmsg::new(batch),
            meta: vec![RecvMeta::default(); batch],
            reply_msgs: Vec::with_capacity(batch),
            epoch: Instant::now(),
            next_tick: 0,
            batch,
        };
        let thread = std::thread::Builder::new()
            .name("weft-worker".into())
            .spawn(move || worker.run())
            .map_err(setup("start the worker thread"))?;
        Ok(Engine {
            routes,
            counters,
            waker,
            control: control_tx,
            thread: Some(thread),
        })
    }
}

fn buffers(n: usize, headroom: usize) -> Vec<Box<[u8]>> {
    (0..n)
        .map(|_| vec![0u8; headroom + MAX_PACKET].into_boxed_slice())
        .collect()
}

/// A running engine: its routes, its counters, and the way to stop it.
///
/// Dropping an `Engine` stops its worker too (errors are then only logged).
pub struct Engine {
    routes: Vec<RouteTable>,
    counters: Arc<Counters>,
    waker: Arc<Waker>,
    control: Sender<Control>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Engine {
    /// Starts building an engine over `device` and the bound UDP `socket`, with the flannel
    /// UDP backend and an empty route table until told otherwise.
    pub fn builder<D: Device>(device: D, socket: StdUdpSocket) -> EngineBuilder<D, FlannelBackend> {
        EngineBuilder {
            devices: vec![(device, RouteTable::default())],
            socket,
            source_sockets: Vec::new(),
            backend: FlannelBackend::new(FlannelConfig::default()),
            batch: MAX_BATCH,
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

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// The shared counters themselves, for a control plane that outlives borrows of `self`.
    pub fn counters_handle(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// A handle that can look into the running backend; see [`Inspector::inspect`].
    pub fn inspector(&self) -> Inspector {
        Inspector {
            control: self.control.clone(),
            waker: self.waker.clone(),
        }
    }

    /// True while the worker thread runs.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the worker, waits for it, and releases the devices and sockets.
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

/// Runs queries on the worker's backend (e.g. listing a VXLAN FDB), between batches.
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

/// Datagrams waiting to be sent on one socket; `sent` of them already went out.
struct TxQueue {
    msgs: Vec<SendMsg>,
    sent: usize,
}

impl TxQueue {
    fn with_capacity(n: usize) -> TxQueue {
        TxQueue {
            msgs: Vec::with_capacity(n),
            sent: 0,
        }
    }

    fn pending(&self) -> bool {
        self.sent < self.msgs.len()
    }
}

struct Worker<D, B> {
    poll: Poll,
    devices: Vec<D>,
    device_ready: Vec<bool>,
    routes: Vec<RouteTable>,
    tables: Vec<Arc<SubnetTable>>,
    sockets: Vec<UdpSocket>,
    queues: Vec<TxQueue>,
    backend: B,
    counters: Arc<Counters>,
    local: LocalCounters,
    icmp_rate_limited_seen: u64,
    control: Receiver<Control>,
    tx_bufs: Vec<Box<[u8]>>,
    rx_bufs: Vec<Box<[u8]>>,
    headroom: usize,
    mmsg: Mmsg,
    meta: Vec<RecvMeta>,
    /// Answers produced on the receive path (ICMP errors, ARP replies) going back to peers.
    reply_msgs: Vec<SendMsg>,
    epoch: Instant,
    next_tick: u64,
    batch: usize,
}

/// Writes one packet to a device, counting a failure as a drop.
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

/// Which of the worker's two buffer sets a packet is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Read from a device, into `tx_bufs`.
    Transmit,
    /// Received from the socket, into `rx_bufs`.
    Receive,
}

/// The socket a datagram of flow `flow` leaves from.
fn socket_for(flow: Option<u32>, sockets: usize) -> usize {
    match flow {
        Some(hash) if sockets > 1 => 1 + (hash as usize) % (sockets - 1),
        _ => 0,
    }
}

impl<D: Device, B: Backend> Worker<D, B> {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn tx_pending(&self) -> bool {
        self.queues.iter().any(TxQueue::pending)
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        // Edge-triggered: anything queued before registration has no edge, so start ready.
        let mut socket_ready = true;
        loop {
            let device_ready = self.device_ready.iter().any(|r| *r);
            let busy = (device_ready && !self.tx_pending()) || socket_ready;
            let timeout = if busy {
                Some(Duration::ZERO)
            } else {
                Some(TICK)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {
                        while let Ok(msg) = self.control.try_recv() {
                            match msg {
                                Control::Shutdown => return Ok(()),
                                Control::Inspect(query) => query(&self.backend),
                            }
                        }
                        // A closed channel means the Engine handle is gone.
                        if let Err(mpsc::TryRecvError::Disconnected) = self.control.try_recv() {
                            return Ok(());
                        }
                    }
                    Token(t) if t >= DEVICE_BASE => {
                        if let Some(ready) = self.device_ready.get_mut(t - DEVICE_BASE) {
                            *ready |= event.is_readable() || event.is_read_closed();
                        }
                    }
                    Token(SOCKET_BASE) => socket_ready |= event.is_readable(),
                    _ => {} // source-port sockets: writability is retried below
                }
            }
            if self.tx_pending() {
                self.flush_tx();
            }
            for _ in 0..MAX_BATCHES_PER_WAKE {
                let mut worked = false;
                for d in 0..self.devices.len() {
                    if self.device_ready[d] && !self.tx_pending() {
                        self.device_ready[d] = self.device_to_socket(d);
                        worked = true;
                    }
                }
                if socket_ready {
                    socket_ready = self.socket_to_device();
                    worked = true;
                }
                if !worked {
                    break;
                }
            }
            let now = self.now_ms();
            if now >= self.next_tick {
                self.backend.on_tick(now);
                self.next_tick = now + TICK.as_millis() as u64;
            }
            self.publish();
        }
    }

    fn publish(&mut self) {
        let limited = self.backend.icmp_rate_limited();
        self.local.icmp_rate_limited += limited.saturating_sub(self.icmp_rate_limited_seen);
        self.icmp_rate_limited_seen = limited;
        self.counters.publish(&mut self.local);
    }

    fn load_tables(&mut self) {
        for (table, routes) in self.tables.iter_mut().zip(&self.routes) {
            let current = routes.snapshot();
            if !Arc::ptr_eq(table, &current) {
                *table = current;
            }
        }
    }

    /// One batch from device `d` to the sockets. Returns whether the device may have more.
    fn device_to_socket(&mut self, d: usize) -> bool {
        self.load_tables();
        let now = self.now_ms();
        for q in &mut self.queues {
            q.msgs.clear();
            q.sent = 0;
        }
        let headroom = self.headroom;
        let mut more = true;
        for i in 0..self.batch {
            let buf = &mut self.tx_bufs[i];
            let n = match self.devices[d].recv(&mut buf[headroom..]) {
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
            let verdict = self
                .backend
                .handle_device_packet(&self.tables, d, buf, headroom, n, now);
            self.apply(verdict, i, Path::Transmit);
        }
        self.flush_tx();
        more
    }

    /// Carries out `verdict` for the packet in buffer `i` of `path`'s buffers: writes to a
    /// device, or queues datagrams (transmit path: on the per-flow socket's queue, sent with
    /// the batch; receive path: on the listening socket's reply list), and counts.
    fn apply(&mut self, verdict: Verdict, i: usize, path: Path) {
        let buf: &[u8] = match path {
            Path::Transmit => &self.tx_bufs[i],
            Path::Receive => &self.rx_bufs[i],
        };
        let sockets = self.sockets.len();
        let (queues, replies) = (&mut self.queues, &mut self.reply_msgs);
        let mut push = |msg: SendMsg, flow: Option<u32>| match path {
            Path::Transmit => queues[socket_for(flow, sockets)].msgs.push(msg),
            Path::Receive => replies.push(msg),
        };
        match verdict {
            Verdict::SendToPeer { dest, range, flow } => push(
                SendMsg {
                    buf: i,
                    range,
                    dest,
                },
                flow,
            ),
            Verdict::Flood {
                device,
                range,
                flow,
            } => {
                if let Some(table) = self.tables.get(device) {
                    for peer in table.peers() {
                        push(
                            SendMsg {
                                buf: i,
                                range: range.clone(),
                                dest: peer.endpoint,
                            },
                            flow,
                        );
                    }
                }
            }
            Verdict::ReplyToPeer { dest, range, cause } => {
                match cause {
                    Some(cause) => {
                        self.local.drop(cause);
                        self.local.icmp_sent += 1;
                    }
                    None => self.local.neigh_replies += 1,
                }
                push(
                    SendMsg {
                        buf: i,
                        range,
                        dest,
                    },
                    None,
                );
            }
            Verdict::ReplyToDevice {
                device,
                range,
                cause,
            } => {
                self.local.drop(cause);
                if let Some(dev) = self.devices.get_mut(device) {
                    if write_device(dev, &mut self.local, &buf[range]) {
                        self.local.icmp_sent += 1;
                    }
                }
            }
            Verdict::DeliverToDevice { device, range } => {
                let len = range.len() as u64;
                if let Some(dev) = self.devices.get_mut(device) {
                    if write_device(dev, &mut self.local, &buf[range]) && path == Path::Receive {
                        self.local.rx_packets += 1;
                        self.local.rx_bytes += len;
                    }
                }
            }
            Verdict::Drop(reason) => self.local.drop(reason),
        }
    }

    /// Sends what is pending from `tx_bufs`; leaves the rest pending if a socket is full.
    fn flush_tx(&mut self) {
        for (socket, q) in self.sockets.iter().zip(self.queues.iter_mut()) {
            flush_queue(
                socket.as_raw_fd(),
                q,
                &mut self.mmsg,
                &self.tx_bufs,
                &mut self.local,
            );
        }
    }

    /// One batch from the socket to the devices. Returns whether the socket may have more.
    fn socket_to_device(&mut self) -> bool {
        let fd = self.sockets[0].as_raw_fd();
        let headroom = self.headroom;
        let n = match self
            .mmsg
            .recv(fd, &mut self.rx_bufs, headroom, &mut self.meta)
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
        self.load_tables();
        let now = self.now_ms();
        self.reply_msgs.clear();
        for i in 0..n {
            let meta = self.meta[i];
            self.local.udp_rx_packets += 1;
            if meta.truncated {
                self.local.drop(DropReason::Truncated);
                continue;
            }
            let buf = &mut self.rx_bufs[i];
            let verdict = self.backend.handle_datagram(
                &self.tables,
                meta.source,
                buf,
                headroom,
                meta.len,
                now,
            );
            self.apply(verdict, i, Path::Receive);
        }
        self.send_replies(fd);
        n == self.batch
    }

    /// Sends the answers produced on the receive path; rare, so best effort.
    fn send_replies(&mut self, fd: RawFd) {
        let mut sent = 0;
        while sent < self.reply_msgs.len() {
            match self.mmsg.send(fd, &self.rx_bufs, &self.reply_msgs[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.local.drop(DropReason::IoError);
                    sent += 1;
                }
            }
        }
    }
}

/// Sends a queue's pending datagrams; stops (keeping them pending) when the socket is full.
fn flush_queue(
    fd: RawFd,
    q: &mut TxQueue,
    mmsg: &mut Mmsg,
    bufs: &[Box<[u8]>],
    local: &mut LocalCounters,
) {
    while q.pending() {
        match mmsg.send(fd, bufs, &q.msgs[q.sent..]) {
            Ok(n) => {
                local.send_batches += 1;
                for m in &q.msgs[q.sent..q.sent + n] {
                    local.tx_packets += 1;
                    local.tx_bytes += m.range.len() as u64;
                }
                q.sent += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // The first message failed (e.g. EMSGSIZE, ENETUNREACH): drop it alone.
                let m = &q.msgs[q.sent];
                log::debug!("send of {} bytes to {} failed: {e}", m.range.len(), m.dest);
                local.drop(DropReason::IoError);
                q.sent += 1;
            }
        }
    }
    q.msgs.clear();
    q.sent = 0;
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
