//! The routing state: an immutable longest-prefix-match table from overlay subnets to peers.
//!
//! A [`SubnetTable`] is a plain value. The control plane builds a new one from the full set
//! of [`Route`]s on every change (cheap: 10,000 routes build in a few milliseconds) and
//! publishes it; the data path only reads it. Nothing in here is mutable after
//! [`SubnetTable::new`], so a table can be shared between threads freely.
//!
//! ## Model
//! - A [`Route`] says "packets for `subnet` go to the host at `endpoint`".
//! - Routes with the same endpoint belong to one [`Peer`]; a peer's subnets are what it may
//!   use as inner source addresses (anti-spoofing) and its endpoint IP is how a received
//!   datagram is attributed to it.
//! - Lookup is longest-prefix match, separately for IPv4 and IPv6: one hash map per prefix
//!   length present, probed from the longest length down. Flannel clusters use a single
//!   length (/24), so a lookup is usually a single hash probe whatever the table size.
//! - Overlapping subnets are allowed here (the longer prefix wins); the flannel-style
//!   configuration rejects them separately because leases never overlap.

use core::fmt;
use core::hash::{BuildHasherDefault, Hasher};
use core::str::FromStr;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::verdict::PeerId;
use crate::wire::EthernetAddress;

/// An IP network: an address with its host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a CIDR string or value was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CidrError {
    /// The text is not `address/length`.
    Syntax,
    /// The address part does not parse.
    BadAddress,
    /// The length is not a number, or is larger than 32 (IPv4) / 128 (IPv6).
    BadPrefixLen,
    /// Host bits are set (e.g. `100.96.1.5/24`); write the network address.
    HostBitsSet,
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CidrError::Syntax => "expected ADDRESS/LENGTH, e.g. 100.96.2.0/24",
            CidrError::BadAddress => "the address part is not an IPv4 or IPv6 address",
            CidrError::BadPrefixLen => "the prefix length must be 0-32 (IPv4) or 0-128 (IPv6)",
            CidrError::HostBitsSet => "host bits are set; give the network address",
        })
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// A network from an address and a prefix length; host bits must be clear.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Cidr, CidrError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(CidrError::BadPrefixLen);
        }
        let cidr = Cidr { addr, prefix_len };
        if cidr.network_of(addr) != addr {
            return Err(CidrError::HostBitsSet);
        }
        Ok(cidr)
    }

    /// The network that contains `addr` at this prefix length (host bits cleared).
    pub fn containing(addr: IpAddr, prefix_len: u8) -> Result<Cidr, CidrError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(CidrError::BadPrefixLen);
        }
        let probe = Cidr { addr, prefix_len };
        Ok(Cidr {
            addr: probe.network_of(addr),
            prefix_len,
        })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// True for an IPv4 network.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    fn network_of(&self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_v4(self.prefix_len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_v6(self.prefix_len))),
        }
    }

    /// True if `addr` (of the same family) lies in this network.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                u32::from(a) & mask_v4(self.prefix_len) == u32::from(n)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                u128::from(a) & mask_v6(self.prefix_len) == u128::from(n)
            }
            _ => false,
        }
    }

    /// True if the two networks share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// True if `other` lies entirely inside this network.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix_len >= self.prefix_len && self.contains(other.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, len) = s.trim().split_once('/').ok_or(CidrError::Syntax)?;
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::BadAddress)?;
        let len: u8 = len.parse().map_err(|_| CidrError::BadPrefixLen)?;
        Cidr::new(addr, len)
    }
}

fn mask_v4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask_v6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// One route: packets for `subnet` go to the host at `endpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The overlay subnet (the remote host's lease).
    pub subnet: Cidr,
    /// The remote host's underlay address and UDP port.
    pub endpoint: SocketAddr,
    /// The remote VTEP's MAC address (VXLAN L3 mode); `None` for the UDP backend.
    pub vtep_mac: Option<EthernetAddress>,
}

/// A remote host: one endpoint and every subnet routed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The underlay address and port datagrams are sent to.
    pub endpoint: SocketAddr,
    /// The overlay subnets routed to this peer; also the inner source addresses it may use.
    pub subnets: Vec<Cidr>,
    /// The remote VTEP MAC (VXLAN L3), from the first route that carries one.
    pub vtep_mac: Option<EthernetAddress>,
}

