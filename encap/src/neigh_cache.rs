//! The neighbour entries of one VNI learnt from traffic (`[vxlan] neigh_learning`): which
//! MAC each overlay IP address announced last, for the ARP/ND proxy ([`crate::neigh::proxy`]).
//!
//! # Model
//!
//! The same as the learned FDB's ([`crate::fdb`]): an entry maps a unicast IP address to
//! the MAC it was last announced with ([`crate::neigh::binding`]) and remembers when
//! (`last_seen`, milliseconds on the caller's clock). [`NeighCache::learn`] creates, moves
//! or refreshes an entry; an entry lives for `ageing_ms` after it was last learned
//! (expired once `now - last_seen >= ageing_ms`; 0 means never); lookups do not refresh.
//! Aged entries are removed lazily by [`NeighCache::lookup`] and in bulk by
//! [`NeighCache::expire`]. When the table is full, learning a new address evicts the least
//! recently learned entry. Time never runs backward inside the table.
//!
//! # Structure
//!
//! A map from address to entry, and a queue of learn events in the order they happened,
//! each stamped with a sequence number. An event is current if its address's entry still
//! carries its number; a refresh leaves the older event behind as stale. Because learn
//! times are monotonic, the current events are in `last_seen` order from the front: the
//! least recently learned entry, and every aged one, is found by popping stale events off
//! the front, in amortised O(1). The queue is compacted (stale events dropped) whenever it
//! holds twice as many events as the table may hold entries, so it stays bounded too.
//!
//! Learning happens for ARP and neighbour advertisement frames only, so the structure
//! favours simplicity over the FDB's allocation-free slots.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use crate::fdb::Learned;
use crate::wire::EthernetAddress;

/// The largest table (a bound on what a configuration may ask for).
const MAX_ENTRIES_LIMIT: usize = 1 << 24;

/// One learnt binding.
#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: EthernetAddress,
    last_seen: u64,
    /// The sequence number of the learn event that set it.
    seq: u64,
}

/// A bounded, ageing table of IP -> MAC bindings learnt from traffic (see the [module
/// docs](self)).
#[derive(Debug, Clone)]
pub struct NeighCache {
    max_entries: usize,
    ageing_ms: u64,
    entries: HashMap<IpAddr, Entry>,
    /// Learn events, oldest first: (address, sequence number).
    events: VecDeque<(IpAddr, u64)>,
    seq: u64,
    /// The latest time seen: the table's clock.
    now: u64,
}

impl NeighCache {
    /// An empty table for at most `max_entries` entries (0 disables learning) that live for
    /// `ageing_ms` after they were last learned (0: forever).
    pub fn new(max_entries: usize, ageing_ms: u64) -> NeighCache {
        NeighCache {
            max_entries: max_entries.min(MAX_ENTRIES_LIMIT),
            ageing_ms,
            entries: HashMap::new(),
            events: VecDeque::new(),
            seq: 0,
            now: 0,
        }
    }

    /// Learns (or refreshes) that `ip` is at `mac`, at `now_ms`.
    ///
    /// A multicast or all-zero MAC is ignored (so is everything when `max_entries` is 0);
    /// the caller checks the address ([`crate::neigh::binding`] does).
    pub fn learn(&mut self, ip: IpAddr, mac: EthernetAddress, now_ms: u64) -> Learned {
        if mac.is_multicast() || mac == EthernetAddress::default() || self.max_entries == 0 {
            return Learned::Ignored;
        }
        let now = self.advance(now_ms);
        self.seq += 1;
        let seq = self.seq;
        let ageing_ms = self.ageing_ms;
        let learned = match self.entries.get_mut(&ip) {
            Some(entry) => {
                let learned = if expired(ageing_ms, entry.last_seen, now) {
                    Learned::New
                } else if entry.mac != mac {
                    Learned::Moved
                } else {
                    Learned::Refreshed
                };
                *entry = Entry {
                    mac,
                    last_seen: now,
                    seq,
                };
                learned
            }
            None => {
                while self.entries.len() >= self.max_entries {
                    if !self.evict_oldest() {
                        break;
                    }
                }
                self.entries.insert(
                    ip,
                    Entry {
                        mac,
                        last_seen: now,
                        seq,
                    },
                );
                Learned::New
            }
        };
        self.events.push_back((ip, seq));
        if self.events.len() >= self.max_entries.saturating_mul(2).max(16) {
            let entries = &self.entries;
            self.events
                .retain(|(ip, seq)| entries.get(ip).is_some_and(|e| e.seq == *seq));
        }
        learned
    }

