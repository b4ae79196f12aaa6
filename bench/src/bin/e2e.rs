//! `weft-e2e-bench`: end-to-end TCP throughput of weft against the kernel, in namespaces.
//!
//! Builds the standard two-host topology of TESTBED.md (two network namespaces joined by one
//! veth, `198.18.0.1/24` and `198.18.0.2/24`) and measures one iperf3 TCP stream from host 1
//! to host 2 for each setup (see [`setups::Setup`]): `direct` (the veth itself, the ceiling),
//! `kernel-vxlan` (the reference), and the real daemon (`weft run`) on both hosts as
//! `weft-udp`, `weft-udp-batch1` (the same with `[engine] batch = 1`, one packet per system
//! call) and `weft-vxlan` (VXLAN L3, mirroring `kernel-vxlan`). Runs are interleaved (run 1 of every setup, then
//! run 2, ...) so slow drifts of a shared machine hit every setup alike; each setup is
//! brought up before its run and taken down after it.
//!
//! The markdown report (stdout) gives the median of the runs, its ratio to `kernel-vxlan`
//! and to `direct` measured in the same run, the CPU time of the weft processes and how full
//! their batches were. Progress goes to stderr.
//!
//! Needs root, `ip`, `bridge`, `ss`, `ping` and `iperf3`, and the `weft` binary:
//!
//! ```text
//! cargo build --release -p weft -p weft-bench
//! sudo target/release/weft-e2e-bench --runs 3 --seconds 5 [--only weft-vxlan,kernel-vxlan] [--json out.json]
//! sudo target/release/weft-e2e-bench --quick     # CI: one 2 s run per setup, one table in ~30 s
//! ```
//!
//! Everything is created inside namespaces with unique names and removed by guards, also on
//! errors and on Ctrl-C (the first SIGINT/SIGTERM stops after the current step and cleans up;
//! a second one exits at once). Every iperf3 run is bounded (`-t`, a connect timeout and a
//! kill timeout).

// The modules live in src/bin/e2e/ (a crate root's modules would otherwise be looked up
// next to it, where Cargo would take them for binaries of their own).
#[path = "e2e/cpu.rs"]
mod cpu;
#[path = "e2e/iperf.rs"]
mod iperf;
#[path = "e2e/report.rs"]
mod report;
#[path = "e2e/setups.rs"]
mod setups;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use weft_testbed::{is_root, ping, wait_until, Testbed};

use report::{Context, Sample, SetupResult};
use setups::{counter_ratio, Running, Setup};

/// How long a freshly brought-up path may take to answer a ping.
const PATH_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a removed device may take to disappear.
const GONE_TIMEOUT: Duration = Duration::from_secs(10);
/// Runs per setup with `--quick`.
const QUICK_RUNS: u32 = 1;
/// Seconds per run with `--quick`.
const QUICK_SECONDS: u32 = 2;

