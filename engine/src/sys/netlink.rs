//! A small synchronous rtnetlink client for the control plane: links, addresses, routes and
//! neighbours.
//!
//! # Model
//!
//! A [`Netlink`] owns one `NETLINK_ROUTE` socket in the network namespace of the thread that
//! opened it. Every operation is one request followed by reading replies until the request is
//! answered:
//!
//! - changes (`RTM_NEW*`/`RTM_DEL*`) and single lookups are sent with `NLM_F_ACK`; the answer
//!   ends with an `NLMSG_ERROR` whose code is 0 (success) or a negative errno, which becomes an
//!   [`io::Error`] with that errno ([`io::Error::raw_os_error`]), e.g. `ENODEV`, `EEXIST`,
//!   `ESRCH`, `EPERM`;
//! - dumps (`NLM_F_DUMP`) are answered by any number of `NLM_F_MULTI` messages ending with
//!   `NLMSG_DONE`; a dump the kernel flags as inconsistent (`NLM_F_DUMP_INTR`, the table
//!   changed meanwhile) is repeated a few times.
//!
//! Each request carries a fresh sequence number and replies with another number (left over
//! from an earlier request that failed half-way) are skipped. A request that gets no answer
//! within [`REPLY_TIMEOUT`] fails with [`io::ErrorKind::TimedOut`].
//!
//! Messages are built and parsed by hand as byte vectors in native byte order (netlink is
//! host-endian; addresses inside attributes are in network order), with every header and
//! attribute padded to 4 bytes (`NLMSG_ALIGN`/`NLA_ALIGN`). Parsing never trusts a length field:
//! a truncated or malformed message is an [`io::ErrorKind::InvalidData`] error, never a panic.
//! This is control-plane code: it allocates freely.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::cvt;

/// How long to wait for the kernel's answer before giving up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a dump the kernel marked as interrupted (`NLM_F_DUMP_INTR`) is retried.
const DUMP_ATTEMPTS: usize = 5;

// <linux/netlink.h>
const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_HDRLEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

// <linux/rtnetlink.h>
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RT_SCOPE_NOWHERE: u8 = 255;
const RTN_UNICAST: u8 = 1;
const RTNH_F_ONLINK: u32 = 4;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_MULTIPATH: u16 = 9;

// <linux/if_link.h>, <linux/if.h>
const IFINFOMSG_LEN: usize = 16;
/// `IFLA_MASTER`: the index of the interface's master (bridge).
const IFLA_MASTER: u16 = 10;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFF_UP: u32 = 1;

// <linux/if_addr.h>
const IFADDRMSG_LEN: usize = 8;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_NODAD: u8 = 0x02;

// <linux/rtnetlink.h> rtmsg, <linux/neighbour.h>
const RTMSG_LEN: usize = 12;
const NDMSG_LEN: usize = 12;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NUD_PERMANENT: u16 = 0x80;

const AF_UNSPEC: u8 = libc::AF_UNSPEC as u8;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// An rtnetlink (`NETLINK_ROUTE`) socket with its request sequence number.
///
/// It acts on the network namespace of the thread that called [`Netlink::open`], whichever
/// thread uses it later.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// A network interface, as `RTM_GETLINK` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// The interface index (`ifindex`), what addresses, routes and neighbours refer to.
    pub index: u32,
    /// The interface name (`IFLA_IFNAME`).
    pub name: String,
    /// The MTU in bytes (`IFLA_MTU`).
    pub mtu: u32,
    /// Whether the interface is administratively up (`IFF_UP`).
    pub up: bool,
}

/// An address assigned to an interface, as `RTM_GETADDR` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressInfo {
    /// The interface the address is on.
    pub index: u32,
    /// The local address (`IFA_LOCAL`, or `IFA_ADDRESS` when there is no `IFA_LOCAL`).
    pub addr: IpAddr,
    /// The prefix length of the attached subnet.
    pub prefix_len: u8,
}

/// A unicast route in the main table.
///
/// `dst`/`prefix_len` is the destination prefix (host bits must be zero for IPv4, or the kernel
/// answers `EINVAL`); `gateway`, if any, must be of the same family as `dst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network address.
    pub dst: IpAddr,
    /// Destination prefix length (0..=32 for IPv4, 0..=128 for IPv6).
    pub prefix_len: u8,
    /// Output interface index (`RTA_OIF`).
    pub oif: u32,
    /// Next hop (`RTA_GATEWAY`); `None` for a directly connected (scope link) route.
    pub gateway: Option<IpAddr>,
    /// `RTNH_F_ONLINK`: treat the gateway as directly reachable on `oif` even though no
    /// address of `oif` covers it (how flannel's vxlan backend routes to `<subnet>.0`).
    pub onlink: bool,
}

/// The kernel's answer to "how would you send to this address?" (`ip route get`), from
/// [`Netlink::route_get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLookup {
    /// The output interface (`RTA_OIF`), if the answer names one.
    pub oif: Option<u32>,
    /// The next hop (`RTA_GATEWAY`); `None` when the address is on a connected subnet.
    pub gateway: Option<IpAddr>,
    /// Whether the route is an ordinary unicast route (`RTN_UNICAST`): not local, broadcast,
    /// unreachable, blackhole or prohibit.
    pub unicast: bool,
    /// Whether the route has several next hops (`RTA_MULTIPATH`).
    pub multipath: bool,
}

/// A netlink request being built: header, fixed family header, then attributes.
struct Request {
    buf: Vec<u8>,
}

impl Request {
    fn new(kind: u16, flags: u16) -> Request {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set in `finish`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq, set in `finish`
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: 0, the kernel fills it in
        Request { buf }
    }

