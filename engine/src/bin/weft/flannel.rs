//! `weft flannel`: flanneld's command line (the flags that apply, their defaults and their
//! `FLANNELD_*` environment variables) turned into [`FlannelOptions`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use weft::control::etcd::EtcdConfig;
use weft::control::flanneld::FlannelOptions;

/// flanneld's flags. Each also reads `FLANNELD_<FLAG>` when it is not given.
#[derive(Args, Debug)]
pub struct FlannelArgs {
    /// Comma-separated etcd endpoints.
    #[arg(
        long,
        env = "FLANNELD_ETCD_ENDPOINTS",
        default_value = "http://127.0.0.1:4001,http://127.0.0.1:2379"
    )]
    etcd_endpoints: String,
    /// The etcd prefix of the network config and the leases.
    #[arg(
        long,
        env = "FLANNELD_ETCD_PREFIX",
        default_value = "/coreos.com/network"
    )]
    etcd_prefix: String,
    /// PEM client key for etcd (TLS only with --etcd-certfile too).
    #[arg(long, env = "FLANNELD_ETCD_KEYFILE")]
    etcd_keyfile: Option<PathBuf>,
    /// PEM client certificate for etcd.
    #[arg(long, env = "FLANNELD_ETCD_CERTFILE")]
    etcd_certfile: Option<PathBuf>,
    /// PEM CA of etcd's server certificates.
    #[arg(long, env = "FLANNELD_ETCD_CAFILE")]
    etcd_cafile: Option<PathBuf>,
    /// etcd user name.
    #[arg(long, env = "FLANNELD_ETCD_USERNAME")]
    etcd_username: Option<String>,
    /// etcd password.
    #[arg(long, env = "FLANNELD_ETCD_PASSWORD", hide_env_values = true)]
    etcd_password: Option<String>,
    /// Interface (name, or an IPv4 or IPv6 address of it) to use; repeatable, the first that matches wins.
    #[arg(long, env = "FLANNELD_IFACE")]
    iface: Vec<String>,
    /// Regular expression matched against interface addresses, then names; repeatable,
    /// tried after --iface.
    #[arg(long, env = "FLANNELD_IFACE_REGEX")]
    iface_regex: Vec<String>,
    /// Use the interface that routes to this address.
    #[arg(long, env = "FLANNELD_IFACE_CAN_REACH")]
    iface_can_reach: Option<String>,
    /// The IP to publish in the lease (default: the interface's).
    #[arg(long, env = "FLANNELD_PUBLIC_IP")]
    public_ip: Option<String>,
    /// The IPv6 address to publish on a dual-stack vxlan network (default: the interface's
    /// first global IPv6 address).
    #[arg(long, env = "FLANNELD_PUBLIC_IPV6")]
    public_ipv6: Option<String>,
    /// Where to write the subnet file for the CNI plugin.
    #[arg(
        long,
        env = "FLANNELD_SUBNET_FILE",
        default_value = "/run/flannel/subnet.env"
    )]
    subnet_file: PathBuf,
    /// Minutes before expiry to renew the lease (1-1439).
    #[arg(long, env = "FLANNELD_SUBNET_LEASE_RENEW_MARGIN", default_value_t = 60)]
    subnet_lease_renew_margin: i64,
    /// The address of the health endpoint.
    #[arg(long, env = "FLANNELD_HEALTHZ_IP", default_value = "0.0.0.0")]
    healthz_ip: String,
    /// The port of the health endpoint (0: none).
    #[arg(long, env = "FLANNELD_HEALTHZ_PORT", default_value_t = 0)]
    healthz_port: u16,
    /// Not served by weft: must stay false.
    #[arg(long, env = "FLANNELD_IP_MASQ", default_value_t = false)]
    ip_masq: bool,
    /// Not served by weft (an error if given).
    #[arg(long, env = "FLANNELD_KUBE_SUBNET_MGR", default_value_t = false)]
    kube_subnet_mgr: bool,
    /// Where weft keeps its state (the VXLAN VTEP MAC).
    #[arg(long, env = "WEFT_STATE_DIR", default_value = "/var/lib/weft")]
    state_dir: PathBuf,
    /// Worker threads of the data plane (default: the number of CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// Serve Prometheus metrics, /healthz and /readyz of the data plane on IP:PORT.
    #[arg(long, env = "WEFT_METRICS_LISTEN", value_name = "IP:PORT")]
    metrics_listen: Option<String>,
    /// A file of `[[acl]]` rules and a `[policy]` section (as in `weft run`'s file): the
    /// network policy of this host's data plane, read when it starts.
    #[arg(long, env = "WEFT_ACL_FILE", value_name = "FILE")]
    acl_file: Option<PathBuf>,
}

