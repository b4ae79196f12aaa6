//! `weft demo`: the UDP backend between two hosts, shown end to end in a couple of seconds.
//!
//! [`run`] builds the `weft_testbed`'s standard two-host topology in network
//! namespaces (hosts 1 and 2 joined by a veth, one pod behind a `cni0` bridge on each),
//! starts `weft run` in both hosts, then pings host to host and pod to pod across the tunnel,
//! sends a few megabytes pod to pod over TCP, and prints what it did with both daemons'
//! counters. Everything it creates (namespaces, processes, temporary files) is removed when it
//! returns, also on failure. Every step is bounded in count and time. It needs root.

use std::fmt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use weft_testbed::{
    ping, tcp_transfer, PingSummary, StatsOutput, Testbed, TestbedError, Transfer, WeftConfig,
    WeftDaemon, DEFAULT_DEVICE, UDP_OVERLAY_MTU,
};

/// Echo requests per ping run.
const PING_COUNT: u32 = 5;
/// Bytes sent pod to pod.
const TRANSFER_BYTES: u64 = 5 * 1024 * 1024;
/// The TCP port the receiving pod listens on.
const TRANSFER_PORT: u16 = 5001;
/// The bound on the whole transfer.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long each daemon gets to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The last octet of each host's pod address.
const POD: u8 = 2;

/// Why the demo could not complete.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The demo was not run as root.
    #[error("weft demo creates network namespaces and needs root: run it with sudo")]
    NotRoot,
    /// The weft binary to start in each host does not exist.
    #[error("the weft binary {0} does not exist")]
    MissingExecutable(String),
    /// Building the topology, running a command or starting a daemon failed.
    #[error(transparent)]
    Testbed(#[from] TestbedError),
    /// A ping across the tunnel did not get every reply.
    #[error("ping {what}: {summary}\n{}\n{logs}", summary.output.trim())]
    PingFailed {
        /// Which ping (from where to where).
        what: String,
        /// What ping reported.
        summary: PingSummary,
        /// Both daemons' logs.
        logs: String,
    },
    /// The pod-to-pod transfer arrived incomplete or altered.
    #[error("the pod-to-pod transfer was corrupted: {transfer}\n{logs}")]
    TransferCorrupted {
        /// What was sent and received.
        transfer: Transfer,
        /// Both daemons' logs.
        logs: String,
    },
}

/// One ping run of the demo.
#[derive(Clone, Debug)]
pub struct PingRun {
    /// From where to where, e.g. `hostA 100.96.1.0 -> hostB 100.96.2.0`.
    pub path: String,
    /// What ping reported.
    pub summary: PingSummary,
}

/// One daemon's state at the end of the demo.
#[derive(Clone, Debug)]
pub struct DaemonReport {
    /// `hostA` or `hostB`.
    pub host: String,
    /// Its counters after the traffic (`weft stats`).
    pub stats: StatsOutput,
    /// How it exited after SIGTERM.
    pub exit: ExitStatus,
}

/// What the demo set up and measured; `Display` prints it as a readable report.
#[derive(Clone, Debug)]
pub struct DemoReport {
    /// One line per thing that was set up.
    pub setup: Vec<String>,
    /// The pings, host to host and pod to pod, both ways.
    pub pings: Vec<PingRun>,
    /// The pod-to-pod TCP transfer.
    pub transfer: Transfer,
    /// Both daemons.
    pub daemons: Vec<DaemonReport>,
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "setup")?;
        for line in &self.setup {
            writeln!(f, "  {line}")?;
        }
        writeln!(f, "\nping ({PING_COUNT} echo requests each)")?;
        for run in &self.pings {
            writeln!(f, "  {:<44} {}", run.path, run.summary)?;
        }
        let transfer = &self.transfer;
        writeln!(
            f,
            "\ntransfer (TCP, pod A -> pod B through both weft daemons)"
        )?;
        writeln!(
            f,
            "  {} bytes ({:.1} MiB) in {:.3} s = {:.1} Mbit/s, sha256 {} ({})",
            transfer.bytes_received,
            transfer.bytes_received as f64 / (1024.0 * 1024.0),
            transfer.elapsed.as_secs_f64(),
            transfer.megabits_per_second(),
            if transfer.intact() {
                "match"
            } else {
                "MISMATCH"
            },
            transfer.received_sha256,
        )?;
        writeln!(
            f,
            "  (debug builds and shared machines are slow: this is a demo, not a benchmark)"
        )?;
        for daemon in &self.daemons {
            writeln!(f, "\nweft stats on {}", daemon.host)?;
            for (name, value) in daemon.stats.iter() {
                writeln!(f, "  {name} {value}")?;
            }
        }
        writeln!(f)?;
        for daemon in &self.daemons {
            writeln!(
                f,
                "{}: weft exited after SIGTERM ({})",
                daemon.host, daemon.exit
            )?;
        }
        Ok(())
    }
}

