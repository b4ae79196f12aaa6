//! `weft-soak`: weft under a long mixed load, watched for leaks.
//!
//! For each backend (UDP, VXLAN L3, or both one after the other) it builds the two-host
//! testbed (two namespaces joined by one veth, `weft run` on both, a pod `100.96.1.2`
//! behind host 1's `cni0`) and, for `--seconds`, runs at once:
//!
//! - traffic: iperf3 between the pod and host 2 (TCP at 100 Mbit/s both ways, 200-byte UDP
//!   datagrams at 20 Mbit/s, 5 s runs in turn) and ping floods both ways (25 pings 20 ms
//!   apart, 56/1000/1400 bytes);
//! - route churn on host 1 through its control socket (`weft peer add/del`, `--churn-rate`
//!   per second): made-up subnets toward made-up endpoints in 198.18.0.0/15, added,
//!   replaced, deleted (at most 48 at once), and the real route to host 2 added again every
//!   10 changes, deleted and added back every 40;
//! - hostile datagrams from host 2 to host 1's weft port (`--hostile-rate` per second, a
//!   Python sender in 5 s runs): garbage, empty and truncated datagrams, bad IPv4 lengths and
//!   checksums, IPv6 junk, spoofed inner sources, TTL 0 and 1, forbidden destinations,
//!   packets for other hosts (routed back into weft), inner TCP with a bad checksum,
//!   oversize datagrams (IP-fragmented, up to 64 KB), datagrams from an address that is no
//!   peer, and for VXLAN short headers, a missing I flag, wrong VNIs, wrong and own MACs,
//!   other ethertypes, truncated frames and ARP requests.
//!
//! Every `--interval` seconds it samples both daemons (RSS and threads from
//! `/proc/PID/status`, open descriptors in `/proc/PID/fd`, `tx_packets`, `rx_packets` and the
//! sum of the `drop_*` counters from `weft stats`, host 1's route count from `weft peer
//! list`) and prints one table row. At the end it judges the samples (see `soak/verdict.rs`:
//! RSS, fds and threads must not grow between the middle and the last third of the run
//! beyond a tolerance, traffic must keep flowing, both daemons must still run and stop
//! cleanly) and prints the verdict with its reasons. Exit status: 0 pass, 1 fail (or the
//! runner failed), 130 interrupted.
//!
//! Needs root, `ip`, `ss`, `ping`, `iperf3` and `python3`, and the `weft` binary:
//!
//! ```text
//! cargo build --release -p weft -p weft-bench
//! sudo target/release/weft-soak --seconds 120 --backend both     # what CI runs
//! sudo target/release/weft-soak --seconds 3600 --backend udp --interval 30
//! ```
//!
//! Everything is created inside namespaces with unique names (`soak-udp-h1-<pid>-<n>`, ...)
//! and removed by the testbed's guards, also on errors, panics and Ctrl-C (the first
//! SIGINT/SIGTERM stops the run and cleans up; a second one exits at once). Every traffic
//! generator is bounded in time and count and killed by a timeout.

#[path = "soak/load.rs"]
mod load;
#[path = "soak/procfs.rs"]
mod procfs;
#[path = "soak/verdict.rs"]
mod verdict;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _, Result};
use clap::{Parser, ValueEnum};
use signal_hook::consts::{SIGINT, SIGTERM};
use weft_testbed::{
    is_root, overlay_addr, underlay_addr, wait_until, ConfigFile, StatsOutput, Testbed,
    VxlanConfig, WeftConfig, WeftDaemon, DEFAULT_DEVICE, UDP_OVERLAY_MTU, UDP_PORT,
    UNDERLAY_IFNAME, VXLAN_DEVICE, VXLAN_OVERLAY_MTU, VXLAN_PORT,
};

use load::{Load, StopOnPanic, Tally, POD, STRANGER};
use verdict::{HostSeries, Limits, Run, Sample, Verdict};

