//! `weft run`: the flanneld-style daemon assembled from the library's parts.
//!
//! Order matters, so that a `weft stats` that answers means "fully up", and a failure leaves
//! nothing behind: load the configuration, bind the UDP socket(s) (a port in use fails before
//! any device exists), create and configure the devices, start the engine, then open the
//! control socket. SIGHUP re-reads the file and applies the difference in `[[peer]]` routes
//! of the first device (routes added at runtime through the control socket are kept);
//! SIGINT/SIGTERM stop the engine, which closes the devices, and the kernel removes them with
//! their addresses and routes.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use weft_encap::acl::{Acl, AclPolicy, AclRule, AclSet};
use weft_encap::backend::Backend;
use weft_encap::fdb::FdbConfig;
use weft_encap::flannel::{FlannelBackend, FlannelConfig};
use weft_encap::policy::Decision;
use weft_encap::table::{Cidr, Route};
use weft_encap::vxlan::{VniConfig, VxlanBackend, VxlanConfig, VxlanMode};
use weft_encap::wire::EthernetAddress;

use crate::control::config::{BackendKind, Config, ConfigError, OffloadMode};
use crate::control::metrics::{DeviceMetrics, Health, MetricsContext, MetricsServer};
use crate::control::provision::{self as setup, SetupError, TunSetup};
use crate::control::socket::{ControlContext, ControlError, ControlServer, VniControl};
use crate::dataplane::device::Tun;
use crate::dataplane::engine::{Engine, EngineError};
use crate::dataplane::routes::{RouteEdit, RouteTable};
use crate::sys::{DeviceKind, TunOptions};

/// Why the daemon could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Setting up a device or socket failed; `key` names the configuration key involved.
    #[error("{path}: {key}: {source}")]
    Setup {
        /// The configuration file.
        path: String,
        /// The key whose value could not be applied, e.g. `[listen] port = 8285`.
        key: String,
        /// The failure.
        #[source]
        source: SetupError,
    },
    /// The routes of the configuration could not be built into a table.
    #[error("{path}: [[peer]]: {message}")]
    Routes {
        /// The configuration file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The VTEP MAC file could not be read or written.
    #[error("{path}: {key}: cannot keep the generated VTEP MAC in {file}: {source}")]
    MacFile {
        /// The configuration file.
        path: String,
        /// The key, `[vxlan] mac_file` or `[[vni]] #N mac_file`.
        key: String,
        /// The MAC file.
        file: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The control socket could not be opened.
    #[error("{path}: [control] socket: {source}")]
    Control {
        /// The configuration file.
        path: String,
        /// The failure.
        #[source]
        source: ControlError,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] io::Error),
    /// The metrics endpoint could not listen.
    #[error("{path}: [metrics] listen = {addr}: {source}")]
    Metrics {
        /// The configuration file.
        path: String,
        /// The address.
        addr: SocketAddr,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A device vanished while the daemon ran and could not be made again.
    #[error("device {name} was deleted and cannot be recreated: {source}")]
    DeviceLost {
        /// The device.
        name: String,
        /// Why it could not be recreated.
        #[source]
        source: SetupError,
    },
}

/// The sizes derived from the configuration and the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mtus {
    /// The underlay path MTU.
    pub underlay: u32,
    /// The device MTU (of the first device).
    pub device: u32,
    /// The largest datagram payload that fits the underlay unfragmented.
    pub max_payload: u32,
    /// Bytes of encapsulation between the device MTU and the underlay MTU.
    pub overhead: u32,
}

/// Works out the MTUs: `underlay_mtu`, else the MTU of the interface that holds the listen
/// address, else 1500; the device gets the underlay MTU minus the encapsulation overhead
/// (28 for UDP, 50 for VXLAN; 20 more over an IPv6 or dual-stack underlay) unless `[device] mtu` says
/// otherwise.
pub fn mtus(config: &Config) -> Mtus {
    let underlay = match config.underlay_mtu {
        Some(m) => m,
        None => match setup::interface_mtu(config.listen.ip()) {
            Ok(Some(m)) => m,
            Ok(None) => {
                tracing::info!(
                    "no interface holds {}; assuming an underlay MTU of 1500 (set underlay_mtu)",
                    config.listen.ip()
                );
                1500
            }
            Err(e) => {
                tracing::warn!("cannot read the underlay MTU ({e}); assuming 1500");
                1500
            }
        },
    };
    // A dual-stack underlay: the device's packets must fit the IPv6 one's longer headers.
    let outer = if config.listen.is_ipv4() && config.listen6.is_none() {
        20 + 8
    } else {
        40 + 8
    };
    let overhead = match config.backend {
        BackendKind::Udp => outer,
        BackendKind::Vxlan => outer + weft_encap::vxlan::L3_ENCAP_LEN as u32,
    };
    let max_payload = underlay.saturating_sub(outer);
    let device = config
        .device
        .mtu
        .unwrap_or(underlay.saturating_sub(overhead));
    Mtus {
        underlay,
        device,
        max_payload,
        overhead,
    }
}

