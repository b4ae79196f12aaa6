//! Which subnet to take: flanneld's acquisition choice, pure (FLANNEL.md §1.4, §1.6).
//!
//! flannel `pkg/subnet/etcd/local_manager.go tryAcquireLease`, given the leases listed
//! under `<prefix>/subnets`:
//!
//! 1. A lease whose `PublicIP` is ours and whose subnet is compatible with the config
//!    (address within `SubnetMin..=SubnetMax`, prefix length `SubnetLen`, and the same for
//!    the IPv6 part, which must be present exactly when IPv6 is enabled) is reused. An
//!    incompatible one is deleted.
//! 2. Else the subnet recorded in the previous `subnet.env`, if it is compatible and free.
//! 3. Else a new subnet: walk `SubnetMin..=SubnetMax` in steps of the subnet size, keep
//!    the first 100 free ones and pick one uniformly at random; IPv6 is walked and picked
//!    independently. None free: out of subnets.
//!
//! "Free" means overlapping no listed lease, the ones about to be deleted included (as in
//! flanneld, which allocates from the same listing). [`choose_subnet`] only decides; the
//! caller deletes, writes (`Txn If(Version(key)=0)` for a new key) and on a lost race
//! lists again and calls it again.
//!
//! Where weft differs from flanneld, deliberately:
//! - every lease with our `PublicIP` is looked at, not only the first: the first compatible
//!   one is reused and all incompatible ones are deleted (flanneld deletes the first match
//!   if incompatible and never looks further);
//! - the previous subnet must not *overlap* a listed lease (flanneld: no lease with the
//!   exact same IPv4 subnet), and its IPv6 part is checked too; when IPv6 is disabled a
//!   recorded IPv6 subnet is ignored rather than disqualifying the IPv4 one;
//! - the walk jumps over a listed lease larger than a subnet instead of stepping through
//!   it one subnet at a time (same result, bounded time);
//! - reusing a reservation (a key without an etcd lease) is reported as such, so the
//!   caller rewrites it without a lease (flanneld attaches a 24 h lease to it: FLANNEL.md
//!   §1.4 quirk).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::lease::{LeaseAttrs, SubnetKey};
use super::net::{Ipv4Net, Ipv6Net};
use super::netconfig::{Ipv6NetworkConfig, NetworkConfig};

/// How many free subnets the random pick chooses among (flanneld: 100).
pub const CANDIDATES: usize = 100;

/// One key listed under `<prefix>/subnets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedLease {
    /// The subnet(s) its key names.
    pub key: SubnetKey,
    /// Its value.
    pub attrs: LeaseAttrs,
    /// True for a reservation: the key has no etcd lease (it never expires).
    pub reservation: bool,
}

/// The subnet to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Choice {
    /// Keep the listed lease that already carries our public IP: rewrite its value (with a
    /// fresh etcd lease, or without one if it is a reservation).
    Reuse {
        /// Its key, as listed.
        key: SubnetKey,
        /// True if it is a reservation (keep it without an etcd lease).
        reservation: bool,
    },
    /// Create a lease for the subnet recorded in the previous `subnet.env`.
    Previous(SubnetKey),
    /// Create a lease for a newly picked subnet.
    New(SubnetKey),
    /// No free subnet is left in `SubnetMin..=SubnetMax` (or its IPv6 counterpart).
    OutOfSubnets,
}

/// The result of [`choose_subnet`]: what to delete first, then what to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Leases with our public IP that no longer fit the config; delete them first.
    pub delete: Vec<SubnetKey>,
    /// The subnet to take.
    pub choice: Choice,
}

/// True if the IPv4 subnet fits the config (`isSubnetConfigCompat`).
pub fn ipv4_compatible(config: &NetworkConfig, subnet: &Ipv4Net) -> bool {
    (config.subnet_min..=config.subnet_max).contains(&subnet.addr())
        && subnet.prefix_len() == config.subnet_len
}

