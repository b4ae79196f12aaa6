//! TUN/TAP device queues.
//!
//! A [`Tun`] is one open file description of `/dev/net/tun` attached (`TUNSETIFF`) to a named
//! device. Every `read` returns exactly one packet (TUN: an IP packet; TAP: an Ethernet frame)
//! and every `write` injects exactly one; with `vnet_hdr` each packet is preceded by a
//! `virtio_net_hdr` (10 bytes by default, see [`Tun::set_vnet_hdr_size`]). Packet information
//! headers (`IFF_NO_PI` cleared) are never used.
//!
//! The fd is non-blocking and close-on-exec: `read`/`write` return
//! [`io::ErrorKind::WouldBlock`] instead of waiting, and the device is registered with a mio
//! `Poll` to learn when to try again.
//!
//! Devices are not persistent: the kernel creates the device on the first `open` if it does not
//! exist and removes it when the last queue is closed. With [`TunOptions::multi_queue`], calling
//! [`Tun::open`] again with the same name and options adds another queue to the same device
//! (one per worker); the kernel spreads received packets over the queues by flow.

use std::fs::OpenOptions;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::cvt;

/// Longest interface name the kernel accepts, in bytes (`IFNAMSIZ` minus the NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Whether the device carries IP packets (TUN) or Ethernet frames (TAP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// Layer 3 (`IFF_TUN`): each packet is a bare IPv4 or IPv6 packet.
    #[default]
    Tun,
    /// Layer 2 (`IFF_TAP`): each packet is an Ethernet frame.
    Tap,
}

/// How to open a TUN/TAP device. The default is a single-queue TUN without vnet headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunOptions {
    /// TUN (IP packets) or TAP (Ethernet frames).
    pub kind: DeviceKind,
    /// `IFF_MULTI_QUEUE`: allow several queues (fds) on the device. Every queue of a device must
    /// be opened with the same options.
    pub multi_queue: bool,
    /// `IFF_VNET_HDR`: every packet read or written is preceded by a `virtio_net_hdr`
    /// (needed for GSO/checksum offload, see [`Tun::set_offload`]).
    pub vnet_hdr: bool,
}

/// One open, non-blocking queue of a TUN/TAP device.
///
/// Dropping it closes the queue; the device disappears with its last queue.
#[derive(Debug)]
pub struct Tun {
    fd: OwnedFd,
    name: String,
    kind: DeviceKind,
    vnet_hdr: bool,
    offload: u32,
}

/// Checks that `name` fits in `ifr_name` and copies it there, NUL-terminated.
fn interface_name(name: &str) -> io::Result<[libc::c_char; libc::IFNAMSIZ]> {
    if name.len() > MAX_NAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} is longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    if name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} contains a NUL byte"),
        ));
    }
    let mut raw = [0 as libc::c_char; libc::IFNAMSIZ];
    for (dst, src) in raw.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(raw)
}

