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
use std::os::fd::RawFd;
use std::ptr;

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
}

impl Default for RecvMeta {
    fn default() -> Self {
        RecvMeta {
            len: 0,
            source: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            truncated: false,
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
}

/// Preallocated `recvmmsg`/`sendmmsg` state for batches of up to `capacity` datagrams.
pub struct Mmsg {
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
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
            let sin: &libc::sockaddr_in = unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6: &libc::sockaddr_in6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
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
        }
    }

    /// The most datagrams one call handles.
    pub fn capacity(&self) -> usize {
        self.headers.len()
    }

    /// Points header `i` at iovec `i` and address slot `i`, the latter `addr_len` bytes long.
    /// The caller has filled `self.iovecs[..n]` (and, for sends, `self.addrs[..n]`).
    fn link_headers(&mut self, n: usize, addr_lens: impl Fn(usize) -> libc::socklen_t) {
        let iov_base = self.iovecs.as_mut_ptr();
        let addr_base = self.addrs.as_mut_ptr();
        for (i, header) in self.headers[..n].iter_mut().enumerate() {
            // Everything else in msg_hdr (glibc and musl differ in padding fields) is zero.
            // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
            header.msg_hdr = unsafe { mem::zeroed() };
            header.msg_hdr.msg_name = addr_base.wrapping_add(i).cast();
            header.msg_hdr.msg_namelen = addr_lens(i);
            header.msg_hdr.msg_iov = iov_base.wrapping_add(i);
            header.msg_hdr.msg_iovlen = 1;
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
        fd: RawFd,
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
        self.link_headers(n, |_| name_len);

        // SAFETY: headers[..n] point at iovecs[..n] and addrs[..n] of `self` (alive and not
        // otherwise accessed during the call), each with its true length; iovecs[..n] point at
        // the writable tails of bufs[..n], which stay mutably borrowed for the whole call.
        // n <= capacity fits in c_uint (at most 1024). A null timeout means none.
        let count = unsafe {
            libc::recvmmsg(
                fd,
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
        fd: RawFd,
        bufs: &[B],
        msgs: &[SendMsg],
    ) -> io::Result<usize> {
        let n = msgs.len().min(self.capacity());
        if n == 0 {
            return Ok(0);
        }
        for (i, ((msg, iov), addr)) in msgs[..n]
            .iter()
            .zip(&mut self.iovecs[..n])
            .zip(&mut self.addrs[..n])
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
        }
        self.link_headers(n, |i| sockaddr_len(&msgs[i].dest));

        // SAFETY: headers[..n] point at iovecs[..n] and addrs[..n] of `self` with their true
        // lengths; iovecs[..n] point into bufs, borrowed for the whole call and only read by the
        // kernel; every range was checked against its buffer above. n fits in c_uint.
        let sent = unsafe {
            libc::sendmmsg(
                fd,
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
