//! `weft run`: the flanneld-style daemon assembled from the library's parts.
//!
//! Order matters, so that a `weft stats` that answers means "fully up", and a failure leaves
//! nothing behind: load the configuration, bind the UDP socket (a port in use fails before
//! any device exists), create and configure the TUN, start the engine, then open the control
//! socket. SIGHUP re-reads the file and applies the difference in `[[peer]]` routes (routes
//! added at runtime through the control socket are kept); SIGINT/SIGTERM stop the engine,
//! which closes the TUN, and the kernel removes the device with its addresses and routes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use weft_encap::flannel::{FlannelConfig, OVERHEAD_V4, OVERHEAD_V6};
use weft_encap::table::{Cidr, Route};

use crate::config::{Config, ConfigError};
use crate::control::{ControlContext, ControlError, ControlServer};
use crate::engine::{Engine, EngineError};
use crate::routes::RouteTable;
use crate::setup::{self, SetupError, TunSetup};
use crate::sys::TunOptions;

/// Why the daemon could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Setting up the device or socket failed; `key` names the configuration key involved.
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
    Signals(#[source] std::io::Error),
}

/// The sizes derived from the configuration and the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mtus {
    /// The underlay path MTU.
    pub underlay: u32,
    /// The TUN device MTU.
    pub device: u32,
    /// The largest datagram payload that fits the underlay unfragmented.
    pub max_payload: u32,
}

/// Works out the MTUs: `underlay_mtu`, else the MTU of the interface that holds the listen
/// address, else 1500; the device gets the underlay MTU minus the encapsulation overhead
/// unless `[device] mtu` says otherwise.
pub fn mtus(config: &Config) -> Result<Mtus, DaemonError> {
    let underlay = match config.underlay_mtu {
        Some(m) => m,
        None => match setup::interface_mtu(config.listen.ip()) {
            Ok(Some(m)) => m,
            Ok(None) => {
                log::info!(
                    "no interface holds {}; assuming an underlay MTU of 1500 (set underlay_mtu)",
                    config.listen.ip()
                );
                1500
            }
            Err(e) => {
                log::warn!("cannot read the underlay MTU ({e}); assuming 1500");
                1500
            }
        },
    };
    let overhead = if config.listen.is_ipv4() {
        OVERHEAD_V4
    } else {
        OVERHEAD_V6
    } as u32;
    let max_payload = underlay.saturating_sub(overhead);
    Ok(Mtus {
        underlay,
        device: config.device.mtu.unwrap_or(max_payload),
        max_payload,
    })
}

/// Runs the daemon described by the configuration file at `path` until SIGINT or SIGTERM.
pub fn run(path: &Path) -> Result<(), DaemonError> {
    let config = Config::load(path)?;
    let file = config.path.display().to_string();
    let mtus = mtus(&config)?;

    let socket = setup::bind_udp(config.listen).map_err(|source| DaemonError::Setup {
        path: file.clone(),
        key: format!(
            "[listen] address = {:?}, port = {}",
            config.listen.ip().to_string(),
            config.listen.port()
        ),
        source,
    })?;

    let mut addresses = vec![(
        IpAddr::V4(config.device.address),
        config.network.prefix_len(),
    )];
    if let (Some(a6), Some(n6)) = (config.device.address6, config.network6) {
        addresses.push((IpAddr::V6(a6), n6.prefix_len()));
    }
    let tun = setup::create_tun(&TunSetup {
        name: config.device.name.clone(),
        options: TunOptions::default(),
        mtu: mtus.device,
        addresses,
    })
    .map_err(|source| DaemonError::Setup {
        path: file.clone(),
        key: format!("[device] name = {:?}", config.device.name),
        source,
    })?;

    let routes =
        RouteTable::new(config.peers.iter().copied()).map_err(|e| DaemonError::Routes {
            path: file.clone(),
            message: e.to_string(),
        })?;
    let engine = Engine::builder(tun, socket)
        .routes(routes.clone())
        .flannel(flannel_config(&config, &mtus))
        .batch_size(config.batch)
        .spawn()?;

    let counters = engine_stats_source(&engine);
    let mut networks = vec![config.network];
    networks.extend(config.network6);
    let mut local_addresses = vec![IpAddr::V4(config.device.address)];
    local_addresses.extend(config.device.address6.map(IpAddr::V6));
    let control = ControlServer::start(
        &config.control_socket,
        ControlContext {
            routes: routes.clone(),
            stats: counters,
            default_port: config.listen.port(),
            networks,
            local_addresses,
            ipv4_underlay: config.listen.is_ipv4(),
        },
    )
    .map_err(|source| DaemonError::Control {
        path: file.clone(),
        source,
    })?;

    log::info!(
        "up: device {} ({}/{}, mtu {}), udp {}, {} peer route(s), control {}",
        config.device.name,
        config.device.address,
        config.network.prefix_len(),
        mtus.device,
        config.listen,
        config.peers.len(),
        config.control_socket
    );

    let result = wait_for_signals(&engine, &routes, &config);
    drop(control);
    let stopped = engine.shutdown();
    log::info!("stopped; device {} removed", config.device.name);
    result.and(stopped.map_err(DaemonError::from))
}