/// How long a daemon gets to stop after SIGTERM at the end of a run.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// weft under a long mixed load (traffic, route churn, hostile datagrams), watched for
/// growing memory and descriptors, stalls and crashes.
#[derive(Debug, Parser)]
#[command(name = "weft-soak", version)]
struct Cli {
    /// How long to soak each backend, in seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(6..=604_800))]
    seconds: u64,
    /// The backend to soak; `both` runs UDP, then VXLAN, each for `--seconds`.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    backend: BackendChoice,
    /// Seconds between samples (at least 1) [default: --seconds / 24, within 1 to 10].
    #[arg(long, value_name = "S")]
    interval: Option<f64>,
    /// The weft binary [default: $WEFT_BIN, else `weft` next to this executable].
    #[arg(long)]
    weft: Option<PathBuf>,
    /// Route changes per second on host 1 (`weft peer add/del`).
    #[arg(long, default_value_t = 5.0, value_name = "N")]
    churn_rate: f64,
    /// Hostile datagrams per second to host 1's weft.
    #[arg(long, default_value_t = 200.0, value_name = "N")]
    hostile_rate: f64,
    /// Seed of the route changes and the hostile mix [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendChoice {
    /// The UDP (flannel `udp`) backend.
    Udp,
    /// The VXLAN backend in L3 mode.
    Vxlan,
    /// UDP, then VXLAN.
    Both,
}

/// A backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `backend = "udp"`.
    Udp,
    /// `backend = "vxlan"`, L3.
    Vxlan,
}

impl Backend {
    /// Its name in configurations and reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Udp => "udp",
            Backend::Vxlan => "vxlan",
        }
    }

    /// Its UDP port.
    pub fn port(self) -> u16 {
        match self {
            Backend::Udp => UDP_PORT,
            Backend::Vxlan => VXLAN_PORT,
        }
    }

    fn device(self) -> &'static str {
        match self {
            Backend::Udp => DEFAULT_DEVICE,
            Backend::Vxlan => VXLAN_DEVICE,
        }
    }

    fn pod_mtu(self) -> u32 {
        match self {
            Backend::Udp => UDP_OVERLAY_MTU,
            Backend::Vxlan => VXLAN_OVERLAY_MTU,
        }
    }

    /// Host `host`'s configuration, with `peer` as its one peer.
    fn config(self, host: u8, peer: u8) -> Result<ConfigFile> {
        Ok(match self {
            Backend::Udp => WeftConfig::udp(host, &[peer]).write()?,
            Backend::Vxlan => VxlanConfig::l3(host, &[peer]).write()?,
        })
    }
}

impl Cli {
    fn backends(&self) -> Vec<Backend> {
        match self.backend {
            BackendChoice::Udp => vec![Backend::Udp],
            BackendChoice::Vxlan => vec![Backend::Vxlan],
            BackendChoice::Both => vec![Backend::Udp, Backend::Vxlan],
        }
    }

