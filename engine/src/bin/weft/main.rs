//! The `weft` command: a thin wrapper over the `weft` library.
//!
//! Every failure ends in one line on stderr, `weft: <what failed, on what>: <why>`, and a
//! non-zero exit; never a backtrace.

mod demo;
mod flannel;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use weft::control::config::{default_control_socket, Config};
use weft::control::socket as control;
use weft_encap::table::Cidr;

/// weft: a userspace overlay dataplane, wire-compatible with flanneld's UDP backend.
#[derive(Parser)]
#[command(name = "weft", version, about, long_about = None)]
struct Cli {
    /// Log level: error, warn, info, debug or trace (or set WEFT_LOG).
    #[arg(long, global = true, value_name = "LEVEL", value_parser = parse_level)]
    log_level: Option<LevelFilter>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: create the device, carry traffic until SIGINT/SIGTERM.
    Run {
        /// The configuration file (TOML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Join a flannel network as flanneld does: network config and subnet leases in etcd,
    /// subnet.env for the CNI plugin, routes kept in step with the other hosts' leases.
    Flannel(Box<flannel::FlannelArgs>),
    /// flanneld's extension backend hooks: point PreStartupCommand, PostStartupCommand,
    /// SubnetAddCommand and SubnetRemoveCommand at `weft ext pre|post|add|remove`.
    Ext {
        /// Which hook flanneld is running.
        #[arg(value_enum)]
        hook: ExtHook,
        /// Where the daemon's configuration, pid and log are kept.
        #[arg(long, value_name = "DIR", default_value = "/run/weft-ext")]
        state_dir: PathBuf,
        /// The TUN device (and control socket @weft/DEVICE).
        #[arg(long, value_name = "NAME", default_value = "flannel0")]
        device: String,
        /// The UDP port of the flannel wire format, the same on every host.
        #[arg(long, value_name = "PORT", default_value_t = 8285)]
        port: u16,
    },
    /// Check a configuration file and print what it sets up, without running anything.
    Check {
        /// The configuration file (TOML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Add, remove or list peer routes of a running daemon.
    Peer {
        #[command(subcommand)]
        action: PeerAction,
    },
    /// List, add or remove VXLAN L2 forwarding entries (MAC -> VTEP) of a running daemon.
    Fdb {
        #[command(subcommand)]
        action: FdbAction,
    },
    /// List, add or remove VXLAN L2 neighbour entries (IP -> MAC) of a running daemon: what
    /// the ARP/ND proxy (`[vxlan] proxy`) answers with.
    Neigh {
        #[command(subcommand)]
        action: NeighAction,
    },
    /// Show a running daemon's `[[acl]]` rules with their hit counts.
    Acl {
        #[command(subcommand)]
        action: AclAction,
    },
    /// Print a running daemon's counters, one `name value` per line.
    Stats {
        #[command(flatten)]
        target: Target,
    },
    /// Build two hosts in network namespaces on this machine, run traffic through weft
    /// between them, show what went through, and clean up.
    Demo,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExtHook {
    /// PreStartupCommand: prints the BackendData line.
    Pre,
    /// PostStartupCommand: starts the data plane for NETWORK, SUBNET, PUBLIC_IP.
    Post,
    /// SubnetAddCommand: routes SUBNET to PUBLIC_IP.
    Add,
    /// SubnetRemoveCommand: removes the route to SUBNET.
    Remove,
}

#[derive(Subcommand)]
enum PeerAction {
    /// Route SUBNET to the host at ENDPOINT (replaces an existing route for SUBNET); without
    /// --subnet, add ENDPOINT as a VXLAN l2 VTEP that gets flooded frames.
    Add {
        /// The peer's overlay subnet, e.g. 100.96.2.0/24.
        #[arg(long, value_name = "CIDR")]
        subnet: Option<Cidr>,
        /// The peer's underlay address, IP or IP:PORT (default port: the daemon's).
        #[arg(long, value_name = "IP[:PORT]")]
        endpoint: String,
        /// The peer's VTEP MAC (VXLAN L3 mode).
        #[arg(long, value_name = "MAC")]
        vtep_mac: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Remove the route for SUBNET, or the VXLAN l2 VTEP at ENDPOINT.
    Del {
        /// The overlay subnet, e.g. 100.96.2.0/24.
        #[arg(long, value_name = "CIDR")]
        subnet: Option<Cidr>,
        /// The VTEP's underlay address (a peer without a subnet).
        #[arg(long, value_name = "IP[:PORT]")]
        endpoint: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List the routes: `<subnet> <endpoint>[ <vtep mac>]` per line, then `vtep <endpoint>`.
    List {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum AclAction {
    /// One line per rule, in order: `<n> <action> [in|out] <protocol> from <cidr|any> [port
    /// P] to <cidr|any> [port P] hits <count>`, then `default <action> hits <count>`.
    List {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum FdbAction {
    /// One `<mac> <endpoint> learned|static` line per entry.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Add a static entry: frames for MAC go to the VTEP at ENDPOINT.
    Add {
        /// The inner MAC address.
        #[arg(long, value_name = "MAC")]
        mac: String,
        /// The VTEP's underlay address.
        #[arg(long, value_name = "IP[:PORT]")]
        endpoint: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a static entry.
    Del {
        /// The inner MAC address.
        #[arg(long, value_name = "MAC")]
        mac: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum NeighAction {
    /// One `<ip> <mac> learned|static` line per entry.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Add a static entry: the proxy answers for IP with MAC.
    Add {
        /// The overlay address (IPv4 or IPv6).
        #[arg(long, value_name = "IP")]
        ip: String,
        /// The MAC the address is at.
        #[arg(long, value_name = "MAC")]
        mac: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a static entry.
    Del {
        /// The overlay address.
        #[arg(long, value_name = "IP")]
        ip: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Which daemon to talk to.
#[derive(Args)]
struct Target {
    /// The daemon's device; its control socket is @weft/<DEVICE>.
    #[arg(long, value_name = "NAME", default_value = "flannel0")]
    device: String,
    /// The control socket, when not the device's default (a path, or @name).
    #[arg(long, value_name = "SOCKET")]
    control: Option<String>,
    /// The VNI to act on (VXLAN with several VNIs; default: the one in [vxlan]).
    #[arg(long, value_name = "N")]
    vni: Option<u32>,
}

impl Target {
    fn socket(&self) -> String {
        self.control
            .clone()
            .unwrap_or_else(|| default_control_socket(&self.device))
    }
}

fn parse_level(s: &str) -> Result<LevelFilter, String> {
    s.parse()
        .map_err(|_| "expected off, error, warn, info, debug or trace".to_owned())
}

/// One line per event on stderr: `weft: <level>: <message> key=value ...` (the event's
/// fields, e.g. `device=flannel0 peer=198.18.0.2:8285 vni=1`).
struct LineFormat;

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        write!(writer, "weft: {level}: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Sends every event (and the `log` records of the libraries) through `tracing` to stderr,
/// up to `level`.
fn init_logging(level: LevelFilter) {
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .event_format(LineFormat)
        .try_init();
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    let line = message
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let _ = writeln!(std::io::stderr(), "weft: {line}");
    ExitCode::FAILURE
}

fn print_lines(lines: &[String]) {
    let mut out = std::io::stdout().lock();
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
}

fn talk(target: &Target, request: &str) -> ExitCode {
    let request = match target.vni {
        Some(vni) => format!("vni {vni} {request}"),
        None => request.to_owned(),
    };
    match control::request(&target.socket(), &request) {
        Ok(lines) => {
            print_lines(&lines);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // clap's message is several lines; keep the one that says what is wrong.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let _ = writeln!(std::io::stderr(), "weft: {first} (see weft --help)");
            return ExitCode::from(2);
        }
    };
    let level = cli.log_level.unwrap_or_else(|| {
        std::env::var("WEFT_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(LevelFilter::INFO)
    });
    init_logging(level);

    match cli.command {
        Command::Run { config } => match weft::control::daemon::run(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Command::Flannel(args) => match args.options() {
            Ok(options) => match weft::control::flanneld::run(options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            },
            Err(flannel::FlagError(line)) => {
                let _ = writeln!(std::io::stderr(), "weft: flannel: {line}");
                ExitCode::from(2)
            }
        },
        Command::Ext {
            hook,
            state_dir,
            device,
            port,
        } => {
            use weft::control::extension::{run_hook, ExtOptions, Hook};
            let hook = match hook {
                ExtHook::Pre => Hook::Pre,
                ExtHook::Post => Hook::Post,
                ExtHook::Add => Hook::Add,
                ExtHook::Remove => Hook::Remove,
            };
            let weft = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("weft"));
            let options = ExtOptions {
                state_dir,
                device,
                port,
                weft,
            };
            match run_hook(hook, &options, &|name| std::env::var(name).ok()) {
                Ok(line) => {
                    if !line.is_empty() {
                        println!("{line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("ext: {e}")),
            }
        }
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                let mtus = weft::control::daemon::mtus(&c);
                println!("{}: ok", c.path.display());
                let backend = match &c.vxlan {
                    Some(v) => format!("vxlan vni {} mode {:?}", v.vni, v.mode).to_lowercase(),
                    None => "udp".to_owned(),
                };
                println!("backend {backend}");
                if let Some(group) = c.vxlan.as_ref().and_then(|v| v.group) {
                    println!("group {group}");
                }
                match c.device.address {
                    Some(a) => println!(
                        "device {} address {a}/{}",
                        c.device.name,
                        c.network.prefix_len()
                    ),
                    None => println!("device {} (no address)", c.device.name),
                }
                println!("mtu underlay {} device {}", mtus.underlay, mtus.device);
                println!("listen {}", c.listen);
                if let Some(addr6) = c.listen6 {
                    println!("listen {addr6}");
                }
                println!(
                    "engine workers {} offload {} batch {}",
                    c.workers,
                    match c.offload {
                        weft::OffloadMode::Off => "off",
                        _ => "auto",
                    },
                    c.batch
                );
                println!("control {}", c.control_socket);
                for r in &c.peers {
                    println!("peer {} {}", r.subnet, r.endpoint);
                }
                for v in &c.vteps {
                    println!("vtep {v}");
                }
                for (ip, mac) in &c.neigh {
                    println!("neigh {ip} {mac}");
                }
                for v in &c.extra_vnis {
                    println!("vni {} device {}", v.vni, v.device);
                }
                for (i, rule) in c.acl.iter().enumerate() {
                    println!("acl {} {rule}", i + 1);
                }
                println!("acl default {}", c.acl_default.name());
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Peer { action } => match action {
            PeerAction::Add {
                subnet: Some(subnet),
                endpoint,
                vtep_mac,
                target,
            } => {
                let mac = vtep_mac.map(|m| format!(" {m}")).unwrap_or_default();
                talk(&target, &format!("peer add {subnet} {endpoint}{mac}"))
            }
            PeerAction::Add {
                subnet: None,
                endpoint,
                vtep_mac: None,
                target,
            } => talk(&target, &format!("vtep add {endpoint}")),
            PeerAction::Add {
                subnet: None,
                vtep_mac: Some(_),
                ..
            } => fail("--vtep-mac needs --subnet (an l2 VTEP has no subnet and no MAC)"),
            PeerAction::Del {
                subnet: Some(subnet),
                endpoint: None,
                target,
            } => talk(&target, &format!("peer del {subnet}")),
            PeerAction::Del {
                subnet: None,
                endpoint: Some(endpoint),
                target,
            } => talk(&target, &format!("vtep del {endpoint}")),
            PeerAction::Del { .. } => fail("give exactly one of --subnet and --endpoint"),
            PeerAction::List { target } => talk(&target, "peer list"),
        },
        Command::Fdb { action } => match action {
            FdbAction::List { target } => talk(&target, "fdb list"),
            FdbAction::Add {
                mac,
                endpoint,
                target,
            } => talk(&target, &format!("fdb add {mac} {endpoint}")),
            FdbAction::Del { mac, target } => talk(&target, &format!("fdb del {mac}")),
        },
        Command::Neigh { action } => match action {
            NeighAction::List { target } => talk(&target, "neigh list"),
            NeighAction::Add { ip, mac, target } => talk(&target, &format!("neigh add {ip} {mac}")),
            NeighAction::Del { ip, target } => talk(&target, &format!("neigh del {ip}")),
        },
        Command::Acl {
            action: AclAction::List { target },
        } => talk(&target, "acl list"),
        Command::Stats { target } => talk(&target, "stats"),
        Command::Demo => demo(),
    }
}

fn demo() -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot find the weft executable: {e}")),
    };
    match demo::run(&exe) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