impl Peer {
    /// True if `addr` lies in one of this peer's subnets.
    pub fn owns(&self, addr: IpAddr) -> bool {
        self.subnets.iter().any(|s| s.contains(addr))
    }
}

/// Why a set of routes could not become a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableError {
    /// The same subnet appears twice with different endpoints.
    DuplicateSubnet(Cidr),
    /// More peers than a [`PeerId`] can index.
    TooManyPeers,
    /// Two peers share an address with different ports: received datagrams are told apart
    /// by address only (NAT, restarts and VXLAN's hashed source ports change the port), so
    /// one address is one peer.
    SharedAddress(SocketAddr, SocketAddr),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::DuplicateSubnet(c) => write!(f, "subnet {c} is routed to two endpoints"),
            TableError::TooManyPeers => f.write_str("too many peers"),
            TableError::SharedAddress(a, b) => write!(
                f,
                "peers {a} and {b} share an address (datagrams are told apart by address only: one address, one port)"
            ),
        }
    }
}

impl std::error::Error for TableError {}

/// Multiplicative hasher for integer keys: the keys are already well spread network
/// addresses, so SipHash's DoS resistance buys nothing and costs most of a lookup.
#[derive(Default, Clone, Copy)]
struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        // An enum's discriminant (`IpAddr`): mixed in like a byte.
        self.0 = (self.0.rotate_left(8) ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) ^ 0x5851_F42D_4C95_7F2D).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 ^= self.0 >> 29;
    }
    fn write_u128(&mut self, n: u128) {
        let folded = (n as u64) ^ ((n >> 64) as u64).rotate_left(17);
        self.0 = (folded ^ 0x5851_F42D_4C95_7F2D).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 ^= self.0 >> 29;
    }
}

type IntMap<K> = HashMap<K, PeerId, BuildHasherDefault<IntHasher>>;

/// Longest-prefix match over one address family, keyed by the address as an integer.
#[derive(Debug, Clone)]
struct Lpm<K> {
    /// (prefix length, mask, networks of that length), longest length first.
    levels: Vec<(u8, K, IntMap<K>)>,
}

impl<K> Default for Lpm<K> {
    fn default() -> Self {
        Lpm { levels: Vec::new() }
    }
}

impl<K> Lpm<K>
where
    K: Copy + Eq + core::hash::Hash + core::ops::BitAnd<Output = K>,
{
    fn insert(&mut self, len: u8, mask: K, key: K, peer: PeerId) {
        let pos = match self.levels.binary_search_by(|(l, _, _)| len.cmp(l)) {
            Ok(pos) => pos,
            Err(pos) => {
                self.levels.insert(pos, (len, mask, IntMap::default()));
                pos
            }
        };
        self.levels[pos].2.insert(key, peer);
    }

    #[inline]
    fn lookup(&self, addr: K) -> Option<PeerId> {
        self.levels
            .iter()
            .find_map(|(_, mask, map)| map.get(&(addr & *mask)).copied())
    }
}

/// Everything a [`SubnetTable`] is built from.
///
/// `routes` are the overlay subnets (UDP backend, VXLAN L3). `vteps` are peers without a
/// subnet (VXLAN L2: remote VTEPs that get a copy of broadcast and unknown-unicast frames).
/// `fdb` are static MAC -> VTEP entries (VXLAN L2, like `bridge fdb add ... dst`). Every
/// endpoint named anywhere here is a peer. Static neighbour entries (IP -> MAC, for the
/// ARP/ND proxy) name no peer; they are added with [`SubnetTable::with_neigh`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSpec {
    /// Overlay subnets and where they go.
    pub routes: Vec<Route>,
    /// Peers without a subnet.
    pub vteps: Vec<SocketAddr>,
    /// Static forwarding entries: inner MAC -> VTEP.
    pub fdb: Vec<(EthernetAddress, SocketAddr)>,
}

/// An immutable routing snapshot: longest-prefix match from overlay destination to peer.
#[derive(Debug, Clone, Default)]
pub struct SubnetTable {
    generation: u64,
    routes: Vec<Route>,
    peers: Vec<Peer>,
    v4: Lpm<u32>,
    v6: Lpm<u128>,
    /// Looked up for every received datagram; its keys are the configured peers, so the
    /// cheap hasher cannot be flooded with colliding entries from the network.
    by_endpoint: IntMap<IpAddr>,
    fdb: HashMap<EthernetAddress, PeerId>,
    flood: Vec<SocketAddr>,
    neigh: HashMap<IpAddr, EthernetAddress>,
}

