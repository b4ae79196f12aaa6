//! The VXLAN forwarding database of one VNI in L2 mode: which VTEP each inner MAC address
//! sits behind, learned from the source addresses of received frames, the way the Linux
//! bridge and vxlan drivers learn.
//!
//! # Model
//!
//! An entry maps a unicast MAC address to the underlay endpoint (VTEP address and port) it
//! was last seen behind, and remembers when (`last_seen`, milliseconds on the caller's
//! clock). [`Fdb::learn`] runs for every received frame: it creates the entry, moves it to
//! a new VTEP, or refreshes its time. An entry lives for `ageing_ms` after it was last
//! learned (as in Linux, it is expired once `now - last_seen >= ageing_ms`; an `ageing_ms`
//! of 0 means entries never age, like `ip link add ... type vxlan ageing 0`). Lookups do not
//! refresh entries. Aged entries are removed lazily by [`Fdb::lookup`] and in bulk by
//! [`Fdb::expire`], which the caller runs periodically. When the table is full, learning a
//! new address evicts the least recently learned entry.
//!
//! Time comes in as an argument and never runs backward inside the table: a `now_ms` older
//! than one already seen is taken as the latest one seen.
//!
//! # Structure and invariants
//!
//! Entries live in `slots`, a `Vec` preallocated for `max_entries` that never grows past
//! it. A `HashMap` from MAC to slot index finds them (std's SipHash with a random key, so a
//! peer choosing source MACs cannot degrade it to a list). Live slots form an intrusive
//! doubly linked list (`prev`/`next` indices) in recency order; freed slots form a singly
//! linked free list through `next`.
//!
//! 1. `index` maps every live MAC to the slot holding it, and only those: `index.len()` is
//!    the number of live slots, at most `max_entries`.
//! 2. The live list runs from `head` (most recently learned) to `tail` (least recently
//!    learned). Because every learn stamps the (monotonic) current time and moves its entry
//!    to the head, `last_seen` never increases from head to tail: the aged entries are
//!    exactly a suffix of the list, and [`Fdb::expire`] pops them from the tail in
//!    O(number expired); eviction takes the tail in O(1).
//! 3. Every slot of `slots` is either live or on the free list, never both.
//!
//! A learn is one hash probe plus a few index stores. Neither `slots` nor `index`
//! reallocates after [`Fdb::new`]: `index` is created with room for twice `max_entries`,
//! so the deletions of a churning table can always be cleaned up by rehashing in place.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::wire::EthernetAddress;

/// The end of a list (no slot).
const NIL: u32 = u32::MAX;

/// The largest table: slot indices are `u32`, with [`NIL`] reserved.
const MAX_ENTRIES_LIMIT: usize = (u32::MAX - 1) as usize;

/// Limits of a forwarding database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbConfig {
    /// The most entries the table holds (default 4096). When it is full, learning a new
    /// address evicts the least recently learned one. 0 disables learning.
    pub max_entries: usize,
    /// How long an entry lives after it was last learned, in milliseconds (default
    /// 300 000, the Linux default of 300 s). 0 means entries never age.
    pub ageing_ms: u64,
}

impl Default for FdbConfig {
    fn default() -> FdbConfig {
        FdbConfig {
            max_entries: 4096,
            ageing_ms: 300_000,
        }
    }
}

/// What [`Fdb::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Learned {
    /// A new entry was created (possibly evicting the least recently learned one, or
    /// replacing an aged entry for the same address).
    New,
    /// The address was known behind another endpoint and now points to the new one.
    Moved,
    /// The address was known behind this endpoint; its time was refreshed.
    Refreshed,
    /// Nothing was learned: the address is multicast, broadcast or all-zero, or learning
    /// is disabled (`max_entries` 0).
    Ignored,
}

/// One entry, live or free.
#[derive(Debug, Clone, Copy)]
struct Slot {
    mac: EthernetAddress,
    endpoint: SocketAddr,
    last_seen: u64,
    /// The more recently learned neighbour in the live list, or [`NIL`] at the head.
    prev: u32,
    /// The less recently learned neighbour in the live list (or the next free slot), or
    /// [`NIL`] at the end.
    next: u32,
}

