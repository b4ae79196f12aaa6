//! Device and socket setup the way flanneld does it.
//!
//! flanneld's UDP backend creates the TUN `flannel0`, sets its MTU to the underlay MTU minus
//! 28, assigns the host's overlay address *with the whole network's prefix length* (so the
//! kernel routes the entire overlay through the device), and brings it up. [`create_tun`]
//! does the same through rtnetlink. The device is non-persistent: it disappears, with its
//! addresses and routes, when weft closes it, so a clean exit and a crash both leave nothing
//! behind.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys::{Netlink, Tun, TunOptions};

/// A setup failure, with what was being set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// Opening or creating the TUN/TAP device failed.
    #[error("cannot create device {name} via /dev/net/tun: {source}{hint}")]
    OpenDevice {
        /// The device name.
        name: String,
        /// What to do about it, if we can tell.
        hint: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Configuring the device (MTU, address, link state) failed.
    #[error("cannot {what} on device {name}: {source}")]
    Configure {
        /// What was being done, e.g. "set MTU 1472".
        what: String,
        /// The device name.
        name: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Binding the UDP socket failed.
    #[error("cannot bind UDP {addr}: {source}{hint}")]
    Bind {
        /// The address and port.
        addr: SocketAddr,
        /// What to do about it, if we can tell.
        hint: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Talking to the kernel over rtnetlink failed.
    #[error("rtnetlink: {0}")]
    Netlink(#[source] io::Error),
}

/// What [`create_tun`] sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunSetup {
    /// Device name, e.g. `flannel0`.
    pub name: String,
    /// Device options (TUN or TAP, queues, vnet headers).
    pub options: TunOptions,
    /// Device MTU.
    pub mtu: u32,
    /// Addresses to assign, each with its prefix length (the kernel adds the prefix route).
    pub addresses: Vec<(IpAddr, u8)>,
    /// The MAC address to give a TAP device.
    pub mac: Option<[u8; 6]>,
    /// A bridge to enslave the device to (it must exist).
    pub bridge: Option<String>,
    /// Make the device persistent and leave it configured when weft stops (a restart
    /// adopts it again, so traffic only pauses): `[device] persist`.
    pub persist: bool,
}

impl TunSetup {
    fn has_ipv6(&self) -> bool {
        self.addresses.iter().any(|(a, _)| a.is_ipv6())
    }
}

/// Set (to anything) to make [`negotiate_offload`] behave as on a kernel that refuses every
/// offload: the end-to-end tests use it to exercise the fallback path.
pub const FAULT_REFUSE_TUN_OFFLOAD: &str = "WEFT_FAULT_REFUSE_TUN_OFFLOAD";

/// The offloads weft asks a TUN/TAP with vnet headers for, most first: checksums and TCP
/// segmentation (both families) plus UDP segmentation (Linux 6.2), then without UDP.
const OFFLOAD_WISHES: [u32; 2] = [
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_USO4 | libc::TUN_F_USO6,
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
];

/// Asks the kernel (`TUNSETOFFLOAD`) for the offloads weft handles, falling back to fewer
/// and finally to none (packets still carry a vnet header, never a super-packet). Returns
/// the mask that was accepted. Every queue of a device must get the same mask.
pub fn negotiate_offload(tun: &mut Tun) -> u32 {
    if !tun.vnet_hdr() {
        return 0;
    }
    if std::env::var_os(FAULT_REFUSE_TUN_OFFLOAD).is_some() {
        tracing::info!(
            "{FAULT_REFUSE_TUN_OFFLOAD} is set: no offloads on {}",
            tun.name()
        );
        let _ = tun.set_offload(0);
        return 0;
    }
    for wish in OFFLOAD_WISHES {
        match tun.set_offload(wish) {
            Ok(()) => return wish,
            Err(e) => tracing::debug!("TUNSETOFFLOAD {wish:#x} on {}: {e}", tun.name()),
        }
    }
    tracing::warn!(
        "the kernel refuses TUN offloads on {}: one packet per read and write",
        tun.name()
    );
    // A persistent device may keep an old mask; without offloads it must be 0.
    let _ = tun.set_offload(0);
    0
}

/// Opens one more queue of a multi-queue device that [`create_tun`] made, with the same
/// options and offloads (`IFF_VNET_HDR` and the offload mask are the device's, so every
/// queue must agree).
pub fn open_queue(setup: &TunSetup, offload: u32) -> Result<Tun, SetupError> {
    let mut tun =
        Tun::open(&setup.name, &setup.options).map_err(|source| SetupError::OpenDevice {
            name: setup.name.clone(),
            hint: " (opening another queue for a worker)",
            source,
        })?;
    if tun.vnet_hdr() {
        tun.set_offload(offload)
            .map_err(|source| SetupError::Configure {
                what: format!("set offloads {offload:#x} on another queue"),
                name: setup.name.clone(),
                source,
            })?;
    }
    Ok(tun)
}

/// A device that was there before weft (a persistent TUN/TAP made with `ip tuntap add`, or
/// kept by an earlier weft), configured by weft for its run: what weft changed, undone when
/// this is dropped, so that the device is left as it was found (its own addresses, MTU,
/// up/down state, bridge and IPv6 setting).
#[derive(Debug)]
pub struct Adopted {
    name: String,
    index: u32,
    mtu: u32,
    up: bool,
    added: Vec<(IpAddr, u8)>,
    enslaved: bool,
    ipv6_disabled: bool,
    single_queue: bool,
    /// Leave it as weft configured it (`[device] persist`): nothing is undone.
    keep: bool,
}

impl Adopted {
    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the device takes one queue only (made without `multi_queue`): weft then runs
    /// one worker on it.
    pub fn single_queue(&self) -> bool {
        self.single_queue
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        if self.keep {
            tracing::info!(device = %self.name, "the device stays configured for the next start (persist)");
            return;
        }
        let Ok(mut nl) = Netlink::open() else {
            tracing::warn!("cannot restore device {}: no netlink socket", self.name);
            return;
        };
        // The device may be gone (deleted under us); then there is nothing to restore.
        if !matches!(nl.link_by_index(self.index), Ok(Some(l)) if l.name == self.name) {
            return;
        }
        for &(addr, len) in &self.added {
            if let Err(e) = nl.del_address(self.index, addr, len) {
                tracing::warn!("{}: cannot remove {addr}/{len}: {e}", self.name);
            }
        }
        if self.enslaved {
            let _ = nl.set_master(self.index, 0);
        }
        if self.ipv6_disabled {
            let _ = std::fs::write(ipv6_knob(&self.name), "0");
        }
        let _ = nl.set_mtu(self.index, self.mtu);
        if !self.up {
            let _ = nl.set_down(self.index);
        }
        tracing::info!("device {} left as weft found it", self.name);
    }
}

fn ipv6_knob(name: &str) -> String {
    format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6")
}

/// Creates and configures the device: open, offloads (with vnet headers), MTU, addresses,
/// up. A device of that name that exists already (a persistent TUN/TAP of the same kind)
/// is adopted: configured the same way, its own addresses kept, and what weft changed is
/// undone when the returned [`Adopted`] is dropped. An existing device made without
/// `multi_queue` is opened with one queue ([`Adopted::single_queue`]).
pub fn create_tun(setup: &TunSetup) -> Result<(Tun, Option<Adopted>), SetupError> {
    let mut nl = Netlink::open().map_err(SetupError::Netlink)?;
    let before = nl.link_by_name(&setup.name).map_err(SetupError::Netlink)?;
    let open_err = |source: io::Error| {
        let hint = match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                " (weft needs root or CAP_NET_ADMIN to create devices)"
            }
            Some(libc::EBUSY) => " (the device is in use: is another weft or flanneld running?)",
            Some(libc::ENOENT) | Some(libc::ENODEV) => {
                " (no TUN/TAP support: load the tun module, or create /dev/net/tun)"
            }
            Some(libc::EINVAL) => {
                " (a device of that name exists and is not a TUN/TAP device of this kind)"
            }
            _ => "",
        };
        SetupError::OpenDevice {
            name: setup.name.clone(),
            hint,
            source,
        }
    };
    let mut single_queue = false;
    let mut tun = match Tun::open(&setup.name, &setup.options) {
        Ok(tun) => tun,
        // A persistent device made without multi_queue refuses a multi-queue attach.
        Err(e)
            if before.is_some()
                && setup.options.multi_queue
                && e.raw_os_error() == Some(libc::EINVAL) =>
        {
            let options = TunOptions {
                multi_queue: false,
                ..setup.options
            };
            single_queue = true;
            Tun::open(&setup.name, &options).map_err(|_| open_err(e))?
        }
        Err(e) => return Err(open_err(e)),
    };
    negotiate_offload(&mut tun);
    let name = tun.name().to_owned();
    let configure = |what: String| {
        let name = name.clone();
        move |source| SetupError::Configure { what, name, source }
    };
    let link = nl
        .link_by_name(&name)
        .map_err(SetupError::Netlink)?
        .ok_or_else(|| SetupError::Configure {
            what: "find the new device".into(),
            name: name.clone(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
    let present: Vec<(IpAddr, u8)> = match &before {
        Some(_) => nl
            .addresses()
            .map_err(SetupError::Netlink)?
            .into_iter()
            .filter(|a| a.index == link.index)
            .map(|a| (a.addr, a.prefix_len))
            .collect(),
        None => Vec::new(),
    };
    if before.is_some() {
        tracing::info!(
            "device {name} exists: adopting it (mtu {}, {}, {} address(es) of its own){}",
            link.mtu,
            if link.up { "up" } else { "down" },
            present.len(),
            if single_queue {
                "; it was made without multi_queue, so it takes one queue"
            } else {
                ""
            }
        );
    }
    // From here on, a failure leaves the device as it was found (the guard undoes).
    let mut adopted = before.map(|b| Adopted {
        name: name.clone(),
        index: link.index,
        mtu: b.mtu,
        up: b.up,
        added: Vec::new(),
        enslaved: false,
        ipv6_disabled: false,
        single_queue,
        keep: setup.persist,
    });
    if setup.persist {
        tun.set_persist(true)
            .map_err(configure("make the device persistent".into()))?;
    }
    nl.set_mtu(link.index, setup.mtu)
        .map_err(configure(format!("set MTU {}", setup.mtu)))?;
    if !setup.has_ipv6() {
        // Without an IPv6 overlay the kernel would still give the device a link-local
        // address and send router solicitations into it, only for weft to drop them.
        let knob = ipv6_knob(&name);
        let was = std::fs::read_to_string(&knob).unwrap_or_default();
        match std::fs::write(&knob, "1") {
            Ok(()) => {
                if let Some(a) = adopted.as_mut() {
                    a.ipv6_disabled = was.trim() == "0";
                }
            }
            Err(e) => tracing::debug!("cannot write {knob}: {e} (IPv6 stays enabled on {name})"),
        }
    }
    for &(addr, len) in &setup.addresses {
        if present.contains(&(addr, len)) {
            continue;
        }
        nl.add_address(link.index, addr, len)
            .map_err(configure(format!("assign address {addr}/{len}")))?;
        if let Some(a) = adopted.as_mut() {
            a.added.push((addr, len));
        }
    }
    if let Some(mac) = setup.mac {
        nl.set_mac(link.index, mac)
            .map_err(configure("set the MAC address".into()))?;
    }
    if let Some(bridge) = &setup.bridge {
        let master = nl
            .link_by_name(bridge)
            .map_err(SetupError::Netlink)?
            .ok_or_else(|| SetupError::Configure {
                what: format!("enslave it to bridge {bridge}"),
                name: name.clone(),
                source: io::Error::new(io::ErrorKind::NotFound, "no such bridge"),
            })?;
        nl.set_master(link.index, master.index)
            .map_err(configure(format!("enslave it to bridge {bridge}")))?;
        if let Some(a) = adopted.as_mut() {
            a.enslaved = true;
        }
    }
    nl.set_up(link.index)
        .map_err(configure("bring the device up".into()))?;
    Ok((tun, adopted))
}

/// Keeps only what the running daemon needs: `CAP_NET_ADMIN` (devices, addresses, a deleted
/// device made again, socket buffer sizes) and nothing else in the permitted, effective,
/// inheritable and ambient sets; the bounding set is cut down too where that is allowed
/// (it needs `CAP_SETPCAP`, which a non-root user given only `CAP_NET_ADMIN` lacks). Call
/// it once the sockets are bound and the devices made: it applies to the calling thread and
/// to every thread it starts afterwards. Best effort: what cannot be dropped is logged.
pub fn drop_capabilities() {
    use caps::{CapSet, Capability};
    let keep: caps::CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();
    let had = caps::read(None, CapSet::Permitted).unwrap_or_default();
    if let Ok(bounding) = caps::read(None, CapSet::Bounding) {
        for cap in bounding.difference(&keep) {
            if caps::drop(None, CapSet::Bounding, *cap).is_err() {
                break; // no CAP_SETPCAP: the bounding set stays, the other sets do not
            }
        }
    }
    let _ = caps::clear(None, CapSet::Ambient);
    let kept: caps::CapsHashSet = had.intersection(&keep).copied().collect();
    let none = caps::CapsHashSet::new();
    for (set, target) in [
        (CapSet::Inheritable, &none),
        (CapSet::Effective, &kept),
        (CapSet::Permitted, &kept),
    ] {
        if let Err(e) = caps::set(None, set, target) {
            tracing::warn!("cannot drop capabilities from the {set:?} set: {e}");
        }
    }
    let dropped = had.len().saturating_sub(kept.len());
    if kept.is_empty() {
        tracing::warn!("running without CAP_NET_ADMIN: a deleted device cannot be made again");
    } else {
        tracing::info!(dropped, "capabilities: only CAP_NET_ADMIN kept");
    }
}

/// Drops every capability of the calling thread (for a helper thread started before
/// [`drop_capabilities`] that needs none); best effort.
pub fn drop_thread_capabilities() {
    use caps::CapSet;
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        let _ = caps::clear(None, set);
    }
}

/// The MTU of the interface that holds `addr`, if some interface does.
pub fn interface_mtu(addr: IpAddr) -> Result<Option<u32>, SetupError> {
    if addr.is_unspecified() {
        return Ok(None);
    }
    let mut nl = Netlink::open().map_err(SetupError::Netlink)?;
    Ok(nl
        .link_with_address(addr)
        .map_err(SetupError::Netlink)?
        .map(|l| l.mtu))
}

/// Spreads flannel UDP datagrams over the `workers` sockets of a reuseport group by their
/// inner flow (a classic BPF program on the group; see the engine's docs): without it, every
/// datagram from one peer host (port 8285 to 8285) reaches the same worker. Best effort: on
/// failure the kernel's own hash of the outer addresses and ports still works.
pub fn steer_flannel_flows(socket: &UdpSocket, workers: usize) {
    let Ok(n) = u32::try_from(workers) else {
        return;
    };
    if let Err(e) = crate::sys::steer::steer_by_inner_flow(socket, n) {
        tracing::warn!("cannot steer flannel flows over the {workers} workers: {e}; each peer host's traffic stays on one worker");
    }
}

/// Makes `socket` send-only: the kernel drops whatever arrives for it (a socket filter), so
/// a socket nobody reads cannot have its buffer filled. A failure is logged: the socket
/// still works, and its buffer is bounded.
pub fn refuse_input(socket: &UdpSocket) {
    if let Err(e) = crate::sys::steer::refuse_input(socket) {
        tracing::warn!("cannot make a VXLAN source-port socket send-only: {e}");
    }
}

/// Binds the tunnel's UDP socket: large buffers, IPv6-only for IPv6 addresses, no port
/// sharing (a port in use is an error, not a silent split of the traffic).
pub fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, SetupError> {
    bind_udp_shared(addr, false)
}

/// Like [`bind_udp`]; with `reuse_port`, `SO_REUSEPORT` lets each worker bind its own
/// socket to the same address, and the kernel spreads datagrams over them by a hash of
/// the outer addresses and ports.
pub fn bind_udp_shared(addr: SocketAddr, reuse_port: bool) -> Result<UdpSocket, SetupError> {
    let fail = |source: io::Error| {
        let hint = match source.raw_os_error() {
            Some(libc::EADDRINUSE) => " (the port is in use: is another weft or flanneld running?)",
            Some(libc::EADDRNOTAVAIL) => " (the address is not assigned to any interface here)",
            Some(libc::EACCES) => " (permission denied)",
            _ => "",
        };
        SetupError::Bind { addr, hint, source }
    };
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP)).map_err(fail)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(fail)?;
    }
    if reuse_port {
        socket.set_reuse_port(true).map_err(fail)?;
    }
    // Large buffers absorb bursts of whole batches (the kernel caps them at
    // net.core.{r,w}mem_max). Failing to enlarge them is not fatal.
    const BUFFER: usize = 4 << 20;
    let _ = socket.set_recv_buffer_size(BUFFER);
    let _ = socket.set_send_buffer_size(BUFFER);
    socket.bind(&addr.into()).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    Ok(socket.into())
}

