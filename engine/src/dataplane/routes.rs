//! The route-table handle: edits on the control plane, lock-free reads on the data path.
//!
//! [`RouteTable`] keeps the canonical set of routes behind a mutex that only the control
//! plane takes, and publishes every change as a fresh immutable [`SubnetTable`] through an
//! [`ArcSwap`]. Workers `load` the current snapshot once per batch: a wait-free pointer read,
//! never a lock, and a route change never disturbs a batch in flight or any other route.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use weft_encap::table::{Cidr, Route, SubnetTable, TableError, TableSpec};
use weft_encap::wire::EthernetAddress;

#[derive(Debug)]
struct Inner {
    current: ArcSwap<SubnetTable>,
    edits: Mutex<Edits>,
}

#[derive(Debug, Default, Clone)]
struct Edits {
    generation: u64,
    routes: BTreeMap<Cidr, Route>,
    vteps: BTreeSet<SocketAddr>,
    fdb: BTreeMap<EthernetAddress, SocketAddr>,
    neigh: BTreeMap<IpAddr, EthernetAddress>,
}

impl Edits {
    fn spec(&self) -> TableSpec {
        TableSpec {
            routes: self.routes.values().copied().collect(),
            vteps: self.vteps.iter().copied().collect(),
            fdb: self.fdb.iter().map(|(m, e)| (*m, *e)).collect(),
        }
    }
}

/// One change to a [`RouteTable`], for [`RouteTable::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteEdit {
    /// Add a route, or replace the route for the same subnet.
    Insert(Route),
    /// Remove the route for this subnet (nothing if there is none).
    Remove(Cidr),
    /// Add a peer without a subnet (a VXLAN L2 VTEP that gets flooded frames).
    InsertVtep(SocketAddr),
    /// Remove such a peer.
    RemoveVtep(SocketAddr),
    /// Add or replace a static forwarding entry (VXLAN L2).
    InsertFdb(EthernetAddress, SocketAddr),
    /// Remove a static forwarding entry.
    RemoveFdb(EthernetAddress),
    /// Add or replace a static neighbour entry (VXLAN L2: what the ARP/ND proxy answers).
    InsertNeigh(IpAddr, EthernetAddress),
    /// Remove a static neighbour entry.
    RemoveNeigh(IpAddr),
}

/// A shared handle to an engine's routes. Clones refer to the same table.
///
/// Every method that changes it builds and publishes exactly one new snapshot;
/// [`RouteTable::apply`] makes any number of changes with one (a control plane applying a
/// whole lease list pays one rebuild, not one per lease).
#[derive(Debug, Clone)]
pub struct RouteTable {
    inner: Arc<Inner>,
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(SubnetTable::default()),
                edits: Mutex::new(Edits::default()),
            }),
        }
    }
}

impl RouteTable {
    /// A table holding `routes`.
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Result<RouteTable, TableError> {
        let table = RouteTable::default();
        table.replace_all(routes)?;
        Ok(table)
    }

    /// The current snapshot (what workers see).
    pub fn snapshot(&self) -> Arc<SubnetTable> {
        self.inner.current.load_full()
    }

    /// A cheap guard on the current snapshot, for the data path.
    #[cfg(test)]
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<SubnetTable>> {
        self.inner.current.load()
    }

    /// Every route, sorted by subnet.
    pub fn routes(&self) -> Vec<Route> {
        self.snapshot().routes().to_vec()
    }

    fn edit_all<T>(&self, f: impl FnOnce(&mut Edits) -> T) -> Result<T, TableError> {
        let mut edits = self
            .inner
            .edits
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut next = edits.clone();
        let out = f(&mut next);
        next.generation = edits.generation + 1;
        let table = SubnetTable::build(next.generation, &next.spec())?
            .with_neigh(next.neigh.iter().map(|(ip, mac)| (*ip, *mac)));
        *edits = next;
        self.inner.current.store(Arc::new(table));
        Ok(out)
    }

    fn edit<T>(&self, f: impl FnOnce(&mut BTreeMap<Cidr, Route>) -> T) -> Result<T, TableError> {
        self.edit_all(|e| f(&mut e.routes))
    }

    /// Adds a peer without a subnet (a VXLAN L2 VTEP that gets flooded frames); returns
    /// whether it was new.
    pub fn insert_vtep(&self, endpoint: SocketAddr) -> Result<bool, TableError> {
        self.edit_all(|e| e.vteps.insert(endpoint))
    }