/// A MAC learning table with ageing and least-recently-learned eviction (see the [module
/// docs](self)).
#[derive(Debug, Clone)]
pub struct Fdb {
    config: FdbConfig,
    index: HashMap<EthernetAddress, u32>,
    slots: Vec<Slot>,
    head: u32,
    tail: u32,
    free: u32,
    /// The latest time seen: the table's clock.
    now: u64,
}

impl Fdb {
    /// An empty table with room for `config.max_entries` entries (capped at `u32::MAX - 1`),
    /// allocated now.
    pub fn new(config: FdbConfig) -> Fdb {
        let config = FdbConfig {
            max_entries: config.max_entries.min(MAX_ENTRIES_LIMIT),
            ..config
        };
        Fdb {
            config,
            index: HashMap::with_capacity(config.max_entries.saturating_mul(2)),
            slots: Vec::with_capacity(config.max_entries),
            head: NIL,
            tail: NIL,
            free: NIL,
            now: 0,
        }
    }

    /// The limits this table was built with (`max_entries` as capped by [`Fdb::new`]).
    pub fn config(&self) -> FdbConfig {
        self.config
    }

    /// Learns (or refreshes) `mac` behind the VTEP `endpoint` at `now_ms`.
    ///
    /// Multicast (broadcast included) and all-zero addresses are ignored. A known address
    /// is refreshed or moved to `endpoint`; an unknown one gets a new entry, evicting the
    /// least recently learned entry if the table is full. O(1).
    pub fn learn(&mut self, mac: EthernetAddress, endpoint: SocketAddr, now_ms: u64) -> Learned {
        if mac.is_multicast() || mac == EthernetAddress::default() || self.config.max_entries == 0 {
            return Learned::Ignored;
        }
        let now = self.advance(now_ms);
        if let Some(&i) = self.index.get(&mac) {
            let expired = self.is_expired(self.slots[i as usize].last_seen, now);
            let slot = &mut self.slots[i as usize];
            let learned = if expired {
                Learned::New
            } else if slot.endpoint != endpoint {
                Learned::Moved
            } else {
                Learned::Refreshed
            };
            slot.endpoint = endpoint;
            slot.last_seen = now;
            self.unlink(i);
            self.push_front(i);
            return learned;
        }
        let i = self.take_slot();
        self.slots[i as usize] = Slot {
            mac,
            endpoint,
            last_seen: now,
            prev: NIL,
            next: NIL,
        };
        self.push_front(i);
        self.index.insert(mac, i);
        Learned::New
    }

    /// The VTEP `mac` was learned behind, if the entry has not aged at `now_ms`. An aged
    /// entry is removed here. Does not refresh the entry.
    pub fn lookup(&mut self, mac: &EthernetAddress, now_ms: u64) -> Option<SocketAddr> {
        let now = self.advance(now_ms);
        let i = *self.index.get(mac)?;
        let slot = self.slots[i as usize];
        if self.is_expired(slot.last_seen, now) {
            self.remove(i);
            return None;
        }
        Some(slot.endpoint)
    }

