//! The control plane: everything around the data plane that runs on its own threads.
//!
//! - [`config`]: the TOML configuration file, validated with one clear error per mistake.
//! - [`provision`]: creating and configuring the devices and sockets a config describes.
//! - [`socket`]: the control socket (`weft peer`, `weft fdb`, `weft stats`).
//! - [`daemon`]: `weft run`, the assembly of all of the above, signals and SIGHUP reload.
//! - [`etcd`]: a small blocking etcd v3 client over etcd's JSON gateway (for `weft flannel`).
//! - [`flannel`]: flanneld's formats (network config, leases, subnet.env, subnet choice), pure.
//! - [`extension`]: `weft ext`, weft as flanneld's extension backend.
//! - [`flanneld`]: `weft flannel`, the subnet manager that runs the daemon from etcd leases.

pub mod config;
pub mod daemon;
pub mod etcd;
pub mod extension;
pub mod flannel;
pub mod flanneld;
pub mod metrics;
pub mod provision;
pub mod socket;