    /// The sampling interval, checked: at least 1 s and at least 6 samples per run.
    fn interval(&self) -> Result<Duration> {
        let seconds = self
            .interval
            .unwrap_or((self.seconds as f64 / 24.0).clamp(1.0, 10.0));
        ensure!(
            seconds.is_finite() && seconds >= 1.0,
            "--interval must be at least 1 second"
        );
        let samples = (self.seconds as f64 / seconds).floor() as u64 + 1;
        ensure!(
            samples >= Limits::default().min_samples as u64,
            "--seconds {} with --interval {seconds} gives {samples} samples; the verdict needs \
             at least {}",
            self.seconds,
            Limits::default().min_samples
        );
        Ok(Duration::from_secs_f64(seconds))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let interrupted = Arc::new(AtomicBool::new(false));
    match soak(&cli, &interrupted) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("weft-soak: {error:#}");
            if interrupted.load(Ordering::SeqCst) {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The weft binary: `--weft`, else `$WEFT_BIN`, else `weft` next to this executable.
fn weft_binary(cli: &Cli) -> Result<PathBuf> {
    weft_bench::weft_binary(cli.weft.as_deref())
}

/// Whether `program --version` runs.
fn installed(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Soaks every selected backend; `Ok(false)` if one failed its verdict.
fn soak(cli: &Cli, interrupted: &Arc<AtomicBool>) -> Result<bool> {
    ensure!(
        is_root(),
        "weft-soak creates network namespaces and devices: run it as root"
    );
    for (program, package) in [
        ("iperf3", "iperf3"),
        ("python3", "python3"),
        ("ping", "iputils-ping"),
        ("ss", "iproute2"),
    ] {
        ensure!(
            installed(program),
            "{program} is not installed: apt-get install -y {package}"
        );
    }
    ensure!(
        cli.churn_rate > 0.0 && cli.churn_rate <= 200.0,
        "--churn-rate must be within (0, 200]"
    );
    ensure!(
        cli.hostile_rate > 0.0 && cli.hostile_rate <= 20_000.0,
        "--hostile-rate must be within (0, 20000]"
    );
    let interval = cli.interval()?;
    let weft = weft_binary(cli)?;
    let seed = cli.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id())
    });

    // The first SIGINT/SIGTERM sets the flag (the run stops, the guards clean up); a second
    // one exits at once.
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(interrupted))?;
        signal_hook::flag::register(signal, Arc::clone(interrupted))?;
    }

    let started = Instant::now();
    let mut results = Vec::new();
    for backend in cli.backends() {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        let outcome = soak_backend(backend, cli, &weft, interval, seed, interrupted)
            .with_context(|| format!("soaking the {} backend", backend.name()))?;
        results.push((backend, outcome));
    }
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted; the namespaces and processes have been removed");
    }
    println!();
    let mut passed = true;
    for (backend, verdict) in &results {
        println!(
            "weft-soak {}: {}",
            backend.name(),
            if verdict.passed() { "PASS" } else { "FAIL" }
        );
        passed &= verdict.passed();
    }
    println!(
        "weft-soak: {} ({} s per backend, {:.0} s wall time, seed {seed})",
        if passed { "PASS" } else { "FAIL" },
        cli.seconds,
        started.elapsed().as_secs_f64()
    );
    Ok(passed)
}

/// One sample of both daemons, plus what the row shows besides.
struct Reading {
    samples: [Sample; 2],
    stats: [Option<StatsOutput>; 2],
    routes: Option<usize>,
}

/// Reads both daemons now.
fn read_daemons(backend: Backend, daemons: &[WeftDaemon; 2], pids: [u32; 2], t: f64) -> Reading {
    let mut samples: [Sample; 2] = Default::default();
    let mut stats: [Option<StatsOutput>; 2] = [None, None];
    for (i, daemon) in daemons.iter().enumerate() {
        let proc = procfs::read(pids[i]);
        let counters = if proc.alive {
            daemon.stats().ok()
        } else {
            None
        };
        samples[i] = Sample {
            t,
            alive: proc.alive,
            rss_kib: proc.rss_kib,
            fds: proc.fds,
            threads: proc.threads,
            rx_packets: counters.as_ref().and_then(|s| s.get("rx_packets")),
            drops: counters.as_ref().map(drop_total),
        };
        stats[i] = counters;
    }
    let routes = match backend {
        _ if !samples[0].alive => None,
        Backend::Udp => daemons[0].peer_list().ok().map(|r| r.len()),
        Backend::Vxlan => daemons[0]
            .vxlan_peer_list()
            .ok()
            .map(|r| r.iter().filter(|e| e.subnet.is_some()).count()),
    };
    Reading {
        samples,
        stats,
        routes,
    }
}

/// The sum of every `drop_*` counter.
fn drop_total(stats: &StatsOutput) -> u64 {
    stats
        .iter()
        .filter(|(name, _)| name.starts_with("drop_"))
        .map(|(_, value)| value)
        .sum()
}

fn header() -> String {
    let host = |n: u8| format!("h{n} rss KiB  fds thr   tx_packets   rx_packets    drops",);
    format!(
        "{:>6} | {} routes | {} | {:>7} {:>6} {:>8}",
        "t s",
        host(1),
        host(2),
        "pings",
        "churn",
        "hostile"
    )
}

