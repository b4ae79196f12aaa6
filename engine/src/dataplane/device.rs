//! Packet I/O on the device side: the [`Device`] trait and its implementations.
//!
//! The engine reads whole IP packets (TUN) or Ethernet frames (TAP) from a device and writes
//! whole packets back, one per call. A device with a vnet header ([`Device::vnet_hdr`])
//! prefixes every packet, both ways, with a 10-byte `virtio_net_hdr`: reads may then be
//! super-packets of up to 64 KB (TSO/USO) or carry a partial checksum, and writes may be
//! coalesced super-packets gathered from several slices ([`Device::send_vectored`]). Anything that is a non-blocking, pollable file
//! descriptor with datagram semantics can be a device: a real TUN/TAP queue ([`Tun`]), a
//! descriptor a VPN tool already holds ([`Tun::from_fd`]), or an in-memory pair for tests
//! ([`MemoryDevice`]).

use std::io::{self, IoSlice};
use std::os::unix::net::UnixDatagram as StdUnixDatagram;

use mio::net::UnixDatagram;
use weft_encap::backend::DeviceLayer;

pub use crate::sys::{DeviceKind, Tun, TunOptions};

/// A packet device the engine can poll, read and write.
///
/// `recv` and `send` must be non-blocking: they return [`io::ErrorKind::WouldBlock`] when
/// nothing is queued / there is no room, and the engine waits for readiness via mio.
pub trait Device: mio::event::Source + Send + 'static {
    /// Reads one packet into `buf`, returning its length.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one packet.
    fn send(&mut self, packet: &[u8]) -> io::Result<usize>;

    /// Writes one packet gathered from `parts`. The default handles a single part (with
    /// [`Device::send`]) and refuses more with [`io::ErrorKind::Unsupported`]; a device with
    /// a vnet header must gather (`writev`).
    fn send_vectored(&mut self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        match parts {
            [one] => self.send(one),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this device cannot gather a packet from several slices",
            )),
        }
    }

    /// Whether every packet read and written carries a 10-byte `virtio_net_hdr` in front.
    fn vnet_hdr(&self) -> bool {
        false
    }

    /// The `TUN_F_*` offloads the kernel may use toward this device (0: none).
    fn offload(&self) -> u32 {
        0
    }

    /// IP packets or Ethernet frames, if the device knows (the engine then checks it against
    /// what the backend expects of this device).
    fn layer(&self) -> Option<DeviceLayer> {
        None
    }

    /// The interface name, if there is one (checked against the backend's, when it has one).
    fn name(&self) -> Option<&str> {
        None
    }

    /// The device's MTU (what one IP packet written to it may be at most without a GSO
    /// header), if known: the engine cuts larger packets it receives from kernel peers to it.
    fn mtu(&self) -> Option<usize> {
        None
    }
}

impl Device for Tun {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }
    fn send(&mut self, packet: &[u8]) -> io::Result<usize> {
        self.write(packet)
    }
    fn send_vectored(&mut self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        self.writev(parts)
    }
    fn vnet_hdr(&self) -> bool {
        Tun::vnet_hdr(self)
    }
    fn offload(&self) -> u32 {
        Tun::offload(self)
    }
    fn layer(&self) -> Option<DeviceLayer> {
        Some(match self.kind() {
            DeviceKind::Tun => DeviceLayer::L3,
            DeviceKind::Tap => DeviceLayer::L2,
        })
    }
    fn name(&self) -> Option<&str> {
        Some(Tun::name(self))
    }
    fn mtu(&self) -> Option<usize> {
        let link = crate::sys::Netlink::open()
            .and_then(|mut nl| nl.link_by_name(Tun::name(self)))
            .ok()??;
        usize::try_from(link.mtu).ok()
    }
}

/// An in-memory device: one end of a Unix datagram socket pair. The other end
/// ([`MemoryDevice::pair`]) plays the kernel: what it sends, the engine reads from the
/// "device", and what the engine writes to the device arrives there.
///
/// With [`MemoryDevice::with_vnet_hdr`] it behaves like a TUN with offloads: every packet,
/// both ways, starts with a 10-byte `virtio_net_hdr`, the other end may send TCP
/// super-packets, and the engine may write coalesced ones.
#[derive(Debug)]
pub struct MemoryDevice {
    socket: UnixDatagram,
    layer: Option<DeviceLayer>,
    vnet_mtu: Option<usize>,
}

impl MemoryDevice {
    /// A device and the (blocking) socket that stands for the kernel side of it.
    pub fn pair() -> io::Result<(MemoryDevice, StdUnixDatagram)> {
        let (ours, theirs) = StdUnixDatagram::pair()?;
        ours.set_nonblocking(true)?;
        Ok((
            MemoryDevice {
                socket: UnixDatagram::from_std(ours),
                layer: None,
                vnet_mtu: None,
            },
            theirs,
        ))
    }
}

impl MemoryDevice {
    /// Declares what the device carries, so the engine checks it against the backend.
    pub fn with_layer(mut self, layer: DeviceLayer) -> MemoryDevice {
        self.layer = Some(layer);
        self
    }

    /// Makes it a device with vnet headers and TCP offloads (checksum, TSO4, TSO6) whose MTU
    /// is `mtu`. The other end must then put a `virtio_net_hdr` in front of what it sends
    /// and finds one in front of what it receives (the engine's start-up probe included:
    /// one two-segment packet from 0.0.0.0).
    pub fn with_vnet_hdr(mut self, mtu: usize) -> MemoryDevice {
        self.vnet_mtu = Some(mtu);
        self
    }
}

impl Device for MemoryDevice {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.recv(buf)
    }
    fn send(&mut self, packet: &[u8]) -> io::Result<usize> {
        self.socket.send(packet)
    }
    fn layer(&self) -> Option<DeviceLayer> {
        self.layer
    }
    fn send_vectored(&mut self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        crate::sys::writev(&self.socket, parts)
    }
    fn vnet_hdr(&self) -> bool {
        self.vnet_mtu.is_some()
    }
    fn offload(&self) -> u32 {
        match self.vnet_mtu {
            Some(_) => libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
            None => 0,
        }
    }
    fn mtu(&self) -> Option<usize> {
        self.vnet_mtu
    }
}

impl mio::event::Source for MemoryDevice {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.socket.register(registry, token, interests)
    }
    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.socket.reregister(registry, token, interests)
    }
    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.socket.deregister(registry)
    }
}