    fn flags(&self) -> u16 {
        u16::from_ne_bytes([self.buf[6], self.buf[7]])
    }

    /// Appends `bytes` and pads to a 4-byte boundary.
    fn push_aligned(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// `struct ifinfomsg`.
    fn ifinfomsg(mut self, family: u8, index: u32, flags: u32, change: u32) -> Request {
        let mut h = [0u8; IFINFOMSG_LEN];
        h[0] = family;
        // h[1] pad, h[2..4] ifi_type: 0
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        h[8..12].copy_from_slice(&flags.to_ne_bytes());
        h[12..16].copy_from_slice(&change.to_ne_bytes());
        self.push_aligned(&h);
        self
    }

    /// `struct ifaddrmsg`.
    fn ifaddrmsg(mut self, family: u8, prefix_len: u8, flags: u8, scope: u8, index: u32) -> Self {
        let mut h = [0u8; IFADDRMSG_LEN];
        h[0] = family;
        h[1] = prefix_len;
        h[2] = flags;
        h[3] = scope;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        self.push_aligned(&h);
        self
    }

    /// `struct rtmsg` (no source prefix, TOS 0, main table).
    fn rtmsg(
        mut self,
        family: u8,
        dst_len: u8,
        protocol: u8,
        scope: u8,
        kind: u8,
        flags: u32,
    ) -> Self {
        let mut h = [0u8; RTMSG_LEN];
        h[0] = family;
        h[1] = dst_len;
        // h[2] src_len, h[3] tos: 0
        h[4] = RT_TABLE_MAIN;
        h[5] = protocol;
        h[6] = scope;
        h[7] = kind;
        h[8..12].copy_from_slice(&flags.to_ne_bytes());
        self.push_aligned(&h);
        self
    }

    /// `struct ndmsg`.
    fn ndmsg(mut self, family: u8, index: u32, state: u16) -> Self {
        let mut h = [0u8; NDMSG_LEN];
        h[0] = family;
        // h[1] pad1, h[2..4] pad2
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        h[8..10].copy_from_slice(&state.to_ne_bytes());
        // h[10] ndm_flags, h[11] ndm_type: 0
        self.push_aligned(&h);
        self
    }

    /// One attribute: `struct nlattr` header, payload, padding.
    fn attr(mut self, kind: u16, payload: &[u8]) -> Request {
        let len = u16::try_from(NLA_HDRLEN + payload.len()).expect("netlink attribute < 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.push_aligned(payload);
        self
    }

    fn attr_u32(self, kind: u16, value: u32) -> Request {
        self.attr(kind, &value.to_ne_bytes())
    }

    fn attr_ip(self, kind: u16, addr: IpAddr) -> Request {
        match addr {
            IpAddr::V4(a) => self.attr(kind, &a.octets()),
            IpAddr::V6(a) => self.attr(kind, &a.octets()),
        }
    }

    /// Fills in length and sequence number and returns the wire bytes.
    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).expect("netlink request < 4 GiB");
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// One reply message: its type and the payload after the `nlmsghdr`.
#[derive(Debug)]
struct Reply {
    kind: u16,
    payload: Vec<u8>,
}

/// A netlink message header and payload as found in a receive buffer.
struct RawMessage<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed netlink reply: {what}"),
    )
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Splits a datagram into netlink messages; stops with an error at the first malformed one.
fn messages(mut data: &[u8]) -> impl Iterator<Item = io::Result<RawMessage<'_>>> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let parsed = (|| {
            let len = u32_at(data, 0).ok_or_else(|| malformed("short header"))? as usize;
            if len < NLMSG_HDRLEN || len > data.len() {
                return Err(malformed("bad nlmsg_len"));
            }
            let msg = RawMessage {
                kind: u16_at(data, 4).unwrap_or(0),
                flags: u16_at(data, 6).unwrap_or(0),
                seq: u32_at(data, 8).unwrap_or(0),
                payload: &data[NLMSG_HDRLEN..len],
            };
            Ok((msg, align4(len).min(data.len())))
        })();
        match parsed {
            Ok((msg, consumed)) => {
                data = &data[consumed..];
                Some(Ok(msg))
            }
            Err(e) => {
                data = &[];
                Some(Err(e))
            }
        }
    })
}

/// Iterates over the attributes in `data` as `(type, payload)`, flags bits masked off.
/// Stops silently at a truncated attribute.
fn attributes(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(data, 0)?);
        let kind = u16_at(data, 2)? & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > data.len() {
            return None;
        }
        let payload = &data[NLA_HDRLEN..len];
        data = &data[align4(len).min(data.len())..];
        Some((kind, payload))
    })
}

/// An address attribute payload: 4 bytes IPv4, 16 bytes IPv6.
fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Some(IpAddr::V4(Ipv4Addr::from(v4)))
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        Some(IpAddr::V6(Ipv6Addr::from(v6)))
    } else {
        None
    }
}

/// Parses an `RTM_NEWLINK` payload.
fn parse_link(payload: &[u8]) -> io::Result<LinkInfo> {
    let header = payload
        .get(..IFINFOMSG_LEN)
        .ok_or_else(|| malformed("short ifinfomsg"))?;
    let index = u32_at(header, 4).unwrap_or(0);
    let flags = u32_at(header, 8).unwrap_or(0);
    let mut link = LinkInfo {
        index,
        name: String::new(),
        mtu: 0,
        up: flags & IFF_UP != 0,
    };
    for (kind, value) in attributes(&payload[IFINFOMSG_LEN..]) {
        match kind {
            IFLA_IFNAME => {
                let name = value.split(|&b| b == 0).next().unwrap_or(&[]);
                link.name = String::from_utf8_lossy(name).into_owned();
            }
            IFLA_MTU => link.mtu = u32_at(value, 0).unwrap_or(0),
            _ => {}
        }
    }
    Ok(link)
}

