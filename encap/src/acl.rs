//! Access-control lists: ordered allow/deny/reject rules on the inner flow, first match
//! wins, with a default action and a hit counter per rule.
//!
//! This is the daemon's `[[acl]]` (and anyone's) ready-made [`Policy`]:
//!
//! ```
//! use weft_encap::acl::{Acl, AclRule, AclSet, PortRange};
//! use weft_encap::policy::{Decision, Direction, FlowKey, Policy, PolicyContext};
//!
//! // Allow TCP to port 80 from 100.96.1.0/24; deny everything else.
//! let web = AclRule::new(Decision::Allow)
//!     .source("100.96.1.0/24".parse()?)
//!     .protocol(6)
//!     .destination_ports(PortRange::new(80, 80));
//! let acl = Acl::new(AclSet::new(vec![web], Decision::Drop));
//! let mut policy = acl.policy(); // one per worker: the engine clones it
//!
//! let syn = [0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0,
//!     100, 96, 1, 2, 100, 96, 2, 3, 0x9c, 0x40, 0, 80];
//! let flow = FlowKey::of_ip(&syn).unwrap();
//! let ctx = PolicyContext::new(Direction::Egress, 0, None);
//! assert_eq!(policy.judge(&flow, &ctx), Decision::Allow);
//! policy.on_tick(0); // the worker publishes its hit counts at least once a second
//! assert_eq!(acl.current().hits(0), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Threads and counters
//! [`Acl`] is the shared, replaceable rule set; [`AclPolicy`] is one worker's view of it.
//! Judging a packet reads one atomic (has the set been replaced?) and scans the rules; the
//! hit is counted in the worker's own array and added to the set's shared counters on
//! [`Policy::on_tick`], so workers never write a shared cache line per packet. Counters lag
//! by at most the tick (a second).
//!
//! ## Replacing the rules
//! [`Acl::replace`] swaps the whole set at once: each worker picks it up on its next packet.
//! A rule that is in the old and the new set, identical, keeps its hit counter; traffic
//! that both sets allow is never interrupted.

use core::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::policy::{Decision, Direction, FlowKey, Policy, PolicyContext};
use crate::table::Cidr;

/// An inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// The first port of the range.
    pub first: u16,
    /// The last port of the range (not below `first`).
    pub last: u16,
}

impl PortRange {
    /// `first..=last`, the bounds swapped if given the wrong way round.
    pub const fn new(first: u16, last: u16) -> PortRange {
        if first <= last {
            PortRange { first, last }
        } else {
            PortRange {
                first: last,
                last: first,
            }
        }
    }

    /// Whether `port` lies in the range.
    pub const fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// One rule: a packet matches when every field that is set matches (an unset field matches
/// anything).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct AclRule {
    /// What to do with a matching packet.
    pub action: Decision,
    /// Only packets going this way; `None`: both.
    pub direction: Option<Direction>,
    /// The inner source address lies in this network.
    pub source: Option<Cidr>,
    /// The inner destination address lies in this network.
    pub destination: Option<Cidr>,
    /// The IP protocol (IPv6: the upper-layer one), e.g. 6 for TCP.
    pub protocol: Option<u8>,
    /// The source port lies in this range (never matches a packet without ports: another
    /// protocol, or a fragment).
    pub source_ports: Option<PortRange>,
    /// The destination port lies in this range (likewise).
    pub destination_ports: Option<PortRange>,
}

impl AclRule {
    /// A rule that matches every packet, with `action` (set the fields to narrow it).
    pub const fn new(action: Decision) -> AclRule {
        AclRule {
            action,
            direction: None,
            source: None,
            destination: None,
            protocol: None,
            source_ports: None,
            destination_ports: None,
        }
    }

    /// Only packets going `direction`.
    pub fn direction(mut self, direction: Direction) -> AclRule {
        self.direction = Some(direction);
        self
    }

    /// Only packets from `network`.
    pub fn source(mut self, network: Cidr) -> AclRule {
        self.source = Some(network);
        self
    }