    /// Removes a peer without a subnet; returns whether it was there.
    pub fn remove_vtep(&self, endpoint: &SocketAddr) -> bool {
        self.edit_all(|e| e.vteps.remove(endpoint)).unwrap_or(false)
    }

    /// Adds or replaces a static forwarding entry (VXLAN L2): frames for `mac` go to
    /// `endpoint`.
    pub fn insert_fdb(&self, mac: EthernetAddress, endpoint: SocketAddr) -> Result<(), TableError> {
        self.edit_all(|e| {
            e.fdb.insert(mac, endpoint);
        })
    }

    /// Removes a static forwarding entry; returns whether it was there.
    pub fn remove_fdb(&self, mac: &EthernetAddress) -> bool {
        self.edit_all(|e| e.fdb.remove(mac).is_some())
            .unwrap_or(false)
    }

    /// Adds or replaces a static neighbour entry (VXLAN L2): the ARP/ND proxy answers for
    /// `ip` with `mac`.
    pub fn insert_neigh(&self, ip: IpAddr, mac: EthernetAddress) -> Result<(), TableError> {
        self.edit_all(|e| {
            e.neigh.insert(ip, mac);
        })
    }

    /// Removes a static neighbour entry; returns whether it was there.
    pub fn remove_neigh(&self, ip: &IpAddr) -> bool {
        self.edit_all(|e| e.neigh.remove(ip).is_some())
            .unwrap_or(false)
    }

    /// The peers without a subnet.
    pub fn vteps(&self) -> Vec<SocketAddr> {
        let edits = self
            .inner
            .edits
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        edits.vteps.iter().copied().collect()
    }

    /// Adds a route, or replaces the route for the same subnet; returns the replaced one.
    pub fn insert(&self, route: Route) -> Result<Option<Route>, TableError> {
        self.edit(|routes| routes.insert(route.subnet, route))
    }

    /// Removes the route for `subnet`; returns it, or `None` if there was none.
    pub fn remove(&self, subnet: &Cidr) -> Option<Route> {
        // Removing cannot make a table invalid.
        self.edit(|routes| routes.remove(subnet)).ok().flatten()
    }

    /// Applies `edits` in order as one change: one new snapshot (one rebuild) however many
    /// there are, published only if the result is a valid table; otherwise nothing changes
    /// and the error says why. Returns how many edits changed something.
    pub fn apply(&self, edits: impl IntoIterator<Item = RouteEdit>) -> Result<usize, TableError> {
        self.edit_all(|e| {
            let mut changed = 0;
            for edit in edits {
                let did = match edit {
                    RouteEdit::Insert(route) => e.routes.insert(route.subnet, route) != Some(route),
                    RouteEdit::Remove(subnet) => e.routes.remove(&subnet).is_some(),
                    RouteEdit::InsertVtep(endpoint) => e.vteps.insert(endpoint),
                    RouteEdit::RemoveVtep(endpoint) => e.vteps.remove(&endpoint),
                    RouteEdit::InsertFdb(mac, endpoint) => {
                        e.fdb.insert(mac, endpoint) != Some(endpoint)
                    }
                    RouteEdit::RemoveFdb(mac) => e.fdb.remove(&mac).is_some(),
                    RouteEdit::InsertNeigh(ip, mac) => e.neigh.insert(ip, mac) != Some(mac),
                    RouteEdit::RemoveNeigh(ip) => e.neigh.remove(&ip).is_some(),
                };
                changed += usize::from(did);
            }
            changed
        })
    }

