//! All of weft's `unsafe` code: TUN/TAP devices, rtnetlink, batched UDP I/O and network
//! namespaces.
//!
//! The rest of the crate denies `unsafe_code`; everything that has to talk to the kernel through
//! raw file descriptors, ioctls or C structs lives here, behind safe functions whose contracts
//! are checked before the first pointer is built. Every `unsafe` block carries a `// SAFETY:`
//! comment saying why it is sound.
//!
//! - [`tun`]: open a TUN/TAP device queue ([`Tun`]), non-blocking, registrable with mio.
//! - [`netlink`]: a small synchronous rtnetlink client ([`Netlink`]) for links, addresses,
//!   routes and neighbours (control plane only).
//! - [`mmsg`]: allocation-free batched UDP receive/send with `recvmmsg`/`sendmmsg` ([`Mmsg`]).
//! - [`csum`]: the checksum summers compiled for AVX2 and AVX-512, installed when the CPU has
//!   them.
//! - [`peer_uid`], [`enter_netns`], [`unshare_netns`]: small helpers for the control socket and
//!   for tests.
//!
//! Errors are plain [`io::Error`]s that keep the kernel's errno
//! ([`io::Error::raw_os_error`]), so callers can wrap them with the device, path or address
//! they were working on.
//!
//! Network namespaces are per *thread* on Linux: [`enter_netns`] and [`unshare_netns`] move only
//! the calling thread. Sockets and devices opened afterwards by that thread live in the new
//! namespace (and keep living there when used from other threads), and processes it spawns
//! inherit it.
#![allow(unsafe_code)]

pub mod csum;
pub mod mmsg;
// Not every call is used outside the tests (host-gw and DirectRouting program routes; the
// neighbour calls are only exercised by the tests below).
#[cfg_attr(not(test), allow(dead_code))]
pub mod netlink;
pub mod steer;
pub mod tun;

use std::fs::File;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

pub use mmsg::{Mmsg, RecvMeta, SendMsg};
pub use netlink::{LinkEvent, LinkMonitor, Netlink};
pub use tun::{DeviceKind, Tun, TunOptions};

/// Turns a C-style `-1`-on-error return value into an [`io::Result`], keeping errno.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The uid of the process on the other end of a connected Unix domain socket
/// (`SO_PEERCRED`: the credentials the peer had when it called `connect`).
///
/// Fails with the errno of `getsockopt`, e.g. `ENOTSOCK` or `EBADF`.
pub fn peer_uid(fd: impl AsFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid, writable `ucred` and `len` holds its exact size, which is what
    // SO_PEERCRED writes; the kernel validates `fd` itself (a bad fd is an error, not UB).
    cvt(unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    if len as usize != mem::size_of::<libc::ucred>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_PEERCRED returned a short ucred",
        ));
    }
    Ok(cred.uid)
}

/// Sets an `int` socket option.
fn setsockopt_int(
    fd: impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is one int, read by the kernel from a pointer to `value` with
    // its exact size; the kernel validates the fd.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Reads an `int` socket option.
fn getsockopt_int(fd: impl AsFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a writable int and `len` holds its size; the kernel writes at most
    // that much and validates the fd.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// Whether this kernel can send UDP GSO trains on the socket (`UDP_SEGMENT`, Linux 4.18):
/// the option can be read back.
pub fn udp_gso_supported(fd: impl AsFd) -> bool {
    getsockopt_int(fd, libc::SOL_UDP, mmsg::UDP_SEGMENT).is_ok()
}

/// Turns UDP GRO on for the socket (`UDP_GRO`, Linux 5.0; readable from 5.12): received
/// datagrams of one source may then arrive as one train with its segment size in a control
/// message. Returns whether it is on afterwards (read back, so a kernel that cannot report
/// it counts as off).
pub fn enable_udp_gro(fd: impl AsFd) -> bool {
    let fd = fd.as_fd();
    setsockopt_int(fd, libc::SOL_UDP, mmsg::UDP_GRO, 1).is_ok()
        && getsockopt_int(fd, libc::SOL_UDP, mmsg::UDP_GRO).is_ok_and(|v| v != 0)
}

/// Turns the UDP checksum off for what the socket sends (`SO_NO_CHECK`): the kernel then
/// refuses UDP GSO trains with `EINVAL`, which the tests use to take the fallback path.
#[cfg(test)]
pub fn set_udp_no_check(fd: impl AsFd) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_NO_CHECK, 1)
}