fn row(reading: &Reading, tally: &Tally) -> String {
    let opt = |value: Option<u64>, width: usize| match value {
        Some(v) => format!("{v:>width$}"),
        None => format!("{:>width$}", "-"),
    };
    let host = |i: usize| {
        let s = &reading.samples[i];
        let tx = reading.stats[i].as_ref().and_then(|s| s.get("tx_packets"));
        format!(
            "{} {} {} {} {} {}",
            opt(s.rss_kib, 10),
            opt(s.fds, 4),
            opt(s.threads, 3),
            opt(tx, 12),
            opt(s.rx_packets, 12),
            opt(s.drops, 8)
        )
    };
    format!(
        "{:>6.1} | {} {} | {} | {:>7} {:>6} {:>8}",
        reading.samples[0].t,
        host(0),
        opt(reading.routes.map(|r| r as u64), 6),
        host(1),
        tally.pings_received.load(Ordering::Relaxed),
        tally.churn_ok.load(Ordering::Relaxed) + tally.churn_failed.load(Ordering::Relaxed),
        tally.hostile_sent.load(Ordering::Relaxed)
    )
}

/// The `drop_*` counters that moved between `first` and `last`, as `name +delta`.
fn moved_drops(first: &StatsOutput, last: &StatsOutput) -> String {
    let moved: Vec<String> = last
        .iter()
        .filter(|(name, _)| name.starts_with("drop_") || *name == "icmp_sent")
        .filter_map(|(name, value)| {
            let delta = value.saturating_sub(first.get(name).unwrap_or(0));
            (delta > 0).then(|| format!("{name} +{delta}"))
        })
        .collect();
    if moved.is_empty() {
        "none".to_owned()
    } else {
        moved.join(", ")
    }
}

/// How much a daemon logged, by level (`weft: <level>: ...` lines), and its first warning
/// or error.
fn log_summary(log: &str) -> String {
    let mut levels: BTreeMap<&str, usize> = BTreeMap::new();
    let mut first_problem = None;
    for line in log.lines() {
        let level = line
            .strip_prefix("weft: ")
            .and_then(|rest| rest.split_once(": "))
            .map(|(level, _)| level)
            .filter(|level| !level.contains(' '))
            .unwrap_or("other");
        *levels.entry(level).or_default() += 1;
        if first_problem.is_none() && matches!(level, "warn" | "warning" | "error") {
            first_problem = Some(line.trim());
        }
    }
    let levels: Vec<String> = levels.iter().map(|(l, n)| format!("{n} {l}")).collect();
    let mut text = format!(
        "weft logged {} lines, {} bytes ({})",
        log.lines().count(),
        log.len(),
        if levels.is_empty() {
            "nothing".to_owned()
        } else {
            levels.join(", ")
        }
    );
    if let Some(line) = first_problem {
        let _ = write!(text, "; the first warning or error: {line}");
    }
    text
}

/// `text` on one line (` | ` between its lines), cut to about `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let joined: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = joined.join(" | ");
    match joined.char_indices().nth(max) {
        Some((cut, _)) => format!("{} ...", &joined[..cut]),
        None => joined,
    }
}