/// The VTEP MAC: the configured one, else the one kept in `file`, else a new locally
/// administered unicast MAC, written to `file` so that it survives restarts.
pub fn vtep_mac(configured: Option<EthernetAddress>, file: &Path) -> io::Result<EthernetAddress> {
    if let Some(mac) = configured {
        return Ok(mac);
    }
    match std::fs::read_to_string(file) {
        Ok(text) => {
            return text.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{:?} is not a MAC address", text.trim()),
                )
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 6];
    io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    bytes[0] = (bytes[0] & 0xfe) | 0x02; // unicast, locally administered
    let mac = EthernetAddress(bytes);
    store_vtep_mac(file, mac)?;
    Ok(mac)
}

/// Keeps `mac` in `file` (its directory created if needed), where [`vtep_mac`] finds it.
pub fn store_vtep_mac(file: &Path, mac: EthernetAddress) -> io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(file, format!("{mac}\n"))
}

/// One device of the daemon, before it exists.
struct DevicePlan {
    key: String,
    setup: TunSetup,
    routes: RouteTable,
    vni: Option<VniConfig>,
}

/// Runs the daemon described by the configuration file at `path` until SIGINT or SIGTERM.
pub fn run(path: &Path) -> Result<(), DaemonError> {
    let config = Config::load(path)?;
    // `direct_routing`: kernel routes for the peers on the underlay's L2 segment.
    let feed = config
        .direct_routing
        .then(|| crate::control::flanneld::static_peers_feed(config.listen.ip()));
    run_config(
        config,
        RunOptions {
            reload_on_sighup: true,
            feed,
            table_ready: None,
            acl_file: None,
        },
    )
}

/// A thread body that keeps a running daemon's routes in step with something outside its
/// configuration file (the flannel subnet manager): it gets the first device's route table
/// once the engine is up, and must return soon after the flag turns true (the daemon is
/// stopping).
pub type RouteFeed = Box<dyn FnOnce(RouteTable, Arc<AtomicBool>) + Send>;

/// How [`run_config`] runs a configuration.
pub struct RunOptions {
    /// SIGHUP re-reads `config.path` and applies its `[[peer]]` changes (a configuration
    /// file); otherwise SIGHUP is logged and ignored.
    pub reload_on_sighup: bool,
    /// Started on its own thread once the engine is up; stopped and joined before the engine.
    pub feed: Option<RouteFeed>,
    /// Set by the control plane once its table is in (the feed's first sync); until then
    /// `/readyz` answers 503. `None`: ready as soon as the devices are up.
    pub table_ready: Option<Arc<AtomicBool>>,
    /// Without `reload_on_sighup`: a file of `[[acl]]` rules and `[policy]` that SIGHUP
    /// reads again and puts in force (`weft flannel --acl-file`).
    pub acl_file: Option<PathBuf>,
}