    /// Only packets to `network`.
    pub fn destination(mut self, network: Cidr) -> AclRule {
        self.destination = Some(network);
        self
    }

    /// Only packets of IP protocol `protocol` (6: TCP, 17: UDP, 1: ICMP, 58: ICMPv6).
    pub fn protocol(mut self, protocol: u8) -> AclRule {
        self.protocol = Some(protocol);
        self
    }

    /// Only packets from a port in `ports`.
    pub fn source_ports(mut self, ports: PortRange) -> AclRule {
        self.source_ports = Some(ports);
        self
    }

    /// Only packets to a port in `ports`.
    pub fn destination_ports(mut self, ports: PortRange) -> AclRule {
        self.destination_ports = Some(ports);
        self
    }

    /// Whether `flow`, going `direction`, matches this rule.
    pub fn matches(&self, flow: &FlowKey, direction: Direction) -> bool {
        let has_ports = flow.has_ports();
        self.direction.is_none_or(|d| d == direction)
            && self.source.is_none_or(|c| c.contains(flow.src))
            && self.destination.is_none_or(|c| c.contains(flow.dst))
            && self.protocol.is_none_or(|p| p == flow.protocol)
            && self
                .source_ports
                .is_none_or(|r| has_ports && r.contains(flow.src_port))
            && self
                .destination_ports
                .is_none_or(|r| has_ports && r.contains(flow.dst_port))
    }
}

/// The rule as `weft acl list` shows it, e.g. `deny in tcp from 100.96.1.0/24 to any port 22`.
impl fmt::Display for AclRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.action.name())?;
        if let Some(d) = self.direction {
            write!(f, " {}", d.name())?;
        }
        match self.protocol {
            Some(p) => write!(f, " {}", protocol_name(p))?,
            None => f.write_str(" any")?,
        }
        let any = |c: Option<Cidr>| c.map_or_else(|| "any".to_owned(), |c| c.to_string());
        write!(f, " from {}", any(self.source))?;
        if let Some(r) = self.source_ports {
            write!(f, " port {r}")?;
        }
        write!(f, " to {}", any(self.destination))?;
        if let Some(r) = self.destination_ports {
            write!(f, " port {r}")?;
        }
        Ok(())
    }
}

/// The name of the IP protocols a rule is usually about, or the number.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        58 => "icmpv6".to_owned(),
        132 => "sctp".to_owned(),
        n => n.to_string(),
    }
}

/// The protocol number of a name [`protocol_name`] gives (or of a number, 0-255).
pub fn protocol_number(name: &str) -> Option<u8> {
    match name {
        "icmp" => Some(1),
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmpv6" => Some(58),
        "sctp" => Some(132),
        n => n.parse().ok(),
    }
}

/// A rule in the form packets are checked against: every field a mask or a range, so a rule
/// is a handful of integer comparisons without branches on `Option`s or address families.
#[derive(Debug, Clone, Copy)]
struct Compiled {
    /// Bit 0: egress; bit 1: ingress.
    directions: u8,
    /// 0: any address; 4 or 6: an address of that family, in `src`/`src_mask`.
    src_family: u8,
    src: u128,
    src_mask: u128,
    /// As `src_family`, for the destination.
    dst_family: u8,
    dst: u128,
    dst_mask: u128,
    protocol: u8,
    protocol_mask: u8,
    /// The rule has a port range: a packet without ports (a fragment) cannot match.
    needs_ports: bool,
    src_ports: (u16, u16),
    dst_ports: (u16, u16),
}

const fn direction_bit(direction: Direction) -> u8 {
    match direction {
        Direction::Egress => 1,
        Direction::Ingress => 2,
    }
}

/// An address as (family, value): IPv4 in the low 32 bits.
fn address_bits(addr: std::net::IpAddr) -> (u8, u128) {
    match addr {
        std::net::IpAddr::V4(a) => (4, u128::from(u32::from(a))),
        std::net::IpAddr::V6(a) => (6, u128::from(a)),
    }
}

