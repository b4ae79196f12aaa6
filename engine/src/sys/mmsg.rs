//! Allocation-free batched UDP I/O with `recvmmsg(2)` / `sendmmsg(2)`.
//!
//! # Model
//!
//! An [`Mmsg`] holds the C arrays one batch needs: `capacity` `mmsghdr`s, one `iovec` and one
//! `sockaddr_storage` per message. They are allocated once in [`Mmsg::new`]; a call to
//! [`Mmsg::recv`] or [`Mmsg::send`] only fills them in and makes one system call, so the hot
//! path does not allocate.
//!
//! # Invariants
//!
//! The headers point into the `iovec` and address arrays of the same `Mmsg`, and the `iovec`s
//! point into the caller's buffers. Those pointers are (re)written at the start of every call,
//! from slices the call borrows for its whole duration, and only the kernel reads them, during
//! that call. Between calls they are stale and never read. Every buffer index, range and offset
//! is checked against the actual slice before a pointer to it is built, so out-of-range input is
//! an [`io::ErrorKind::InvalidInput`] error, never undefined behaviour.
//!
//! # Addresses
//!
//! Received sources are reported as [`SocketAddr::V4`] or [`SocketAddr::V6`]; an IPv4-mapped
//! IPv6 source (`::ffff:a.b.c.d`, what a dual-stack IPv6 socket reports for IPv4 peers) comes
//! back as `V4`. Destinations are passed to the kernel as given: a `V4` destination becomes a
//! `sockaddr_in`, a `V6` one a `sockaddr_in6`. The engine uses a socket of the listen
//! address's family, so that is what fits; on an `AF_INET6` socket Linux also accepts a
//! `sockaddr_in` unless the socket is `IPV6_V6ONLY`, and an IPv4 socket rejects `V6`
//! destinations with `EAFNOSUPPORT`.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr;

/// `UDP_SEGMENT` (linux/udp.h): a send's datagram size for UDP GSO (a `u16` cmsg).
pub const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO` (linux/udp.h): receive coalesced trains, with their datagram size as an `int` cmsg.
pub const UDP_GRO: libc::c_int = 104;

/// Room for one control message of up to 8 bytes of data (`CMSG_SPACE(8)` = 24 on 64-bit
/// Linux), aligned as `cmsghdr` wants.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; 32]);

/// What [`Mmsg::recv`] learned about one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes of the datagram placed in the buffer, after the offset (never more than the space
    /// there was).
    pub len: usize,
    /// The sender. `0.0.0.0:0` if the kernel reported no (or an unknown kind of) address.
    pub source: SocketAddr,
    /// The datagram was larger than the buffer space and its tail was dropped (`MSG_TRUNC`).
    pub truncated: bool,
    /// With `UDP_GRO` on the socket: the buffer holds a train of datagrams of this size each
    /// (the last may be shorter), received from one source in one go.
    pub segment: Option<usize>,
}

impl Default for RecvMeta {
    fn default() -> Self {
        RecvMeta {
            len: 0,
            source: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            truncated: false,
            segment: None,
        }
    }
}

/// One datagram for [`Mmsg::send`]: the bytes `bufs[buf][range]`, sent to `dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendMsg {
    /// Index of the buffer in the slice passed to [`Mmsg::send`].
    pub buf: usize,
    /// The bytes of that buffer that form the datagram.
    pub range: Range<usize>,
    /// Where to send it.
    pub dest: SocketAddr,
    /// UDP GSO: the bytes are a train of datagrams of this size each (the last may be
    /// shorter), sent with one `UDP_SEGMENT` control message; `None` sends one datagram.
    pub segment: Option<u16>,
}

/// Preallocated `recvmmsg`/`sendmmsg` state for batches of up to `capacity` datagrams.
pub struct Mmsg {
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<CmsgBuf>,
}

// SAFETY: the raw pointers inside the headers and iovecs are only written at the start of a
// call (`&mut self`) from buffers borrowed for that call, and only the kernel dereferences them,
// during that call; between calls they are dead values. So moving an `Mmsg` to another thread
// cannot let anyone reach memory through them.
unsafe impl Send for Mmsg {}

impl std::fmt::Debug for Mmsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mmsg")
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// The length of the C socket address `write_sockaddr` makes of `addr`.
fn sockaddr_len(addr: &SocketAddr) -> libc::socklen_t {
    let len = match addr {
        SocketAddr::V4(_) => mem::size_of::<libc::sockaddr_in>(),
        SocketAddr::V6(_) => mem::size_of::<libc::sockaddr_in6>(),
    };
    len as libc::socklen_t
}

