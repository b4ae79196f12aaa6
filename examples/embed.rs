//! The point-to-point tunnel: a minimal VPN built on the weft library, one TUN device, one
//! UDP socket, static peers. It is the seed's ipip experiment done with weft over UDP: two
//! hosts, one tunnel between them (and, with more `--peer`s, one per peer; `weft-hub` shows
//! routes that change at runtime).
//!
//! ```text
//! sudo cargo run -p weft-examples --bin weft-embed -- \
//!     --device vpn0 --address 100.96.1.0/16 --listen 198.18.0.1:8285 \
//!     --peer 100.96.2.0/24=198.18.0.2:8285
//! ```
//!
//! It creates and configures the device with `weft::control::provision`, builds an engine with the flannel
//! UDP encapsulation, prints the counters every few seconds, and stops after `--seconds`
//! (or on Ctrl-C: the device is not persistent, so the kernel removes it with the process). Run the same on the other host with the roles
//! swapped and the two can ping each other's overlay addresses.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use weft::control::provision::{bind_udp, create_tun, TunSetup};
use weft::{Engine, RouteTable, TunOptions};
use weft_encap::flannel::{FlannelConfig, OVERHEAD_V4};
use weft_encap::table::{Cidr, Route};

struct Args {
    device: String,
    address: (IpAddr, u8),
    listen: std::net::SocketAddr,
    peers: Vec<Route>,
    seconds: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut device = "vpn0".to_owned();
    let mut address = None;
    let mut listen = None;
    let mut peers = Vec::new();
    let mut seconds = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--device" => device = value()?,
            "--address" => {
                let v = value()?;
                let (ip, len) = v
                    .split_once('/')
                    .ok_or(format!("--address {v:?}: expected IP/LEN"))?;
                let ip: IpAddr = ip.parse().map_err(|_| format!("--address {v:?}: bad IP"))?;
                let len: u8 = len
                    .parse()
                    .map_err(|_| format!("--address {v:?}: bad length"))?;
                address = Some((ip, len));
            }
            "--listen" => {
                let v = value()?;
                listen = Some(
                    v.parse()
                        .map_err(|_| format!("--listen {v:?}: expected IP:PORT"))?,
                );
            }
            "--peer" => {
                let v = value()?;
                let (subnet, endpoint) = v
                    .split_once('=')
                    .ok_or(format!("--peer {v:?}: expected SUBNET=IP:PORT"))?;
                let subnet: Cidr = subnet.parse().map_err(|e| format!("--peer {v:?}: {e}"))?;
                let endpoint = endpoint
                    .parse()
                    .map_err(|_| format!("--peer {v:?}: bad endpoint"))?;
                peers.push(Route {
                    subnet,
                    endpoint,
                    vtep_mac: None,
                });
            }
            "--seconds" => {
                let v = value()?;
                seconds = Some(
                    v.parse()
                        .map_err(|_| format!("--seconds {v:?}: not a number"))?,
                );
            }
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok(Args {
        device,
        address: address.ok_or("--address is required")?,
        listen: listen.ok_or("--listen is required")?,
        peers,
        seconds,
    })
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let underlay_mtu = 1500;
    let max_payload = underlay_mtu - OVERHEAD_V4;
    let socket = bind_udp(args.listen)?;
    // A persistent device of that name is adopted; `_found` leaves it as it was on exit.
    let (tun, _found) = create_tun(&TunSetup {
        name: args.device.clone(),
        options: TunOptions::default(),
        mtu: max_payload as u32,
        addresses: vec![args.address],
        mac: None,
        bridge: None,
        persist: false,
    })?;
    let routes = RouteTable::new(args.peers)?;
    let local_v4 = match args.address.0 {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    };
    let engine = Engine::builder(tun, socket)
        .routes(routes.clone())
        .flannel(FlannelConfig {
            local_v4,
            max_payload,
            ..FlannelConfig::default()
        })
        .spawn()?;
    println!(
        "{} up, {} route(s); Ctrl-C to stop",
        args.device,
        routes.routes().len()
    );

    let deadline = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut last_print = Instant::now();
    while deadline.is_none_or(|d| Instant::now() < d) && engine.is_running() {
        std::thread::sleep(Duration::from_millis(200));
        if last_print.elapsed() >= Duration::from_secs(5) {
            let s = engine.stats();
            println!(
                "tx {} packets, rx {} packets, dropped (no route) {}",
                s.get("tx_packets").unwrap_or(0),
                s.get("rx_packets").unwrap_or(0),
                s.get("drop_no_route").unwrap_or(0)
            );
            last_print = Instant::now();
        }
    }
    print!("{}", engine.stats());
    engine.shutdown()?;
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("embed: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed: {e}");
            ExitCode::FAILURE
        }
    }
}