/// True if the IPv6 part fits the config (`isIPv6SubnetConfigCompat`): absent when IPv6
/// is disabled, present and within range with the right length when it is enabled.
pub fn ipv6_compatible(config: &NetworkConfig, subnet: Option<&Ipv6Net>) -> bool {
    match (&config.ipv6, subnet) {
        (None, s) => s.is_none(),
        (Some(_), None) => false,
        (Some(c), Some(s)) => {
            (c.subnet_min..=c.subnet_max).contains(&s.addr()) && s.prefix_len() == c.subnet_len
        }
    }
}

/// True if the whole key fits the config.
pub fn key_compatible(config: &NetworkConfig, key: &SubnetKey) -> bool {
    ipv4_compatible(config, &key.ipv4) && ipv6_compatible(config, key.ipv6.as_ref())
}

/// Decides which subnet this host takes (see the module docs).
///
/// `previous` is what [`read_previous`](super::subnet_env::read_previous) found. `rng(n)`
/// must return an index below `n` (it is taken modulo `n`); it is called once for IPv4 and,
/// when IPv6 is enabled, once more for IPv6, and only when a new subnet is picked.
pub fn choose_subnet(
    config: &NetworkConfig,
    leases: &[ListedLease],
    public_ip: Ipv4Addr,
    previous: Option<(Ipv4Net, Option<Ipv6Net>)>,
    rng: &mut impl FnMut(usize) -> usize,
) -> Allocation {
    let mut delete = Vec::new();
    let mut reuse = None;
    for lease in leases.iter().filter(|l| l.attrs.public_ip == public_ip) {
        if !key_compatible(config, &lease.key) {
            delete.push(lease.key);
        } else if reuse.is_none() {
            reuse = Some(Choice::Reuse {
                key: lease.key,
                reservation: lease.reservation,
            });
        }
    }
    if let Some(choice) = reuse {
        return Allocation { delete, choice };
    }

    if let Some((v4, v6)) = previous {
        let v6 = if config.ipv6.is_some() { v6 } else { None };
        let key = SubnetKey { ipv4: v4, ipv6: v6 };
        let free = leases.iter().all(|l| {
            !l.key.ipv4.overlaps(&v4)
                && match (l.key.ipv6, v6) {
                    (Some(a), Some(b)) => !a.overlaps(&b),
                    _ => true,
                }
        });
        if free && key_compatible(config, &key) {
            return Allocation {
                delete,
                choice: Choice::Previous(key),
            };
        }
    }

    let choice = pick_new(config, leases, rng).map_or(Choice::OutOfSubnets, Choice::New);
    Allocation { delete, choice }
}

fn pick_new(
    config: &NetworkConfig,
    leases: &[ListedLease],
    rng: &mut impl FnMut(usize) -> usize,
) -> Option<SubnetKey> {
    let taken4: Vec<Ipv4Net> = leases.iter().map(|l| l.key.ipv4).collect();
    let first = Ipv4Net::new(config.subnet_min, config.subnet_len)?;
    let free4 = free_v4(first, config.subnet_max, &taken4);
    let free6 = match &config.ipv6 {
        None => None,
        Some(c) => Some(free_v6(c, leases)?),
    };
    if free4.is_empty() || free6.as_ref().is_some_and(Vec::is_empty) {
        return None;
    }
    let ipv4 = free4[rng(free4.len()) % free4.len()];
    let ipv6 = free6.map(|f| f[rng(f.len()) % f.len()]);
    Some(SubnetKey { ipv4, ipv6 })
}

macro_rules! free_walk {
    ($fn:ident, $net:ty, $addr:ty, $int:ty) => {
        /// The first [`CANDIDATES`] subnets from `first` up to `max` (inclusive) that overlap
        /// none of `taken`.
        fn $fn(first: $net, max: $addr, taken: &[$net]) -> Vec<$net> {
            let mut out = Vec::new();
            let mut sn = Some(first);
            while let Some(cur) = sn {
                if cur.addr() > max || out.len() >= CANDIDATES {
                    break;
                }
                match taken
                    .iter()
                    .filter(|t| t.overlaps(&cur))
                    .max_by_key(|t| t.last_addr())
                {
                    None => {
                        out.push(cur);
                        sn = cur.next();
                    }
                    Some(t) if t.prefix_len() < cur.prefix_len() => {
                        // Jump past the whole taken range.
                        sn = <$int>::from(t.last_addr())
                            .checked_add(1)
                            .and_then(|a| <$net>::new(<$addr>::from(a), cur.prefix_len()));
                    }
                    Some(_) => sn = cur.next(),
                }
            }
            out
        }
    };
}

