//! One worker: a mio loop over its queue of every device, its UDP sockets and a waker.
//!
//! See [`crate::dataplane::engine`] for the model. This file is the loop and the two
//! directions; the offload specifics (vnet headers, trains, coalescing) are in
//! [`crate::dataplane::offload`].

use std::any::Any;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::ops::Range;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use weft_encap::backend::{Backend, DeviceLayer, PacketBuf};
use weft_encap::offload::coalesce::Coalescer;
use weft_encap::offload::split::{set_ip_len, split, split_layout, Split};
use weft_encap::offload::vnet::{finish_checksum, Gso, VnetHdr, VNET_HDR_LEN};
use weft_encap::table::SubnetTable;
use weft_encap::verdict::{DropReason, Verdict};

use crate::dataplane::counters::{Counters, LocalCounters};
use crate::dataplane::device::Device;
use crate::dataplane::engine::{
    EngineError, OffloadMode, OffloadStatus, Tuning, HEADROOM, MAX_BATCHES_PER_WAKE, MAX_PACKET,
};
use crate::dataplane::offload::{self, Delivery, DeviceOffload, ZERO_VNET_HDR};
use crate::dataplane::routes::RouteTable;
use crate::sys::{self, Mmsg, RecvMeta, SendMsg};

/// How often the backend's housekeeping ([`Backend::on_tick`]) runs.
const TICK: Duration = Duration::from_secs(1);
/// Socket buffer size with offloads (wireguard-go found 7 MB worth it for GSO trains).
const SOCKET_BUFFER: usize = 7 << 20;
/// Room for one super-packet cut into segments, each with its own headers and prefix.
const TRAIN_BUFFER: usize = 2 * (MAX_PACKET + 1);
/// At most this many datagrams in one UDP GSO train (`UDP_MAX_SEGMENTS` before Linux 6.9).
const MAX_TRAIN_SEGMENTS: usize = 64;

const WAKER: Token = Token(0);
const SOCKET_BASE: usize = 1;
/// Devices get tokens from here on; sockets below.
const DEVICE_BASE: usize = 1 << 16;

/// A query run on the worker's backend between batches.
pub(crate) type Inspect = Box<dyn FnOnce(&dyn Any) + Send>;

/// What the engine handle tells a worker.
pub(crate) enum Control {
    Shutdown,
    Inspect(Inspect),
    /// A new queue for device `.0` (a device recreated after it vanished); the box holds
    /// the worker's device type.
    ReplaceDevice(usize, Box<dyn Any + Send>),
}

/// What one worker is given: its queue of every device, its listening socket, its
/// source-port sockets, a listening socket of the other address family for a dual-stack
/// underlay, and a socket bound to a VXLAN multicast group (read only).
pub(crate) struct WorkerIo<D> {
    pub(crate) devices: Vec<D>,
    pub(crate) socket: StdUdpSocket,
    pub(crate) source_sockets: Vec<StdUdpSocket>,
    pub(crate) other_socket: Option<StdUdpSocket>,
    pub(crate) group_socket: Option<StdUdpSocket>,
}

/// Datagrams waiting to be sent on one socket; `sent` of them already went out.
struct TxQueue {
    msgs: Vec<SendMsg>,
    sent: usize,
}

impl TxQueue {
    fn pending(&self) -> bool {
        self.sent < self.msgs.len()
    }
}

/// One UDP socket of the worker and how it may be used.
struct SocketSlot {
    socket: UdpSocket,
    queue: TxQueue,
    /// UDP GSO trains may be sent (probed at start, turned off by an `EIO`/`EINVAL`).
    gso: bool,
    /// The longest train to send (halved by each `EMSGSIZE`).
    max_segments: usize,
}

/// One device queue of the worker.
struct DeviceSlot<D> {
    device: D,
    ready: bool,
    offload: DeviceOffload,
}

/// Which buffer set a verdict's ranges index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Read from a device, into `tx_bufs`.
    Transmit,
    /// Received from the socket, into `rx_bufs`.
    Receive,
}