/// A flag weft cannot serve, or a value that cannot work: one line naming both.
pub struct FlagError(pub String);

fn bad(flag: &str, value: impl std::fmt::Display, why: &str) -> FlagError {
    FlagError(format!("{flag} = {:?}: {why}", value.to_string()))
}

impl FlannelArgs {
    /// The options, or the first flag that cannot work.
    pub fn options(self) -> Result<FlannelOptions, FlagError> {
        let mut iface_regex = Vec::with_capacity(self.iface_regex.len());
        for text in &self.iface_regex {
            let regex = regex::Regex::new(text).map_err(|e| {
                bad(
                    "--iface-regex",
                    text,
                    &format!("not a regular expression: {e}"),
                )
            })?;
            iface_regex.push(regex);
        }
        let iface_can_reach = match &self.iface_can_reach {
            None => None,
            Some(s) => Some(
                s.parse::<IpAddr>()
                    .map_err(|_| bad("--iface-can-reach", s, "not an IP address"))?,
            ),
        };
        let public_ipv6 = match &self.public_ipv6 {
            None => None,
            Some(s) => Some(
                s.parse::<Ipv6Addr>()
                    .map_err(|_| bad("--public-ipv6", s, "not an IPv6 address"))?,
            ),
        };
        if self.ip_masq {
            return Err(bad(
                "--ip-masq",
                true,
                "not served by weft: masquerade with your own iptables/nftables rules",
            ));
        }
        if self.kube_subnet_mgr {
            return Err(bad(
                "--kube-subnet-mgr",
                true,
                "not served by weft: it uses etcd",
            ));
        }
        let endpoints: Vec<String> = self
            .etcd_endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        if endpoints.is_empty() {
            return Err(bad("--etcd-endpoints", &self.etcd_endpoints, "no endpoint"));
        }
        for e in &endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(bad(
                    "--etcd-endpoints",
                    e,
                    "expected http://host:port or https://host:port",
                ));
            }
        }
        if !(1..=1439).contains(&self.subnet_lease_renew_margin) {
            return Err(bad(
                "--subnet-lease-renew-margin",
                self.subnet_lease_renew_margin,
                "must be between 1 and 1439 minutes",
            ));
        }
        let public_ip = match &self.public_ip {
            None => None,
            Some(s) => Some(
                s.parse::<Ipv4Addr>()
                    .map_err(|_| bad("--public-ip", s, "not an IPv4 address"))?,
            ),
        };
        let healthz = if self.healthz_port == 0 {
            None
        } else {
            let ip: IpAddr = self
                .healthz_ip
                .parse()
                .map_err(|_| bad("--healthz-ip", &self.healthz_ip, "not an IP address"))?;
            Some(SocketAddr::new(ip, self.healthz_port))
        };
        if self.workers == Some(0) {
            return Err(bad("--workers", 0, "must be at least 1"));
        }
        let metrics = match &self.metrics_listen {
            None => None,
            Some(s) => Some(
                s.parse::<SocketAddr>()
                    .map_err(|_| bad("--metrics-listen", s, "expected IP:PORT"))?,
            ),
        };
        let acl = match &self.acl_file {
            None => None,
            Some(path) => Some(
                weft::control::config::load_acl_file(path)
                    .map_err(|e| FlagError(format!("--acl-file: {e}")))?,
            ),
        };
        Ok(FlannelOptions {
            etcd: EtcdConfig {
                endpoints,
                ca_file: self.etcd_cafile,
                cert_file: self.etcd_certfile,
                key_file: self.etcd_keyfile,
                username: self.etcd_username,
                password: self.etcd_password,
                timeout: EtcdConfig::DEFAULT_TIMEOUT,
            },
            prefix: self.etcd_prefix,
            iface: self.iface,
            iface_regex,
            iface_can_reach,
            public_ip,
            public_ipv6,
            subnet_file: self.subnet_file,
            renew_margin: Duration::from_secs(self.subnet_lease_renew_margin as u64 * 60),
            healthz,
            state_dir: self.state_dir,
            workers: self.workers,
            metrics,
            acl,
            acl_file: self.acl_file.clone(),
        })
    }
}