/// A network as (family, value, mask); `None` matches everything.
fn network_bits(network: Option<Cidr>) -> (u8, u128, u128) {
    let Some(c) = network else {
        return (0, 0, 0);
    };
    let (family, value) = address_bits(c.addr());
    let width = if family == 4 { 32 } else { 128 };
    let host_bits = width - u32::from(c.prefix_len());
    let mask = if host_bits >= width {
        0
    } else {
        ((u128::MAX >> (128 - width)) >> host_bits) << host_bits
    };
    (family, value & mask, mask)
}

impl Compiled {
    fn new(rule: &AclRule) -> Compiled {
        let (src_family, src, src_mask) = network_bits(rule.source);
        let (dst_family, dst, dst_mask) = network_bits(rule.destination);
        let all = (0, u16::MAX);
        let range = |r: Option<PortRange>| r.map_or(all, |r| (r.first, r.last));
        Compiled {
            directions: rule.direction.map_or(3, direction_bit),
            src_family,
            src,
            src_mask,
            dst_family,
            dst,
            dst_mask,
            protocol: rule.protocol.unwrap_or(0),
            protocol_mask: if rule.protocol.is_some() { 0xff } else { 0 },
            needs_ports: rule.source_ports.is_some() || rule.destination_ports.is_some(),
            src_ports: range(rule.source_ports),
            dst_ports: range(rule.destination_ports),
        }
    }

    #[inline]
    fn matches(&self, flow: &Flow) -> bool {
        (self.directions & flow.direction != 0)
            & (self.src_family == 0 || self.src_family == flow.src_family)
            & (self.dst_family == 0 || self.dst_family == flow.dst_family)
            & ((flow.src ^ self.src) & self.src_mask == 0)
            & ((flow.dst ^ self.dst) & self.dst_mask == 0)
            & (flow.protocol & self.protocol_mask == self.protocol)
            & (!self.needs_ports || flow.has_ports)
            & (self.src_ports.0 <= flow.src_port && flow.src_port <= self.src_ports.1)
            & (self.dst_ports.0 <= flow.dst_port && flow.dst_port <= self.dst_ports.1)
    }
}

/// A flow in the form [`Compiled`] rules check: converted once per packet.
struct Flow {
    direction: u8,
    src_family: u8,
    src: u128,
    dst_family: u8,
    dst: u128,
    protocol: u8,
    has_ports: bool,
    src_port: u16,
    dst_port: u16,
}

impl Flow {
    fn new(flow: &FlowKey, direction: Direction) -> Flow {
        let (src_family, src) = address_bits(flow.src);
        let (dst_family, dst) = address_bits(flow.dst);
        Flow {
            direction: direction_bit(direction),
            src_family,
            src,
            dst_family,
            dst,
            protocol: flow.protocol,
            has_ports: flow.has_ports(),
            src_port: flow.src_port,
            dst_port: flow.dst_port,
        }
    }
}

/// An ordered rule list with a default action and a hit counter per rule.
#[derive(Debug)]
pub struct AclSet {
    rules: Vec<AclRule>,
    compiled: Vec<Compiled>,
    default: Decision,
    hits: Vec<Arc<AtomicU64>>,
    default_hits: Arc<AtomicU64>,
}

impl AclSet {
    /// `rules` in order (the first match wins), and what to do with a packet none matches.
    pub fn new(rules: Vec<AclRule>, default: Decision) -> AclSet {
        let hits = rules.iter().map(|_| Arc::default()).collect();
        AclSet {
            compiled: rules.iter().map(Compiled::new).collect(),
            rules,
            default,
            hits,
            default_hits: Arc::default(),
        }
    }

