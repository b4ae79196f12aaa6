//! A hub with spokes whose routes change at runtime: one engine (flannel UDP encapsulation)
//! on a TUN device, and a live [`RouteTable`] edited from commands read on stdin while
//! traffic flows.
//!
//! Start the hub on host 1, with a route to the spoke on host 2:
//!
//! ```text
//! sudo cargo run -p weft-examples --bin weft-hub -- \
//!     --device vpn0 --address 100.96.1.0/16 --listen 198.18.0.1:8285 \
//!     --peer 100.96.2.0/24=198.18.0.2:8285
//! ```
//!
//! Each spoke can be `weft-embed` sending the whole overlay to the hub (on host N):
//!
//! ```text
//! sudo cargo run -p weft-examples --bin weft-embed -- \
//!     --device vpn0 --address 100.96.N.0/16 --listen 198.18.0.N:8285 \
//!     --peer 100.96.0.0/16=198.18.0.1:8285
//! ```
//!
//! Then type commands into the hub, one per line:
//!
//! ```text
//! add 100.96.3.0/24 198.18.0.3:8285       add (or replace) the route to a spoke
//! remove 100.96.2.0/24                    remove a route
//! add 100.96.4.0/24 198.18.0.4:8285; remove 100.96.3.0/24
//!                                         several edits, applied as one change
//! routes                                  list the routes
//! stats                                   print the engine's counters
//! quit                                    stop (so does the end of stdin, or Ctrl-C)
//! ```
//!
//! Every command line is answered with one line starting `ok:` or `error:` (after the
//! listing, for `routes` and `stats`), so a program driving the hub through a pipe knows
//! when a change is live. The edits of one line go to [`RouteTable::apply`]: one new
//! routing snapshot for the whole line, published only if the result is valid; the worker
//! picks it up at its next batch, with no lock on the data path. A packet for a subnet with
//! no route is answered with an ICMP net unreachable (and counted as `drop_no_route`).
//!
//! For spokes to reach each other through the hub, enable forwarding on the hub host
//! (`sysctl net.ipv4.ip_forward=1`): a packet from one spoke comes out of the hub's TUN, the
//! kernel routes it back into the TUN, and the engine sends it on to the other spoke.

use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use weft::control::provision::{bind_udp, create_tun, TunSetup};
use weft::{Engine, RouteEdit, RouteTable, TunOptions};
use weft_encap::flannel::{FlannelConfig, OVERHEAD_V4};
use weft_encap::table::{Cidr, Route};

struct Args {
    device: String,
    address: (IpAddr, u8),
    listen: SocketAddr,
    peers: Vec<Route>,
}

fn parse_args() -> Result<Args, String> {
    let mut device = "vpn0".to_owned();
    let mut address = None;
    let mut listen = None;
    let mut peers = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(
                "usage: weft-hub --address IP/LEN --listen IP:PORT [--device NAME] \
                 [--peer SUBNET=IP:PORT]...; then commands on stdin (see the source's doc)"
                    .to_owned(),
            );
        }
        let v = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--device" => device = v,
            "--address" => {
                let parsed = v.split_once('/').and_then(|(ip, len)| {
                    Some((ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?))
                });
                address = Some(parsed.ok_or(format!("--address {v:?}: expected IP/LEN"))?);
            }
            "--listen" => {
                listen = Some(
                    v.parse()
                        .map_err(|_| format!("--listen {v:?}: expected IP:PORT"))?,
                );
            }
            "--peer" => {
                let (subnet, endpoint) = v
                    .split_once('=')
                    .ok_or(format!("--peer {v:?}: expected SUBNET=IP:PORT"))?;
                peers.push(route(subnet, endpoint).map_err(|e| format!("--peer {v:?}: {e}"))?);
            }
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok(Args {
        device,
        address: address.ok_or("--address is required")?,
        listen: listen.ok_or("--listen is required")?,
        peers,
    })
}