    /// Replaces every route at once (one new snapshot).
    pub fn replace_all(&self, routes: impl IntoIterator<Item = Route>) -> Result<(), TableError> {
        let mut new = BTreeMap::new();
        for r in routes {
            if let Some(old) = new.insert(r.subnet, r) {
                if old != r {
                    return Err(TableError::DuplicateSubnet(r.subnet));
                }
            }
        }
        self.edit(|routes| *routes = new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(subnet: &str, endpoint: &str) -> Route {
        Route {
            subnet: subnet.parse().unwrap(),
            endpoint: endpoint.parse().unwrap(),
            vtep_mac: None,
        }
    }

    #[test]
    fn edits_publish_new_generations() {
        let t = RouteTable::new([route("100.96.2.0/24", "198.18.0.2:8285")]).unwrap();
        let before = t.snapshot();
        assert_eq!(before.generation(), 1);
        t.insert(route("100.96.3.0/24", "198.18.0.3:8285")).unwrap();
        let after = t.snapshot();
        assert_eq!(after.generation(), 2);
        // The old snapshot is untouched: readers holding it keep a consistent view.
        assert_eq!(before.routes().len(), 1);
        assert_eq!(after.routes().len(), 2);
        let replaced = t.insert(route("100.96.3.0/24", "198.18.0.4:8285")).unwrap();
        assert_eq!(
            replaced.unwrap().endpoint,
            "198.18.0.3:8285".parse().unwrap()
        );
        assert_eq!(
            t.remove(&"100.96.2.0/24".parse().unwrap())
                .unwrap()
                .subnet
                .to_string(),
            "100.96.2.0/24"
        );
        assert!(t.remove(&"100.96.2.0/24".parse().unwrap()).is_none());
        assert_eq!(t.routes().len(), 1);
    }

    #[test]
    fn a_batch_of_edits_is_one_rebuild() {
        let t = RouteTable::new([route("100.96.2.0/24", "198.18.0.2:8285")]).unwrap();
        let before = t.snapshot().generation();
        let mut edits: Vec<RouteEdit> = (3..=200u32)
            .map(|i| RouteEdit::Insert(route(&format!("100.96.{i}.0/24"), "198.18.0.3:8285")))
            .collect();
        edits.push(RouteEdit::Remove("100.96.2.0/24".parse().unwrap()));
        edits.push(RouteEdit::InsertVtep("198.18.0.9:8472".parse().unwrap()));
        assert_eq!(t.apply(edits).unwrap(), 200);
        let after = t.snapshot();
        assert_eq!(after.generation(), before + 1, "200 edits, one snapshot");
        assert_eq!(after.routes().len(), 198);
        assert!(after.lookup("100.96.2.1".parse().unwrap()).is_none());
        assert_eq!(t.vteps().len(), 1);
        // Edits that change nothing still publish one snapshot, and say so.
        assert_eq!(
            t.apply([RouteEdit::Remove("100.96.2.0/24".parse().unwrap())])
                .unwrap(),
            0
        );
        assert_eq!(t.snapshot().generation(), before + 2);
    }

    #[test]
    fn static_neighbour_entries_are_in_every_snapshot() {
        let t = RouteTable::new([route("100.96.2.0/24", "198.18.0.2:8472")]).unwrap();
        let ip: IpAddr = "100.96.0.12".parse().unwrap();
        let mac: EthernetAddress = "02:00:00:aa:00:0c".parse().unwrap();
        t.insert_neigh(ip, mac).unwrap();
        assert_eq!(t.snapshot().static_neigh(ip), Some(mac));
        // Other edits keep them.
        t.insert(route("100.96.3.0/24", "198.18.0.3:8472")).unwrap();
        assert_eq!(t.snapshot().static_neigh(ip), Some(mac));
        let ip6: IpAddr = "fd00:96::12".parse().unwrap();
        let edits = [
            RouteEdit::InsertNeigh(ip6, mac),
            RouteEdit::InsertNeigh(ip, mac),
            RouteEdit::RemoveNeigh(ip),
        ];
        assert_eq!(
            t.apply(edits).unwrap(),
            2,
            "re-inserting the same entry changes nothing"
        );
        assert_eq!(t.snapshot().neigh_entries(), [(ip6, mac)]);
        assert!(t.remove_neigh(&ip6));
        assert!(!t.remove_neigh(&ip6));
        assert!(t.snapshot().neigh_entries().is_empty());
    }

    #[test]
    fn readers_see_whole_snapshots_while_writers_edit() {
        let t = RouteTable::new([route("100.96.2.0/24", "198.18.0.2:8285")]).unwrap();
        let reader = {
            let t = t.clone();
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    let snap = t.load();
                    // 100.96.2.0/24 is never removed, so it must always resolve.
                    assert!(snap.lookup("100.96.2.9".parse().unwrap()).is_some());
                }
            })
        };
        for i in 0..500u32 {
            let s = format!("100.96.{}.0/24", 3 + (i % 200));
            t.insert(route(&s, "198.18.0.3:8285")).unwrap();
            t.remove(&s.parse().unwrap());
        }
        reader.join().unwrap();
    }
}