    /// Removes every entry aged at `now_ms` and returns how many. O(number removed).
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let now = self.advance(now_ms);
        let mut removed = 0;
        while self.tail != NIL && self.is_expired(self.slots[self.tail as usize].last_seen, now) {
            self.remove(self.tail);
            removed += 1;
        }
        removed
    }

    /// Removes every entry behind `endpoint` (e.g. when that peer goes away) and returns how
    /// many. O(len).
    pub fn remove_endpoint(&mut self, endpoint: SocketAddr) -> usize {
        let mut removed = 0;
        let mut cursor = self.head;
        while cursor != NIL {
            let slot = self.slots[cursor as usize];
            if slot.endpoint == endpoint {
                self.remove(cursor);
                removed += 1;
            }
            cursor = slot.next;
        }
        removed
    }

    /// The number of entries, aged ones not yet removed included.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Every entry as (MAC, VTEP, last seen in ms), most recently learned first. Aged
    /// entries not yet removed are included: run [`Fdb::expire`] first to drop them.
    pub fn entries(&self) -> impl Iterator<Item = (EthernetAddress, SocketAddr, u64)> + '_ {
        let mut cursor = self.head;
        std::iter::from_fn(move || {
            let slot = self.slots.get(cursor as usize)?;
            cursor = slot.next;
            Some((slot.mac, slot.endpoint, slot.last_seen))
        })
    }

    /// Moves the clock to `now_ms` unless that is in its past; returns the clock.
    fn advance(&mut self, now_ms: u64) -> u64 {
        self.now = self.now.max(now_ms);
        self.now
    }

    fn is_expired(&self, last_seen: u64, now: u64) -> bool {
        self.config.ageing_ms != 0 && now.saturating_sub(last_seen) >= self.config.ageing_ms
    }

    /// A slot for a new entry, unlinked and not in the index: a free one, a never used one,
    /// or the least recently learned live one (evicted). Needs `max_entries` > 0, which
    /// [`Fdb::learn`] checks first.
    fn take_slot(&mut self) -> u32 {
        if self.free != NIL {
            let i = self.free;
            self.free = self.slots[i as usize].next;
            return i;
        }
        if self.slots.len() < self.config.max_entries {
            let i = self.slots.len() as u32;
            self.slots.push(Slot {
                mac: EthernetAddress::default(),
                endpoint: SocketAddr::from(([0, 0, 0, 0], 0)),
                last_seen: 0,
                prev: NIL,
                next: NIL,
            });
            return i;
        }
        // Full: every slot is live, so the list is not empty.
        let i = self.tail;
        self.unlink(i);
        self.index.remove(&self.slots[i as usize].mac);
        i
    }

    /// Removes live slot `i` from the list and the index and frees it.
    fn remove(&mut self, i: u32) {
        self.unlink(i);
        self.index.remove(&self.slots[i as usize].mac);
        self.slots[i as usize].next = self.free;
        self.free = i;
    }

    /// Takes live slot `i` out of the list (its links are left dangling).
    fn unlink(&mut self, i: u32) {
        let Slot { prev, next, .. } = self.slots[i as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    /// Links unlinked slot `i` at the head of the list.
    fn push_front(&mut self, i: u32) {
        let old_head = self.head;
        {
            let slot = &mut self.slots[i as usize];
            slot.prev = NIL;
            slot.next = old_head;
        }
        if old_head == NIL {
            self.tail = i;
        } else {
            self.slots[old_head as usize].prev = i;
        }
        self.head = i;
    }
}

#[cfg(test)]
pub(crate) mod model {
    //! The obvious FDB, for the tests (here and in the property tests).
    use super::Learned;
    use crate::wire::EthernetAddress;
    use std::net::SocketAddr;

    /// The obvious FDB, for the tests (here and in the property tests): a vector in recency
    /// order, most recent first.
    pub(crate) struct Model {
        max_entries: usize,
        ageing_ms: u64,
        pub(crate) now: u64,
        pub(crate) entries: Vec<(EthernetAddress, SocketAddr, u64)>,
    }

    impl Model {
        /// An empty model with the FDB's bounds.
        pub(crate) fn new(max_entries: usize, ageing_ms: u64) -> Model {
            Model {
                max_entries,
                ageing_ms,
                now: 0,
                entries: Vec::new(),
            }
        }

        fn aged(&self, last_seen: u64) -> bool {
            self.ageing_ms != 0 && self.now - last_seen >= self.ageing_ms
        }

        pub(crate) fn learn(&mut self, m: EthernetAddress, ep: SocketAddr, now: u64) -> Learned {
            if m.is_multicast() || m == EthernetAddress::default() || self.max_entries == 0 {
                return Learned::Ignored;
            }
            self.now = self.now.max(now);
            let result = match self.entries.iter().position(|e| e.0 == m) {
                Some(at) => {
                    let (_, old, seen) = self.entries.remove(at);
                    if self.aged(seen) {
                        Learned::New
                    } else if old != ep {
                        Learned::Moved
                    } else {
                        Learned::Refreshed
                    }
                }
                None => {
                    if self.entries.len() == self.max_entries {
                        self.entries.pop();
                    }
                    Learned::New
                }
            };
            self.entries.insert(0, (m, ep, self.now));
            result
        }

        pub(crate) fn lookup(&mut self, m: &EthernetAddress, now: u64) -> Option<SocketAddr> {
            self.now = self.now.max(now);
            let at = self.entries.iter().position(|e| e.0 == *m)?;
            let (_, ep, seen) = self.entries[at];
            if self.aged(seen) {
                self.entries.remove(at);
                return None;
            }
            Some(ep)
        }

        pub(crate) fn expire(&mut self, now: u64) -> usize {
            self.now = self.now.max(now);
            let before = self.entries.len();
            let (now, ageing) = (self.now, self.ageing_ms);
            self.entries.retain(|e| ageing == 0 || now - e.2 < ageing);
            before - self.entries.len()
        }

        pub(crate) fn remove_endpoint(&mut self, ep: SocketAddr) -> usize {
            let before = self.entries.len();
            self.entries.retain(|e| e.1 != ep);
            before - self.entries.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::model::Model;
    use super::*;

    fn mac(n: u32) -> EthernetAddress {
        let b = n.to_be_bytes();
        EthernetAddress([0x02, 0, b[0], b[1], b[2], b[3]])
    }

    fn vtep(n: u8) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, n], 8472))
    }

    fn fdb(max_entries: usize, ageing_ms: u64) -> Fdb {
        Fdb::new(FdbConfig {
            max_entries,
            ageing_ms,
        })
    }

    fn listing(f: &Fdb) -> Vec<(EthernetAddress, SocketAddr, u64)> {
        f.entries().collect()
    }

    #[test]
    fn defaults() {
        let c = FdbConfig::default();
        assert_eq!((c.max_entries, c.ageing_ms), (4096, 300_000));
        let f = Fdb::new(c);
        assert!(f.is_empty());
        assert_eq!(f.config(), c);
        assert_eq!(f.entries().count(), 0);
    }

    #[test]
    fn learn_and_lookup() {
        let mut f = fdb(16, 1000);
        assert_eq!(f.learn(mac(1), vtep(1), 10), Learned::New);
        assert_eq!(f.learn(mac(2), vtep(2), 20), Learned::New);
        assert_eq!(f.lookup(&mac(1), 30), Some(vtep(1)));
        assert_eq!(f.lookup(&mac(2), 30), Some(vtep(2)));
        assert_eq!(f.lookup(&mac(3), 30), None);
        assert_eq!(f.learn(mac(1), vtep(1), 40), Learned::Refreshed);
        assert_eq!(f.len(), 2);
        assert_eq!(
            listing(&f),
            vec![(mac(1), vtep(1), 40), (mac(2), vtep(2), 20)]
        );
        // IPv6 endpoints are endpoints like any other.
        let v6: SocketAddr = "[fd00:198:18::9]:4789".parse().unwrap();
        assert_eq!(f.learn(mac(9), v6, 50), Learned::New);
        assert_eq!(f.lookup(&mac(9), 50), Some(v6));
    }

    #[test]
    fn learning_from_another_vtep_moves_the_entry() {
        let mut f = fdb(16, 1000);
        f.learn(mac(1), vtep(1), 0);
        assert_eq!(f.learn(mac(1), vtep(2), 5), Learned::Moved);
        assert_eq!(f.lookup(&mac(1), 5), Some(vtep(2)));
        assert_eq!(f.len(), 1);
        // Same address, another port: also a move.
        let other_port = SocketAddr::from(([198, 18, 0, 2], 4789));
        assert_eq!(f.learn(mac(1), other_port, 6), Learned::Moved);
        assert_eq!(f.learn(mac(1), other_port, 7), Learned::Refreshed);
    }

    #[test]
    fn entries_age() {
        let mut f = fdb(16, 1000);
        f.learn(mac(1), vtep(1), 100);
        assert_eq!(f.lookup(&mac(1), 1099), Some(vtep(1)));
        // Lookups do not refresh; learning does.
        assert_eq!(f.lookup(&mac(1), 1100), None);
        assert!(f.is_empty(), "the aged entry is removed by the lookup");
        f.learn(mac(2), vtep(2), 2000);
        f.learn(mac(2), vtep(2), 2900);
        assert_eq!(f.lookup(&mac(2), 3899), Some(vtep(2)));
        // An aged entry learned again counts as new, even behind another VTEP.
        assert_eq!(f.learn(mac(2), vtep(3), 3900), Learned::New);
        assert_eq!(f.lookup(&mac(2), 3900), Some(vtep(3)));
    }

    #[test]
    fn zero_ageing_never_ages() {
        let mut f = fdb(4, 0);
        f.learn(mac(1), vtep(1), 0);
        assert_eq!(f.lookup(&mac(1), u64::MAX), Some(vtep(1)));
        assert_eq!(f.expire(u64::MAX), 0);
        assert_eq!(f.learn(mac(1), vtep(1), u64::MAX), Learned::Refreshed);
    }

    #[test]
    fn time_does_not_run_backward() {
        let mut f = fdb(4, 100);
        f.learn(mac(1), vtep(1), 1000);
        f.learn(mac(2), vtep(2), 500); // taken as 1000
        assert_eq!(listing(&f)[0], (mac(2), vtep(2), 1000));
        assert_eq!(f.lookup(&mac(1), 0), Some(vtep(1)));
        assert_eq!(f.expire(1100), 2);
    }

    #[test]
    fn full_table_evicts_the_least_recently_learned() {
        let mut f = fdb(3, 1000);
        f.learn(mac(1), vtep(1), 1);
        f.learn(mac(2), vtep(1), 2);
        f.learn(mac(3), vtep(1), 3);
        f.learn(mac(1), vtep(1), 4); // mac 2 is now the least recently learned
        assert_eq!(
            f.lookup(&mac(2), 4),
            Some(vtep(1)),
            "lookups do not count as use"
        );
        assert_eq!(f.learn(mac(4), vtep(2), 5), Learned::New);
        assert_eq!(f.len(), 3);
        assert_eq!(f.lookup(&mac(2), 5), None);
        assert_eq!(
            listing(&f),
            vec![
                (mac(4), vtep(2), 5),
                (mac(1), vtep(1), 4),
                (mac(3), vtep(1), 3)
            ]
        );
        assert_eq!(f.learn(mac(5), vtep(2), 6), Learned::New);
        assert_eq!(f.lookup(&mac(3), 6), None);
    }

    #[test]
    fn group_and_zero_addresses_are_ignored() {
        let mut f = fdb(4, 1000);
        for m in [
            EthernetAddress::BROADCAST,
            EthernetAddress([0x01, 0x00, 0x5e, 0, 0, 1]),
            EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
            EthernetAddress([0x03, 0, 0, 0, 0, 0]),
            EthernetAddress([0; 6]),
        ] {
            assert_eq!(f.learn(m, vtep(1), 0), Learned::Ignored, "{m}");
            assert_eq!(f.lookup(&m, 0), None);
        }
        assert!(f.is_empty());
        let mut off = fdb(0, 1000);
        assert_eq!(off.learn(mac(1), vtep(1), 0), Learned::Ignored);
        assert_eq!(off.lookup(&mac(1), 0), None);
        assert_eq!(off.expire(10), 0);
    }

    #[test]
    fn expire_counts_the_aged_entries() {
        let mut f = fdb(16, 100);
        for n in 0..10 {
            f.learn(mac(n), vtep(1), u64::from(n) * 10);
        }
        f.learn(mac(0), vtep(1), 95); // refreshed: the youngest now
                                      // Learned at: mac 1 10, mac 2 20, ..., mac 9 90, mac 0 95.
        assert_eq!(f.expire(109), 0);
        assert_eq!(f.expire(110), 1); // mac 1 is 100 old
        assert_eq!(f.len(), 9);
        assert_eq!(f.expire(130), 2); // macs 2 and 3
        assert_eq!(f.len(), 7);
        assert_eq!(f.lookup(&mac(4), 130), Some(vtep(1)));
        assert_eq!(f.expire(1000), 7);
        assert!(f.is_empty());
        assert_eq!(f.expire(2000), 0);
        // Freed slots are reused.
        for n in 0..16 {
            assert_eq!(f.learn(mac(100 + n), vtep(2), 2000), Learned::New);
        }
        assert_eq!(f.len(), 16);
    }

    #[test]
    fn remove_endpoint_drops_its_entries() {
        let mut f = fdb(16, 1000);
        for n in 0..9 {
            f.learn(mac(n), vtep((n % 3) as u8), u64::from(n));
        }
        assert_eq!(f.remove_endpoint(vtep(1)), 3);
        assert_eq!(f.remove_endpoint(vtep(1)), 0);
        assert_eq!(f.remove_endpoint(vtep(7)), 0);
        assert_eq!(f.len(), 6);
        assert!(f.entries().all(|(_, ep, _)| ep != vtep(1)));
        assert_eq!(f.lookup(&mac(4), 10), None);
        assert_eq!(f.lookup(&mac(3), 10), Some(vtep(0)));
        assert_eq!(f.remove_endpoint(vtep(0)) + f.remove_endpoint(vtep(2)), 6);
        assert!(f.is_empty());
        assert_eq!(f.learn(mac(1), vtep(1), 20), Learned::New);
        assert_eq!(listing(&f), vec![(mac(1), vtep(1), 20)]);
    }

    #[test]
    fn churn_does_not_reallocate() {
        let mut f = fdb(64, 50);
        let slots = f.slots.capacity();
        let index = f.index.capacity();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for t in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f.learn(mac((x % 5000) as u32), vtep((x >> 32) as u8 % 4), t / 8);
            if t % 97 == 0 {
                f.expire(t / 8);
            }
            if t % 1001 == 0 {
                f.remove_endpoint(vtep(1));
            }
        }
        assert_eq!(f.slots.capacity(), slots);
        // The index never grows. (`HashMap::capacity` counts the room left, which deleted
        // entries use up until the table is rehashed in place, so it may read lower.)
        assert!(
            f.index.capacity() <= index,
            "{} > {index}",
            f.index.capacity()
        );
        assert!(f.len() <= 64);
    }

    #[test]
    fn matches_a_naive_model() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (max_entries, ageing_ms) in [(8, 60), (1, 30), (5, 0), (0, 10), (32, 500)] {
            let mut f = fdb(max_entries, ageing_ms);
            let mut m = Model::new(max_entries, ageing_ms);
            let mut now = 0u64;
            for step in 0..20_000 {
                let r = next();
                // Mostly forward, sometimes a stale timestamp.
                now += r % 7;
                let t = if r % 53 == 0 {
                    now.saturating_sub(40)
                } else {
                    now
                };
                // A few group addresses among the unicast ones.
                let a = (r >> 8) % 24;
                let addr = if a == 23 {
                    EthernetAddress([0x01, 0, 0x5e, 0, 0, (r >> 16) as u8])
                } else {
                    mac(a as u32)
                };
                let ep = vtep(((r >> 20) % 4) as u8);
                match (r >> 28) % 16 {
                    0..=8 => assert_eq!(f.learn(addr, ep, t), m.learn(addr, ep, t), "{step}"),
                    9..=13 => assert_eq!(f.lookup(&addr, t), m.lookup(&addr, t), "{step}"),
                    14 => assert_eq!(f.expire(t), m.expire(t), "{step}"),
                    _ => assert_eq!(f.remove_endpoint(ep), m.remove_endpoint(ep), "{step}"),
                }
                assert_eq!(f.len(), m.entries.len(), "{step}");
                assert_eq!(f.is_empty(), m.entries.is_empty());
                assert_eq!(listing(&f), m.entries, "{step}");
            }
        }
    }
}
