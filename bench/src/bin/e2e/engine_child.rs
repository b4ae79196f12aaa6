//! `weft-e2e-bench engine`: `weft run` rebuilt from the library with a chosen batch size.
//!
//! `weft run` has no configuration key for the engine's batch size, so the `weft-udp-batch1`
//! setup runs this instead, inside each host namespace: the same steps as
//! `weft::daemon::run` (load the configuration, bind the socket, create and configure the
//! TUN, start the engine with the daemon's backend settings) plus
//! [`weft::EngineBuilder::batch_size`], and no control socket or SIGHUP reload. It prints
//! [`READY_LINE`] once the engine runs; on SIGTERM or SIGINT, or when its lifetime ends, it
//! prints [`STATS_MARKER`] and the engine's counters, and stops the engine (the kernel removes
//! the TUN).

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use weft::config::Config;
use weft::daemon;
use weft::setup::{self, TunSetup};
use weft::{Engine, RouteTable, TunOptions};

use crate::setups::{READY_LINE, STATS_MARKER};

/// How often the stop flag and the engine are looked at.
const POLL: Duration = Duration::from_millis(20);

/// Runs the engine of the configuration at `config` with `batch` packets per system call
/// until a signal arrives or `lifetime` passes.
pub fn run(config: &Path, batch: usize, lifetime: Duration) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let config = Config::load(config)?;
    let mtus = daemon::mtus(&config)?;
    let socket = setup::bind_udp(config.listen)?;
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
    })?;
    let routes = RouteTable::new(config.peers.iter().copied())?;
    let engine = Engine::builder(tun, socket)
        .routes(routes)
        .flannel(daemon::flannel_config(&config, &mtus))
        .batch_size(batch)
        .spawn()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{READY_LINE}")?;
    stdout.flush()?;

    let deadline = Instant::now() + lifetime;
    while !stop.load(Ordering::Relaxed) && engine.is_running() && Instant::now() < deadline {
        thread::sleep(POLL);
    }
    write!(stdout, "{STATS_MARKER}\n{}", engine.stats())?;
    stdout.flush()?;
    engine.shutdown()?;
    Ok(())
}