    /// A set without rules that allows everything.
    pub fn allow_all() -> AclSet {
        AclSet::new(Vec::new(), Decision::Allow)
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[AclRule] {
        &self.rules
    }

    /// The default action.
    pub fn default_action(&self) -> Decision {
        self.default
    }

    /// The index of the first rule `flow` going `direction` matches (`None`: the default
    /// applies), and the decision.
    pub fn evaluate(&self, flow: &FlowKey, direction: Direction) -> (Option<usize>, Decision) {
        let flow = Flow::new(flow, direction);
        match self.compiled.iter().position(|r| r.matches(&flow)) {
            Some(i) => (Some(i), self.rules[i].action),
            None => (None, self.default),
        }
    }

    /// Packets rule `index` decided so far (as published by the workers); 0 for no such rule.
    pub fn hits(&self, index: usize) -> u64 {
        self.hits
            .get(index)
            .map_or(0, |h| h.load(Ordering::Relaxed))
    }

    /// Packets the default action decided so far.
    pub fn default_hits(&self) -> u64 {
        self.default_hits.load(Ordering::Relaxed)
    }

    /// Whether this set allows everything without looking (no rules, default allow).
    pub fn is_allow_all(&self) -> bool {
        self.rules.is_empty() && self.default == Decision::Allow
    }

    /// Takes over the counters of `old`'s rules that are also in this set, identical (the
    /// first such rule each), and of the default action if it is the same.
    fn carry_counters_from(&mut self, old: &AclSet) {
        let mut taken = vec![false; old.rules.len()];
        for (rule, hits) in self.rules.iter().zip(&mut self.hits) {
            let same = old
                .rules
                .iter()
                .enumerate()
                .position(|(j, r)| !taken[j] && r == rule);
            if let Some(j) = same {
                taken[j] = true;
                *hits = old.hits[j].clone();
            }
        }
        if self.default == old.default {
            self.default_hits = old.default_hits.clone();
        }
    }
}

#[derive(Debug)]
struct Shared {
    /// Bumped (after the set is stored) by every replacement.
    generation: AtomicU64,
    set: RwLock<Arc<AclSet>>,
}

/// A shared, replaceable [`AclSet`]: keep one to replace the rules and read the counters,
/// hand [`Acl::policy`] to the engine.
#[derive(Debug, Clone)]
pub struct Acl {
    shared: Arc<Shared>,
}

impl Acl {
    /// Starts with `set`.
    pub fn new(set: AclSet) -> Acl {
        Acl {
            shared: Arc::new(Shared {
                generation: AtomicU64::new(0),
                set: RwLock::new(Arc::new(set)),
            }),
        }
    }