/// Runs the daemon for an already built configuration (from a file, or made by the flannel
/// subnet manager) until SIGINT/SIGTERM or the engine stops.
pub fn run_config(config: Config, options: RunOptions) -> Result<(), DaemonError> {
    let file = config.path.display().to_string();
    let mtus = mtus(&config);
    let setup_err = |key: String| {
        let path = file.clone();
        move |source| DaemonError::Setup { path, key, source }
    };
    let listen_key = format!(
        "[listen] address = {:?}, port = {}",
        config.listen.ip().to_string(),
        config.listen.port()
    );
    let mut workers = config.workers.max(1);
    let shared = workers > 1;
    let plans = plan_devices(&config, &mtus)?;
    let mut queues: Vec<WorkerQueues> = Vec::with_capacity(workers);
    // Devices that were there before us, restored when they drop (after the engine).
    let mut adopted: Vec<setup::Adopted> = Vec::new();
    while queues.len() < workers {
        let w = queues.len();
        let socket =
            setup::bind_udp_shared(config.listen, shared).map_err(setup_err(listen_key.clone()))?;
        let other_socket = match config.listen6 {
            Some(addr) => Some(setup::bind_udp_shared(addr, shared).map_err(setup_err(
                format!("[listen] address6 = {:?}", addr.ip().to_string()),
            ))?),
            None => None,
        };
        // Every worker sends a flow from the same source port (the ports worker 0 found
        // free, bound again with SO_REUSEPORT): a flow that moves to another worker keeps
        // its outer 4-tuple, so the peer's kernel keeps it on one of its workers too and
        // nothing is reordered.
        let source_sockets = match (&config.vxlan, queues.first()) {
            (Some(v), None) => {
                bind_source_sockets(config.listen.ip(), v.source_ports, v.source_sockets, shared)
                    .map_err(setup_err("[vxlan] source_ports".into()))?
            }
            (Some(_), Some(first)) => first
                .source_sockets
                .iter()
                .map(|s| {
                    let addr = s.local_addr().map_err(|source| setup::SetupError::Bind {
                        addr: config.listen,
                        hint: "",
                        source,
                    })?;
                    setup::bind_udp_shared(addr, true)
                })
                .collect::<Result<_, _>>()
                .map_err(setup_err("[vxlan] source_ports".into()))?,
            (None, _) => Vec::new(),
        };
        let mut devices = Vec::with_capacity(plans.len());
        for (i, plan) in plans.iter().enumerate() {
            let device = if w == 0 {
                setup::create_tun(&plan.setup).map(|(tun, found)| {
                    adopted.extend(found);
                    tun
                })
            } else {
                setup::open_queue(&plan.setup, queues[0].devices[i].offload())
            };
            devices.push(device.map_err(setup_err(plan.key.clone()))?);
        }
        if w == 0 {
            if let Some(a) = adopted.iter().find(|a| a.single_queue()) {
                if workers > 1 {
                    tracing::warn!(
                        "device {} takes one queue (made without multi_queue): running 1 worker instead of {workers}; recreate it with `ip tuntap add ... multi_queue` for more",
                        a.name()
                    );
                }
                workers = 1;
            }
        }
        queues.push(WorkerQueues {
            devices,
            socket,
            source_sockets,
            other_socket,
        });
    }

    // A VXLAN multicast group: floods go to it, and worker 0 hears it on a socket of its
    // own (a socket bound to the unicast [listen] address never gets group datagrams).
    let group_socket = match config.vxlan.as_ref().and_then(|v| v.group.map(|g| (g, v))) {
        Some((group, v)) => {
            let key = match &v.group_interface {
                Some(name) => format!("[vxlan] group_interface = {name:?}"),
                None => format!("[vxlan] group = {:?}", group.ip().to_string()),
            };
            let ifindex =
                setup::multicast_interface(v.group_interface.as_deref(), config.listen.ip())
                    .map_err(|e| setup_err(key.clone())(SetupError::Netlink(e)))?;
            for q in &queues {
                for socket in std::iter::once(&q.socket).chain(&q.source_sockets) {
                    setup::set_multicast_sender(socket, config.listen.ip(), ifindex)
                        .map_err(|e| setup_err(key.clone())(SetupError::Netlink(e)))?;
                }
            }
            plans[0]
                .routes
                .insert_vtep(group)
                .map_err(|e| DaemonError::Routes {
                    path: file.clone(),
                    message: format!("[vxlan] group {group}: {e}"),
                })?;
            tracing::info!(group = %group, ifindex, "floods go to the multicast group, which is joined");
            Some(setup::bind_multicast_group(group, ifindex).map_err(setup_err(key))?)
        }
        None => None,
    };

    // The metrics port may be a privileged one: bind it while that is allowed.
    let metrics_listener = match config.metrics {
        Some(addr) => {
            Some(
                std::net::TcpListener::bind(addr).map_err(|source| DaemonError::Metrics {
                    path: file.clone(),
                    addr,
                    source,
                })?,
            )
        }
        None => None,
    };
    // Everything privileged but device upkeep is done: keep CAP_NET_ADMIN only, before any
    // thread (workers, control, metrics) starts.
    setup::drop_capabilities();
    // The source-port sockets only send: what anyone sends to them is dropped by the kernel
    // before it takes any buffer.
    for socket in queues.iter().flat_map(|q| &q.source_sockets) {
        setup::refuse_input(socket);
    }
    if config.backend == BackendKind::Udp && workers > 1 {
        setup::steer_flannel_flows(&queues[0].socket, workers);
        if let Some(other) = &queues[0].other_socket {
            setup::steer_flannel_flows(other, workers);
        }
    }
    let acl = Acl::new(AclSet::new(config.acl.clone(), config.acl_default));
    let engine = match config.backend {
        BackendKind::Udp => {
            let backend = FlannelBackend::new(flannel_config(&config, &mtus));
            spawn(backend, acl.policy(), queues, None, &plans, &config)?
        }
        BackendKind::Vxlan => {
            let backend = VxlanBackend::new(vxlan_config(&config, &mtus, &plans));
            spawn(backend, acl.policy(), queues, group_socket, &plans, &config)?
        }
    };

    let counters = engine.counters_handle();
    let health = Arc::new(DeviceHealth::default());
    let vnis = plans
        .iter()
        .enumerate()
        .map(|(i, p)| VniControl {
            vni: p.vni.as_ref().map(|v| v.vni),
            mode: p.vni.as_ref().map(|v| v.mode),
            routes: p.routes.clone(),
            networks: if i == 0 {
                [Some(config.network), config.network6]
                    .into_iter()
                    .flatten()
                    .collect()
            } else {
                Vec::new()
            },
            local_addresses: p.setup.addresses.iter().map(|(a, _)| *a).collect(),
            device: i,
        })
        .collect();
    let control = ControlServer::start(
        &config.control_socket,
        ControlContext {
            vnis,
            stats: {
                let (health, acl) = (health.clone(), acl.clone());
                Box::new(move || {
                    let mut stats = counters.snapshot();
                    health.report(&mut stats);
                    report_acl(&acl, &mut stats);
                    stats
                })
            },
            inspector: Some(engine.inspector()),
            acl: Some(acl.clone()),
            default_port: config.listen.port(),
            underlay: [Some(config.listen), config.listen6]
                .into_iter()
                .flatten()
                .map(|a| a.ip())
                .collect(),
        },
    )
    .map_err(|source| DaemonError::Control {
        path: file.clone(),
        source,
    })?;

    let metrics = match (metrics_listener, config.metrics) {
        (Some(listener), Some(addr)) => Some(
            MetricsServer::serve(
                listener,
                metrics_context(
                    &config,
                    &plans,
                    &engine,
                    &health,
                    options.table_ready.clone(),
                    &acl,
                ),
            )
            .map_err(|source| DaemonError::Metrics {
                path: file.clone(),
                addr,
                source,
            })?,
        ),
        _ => None,
    };
    if let Some(m) = &metrics {
        tracing::info!(
            "metrics on http://{}/metrics (and /healthz, /readyz)",
            m.local_addr()
        );
    }

    let first = &plans[0];
    tracing::info!(
        "up: {} device {} ({}, mtu {}){}, udp {}{}, {} peer route(s), control {}",
        match config.backend {
            BackendKind::Udp => "udp".to_owned(),
            BackendKind::Vxlan => {
                let v = first.vni.as_ref().map_or(0, |v| v.vni);
                format!("vxlan vni {v}")
            }
        },
        config.device.name,
        first
            .setup
            .addresses
            .iter()
            .map(|(a, l)| format!("{a}/{l}"))
            .collect::<Vec<_>>()
            .join(", "),
        mtus.device,
        first
            .vni
            .as_ref()
            .map(|v| format!(", vtep_mac {}", v.vtep_mac))
            .unwrap_or_default(),
        config.listen,
        config
            .listen6
            .map(|a| format!(" and {a}"))
            .unwrap_or_default(),
        config.peers.len(),
        config.control_socket
    );

    let stop = Arc::new(AtomicBool::new(false));
    let feed = match options.feed {
        Some(feed) => {
            let (routes, stop) = (first.routes.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name("weft-routes".into())
                .spawn(move || feed(routes, stop))
                .map_err(DaemonError::Signals)?;
            Some(thread)
        }
        None => None,
    };
    let keeper = DeviceKeeper {
        plans: &plans,
        health,
        adopted: &mut adopted,
    };
    let result = wait_for_signals(
        &engine,
        &first.routes,
        &acl,
        &config,
        options.reload_on_sighup,
        options.acl_file.as_deref(),
        keeper,
    );
    stop.store(true, Ordering::SeqCst);
    if let Some(thread) = feed {
        let _ = thread.join();
    }
    drop(control);
    let stopped = engine.shutdown();
    if config.device.persist {
        drop(adopted);
        tracing::info!(device = %config.device.name, "stopped; the device stays for the next start (persist)");
    } else if adopted.is_empty() {
        tracing::info!("stopped; device {} removed", config.device.name);
    } else {
        drop(adopted);
        tracing::info!("stopped");
    }
    result.and(stopped.map_err(DaemonError::from))
}

/// One worker's device queues and sockets.
struct WorkerQueues {
    devices: Vec<Tun>,
    socket: UdpSocket,
    source_sockets: Vec<UdpSocket>,
    other_socket: Option<UdpSocket>,
}

fn spawn<B: Backend + Clone>(
    backend: B,
    policy: AclPolicy,
    queues: Vec<WorkerQueues>,
    group_socket: Option<UdpSocket>,
    plans: &[DevicePlan],
    config: &Config,
) -> Result<Engine, DaemonError> {
    let mut queues = queues.into_iter();
    let first = queues.next().expect("at least one worker");
    let mut devices = first.devices.into_iter();
    let first_device = devices.next().expect("at least one device");
    let mut builder = Engine::builder(first_device, first.socket)
        .backend(backend)
        .policy(policy)
        .routes(plans[0].routes.clone())
        .source_sockets(first.source_sockets)
        .batch_size(config.batch)
        .offload(config.offload)
        .busy_poll(config.busy_poll);
    for (device, plan) in devices.zip(&plans[1..]) {
        builder = builder.device(device, plan.routes.clone());
    }
    if let Some(other) = first.other_socket {
        builder = builder.other_family_socket(other);
    }
    if let Some(group) = group_socket {
        builder = builder.group_socket(group);
    }
    for q in queues {
        builder = builder.worker(q.devices, q.socket, q.source_sockets);
        if let Some(other) = q.other_socket {
            builder = builder.other_family_socket(other);
        }
    }
    Ok(builder.spawn()?)
}

/// Binds `count` UDP sockets on `ip` at ports spread over `range` (skipping ports in use),
/// for VXLAN's per-flow source ports.
fn bind_source_sockets(
    ip: IpAddr,
    range: (u16, u16),
    count: usize,
    reuse_port: bool,
) -> Result<Vec<UdpSocket>, SetupError> {
    let (lo, hi) = (u32::from(range.0), u32::from(range.1));
    let span = hi - lo + 1;
    let count = count.min(span as usize);
    let mut sockets = Vec::with_capacity(count);
    let mut last_err = None;
    let step = (span / count.max(1) as u32).max(1);
    let mut port = lo;
    while sockets.len() < count && port <= hi {
        match setup::bind_udp_shared(SocketAddr::new(ip, port as u16), reuse_port) {
            Ok(s) => {
                sockets.push(s);
                port += step;
            }
            Err(e) => {
                last_err = Some(e);
                port += 1;
            }
        }
    }
    match (sockets.len(), last_err) {
        (0, Some(e)) if count > 0 => Err(e),
        _ => Ok(sockets),
    }
}

fn plan_devices(config: &Config, mtus: &Mtus) -> Result<Vec<DevicePlan>, DaemonError> {
    let file = config.path.display().to_string();
    let routes_err = |e: weft_encap::table::TableError| DaemonError::Routes {
        path: file.clone(),
        message: e.to_string(),
    };
    let mac_err = |key: &str, file_path: &Path| {
        let (path, key, file) = (file.clone(), key.to_owned(), file_path.to_owned());
        move |source| DaemonError::MacFile {
            path,
            key,
            file,
            source,
        }
    };
    let routes = RouteTable::new(config.peers.iter().copied()).map_err(routes_err)?;
    for &vtep in &config.vteps {
        routes.insert_vtep(vtep).map_err(routes_err)?;
    }
    for &(mac, ep) in &config.fdb {
        routes.insert_fdb(mac, ep).map_err(routes_err)?;
    }
    for &(ip, mac) in &config.neigh {
        routes.insert_neigh(ip, mac).map_err(routes_err)?;
    }
    let mut addresses = Vec::new();
    if let Some(a) = config.device.address {
        addresses.push((IpAddr::V4(a), config.network.prefix_len()));
    }
    if let (Some(a6), Some(n6)) = (config.device.address6, config.network6) {
        addresses.push((IpAddr::V6(a6), n6.prefix_len()));
    }
    let fdb_config = |v: &crate::control::config::VxlanSettings| FdbConfig {
        max_entries: v.fdb_max,
        ageing_ms: v.fdb_ageing_secs.saturating_mul(1000),
    };
    let first_vni = match &config.vxlan {
        Some(v) => Some(VniConfig {
            vni: v.vni,
            mode: v.mode,
            vtep_mac: vtep_mac(v.vtep_mac, &v.mac_file)
                .map_err(mac_err("[vxlan] mac_file", &v.mac_file))?,
            local_v4: config.device.address,
            local_v6: config.device.address6,
            fdb: fdb_config(v),
            device: Some(config.device.name.clone()),
        }),
        None => None,
    };
    let kind = |vni: &Option<VniConfig>| match vni {
        Some(v) if v.mode == VxlanMode::L2 => DeviceKind::Tap,
        _ => DeviceKind::Tun,
    };
    let mut plans = vec![DevicePlan {
        key: format!("[device] name = {:?}", config.device.name),
        setup: TunSetup {
            name: config.device.name.clone(),
            options: TunOptions {
                kind: kind(&first_vni),
                multi_queue: config.workers > 1,
                vnet_hdr: config.offload == OffloadMode::Auto,
            },
            mtu: mtus.device,
            addresses,
            mac: first_vni
                .as_ref()
                .filter(|v| v.mode == VxlanMode::L2)
                .map(|v| v.vtep_mac.0),
            bridge: config.device.bridge.clone(),
            persist: config.device.persist,
        },
        routes,
        vni: first_vni,
    }];
    for (i, extra) in config.extra_vnis.iter().enumerate() {
        let key = format!("[[vni]] #{}", i + 1);
        let routes = RouteTable::new(extra.peers.iter().copied()).map_err(routes_err)?;
        for &vtep in &extra.vteps {
            routes.insert_vtep(vtep).map_err(routes_err)?;
        }
        for &(mac, ep) in &extra.fdb {
            routes.insert_fdb(mac, ep).map_err(routes_err)?;
        }
        for &(ip, mac) in &extra.neigh {
            routes.insert_neigh(ip, mac).map_err(routes_err)?;
        }
        let settings = config
            .vxlan
            .as_ref()
            .expect("[[vni]] needs backend = vxlan");
        let mac = vtep_mac(extra.vtep_mac, &extra.mac_file)
            .map_err(mac_err(&format!("{key} mac_file"), &extra.mac_file))?;
        let (local_v4, local_v6) = match extra.address.map(|(a, _)| a) {
            Some(IpAddr::V4(a)) => (Some(a), None),
            Some(IpAddr::V6(a)) => (None, Some(a)),
            None => (None, None),
        };
        let vni = Some(VniConfig {
            vni: extra.vni,
            mode: extra.mode,
            vtep_mac: mac,
            local_v4,
            local_v6,
            fdb: fdb_config(settings),
            device: Some(extra.device.clone()),
        });
        plans.push(DevicePlan {
            key: format!("{key} device = {:?}", extra.device),
            setup: TunSetup {
                name: extra.device.clone(),
                options: TunOptions {
                    kind: kind(&vni),
                    multi_queue: config.workers > 1,
                    vnet_hdr: config.offload == OffloadMode::Auto,
                },
                mtu: extra
                    .mtu
                    .unwrap_or(mtus.underlay.saturating_sub(mtus.overhead)),
                addresses: extra.address.into_iter().collect(),
                mac: (extra.mode == VxlanMode::L2).then_some(mac.0),
                bridge: extra.bridge.clone(),
                persist: config.device.persist,
            },
            routes,
            vni,
        });
    }
    Ok(plans)
}

/// The UDP backend settings a configuration implies.
pub fn flannel_config(config: &Config, mtus: &Mtus) -> FlannelConfig {
    FlannelConfig {
        local_v4: config.device.address,
        local_v6: config.device.address6,
        max_payload: mtus.max_payload as usize,
        check_peer: config.validation.check_peer,
        check_inner_source: config.validation.check_inner_source,
        icmp_rate: config.icmp.rate,
        icmp_burst: config.icmp.burst,
    }
}

fn vxlan_config(config: &Config, mtus: &Mtus, plans: &[DevicePlan]) -> VxlanConfig {
    let settings = config.vxlan.as_ref();
    VxlanConfig {
        vnis: plans.iter().filter_map(|p| p.vni.clone()).collect(),
        port: config.listen.port(),
        max_payload: mtus.max_payload as usize,
        // With a multicast group any member may send (as with the kernel's vxlan): the
        // VTEPs are learnt from what they send, not listed.
        check_peer: config.validation.check_peer && settings.is_none_or(|s| s.group.is_none()),
        check_inner_source: config.validation.check_inner_source,
        learning: settings.is_none_or(|s| s.learning),
        proxy: settings.is_some_and(|s| s.proxy),
        neigh_learning: settings.is_some_and(|s| s.neigh_learning),
        icmp_rate: config.icmp.rate,
        icmp_burst: config.icmp.burst,
    }
}

fn wait_for_signals(
    engine: &Engine,
    routes: &RouteTable,
    acl: &Acl,
    config: &Config,
    reload_on_sighup: bool,
    acl_file: Option<&Path>,
    mut keeper: DeviceKeeper<'_>,
) -> Result<(), DaemonError> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(DaemonError::Signals)?;
    let handle = signals.handle();
    let (tx, rx) = mpsc::channel();
    let signal_tx = tx.clone();
    let thread = std::thread::Builder::new()
        .name("weft-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if signal_tx.send(Event::Signal(sig)).is_err() {
                    break;
                }
            }
        })
        .map_err(DaemonError::Signals)?;
    let monitor_stop = Arc::new(AtomicBool::new(false));
    let monitor = keeper.watch(tx.clone(), monitor_stop.clone());
    let mut file_peers = FilePeers {
        routes: config.peers.iter().map(|r| (r.subnet, *r)).collect(),
        vteps: config.vteps.iter().copied().collect(),
    };
    // The file is read on a thread of its own, so that a read that hangs (a FIFO, a stuck
    // network file system) never keeps SIGTERM from being heard.
    let mut reloading = false;
    let result = loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(Event::Signal(SIGHUP)) if reload_on_sighup && reloading => {
                tracing::warn!(
                    "SIGHUP: the previous reload is still reading {}; ignored",
                    config.path.display()
                );
            }
            Ok(Event::Signal(SIGHUP)) if reload_on_sighup => {
                let (path, tx) = (config.path.clone(), tx.clone());
                let spawned = std::thread::Builder::new()
                    .name("weft-reload".into())
                    .spawn(move || {
                        let _ = tx.send(Event::Loaded(Box::new(Config::load(&path))));
                    });
                match spawned {
                    Ok(_) => reloading = true,
                    Err(e) => {
                        tracing::error!(
                            "reload failed: cannot start a thread to read the file: {e}"
                        )
                    }
                }
            }
            Ok(Event::Loaded(loaded)) => {
                reloading = false;
                match *loaded {
                    Ok(new) => {
                        reload(&new, config, routes, &mut file_peers);
                        reload_acl(&new, acl);
                    }
                    Err(e) => {
                        tracing::error!("reload failed, keeping the running configuration: {e}")
                    }
                }
            }
            Ok(Event::Signal(SIGHUP)) => match acl_file {
                // A regular file of at most 1 MiB is all that is read, so this cannot hang.
                Some(path) => match crate::control::config::load_acl_file(path) {
                    Ok((rules, default)) => apply_acl(path, &rules, default, acl),
                    Err(e) => tracing::error!("reload failed, keeping the running acl: {e}"),
                },
                None => tracing::info!("SIGHUP: nothing to reload (no configuration file)"),
            },
            Ok(Event::DeviceGone(i)) => {
                if let Err(e) = keeper.recreate(i, engine) {
                    break Err(e);
                }
            }
            Ok(Event::CheckDevices) => {
                if let Err(e) = keeper.check(engine) {
                    break Err(e);
                }
            }
            Ok(Event::Signal(sig)) => {
                tracing::info!("signal {sig}: shutting down");
                break Ok(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !engine.is_running() {
                    keeper.health.dead.store(true, Ordering::SeqCst);
                    break Ok(());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
        }
    };
    handle.close();
    let _ = thread.join();
    monitor_stop.store(true, Ordering::SeqCst);
    if let Some(monitor) = monitor {
        let _ = monitor.join();
    }
    result
}