pub(crate) struct Worker<D, B> {
    id: usize,
    poll: Poll,
    devices: Vec<DeviceSlot<D>>,
    routes: Vec<RouteTable>,
    tables: Vec<Arc<SubnetTable>>,
    sockets: Vec<SocketSlot>,
    socket_map: SocketMap,
    backend: B,
    counters: Arc<Counters>,
    local: LocalCounters,
    icmp_rate_limited_seen: u64,
    control: Receiver<Control>,
    /// `[0, batch)`: packets read from devices; `[batch, 2 * batch)`: the trains cut from
    /// super-packets read into the buffer of the same index.
    tx_bufs: Vec<Box<[u8]>>,
    rx_bufs: Vec<Box<[u8]>>,
    headroom: usize,
    mmsg: Mmsg,
    meta: Vec<RecvMeta>,
    /// Answers produced on the receive path (ICMP errors, ARP replies) going back to peers.
    reply_msgs: Vec<SendMsg>,
    deliveries: Vec<Delivery>,
    coalescer: Coalescer,
    /// Where a peer's unsegmented super-packet is cut for a device without GSO writes, and
    /// where a refused train is re-cut.
    scratch: Box<[u8]>,
    singles: Vec<SendMsg>,
    epoch: Instant,
    next_tick: u64,
    batch: usize,
    /// How long to keep polling without sleeping after `last_work`.
    busy_poll: Duration,
    /// When the last batch moved (or tried to move) packets.
    last_work: Instant,
    /// Offloads may be used (`[engine] offload = "auto"`).
    offloads: bool,
}

/// Which socket sends a flow: the listening socket without a flow hash, else one of the
/// source-port sockets.
fn socket_for(flow: Option<u32>, sockets: usize) -> usize {
    match flow {
        Some(hash) if sockets > 1 => 1 + (hash as usize) % (sockets - 1),
        _ => 0,
    }
}

/// How a worker's sockets are laid out: the listening socket of the primary address family
/// first, then its source-port sockets, then (on a dual-stack underlay) the listening socket
/// of the other family, which sends everything of that family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketMap {
    /// The listening socket and the source-port sockets of the primary family.
    primary: usize,
    /// Whether the primary family is IPv4.
    primary_v4: bool,
    /// The index of the other family's listening socket.
    other: Option<usize>,
    /// The index of the multicast group's socket (read, never sent from).
    group: Option<usize>,
}

impl SocketMap {
    /// The socket that sends `flow` to `dest`; `None` when no socket has `dest`'s family.
    fn sender(&self, dest: &SocketAddr, flow: Option<u32>) -> Option<usize> {
        if dest.is_ipv4() == self.primary_v4 {
            Some(socket_for(flow, self.primary))
        } else {
            self.other
        }
    }
}

fn buffers(n: usize, size: usize) -> Vec<Box<[u8]>> {
    (0..n).map(|_| vec![0u8; size].into_boxed_slice()).collect()
}