/// Parses the `RTM_NEWROUTE` answer of an `RTM_GETROUTE` lookup.
fn parse_route_lookup(payload: &[u8]) -> io::Result<RouteLookup> {
    let header = payload
        .get(..RTMSG_LEN)
        .ok_or_else(|| malformed("short rtmsg"))?;
    let mut lookup = RouteLookup {
        oif: None,
        gateway: None,
        unicast: header[7] == RTN_UNICAST,
        multipath: false,
    };
    for (kind, value) in attributes(&payload[RTMSG_LEN..]) {
        match kind {
            RTA_OIF => lookup.oif = u32_at(value, 0),
            RTA_GATEWAY => lookup.gateway = ip_from_bytes(value),
            RTA_MULTIPATH => lookup.multipath = true,
            _ => {}
        }
    }
    Ok(lookup)
}

/// Parses an `RTM_NEWADDR` payload; `None` for families other than IPv4/IPv6.
fn parse_address(payload: &[u8]) -> io::Result<Option<AddressInfo>> {
    let header = payload
        .get(..IFADDRMSG_LEN)
        .ok_or_else(|| malformed("short ifaddrmsg"))?;
    let prefix_len = header[1];
    let index = u32_at(header, 4).unwrap_or(0);
    let (mut local, mut address) = (None, None);
    for (kind, value) in attributes(&payload[IFADDRMSG_LEN..]) {
        match kind {
            IFA_LOCAL => local = ip_from_bytes(value),
            IFA_ADDRESS => address = ip_from_bytes(value),
            _ => {}
        }
    }
    // On point-to-point links IFA_ADDRESS is the peer and IFA_LOCAL ours.
    Ok(local.or(address).map(|addr| AddressInfo {
        index,
        addr,
        prefix_len,
    }))
}

fn family_of(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

fn check_prefix_len(addr: IpAddr, prefix_len: u8) -> io::Result<()> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("prefix length /{prefix_len} is too long for {addr}"),
        ));
    }
    Ok(())
}

fn check_route(route: &Route) -> io::Result<()> {
    check_prefix_len(route.dst, route.prefix_len)?;
    if let Some(gw) = route.gateway {
        if gw.is_ipv4() != route.dst.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "route to {}/{} via {gw}: gateway and destination differ in address family",
                    route.dst, route.prefix_len
                ),
            ));
        }
    }
    Ok(())
}

/// A change to an interface, from [`LinkMonitor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The interface appeared or changed (`RTM_NEWLINK`).
    Changed(LinkInfo),
    /// The interface is gone (`RTM_DELLINK`).
    Deleted(LinkInfo),
    /// The kernel dropped events (the socket's buffer overflowed, `ENOBUFS`): whatever
    /// state the listener keeps must be read again.
    Lost,
}

/// `RTMGRP_LINK`: the multicast group of link changes.
const RTMGRP_LINK: u32 = 1;

/// Link events of the calling thread's network namespace, as `ip monitor link` shows them.
#[derive(Debug)]
pub struct LinkMonitor {
    nl: Netlink,
}