/// The index of the interface named `name`, or else of the one that holds `address`: where
/// a VXLAN multicast group is joined and sent to.
pub fn multicast_interface(name: Option<&str>, address: IpAddr) -> io::Result<u32> {
    let mut nl = Netlink::open()?;
    match name {
        Some(name) => nl
            .link_by_name(name)?
            .map(|l| l.index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such interface")),
        None => nl
            .addresses()?
            .into_iter()
            .find(|a| a.addr == address)
            .map(|a| a.index)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no interface holds {address}"),
                )
            }),
    }
}

/// A socket that hears VXLAN multicast group `group` (address and port) on interface
/// `ifindex`: bound to the group's address (so it gets the group's datagrams and nothing
/// else) and joined to it. It is only read.
pub fn bind_multicast_group(group: SocketAddr, ifindex: u32) -> Result<UdpSocket, SetupError> {
    let fail = |source: io::Error| SetupError::Bind {
        addr: group,
        hint: " (joining the multicast group)",
        source,
    };
    let domain = if group.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP)).map_err(fail)?;
    // Other listeners on the group (a kernel vxlan device of the same host, a second weft)
    // may bind it too.
    socket.set_reuse_address(true).map_err(fail)?;
    match group.ip() {
        IpAddr::V4(g) => {
            socket
                .join_multicast_v4_n(&g, &socket2::InterfaceIndexOrAddress::Index(ifindex))
                .map_err(fail)?;
            // Only this interface's members, not every group of that number on the host.
            let _ = socket.set_multicast_all_v4(false);
        }
        IpAddr::V6(g) => {
            socket.set_only_v6(true).map_err(fail)?;
            socket.join_multicast_v6(&g, ifindex).map_err(fail)?;
            let _ = socket.set_multicast_all_v6(false);
        }
    }
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&group.into()).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    Ok(socket.into())
}

/// Makes `socket` send multicast (floods to a VXLAN group) out of interface `ifindex` from
/// `local`, with TTL / hop limit 1 (the kernel vxlan's default for a group) and without
/// hearing its own datagrams.
pub fn set_multicast_sender(socket: &UdpSocket, local: IpAddr, ifindex: u32) -> io::Result<()> {
    let socket = socket2::SockRef::from(socket);
    match local {
        IpAddr::V4(a) => {
            socket.set_multicast_if_v4(&a)?;
            socket.set_multicast_loop_v4(false)?;
            socket.set_multicast_ttl_v4(1)?;
        }
        IpAddr::V6(_) => {
            socket.set_multicast_if_v6(ifindex)?;
            socket.set_multicast_loop_v6(false)?;
            socket.set_multicast_hops_v6(1)?;
        }
    }
    Ok(())
}