/// Writes `addr` into `storage` as a `sockaddr_in` or `sockaddr_in6`.
fn write_sockaddr(addr: &SocketAddr, storage: &mut libc::sockaddr_storage) {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and at least as aligned as sockaddr_in
            // (that is its purpose), and `storage` is a valid, exclusive reference.
            unsafe { ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
        }
    }
}

/// Reads the address the kernel wrote into `storage` (`len` bytes of it).
fn read_sockaddr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: sockaddr_storage is larger than and at least as aligned as sockaddr_in,
            // and every bit pattern is a valid sockaddr_in (integers and byte arrays).
            let sin: &libc::sockaddr_in =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

/// `CMSG_SPACE(sizeof(u16))`: the control bytes of one `UDP_SEGMENT` message.
fn segment_cmsg_space() -> usize {
    // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
    unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) as usize }
}

/// Writes a `SOL_UDP`/`UDP_SEGMENT` control message carrying `segment` into `buf`.
fn write_segment_cmsg(buf: &mut CmsgBuf, segment: u16) {
    *buf = CmsgBuf([0; 32]);
    let header = libc::cmsghdr {
        // SAFETY: CMSG_LEN is pure arithmetic on its argument.
        cmsg_len: unsafe { libc::CMSG_LEN(mem::size_of::<u16>() as u32) } as _,
        cmsg_level: libc::SOL_UDP,
        cmsg_type: UDP_SEGMENT,
    };
    let header_space = segment_cmsg_space() - mem::size_of::<u64>();
    // SAFETY: CmsgBuf is 32 bytes aligned to 8, so a cmsghdr (16 bytes, align 8) fits at its
    // start; the u16 goes right after the (aligned) header, at CMSG_DATA, which is at most 16
    // bytes in and inside the buffer.
    unsafe {
        ptr::write((buf as *mut CmsgBuf).cast::<libc::cmsghdr>(), header);
        let data = (buf as *mut CmsgBuf).cast::<u8>().add(header_space);
        ptr::write_unaligned(data.cast::<u16>(), segment);
    }
}