/// Runs the demo with `weft_exe` as the daemon binary, printing progress and then the report
/// to stdout, and returns the report.
///
/// Fails if not run as root, if a daemon does not come up, if a ping across the tunnel loses
/// a reply, or if the transfer does not arrive intact; everything is cleaned up either way.
pub fn run(weft_exe: &Path) -> Result<DemoReport, DemoError> {
    if !weft_testbed::is_root() {
        return Err(DemoError::NotRoot);
    }
    if !weft_exe.is_file() {
        return Err(DemoError::MissingExecutable(weft_exe.display().to_string()));
    }

    println!("weft demo: the flannel UDP backend between two hosts in network namespaces\n");
    println!("==> creating hosts A and B (a veth between them) and one pod on each");
    let mut bed = Testbed::two_hosts("weft-demo")?;
    bed.add_pod(1, POD, UDP_OVERLAY_MTU)?;
    bed.add_pod(2, POD, UDP_OVERLAY_MTU)?;
    let (host_a, host_b) = (bed.host(1), bed.host(2));
    let (pod_a, pod_b) = (host_a.pod(POD), host_b.pod(POD));

    println!("==> starting `weft run` in both hosts");
    let config_a = WeftConfig::udp(1, &[2]).write()?;
    let config_b = WeftConfig::udp(2, &[1]).write()?;
    let mut daemon_a =
        WeftDaemon::start(weft_exe, host_a.netns(), config_a.path(), DEFAULT_DEVICE)?;
    let mut daemon_b =
        WeftDaemon::start(weft_exe, host_b.netns(), config_b.path(), DEFAULT_DEVICE)?;
    let logs = |a: &WeftDaemon, b: &WeftDaemon| {
        format!(
            "--- weft log on hostA ---\n{}\n--- weft log on hostB ---\n{}",
            a.log().trim_end(),
            b.log().trim_end()
        )
    };

    let mut setup = vec![
        format!(
            "hostA  u0 {}/24, {DEFAULT_DEVICE} {}, subnet {}, cni0 {}/24, pod {}",
            host_a.underlay_addr(),
            host_a.overlay_addr(),
            host_a.subnet(),
            weft_testbed::bridge_addr(1),
            pod_a.address(),
        ),
        format!(
            "hostB  u0 {}/24, {DEFAULT_DEVICE} {}, subnet {}, cni0 {}/24, pod {}",
            host_b.underlay_addr(),
            host_b.overlay_addr(),
            host_b.subnet(),
            weft_testbed::bridge_addr(2),
            pod_b.address(),
        ),
        format!(
            "hostA and hostB are joined by a veth; weft listens on UDP port {} on both",
            weft_testbed::UDP_PORT
        ),
    ];
    setup.push(format!(
        "namespaces: {}",
        [host_a.netns(), host_b.netns(), pod_a.netns(), pod_b.netns()]
            .iter()
            .map(|netns| netns.name())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    println!("==> pinging across the tunnel");
    let ping_plan = [
        (
            "hostA",
            host_a.netns(),
            host_a.overlay_addr(),
            "hostB",
            host_b.overlay_addr(),
        ),
        (
            "hostB",
            host_b.netns(),
            host_b.overlay_addr(),
            "hostA",
            host_a.overlay_addr(),
        ),
        (
            "pod A",
            pod_a.netns(),
            pod_a.address(),
            "pod B",
            pod_b.address(),
        ),
        (
            "pod B",
            pod_b.netns(),
            pod_b.address(),
            "pod A",
            pod_a.address(),
        ),
    ];
    let mut pings = Vec::new();
    for (from, netns, source, to, destination) in ping_plan {
        let path = format!("{from} {source} -> {to} {destination}");
        let summary = ping(netns, destination, PING_COUNT)?;
        if !summary.all_received() {
            return Err(DemoError::PingFailed {
                what: path,
                summary,
                logs: logs(&daemon_a, &daemon_b),
            });
        }
        pings.push(PingRun { path, summary });
    }

    println!(
        "==> sending {} MiB pod A -> pod B over TCP",
        TRANSFER_BYTES / (1024 * 1024)
    );
    let transfer = tcp_transfer(
        pod_a.netns(),
        pod_b.netns(),
        pod_b.address(),
        TRANSFER_PORT,
        TRANSFER_BYTES,
        TRANSFER_TIMEOUT,
    )?;
    if !transfer.intact() {
        return Err(DemoError::TransferCorrupted {
            transfer,
            logs: logs(&daemon_a, &daemon_b),
        });
    }

    println!("==> reading counters and stopping the daemons\n");
    let stats_a = daemon_a.stats()?;
    let stats_b = daemon_b.stats()?;
    let exit_a = daemon_a.stop(STOP_TIMEOUT)?;
    let exit_b = daemon_b.stop(STOP_TIMEOUT)?;
    let report = DemoReport {
        setup,
        pings,
        transfer,
        daemons: vec![
            DaemonReport {
                host: "hostA".to_owned(),
                stats: stats_a,
                exit: exit_a,
            },
            DaemonReport {
                host: "hostB".to_owned(),
                stats: stats_b,
                exit: exit_b,
            },
        ],
    };
    print!("{report}");
    println!("\nall namespaces, processes and files of the demo are being removed");
    Ok(report)
}
