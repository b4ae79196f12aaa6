//! A policy hook: a point-to-point tunnel over flannel UDP that lets exactly one TCP port
//! through between this host's subnet and the peer's, and drops everything else between
//! them (ping included), counted as `drop_policy`.
//!
//! ```text
//! # host A (198.18.0.1, overlay 100.96.1.0/24), host B the other way round:
//! sudo cargo run -p weft-examples --bin weft-policy -- \
//!     --device vpn0 --address 100.96.1.0/16 --listen 198.18.0.1:8285 \
//!     --peer 100.96.2.0/24=198.18.0.2:8285 --port 5001 --seconds 60
//! ```
//!
//! Then on B `nc -l 5001` and on A `nc 100.96.2.0 5001` connect; port 5002 and ping do not.
//! It stops after `--seconds` or on Ctrl-C, printing the engine's counters.
//! The policy is a plain closure: the engine is generic over it, so it is called directly
//! (no virtual call) for every packet on both paths, after the backend chose the peer on the
//! way out and before the device on the way in.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use weft::control::provision::{bind_udp, create_tun, TunSetup};
use weft::{Engine, RouteTable, TunOptions};
use weft_encap::flannel::{FlannelConfig, OVERHEAD_V4};
use weft_encap::policy::{Decision, FlowKey, PolicyContext};
use weft_encap::table::{Cidr, Route};
use weft_encap::wire::PROTO_TCP;

struct Args {
    device: String,
    address: (IpAddr, u8),
    listen: SocketAddr,
    peer: Route,
    port: u16,
    seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut flags = std::collections::HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        flags.insert(flag, value);
    }
    let mut take = |flag: &str| flags.remove(flag).ok_or(format!("{flag} is required"));
    let address = take("--address")?;
    let (ip, len) = address
        .split_once('/')
        .and_then(|(ip, len)| Some((ip.parse().ok()?, len.parse().ok()?)))
        .ok_or(format!("--address {address:?}: expected IP/LEN"))?;
    let listen = take("--listen")?;
    let peer = take("--peer")?;
    let (subnet, endpoint) = peer
        .split_once('=')
        .ok_or(format!("--peer {peer:?}: expected SUBNET=IP:PORT"))?;
    let port = take("--port")?;
    let seconds = take("--seconds").unwrap_or_else(|_| "60".to_owned());
    let args = Args {
        device: take("--device").unwrap_or_else(|_| "vpn0".to_owned()),
        address: (ip, len),
        listen: listen
            .parse()
            .map_err(|_| format!("--listen {listen:?}: expected IP:PORT"))?,
        peer: Route {
            subnet: subnet
                .parse()
                .map_err(|e| format!("--peer {peer:?}: {e}"))?,
            endpoint: endpoint
                .parse()
                .map_err(|_| format!("--peer {peer:?}: bad endpoint"))?,
            vtep_mac: None,
        },
        port: port
            .parse()
            .map_err(|_| format!("--port {port:?}: not a port"))?,
        seconds: seconds
            .parse()
            .map_err(|_| format!("--seconds {seconds:?}: not a number"))?,
    };
    match flags.keys().next() {
        Some(unknown) => Err(format!("unknown flag {unknown:?}")),
        None => Ok(args),
    }
}

/// Between `local` and `remote` (either way), only TCP to or from `port`; anything else is
/// none of this policy's business.
fn one_port(
    local: Cidr,
    remote: Cidr,
    port: u16,
) -> impl Fn(&FlowKey, &PolicyContext) -> Decision + Clone {
    move |flow, _ctx| {
        let between = (local.contains(flow.src) && remote.contains(flow.dst))
            || (remote.contains(flow.src) && local.contains(flow.dst));
        let allowed =
            flow.protocol == PROTO_TCP && (flow.dst_port == port || flow.src_port == port);
        if !between || allowed {
            Decision::Allow
        } else {
            Decision::Drop
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let max_payload = 1500 - OVERHEAD_V4;
    let socket = bind_udp(args.listen)?;
    let (tun, _found) = create_tun(&TunSetup {
        name: args.device.clone(),
        options: TunOptions::default(),
        mtu: max_payload as u32,
        addresses: vec![args.address],
        mac: None,
        bridge: None,
        persist: false,
    })?;
    let IpAddr::V4(local_v4) = args.address.0 else {
        return Err("--address must be IPv4".into());
    };
    // This host's subnet: the peer's prefix length around our address.
    let local = Cidr::containing(args.address.0, args.peer.subnet.prefix_len())?;
    let engine = Engine::builder(tun, socket)
        .routes(RouteTable::new([args.peer])?)
        .flannel(FlannelConfig {
            local_v4: Some(local_v4),
            max_payload,
            ..FlannelConfig::default()
        })
        .policy(one_port(local, args.peer.subnet, args.port))
        .spawn()?;
    println!(
        "{} up: only TCP port {} between {local} and {}",
        args.device, args.port, args.peer.subnet
    );
    // SIGINT/SIGTERM end the run early, with the counters printed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    while Instant::now() < deadline
        && engine.is_running()
        && !stop.load(std::sync::atomic::Ordering::Relaxed)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    print!("{}", engine.stats());
    engine.shutdown()?;
    Ok(())
}

fn main() -> ExitCode {
    let result = parse_args().map_err(Into::into).and_then(run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-policy: {e}");
            ExitCode::FAILURE
        }
    }
}