/// The `UDP_GRO` segment size a received message's control data carries, if any.
fn gro_segment(msg: &libc::msghdr) -> Option<usize> {
    #[allow(clippy::unnecessary_cast)] // socklen_t on musl, usize on glibc
    let control_len = msg.msg_controllen as usize;
    if msg.msg_control.is_null() || control_len < mem::size_of::<libc::cmsghdr>() {
        return None;
    }
    // SAFETY: msg_control points at one of our CmsgBuf slots and msg_controllen (set by the
    // kernel, never more than what we offered) says how much of it holds control messages;
    // CMSG_FIRSTHDR/CMSG_NXTHDR stay inside that length, and CMSG_DATA of a header whose
    // cmsg_len covers an int points at readable bytes inside the slot.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_UDP
                && c.cmsg_type == UDP_GRO
                && c.cmsg_len as usize
                    >= libc::CMSG_LEN(mem::size_of::<libc::c_int>() as u32) as usize
            {
                let size = ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return usize::try_from(size).ok().filter(|&s| s > 0);
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

impl Mmsg {
    /// Preallocates room for batches of `capacity` datagrams (at least 1; 64 is plenty: the
    /// kernel caps a batch at `UIO_MAXIOV` = 1024).
    pub fn new(capacity: usize) -> Mmsg {
        let capacity = capacity.clamp(1, 1024);
        // SAFETY: mmsghdr and sockaddr_storage are C structs of integers and raw pointers, for
        // which all-zero (null pointers, zero lengths) is a valid value.
        let header: libc::mmsghdr = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let iovec = libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        };
        Mmsg {
            headers: vec![header; capacity],
            iovecs: vec![iovec; capacity],
            addrs: vec![addr; capacity],
            cmsgs: vec![CmsgBuf([0; 32]); capacity],
        }
    }

    /// The most datagrams one call handles.
    pub fn capacity(&self) -> usize {
        self.headers.len()
    }

    /// Points header `i` at iovec `i` and at address slot `i`, which is `addr_lens(i)` bytes.
    /// The caller has filled `self.iovecs[..n]` (and, for sends, `self.addrs[..n]`).
    /// Control space `control_lens(i)` bytes of cmsg slot `i` (0: none).
    fn link_headers(
        &mut self,
        n: usize,
        addr_lens: impl Fn(usize) -> libc::socklen_t,
        control_lens: impl Fn(usize) -> usize,
    ) {
        let iov_base = self.iovecs.as_mut_ptr();
        let addr_base = self.addrs.as_mut_ptr();
        let cmsg_base = self.cmsgs.as_mut_ptr();
        for (i, header) in self.headers[..n].iter_mut().enumerate() {
            // Everything else in msg_hdr (glibc and musl differ in padding fields) is zero.
            // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
            header.msg_hdr = unsafe { mem::zeroed() };
            header.msg_hdr.msg_name = addr_base.wrapping_add(i).cast();
            header.msg_hdr.msg_namelen = addr_lens(i);
            header.msg_hdr.msg_iov = iov_base.wrapping_add(i);
            header.msg_hdr.msg_iovlen = 1;
            let control = control_lens(i).min(mem::size_of::<CmsgBuf>());
            if control > 0 {
                header.msg_hdr.msg_control = cmsg_base.wrapping_add(i).cast();
                header.msg_hdr.msg_controllen = control as _;
            }
            header.msg_len = 0;
        }
    }

    /// One `recvmmsg(MSG_DONTWAIT)` call: datagram `i` lands in `bufs[i].as_mut()[offset..]`
    /// and `meta[i]` gets its length, its source and whether it was truncated.
    ///
    /// Receives at most `min(bufs.len(), meta.len(), capacity)` datagrams and returns how
    /// many it did; [`io::ErrorKind::WouldBlock`] when none is queued. If an error happens
    /// after some datagrams were received, those are returned and the kernel reports the error
    /// on the next call. An `offset` beyond the end of one of the buffers used is
    /// [`io::ErrorKind::InvalidInput`] (nothing is received).
    pub fn recv<B: AsMut<[u8]>>(
        &mut self,
        fd: impl AsFd,
        bufs: &mut [B],
        offset: usize,
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let n = bufs.len().min(meta.len()).min(self.capacity());
        if n == 0 {
            return Ok(0);
        }
        for (i, (buf, iov)) in bufs.iter_mut().zip(&mut self.iovecs[..n]).enumerate() {
            let buf = buf.as_mut();
            let Some(space) = buf.get_mut(offset..) else {
                return Err(invalid_input(format!(
                    "receive offset {offset} is beyond buffer {i} of {} bytes",
                    buf.len()
                )));
            };
            iov.iov_base = space.as_mut_ptr().cast();
            iov.iov_len = space.len();
        }
        let name_len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        self.link_headers(n, |_| name_len, |_| mem::size_of::<CmsgBuf>());

        // SAFETY: headers[..n] point at iovecs[..n] and addrs[..n] of `self` (alive and not
        // otherwise accessed during the call), each with its true length; iovecs[..n] point at
        // the writable tails of bufs[..n], which stay mutably borrowed for the whole call.
        // n <= capacity fits in c_uint (at most 1024). A null timeout means none.
        let count = unsafe {
            libc::recvmmsg(
                fd.as_fd().as_raw_fd(),
                self.headers.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT as _,
                ptr::null_mut(),
            )
        };
        if count < 0 {
            return Err(io::Error::last_os_error());
        }
        let count = (count as usize).min(n);
        let received = self.headers.iter().zip(&self.iovecs).zip(&self.addrs);
        for (meta, ((header, iov), addr)) in meta[..count].iter_mut().zip(received) {
            *meta = RecvMeta {
                len: (header.msg_len as usize).min(iov.iov_len),
                source: read_sockaddr(addr, header.msg_hdr.msg_namelen)
                    .unwrap_or_else(|| RecvMeta::default().source),
                truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                segment: gro_segment(&header.msg_hdr),
            };
        }
        Ok(count)
    }

    /// One `sendmmsg(MSG_DONTWAIT)` call for `msgs` (at most `capacity` of them): message `i`
    /// is `bufs[msgs[i].buf].as_ref()[msgs[i].range.clone()]`, sent to `msgs[i].dest`.
    ///
    /// Returns how many were sent, which may be fewer than asked (resend the rest). An error
    /// means the first one failed (`WouldBlock` when the socket buffer is full, `EMSGSIZE`,
    /// `ENETUNREACH`, ...), so the caller can drop or retry that one. A buffer index or range
    /// out of bounds is [`io::ErrorKind::InvalidInput`] and nothing is sent.
    pub fn send<B: AsRef<[u8]>>(
        &mut self,
        fd: impl AsFd,
        bufs: &[B],
        msgs: &[SendMsg],
    ) -> io::Result<usize> {
        let n = msgs.len().min(self.capacity());
        if n == 0 {
            return Ok(0);
        }
        for (i, (((msg, iov), addr), cmsg)) in msgs[..n]
            .iter()
            .zip(&mut self.iovecs[..n])
            .zip(&mut self.addrs[..n])
            .zip(&mut self.cmsgs[..n])
            .enumerate()
        {
            let Some(buf) = bufs.get(msg.buf) else {
                return Err(invalid_input(format!(
                    "message {i} names buffer {} but there are {}",
                    msg.buf,
                    bufs.len()
                )));
            };
            let buf = buf.as_ref();
            let Some(data) = buf.get(msg.range.clone()) else {
                return Err(invalid_input(format!(
                    "message {i}: range {:?} is outside buffer {} of {} bytes",
                    msg.range,
                    msg.buf,
                    buf.len()
                )));
            };
            // The kernel only reads through iov_base for a send; the cast to *mut is what the
            // C struct wants.
            iov.iov_base = data.as_ptr().cast_mut().cast();
            iov.iov_len = data.len();
            write_sockaddr(&msg.dest, addr);
            if let Some(segment) = msg.segment {
                write_segment_cmsg(cmsg, segment);
            }
        }
        self.link_headers(
            n,
            |i| sockaddr_len(&msgs[i].dest),
            |i| {
                if msgs[i].segment.is_some() {
                    segment_cmsg_space()
                } else {
                    0
                }
            },
        );

        // SAFETY: headers[..n] point at iovecs[..n] and addrs[..n] of `self` with their true
        // lengths; iovecs[..n] point into bufs, borrowed for the whole call and only read by the
        // kernel; every range was checked against its buffer above. n fits in c_uint.
        let sent = unsafe {
            libc::sendmmsg(
                fd.as_fd().as_raw_fd(),
                self.headers.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT as _,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::test_support::skip_unless_root;
    use crate::sys::test_support::{in_private_netns, wait_readable};
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    /// How long a test waits for datagrams that were already sent over loopback.
    const DATAGRAM_WAIT: Duration = Duration::from_secs(5);
    const OFFSET: usize = 64;

    fn socket(addr: &str) -> UdpSocket {
        let socket = UdpSocket::bind(addr).unwrap();
        socket.set_nonblocking(true).unwrap();
        // Room for a whole test batch even with loopback's per-skb overhead.
        let size: libc::c_int = 8 << 20;
        // SAFETY: SO_RCVBUFFORCE reads one int from the pointer, which points at `size`.
        let ret = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(ret, 0, "SO_RCVBUFFORCE: {}", io::Error::last_os_error());
        socket
    }

    /// The bytes of test datagram `i` of length `len`.
    fn pattern(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
    }

    /// Sends all of `msgs`, resuming after partial batches.
    fn send_all(mmsg: &mut Mmsg, fd: &UdpSocket, bufs: &[Vec<u8>], msgs: &[SendMsg]) {
        let mut done = 0;
        for _ in 0..msgs.len() * 4 {
            if done == msgs.len() {
                return;
            }
            done += mmsg.send(fd, bufs, &msgs[done..]).unwrap();
        }
        panic!("only {done} of {} datagrams sent", msgs.len());
    }

    /// Receives until `want` datagrams arrived or [`DATAGRAM_WAIT`] passed.
    fn recv_all(
        mmsg: &mut Mmsg,
        fd: &UdpSocket,
        bufs: &mut [Vec<u8>],
        meta: &mut [RecvMeta],
        want: usize,
    ) -> usize {
        let deadline = Instant::now() + DATAGRAM_WAIT;
        let mut got = 0;
        while got < want {
            match mmsg.recv(fd, &mut bufs[got..], OFFSET, &mut meta[got..]) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || !wait_readable(fd, left) {
                        break;
                    }
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        got
    }

    /// Sends a batch of 64 datagrams (63 of 1..=1472 bytes and one of 65000) from `from` to
    /// `to` and checks what arrives.
    fn batch_round_trip(from: &str, to: &str) {
        let sender = socket(from);
        let receiver = socket(to);
        let dest = receiver.local_addr().unwrap();
        let source = sender.local_addr().unwrap();
        let sizes: Vec<usize> = (0..63).map(|i| 1 + i * 1471 / 62).chain([65000]).collect();
        assert_eq!((sizes[0], sizes[62], sizes.len()), (1, 1472, 64));

        // Each datagram sits after 16 bytes of headroom in its own buffer.
        let bufs: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| [vec![0xEE; 16], pattern(i, len)].concat())
            .collect();
        let msgs: Vec<SendMsg> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| SendMsg {
                buf: i,
                range: 16..16 + len,
                dest,
                segment: None,
            })
            .collect();
        let mut tx = Mmsg::new(64);
        send_all(&mut tx, &sender, &bufs, &msgs);

        let mut rx = Mmsg::new(64);
        let mut rx_bufs = vec![vec![0xAAu8; OFFSET + 65536]; 64];
        let mut meta = vec![RecvMeta::default(); 64];
        let got = recv_all(&mut rx, &receiver, &mut rx_bufs, &mut meta, 64);
        assert_eq!(got, 64, "datagrams received within {DATAGRAM_WAIT:?}");
        for (i, (&len, (buf, meta))) in sizes.iter().zip(rx_bufs.iter().zip(&meta)).enumerate() {
            assert_eq!(meta.len, len, "length of datagram {i}");
            assert_eq!(meta.source, source, "source of datagram {i}");
            assert!(!meta.truncated, "datagram {i} truncated");
            assert!(
                buf[..OFFSET].iter().all(|&b| b == 0xAA),
                "headroom of {i} touched"
            );
            assert!(
                buf[OFFSET..OFFSET + len] == pattern(i, len),
                "content of datagram {i}"
            );
        }
        let err = rx
            .recv(&receiver, &mut rx_bufs, OFFSET, &mut meta)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn batch_of_64_over_ipv4() {
        skip_unless_root!();
        in_private_netns(|| batch_round_trip("127.0.0.1:0", "127.0.0.1:0"));
    }

    #[test]
    fn batch_of_64_over_ipv6() {
        skip_unless_root!();
        in_private_netns(|| batch_round_trip("[::1]:0", "[::1]:0"));
    }

    #[test]
    fn empty_socket_would_block() {
        skip_unless_root!();
        in_private_netns(|| {
            let receiver = socket("127.0.0.1:0");
            let mut rx = Mmsg::new(8);
            let mut bufs = vec![[0u8; 128]; 8];
            let mut meta = [RecvMeta::default(); 8];
            let err = rx.recv(&receiver, &mut bufs, 0, &mut meta).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
            // Nothing to do is not an error.
            assert_eq!(rx.recv(&receiver, &mut bufs, 0, &mut []).unwrap(), 0);
            assert_eq!(rx.send(&receiver, &bufs, &[]).unwrap(), 0);
        });
    }

    #[test]
    fn short_buffer_sets_truncated() {
        skip_unless_root!();
        in_private_netns(|| {
            let sender = socket("127.0.0.1:0");
            let receiver = socket("127.0.0.1:0");
            let data = pattern(5, 100);
            let msgs = [SendMsg {
                buf: 0,
                range: 0..100,
                dest: receiver.local_addr().unwrap(),
                segment: None,
            }];
            let mut mmsg = Mmsg::new(4);
            assert_eq!(mmsg.send(&sender, &[&data[..]], &msgs).unwrap(), 1);
            let mut bufs = vec![vec![0u8; OFFSET + 50]];
            let mut meta = [RecvMeta::default()];
            assert_eq!(recv_all(&mut mmsg, &receiver, &mut bufs, &mut meta, 1), 1);
            assert_eq!(meta[0].len, 50);
            assert!(meta[0].truncated);
            assert_eq!(bufs[0][OFFSET..], data[..50]);
        });
    }

    #[test]
    fn out_of_range_input_is_rejected_before_any_io() {
        skip_unless_root!();
        in_private_netns(|| {
            let sender = socket("127.0.0.1:0");
            let receiver = socket("127.0.0.1:0");
            let dest = receiver.local_addr().unwrap();
            let bufs = [vec![1u8; 100]];
            let good = SendMsg {
                buf: 0,
                range: 0..10,
                dest,
                segment: None,
            };
            let bad = [
                SendMsg {
                    buf: 1,
                    ..good.clone()
                },
                SendMsg {
                    range: 10..2000,
                    ..good.clone()
                },
                SendMsg {
                    range: 101..101,
                    ..good.clone()
                },
                #[allow(clippy::reversed_empty_ranges)]
                SendMsg {
                    range: 20..10,
                    ..good.clone()
                },
                SendMsg {
                    buf: usize::MAX,
                    ..good.clone()
                },
            ];
            let mut mmsg = Mmsg::new(8);
            for msg in bad {
                // The bad message comes second: the good first one must not go out either.
                let err = mmsg
                    .send(&sender, &bufs, &[good.clone(), msg.clone()])
                    .unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{msg:?}");
            }
            let mut rx_bufs = vec![vec![0u8; 200]; 2];
            let mut meta = [RecvMeta::default(); 2];
            let err = mmsg
                .recv(&receiver, &mut rx_bufs, 0, &mut meta)
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "nothing was sent");
            // An offset past a buffer's end.
            let err = mmsg
                .recv(&receiver, &mut rx_bufs, 201, &mut meta)
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            // An empty range is a valid (empty) datagram; the offset may equal the length.
            let empty = SendMsg {
                range: 100..100,
                ..good
            };
            assert_eq!(mmsg.send(&sender, &bufs, &[empty]).unwrap(), 1);
            assert_eq!(
                recv_all(&mut mmsg, &receiver, &mut rx_bufs, &mut meta, 1),
                1
            );
            assert_eq!((meta[0].len, meta[0].truncated), (0, false));
        });
    }

    #[test]
    fn batches_are_capped_at_capacity() {
        skip_unless_root!();
        in_private_netns(|| {
            let sender = socket("127.0.0.1:0");
            let receiver = socket("127.0.0.1:0");
            let dest = receiver.local_addr().unwrap();
            let bufs = [pattern(0, 10)];
            let msgs = vec![
                SendMsg {
                    buf: 0,
                    range: 0..10,
                    dest,
                    segment: None,
                };
                10
            ];
            let mut mmsg = Mmsg::new(4);
            assert_eq!(mmsg.capacity(), 4);
            assert_eq!(mmsg.send(&sender, &bufs, &msgs).unwrap(), 4);
            let mut rx_bufs = vec![vec![0u8; OFFSET + 16]; 10];
            let mut meta = vec![RecvMeta::default(); 10];
            assert_eq!(
                recv_all(&mut mmsg, &receiver, &mut rx_bufs, &mut meta, 4),
                4
            );
            assert_eq!(Mmsg::new(0).capacity(), 1);
        });
    }

    #[test]
    fn dual_stack_socket_reports_ipv4_peers_as_v4() {
        skip_unless_root!();
        in_private_netns(|| {
            let v4 = socket("127.0.0.1:0");
            let dual = socket("[::]:0");
            let dual_port = dual.local_addr().unwrap().port();
            let bufs = [pattern(1, 33)];
            let mut mmsg = Mmsg::new(2);

            // IPv4 -> dual-stack IPv6 socket: the source comes back as V4, not ::ffff:a.b.c.d.
            let to_dual = SendMsg {
                buf: 0,
                range: 0..33,
                dest: SocketAddr::from(([127, 0, 0, 1], dual_port)),
                segment: None,
            };
            assert_eq!(mmsg.send(&v4, &bufs, &[to_dual]).unwrap(), 1);
            let mut rx_bufs = vec![vec![0u8; OFFSET + 64]];
            let mut meta = [RecvMeta::default()];
            assert_eq!(recv_all(&mut mmsg, &dual, &mut rx_bufs, &mut meta, 1), 1);
            assert_eq!(meta[0].source, v4.local_addr().unwrap());

            // A plain V4 destination on the AF_INET6 socket works too (not IPV6_V6ONLY).
            let to_v4 = SendMsg {
                buf: 0,
                range: 0..33,
                dest: v4.local_addr().unwrap(),
                segment: None,
            };
            assert_eq!(mmsg.send(&dual, &bufs, &[to_v4]).unwrap(), 1);
            assert_eq!(recv_all(&mut mmsg, &v4, &mut rx_bufs, &mut meta, 1), 1);
            assert_eq!(
                meta[0].source,
                SocketAddr::from(([127, 0, 0, 1], dual_port))
            );

            // A V6 destination on an IPv4 socket is the kernel's error.
            let to_v6 = SendMsg {
                buf: 0,
                range: 0..33,
                dest: SocketAddr::from((Ipv6Addr::LOCALHOST, dual_port)),
                segment: None,
            };
            let err = mmsg.send(&v4, &bufs, &[to_v6]).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EAFNOSUPPORT), "{err}");
        });
    }

    #[test]
    fn mmsg_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Mmsg>();
    }
}