/// Whether the devices are all there, and how often one vanished: reported with the
/// counters (`device_up`, `device_lost`).
#[derive(Debug, Default)]
struct DeviceHealth {
    down: AtomicBool,
    lost: std::sync::atomic::AtomicU64,
    /// Some worker has stopped (updated by the main loop).
    dead: AtomicBool,
}

impl DeviceHealth {
    fn report(&self, stats: &mut crate::dataplane::counters::Stats) {
        stats.push("device_up", u64::from(!self.down.load(Ordering::SeqCst)));
        stats.push("device_lost", self.lost.load(Ordering::SeqCst));
    }
}

/// What the metrics endpoint shows of this daemon.
fn metrics_context(
    config: &Config,
    plans: &[DevicePlan],
    engine: &Engine,
    health: &Arc<DeviceHealth>,
    table_ready: Option<Arc<AtomicBool>>,
    acl: &Acl,
) -> MetricsContext {
    let mut labels = vec![
        (
            "backend",
            match config.backend {
                BackendKind::Udp => "udp".to_owned(),
                BackendKind::Vxlan => "vxlan".to_owned(),
            },
        ),
        ("device", config.device.name.clone()),
    ];
    if let Some(vni) = plans[0].vni.as_ref() {
        labels.push(("vni", vni.vni.to_string()));
    }
    let counters = engine.counters_handle();
    let gauge_counters = counters.clone();
    let gauge_health = health.clone();
    let devices: Vec<(String, Option<u32>, bool, RouteTable)> = plans
        .iter()
        .map(|p| {
            (
                p.setup.name.clone(),
                p.vni.as_ref().map(|v| v.vni),
                p.vni.as_ref().is_some_and(|v| v.mode == VxlanMode::L2),
                p.routes.clone(),
            )
        })
        .collect();
    let inspector = engine.inspector();
    let health = health.clone();
    let first_device = config.device.name.clone();
    let acl = acl.clone();
    MetricsContext {
        labels,
        acl: Box::new(move || {
            let set = acl.current();
            let mut hits: Vec<(String, &'static str, u64)> = set
                .rules()
                .iter()
                .enumerate()
                .map(|(i, r)| ((i + 1).to_string(), r.action.name(), set.hits(i)))
                .collect();
            if !hits.is_empty() || !set.is_allow_all() {
                hits.push((
                    "default".into(),
                    set.default_action().name(),
                    set.default_hits(),
                ));
            }
            hits
        }),
        workers: Box::new(move || counters.per_worker()),
        gauges: Box::new(move || {
            let mut gauges = gauge_counters.gauges().to_vec();
            gauges.push((
                "device_up".into(),
                u64::from(!gauge_health.down.load(Ordering::SeqCst)),
            ));
            gauges.push((
                "device_lost".into(),
                gauge_health.lost.load(Ordering::SeqCst),
            ));
            gauges
        }),
        devices: Box::new(move || {
            devices
                .iter()
                .enumerate()
                .map(|(i, (name, vni, l2, routes))| DeviceMetrics {
                    device: name.clone(),
                    vni: *vni,
                    peers: routes.routes().len() + routes.vteps().len(),
                    fdb: if *l2 {
                        inspector
                            .inspect(move |b: &VxlanBackend| b.fdb(i).map(|f| f.len()))
                            .flatten()
                    } else {
                        None
                    },
                })
                .collect()
        }),
        health: Box::new(move || {
            let alive = !health.dead.load(Ordering::SeqCst);
            let down = health.down.load(Ordering::SeqCst);
            let table = table_ready
                .as_ref()
                .is_none_or(|r| r.load(Ordering::SeqCst));
            let problem = if !alive {
                Some("a worker has stopped".to_owned())
            } else if down {
                Some(format!(
                    "device {first_device} (or another) is missing; weft is making it again"
                ))
            } else if !table {
                Some("the control plane has not got its table yet".to_owned())
            } else {
                None
            };
            Health {
                alive,
                ready: alive && !down && table,
                problem,
            }
        }),
    }
}

/// Keeps the devices in place: a device deleted under the running daemon (`ip link del`)
/// is noticed from the kernel's link events, said in the log, and made again with its
/// addresses, the workers taking the new queues; if it cannot be made again, the daemon
/// stops with an error (a non-zero exit for its supervisor).
struct DeviceKeeper<'a> {
    plans: &'a [DevicePlan],
    health: Arc<DeviceHealth>,
    adopted: &'a mut Vec<setup::Adopted>,
}