fn engine_stats_source(engine: &Engine) -> Box<dyn Fn() -> crate::counters::Stats + Send + Sync> {
    let counters = engine.counters_handle();
    Box::new(move || counters.snapshot())
}

/// The backend settings a configuration implies.
pub fn flannel_config(config: &Config, mtus: &Mtus) -> FlannelConfig {
    FlannelConfig {
        local_v4: Some(config.device.address),
        local_v6: config.device.address6,
        max_payload: mtus.max_payload as usize,
        check_peer: config.validation.check_peer,
        check_inner_source: config.validation.check_inner_source,
        icmp_rate: config.icmp.rate,
        icmp_burst: config.icmp.burst,
    }
}

fn wait_for_signals(
    engine: &Engine,
    routes: &RouteTable,
    config: &Config,
) -> Result<(), DaemonError> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(DaemonError::Signals)?;
    let handle = signals.handle();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("weft-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        })
        .map_err(DaemonError::Signals)?;
    let mut file_routes: BTreeMap<Cidr, Route> =
        config.peers.iter().map(|r| (r.subnet, *r)).collect();
    let result = loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(SIGHUP) => reload(&config.path, config, routes, &mut file_routes),
            Ok(sig) => {
                log::info!("signal {sig}: shutting down");
                break Ok(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !engine.is_running() {
                    break Ok(());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
        }
    };
    handle.close();
    let _ = thread.join();
    result
}

/// SIGHUP: re-read the file and apply the difference of its `[[peer]]` routes.
fn reload(
    path: &Path,
    running: &Config,
    routes: &RouteTable,
    file_routes: &mut BTreeMap<Cidr, Route>,
) {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            log::error!("reload failed, keeping the running configuration: {e}");
            return;
        }
    };
    if new.device != running.device
        || new.listen != running.listen
        || new.network != running.network
    {
        log::warn!(
            "reload: [device], [listen] and network changes need a restart; applying [[peer]] only"
        );
    }
    let wanted: BTreeMap<Cidr, Route> = new.peers.iter().map(|r| (r.subnet, *r)).collect();
    let (mut added, mut removed) = (0, 0);
    for subnet in file_routes.keys() {
        if !wanted.contains_key(subnet) && routes.remove(subnet).is_some() {
            removed += 1;
        }
    }
    for (subnet, route) in &wanted {
        if file_routes.get(subnet) != Some(route) {
            match routes.insert(*route) {
                Ok(_) => added += 1,
                Err(e) => log::error!("reload: {subnet}: {e}"),
            }
        }
    }
    *file_routes = wanted;
    log::info!(
        "reloaded {}: {added} route(s) added or changed, {removed} removed",
        path.display()
    );
}