/// Sets the socket's send and receive buffers to `bytes` each, beyond the sysctl maxima
/// (`SO_SNDBUFFORCE`/`SO_RCVBUFFORCE`, needs `CAP_NET_ADMIN`), falling back to the plain
/// options (capped by `net.core.[rw]mem_max`) without it.
pub fn set_socket_buffers(fd: impl AsFd, bytes: usize) {
    let fd = fd.as_fd();
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (force, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, value).is_err() {
            // Best effort: the defaults still work, only slower under bursts.
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, value);
        }
    }
}

/// Writes one packet (or datagram) gathered from `parts` to `fd` (`writev`).
pub fn writev(fd: impl AsFd, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
    let count = libc::c_int::try_from(parts.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: IoSlice is ABI-compatible with iovec (std guarantees it on Unix), `parts` is a
    // valid array of `count` of them, each pointing at bytes borrowed for the whole call,
    // which the kernel only reads.
    let n = unsafe { libc::writev(fd.as_fd().as_raw_fd(), parts.as_ptr().cast(), count) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Moves the calling thread (only) into the network namespace named by `path`, e.g.
/// `/run/netns/<name>` (as created by `ip netns add`) or `/proc/<pid>/ns/net`.
///
/// Other threads of the process stay where they are. Errors: opening the file (`ENOENT`, ...)
/// or `setns` (`EINVAL` if the file is not a network namespace, `EPERM` without
/// `CAP_SYS_ADMIN`).
#[cfg_attr(not(test), allow(dead_code))]
pub fn enter_netns(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: setns only reads the fd, which `file` keeps open for the duration of the call.
    cvt(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) })?;
    Ok(())
}

/// Moves the calling thread (only) into a new, private network namespace.
///
/// The new namespace has only a loopback device, which is down. It disappears when nothing
/// refers to it any more (the thread has exited and every socket/device fd opened in it is
/// closed). Used by tests, and by code that wants a scratch namespace. Needs
/// `CAP_SYS_ADMIN` (`EPERM` otherwise).
#[cfg_attr(not(test), allow(dead_code))]
pub fn unshare_netns() -> io::Result<()> {
    // SAFETY: unshare takes no pointers; CLONE_NEWNET only affects the calling thread.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests {
    use super::test_support::{in_private_netns, NamedNetns};
    use super::*;
    use crate::sys::test_support::skip_unless_root;
    use std::os::unix::net::UnixStream;

    #[test]
    fn peer_uid_of_socketpair_is_our_uid() {
        let (a, _b) = UnixStream::pair().unwrap();
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        assert_eq!(peer_uid(&a).unwrap(), uid);
    }

    #[test]
    fn peer_uid_on_non_socket_keeps_errno() {
        let file = File::open("/dev/null").unwrap();
        let err = peer_uid(&file).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTSOCK));
    }

    #[test]
    fn unshare_gives_only_a_down_loopback() {
        skip_unless_root!();
        std::thread::spawn(|| {
            unshare_netns().unwrap();
            let mut nl = Netlink::open().unwrap();
            let links = nl.links().unwrap();
            assert_eq!(links.len(), 1, "{links:?}");
            assert_eq!(links[0].name, "lo");
            assert!(!links[0].up);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn private_netns_helper_brings_lo_up() {
        skip_unless_root!();
        in_private_netns(|| {
            let mut nl = Netlink::open().unwrap();
            assert!(nl.link_by_name("lo").unwrap().unwrap().up);
        });
    }

    #[test]
    fn enter_netns_moves_only_this_thread() {
        skip_unless_root!();
        let ns = NamedNetns::create();
        let path = ns.path();
        // Mark the named namespace with a veth pair so we can tell it apart (this kernel has
        // no dummy driver).
        ns.ip(&[
            "link", "add", "wtmark0", "type", "veth", "peer", "name", "wtmark1",
        ]);
        std::thread::spawn(move || {
            enter_netns(&path).unwrap();
            let mut nl = Netlink::open().unwrap();
            let mut names: Vec<String> = nl.links().unwrap().into_iter().map(|l| l.name).collect();
            names.sort();
            assert_eq!(names, ["lo", "wtmark0", "wtmark1"]);
        })
        .join()
        .unwrap();
        // This thread did not move.
        let mut nl = Netlink::open().unwrap();
        assert!(nl.link_by_name("wtmark0").unwrap().is_none());
    }

    #[test]
    fn enter_netns_missing_path_is_not_found() {
        let err = enter_netns(Path::new("/run/netns/weft-does-not-exist")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn enter_netns_on_non_namespace_is_einval() {
        std::thread::spawn(|| {
            let err = enter_netns(Path::new("/dev/null")).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        })
        .join()
        .unwrap();
    }
}