impl DeviceKeeper<'_> {
    /// Starts the thread that turns link events into [`Event::DeviceGone`].
    fn watch(
        &self,
        tx: mpsc::Sender<Event>,
        stop: Arc<AtomicBool>,
    ) -> Option<std::thread::JoinHandle<()>> {
        let names: Vec<String> = self.plans.iter().map(|p| p.setup.name.clone()).collect();
        let mut monitor = match crate::sys::LinkMonitor::open(Duration::from_millis(200)) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(
                    "cannot watch link events ({e}): a deleted device will not be noticed"
                );
                return None;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("weft-links".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let events = match monitor.next() {
                        Ok(events) => events,
                        Err(e) => {
                            tracing::warn!("link events: {e}; no longer watching the devices");
                            return;
                        }
                    };
                    for event in events {
                        let sent = match event {
                            crate::sys::LinkEvent::Deleted(link) => {
                                match names.iter().position(|n| *n == link.name) {
                                    Some(i) => tx.send(Event::DeviceGone(i)),
                                    None => Ok(()),
                                }
                            }
                            crate::sys::LinkEvent::Lost => tx.send(Event::CheckDevices),
                            _ => Ok(()),
                        };
                        if sent.is_err() {
                            return;
                        }
                    }
                }
            });
        spawned.ok()
    }

    /// Makes device `i` again and hands its queues to the workers.
    fn recreate(&mut self, i: usize, engine: &Engine) -> Result<(), DaemonError> {
        let Some(plan) = self.plans.get(i) else {
            return Ok(());
        };
        let name = &plan.setup.name;
        // A stale event (the device is back already, or was never gone) is not an outage.
        if let Ok(mut nl) = crate::sys::Netlink::open() {
            if matches!(nl.link_by_name(name), Ok(Some(_)))
                && !self.health.down.load(Ordering::SeqCst)
            {
                return Ok(());
            }
        }
        self.health.down.store(true, Ordering::SeqCst);
        self.health.lost.fetch_add(1, Ordering::SeqCst);
        tracing::error!(device = %name, "the device was deleted under the running daemon; recreating it");
        let lost = |source| DaemonError::DeviceLost {
            name: name.clone(),
            source,
        };
        let (first, found) = setup::create_tun(&plan.setup).map_err(lost)?;
        self.adopted.extend(found);
        let offload = first.offload();
        let mut queues = vec![first];
        for _ in 1..engine.status().workers {
            queues.push(setup::open_queue(&plan.setup, offload).map_err(lost)?);
        }
        engine.replace_device(i, queues)?;
        self.health.down.store(false, Ordering::SeqCst);
        tracing::info!(
            device = %name,
            addresses = plan.setup.addresses.len(),
            "the device is recreated; traffic resumes"
        );
        Ok(())
    }

    /// After lost link events: recreates any device that is gone.
    fn check(&mut self, engine: &Engine) -> Result<(), DaemonError> {
        for i in 0..self.plans.len() {
            let gone = crate::sys::Netlink::open()
                .and_then(|mut nl| nl.link_by_name(&self.plans[i].setup.name))
                .is_ok_and(|l| l.is_none());
            if gone {
                self.recreate(i, engine)?;
            }
        }
        Ok(())
    }
}