impl SubnetTable {
    /// Builds a table from `routes`. Routes are kept sorted by subnet; the same subnet twice
    /// is an error unless both entries are identical. `generation` identifies this snapshot
    /// (per-worker caches are keyed by it).
    pub fn new(generation: u64, routes: &[Route]) -> Result<SubnetTable, TableError> {
        SubnetTable::build(
            generation,
            &TableSpec {
                routes: routes.to_vec(),
                ..TableSpec::default()
            },
        )
    }

    /// Builds a table from a full [`TableSpec`]; see [`SubnetTable::new`].
    pub fn build(generation: u64, spec: &TableSpec) -> Result<SubnetTable, TableError> {
        let mut sorted = spec.routes.clone();
        sorted.sort_by_key(|r| r.subnet);
        sorted.dedup();
        if let Some(w) = sorted.windows(2).find(|w| w[0].subnet == w[1].subnet) {
            return Err(TableError::DuplicateSubnet(w[0].subnet));
        }
        let mut table = SubnetTable {
            generation,
            ..SubnetTable::default()
        };
        let mut by_endpoint_sock: HashMap<SocketAddr, PeerId> = HashMap::new();
        // `heard`: datagrams from the endpoint are the peer's (routes and VTEPs); a peer
        // known only from a static FDB entry is only sent to.
        let mut peer_of = |table: &mut SubnetTable,
                           endpoint: SocketAddr,
                           heard: bool|
         -> Result<PeerId, TableError> {
            let id = match by_endpoint_sock.get(&endpoint) {
                Some(&id) => id,
                None => {
                    let id = PeerId::try_from(table.peers.len())
                        .map_err(|_| TableError::TooManyPeers)?;
                    table.peers.push(Peer {
                        endpoint,
                        subnets: Vec::new(),
                        vtep_mac: None,
                    });
                    by_endpoint_sock.insert(endpoint, id);
                    id
                }
            };
            if heard {
                // Attribution of received datagrams is by IP only: NAT, a restarted peer or
                // VXLAN's hashed source ports use other source ports.
                match table.by_endpoint.get(&endpoint.ip()) {
                    Some(&other) if other != id => {
                        let other = table.peers[other as usize].endpoint;
                        return Err(TableError::SharedAddress(other, endpoint));
                    }
                    Some(_) => {}
                    None => {
                        table.by_endpoint.insert(endpoint.ip(), id);
                    }
                }
            }
            Ok(id)
        };
        for route in &sorted {
            let id = peer_of(&mut table, route.endpoint, true)?;
            let peer = &mut table.peers[id as usize];
            peer.subnets.push(route.subnet);
            if peer.vtep_mac.is_none() {
                peer.vtep_mac = route.vtep_mac;
            }
            let len = route.subnet.prefix_len;
            match route.subnet.addr {
                IpAddr::V4(a) => table.v4.insert(len, mask_v4(len), u32::from(a), id),
                IpAddr::V6(a) => table.v6.insert(len, mask_v6(len), u128::from(a), id),
            }
        }
        for &endpoint in &spec.vteps {
            peer_of(&mut table, endpoint, true)?;
        }
        // Routes and VTEPs receive floods and are heard; a peer known only from a static FDB
        // entry is neither (like the kernel's `bridge fdb add MAC dst IP`: it says where one
        // MAC is).
        table.flood = table.peers.iter().map(|p| p.endpoint).collect();
        for &(mac, endpoint) in &spec.fdb {
            let id = peer_of(&mut table, endpoint, false)?;
            table.fdb.insert(mac, id);
        }
        table.routes = sorted;
        Ok(table)
    }

    /// The same table with the static neighbour entries `entries` (VXLAN L2: overlay IP ->
    /// MAC, what the ARP/ND proxy answers with, like `ip neigh add IP lladdr MAC dev
    /// vxlan0`), replacing any it had; a later entry for the same address wins.
    pub fn with_neigh(
        mut self,
        entries: impl IntoIterator<Item = (IpAddr, EthernetAddress)>,
    ) -> SubnetTable {
        self.neigh = entries.into_iter().collect();
        self
    }