    /// The MAC `ip` was learnt at, if the entry has not aged at `now_ms` (an aged entry is
    /// removed here). Does not refresh the entry.
    pub fn lookup(&mut self, ip: IpAddr, now_ms: u64) -> Option<EthernetAddress> {
        let now = self.advance(now_ms);
        let entry = *self.entries.get(&ip)?;
        if expired(self.ageing_ms, entry.last_seen, now) {
            self.entries.remove(&ip);
            return None;
        }
        Some(entry.mac)
    }

    /// Removes every entry aged at `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let now = self.advance(now_ms);
        let mut removed = 0;
        while let Some(&(ip, seq)) = self.events.front() {
            match self.entries.get(&ip) {
                Some(e) if e.seq == seq => {
                    if !expired(self.ageing_ms, e.last_seen, now) {
                        break;
                    }
                    self.entries.remove(&ip);
                    removed += 1;
                }
                _ => {}
            }
            self.events.pop_front();
        }
        removed
    }

    /// Removes the entry for `ip`; returns whether there was one.
    pub fn remove(&mut self, ip: IpAddr) -> bool {
        self.entries.remove(&ip).is_some()
    }

    /// The number of entries, aged ones not yet removed included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry as (address, MAC, last seen in ms), sorted by address. Aged entries not
    /// yet removed are included: run [`NeighCache::expire`] first to drop them.
    pub fn entries(&self) -> Vec<(IpAddr, EthernetAddress, u64)> {
        let mut all: Vec<_> = self
            .entries
            .iter()
            .map(|(ip, e)| (*ip, e.mac, e.last_seen))
            .collect();
        all.sort_unstable_by_key(|(ip, _, _)| *ip);
        all
    }

    /// Moves the clock to `now_ms` unless that is in its past; returns the clock.
    fn advance(&mut self, now_ms: u64) -> u64 {
        self.now = self.now.max(now_ms);
        self.now
    }

    /// Removes the least recently learned entry; false if there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((ip, seq)) = self.events.pop_front() {
            if self.entries.get(&ip).is_some_and(|e| e.seq == seq) {
                self.entries.remove(&ip);
                return true;
            }
        }
        // No current event left: only possible if the map and the queue disagree, which
        // they never do; clear rather than loop.
        let had = !self.entries.is_empty();
        self.entries.clear();
        had
    }
}

