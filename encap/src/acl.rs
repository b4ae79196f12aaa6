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
        let has_ports = !flow.fragment;
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

/// An ordered rule list with a default action and a hit counter per rule.
#[derive(Debug)]
pub struct AclSet {
    rules: Vec<AclRule>,
    default: Decision,
    hits: Vec<Arc<AtomicU64>>,
    default_hits: Arc<AtomicU64>,
}

impl AclSet {
    /// `rules` in order (the first match wins), and what to do with a packet none matches.
    pub fn new(rules: Vec<AclRule>, default: Decision) -> AclSet {
        let hits = rules.iter().map(|_| Arc::default()).collect();
        AclSet {
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
        match self.rules.iter().position(|r| r.matches(flow, direction)) {
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