    /// The MAC of a static neighbour entry for `ip`, if there is one.
    #[inline]
    pub fn static_neigh(&self, ip: IpAddr) -> Option<EthernetAddress> {
        if self.neigh.is_empty() {
            return None;
        }
        self.neigh.get(&ip).copied()
    }

    /// Every static neighbour entry, sorted by address.
    pub fn neigh_entries(&self) -> Vec<(IpAddr, EthernetAddress)> {
        let mut all: Vec<_> = self.neigh.iter().map(|(ip, mac)| (*ip, *mac)).collect();
        all.sort_unstable_by_key(|(ip, _)| *ip);
        all
    }

    /// The generation this snapshot was built with.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every route, sorted by subnet.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Every peer; a [`PeerId`] indexes this slice.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The endpoints that get a copy of a flooded frame (broadcast, multicast, unknown
    /// unicast in VXLAN L2 mode): every peer with a route or declared as a VTEP, but not a
    /// peer known only from a static FDB entry.
    pub fn flood_peers(&self) -> &[SocketAddr] {
        &self.flood
    }

    /// The peer with id `id`, if it exists in this snapshot.
    pub fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(id as usize)
    }

    /// Longest-prefix match of an IPv4 destination.
    #[inline]
    pub fn lookup_v4(&self, dst: Ipv4Addr) -> Option<PeerId> {
        self.v4.lookup(u32::from(dst))
    }

    /// Longest-prefix match of an IPv6 destination.
    #[inline]
    pub fn lookup_v6(&self, dst: Ipv6Addr) -> Option<PeerId> {
        self.v6.lookup(u128::from(dst))
    }

    /// Longest-prefix match of a destination of either family.
    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<PeerId> {
        match dst {
            IpAddr::V4(a) => self.lookup_v4(a),
            IpAddr::V6(a) => self.lookup_v6(a),
        }
    }

    /// The peer of a static forwarding entry for `mac`, if there is one.
    #[inline]
    pub fn static_fdb(&self, mac: &EthernetAddress) -> Option<PeerId> {
        self.fdb.get(mac).copied()
    }

    /// Every static forwarding entry.
    pub fn fdb_entries(&self) -> impl Iterator<Item = (EthernetAddress, SocketAddr)> + '_ {
        self.fdb
            .iter()
            .filter_map(|(mac, id)| self.peer(*id).map(|p| (*mac, p.endpoint)))
    }

    /// The peer whose endpoint has this underlay IP (any port).
    #[inline]
    pub fn peer_by_endpoint(&self, ip: IpAddr) -> Option<PeerId> {
        self.by_endpoint.get(&ip).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn route(subnet: &str, endpoint: &str) -> Route {
        Route {
            subnet: cidr(subnet),
            endpoint: endpoint.parse().unwrap(),
            vtep_mac: None,
        }
    }

    #[test]
    fn cidr_parse_and_display() {
        assert_eq!(cidr("100.96.2.0/24").to_string(), "100.96.2.0/24");
        assert_eq!(cidr("fd00:100:96:2::/64").to_string(), "fd00:100:96:2::/64");
        assert_eq!(cidr("0.0.0.0/0").prefix_len(), 0);
        assert_eq!("100.96.2.0".parse::<Cidr>(), Err(CidrError::Syntax));
        assert_eq!("100.96.2/24".parse::<Cidr>(), Err(CidrError::BadAddress));
        assert_eq!(
            "100.96.2.0/33".parse::<Cidr>(),
            Err(CidrError::BadPrefixLen)
        );
        assert_eq!("100.96.2.0/x".parse::<Cidr>(), Err(CidrError::BadPrefixLen));
        assert_eq!("100.96.2.1/24".parse::<Cidr>(), Err(CidrError::HostBitsSet));
        assert_eq!("fd00::1/129".parse::<Cidr>(), Err(CidrError::BadPrefixLen));
        let c = Cidr::containing("100.96.2.77".parse().unwrap(), 24).unwrap();
        assert_eq!(c, cidr("100.96.2.0/24"));
    }

    #[test]
    fn cidr_contains_overlaps_covers() {
        let net = cidr("100.96.0.0/16");
        let sub = cidr("100.96.2.0/24");
        assert!(net.contains("100.96.255.1".parse().unwrap()));
        assert!(!net.contains("100.97.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        assert!(net.overlaps(&sub) && sub.overlaps(&net));
        assert!(net.covers(&sub) && !sub.covers(&net));
        assert!(!sub.overlaps(&cidr("100.96.3.0/24")));
        assert!(cidr("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert!(cidr("::/0").contains("fd00::1".parse().unwrap()));
    }

    #[test]
    fn longest_prefix_wins_v4_and_v6() {
        let t = SubnetTable::new(
            7,
            &[
                route("100.96.0.0/16", "198.18.0.9:8285"),
                route("100.96.2.0/24", "198.18.0.2:8285"),
                route("100.96.2.128/25", "198.18.0.3:8285"),
                route("fd00:100:96::/48", "198.18.0.9:8285"),
                route("fd00:100:96:2::/64", "198.18.0.2:8285"),
            ],
        )
        .unwrap();
        assert_eq!(t.generation(), 7);
        let ep = |a: &str| {
            t.peer(t.lookup(a.parse().unwrap()).unwrap())
                .unwrap()
                .endpoint
        };
        assert_eq!(ep("100.96.2.5"), "198.18.0.2:8285".parse().unwrap());
        assert_eq!(ep("100.96.2.200"), "198.18.0.3:8285".parse().unwrap());
        assert_eq!(ep("100.96.77.1"), "198.18.0.9:8285".parse().unwrap());
        assert_eq!(ep("fd00:100:96:2::5"), "198.18.0.2:8285".parse().unwrap());
        assert_eq!(ep("fd00:100:96:3::5"), "198.18.0.9:8285".parse().unwrap());
        assert_eq!(t.lookup("100.97.0.1".parse().unwrap()), None);
        assert_eq!(t.lookup("fd00:100:97::1".parse().unwrap()), None);
        // Routes with one endpoint are one peer, owning all their subnets.
        assert_eq!(t.peers().len(), 3);
        let b = t.peer_by_endpoint("198.18.0.2".parse().unwrap()).unwrap();
        let peer = t.peer(b).unwrap();
        assert!(peer.owns("100.96.2.1".parse().unwrap()));
        assert!(peer.owns("fd00:100:96:2::1".parse().unwrap()));
        assert!(!peer.owns("100.96.3.1".parse().unwrap()));
        assert_eq!(t.peer_by_endpoint("198.18.0.77".parse().unwrap()), None);
    }

    #[test]
    fn default_route_and_empty_table() {
        let t = SubnetTable::new(0, &[]).unwrap();
        assert_eq!(t.lookup("1.2.3.4".parse().unwrap()), None);
        let t = SubnetTable::new(1, &[route("0.0.0.0/0", "198.18.0.2:8285")]).unwrap();
        assert!(t.lookup("203.0.113.9".parse().unwrap()).is_some());
        assert_eq!(t.lookup("fd00::1".parse().unwrap()), None);
    }

    #[test]
    fn duplicate_subnet_rejected_identical_merged() {
        let a = route("100.96.2.0/24", "198.18.0.2:8285");
        let b = route("100.96.2.0/24", "198.18.0.3:8285");
        assert_eq!(
            SubnetTable::new(0, &[a, b]).unwrap_err(),
            TableError::DuplicateSubnet(cidr("100.96.2.0/24"))
        );
        assert_eq!(SubnetTable::new(0, &[a, a]).unwrap().routes().len(), 1);
    }

    #[test]
    fn vteps_and_static_fdb_are_peers() {
        let mac: EthernetAddress = "02:00:00:00:09:01".parse().unwrap();
        let spec = TableSpec {
            routes: vec![route("100.96.2.0/24", "198.18.0.2:8472")],
            vteps: vec![
                "198.18.0.3:8472".parse().unwrap(),
                "198.18.0.2:8472".parse().unwrap(),
            ],
            fdb: vec![(mac, "198.18.0.4:8472".parse().unwrap())],
        };
        let t = SubnetTable::build(3, &spec).unwrap();
        assert_eq!(t.peers().len(), 3, "one peer per distinct endpoint");
        let id = t.static_fdb(&mac).unwrap();
        assert!(
            !t.flood_peers().contains(&t.peer(id).unwrap().endpoint),
            "a static FDB entry does not make its endpoint a flood target"
        );
        assert_eq!(
            t.peer(id).unwrap().endpoint,
            "198.18.0.4:8472".parse().unwrap()
        );
        assert!(t.peer_by_endpoint("198.18.0.3".parse().unwrap()).is_some());
        assert_eq!(
            t.peer_by_endpoint("198.18.0.4".parse().unwrap()),
            None,
            "a static FDB entry does not make its endpoint heard as a peer"
        );
        assert_eq!(t.fdb_entries().count(), 1);
        assert_eq!(t.static_fdb(&"02:00:00:00:09:02".parse().unwrap()), None);
    }

    #[test]
    fn static_neighbour_entries_are_kept_apart_from_peers() {
        let mac: EthernetAddress = "02:00:00:aa:00:0c".parse().unwrap();
        let other: EthernetAddress = "02:00:00:aa:00:0d".parse().unwrap();
        let v4: IpAddr = "100.96.0.12".parse().unwrap();
        let v6: IpAddr = "fd00:96::12".parse().unwrap();
        let t = SubnetTable::new(4, &[route("100.96.2.0/24", "198.18.0.2:8472")])
            .unwrap()
            .with_neigh([(v6, other), (v4, other), (v4, mac)]);
        assert_eq!(t.static_neigh(v4), Some(mac), "the later entry wins");
        assert_eq!(t.static_neigh(v6), Some(other));
        assert_eq!(t.static_neigh("100.96.0.13".parse().unwrap()), None);
        assert_eq!(t.neigh_entries(), [(v4, mac), (v6, other)]);
        // They are no peers and change nothing else.
        assert_eq!((t.peers().len(), t.generation()), (1, 4));
        assert!(SubnetTable::default().neigh_entries().is_empty());
    }

    #[test]
    fn peers_sharing_an_address_with_other_ports_are_refused() {
        let two = |a: &str, b: &str| {
            SubnetTable::new(0, &[route("100.96.2.0/24", a), route("100.96.3.0/24", b)])
        };
        assert!(matches!(
            two("198.18.0.2:8285", "198.18.0.2:9000"),
            Err(TableError::SharedAddress(..))
        ));
        assert!(matches!(
            two("[fd00::2]:8285", "[fd00::2]:8286"),
            Err(TableError::SharedAddress(..))
        ));
        // One endpoint with several subnets, and one address per peer, are fine.
        assert_eq!(
            two("198.18.0.2:8285", "198.18.0.2:8285")
                .unwrap()
                .peers()
                .len(),
            1
        );
        assert_eq!(
            two("198.18.0.2:8285", "198.18.0.3:9000")
                .unwrap()
                .peers()
                .len(),
            2
        );
        // A VTEP counts as a peer; a static FDB entry (only sent to) does not.
        let spec = |vtep: &str, fdb: &str| TableSpec {
            routes: vec![route("100.96.2.0/24", "198.18.0.2:8472")],
            vteps: vec![vtep.parse().unwrap()],
            fdb: vec![("02:00:00:00:09:01".parse().unwrap(), fdb.parse().unwrap())],
        };
        assert!(SubnetTable::build(0, &spec("198.18.0.2:4789", "198.18.0.5:1")).is_err());
        let t = SubnetTable::build(0, &spec("198.18.0.3:8472", "198.18.0.2:4789")).unwrap();
        let heard = t.peer_by_endpoint("198.18.0.2".parse().unwrap()).unwrap();
        assert_eq!(
            t.peer(heard).unwrap().endpoint,
            "198.18.0.2:8472".parse().unwrap()
        );
        let e = two("198.18.0.2:8285", "198.18.0.2:9000")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("198.18.0.2:8285") && e.contains("198.18.0.2:9000"),
            "{e}"
        );
    }

    #[test]
    fn ten_thousand_routes() {
        let routes: Vec<Route> = (0..10_000u32)
            .map(|i| Route {
                subnet: Cidr::new(IpAddr::V4(Ipv4Addr::from(0x6400_0000 + (i << 8))), 24).unwrap(),
                endpoint: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xC612_0000 + i)), 8285),
                vtep_mac: None,
            })
            .collect();
        let t = SubnetTable::new(1, &routes).unwrap();
        for (i, r) in routes.iter().enumerate().step_by(97) {
            let IpAddr::V4(net) = r.subnet.addr() else {
                unreachable!()
            };
            let id = t.lookup_v4(Ipv4Addr::from(u32::from(net) + 77)).unwrap();
            assert_eq!(t.peer(id).unwrap().endpoint, routes[i].endpoint);
        }
    }
}