/// `text` with every line indented for the verdict's list.
fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("      {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Soaks one backend and returns its verdict (already printed).
fn soak_backend(
    backend: Backend,
    cli: &Cli,
    weft: &std::path::Path,
    interval: Duration,
    seed: u64,
    interrupted: &Arc<AtomicBool>,
) -> Result<Verdict> {
    eprintln!(
        "weft-soak: building the {} testbed (two hosts, a pod on host 1)",
        backend.name()
    );
    let mut bed = Testbed::two_hosts(&format!("soak-{}", backend.name()))?;
    bed.add_pod(1, POD, backend.pod_mtu())?;
    let stranger = format!("{}/24", underlay_addr(STRANGER));
    bed.host(2)
        .netns()
        .ip(&["addr", "add", &stranger, "dev", UNDERLAY_IFNAME])?;
    let configs = [backend.config(1, 2)?, backend.config(2, 1)?];
    let mut daemons = [
        WeftDaemon::start(
            weft,
            bed.host(1).netns(),
            configs[0].path(),
            backend.device(),
        )?,
        WeftDaemon::start(
            weft,
            bed.host(2).netns(),
            configs[1].path(),
            backend.device(),
        )?,
    ];
    let pod = bed.host(1).pod(POD);
    let mut last_ping = String::new();
    wait_until(
        Duration::from_secs(20),
        "the pod on host 1 to reach host 2 through weft",
        || {
            let to = overlay_addr(2).to_string();
            match pod.netns().exec(&["ping", "-n", "-c", "1", "-W", "1", &to]) {
                Ok(output) => {
                    last_ping = String::from_utf8_lossy(&output.stdout).into_owned();
                    output.status.success()
                }
                Err(_) => false,
            }
        },
    )
    .with_context(|| format!("before the soak: {}", last_ping.trim()))?;
    let pids = [daemons[0].process().id(), daemons[1].process().id()];

    println!(
        "\nweft-soak: backend {}, {} s, a sample every {} s, weft {}, daemons pid {} (host 1) \
         and {} (host 2), seed {seed}",
        backend.name(),
        cli.seconds,
        interval.as_secs_f64(),
        weft.display(),
        pids[0],
        pids[1]
    );
    println!(
        "load: iperf3 pod 100.96.1.2 <-> 100.96.2.0 (TCP 100 Mbit/s both ways, UDP 200 B at 20 \
         Mbit/s), pings both ways, {} route changes/s on host 1, {} hostile datagrams/s to \
         host 1",
        cli.churn_rate, cli.hostile_rate
    );
    println!("{}", header());

    let total = Duration::from_secs(cli.seconds);
    let start = Instant::now();
    let load = Load {
        backend,
        bed: &bed,
        daemons: &daemons,
        deadline: start + total,
        stop: AtomicBool::new(false),
        interrupted,
        churn_rate: cli.churn_rate,
        hostile_rate: cli.hostile_rate,
        seed,
        tally: Tally::default(),
    };
    let mut hosts = [
        HostSeries {
            host: 1,
            samples: Vec::new(),
        },
        HostSeries {
            host: 2,
            samples: Vec::new(),
        },
    ];
    let mut pings = Vec::new();
    let mut first_stats: [Option<StatsOutput>; 2] = [None, None];
    let mut last_stats: [Option<StatsOutput>; 2] = [None, None];
    thread::scope(|scope| {
        let _stop = StopOnPanic(&load.stop);
        let load = &load;
        scope.spawn(move || {
            let _stop = StopOnPanic(&load.stop);
            load.iperf_loop();
        });
        scope.spawn(move || {
            let _stop = StopOnPanic(&load.stop);
            load.ping_loop();
        });
        scope.spawn(move || {
            let _stop = StopOnPanic(&load.stop);
            load.churn_loop();
        });
        scope.spawn(move || {
            let _stop = StopOnPanic(&load.stop);
            load.hostile_loop();
        });
        let samples = (total.as_secs_f64() / interval.as_secs_f64()).floor() as u32;
        for k in 0..=samples {
            let due = start + interval * k;
            let stopped = || interrupted.load(Ordering::SeqCst) || load.stop.load(Ordering::SeqCst);
            while Instant::now() < due && !stopped() {
                thread::sleep((due - Instant::now()).min(Duration::from_millis(50)));
            }
            if stopped() {
                break;
            }
            let t = start.elapsed().as_secs_f64();
            let reading = read_daemons(backend, &daemons, pids, t);
            println!("{}", row(&reading, &load.tally));
            pings.push(load.tally.pings_received.load(Ordering::Relaxed));
            let dead = reading.samples.iter().any(|s| !s.alive);
            for (i, sample) in reading.samples.into_iter().enumerate() {
                hosts[i].samples.push(sample);
            }
            for (i, stats) in reading.stats.into_iter().enumerate() {
                if stats.is_some() {
                    if first_stats[i].is_none() {
                        first_stats[i].clone_from(&stats);
                    }
                    last_stats[i] = stats;
                }
            }
            if dead {
                println!("weft-soak: a daemon is no longer running; stopping the run");
                break;
            }
        }
        load.stop.store(true, Ordering::SeqCst);
        eprintln!("weft-soak: waiting for the load generators to finish their current step");
    });
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted");
    }

    // Ends the load's borrow of the daemons, which are stopped below.
    let tally = load.tally;
    let run = Run {
        hosts: hosts.to_vec(),
        pings,
        churn_ok: tally.churn_ok.load(Ordering::Relaxed),
        churn_failed: tally.churn_failed.load(Ordering::Relaxed),
        hostile_sent: tally.hostile_sent.load(Ordering::Relaxed),
        hostile_target: 1,
    };
    let mut verdict = verdict::judge(&run, &Limits::default());

    // How the daemons end: one that died says why; both must stop cleanly on SIGTERM.
    for (i, daemon) in daemons.iter_mut().enumerate() {
        let host = i + 1;
        match daemon.process().try_wait()? {
            Some(status) => verdict.failures.push(format!(
                "host {host}: weft exited during the run ({status}); the end of its log:\n{}",
                indent(&tail(&daemon.log(), 20))
            )),
            None => match daemon.stop(STOP_TIMEOUT) {
                Ok(status) if status.success() => {}
                Ok(status) => verdict.failures.push(format!(
                    "host {host}: weft did not stop cleanly on SIGTERM ({status}); the end of \
                     its log:\n{}",
                    indent(&tail(&daemon.log(), 20))
                )),
                Err(error) => verdict.failures.push(format!(
                    "host {host}: weft did not stop within {STOP_TIMEOUT:?} of SIGTERM: {error}"
                )),
            },
        }
    }

    let mut summary = String::new();
    let _ = writeln!(summary, "\nweft-soak {} summary:", backend.name());
    for (i, daemon) in daemons.iter().enumerate() {
        let _ = writeln!(summary, "  host {}: {}", i + 1, log_summary(&daemon.log()));
    }
    for i in 0..2 {
        if let (Some(first), Some(last)) = (&first_stats[i], &last_stats[i]) {
            let _ = writeln!(
                summary,
                "  host {}: counters moved: {}",
                i + 1,
                moved_drops(first, last)
            );
        }
    }
    let _ = writeln!(
        summary,
        "  traffic: {} iperf3 runs ok, {} failed; pings {}/{} answered",
        tally.iperf_ok.load(Ordering::Relaxed),
        tally.iperf_failed.load(Ordering::Relaxed),
        tally.pings_received.load(Ordering::Relaxed),
        tally.pings_sent.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        summary,
        "  route changes on host 1: {} ok, {} failed, slowest {} ms",
        run.churn_ok,
        run.churn_failed,
        tally.churn_max_ms.load(Ordering::Relaxed)
    );
    let kinds: BTreeMap<String, u64> = tally
        .hostile_kinds
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let kinds: Vec<String> = kinds.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(
        summary,
        "  hostile datagrams: {} sent ({} not sendable): {}",
        run.hostile_sent,
        tally.hostile_errors.load(Ordering::Relaxed),
        kinds.join(", ")
    );
    let (errors, error_count) = tally.errors();
    if error_count > 0 {
        let _ = writeln!(
            summary,
            "  load generator errors: {error_count} (the first {}):",
            errors.len()
        );
        for error in &errors {
            let _ = writeln!(summary, "    {}", one_line(error, 300));
        }
    }
    for note in &verdict.notes {
        let _ = writeln!(summary, "  {note}");
    }
    if verdict.passed() {
        let _ = writeln!(
            summary,
            "weft-soak {}: PASS: no unbounded growth of RSS, fds or threads, traffic flowed \
             throughout, both daemons ran to the end and stopped cleanly",
            backend.name()
        );
    } else {
        let _ = writeln!(
            summary,
            "weft-soak {}: FAIL ({} reason(s)):",
            backend.name(),
            verdict.failures.len()
        );
        for failure in &verdict.failures {
            let _ = writeln!(summary, "  - {failure}");
        }
    }
    print!("{summary}");

    drop(daemons);
    drop(configs);
    let prefix = format!("soak-{}-", backend.name());
    drop(bed);
    let left = leftover_namespaces(&prefix);
    ensure!(
        left.is_empty(),
        "namespaces left behind after the {} run: {}",
        backend.name(),
        left.join(", ")
    );
    eprintln!(
        "weft-soak: the {} testbed's namespaces and processes are gone",
        backend.name()
    );
    Ok(verdict)
}

