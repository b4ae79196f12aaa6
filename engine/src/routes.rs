//! The route-table handle: edits on the control plane, lock-free reads on the data path.
//!
//! [`RouteTable`] keeps the canonical set of routes behind a mutex that only the control
//! plane takes, and publishes every change as a fresh immutable [`SubnetTable`] through an
//! [`ArcSwap`]. Workers `load` the current snapshot once per batch: a wait-free pointer read,
//! never a lock, and a route change never disturbs a batch in flight or any other route.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use weft_encap::table::{Cidr, Route, SubnetTable, TableError};

#[derive(Debug)]
struct Inner {
    current: ArcSwap<SubnetTable>,
    edits: Mutex<Edits>,
}

#[derive(Debug, Default)]
struct Edits {
    generation: u64,
    routes: BTreeMap<Cidr, Route>,
}

/// A shared handle to an engine's routes. Clones refer to the same table.
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
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<SubnetTable>> {
        self.inner.current.load()
    }

    /// Every route, sorted by subnet.
    pub fn routes(&self) -> Vec<Route> {
        self.snapshot().routes().to_vec()
    }

    fn edit<T>(&self, f: impl FnOnce(&mut BTreeMap<Cidr, Route>) -> T) -> Result<T, TableError> {
        let mut edits = self
            .inner
            .edits
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut routes = edits.routes.clone();
        let out = f(&mut routes);
        let generation = edits.generation + 1;
        let all: Vec<Route> = routes.values().copied().collect();
        let table = SubnetTable::new(generation, &all)?;
        edits.routes = routes;
        edits.generation = generation;
        self.inner.current.store(Arc::new(table));
        Ok(out)
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