/// Reads the NUL-terminated name the kernel wrote into `ifr_name`.
fn name_from_ifreq(raw: &[libc::c_char; libc::IFNAMSIZ]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An all-zero `ifreq`.
fn zeroed_ifreq() -> libc::ifreq {
    // SAFETY: `ifreq` is a C struct of integers, arrays and a union of such (and one raw
    // pointer, for which null is valid); the all-zero bit pattern is a valid value.
    unsafe { mem::zeroed() }
}

impl Tun {
    /// Opens `/dev/net/tun` and attaches (`TUNSETIFF`) to the device `name` with `IFF_NO_PI`,
    /// plus `IFF_TUN`/`IFF_TAP`, `IFF_MULTI_QUEUE` and `IFF_VNET_HDR` as `options` say. The
    /// fd is `O_NONBLOCK | O_CLOEXEC`.
    ///
    /// Creates the device if it does not exist (not persistent: it disappears when its last
    /// queue is closed). `name` may contain a `%d` (e.g. `weft%d`) or be empty, and the kernel
    /// picks a free name; [`Tun::name`] tells which.
    ///
    /// Errors keep the errno: opening `/dev/net/tun` (`ENOENT` without the tun module,
    /// `EACCES`), or `TUNSETIFF` (`EPERM` without `CAP_NET_ADMIN`, `EBUSY` if the device
    /// exists with other flags or is a different kind of device, `EINVAL` for a bad
    /// combination). A name longer than 15 bytes (`IFNAMSIZ` - 1), or containing a NUL byte, is
    /// [`io::ErrorKind::InvalidInput`]; other invalid names (`/`, `:`, whitespace) are the
    /// kernel's `EINVAL`.
    pub fn open(name: &str, options: &TunOptions) -> io::Result<Tun> {
        let raw_name = interface_name(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            // std adds O_CLOEXEC itself.
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")?;
        let fd = OwnedFd::from(file);

        let mut flags = libc::IFF_NO_PI;
        flags |= match options.kind {
            DeviceKind::Tun => libc::IFF_TUN,
            DeviceKind::Tap => libc::IFF_TAP,
        };
        if options.multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        if options.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }

        let mut req = zeroed_ifreq();
        req.ifr_name = raw_name;
        // All flags above fit in 16 bits (the largest is IFF_VNET_HDR = 0x4000).
        req.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `req` is a valid, initialized
        // ifreq that outlives the call, and `fd` is an open /dev/net/tun descriptor.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) })?;

        Ok(Tun {
            name: name_from_ifreq(&req.ifr_name),
            fd,
            kind: options.kind,
            vnet_hdr: options.vnet_hdr,
            offload: 0,
        })
    }

    /// Wraps an fd that is already attached to a TUN/TAP device (e.g. handed over by a parent
    /// process or a VPN framework), asks the kernel (`TUNGETIFF`) for its name and kind, and
    /// makes it non-blocking.
    ///
    /// The fd must have been attached with `IFF_NO_PI`, as [`Tun::open`] does: the kernel cannot
    /// be asked (`TUNGETIFF` reports `IFF_NOFILTER`, the same bit, instead), and with packet
    /// information every packet would start with 4 extra bytes.
    ///
    /// Fails with `EBADFD`/`EINVAL`/`ENOTTY` if `fd` is not an attached TUN/TAP fd.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Tun> {
        let mut req = zeroed_ifreq();
        // SAFETY: TUNGETIFF writes one `struct ifreq` into `req`, which is valid and writable.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut req) })?;
        // SAFETY: TUNGETIFF succeeded, so it filled in `ifru_flags`; reading a c_short from
        // the zero-initialized union is valid in any case.
        let flags = libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags });
        let kind = if flags & libc::IFF_TAP != 0 {
            DeviceKind::Tap
        } else {
            DeviceKind::Tun
        };
        let vnet_hdr = flags & libc::IFF_VNET_HDR != 0;
        // SAFETY: F_GETFL takes no pointer argument.
        let fl = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
        // SAFETY: F_SETFL takes an int argument.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) })?;
        Ok(Tun {
            name: name_from_ifreq(&req.ifr_name),
            fd,
            kind,
            vnet_hdr,
            offload: 0,
        })
    }

    /// The device's name as the kernel gave it (differs from the requested one if that had a
    /// `%d` or was empty).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is a TUN or a TAP device.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// Whether every packet read or written carries a `virtio_net_hdr` in front.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// The offloads last accepted by [`Tun::set_offload`] on this queue (0 before).
    pub fn offload(&self) -> u32 {
        self.offload
    }

    /// Writes one packet gathered from `parts` (`writev`): with a vnet header, the header,
    /// the packet's headers and its payload slices, which the kernel copies once.
    pub fn writev(&self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        super::writev(&self.fd, parts)
    }

    /// Reads one packet into `buf` and returns its length; [`io::ErrorKind::WouldBlock`] when
    /// none is queued. A packet longer than `buf` is truncated to `buf.len()` (the rest is
    /// lost), so `buf` should hold MTU (+ headers) bytes.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one packet (all of `buf`) into the device, i.e. hands it to the kernel as if it
    /// had been received on the interface. Returns the bytes written;
    /// [`io::ErrorKind::WouldBlock`] if the queue is full, `EINVAL`/`EIO` for a malformed
    /// packet or a device that is down.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Sets the size of the vnet header in front of each packet (`TUNSETVNETHDRSZ`; 10 by
    /// default, 12 for `virtio_net_hdr_mrg_rxbuf`). Only meaningful with `vnet_hdr`.
    pub fn set_vnet_hdr_size(&self, size: i32) -> io::Result<()> {
        let size: libc::c_int = size;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which points to `size`.
        cvt(unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) })?;
        Ok(())
    }

    /// Tells the kernel which offloads this reader handles (`TUNSETOFFLOAD`, a mask of
    /// `libc::TUN_F_CSUM`, `TUN_F_TSO4`, `TUN_F_TSO6`, `TUN_F_USO4`, ...): with them the kernel
    /// may hand over packets larger than the MTU with a partial checksum, described by the
    /// vnet header. Needs `vnet_hdr`; `EINVAL` for flags the kernel does not know.
    pub fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        // TUNSETOFFLOAD takes the mask by value, as an unsigned long.
        let arg = flags as libc::c_ulong;
        // SAFETY: TUNSETOFFLOAD takes an integer argument and dereferences no pointer.
        cvt(unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETOFFLOAD, arg) })?;
        self.offload = flags;
        Ok(())
    }

    /// Makes the device persistent (`TUNSETPERSIST`): it stays, with its addresses and
    /// routes, when its last queue closes (a restarted daemon attaches to it again); `false`
    /// makes it go with its last queue again.
    pub fn set_persist(&self, on: bool) -> io::Result<()> {
        let arg = libc::c_ulong::from(on);
        // SAFETY: TUNSETPERSIST takes an integer argument and dereferences no pointer.
        cvt(unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETPERSIST, arg) })?;
        Ok(())
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Tun> for OwnedFd {
    fn from(tun: Tun) -> OwnedFd {
        tun.fd
    }
}