impl LinkMonitor {
    /// Subscribes to link events; [`LinkMonitor::next`] waits at most `wait` for some.
    pub fn open(wait: Duration) -> io::Result<LinkMonitor> {
        let nl = Netlink::open()?;
        nl.socket.set_read_timeout(Some(wait))?;
        // SAFETY: sockaddr_nl is plain data (integers and padding): all zeroes is a valid
        // value of it.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = RTMGRP_LINK;
        // SAFETY: `addr` is a valid, initialised sockaddr_nl whose size is passed; the fd is
        // the netlink socket owned by `nl`, alive across the call.
        cvt(unsafe {
            libc::bind(
                nl.socket.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })?;
        Ok(LinkMonitor { nl })
    }

    /// The events that arrived, waiting at most the monitor's `wait` for the first; empty
    /// when none came.
    pub fn next(&mut self) -> io::Result<Vec<LinkEvent>> {
        let len = match self.nl.receive() {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(Vec::new()),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(vec![LinkEvent::Lost]),
            Err(e) => return Err(e),
        };
        let mut events = Vec::new();
        for msg in messages(&self.nl.buf[..len]) {
            let msg = msg?;
            match msg.kind {
                RTM_NEWLINK => events.push(LinkEvent::Changed(parse_link(msg.payload)?)),
                RTM_DELLINK => events.push(LinkEvent::Deleted(parse_link(msg.payload)?)),
                _ => {}
            }
        }
        Ok(events)
    }
}

impl Netlink {
    /// Opens a `NETLINK_ROUTE` socket (close-on-exec) in the calling thread's network
    /// namespace.
    pub fn open() -> io::Result<Netlink> {
        let socket = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW,
            Some(Protocol::from(libc::NETLINK_ROUTE)),
        )?;
        socket.set_read_timeout(Some(REPLY_TIMEOUT))?;
        // The kernel binds the socket to a port id on the first send.
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; 32 * 1024],
        })
    }

    /// The interface called `name`, or `None` if there is none.
    ///
    /// A name longer than 15 bytes is [`io::ErrorKind::InvalidInput`].
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<LinkInfo>> {
        if name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {name:?} is not a valid name (at most 15 bytes, no NUL)"),
            ));
        }
        let mut nul_terminated = name.as_bytes().to_vec();
        nul_terminated.push(0);
        let req = Request::new(RTM_GETLINK, NLM_F_ACK)
            .ifinfomsg(AF_UNSPEC, 0, 0, 0)
            .attr(IFLA_IFNAME, &nul_terminated);
        self.lookup_link(req)
    }

    /// The interface with index `index`, or `None` if there is none.
    pub fn link_by_index(&mut self, index: u32) -> io::Result<Option<LinkInfo>> {
        let req = Request::new(RTM_GETLINK, NLM_F_ACK).ifinfomsg(AF_UNSPEC, index, 0, 0);
        self.lookup_link(req)
    }

    fn lookup_link(&mut self, req: Request) -> io::Result<Option<LinkInfo>> {
        match self.execute(req) {
            Ok(replies) => replies
                .iter()
                .find(|r| r.kind == RTM_NEWLINK)
                .map(|r| parse_link(&r.payload))
                .transpose(),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// All interfaces of the namespace (`RTM_GETLINK` dump).
    pub fn links(&mut self) -> io::Result<Vec<LinkInfo>> {
        let replies =
            self.dump(|| Request::new(RTM_GETLINK, NLM_F_DUMP).ifinfomsg(AF_UNSPEC, 0, 0, 0))?;
        replies
            .iter()
            .filter(|r| r.kind == RTM_NEWLINK)
            .map(|r| parse_link(&r.payload))
            .collect()
    }

    /// All IPv4 and IPv6 addresses of the namespace (`RTM_GETADDR` dump).
    pub fn addresses(&mut self) -> io::Result<Vec<AddressInfo>> {
        let replies =
            self.dump(|| Request::new(RTM_GETADDR, NLM_F_DUMP).ifaddrmsg(AF_UNSPEC, 0, 0, 0, 0))?;
        let mut out = Vec::new();
        for reply in replies.iter().filter(|r| r.kind == RTM_NEWADDR) {
            out.extend(parse_address(&reply.payload)?);
        }
        Ok(out)
    }

    /// Sets the MTU of interface `index` (`EINVAL` if the device does not support it).
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let req = Request::new(RTM_NEWLINK, NLM_F_ACK)
            .ifinfomsg(AF_UNSPEC, index, 0, 0)
            .attr_u32(IFLA_MTU, mtu);
        self.execute(req).map(drop)
    }

    /// Brings interface `index` administratively up (`ip link set up`).
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let req = Request::new(RTM_NEWLINK, NLM_F_ACK).ifinfomsg(AF_UNSPEC, index, IFF_UP, IFF_UP);
        self.execute(req).map(drop)
    }

    /// Takes interface `index` administratively down (`ip link set down`).
    pub fn set_down(&mut self, index: u32) -> io::Result<()> {
        let req = Request::new(RTM_NEWLINK, NLM_F_ACK).ifinfomsg(AF_UNSPEC, index, 0, IFF_UP);
        self.execute(req).map(drop)
    }

    /// Sets the hardware (MAC) address of interface `index` (for TAP and vxlan-style devices;
    /// a TUN has none and answers `EOPNOTSUPP`/`EINVAL`).
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> io::Result<()> {
        let req = Request::new(RTM_NEWLINK, NLM_F_ACK)
            .ifinfomsg(AF_UNSPEC, index, 0, 0)
            .attr(IFLA_ADDRESS, &mac);
        self.execute(req).map(drop)
    }

    /// Enslaves interface `index` to the bridge (or other master) `master`
    /// (`ip link set DEV master BR`).
    ///
    /// A missing interface is `ENODEV`; a master that is not a bridge/bond is `EOPNOTSUPP`
    /// or `EINVAL`.
    pub fn set_master(&mut self, index: u32, master: u32) -> io::Result<()> {
        let req = Request::new(RTM_NEWLINK, NLM_F_ACK)
            .ifinfomsg(AF_UNSPEC, index, 0, 0)
            .attr(IFLA_MASTER, &master.to_ne_bytes());
        self.execute(req).map(drop)
    }

    /// Adds `addr/prefix_len` to interface `index` (`ip addr add`). The kernel then adds the
    /// prefix route for it (once the link is up). IPv6 addresses skip duplicate address
    /// detection (`IFA_F_NODAD`) so they are usable at once.
    ///
    /// An address that is already there is `EEXIST`; a prefix length beyond 32/128 is
    /// [`io::ErrorKind::InvalidInput`].
    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
        check_prefix_len(addr, prefix_len)?;
        let flags = if addr.is_ipv6() { IFA_F_NODAD } else { 0 };
        let req = Request::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            .ifaddrmsg(family_of(addr), prefix_len, flags, RT_SCOPE_UNIVERSE, index)
            .attr_ip(IFA_LOCAL, addr)
            .attr_ip(IFA_ADDRESS, addr);
        self.execute(req).map(drop)
    }

    /// Removes `addr/prefix_len` from interface `index` (`ip addr del`); an address that is
    /// not there is `EADDRNOTAVAIL`.
    pub fn del_address(&mut self, index: u32, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
        check_prefix_len(addr, prefix_len)?;
        let req = Request::new(RTM_DELADDR, NLM_F_ACK)
            .ifaddrmsg(family_of(addr), prefix_len, 0, RT_SCOPE_UNIVERSE, index)
            .attr_ip(IFA_LOCAL, addr)
            .attr_ip(IFA_ADDRESS, addr);
        self.execute(req).map(drop)
    }

    /// Adds `route` to the main table, replacing a route to the same prefix
    /// (`ip route replace`; protocol `boot`, like `ip route`). Scope is `link` without a
    /// gateway, `universe` with one.
    ///
    /// A missing interface is `ENODEV`; an unreachable gateway without `onlink` is
    /// `ENETUNREACH`.
    pub fn add_route(&mut self, route: &Route) -> io::Result<()> {
        check_route(route)?;
        let scope = if route.gateway.is_some() {
            RT_SCOPE_UNIVERSE
        } else {
            RT_SCOPE_LINK
        };
        let req = Request::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
        let req = req.rtmsg(
            family_of(route.dst),
            route.prefix_len,
            RTPROT_BOOT,
            scope,
            RTN_UNICAST,
            if route.onlink { RTNH_F_ONLINK } else { 0 },
        );
        self.execute(Self::route_attrs(req, route)).map(drop)
    }

    /// Deletes `route` from the main table (matched by prefix, interface and gateway). A
    /// route that does not exist is `ESRCH`.
    pub fn del_route(&mut self, route: &Route) -> io::Result<()> {
        check_route(route)?;
        let req = Request::new(RTM_DELROUTE, NLM_F_ACK).rtmsg(
            family_of(route.dst),
            route.prefix_len,
            0,
            RT_SCOPE_NOWHERE,
            0,
            if route.onlink { RTNH_F_ONLINK } else { 0 },
        );
        self.execute(Self::route_attrs(req, route)).map(drop)
    }

    fn route_attrs(req: Request, route: &Route) -> Request {
        let req = req.attr_ip(RTA_DST, route.dst).attr_u32(RTA_OIF, route.oif);
        match route.gateway {
            Some(gw) => req.attr_ip(RTA_GATEWAY, gw),
            None => req,
        }
    }

    /// How the kernel would send a packet to `dst` from this host (`ip route get <dst>`):
    /// the output interface, the next hop if any, and the kind of route. An address the
    /// kernel has no route to is `ENETUNREACH` (or `EHOSTUNREACH`).
    pub fn route_get(&mut self, dst: IpAddr) -> io::Result<RouteLookup> {
        let len = if dst.is_ipv4() { 32 } else { 128 };
        let req = Request::new(RTM_GETROUTE, NLM_F_ACK)
            .rtmsg(family_of(dst), len, 0, RT_SCOPE_UNIVERSE, 0, 0)
            .attr_ip(RTA_DST, dst);
        let replies = self.execute(req)?;
        let reply = replies
            .iter()
            .find(|r| r.kind == RTM_NEWROUTE)
            .ok_or_else(|| malformed("no route in the answer to RTM_GETROUTE"))?;
        parse_route_lookup(&reply.payload)
    }

    /// Deletes interface `index` (`ip link del`; `ENODEV` if there is none, `EOPNOTSUPP` for
    /// devices that cannot be deleted this way, like `lo`).
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let req = Request::new(RTM_DELLINK, NLM_F_ACK).ifinfomsg(AF_UNSPEC, index, 0, 0);
        self.execute(req).map(drop)
    }

    /// The interface that carries `addr` as one of its own addresses, e.g. the underlay
    /// interface of the listen address; `None` if no interface has it.
    pub fn link_with_address(&mut self, addr: IpAddr) -> io::Result<Option<LinkInfo>> {
        // An IPv4-mapped IPv6 address names the IPv4 address.
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        let found = self.addresses()?.into_iter().find(|a| a.addr == addr);
        match found {
            Some(a) => self.link_by_index(a.index),
            None => Ok(None),
        }
    }

    /// Adds (or replaces) a permanent neighbour entry `ip -> mac` on interface `index`
    /// (`ip neigh replace ... nud permanent`), as flannel's vxlan backend does per remote host.
    pub fn add_neighbour(&mut self, index: u32, ip: IpAddr, mac: [u8; 6]) -> io::Result<()> {
        let req = Request::new(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
            .ndmsg(family_of(ip), index, NUD_PERMANENT)
            .attr_ip(NDA_DST, ip)
            .attr(NDA_LLADDR, &mac);
        self.execute(req).map(drop)
    }

    /// Sends a request with `NLM_F_ACK` and returns the replies that came before the ACK.
    fn execute(&mut self, req: Request) -> io::Result<Vec<Reply>> {
        debug_assert!(req.flags() & NLM_F_ACK != 0);
        self.transact(req).map(|(replies, _)| replies)
    }

    /// Runs a dump request (rebuilt by `build` for each attempt) until the kernel reports a
    /// consistent result.
    fn dump(&mut self, build: impl Fn() -> Request) -> io::Result<Vec<Reply>> {
        let mut last = Vec::new();
        for _ in 0..DUMP_ATTEMPTS {
            let (replies, interrupted) = self.transact(build())?;
            if !interrupted {
                return Ok(replies);
            }
            last = replies;
        }
        // Still changing under us: a slightly stale view is better than none.
        Ok(last)
    }

    /// Sends `req` and collects replies until the ACK/error (non-dump) or `NLMSG_DONE` (dump).
    /// Returns the replies and whether the dump was flagged `NLM_F_DUMP_INTR`.
    fn transact(&mut self, req: Request) -> io::Result<(Vec<Reply>, bool)> {
        let is_dump = req.flags() & NLM_F_DUMP == NLM_F_DUMP;
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = req.finish(seq);
        loop {
            match self.socket.send(&bytes) {
                Ok(n) if n == bytes.len() => break,
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "short netlink send",
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }

        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            let len = self.receive()?;
            for msg in messages(&self.buf[..len]) {
                let msg = msg?;
                if msg.seq != seq {
                    continue; // a late answer to an earlier request
                }
                interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
                match msg.kind {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR => {
                        let code = u32_at(msg.payload, 0)
                            .ok_or_else(|| malformed("short nlmsgerr"))?
                            as i32;
                        if code == 0 {
                            return Ok((replies, interrupted));
                        }
                        return Err(io::Error::from_raw_os_error(code.saturating_neg()));
                    }
                    NLMSG_DONE => {
                        // A dump may put its error code into NLMSG_DONE.
                        let code = u32_at(msg.payload, 0).map_or(0, |c| c as i32);
                        if code < 0 {
                            return Err(io::Error::from_raw_os_error(code.saturating_neg()));
                        }
                        if is_dump {
                            return Ok((replies, interrupted));
                        }
                    }
                    NLMSG_OVERRUN => return Err(malformed("overrun")),
                    kind => replies.push(Reply {
                        kind,
                        payload: msg.payload.to_vec(),
                    }),
                }
            }
        }
    }

    /// Receives one datagram into `self.buf` (grown to fit it first) and returns its length.
    fn receive(&mut self) -> io::Result<usize> {
        let fd = self.socket.as_raw_fd();
        loop {
            // Peek with MSG_TRUNC to learn the datagram's full length, so nothing is cut off.
            // SAFETY: with a length of 0 nothing is written through the (valid) pointer.
            let size = unsafe {
                libc::recv(
                    fd,
                    self.buf.as_mut_ptr().cast(),
                    0,
                    libc::MSG_PEEK | libc::MSG_TRUNC,
                )
            };
            if size < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "no answer from the kernel's rtnetlink within {REPLY_TIMEOUT:?}"
                            ),
                        ))
                    }
                    _ => return Err(err),
                }
            }
            let size = size as usize;
            if size > self.buf.len() {
                self.buf.resize(size, 0);
            }
            // SAFETY: `self.buf` is valid for writes of `self.buf.len()` bytes.
            let n = unsafe { libc::recv(fd, self.buf.as_mut_ptr().cast(), self.buf.len(), 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            return Ok(n as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::test_support::skip_unless_root;
    use crate::sys::test_support::{in_private_netns, ip};
    use crate::sys::tun::{Tun, TunOptions};

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn v6(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A veth pair `a`/`b` (this kernel has no dummy driver), returned as their link info.
    fn veth_pair(nl: &mut Netlink, a: &str, b: &str) -> (LinkInfo, LinkInfo) {
        ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
        (
            nl.link_by_name(a).unwrap().unwrap(),
            nl.link_by_name(b).unwrap().unwrap(),
        )
    }

    #[test]
    fn request_layout_is_aligned() {
        let bytes = Request::new(RTM_NEWLINK, NLM_F_ACK)
            .ifinfomsg(AF_UNSPEC, 7, IFF_UP, IFF_UP)
            .attr(IFLA_IFNAME, b"wt0\0\0") // 5 bytes: padded to 8
            .attr_u32(IFLA_MTU, 1400)
            .finish(42);
        assert_eq!(bytes.len(), 16 + 16 + (4 + 8) + (4 + 4));
        assert_eq!(u32_at(&bytes, 0), Some(bytes.len() as u32));
        assert_eq!(u16_at(&bytes, 4), Some(RTM_NEWLINK));
        assert_eq!(u16_at(&bytes, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(u32_at(&bytes, 8), Some(42));
        assert_eq!(u32_at(&bytes, 20), Some(7), "ifi_index");
        assert_eq!(u16_at(&bytes, 32), Some(9), "nla_len excludes padding");
        assert_eq!(&bytes[36..44], b"wt0\0\0\0\0\0");
        assert_eq!(u16_at(&bytes, 46), Some(IFLA_MTU));
        assert_eq!(u32_at(&bytes, 48), Some(1400));
        let attrs: Vec<_> = attributes(&bytes[32..]).collect();
        assert_eq!(
            attrs,
            [
                (IFLA_IFNAME, &b"wt0\0\0"[..]),
                (IFLA_MTU, &1400u32.to_ne_bytes()[..])
            ]
        );
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        // nlmsg_len larger than the datagram, smaller than a header, and a short header.
        let mut too_long = [0u8; 20];
        too_long[0..4].copy_from_slice(&100u32.to_ne_bytes());
        let mut too_short = [0u8; 20];
        too_short[0..4].copy_from_slice(&8u32.to_ne_bytes());
        for data in [&too_long[..], &too_short[..], &[1, 2, 3][..]] {
            let parsed: Vec<_> = messages(data).collect();
            assert_eq!(parsed.len(), 1);
            assert_eq!(
                parsed[0].as_ref().err().map(io::Error::kind),
                Some(io::ErrorKind::InvalidData)
            );
        }
        // Attributes: zero length, length past the end, odd trailing bytes.
        assert_eq!(attributes(&[0, 0, 1, 0]).count(), 0);
        assert_eq!(attributes(&[200, 0, 1, 0, 9, 9]).count(), 0);
        assert_eq!(attributes(&[5, 0, 1, 0, 9, 7]).count(), 1);
        assert!(parse_link(&[0; 8]).is_err());
        assert!(parse_address(&[0; 4]).is_err());
        // A link whose attributes are garbage still parses its fixed header.
        let mut payload = vec![0u8; 16];
        payload[4..8].copy_from_slice(&3u32.to_ne_bytes());
        payload.extend_from_slice(&[0xff; 7]);
        assert_eq!(parse_link(&payload).unwrap().index, 3);
    }

    #[test]
    fn stale_replies_are_skipped() {
        skip_unless_root!();
        in_private_netns(|| {
            let mut nl = Netlink::open().unwrap();
            // A request whose answer nobody reads, as if an earlier call had failed half-way.
            nl.seq += 1;
            let stale = Request::new(RTM_GETLINK, NLM_F_ACK)
                .ifinfomsg(AF_UNSPEC, 999_999, 0, 0)
                .finish(nl.seq);
            nl.socket.send(&stale).unwrap();
            // Its ENODEV must not be taken as the answer to this lookup.
            let lo = nl.link_by_name("lo").unwrap();
            assert_eq!(lo.map(|l| l.name).as_deref(), Some("lo"));
            assert!(nl.link_by_name("lo").unwrap().is_some());
        });
    }

    #[test]
    fn links_and_lookups() {
        skip_unless_root!();
        in_private_netns(|| {
            let mut nl = Netlink::open().unwrap();
            let lo = nl.link_by_name("lo").unwrap().unwrap();
            assert_eq!(lo.mtu, 65536);
            assert_eq!(nl.link_by_index(lo.index).unwrap(), Some(lo.clone()));
            assert_eq!(nl.link_by_name("nope0").unwrap(), None);
            assert_eq!(nl.link_by_index(999_999).unwrap(), None);
            let err = nl.link_by_name("a-name-of-16-byt").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            let (a, b) = veth_pair(&mut nl, "wtv0", "wtv1");
            let mut names: Vec<String> = nl.links().unwrap().into_iter().map(|l| l.name).collect();
            names.sort();
            assert_eq!(names, ["lo", "wtv0", "wtv1"]);
            assert_ne!(a.index, b.index);
            // Invalid MTU keeps the kernel's errno.
            let err = nl.set_mtu(a.index, 10).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
            nl.set_up(a.index).unwrap();
            assert!(nl.link_by_index(a.index).unwrap().unwrap().up);
            nl.set_down(a.index).unwrap();
            assert!(!nl.link_by_index(a.index).unwrap().unwrap().up);
            // Deleting one end of a veth pair deletes both.
            nl.delete_link(a.index).unwrap();
            assert_eq!(nl.link_by_name("wtv0").unwrap(), None);
            assert_eq!(nl.link_by_name("wtv1").unwrap(), None);
            let err = nl.delete_link(a.index).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");
        });
    }

    #[test]
    fn errors_keep_errno() {
        skip_unless_root!();
        in_private_netns(|| {
            let mut nl = Netlink::open().unwrap();
            let tun = Tun::open("wt0", &TunOptions::default()).unwrap();
            let index = nl.link_by_name(tun.name()).unwrap().unwrap().index;
            nl.set_up(index).unwrap();

            let missing_dev = Route {
                dst: v4(100, 96, 5, 0),
                prefix_len: 24,
                oif: 999_999,
                gateway: None,
                onlink: false,
            };
            let err = nl.add_route(&missing_dev).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");

            nl.add_address(index, v4(100, 96, 1, 0), 24).unwrap();
            let err = nl.add_address(index, v4(100, 96, 1, 0), 24).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
            let err = nl.add_address(index, v4(100, 96, 1, 0), 33).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

            let never_added = Route {
                dst: v4(100, 96, 9, 0),
                prefix_len: 24,
                oif: index,
                gateway: None,
                onlink: false,
            };
            let err = nl.del_route(&never_added).unwrap_err();
            assert!(
                matches!(err.raw_os_error(), Some(libc::ESRCH | libc::ENOENT)),
                "{err}"
            );
            let mixed = Route {
                gateway: Some(v6("fd00:100:96::1")),
                ..never_added
            };
            assert_eq!(
                nl.add_route(&mixed).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        });
    }

    #[test]
    fn routes_are_added_replaced_and_deleted() {
        skip_unless_root!();
        in_private_netns(|| {
            let mut nl = Netlink::open().unwrap();
            let tun = Tun::open("wt0", &TunOptions::default()).unwrap();
            let index = nl.link_by_name(tun.name()).unwrap().unwrap().index;
            nl.set_up(index).unwrap();
            nl.add_address(index, v4(100, 96, 1, 0), 24).unwrap();
            nl.add_address(index, v6("fd00:100:96:1::1"), 64).unwrap();

            // flannel vxlan style: <subnet> via <subnet>.0 dev wt0 onlink.
            let flannel = Route {
                dst: v4(100, 96, 5, 0),
                prefix_len: 24,
                oif: index,
                gateway: Some(v4(100, 96, 5, 0)),
                onlink: true,
            };
            nl.add_route(&flannel).unwrap();
            nl.add_route(&flannel).unwrap(); // replace: no EEXIST
            let shown = ip(&["-4", "route", "show", "dev", "wt0"]);
            assert!(
                shown.contains("100.96.5.0/24 via 100.96.5.0 onlink"),
                "{shown}"
            );
            // Without onlink the gateway is not reachable.
            let err = nl
                .add_route(&Route {
                    onlink: false,
                    ..flannel.clone()
                })
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");

            let direct6 = Route {
                dst: v6("fd00:100:96:5::"),
                prefix_len: 64,
                oif: index,
                gateway: None,
                onlink: false,
            };
            nl.add_route(&direct6).unwrap();
            let shown = ip(&["-6", "route", "show", "dev", "wt0"]);
            assert!(shown.contains("fd00:100:96:5::/64"), "{shown}");
            // NODAD: the address is usable at once, not tentative.
            let shown = ip(&["-6", "-o", "addr", "show", "dev", "wt0"]);
            assert!(shown.contains("fd00:100:96:1::1/64"), "{shown}");
            assert!(!shown.contains("tentative"), "{shown}");

            nl.del_route(&flannel).unwrap();
            nl.del_route(&direct6).unwrap();
            let shown =
                ip(&["route", "show", "dev", "wt0"]) + &ip(&["-6", "route", "show", "dev", "wt0"]);
            assert!(!shown.contains("100.96.5.0"), "{shown}");
            assert!(!shown.contains("fd00:100:96:5::"), "{shown}");
        });
    }

    #[test]
    fn route_get_names_the_interface_and_the_next_hop() {
        skip_unless_root!();
        in_private_netns(|| {
            let mut nl = Netlink::open().unwrap();
            let (a, b) = veth_pair(&mut nl, "wtg0", "wtg1");
            nl.set_up(a.index).unwrap();
            nl.set_up(b.index).unwrap();
            nl.add_address(a.index, v4(198, 18, 0, 1), 24).unwrap();
            nl.add_address(b.index, v4(198, 18, 1, 1), 24).unwrap();
            // On the connected subnet: out of wtg0, no gateway.
            let on_link = nl.route_get(v4(198, 18, 0, 7)).unwrap();
            assert_eq!(
                on_link,
                RouteLookup {
                    oif: Some(a.index),
                    gateway: None,
                    unicast: true,
                    multipath: false
                }
            );
            // Behind a router on wtg0's subnet: a gateway.
            nl.add_route(&Route {
                dst: v4(198, 19, 0, 0),
                prefix_len: 24,
                oif: a.index,
                gateway: Some(v4(198, 18, 0, 254)),
                onlink: false,
            })
            .unwrap();
            let routed = nl.route_get(v4(198, 19, 0, 9)).unwrap();
            assert_eq!(routed.oif, Some(a.index));
            assert_eq!(routed.gateway, Some(v4(198, 18, 0, 254)));
            // The other interface's subnet, and a local address.
            assert_eq!(nl.route_get(v4(198, 18, 1, 9)).unwrap().oif, Some(b.index));
            assert!(!nl.route_get(v4(198, 18, 0, 1)).unwrap().unicast);
            // No route at all.
            let err = nl.route_get(v4(203, 0, 113, 1)).unwrap_err();
            assert!(
                matches!(
                    err.raw_os_error(),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
                ),
                "{err}"
            );
        });
    }

    #[test]
    fn link_with_address_finds_the_underlay() {
        skip_unless_root!();
        in_private_netns(|| {
            let mut nl = Netlink::open().unwrap();
            let (a, b) = veth_pair(&mut nl, "wtu0", "wtu1");
            nl.add_address(a.index, v4(198, 18, 0, 1), 24).unwrap();
            nl.add_address(b.index, v6("fd00:198:18::2"), 64).unwrap();
            let found =
                |nl: &mut Netlink, addr| nl.link_with_address(addr).unwrap().map(|l| l.name);
            assert_eq!(found(&mut nl, v4(198, 18, 0, 1)).as_deref(), Some("wtu0"));
            assert_eq!(
                found(&mut nl, v6("fd00:198:18::2")).as_deref(),
                Some("wtu1")
            );
            assert_eq!(
                found(&mut nl, v6("::ffff:198.18.0.1")).as_deref(),
                Some("wtu0")
            );
            assert_eq!(found(&mut nl, v4(198, 18, 0, 2)), None);
            assert_eq!(found(&mut nl, v4(127, 0, 0, 1)).as_deref(), Some("lo"));
            let addrs = nl.addresses().unwrap();
            assert!(addrs.contains(&AddressInfo {
                index: a.index,
                addr: v4(198, 18, 0, 1),
                prefix_len: 24
            }));
        });
    }

    #[test]
    fn large_dumps_span_several_datagrams() {
        skip_unless_root!();
        in_private_netns(|| {
            let mut nl = Netlink::open().unwrap();
            let (a, _) = veth_pair(&mut nl, "wtd0", "wtd1");
            for i in 0..600u16 {
                let [hi, lo] = i.to_be_bytes();
                nl.add_address(a.index, v4(198, 18, hi, lo), 32).unwrap();
            }
            let on_a = nl
                .addresses()
                .unwrap()
                .into_iter()
                .filter(|x| x.index == a.index)
                .count();
            assert_eq!(on_a, 600);
        });
    }

    #[test]
    fn permanent_neighbours() {
        skip_unless_root!();
        in_private_netns(|| {
            let mut nl = Netlink::open().unwrap();
            let (a, _) = veth_pair(&mut nl, "wtn0", "wtn1");
            nl.add_neighbour(a.index, v4(198, 18, 0, 2), [0x02, 0, 0, 0, 0, 0x02])
                .unwrap();
            nl.add_neighbour(a.index, v4(198, 18, 0, 2), [0x02, 0, 0, 0, 0, 0x03])
                .unwrap();
            nl.add_neighbour(a.index, v6("fd00:198:18::2"), [0x02, 0, 0, 0, 0, 0x04])
                .unwrap();
            let shown = ip(&["neigh", "show", "dev", "wtn0"])
                + &ip(&["-6", "neigh", "show", "dev", "wtn0"]);
            assert!(
                shown.contains("198.18.0.2 lladdr 02:00:00:00:00:03 PERMANENT"),
                "{shown}"
            );
            assert!(
                shown.contains("fd00:198:18::2 lladdr 02:00:00:00:00:04 PERMANENT"),
                "{shown}"
            );
            let err = nl
                .add_neighbour(999_999, v4(198, 18, 0, 3), [2, 0, 0, 0, 0, 5])
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");
        });
    }
}