/// End-to-end TCP throughput: direct veth, kernel vxlan and weft, in network namespaces.
#[derive(Debug, Parser)]
#[command(name = "weft-e2e-bench", version)]
struct Cli {
    /// Runs per setup; the report gives their median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Length of each iperf3 run, in seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=600))]
    seconds: u32,
    /// Short mode for CI: one run of 2 s per setup (`--runs 1 --seconds 2`); a smoke test
    /// that prints one table, not numbers to compare.
    #[arg(long, conflicts_with_all = ["runs", "seconds"])]
    quick: bool,
    /// Measure only these setups (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Setup>,
    /// The weft binary [default: $WEFT_BIN, else `weft` next to this executable].
    #[arg(long)]
    weft: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

impl Cli {
    /// (runs per setup, seconds per run), after `--quick`.
    fn runs_and_seconds(&self) -> (u32, u32) {
        if self.quick {
            (QUICK_RUNS, QUICK_SECONDS)
        } else {
            (self.runs, self.seconds)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match bench(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("weft-e2e-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The weft binary: `--weft`, else `$WEFT_BIN`, else `weft` next to this executable.
fn weft_binary(cli: &Cli) -> Result<PathBuf> {
    let path = match (&cli.weft, std::env::var_os("WEFT_BIN")) {
        (Some(path), _) => path.clone(),
        (None, Some(path)) => PathBuf::from(path),
        (None, None) => std::env::current_exe()
            .context("finding this executable")?
            .with_file_name("weft"),
    };
    ensure!(
        path.is_file(),
        "no weft binary at {}: build it with `cargo build --release -p weft`, or pass --weft \
         PATH or set WEFT_BIN",
        path.display()
    );
    Ok(path)
}

/// The command line as typed, arguments with spaces quoted.
fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if arg.contains(char::is_whitespace) {
                format!("'{arg}'")
            } else {
                arg
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which weft is measured: the binary every weft setup runs, and the revision of the
/// source tree when it is at hand.
fn weft_description(weft: Option<&Path>) -> String {
    let binary = weft.map_or_else(
        || "not used".to_owned(),
        |path| format!("`{}`", path.display()),
    );
    let tree = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let revision = report::first_line_of("git", &["-C", tree, "rev-parse", "--short", "HEAD"]);
    let dirty = std::process::Command::new("git")
        .args([
            "--no-optional-locks",
            "-C",
            tree,
            "status",
            "--porcelain",
            "--untracked-files=no",
        ])
        .output()
        .map(|out| out.status.success() && !out.stdout.is_empty())
        .unwrap_or(false);
    let dirty = if dirty { " + uncommitted changes" } else { "" };
    format!(
        "binary {binary} (`weft run`, every weft setup); source tree at revision \
         {revision}{dirty}"
    )
}

/// Runs the benchmark; `Ok(false)` when some runs failed (the report says which).
fn bench(cli: &Cli) -> Result<bool> {
    ensure!(
        is_root(),
        "weft-e2e-bench creates network namespaces and devices: run it as root"
    );
    let iperf3 = report::first_line_of("iperf3", &["--version"]);
    ensure!(
        iperf3 != "unknown",
        "iperf3 is not installed: apt-get install -y iperf3"
    );
    let setups: Vec<Setup> = if cli.only.is_empty() {
        Setup::ALL.to_vec()
    } else {
        let mut only = cli.only.clone();
        only.sort();
        only.dedup();
        only
    };
    let weft = if setups.iter().any(|setup| setup.is_weft()) {
        Some(weft_binary(cli)?)
    } else {
        None
    };
    let (runs, seconds) = cli.runs_and_seconds();
    let clock_ticks = report::first_line_of("getconf", &["CLK_TCK"])
        .parse()
        .unwrap_or(100.0);

    // Ctrl-C: the first signal sets the flag (the loop stops after the current step and the
    // guards clean up); a second one exits at once.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&interrupted))?;
        signal_hook::flag::register(signal, Arc::clone(&interrupted))?;
    }

    let bed = Testbed::two_hosts("e2eb")?;
    let client = bed.host(1).netns();
    let context = Context {
        command: command_line(),
        date: report::first_line_of("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        kernel: report::kernel_release(),
        cpus: report::cpu_description(),
        load: report::load_average(),
        congestion_control: client
            .exec_ok(&["sysctl", "-n", "net.ipv4.tcp_congestion_control"])
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned()),
        iperf3,
        weft: weft_description(weft.as_deref()),
        runs,
        seconds,
    };

    let mut results: Vec<SetupResult> = setups
        .iter()
        .map(|&setup| SetupResult {
            setup,
            samples: Vec::new(),
            failures: Vec::new(),
        })
        .collect();
    'runs: for run in 1..=runs {
        for result in &mut results {
            if interrupted.load(Ordering::Relaxed) {
                break 'runs;
            }
            let setup = result.setup;
            eprint!("[run {run}/{runs}] {setup}: ");
            let outcome = measure(setup, &bed, weft.as_deref(), seconds, clock_ticks);
            let gone = wait_devices_gone(&bed);
            match outcome {
                Ok(sample) => {
                    eprintln!("{}", progress(&sample));
                    result.samples.push(sample);
                }
                Err(error) => {
                    eprintln!("FAILED: {error:#}");
                    result.failures.push(format!("{error:#}"));
                }
            }
            // A device that does not go away would spoil every later run.
            gone?;
        }
    }
    drop(bed);

    let interrupted = interrupted.load(Ordering::Relaxed);
    if interrupted && results.iter().all(|r| r.samples.is_empty()) {
        bail!("interrupted before any run finished; the namespaces have been removed");
    }
    print!("{}", report::markdown(&context, &results));
    if let Some(path) = &cli.json {
        std::fs::write(path, report::json(&context, &results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    ensure!(!interrupted, "interrupted: the report above has only the finished runs; the namespaces have been removed");
    Ok(results.iter().all(|r| r.failures.is_empty()))
}

fn progress(sample: &Sample) -> String {
    let mut line = format!("{:.2} Gbit/s", sample.gbps);
    if let Some(cores) = sample.machine_cores {
        line.push_str(&format!(", machine busy {cores:.2} cores"));
    }
    if let Some(cores) = sample.weft_cores {
        line.push_str(&format!(
            ", weft CPU {cores:.2} cores ({:.2} Gbit/s per core)",
            sample.gbps / cores.max(f64::MIN_POSITIVE)
        ));
    }
    if let (Some(rx), Some(tx)) = (sample.rx_batch_fill, sample.tx_batch_fill) {
        line.push_str(&format!(", {rx:.1} pkts/recvmmsg, {tx:.1} pkts/sendmmsg"));
    }
    line
}

/// Waits until no weft or vxlan device is left in either host (the TUN of a stopped weft
/// disappears when its last descriptor closes).
fn wait_devices_gone(bed: &Testbed) -> Result<()> {
    for host in bed.hosts() {
        let netns = host.netns();
        let what = format!("flannel0 and flannel.1 to be gone from {}", netns.name());
        wait_until(GONE_TIMEOUT, &what, || {
            !netns.has_link("flannel0").unwrap_or(true)
                && !netns.has_link("flannel.1").unwrap_or(true)
        })?;
    }
    Ok(())
}

/// Total CPU ticks of `pids`, if every one of them could be read.
fn total_ticks(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&pid| cpu::cpu_ticks(pid)).sum()
}

/// One run of one setup: bring it up, check the path, run iperf3, take it down.
fn measure(
    setup: Setup,
    bed: &Testbed,
    weft: Option<&Path>,
    seconds: u32,
    clock_ticks: f64,
) -> Result<Sample> {
    let mut running: Running<'_> = setup.bring_up(bed, weft)?;
    let (src, dst): (Ipv4Addr, Ipv4Addr) = setup.addresses();
    let (client, server_ns) = (bed.host(1).netns(), bed.host(2).netns());
    let what = format!("{dst} to answer a ping from host 1 over {setup}");
    wait_until(PATH_TIMEOUT, &what, || {
        ping(client, dst, 1).is_ok_and(|s| s.all_received())
    })?;

    let server = iperf::Server::start(server_ns, dst)?;
    let pids = running.weft_pids();
    let (before, machine_before) = (total_ticks(&pids), cpu::machine_busy_ticks());
    let start = Instant::now();
    let report = iperf::run_client(client, src, dst, seconds)?;
    let wall = start.elapsed();
    let (after, machine_after) = (total_ticks(&pids), cpu::machine_busy_ticks());
    server.finish();
    running.check_alive()?;
    let stats = running.finish()?;

    let cores = |ticks: u64| ticks as f64 / clock_ticks / wall.as_secs_f64();
    let weft_cores = match (setup.is_weft(), before, after) {
        (true, Some(before), Some(after)) => Some(cores(after.saturating_sub(before))),
        _ => None,
    };
    let machine_cores = match (machine_before, machine_after) {
        (Some(before), Some(after)) => Some(cores(after.saturating_sub(before))),
        _ => None,
    };
    let (rx_batch_fill, tx_batch_fill) = match &stats {
        Some((a, b)) => {
            ensure!(
                a.get("tx_packets").unwrap_or(0) > 0 && b.get("rx_packets").unwrap_or(0) > 0,
                "the traffic did not go through weft (host 1 sent {:?}, host 2 delivered {:?} packets)",
                a.get("tx_packets"),
                b.get("rx_packets")
            );
            (
                counter_ratio(b, "udp_rx_packets", "recv_batches"),
                counter_ratio(a, "tx_packets", "send_batches"),
            )
        }
        None => (None, None),
    };
    Ok(Sample {
        gbps: report.bits_per_second / 1e9,
        retransmits: report.retransmits,
        weft_cores,
        machine_cores,
        rx_batch_fill,
        tx_batch_fill,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("weft-e2e-bench").chain(args.iter().copied()))
    }

    #[test]
    fn quick_is_one_short_run_and_excludes_runs_and_seconds() {
        Cli::command().debug_assert();
        assert_eq!(parse(&[]).unwrap().runs_and_seconds(), (3, 5));
        assert_eq!(parse(&["--quick"]).unwrap().runs_and_seconds(), (1, 2));
        assert_eq!(
            parse(&["--runs", "5", "--seconds", "10"])
                .unwrap()
                .runs_and_seconds(),
            (5, 10)
        );
        assert!(parse(&["--quick", "--runs", "3"]).is_err());
        assert!(parse(&["--quick", "--seconds", "3"]).is_err());
        let only = parse(&["--quick", "--only", "weft-vxlan,kernel-vxlan"]).unwrap();
        assert_eq!(only.only, [Setup::WeftVxlan, Setup::KernelVxlan]);
        // The hidden `engine` subcommand is gone.
        assert!(parse(&["engine", "--config", "x"]).is_err());
    }
}