free_walk!(walk_v4, Ipv4Net, Ipv4Addr, u32);
free_walk!(walk_v6, Ipv6Net, Ipv6Addr, u128);

fn free_v4(first: Ipv4Net, max: Ipv4Addr, taken: &[Ipv4Net]) -> Vec<Ipv4Net> {
    walk_v4(first, max, taken)
}

fn free_v6(c: &Ipv6NetworkConfig, leases: &[ListedLease]) -> Option<Vec<Ipv6Net>> {
    let taken: Vec<Ipv6Net> = leases.iter().filter_map(|l| l.key.ipv6).collect();
    let first = Ipv6Net::new(c.subnet_min, c.subnet_len)?;
    Some(walk_v6(first, c.subnet_max, &taken))
}

/// An index below `n` (`n` > 0) from the standard library's per-process random hash
/// keys: good enough to spread hosts over subnets (flanneld uses time-seeded math/rand).
pub fn random_index(n: usize) -> usize {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    (h.finish() % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> NetworkConfig {
        NetworkConfig::parse(json.as_bytes()).unwrap()
    }

    fn v4config() -> NetworkConfig {
        config(include_str!(
            "../../../../fixtures/flannel/config-vxlan.json"
        ))
    }

    fn dual() -> NetworkConfig {
        config(include_str!(
            "../../../../fixtures/flannel/config-dual-stack.json"
        ))
    }

    fn key(s: &str) -> SubnetKey {
        SubnetKey::parse(s).unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn lease(k: &str, public_ip: &str) -> ListedLease {
        ListedLease {
            key: key(k),
            attrs: LeaseAttrs::udp(ip(public_ip)),
            reservation: false,
        }
    }

    /// An rng that records the `n`s it was asked about and answers `pick`.
    fn fixed(pick: usize, asked: &mut Vec<usize>) -> impl FnMut(usize) -> usize + '_ {
        move |n| {
            asked.push(n);
            pick
        }
    }

    const ME: &str = "192.168.64.3";

    #[test]
    fn reuses_own_lease_and_reports_reservation() {
        let c = v4config();
        let mut asked = vec![];
        let mut leases = vec![
            lease("10.5.7.0-24", "192.168.64.9"),
            lease("10.5.52.0-24", ME),
        ];
        let a = choose_subnet(&c, &leases, ip(ME), None, &mut fixed(0, &mut asked));
        assert_eq!(
            a.choice,
            Choice::Reuse {
                key: key("10.5.52.0-24"),
                reservation: false
            }
        );
        assert!(a.delete.is_empty());
        leases[1].reservation = true;
        let a = choose_subnet(
            &c,
            &leases,
            ip(ME),
            Some((Ipv4Net::parse_cidr("10.5.9.0/24").unwrap(), None)),
            &mut fixed(0, &mut asked),
        );
        assert_eq!(
            a.choice,
            Choice::Reuse {
                key: key("10.5.52.0-24"),
                reservation: true
            }
        );
        assert!(asked.is_empty(), "no random pick when reusing");
    }

    #[test]
    fn incompatible_own_leases_are_deleted() {
        let c = v4config();
        let mut asked = vec![];
        let leases = vec![
            lease("10.6.1.0-24", ME),                  // outside the network
            lease("10.5.52.0-25", ME),                 // wrong length
            lease("10.5.0.0-24", ME),                  // below SubnetMin
            lease("10.5.53.0-24&fc00:0:0:1::-64", ME), // IPv6 part while IPv6 is off
            lease("10.5.60.0-24", ME),                 // fine: reused
            lease("10.5.61.0-24", ME),                 // a second fine one is left alone
        ];
        let a = choose_subnet(&c, &leases, ip(ME), None, &mut fixed(0, &mut asked));
        assert_eq!(
            a.delete,
            vec![
                key("10.6.1.0-24"),
                key("10.5.52.0-25"),
                key("10.5.0.0-24"),
                key("10.5.53.0-24&fc00:0:0:1::-64")
            ]
        );
        assert_eq!(
            a.choice,
            Choice::Reuse {
                key: key("10.5.60.0-24"),
                reservation: false
            }
        );
        // Without a compatible one, the deleted leases still count as taken.
        let a = choose_subnet(&c, &leases[..4], ip(ME), None, &mut fixed(0, &mut asked));
        assert_eq!(a.delete.len(), 4);
        assert_eq!(a.choice, Choice::New(key("10.5.1.0-24")));
    }

    #[test]
    fn previous_subnet_when_free_and_compatible() {
        let c = v4config();
        let mut asked = vec![];
        let prev = |s: &str| Some((Ipv4Net::parse_cidr(s).unwrap(), None));
        let leases = vec![
            lease("10.5.7.0-24", "192.168.64.9"),
            lease("10.5.8.0-23", "192.168.64.10"),
        ];
        let a = choose_subnet(
            &c,
            &leases,
            ip(ME),
            prev("10.5.52.1/24"),
            &mut fixed(0, &mut asked),
        );
        assert_eq!(a.choice, Choice::Previous(key("10.5.52.0-24")));
        assert!(asked.is_empty());
        // Taken by someone else (exactly, or overlapping a larger lease), or incompatible
        // (wrong length, outside SubnetMin..SubnetMax): pick anew.
        for previous in ["10.5.7.0/24", "10.5.9.0/24", "10.5.52.0/25", "10.5.0.0/24"] {
            let a = choose_subnet(
                &c,
                &leases,
                ip(ME),
                prev(previous),
                &mut fixed(0, &mut asked),
            );
            assert_eq!(a.choice, Choice::New(key("10.5.1.0-24")), "{previous}");
        }
        // A recorded IPv6 subnet is ignored while IPv6 is disabled.
        let p = Some((
            Ipv4Net::parse_cidr("10.5.52.0/24").unwrap(),
            Ipv6Net::parse_cidr("fc00:0:0:1::/64"),
        ));
        let a = choose_subnet(&c, &leases, ip(ME), p, &mut fixed(0, &mut asked));
        assert_eq!(a.choice, Choice::Previous(key("10.5.52.0-24")));
    }

    #[test]
    fn new_subnet_is_uniform_over_the_first_100_free() {
        let c = v4config();
        // 10.5.1.0 .. 10.5.150.0 with every third one taken.
        let leases: Vec<ListedLease> = (1..=150)
            .filter(|i| i % 3 == 0)
            .map(|i| lease(&format!("10.5.{i}.0-24"), "192.168.64.200"))
            .collect();
        let free: Vec<u32> = (1..=255).filter(|i| i % 3 != 0 || *i > 150).collect();
        let mut asked = vec![];
        for pick in [0, 1, 57, 99] {
            let a = choose_subnet(&c, &leases, ip(ME), None, &mut fixed(pick, &mut asked));
            assert_eq!(
                a.choice,
                Choice::New(key(&format!("10.5.{}.0-24", free[pick]))),
                "pick {pick}"
            );
        }
        assert_eq!(asked, vec![100; 4], "always chosen among exactly 100");
        // Out-of-range answers from the rng wrap instead of panicking.
        let a = choose_subnet(&c, &leases, ip(ME), None, &mut |_| 100);
        assert_eq!(a.choice, Choice::New(key("10.5.1.0-24")));
    }

    #[test]
    fn window_is_smaller_near_the_end_and_skips_large_leases() {
        let c = config(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.250.0"}"#);
        let leases = vec![lease("10.5.252.0-22", "192.168.64.200")];
        let mut asked = vec![];
        let a = choose_subnet(&c, &leases, ip(ME), None, &mut fixed(1, &mut asked));
        assert_eq!(a.choice, Choice::New(key("10.5.251.0-24")));
        assert_eq!(asked, vec![2], "10.5.250.0 and 10.5.251.0 only");
        // One huge reservation covering the whole range: out of subnets, quickly.
        let wide = config(r#"{"Network":"10.0.0.0/8","SubnetLen":30}"#);
        let leases = vec![
            ListedLease {
                reservation: true,
                ..lease("10.0.0.0-9", "192.168.64.200")
            },
            lease("10.128.0.0-9", "192.168.64.201"),
        ];
        let a = choose_subnet(&wide, &leases, ip(ME), None, &mut fixed(0, &mut asked));
        assert_eq!(a.choice, Choice::OutOfSubnets);
    }

    #[test]
    fn exhaustion() {
        let c = config(r#"{"Network":"10.5.0.0/24"}"#); // /26s: min .64, max .192
        let mut asked = vec![];
        let leases = vec![
            lease("10.5.0.64-26", "192.168.64.1"),
            lease("10.5.0.128-26", "192.168.64.2"),
            lease("10.5.0.192-26", "192.168.64.3"),
        ];
        let a = choose_subnet(
            &c,
            &leases,
            ip("192.168.64.4"),
            None,
            &mut fixed(0, &mut asked),
        );
        assert_eq!(a.choice, Choice::OutOfSubnets);
        assert!(asked.is_empty());
        let a = choose_subnet(
            &c,
            &leases[..2],
            ip("192.168.64.4"),
            None,
            &mut fixed(0, &mut asked),
        );
        assert_eq!(a.choice, Choice::New(key("10.5.0.192-26")));
        // A free subnet at the very top of the address space ends the walk cleanly.
        let top = config(r#"{"Network":"255.255.255.0/24"}"#);
        let a = choose_subnet(&top, &[], ip(ME), None, &mut |n| n - 1);
        assert_eq!(a.choice, Choice::New(key("255.255.255.192-26")));
    }

    #[test]
    fn dual_stack_picks_ipv6_independently() {
        let c = dual();
        let leases = vec![
            lease("10.5.1.0-24&fc00:0:0:1::-64", "192.168.64.1"),
            lease("10.5.2.0-24&fc00:0:0:3::-64", "192.168.64.2"),
        ];
        let mut asked = vec![];
        let mut answers = vec![1usize, 0].into_iter();
        let a = choose_subnet(&c, &leases, ip(ME), None, &mut |n| {
            asked.push(n);
            answers.next().unwrap()
        });
        assert_eq!(a.choice, Choice::New(key("10.5.4.0-24&fc00:0:0:2::-64")));
        assert_eq!(asked, vec![100, 100]);
        // A v4-only lease of ours is incompatible with a dual-stack config.
        let leases = vec![lease("10.5.9.0-24", ME)];
        let a = choose_subnet(&c, &leases, ip(ME), None, &mut |_| 0);
        assert_eq!(a.delete, vec![key("10.5.9.0-24")]);
        assert_eq!(a.choice, Choice::New(key("10.5.1.0-24&fc00:0:0:1::-64")));
        // The previous subnet needs its IPv6 half when IPv6 is on.
        let p4 = Ipv4Net::parse_cidr("10.5.52.0/24").unwrap();
        let a = choose_subnet(&c, &[], ip(ME), Some((p4, None)), &mut |_| 0);
        assert_eq!(a.choice, Choice::New(key("10.5.1.0-24&fc00:0:0:1::-64")));
        let p6 = Ipv6Net::parse_cidr("fc00:0:0:52::1/64");
        let a = choose_subnet(&c, &[], ip(ME), Some((p4, p6)), &mut |_| 0);
        assert_eq!(
            a.choice,
            Choice::Previous(key("10.5.52.0-24&fc00:0:0:52::-64"))
        );
        // IPv6 exhausted: out of subnets even with IPv4 left.
        let small =
            config(r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/124"}"#);
        let leases: Vec<ListedLease> = [4u8, 8, 12]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                lease(
                    &format!("10.5.{}.0-24&fc00::{s:x}-126", i + 1),
                    "192.168.64.1",
                )
            })
            .collect();
        let a = choose_subnet(&small, &leases, ip(ME), None, &mut |_| 0);
        assert_eq!(a.choice, Choice::OutOfSubnets);
    }

    #[test]
    fn random_index_is_in_range() {
        for n in [1, 2, 7, 100] {
            for _ in 0..50 {
                assert!(random_index(n) < n);
            }
        }
        assert_eq!(random_index(0), 0);
    }
}