impl mio::event::Source for Tun {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.fd.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.fd.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        mio::unix::SourceFd(&self.fd.as_raw_fd()).deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::netlink::Netlink;
    use crate::sys::test_support::skip_unless_root;
    use crate::sys::test_support::{in_private_netns, ip};
    use std::net::{IpAddr, Ipv4Addr, UdpSocket};
    use std::time::{Duration, Instant};

    /// How long a test waits for the kernel to put a packet into the device.
    const PACKET_WAIT: Duration = Duration::from_secs(5);

    /// RFC 1071 Internet checksum.
    fn internet_checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// Builds an IPv4 packet (no options) around `payload`.
    fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
        let total = 20 + payload.len();
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x5757u16.to_be_bytes()); // identification
        p[6] = 0x40; // don't fragment
        p[8] = 64; // TTL
        p[9] = protocol;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        let sum = internet_checksum(&p);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// Builds an ICMP echo request/reply message (type 8/0) with a correct checksum.
    fn icmp_echo(kind: u8, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        let mut m = vec![kind, 0, 0, 0];
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(data);
        let sum = internet_checksum(&m);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        m
    }

    /// Reads packets from `tun` (waiting with mio, up to [`PACKET_WAIT`]) until one satisfies
    /// `wanted`, and returns it; other packets (e.g. IPv6 router solicitations) are skipped.
    fn await_packet(tun: &mut Tun, what: &str, wanted: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(4);
        poll.registry()
            .register(tun, mio::Token(0), mio::Interest::READABLE)
            .unwrap();
        let deadline = Instant::now() + PACKET_WAIT;
        let mut buf = vec![0u8; 2048];
        let found = 'wait: loop {
            loop {
                match tun.read(&mut buf) {
                    Ok(n) if wanted(&buf[..n]) => break 'wait Some(buf[..n].to_vec()),
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read from {}: {e}", tun.name()),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            poll.poll(&mut events, Some(left)).unwrap();
        };
        poll.registry().deregister(tun).unwrap();
        found.unwrap_or_else(|| panic!("no {what} on {} within {PACKET_WAIT:?}", tun.name()))
    }

    #[test]
    fn tun_carries_packets_both_ways() {
        skip_unless_root!();
        in_private_netns(|| {
            let mut tun = Tun::open("wt0", &TunOptions::default()).unwrap();
            assert_eq!(tun.name(), "wt0");
            assert_eq!(tun.kind(), DeviceKind::Tun);

            let mut nl = Netlink::open().unwrap();
            let link = nl.link_by_name("wt0").unwrap().expect("wt0 exists");
            nl.set_mtu(link.index, 1400).unwrap();
            let local = Ipv4Addr::new(100, 96, 1, 0);
            nl.add_address(link.index, IpAddr::V4(local), 16).unwrap();
            nl.set_up(link.index).unwrap();

            let link = nl.link_by_name("wt0").unwrap().unwrap();
            assert_eq!((link.name.as_str(), link.mtu, link.up), ("wt0", 1400, true));
            let shown = ip(&["-o", "addr", "show", "dev", "wt0"]);
            assert!(shown.contains("inet 100.96.1.0/16"), "{shown}");
            let shown = ip(&["-o", "link", "show", "dev", "wt0"]);
            assert!(shown.contains("mtu 1400"), "{shown}");

            // Kernel -> device: a UDP datagram routed via wt0.
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            socket.send_to(b"hello weft", "100.96.2.1:9999").unwrap();
            let packet = await_packet(&mut tun, "IPv4 UDP packet to 100.96.2.1", |p| {
                p.len() >= 28 && p[0] == 0x45 && p[9] == 17 && p[16..20] == [100, 96, 2, 1]
            });
            assert_eq!(&packet[12..16], &local.octets(), "source address");
            assert_eq!(&packet[22..24], &9999u16.to_be_bytes(), "UDP port");
            assert_eq!(&packet[28..], b"hello weft");
            assert_eq!(internet_checksum(&packet[..20]), 0, "IPv4 header checksum");

            // Device -> kernel: an echo request to our address comes back as a reply.
            let peer = Ipv4Addr::new(100, 96, 2, 1);
            let request = ipv4_packet(peer, local, 1, &icmp_echo(8, 0x1234, 7, b"weft ping"));
            assert_eq!(tun.write(&request).unwrap(), request.len());
            let reply = await_packet(&mut tun, "ICMP echo reply", |p| {
                p.len() >= 28 && p[0] == 0x45 && p[9] == 1 && p[20] == 0
            });
            assert_eq!(&reply[12..16], &local.octets());
            assert_eq!(&reply[16..20], &peer.octets());
            assert_eq!(&reply[24..26], &0x1234u16.to_be_bytes(), "echo id");
            assert_eq!(&reply[26..28], &7u16.to_be_bytes(), "echo seq");
            assert_eq!(&reply[28..], b"weft ping");
            assert_eq!(internet_checksum(&reply[20..]), 0, "ICMP checksum");
        });
    }

    #[test]
    fn read_without_packets_would_block() {
        skip_unless_root!();
        in_private_netns(|| {
            let tun = Tun::open("wt0", &TunOptions::default()).unwrap();
            let err = tun.read(&mut [0u8; 1500]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        });
    }

    #[test]
    fn name_template_and_empty_name_get_a_kernel_name() {
        skip_unless_root!();
        in_private_netns(|| {
            let a = Tun::open("wt%d", &TunOptions::default()).unwrap();
            let b = Tun::open("wt%d", &TunOptions::default()).unwrap();
            assert!(
                a.name().starts_with("wt") && !a.name().contains('%'),
                "{}",
                a.name()
            );
            assert_ne!(a.name(), b.name());
            let c = Tun::open("", &TunOptions::default()).unwrap();
            assert!(c.name().starts_with("tun"), "{}", c.name());
        });
    }

    #[test]
    fn bad_names_are_invalid_input() {
        let err = Tun::open("a-name-of-16-byt", &TunOptions::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("longer than 15 bytes"), "{err}");
        let err = Tun::open("wt\0x", &TunOptions::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn kernel_rejections_keep_errno() {
        skip_unless_root!();
        in_private_netns(|| {
            let err = Tun::open("wt/0", &TunOptions::default()).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
            // A single-queue device cannot get a second queue.
            let _first = Tun::open("wt0", &TunOptions::default()).unwrap();
            let err = Tun::open("wt0", &TunOptions::default()).unwrap_err();
            assert!(err.raw_os_error().is_some(), "{err}");
        });
    }

    #[test]
    fn device_disappears_with_its_last_queue() {
        skip_unless_root!();
        in_private_netns(|| {
            let mut nl = Netlink::open().unwrap();
            let tun = Tun::open("wt0", &TunOptions::default()).unwrap();
            assert!(nl.link_by_name("wt0").unwrap().is_some());
            drop(tun);
            assert!(nl.link_by_name("wt0").unwrap().is_none());
        });
    }

    #[test]
    fn multi_queue_device_takes_several_queues() {
        skip_unless_root!();
        in_private_netns(|| {
            let options = TunOptions {
                multi_queue: true,
                ..TunOptions::default()
            };
            let queues: Vec<Tun> = (0..3)
                .map(|_| Tun::open("wtmq0", &options).unwrap())
                .collect();
            assert!(queues.iter().all(|q| q.name() == "wtmq0"));
            let fds: std::collections::HashSet<RawFd> =
                queues.iter().map(|q| q.as_raw_fd()).collect();
            assert_eq!(fds.len(), 3);
            // Mixing single- and multi-queue opens of one device is refused.
            let err = Tun::open("wtmq0", &TunOptions::default()).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
        });
    }

    #[test]
    fn tap_with_mac_and_vnet_header() {
        skip_unless_root!();
        in_private_netns(|| {
            let options = TunOptions {
                kind: DeviceKind::Tap,
                vnet_hdr: true,
                ..TunOptions::default()
            };
            let mut tap = Tun::open("wtap0", &options).unwrap();
            assert_eq!(tap.kind(), DeviceKind::Tap);
            tap.set_vnet_hdr_size(12).unwrap();
            tap.set_offload(libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6)
                .unwrap();
            let err = tap.set_offload(0x8000_0000).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL));

            let mut nl = Netlink::open().unwrap();
            let link = nl.link_by_name("wtap0").unwrap().expect("wtap0 exists");
            nl.set_mac(link.index, [0x02, 0x77, 0x65, 0x66, 0x74, 0x01])
                .unwrap();
            let shown = ip(&["-o", "link", "show", "dev", "wtap0"]);
            assert!(shown.contains("link/ether 02:77:65:66:74:01"), "{shown}");
        });
    }

    #[test]
    fn from_fd_recovers_name_and_kind() {
        skip_unless_root!();
        in_private_netns(|| {
            let options = TunOptions {
                kind: DeviceKind::Tap,
                ..TunOptions::default()
            };
            let tap = Tun::open("wtap7", &options).unwrap();
            let again = Tun::from_fd(OwnedFd::from(tap)).unwrap();
            assert_eq!((again.name(), again.kind()), ("wtap7", DeviceKind::Tap));
            assert_eq!(
                again.read(&mut [0u8; 64]).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            let not_tun = std::fs::File::open("/dev/null").unwrap();
            assert!(Tun::from_fd(OwnedFd::from(not_tun)).is_err());
        });
    }
}