/// Whether an entry last seen at `last_seen` has aged at `now`.
fn expired(ageing_ms: u64, last_seen: u64, now: u64) -> bool {
    ageing_ms != 0 && now.saturating_sub(last_seen) >= ageing_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x6460_0000 + n))
    }

    fn mac(n: u8) -> EthernetAddress {
        EthernetAddress([0x02, 0, 0, 0xaa, 0, n])
    }

    #[test]
    fn learn_lookup_move_refresh_and_age() {
        let mut t = NeighCache::new(8, 1000);
        assert_eq!(t.learn(ip(1), mac(1), 0), Learned::New);
        assert_eq!(t.learn(ip(1), mac(1), 10), Learned::Refreshed);
        assert_eq!(t.learn(ip(1), mac(2), 20), Learned::Moved);
        assert_eq!(t.lookup(ip(1), 500), Some(mac(2)));
        assert_eq!(t.lookup(ip(2), 500), None);
        // Lookups do not refresh: aged 1000 ms after the last learn.
        assert_eq!(t.lookup(ip(1), 1019), Some(mac(2)));
        assert_eq!(t.lookup(ip(1), 1020), None);
        assert!(t.is_empty(), "removed when found aged");
        assert_eq!(t.learn(ip(1), mac(2), 1030), Learned::New);
        // Time does not run backward.
        assert_eq!(t.lookup(ip(1), 0), Some(mac(2)));
        assert_eq!(
            t.learn(ip(3), EthernetAddress::default(), 0),
            Learned::Ignored
        );
        assert_eq!(
            t.learn(ip(3), EthernetAddress([0x33, 0x33, 0, 0, 0, 1]), 0),
            Learned::Ignored
        );
        assert_eq!(
            NeighCache::new(0, 0).learn(ip(1), mac(1), 0),
            Learned::Ignored
        );
        assert!(t.remove(ip(1)) && !t.remove(ip(1)));
    }

    #[test]
    fn full_table_evicts_the_least_recently_learned() {
        let mut t = NeighCache::new(3, 0);
        for n in 1..=3 {
            t.learn(ip(n), mac(n as u8), u64::from(n));
        }
        // Refreshing 1 makes 2 the oldest.
        t.learn(ip(1), mac(1), 10);
        t.learn(ip(4), mac(4), 11);
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup(ip(2), 12), None);
        for n in [1, 3, 4] {
            assert_eq!(t.lookup(ip(n), 12), Some(mac(n as u8)), "{n}");
        }
        // Never ages with ageing 0.
        assert_eq!(t.lookup(ip(3), u64::MAX), Some(mac(3)));
    }

    #[test]
    fn expire_removes_exactly_the_aged_entries() {
        let mut t = NeighCache::new(100, 100);
        for n in 0..10 {
            t.learn(ip(n), mac(n as u8), u64::from(n) * 10);
        }
        t.learn(ip(0), mac(0), 95); // refreshed: a stale event stays behind at the front
        assert_eq!(t.expire(150), 5, "learnt at 10..=50 have aged");
        assert_eq!(t.len(), 5);
        let left: Vec<IpAddr> = t.entries().iter().map(|e| e.0).collect();
        assert_eq!(left, [ip(0), ip(6), ip(7), ip(8), ip(9)]);
        assert_eq!(t.expire(1000), 5);
        assert!(t.is_empty());
    }

    #[test]
    fn churn_keeps_the_bounds_and_agrees_with_a_model() {
        let mut t = NeighCache::new(16, 50);
        // The model: (address, mac, last seen), least recently learned first, aged entries
        // kept until a lookup or an expiry removes them, as the table does.
        let mut model: Vec<(IpAddr, EthernetAddress, u64)> = Vec::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut now = 0u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now += x % 3;
            let a = ip((x >> 8) as u32 % 40);
            let m = mac((x >> 16) as u8 % 4 + 1);
            match (x >> 24) % 4 {
                0 | 1 => {
                    t.learn(a, m, now);
                    if let Some(at) = model.iter().position(|e| e.0 == a) {
                        model.remove(at);
                    } else if model.len() == 16 {
                        model.remove(0);
                    }
                    model.push((a, m, now));
                }
                2 => {
                    let want = match model.iter().position(|e| e.0 == a) {
                        Some(at) if now - model[at].2 >= 50 => {
                            model.remove(at);
                            None
                        }
                        Some(at) => Some(model[at].1),
                        None => None,
                    };
                    assert_eq!(t.lookup(a, now), want);
                }
                _ => {
                    t.expire(now);
                    model.retain(|e| now - e.2 < 50);
                }
            }
            assert_eq!(t.len(), model.len());
            assert!(t.events.len() <= 32);
        }
    }
}