/// What the daemon's main thread waits for.
enum Event {
    /// A signal arrived.
    Signal(i32),
    /// A reload's reading of the file ended.
    Loaded(Box<Result<Config, ConfigError>>),
    /// Device `.0` (index in the plans) was deleted.
    DeviceGone(usize),
    /// Link events were lost: check that every device is there.
    CheckDevices,
}

/// The ACL counters, with `weft stats`: `acl_rule_<N>_hits` for rule N (from 1, in file
/// order) and `acl_default_hits`.
fn report_acl(acl: &Acl, stats: &mut crate::dataplane::counters::Stats) {
    let set = acl.current();
    for i in 0..set.rules().len() {
        stats.push(&format!("acl_rule_{}_hits", i + 1), set.hits(i));
    }
    stats.push("acl_default_hits", set.default_hits());
}

/// SIGHUP: puts the file's `[[acl]]` rules and `[policy] default` in force, if they changed.
/// Rules that stay keep their counters; traffic both versions allow flows on.
fn reload_acl(new: &Config, acl: &Acl) {
    apply_acl(&new.path, &new.acl, new.acl_default, acl);
}

/// Puts `rules` and `default`, read from `path`, in force if they differ from the running
/// ones.
fn apply_acl(path: &Path, rules: &[AclRule], default: Decision, acl: &Acl) {
    let running = acl.current();
    if running.rules() == rules && running.default_action() == default {
        return;
    }
    acl.replace(AclSet::new(rules.to_vec(), default));
    tracing::info!(
        "reloaded {}: {} acl rule(s), default {}",
        path.display(),
        rules.len(),
        default.name()
    );
}