/// The namespaces of this process whose names start with `prefix` that still exist.
fn leftover_namespaces(prefix: &str) -> Vec<String> {
    let marker = format!("-{}-", std::process::id());
    std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .filter(|name| name.starts_with(prefix) && name.contains(&marker))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("weft-soak").chain(args.iter().copied()))
    }

    #[test]
    fn options_and_the_default_interval() {
        Cli::command().debug_assert();
        assert!(parse(&[]).is_err(), "--seconds is required");
        let cli = parse(&["--seconds", "120"]).unwrap();
        assert_eq!(cli.backends(), [Backend::Udp, Backend::Vxlan]);
        assert_eq!(cli.interval().unwrap(), Duration::from_secs(5));
        let cli = parse(&["--seconds", "60", "--backend", "vxlan"]).unwrap();
        assert_eq!(cli.backends(), [Backend::Vxlan]);
        assert_eq!(cli.interval().unwrap(), Duration::from_millis(2500));
        let cli = parse(&["--seconds", "3600"]).unwrap();
        assert_eq!(cli.interval().unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse(&["--seconds", "6"]).unwrap().interval().unwrap(),
            Duration::from_secs(1)
        );
        assert!(parse(&["--seconds", "5"]).is_err());
        assert!(parse(&["--seconds", "30", "--interval", "0.5"])
            .unwrap()
            .interval()
            .is_err());
        assert!(parse(&["--seconds", "30", "--interval", "7"])
            .unwrap()
            .interval()
            .is_err());
        assert!(parse(&["--seconds", "30", "--interval", "5"])
            .unwrap()
            .interval()
            .is_ok());
    }

    #[test]
    fn logs_are_counted_by_level() {
        let log = "weft: info: listening\nweft: warn: peer 198.19.0.1: unreachable\n\
                   weft: info: route added\nthread 'x' panicked\n";
        assert_eq!(
            log_summary(log),
            "weft logged 4 lines, 107 bytes (2 info, 1 other, 1 warn); the first warning or \
             error: weft: warn: peer 198.19.0.1: unreachable"
        );
        assert_eq!(log_summary(""), "weft logged 0 lines, 0 bytes (nothing)");
    }

    #[test]
    fn the_table_has_one_column_per_value() {
        let tally = Tally::default();
        let sample = Sample {
            t: 2.5,
            alive: true,
            rss_kib: Some(6144),
            fds: Some(21),
            threads: Some(4),
            rx_packets: Some(10),
            drops: Some(3),
        };
        let reading = Reading {
            samples: [sample.clone(), Sample::default()],
            stats: [StatsOutput::parse("tx_packets 9\n"), None],
            routes: Some(49),
        };
        let line = row(&reading, &tally);
        let bars = |text: &str| -> Vec<usize> { text.match_indices('|').map(|(i, _)| i).collect() };
        assert_eq!(bars(&line), bars(&header()), "\n{}\n{line}", header());
        assert_eq!(line.len(), header().len(), "\n{}\n{line}", header());
        assert!(line.contains(" 6144 "), "{line}");
        assert!(line.contains(" 49 |"), "{line}");
    }
}