    /// The rules in force.
    pub fn current(&self) -> Arc<AclSet> {
        self.shared
            .set
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `set` in force: every worker uses it from its next packet on. Rules that stay
    /// the same keep their hit counters.
    pub fn replace(&self, mut set: AclSet) {
        let mut slot = self
            .shared
            .set
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        set.carry_counters_from(&slot);
        *slot = Arc::new(set);
        drop(slot);
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// A policy judging by these rules, for an engine (each worker gets a clone).
    pub fn policy(&self) -> AclPolicy {
        let (current, generation) = self.snapshot();
        AclPolicy {
            shared: self.shared.clone(),
            local: vec![0; current.rules.len()],
            current,
            generation,
            local_default: 0,
        }
    }

    fn snapshot(&self) -> (Arc<AclSet>, u64) {
        // The generation first: a replacement between the two reads is seen again later.
        let generation = self.shared.generation.load(Ordering::Acquire);
        (self.current(), generation)
    }
}

/// One worker's view of an [`Acl`]: see the [module docs](self).
#[derive(Debug)]
pub struct AclPolicy {
    shared: Arc<Shared>,
    current: Arc<AclSet>,
    generation: u64,
    /// Hits not yet published, per rule of `current`.
    local: Vec<u64>,
    local_default: u64,
}

impl AclPolicy {
    /// Adds the hits counted since the last time to the set's shared counters.
    fn publish(&mut self) {
        for (hits, shared) in self.local.iter_mut().zip(&self.current.hits) {
            if *hits != 0 {
                shared.fetch_add(std::mem::take(hits), Ordering::Relaxed);
            }
        }
        if self.local_default != 0 {
            let n = std::mem::take(&mut self.local_default);
            self.current.default_hits.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Picks up a replaced set (publishing the old one's hits first).
    fn refresh(&mut self) {
        self.publish();
        let acl = Acl {
            shared: self.shared.clone(),
        };
        let (current, generation) = acl.snapshot();
        self.local.clear();
        self.local.resize(current.rules.len(), 0);
        self.current = current;
        self.generation = generation;
    }
}

impl Clone for AclPolicy {
    /// A view of the same rules with counts of its own.
    fn clone(&self) -> AclPolicy {
        Acl {
            shared: self.shared.clone(),
        }
        .policy()
    }
}

impl Policy for AclPolicy {
    fn judges(&mut self) -> bool {
        if self.shared.generation.load(Ordering::Acquire) != self.generation {
            self.refresh();
        }
        !self.current.is_allow_all()
    }

    fn judge(&mut self, flow: &FlowKey, ctx: &PolicyContext) -> Decision {
        if self.shared.generation.load(Ordering::Acquire) != self.generation {
            self.refresh();
        }
        let (rule, decision) = self.current.evaluate(flow, ctx.direction);
        match rule.and_then(|i| self.local.get_mut(i)) {
            Some(hits) => *hits += 1,
            None => self.local_default += 1,
        }
        decision
    }

    fn on_tick(&mut self, _now_ms: u64) {
        self.publish();
        if self.shared.generation.load(Ordering::Acquire) != self.generation {
            self.refresh();
        }
    }
}

impl Drop for AclPolicy {
    fn drop(&mut self) {
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// Addresses from a small pool, so that networks and addresses often meet.
    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u8..4, any::<u8>()).prop_map(|(a, b)| IpAddr::V4(Ipv4Addr::new(100, 96, a, b))),
            (0u16..4, any::<u16>())
                .prop_map(|(a, b)| IpAddr::V6(Ipv6Addr::new(0xfd00, 0x100, 0x96, a, 0, 0, 0, b))),
        ]
    }

    fn network() -> impl Strategy<Value = Option<Cidr>> {
        proptest::option::of((address(), 0u8..=128).prop_map(|(a, len)| {
            let len = if a.is_ipv4() { len % 33 } else { len };
            Cidr::containing(a, len).unwrap()
        }))
    }

    fn ports() -> impl Strategy<Value = Option<PortRange>> {
        proptest::option::of((0u16..100, 0u16..100).prop_map(|(a, b)| PortRange::new(a, b)))
    }

    fn rule() -> impl Strategy<Value = AclRule> {
        (
            network(),
            network(),
            proptest::option::of(prop_oneof![Just(6u8), Just(17), Just(1), Just(58)]),
            ports(),
            ports(),
            proptest::option::of(prop_oneof![
                Just(Direction::Egress),
                Just(Direction::Ingress)
            ]),
        )
            .prop_map(
                |(source, destination, protocol, sp, dp, direction)| AclRule {
                    action: Decision::Drop,
                    direction,
                    source,
                    destination,
                    protocol,
                    source_ports: sp,
                    destination_ports: dp,
                },
            )
    }

    fn flow() -> impl Strategy<Value = FlowKey> {
        (
            address(),
            address(),
            prop_oneof![Just(6u8), Just(17), Just(1), Just(58), Just(47)],
            0u16..100,
            0u16..100,
            any::<bool>(),
        )
            .prop_map(
                |(src, dst, protocol, src_port, dst_port, fragment)| FlowKey {
                    src,
                    dst,
                    protocol,
                    src_port,
                    dst_port,
                    fragment,
                },
            )
    }

    proptest! {
        /// The compiled form decides exactly as the rules read one by one.
        #[test]
        fn compiled_rules_decide_as_the_reference(
            rules in proptest::collection::vec(rule(), 0..12),
            flows in proptest::collection::vec(flow(), 1..16),
        ) {
            let set = AclSet::new(rules.clone(), Decision::Allow);
            for f in &flows {
                for direction in [Direction::Egress, Direction::Ingress] {
                    let reference = rules.iter().position(|r| r.matches(f, direction));
                    prop_assert_eq!(set.evaluate(f, direction).0, reference, "{:?}", f);
                }
            }
        }
    }
}