/// The top-level `[[peer]]` entries the file last said: what a reload compares against.
struct FilePeers {
    routes: BTreeMap<Cidr, Route>,
    vteps: BTreeSet<SocketAddr>,
}

/// SIGHUP, once the file is read again: apply the difference of its top-level `[[peer]]`
/// entries (routes, and VTEPs without a subnet). Entries added at runtime are left alone.
fn reload(new: &Config, running: &Config, routes: &RouteTable, file: &mut FilePeers) {
    if new.device != running.device
        || new.listen != running.listen
        || new.listen6 != running.listen6
        || new.network != running.network
        || new.vxlan != running.vxlan
        || new.fdb != running.fdb
        || new.neigh != running.neigh
        || new.extra_vnis != running.extra_vnis
    {
        tracing::warn!(
            "reload: only top-level [[peer]] entries change without a restart; other changes are ignored"
        );
    }
    let wanted: BTreeMap<Cidr, Route> = new.peers.iter().map(|r| (r.subnet, *r)).collect();
    let wanted_vteps: BTreeSet<SocketAddr> = new.vteps.iter().copied().collect();
    // One batch: the workers see the whole new peer set at once, after one rebuild.
    let mut edits = Vec::new();
    let (mut added, mut removed) = (0, 0);
    for subnet in file.routes.keys() {
        if !wanted.contains_key(subnet) {
            edits.push(RouteEdit::Remove(*subnet));
            removed += 1;
        }
    }
    for vtep in file.vteps.difference(&wanted_vteps) {
        edits.push(RouteEdit::RemoveVtep(*vtep));
        removed += 1;
    }
    for (subnet, route) in &wanted {
        if file.routes.get(subnet) != Some(route) {
            edits.push(RouteEdit::Insert(*route));
            added += 1;
        }
    }
    for vtep in wanted_vteps.difference(&file.vteps) {
        edits.push(RouteEdit::InsertVtep(*vtep));
        added += 1;
    }
    if let Err(e) = routes.apply(edits) {
        tracing::error!("reload failed, keeping the running peers: {e}");
        return;
    }
    *file = FilePeers {
        routes: wanted,
        vteps: wanted_vteps,
    };
    tracing::info!(
        "reloaded {}: {added} peer(s) added or changed, {removed} removed",
        new.path.display()
    );
}