fn route(subnet: &str, endpoint: &str) -> Result<Route, String> {
    Ok(Route {
        subnet: subnet
            .parse()
            .map_err(|e| format!("bad subnet {subnet:?}: {e}"))?,
        endpoint: endpoint
            .parse()
            .map_err(|_| format!("bad endpoint {endpoint:?}: expected IP:PORT"))?,
        vtep_mac: None,
    })
}

/// One line of input.
#[derive(Debug, PartialEq)]
enum Command {
    /// A blank line or a `#` comment: nothing to do, no reply.
    Nothing,
    /// Route edits, applied together.
    Edit(Vec<RouteEdit>),
    Routes,
    Stats,
    Quit,
}

fn parse_command(line: &str) -> Result<Command, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Command::Nothing);
    }
    match line {
        "routes" => return Ok(Command::Routes),
        "stats" => return Ok(Command::Stats),
        "quit" | "exit" => return Ok(Command::Quit),
        _ => {}
    }
    let mut edits = Vec::new();
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let words: Vec<&str> = part.split_whitespace().collect();
        let edit = match words.as_slice() {
            ["add", subnet, endpoint] => RouteEdit::Insert(route(subnet, endpoint)?),
            ["remove" | "del", subnet] => RouteEdit::Remove(
                subnet
                    .parse::<Cidr>()
                    .map_err(|e| format!("bad subnet {subnet:?}: {e}"))?,
            ),
            _ => {
                return Err(format!(
                    "cannot parse {part:?}: expected `add SUBNET IP:PORT`, `remove SUBNET`, \
                     `routes`, `stats` or `quit`"
                ))
            }
        };
        edits.push(edit);
    }
    Ok(Command::Edit(edits))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let underlay_mtu = 1500;
    let max_payload = underlay_mtu - OVERHEAD_V4;
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
        "ready: {} up, listening on {}, {} route(s)",
        args.device,
        args.listen,
        routes.routes().len()
    );

    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if !engine.is_running() {
            return Err("the engine stopped".into());
        }
        match parse_command(&line) {
            Ok(Command::Nothing) => {}
            Ok(Command::Quit) => break,
            Ok(Command::Routes) => {
                let all = routes.routes();
                for r in &all {
                    println!("{} via {}", r.subnet, r.endpoint);
                }
                println!("ok: {} route(s)", all.len());
            }
            Ok(Command::Stats) => {
                print!("{}", engine.stats());
                println!("ok: stats");
            }
            Ok(Command::Edit(edits)) => match routes.apply(edits) {
                Ok(changed) => println!(
                    "ok: {changed} change(s), {} route(s)",
                    routes.routes().len()
                ),
                Err(e) => println!("error: {e} (nothing changed)"),
            },
            Err(e) => println!("error: {e}"),
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
            eprintln!("hub: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse_command("  ").unwrap(), Command::Nothing);
        assert_eq!(parse_command("# note").unwrap(), Command::Nothing);
        assert_eq!(parse_command("stats").unwrap(), Command::Stats);
        assert_eq!(parse_command("routes").unwrap(), Command::Routes);
        assert_eq!(parse_command("quit").unwrap(), Command::Quit);
        let r = route("100.96.3.0/24", "198.18.0.3:8285").unwrap();
        assert_eq!(
            parse_command("add 100.96.3.0/24 198.18.0.3:8285").unwrap(),
            Command::Edit(vec![RouteEdit::Insert(r)])
        );
        assert_eq!(
            parse_command("add 100.96.3.0/24 198.18.0.3:8285; remove 100.96.2.0/24;").unwrap(),
            Command::Edit(vec![
                RouteEdit::Insert(r),
                RouteEdit::Remove("100.96.2.0/24".parse().unwrap())
            ])
        );
        for bad in [
            "add 100.96.3.0/24",
            "add 100.96.3.0/33 198.18.0.3:8285",
            "add 100.96.3.0/24 198.18.0.3",
            "remove nonsense",
            "frobnicate",
        ] {
            assert!(parse_command(bad).is_err(), "{bad}");
        }
    }
}