impl<D: Device, B: Backend> Worker<D, B> {
    /// Registers everything with a new poll instance and probes the offloads; returns the
    /// worker, the waker that interrupts its poll, and what it found.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub(crate) fn new(
        id: usize,
        io: WorkerIo<D>,
        routes: Vec<RouteTable>,
        backend: B,
        counters: Arc<Counters>,
        control: Receiver<Control>,
        tuning: Tuning,
    ) -> Result<(Worker<D, B>, Arc<Waker>, OffloadStatus), EngineError> {
        let Tuning {
            batch,
            mode,
            busy_poll,
        } = tuning;
        let setup = |what| move |source| EngineError::Setup { what, source };
        let poll = Poll::new().map_err(setup("create the poll instance"))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(setup("create the waker"))?);
        let offloads = mode == OffloadMode::Auto;
        let mut status = OffloadStatus::default();
        let primary_v4 = io
            .socket
            .local_addr()
            .map_err(setup("read the listening socket's address"))?
            .is_ipv4();
        if let Some(other) = &io.other_socket {
            let addr = other
                .local_addr()
                .map_err(setup("read the second listening socket's address"))?;
            if addr.is_ipv4() == primary_v4 {
                return Err(EngineError::Setup {
                    what: "add a second listening socket",
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{addr} is of the first listening socket's address family"),
                    ),
                });
            }
        }
        let socket_map = SocketMap {
            primary: 1 + io.source_sockets.len(),
            primary_v4,
            other: io
                .other_socket
                .as_ref()
                .map(|_| 1 + io.source_sockets.len()),
            group: io
                .group_socket
                .as_ref()
                .map(|_| 1 + io.source_sockets.len() + usize::from(io.other_socket.is_some())),
        };
        let mut sockets = Vec::with_capacity(3 + io.source_sockets.len());
        for (i, s) in std::iter::once(io.socket)
            .chain(io.source_sockets)
            .chain(io.other_socket)
            .chain(io.group_socket)
            .enumerate()
        {
            let listening = i == 0 || Some(i) == socket_map.other || Some(i) == socket_map.group;
            s.set_nonblocking(true)
                .map_err(setup("make a UDP socket non-blocking"))?;
            let gso = offloads && sys::udp_gso_supported(&s);
            if offloads {
                sys::set_socket_buffers(&s, SOCKET_BUFFER);
            }
            if i == 0 {
                status.udp_gso = gso;
                status.udp_gro = offloads && sys::enable_udp_gro(&s);
            } else if listening && offloads {
                sys::enable_udp_gro(&s);
            }
            let mut s = UdpSocket::from_std(s);
            // Only the listening sockets are read; source-port sockets only send.
            let interest = if listening {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::WRITABLE
            };
            poll.registry()
                .register(&mut s, Token(SOCKET_BASE + i), interest)
                .map_err(setup("register a UDP socket"))?;
            sockets.push(SocketSlot {
                socket: s,
                queue: TxQueue {
                    msgs: Vec::with_capacity(batch * 4),
                    sent: 0,
                },
                gso,
                max_segments: MAX_TRAIN_SEGMENTS,
            });
        }
        let mut devices = Vec::with_capacity(io.devices.len());
        status.tun_gso_write = true;
        for (i, mut device) in io.devices.into_iter().enumerate() {
            poll.registry()
                .register(&mut device, Token(DEVICE_BASE + i), Interest::READABLE)
                .map_err(setup("register a device"))?;
            let layer = backend.device_layer(i).unwrap_or(DeviceLayer::L3);
            let offload = DeviceOffload::detect(&mut device, layer, offloads);
            status.tun_vnet_hdr |= offload.vnet;
            status.tun_tso |= offload.tso;
            status.tun_uso |= offload.uso;
            status.tun_gso_write &= offload.gso_write;
            devices.push(DeviceSlot {
                device,
                ready: true,
                offload,
            });
        }
        status.tun_gso_write &= status.tun_vnet_hdr;
        let headroom = HEADROOM.max(backend.headroom()).max(VNET_HDR_LEN);
        let mut tx_bufs = buffers(batch, headroom + MAX_PACKET);
        tx_bufs.extend(buffers(batch, TRAIN_BUFFER));
        let worker = Worker {
            id,
            poll,
            tables: routes.iter().map(RouteTable::snapshot).collect(),
            routes,
            devices,
            sockets,
            socket_map,
            backend,
            counters,
            local: LocalCounters::default(),
            icmp_rate_limited_seen: 0,
            control,
            tx_bufs,
            rx_bufs: buffers(batch, headroom + MAX_PACKET),
            headroom,
            mmsg: Mmsg::new(batch),
            meta: vec![RecvMeta::default(); batch],
            reply_msgs: Vec::with_capacity(batch),
            deliveries: Vec::with_capacity(batch * MAX_TRAIN_SEGMENTS),
            coalescer: Coalescer::new(batch * MAX_TRAIN_SEGMENTS),
            scratch: vec![0u8; TRAIN_BUFFER].into_boxed_slice(),
            singles: Vec::with_capacity(MAX_TRAIN_SEGMENTS * 2),
            epoch: Instant::now(),
            next_tick: 0,
            batch,
            busy_poll,
            last_work: Instant::now(),
            offloads,
        };
        Ok((worker, waker, status))
    }

    /// Puts `device` (a `D`, else it is ignored) in the place of device `index`: the old
    /// queue is closed, the new one registered and its offloads detected as at start.
    fn replace_device(&mut self, index: usize, device: Box<dyn Any + Send>) {
        let Ok(device) = device.downcast::<D>() else {
            tracing::error!(
                "worker {}: a replacement device of another type; ignored",
                self.id
            );
            return;
        };
        let mut device = *device;
        let Some(slot) = self.devices.get_mut(index) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut slot.device);
        if let Err(e) = self.poll.registry().register(
            &mut device,
            Token(DEVICE_BASE + index),
            Interest::READABLE,
        ) {
            tracing::error!(
                "worker {}: cannot register the new device queue: {e}",
                self.id
            );
            return;
        }
        let layer = self.backend.device_layer(index).unwrap_or(DeviceLayer::L3);
        let offload = DeviceOffload::detect(&mut device, layer, self.offloads);
        *slot = DeviceSlot {
            device,
            ready: true,
            offload,
        };
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn tx_pending(&self) -> bool {
        self.sockets.iter().any(|s| s.queue.pending())
    }

    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        // Edge-triggered: anything queued before registration has no edge, so start ready.
        // Per socket that is read (the primary family's, the other's, the group's).
        let mut socket_ready = [
            true,
            self.socket_map.other.is_some(),
            self.socket_map.group.is_some(),
        ];
        loop {
            let device_ready = self.devices.iter().any(|d| d.ready);
            let busy = (device_ready && !self.tx_pending()) || socket_ready.contains(&true);
            let spinning =
                !busy && !self.busy_poll.is_zero() && self.last_work.elapsed() < self.busy_poll;
            if spinning {
                // Busy-polling, not busy: let whatever else wants this CPU (the applications
                // the packets are for, the other workers) run first.
                std::thread::yield_now();
            }
            let timeout = if busy || spinning {
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
                                Control::Inspect(query) => query(self.backend.inspect_target()),
                                Control::ReplaceDevice(index, device) => {
                                    self.replace_device(index, device)
                                }
                            }
                        }
                        // A closed channel means the Engine handle is gone.
                        if let Err(mpsc::TryRecvError::Disconnected) = self.control.try_recv() {
                            return Ok(());
                        }
                    }
                    Token(t) if t >= DEVICE_BASE => {
                        if let Some(slot) = self.devices.get_mut(t - DEVICE_BASE) {
                            slot.ready |= event.is_readable() || event.is_read_closed();
                        }
                    }
                    Token(SOCKET_BASE) => socket_ready[0] |= event.is_readable(),
                    Token(t) if Some(t - SOCKET_BASE) == self.socket_map.other => {
                        socket_ready[1] |= event.is_readable()
                    }
                    Token(t) if Some(t - SOCKET_BASE) == self.socket_map.group => {
                        socket_ready[2] |= event.is_readable()
                    }
                    _ => {} // source-port sockets: writability is retried below
                }
            }
            if self.tx_pending() {
                self.flush_tx();
            }
            for _ in 0..MAX_BATCHES_PER_WAKE {
                let mut worked = false;
                for d in 0..self.devices.len() {
                    if self.devices[d].ready && !self.tx_pending() {
                        self.devices[d].ready = self.device_to_socket(d);
                        worked = true;
                    }
                }
                let read = [Some(0), self.socket_map.other, self.socket_map.group];
                for (ready, s) in socket_ready.iter_mut().zip(read) {
                    if let (true, Some(s)) = (*ready, s) {
                        *ready = self.socket_to_device(s);
                        worked = true;
                    }
                }
                if !worked {
                    break;
                }
                if !self.busy_poll.is_zero() {
                    self.last_work = Instant::now();
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
        // The rate limiter (and its count) is shared by every worker: one reports it.
        if self.id == 0 {
            let limited = self.backend.icmp_rate_limited();
            self.local.icmp_rate_limited += limited.saturating_sub(self.icmp_rate_limited_seen);
            self.icmp_rate_limited_seen = limited;
        }
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
        for s in &mut self.sockets {
            s.queue.msgs.clear();
            s.queue.sent = 0;
        }
        let headroom = self.headroom;
        let vnet = self.devices[d].offload.vnet;
        let at = if vnet {
            headroom - VNET_HDR_LEN
        } else {
            headroom
        };
        let mut more = true;
        for i in 0..self.batch {
            let n = match self.devices[d].device.recv(&mut self.tx_bufs[i][at..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("device read failed: {e}");
                    more = false;
                    break;
                }
            };
            self.local.device_rx_packets += 1;
            let mut len = n;
            if vnet {
                let Some(hdr) = n
                    .checked_sub(VNET_HDR_LEN)
                    .and_then(|_| VnetHdr::parse(&self.tx_bufs[i][at..headroom]))
                else {
                    self.local.drop(DropReason::BadOffload);
                    continue;
                };
                len = n - VNET_HDR_LEN;
                match hdr.gso() {
                    Ok(Some(gso)) => {
                        self.transmit_super(d, i, len, gso, now);
                        continue;
                    }
                    Ok(None) if hdr.needs_csum() => {
                        let pkt = &mut self.tx_bufs[i][headroom..headroom + len];
                        let (start, offset) =
                            (usize::from(hdr.csum_start), usize::from(hdr.csum_offset));
                        if finish_checksum(pkt, start, offset).is_err() {
                            self.local.drop(DropReason::BadOffload);
                            continue;
                        }
                    }
                    Ok(None) => {}
                    Err(_) => {
                        self.local.drop(DropReason::BadOffload);
                        continue;
                    }
                }
            }
            let Some(pkt) = PacketBuf::new(&mut self.tx_bufs[i], headroom, len) else {
                self.local.drop(DropReason::Malformed);
                continue;
            };
            let verdict = self.backend.handle_device_packet(&self.tables, d, pkt, now);
            let limit = self.tx_bufs[i].len();
            self.apply(verdict, i, Path::Transmit, 0, limit);
        }
        self.flush_tx();
        more
    }

    /// A TCP/UDP super-packet read from device `d` into buffer `i`: the backend judges its
    /// first segment, and a packet to a peer becomes a train of datagrams cut from it.
    fn transmit_super(&mut self, d: usize, i: usize, len: usize, gso: Gso, now: u64) {
        let headroom = self.headroom;
        let l3 = self.devices[d].offload.l3_offset;
        let whole = headroom..headroom + len;
        let layout = match split_layout(&self.tx_bufs[i][whole.clone()], l3, gso) {
            Ok(layout) => layout,
            Err(_) => {
                self.local.drop(DropReason::BadOffload);
                return;
            }
        };
        self.local.device_rx_super += 1;
        let first_len = layout.segment_len.min(len);
        if !set_ip_len(&mut self.tx_bufs[i][whole], l3, first_len) {
            self.local.drop(DropReason::BadOffload);
            return;
        }
        let Some(pkt) = PacketBuf::new(&mut self.tx_bufs[i], headroom, first_len) else {
            self.local.drop(DropReason::BadOffload);
            return;
        };
        let verdict = self.backend.handle_device_packet(&self.tables, d, pkt, now);
        let (flood, dest, range, flow) = match verdict {
            Verdict::SendToPeer { dest, range, flow } => (None, Some(dest), range, flow),
            Verdict::Flood {
                device,
                range,
                flow,
            } => (Some(device), None, range, flow),
            // An ICMP error or a drop for the first segment stands for the whole packet.
            other => {
                let limit = self.tx_bufs[i].len();
                self.apply(other, i, Path::Transmit, 0, limit);
                return;
            }
        };
        // The verdict must be the first segment with the backend's prefix in front of it.
        if range.end != headroom + first_len || range.start > headroom {
            self.local.drop(DropReason::BadVerdict);
            return;
        }
        let prefix = headroom - range.start;
        let (read, trains) = self.tx_bufs.split_at_mut(self.batch);
        let train = &mut trains[i];
        let split = match split(
            &read[i][range.start..headroom + len],
            prefix + l3,
            gso,
            train,
        ) {
            Ok(split) => split,
            Err(_) => {
                self.local.drop(DropReason::BadOffload);
                return;
            }
        };
        self.local.device_rx_segments += split.segments as u64;
        let buf = self.batch + i;
        match (flood, dest) {
            (_, Some(dest)) => queue_train(
                &mut self.sockets,
                self.socket_map,
                &mut self.local,
                Train {
                    buf,
                    start: 0,
                    split,
                },
                dest,
                flow,
            ),
            (Some(device), None) => {
                if let Some(table) = self.tables.get(device) {
                    self.local.flood_packets += 1;
                    for &dest in table.flood_peers() {
                        let train = Train {
                            buf,
                            start: 0,
                            split,
                        };
                        let (sockets, map) = (&mut self.sockets, self.socket_map);
                        queue_train(sockets, map, &mut self.local, train, dest, flow);
                    }
                }
            }
            (None, None) => {}
        }
    }

    /// Carries out `verdict` for the packet in buffer `i` of `path`'s buffers, whose ranges
    /// are relative to `base` and must end by `limit` (a bad one is counted, never used).
    fn apply(&mut self, verdict: Verdict, i: usize, path: Path, base: usize, limit: usize) {
        if let Some(range) = verdict.range() {
            if range.start > range.end || range.end > limit {
                self.local.drop(DropReason::BadVerdict);
                return;
            }
        }
        let shift = |r: Range<usize>| base + r.start..base + r.end;
        let buf: &[u8] = match path {
            Path::Transmit => &self.tx_bufs[i],
            Path::Receive => &self.rx_bufs[i],
        };
        let sockets = &mut self.sockets;
        let map = self.socket_map;
        let replies = &mut self.reply_msgs;
        // Datagrams for a family without a socket, counted once the verdict is carried out.
        let mut unsendable = 0u64;
        // One datagram of buffer `i` to `dest`: on the transmit path into the queue of the
        // flow's socket, on the receive path among the replies.
        let mut push = |range: Range<usize>, dest, flow: Option<u32>| {
            let msg = SendMsg {
                buf: i,
                range: shift(range),
                dest,
                segment: None,
            };
            match path {
                Path::Transmit => match map.sender(&dest, flow) {
                    Some(s) => sockets[s].queue.msgs.push(msg),
                    None => unsendable += 1,
                },
                Path::Receive => replies.push(msg),
            }
        };
        match verdict {
            Verdict::SendToPeer { dest, range, flow } => push(range, dest, flow),
            Verdict::SendTrain {
                dest,
                range,
                segment,
                flow,
            } => {
                let range = shift(range);
                let segments = range.len().div_ceil(segment.max(1));
                let split = Split {
                    segments,
                    segment_len: segment.max(1),
                    total_len: range.len(),
                };
                match path {
                    Path::Transmit => {
                        let train = Train {
                            buf: i,
                            start: range.start,
                            split,
                        };
                        queue_train(sockets, map, &mut self.local, train, dest, flow);
                    }
                    // Trains on the receive path are rare: one datagram at a time.
                    Path::Receive => {
                        for start in range.clone().step_by(segment.max(1)) {
                            replies.push(SendMsg {
                                buf: i,
                                range: start..(start + segment).min(range.end),
                                dest,
                                segment: None,
                            });
                        }
                    }
                }
            }
            Verdict::Flood {
                device,
                range,
                flow,
            } => {
                if let Some(table) = self.tables.get(device) {
                    self.local.flood_packets += 1;
                    for &dest in table.flood_peers() {
                        push(range.clone(), dest, flow);
                    }
                } else {
                    self.local.drop(DropReason::BadVerdict);
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
                push(range, dest, None);
            }
            Verdict::AnswerToDevice { device, range } => match self.devices.get_mut(device) {
                Some(slot) => {
                    if write_plain(slot, &mut self.local, &buf[shift(range)]) {
                        self.local.neigh_proxied += 1;
                    }
                }
                None => self.local.drop(DropReason::BadVerdict),
            },
            Verdict::ReplyToDevice {
                device,
                range,
                cause,
            } => {
                self.local.drop(cause);
                match self.devices.get_mut(device) {
                    Some(slot) => {
                        if write_plain(slot, &mut self.local, &buf[shift(range)]) {
                            self.local.icmp_sent += 1;
                        }
                    }
                    None => self.local.drop(DropReason::BadVerdict),
                }
            }
            Verdict::DeliverToDevice { device, range } => match path {
                Path::Receive if device < self.devices.len() => self.deliveries.push(Delivery {
                    device,
                    buf: i,
                    range: shift(range),
                }),
                Path::Transmit if device < self.devices.len() => {
                    write_plain(
                        &mut self.devices[device],
                        &mut self.local,
                        &buf[shift(range)],
                    );
                }
                _ => self.local.drop(DropReason::BadVerdict),
            },
            Verdict::Drop(reason) => self.local.drop(reason),
            _ => self.local.drop(DropReason::BadVerdict),
        }
        for _ in 0..unsendable {
            self.local.drop(DropReason::IoError);
        }
    }

    /// Sends what is pending from `tx_bufs`; leaves the rest pending if a socket is full.
    fn flush_tx(&mut self) {
        for slot in &mut self.sockets {
            flush_queue(
                slot,
                &mut self.mmsg,
                &self.tx_bufs,
                &mut self.local,
                &mut self.singles,
            );
        }
    }

    /// One batch from listening socket `s` to the devices. Returns whether the socket may
    /// have more.
    fn socket_to_device(&mut self, s: usize) -> bool {
        let headroom = self.headroom;
        let n = match self.mmsg.recv(
            &self.sockets[s].socket,
            &mut self.rx_bufs,
            headroom,
            &mut self.meta,
        ) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            Err(e) => {
                tracing::warn!("UDP receive failed: {e}");
                return false;
            }
        };
        self.local.recv_batches += 1;
        self.load_tables();
        let now = self.now_ms();
        self.reply_msgs.clear();
        self.deliveries.clear();
        for i in 0..n {
            let meta = self.meta[i];
            if meta.truncated {
                self.local.udp_rx_packets += 1;
                self.local.drop(DropReason::Truncated);
                continue;
            }
            // A GRO train: datagrams of `segment` bytes back to back, the last shorter.
            let segment = match meta.segment {
                Some(s) if s < meta.len => {
                    self.local.gro_trains += 1;
                    s
                }
                _ => meta.len.max(1),
            };
            let mut offset = 0;
            loop {
                let len = segment.min(meta.len - offset);
                // Only the first datagram of a train has headroom: the others' would be the
                // previous datagram, which must stay intact until it is written.
                let lo = if offset == 0 { 0 } else { headroom + offset };
                // The last datagram may use the rest of the buffer as tailroom (an answer
                // can be longer than the request: a neighbour advertisement to a
                // solicitation without options); the others end where the next begins.
                let hi = if offset + len >= meta.len {
                    self.rx_bufs[i].len()
                } else {
                    headroom + offset + len
                };
                self.local.udp_rx_packets += 1;
                let start = headroom + offset - lo;
                match PacketBuf::new(&mut self.rx_bufs[i][lo..hi], start, len) {
                    Some(pkt) => {
                        let verdict =
                            self.backend
                                .handle_datagram(&self.tables, meta.source, pkt, now);
                        self.apply(verdict, i, Path::Receive, lo, hi - lo);
                    }
                    None => self.local.drop(DropReason::Malformed),
                }
                offset += len;
                if offset >= meta.len {
                    break;
                }
            }
        }
        self.write_deliveries();
        self.send_replies();
        n == self.batch
    }

    /// Writes what the receive batch delivered, device by device: coalesced where the device
    /// takes super-packets, one by one otherwise.
    fn write_deliveries(&mut self) {
        if self.deliveries.is_empty() {
            return;
        }
        for d in 0..self.devices.len() {
            let slot = &mut self.devices[d];
            if !slot.offload.gso_write {
                for del in self.deliveries.iter().filter(|del| del.device == d) {
                    let pkt = &mut self.rx_bufs[del.buf][del.range.clone()];
                    offload::write_single(slot, pkt, &mut self.local, &mut self.scratch);
                }
                continue;
            }
            offload::write_coalesced(
                slot,
                d,
                &mut self.coalescer,
                &self.deliveries,
                &mut self.rx_bufs,
                &mut self.local,
                &mut self.scratch,
            );
        }
    }

    /// Sends the answers produced on the receive path, each from the listening socket of its
    /// family; rare, so best effort.
    fn send_replies(&mut self) {
        let primary_v4 = self.socket_map.primary_v4;
        // The primary family's replies first (no allocation: unstable sort in place).
        self.reply_msgs
            .sort_unstable_by_key(|m| m.dest.is_ipv4() != primary_v4);
        let split = self
            .reply_msgs
            .partition_point(|m| m.dest.is_ipv4() == primary_v4);
        let (primary, other) = self.reply_msgs.split_at(split);
        for (msgs, socket) in [(primary, Some(0)), (other, self.socket_map.other)] {
            let Some(socket) = socket else {
                for _ in msgs {
                    self.local.drop(DropReason::IoError);
                }
                continue;
            };
            let socket = &self.sockets[socket].socket;
            let mut sent = 0;
            while sent < msgs.len() {
                match self.mmsg.send(socket, &self.rx_bufs, &msgs[sent..]) {
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
}

/// Writes one packet to a device as it is (a zero vnet header in front where the device has
/// one), counting a failure as a drop.
fn write_plain<D: Device>(slot: &mut DeviceSlot<D>, local: &mut LocalCounters, pkt: &[u8]) -> bool {
    let with_hdr = [IoSlice::new(&ZERO_VNET_HDR), IoSlice::new(pkt)];
    let without = [IoSlice::new(pkt)];
    let parts: &[IoSlice<'_>] = if slot.offload.vnet {
        &with_hdr
    } else {
        &without
    };
    offload::write_device(&mut slot.device, local, parts)
}

impl<D: Device> offload::WriteTarget for DeviceSlot<D> {
    fn offload(&self) -> &DeviceOffload {
        &self.offload
    }
    fn offload_mut(&mut self) -> &mut DeviceOffload {
        &mut self.offload
    }
    fn write(&mut self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        offload::write_device_raw(&mut self.device, parts)
    }
}

/// Datagrams cut from one packet: `split`'s, starting at `start` in `tx_bufs[buf]`.
#[derive(Debug, Clone, Copy)]
struct Train {
    buf: usize,
    start: usize,
    split: Split,
}

/// Queues a train's datagrams for `dest` on the socket that sends `flow` there, cut into
/// UDP GSO trains at the socket's and the kernel's limits (a train carries at most 65,507
/// bytes over IPv4, 65,527 over IPv6). Without a socket of `dest`'s family they are dropped
/// and counted.
fn queue_train(
    sockets: &mut [SocketSlot],
    map: SocketMap,
    local: &mut LocalCounters,
    train: Train,
    dest: SocketAddr,
    flow: Option<u32>,
) {
    let Train { buf, start, split } = train;
    let Some(s) = map.sender(&dest, flow) else {
        local.drop(DropReason::IoError);
        return;
    };
    let slot = &mut sockets[s];
    let segment = split.segment_len.max(1);
    let limit = if dest.is_ipv4() { 65_507 } else { 65_527 };
    let per_train = if slot.gso && segment <= usize::from(u16::MAX) {
        slot.max_segments.min(limit / segment).max(1)
    } else {
        1
    };
    let mut offset = 0;
    while offset < split.total_len {
        let bytes = (per_train * segment).min(split.total_len - offset);
        let count = bytes.div_ceil(segment);
        slot.queue.msgs.push(SendMsg {
            buf,
            range: start + offset..start + offset + bytes,
            dest,
            segment: (count > 1).then_some(segment as u16),
        });
        offset += bytes;
    }
}

/// Sends a socket's pending datagrams; stops (keeping them pending) when the socket is full.
fn flush_queue(
    slot: &mut SocketSlot,
    mmsg: &mut Mmsg,
    bufs: &[Box<[u8]>],
    local: &mut LocalCounters,
    singles: &mut Vec<SendMsg>,
) {
    let q = &mut slot.queue;
    while q.pending() {
        match mmsg.send(&slot.socket, bufs, &q.msgs[q.sent..]) {
            Ok(n) => {
                local.send_batches += 1;
                for m in &q.msgs[q.sent..q.sent + n] {
                    count_sent(local, m);
                }
                q.sent += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let m = q.msgs[q.sent].clone();
                q.sent += 1;
                let Some(segment) = m.segment else {
                    // The first message failed (e.g. EMSGSIZE, ENETUNREACH): drop it alone.
                    tracing::debug!("send of {} bytes to {} failed: {e}", m.range.len(), m.dest);
                    local.drop(DropReason::IoError);
                    continue;
                };
                // A refused train: EMSGSIZE means too long for this path or kernel (send
                // shorter trains from now on); EIO/EINVAL means no GSO here at all.
                let segments = if e.raw_os_error() == Some(libc::EMSGSIZE) {
                    local.gso_recuts += 1;
                    slot.max_segments = (slot.max_segments / 2).max(1);
                    slot.max_segments
                } else {
                    if slot.gso {
                        tracing::warn!(
                            "UDP GSO refused by the kernel ({e}); sending datagrams one by one"
                        );
                    }
                    local.gso_fallbacks += 1;
                    slot.gso = false;
                    1
                };
                resend_cut(
                    &slot.socket,
                    mmsg,
                    bufs,
                    local,
                    singles,
                    &m,
                    usize::from(segment),
                    segments,
                );
            }
        }
    }
    q.msgs.clear();
    q.sent = 0;
}

/// Counts a message that went out.
fn count_sent(local: &mut LocalCounters, m: &SendMsg) {
    match m.segment {
        Some(segment) => {
            local.gso_trains += 1;
            local.tx_packets += m.range.len().div_ceil(usize::from(segment).max(1)) as u64;
        }
        None => local.tx_packets += 1,
    }
    local.tx_bytes += m.range.len() as u64;
}

/// Re-sends the refused train `m` as trains of at most `segments` datagrams (1: one by one),
/// best effort: what the socket does not take now is dropped and counted.
#[allow(clippy::too_many_arguments)]
fn resend_cut(
    socket: &UdpSocket,
    mmsg: &mut Mmsg,
    bufs: &[Box<[u8]>],
    local: &mut LocalCounters,
    singles: &mut Vec<SendMsg>,
    m: &SendMsg,
    segment: usize,
    segments: usize,
) {
    singles.clear();
    let step = segment.max(1) * segments.max(1);
    for start in m.range.clone().step_by(step) {
        let end = (start + step).min(m.range.end);
        singles.push(SendMsg {
            buf: m.buf,
            range: start..end,
            dest: m.dest,
            segment: (end - start > segment).then_some(segment as u16),
        });
    }
    let mut sent = 0;
    while sent < singles.len() {
        match mmsg.send(socket, bufs, &singles[sent..]) {
            Ok(n) => {
                for m in &singles[sent..sent + n] {
                    count_sent(local, m);
                }
                sent += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                // A shorter train refused too: its datagrams one by one, as a last resort.
                let refused = singles[sent].clone();
                sent += 1;
                match refused.segment {
                    Some(segment) => send_one_by_one(socket, mmsg, bufs, local, &refused, segment),
                    None => local.drop(DropReason::IoError),
                }
            }
        }
    }
}

/// Sends the datagrams of the train `m` one `sendmmsg` entry each; drops and counts what the
/// socket refuses.
fn send_one_by_one(
    socket: &UdpSocket,
    mmsg: &mut Mmsg,
    bufs: &[Box<[u8]>],
    local: &mut LocalCounters,
    m: &SendMsg,
    segment: u16,
) {
    let step = usize::from(segment).max(1);
    for start in m.range.clone().step_by(step) {
        let one = SendMsg {
            buf: m.buf,
            range: start..(start + step).min(m.range.end),
            dest: m.dest,
            segment: None,
        };
        loop {
            match mmsg.send(socket, bufs, std::slice::from_ref(&one)) {
                Ok(_) => count_sent(local, &one),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => local.drop(DropReason::IoError),
            }
            break;
        }
    }
}
