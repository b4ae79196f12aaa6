//! flanneld's control-plane formats, pure: no network, no etcd, no clock.
//!
//! `weft flannel` joins a flannel network the way flanneld does in etcd mode: it reads the
//! network config from `<prefix>/config`, lists and writes lease keys under
//! `<prefix>/subnets/`, and writes `subnet.env` for the CNI plugin. Everything here is the
//! byte-level model of those formats and of the subnet choice, so that it can be tested
//! exhaustively without a cluster; the etcd client and the daemon that drives them live
//! elsewhere.
//!
//! - [`net`]: IPv4/IPv6 networks as flannel's `pkg/ip` models them (`IP4Net`, `IP6Net`),
//!   printed the way Go prints them.
//! - [`netconfig`]: `<prefix>/config` (FLANNEL.md §1.1; flannel `pkg/subnet/config.go`,
//!   `pkg/backend/udp`, `pkg/backend/vxlan/vxlan.go`), with flanneld's defaults and
//!   validation, and one clear error for everything weft cannot serve.
//! - [`lease`]: lease keys `10.5.52.0-24[&fc00:0:0:1::-64]` and lease values
//!   (`lease.LeaseAttrs` JSON), byte-exact with flanneld (FLANNEL.md §1.2, §1.3).
//! - [`subnet_env`]: `subnet.env`, written atomically, and the previous subnet read back
//!   (FLANNEL.md §2, §1.6).
//! - [`alloc`]: which subnet to take, given the listed leases (FLANNEL.md §1.4).
//!
//! JSON is read with Go `encoding/json` semantics throughout: object keys are matched to
//! field names case-insensitively (an exact match wins, else the last case-insensitive
//! one), unknown keys are ignored, and `null` leaves a field at its default.

pub mod alloc;
mod gojson;
pub mod lease;
pub mod net;
pub mod netconfig;
pub mod subnet_env;

pub use alloc::{choose_subnet, random_index, Allocation, Choice, ListedLease};
pub use lease::{LeaseAttrs, LeaseError, RawJson, SubnetKey, VxlanData};
pub use net::{Ipv4Net, Ipv6Net};
pub use netconfig::{BackendConfig, Ipv6NetworkConfig, NetConfigError, NetworkConfig, VxlanConfig};
pub use subnet_env::{SubnetEnv, SubnetEnvError};
