//! Packet I/O on the device side: the [`Device`] trait and its implementations.
//!
//! The engine reads whole IP packets (TUN) or Ethernet frames (TAP) from a device and writes
//! whole packets back, one per call. Anything that is a non-blocking, pollable file
//! descriptor with datagram semantics can be a device: a real TUN/TAP queue ([`Tun`]), a
//! descriptor a VPN tool already holds ([`Tun::from_fd`]), or an in-memory pair for tests
//! ([`MemoryDevice`]).

use std::io;
use std::os::unix::net::UnixDatagram as StdUnixDatagram;

use mio::net::UnixDatagram;

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
}

impl Device for Tun {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }
    fn send(&mut self, packet: &[u8]) -> io::Result<usize> {
        self.write(packet)
    }
}

/// An in-memory device: one end of a Unix datagram socket pair. The other end
/// ([`MemoryDevice::pair`]) plays the kernel: what it sends, the engine reads from the
/// "device", and what the engine writes to the device arrives there.
#[derive(Debug)]
pub struct MemoryDevice {
    socket: UnixDatagram,
}

impl MemoryDevice {
    /// A device and the (blocking) socket that stands for the kernel side of it.
    pub fn pair() -> io::Result<(MemoryDevice, StdUnixDatagram)> {
        let (ours, theirs) = StdUnixDatagram::pair()?;
        ours.set_nonblocking(true)?;
        Ok((
            MemoryDevice {
                socket: UnixDatagram::from_std(ours),
            },
            theirs,
        ))
    }
}

impl Device for MemoryDevice {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.recv(buf)
    }
    fn send(&mut self, packet: &[u8]) -> io::Result<usize> {
        self.socket.send(packet)
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
