//! `weft-e2e-bench`: weft against the kernel's vxlan, end to end, in network namespaces.
//!
//! Builds the standard two-host topology of TESTBED.md (two network namespaces joined by one
//! veth, `198.18.0.1/24` and `198.18.0.2/24`) and, for each setup (see [`setups::Setup`]:
//! direct veth, the kernel's vxlan as flanneld programs it, `weft run` with the UDP and the
//! VXLAN backend, and weft the way flanneld works: offloads off, one packet per system call),
//! measures host 1 -> host 2: round-trip latency p50/p99 under no load (ping), one TCP stream
//! and four (iperf3), and 64-byte UDP datagrams delivered per second (iperf3, the receiver's
//! count). Runs are interleaved (run 1 of every setup, then run 2, ...) so slow drifts of a
//! shared machine hit every setup alike; each setup is brought up before its run and taken
//! down after it.
//!
//! The markdown report (stdout) gives for every figure the median of the runs and its ratio
//! to the kernel vxlan's median, plus weft's CPU time and batching, and records the date,
//! machine, kernel, commit, command and the underlay veth's offload settings;
//! `--write-results bench/RESULTS.md` also puts it into that file. A setup or measurement
//! that fails shows `failed: <reason>` in its cells and the run goes on. Progress goes to
//! stderr. The exit status is non-zero only if some setup carried no traffic at all (or the
//! runner itself failed), never because of a figure.
//!
//! Needs root, `ip`, `bridge`, `ss`, `ping`, `ethtool` and `iperf3`, and the `weft` binary:
//!
//! ```text
//! cargo build --release -p weft -p weft-bench
//! sudo target/release/weft-e2e-bench --runs 3 --seconds 5 [--only weft-vxlan,kernel-vxlan] [--workers 1]
//! sudo target/release/weft-e2e-bench --quick     # CI: one run, 2 s per measurement, every setup
//! sudo target/release/weft-e2e-bench --runs 5 --seconds 10 --write-results bench/RESULTS.md
//! sudo target/release/weft-e2e-bench --runs 3 --seconds 5 --profile   # also needs `perf`
//! ```
//!
//! `--profile` adds where the machine's CPU time went during each one-stream measurement
//! (system-wide `perf record`, see [`profile`]): idle, iperf3, weft's workers in the kernel
//! and in user space, and weft's hottest symbols. Without a working `perf` it says so and
//! the run goes on without it.
//!
//! Everything is created inside namespaces with unique names and removed by guards, also on
//! errors and on Ctrl-C (the first SIGINT/SIGTERM stops after the current step and cleans up;
//! a second one exits at once). Every traffic generator is bounded (`iperf3 -t`, `ping -c -w`,
//! a connect timeout and a kill timeout).

// The modules live in src/bin/e2e/ (a crate root's modules would otherwise be looked up
// next to it, where Cargo would take them for binaries of their own).
#[path = "e2e/cpu.rs"]
mod cpu;
#[path = "e2e/facts.rs"]
mod facts;
#[path = "e2e/iperf.rs"]
mod iperf;
#[path = "e2e/latency.rs"]
mod latency;
#[path = "e2e/measure.rs"]
mod measure;
#[path = "e2e/profile.rs"]
mod profile;
#[path = "e2e/report.rs"]
mod report;
#[path = "e2e/setups.rs"]
mod setups;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use weft_testbed::{is_root, wait_until, Testbed};

use facts::{first_line_of, Facts};
use measure::Plan;
use report::SetupResult;
use setups::Setup;

/// How long a removed device may take to disappear.
const GONE_TIMEOUT: Duration = Duration::from_secs(10);
/// Runs per setup with `--quick`.
const QUICK_RUNS: u32 = 1;
/// Seconds per measurement with `--quick`.
const QUICK_SECONDS: u32 = 2;

/// weft against the kernel's vxlan, end to end in network namespaces: TCP (1 and 4 streams),
/// 64-byte UDP packets per second and round-trip latency, as ratios to the kernel vxlan.
#[derive(Debug, Parser)]
#[command(name = "weft-e2e-bench", version)]
struct Cli {
    /// Runs per setup; the report gives their medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Length of each throughput measurement (iperf3 -t), in seconds; the latency
    /// measurement sends 100 pings per second of it (100 to 300).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=600))]
    seconds: u32,
    /// Short mode for CI: one run, 2 s per measurement, every setup and measurement
    /// (`--runs 1 --seconds 2`); prints one table, not numbers to compare.
    #[arg(long, conflicts_with_all = ["runs", "seconds"])]
    quick: bool,
    /// Measure only these setups (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Setup>,
    /// `[engine] workers = N` for the weft setups [default: left out, the engine's default]
    /// (the offload-off, batch-1 setup always runs one worker).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    workers: Option<u32>,
    /// The weft binary [default: $WEFT_BIN, else `weft` next to this executable].
    #[arg(long)]
    weft: Option<PathBuf>,
    /// Also write the report into this markdown file (e.g. bench/RESULTS.md), between its
    /// generated-section markers (appended if it has none, created if missing).
    #[arg(long, value_name = "PATH")]
    write_results: Option<PathBuf>,
    /// Also write every run's figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also profile the whole machine during every 1-stream measurement (`perf record -a
    /// -g` from 1 s into it to shortly before its end) and report where the CPU time went:
    /// idle, iperf3 (and its kernel copies), weft's workers in the kernel (copies and the
    /// rest) and in user space, everything else, and weft's hottest user-space symbols.
    /// Needs `perf`; if it is missing or cannot record, the run goes on without a profile.
    #[arg(long)]
    profile: bool,
}

impl Cli {
    /// (runs per setup, seconds per measurement), after `--quick`.
    fn runs_and_seconds(&self) -> (u32, u32) {
        if self.quick {
            (QUICK_RUNS, QUICK_SECONDS)
        } else {
            (self.runs, self.seconds)
        }
    }

    /// The setups to measure, in report order.
    fn setups(&self) -> Vec<Setup> {
        if self.only.is_empty() {
            Setup::ALL.to_vec()
        } else {
            let mut only = self.only.clone();
            only.sort();
            only.dedup();
            only
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
    weft_bench::weft_binary(cli.weft.as_deref())
}

/// `args` as typed, arguments with spaces quoted.
fn quote_args(args: impl Iterator<Item = String>) -> String {
    args.map(|arg| {
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            format!("'{arg}'")
        } else {
            arg
        }
    })
    .collect::<Vec<_>>()
    .join(" ")
}

/// The offload settings of every host's underlay veth, labelled `host N`.
fn offloads(bed: &Testbed) -> Vec<(String, String)> {
    bed.hosts()
        .iter()
        .map(|host| {
            (
                format!("host {}", host.index()),
                facts::veth_offloads(host.netns()),
            )
        })
        .collect()
}

/// Runs the benchmark; `Ok(false)` when some setup carried no traffic at all (the report
/// says why).
fn bench(cli: &Cli) -> Result<bool> {
    ensure!(
        is_root(),
        "weft-e2e-bench creates network namespaces and devices: run it as root"
    );
    let iperf3 = first_line_of("iperf3", &["--version"]);
    ensure!(
        iperf3 != "unknown",
        "iperf3 is not installed: apt-get install -y iperf3"
    );
    let ping = first_line_of("ping", &["-V"]);
    ensure!(
        ping != "unknown",
        "ping is not installed: apt-get install -y iputils-ping"
    );
    ensure!(
        first_line_of("ethtool", &["--version"]) != "unknown",
        "ethtool is not installed: apt-get install -y ethtool"
    );
    let setups = cli.setups();
    let weft = if setups.iter().any(|setup| setup.is_weft()) {
        Some(weft_binary(cli)?)
    } else {
        None
    };
    let (runs, seconds) = cli.runs_and_seconds();
    let profile = cli.profile.then(profile::probe);
    if let Some(Err(reason)) = &profile {
        eprintln!(
            "weft-e2e-bench: --profile: perf cannot record ({reason}); going on without a profile"
        );
    }
    let plan = Plan {
        seconds,
        pings: latency::count_for(seconds),
        workers: cli.workers,
        clock_ticks: first_line_of("getconf", &["CLK_TCK"])
            .parse()
            .unwrap_or(100.0),
        profile: matches!(profile, Some(Ok(_))),
    };

    // Ctrl-C: the first signal sets the flag (the loop stops after the current step and the
    // guards clean up); a second one exits at once.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&interrupted))?;
        signal_hook::flag::register(signal, Arc::clone(&interrupted))?;
    }

    let bed = Testbed::two_hosts("e2eb")?;
    let mut facts = Facts {
        command: quote_args(std::env::args()),
        args: quote_args(std::env::args().skip(1)),
        date: first_line_of("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        machine: facts::machine(),
        kernel: facts::kernel_release(),
        load: facts::load_average(),
        commit: facts::commit(),
        weft: facts::weft_binary(weft.as_deref()),
        iperf3,
        ping,
        congestion_control: bed
            .host(1)
            .netns()
            .exec_ok(&["sysctl", "-n", "net.ipv4.tcp_congestion_control"])
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned()),
        offloads: offloads(&bed),
        offloads_changed: None,
        runs,
        seconds,
        pings: plan.pings,
        workers: cli.workers,
        profile,
    };

    let mut results: Vec<SetupResult> = setups
        .iter()
        .map(|&setup| SetupResult {
            setup,
            runs: Vec::new(),
        })
        .collect();
    'runs: for run in 1..=runs {
        for result in &mut results {
            if interrupted.load(Ordering::Relaxed) {
                break 'runs;
            }
            let setup = result.setup;
            eprint!("[run {run}/{runs}] {setup}:");
            let outcome = measure::run(setup, &bed, weft.as_deref(), &plan);
            let gone = wait_devices_gone(&bed);
            match outcome {
                Ok(sample) => {
                    eprintln!();
                    result.runs.push(Ok(sample));
                }
                Err(error) => {
                    eprintln!(" FAILED: {error:#}");
                    result.runs.push(Err(format!("{error:#}")));
                }
            }
            // A device that does not go away would spoil every later run.
            gone?;
        }
    }
    let end = offloads(&bed);
    if end != facts.offloads {
        facts.offloads_changed = Some(end);
    }
    drop(bed);

    let interrupted = interrupted.load(Ordering::Relaxed);
    if interrupted && results.iter().all(|r| r.runs.is_empty()) {
        bail!("interrupted before any run finished; the namespaces have been removed");
    }
    let text = report::markdown(&facts, &results);
    print!("{text}");
    if let Some(path) = &cli.write_results {
        write_results(path, &text)?;
    }
    if let Some(path) = &cli.json {
        std::fs::write(path, report::json(&facts, &results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    ensure!(
        !interrupted,
        "interrupted: the report above has only the finished runs; the namespaces have been \
         removed"
    );
    let silent: Vec<&str> = results
        .iter()
        .filter(|r| !r.carried_traffic())
        .map(|r| r.setup.label())
        .collect();
    if !silent.is_empty() {
        eprintln!(
            "weft-e2e-bench: no traffic at all through: {}",
            silent.join("; ")
        );
    }
    Ok(silent.is_empty())
}

/// Puts `section` into the results file at `path` (see [`report::update_results`]).
fn write_results(path: &Path, section: &str) -> Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    std::fs::write(path, report::update_results(existing.as_deref(), section))
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("weft-e2e-bench: wrote the report into {}", path.display());
    Ok(())
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
        assert_eq!(parse(&["--quick"]).unwrap().setups(), Setup::ALL);
    }

    #[test]
    fn only_workers_and_results_options() {
        let only = parse(&["--quick", "--only", "weft-vxlan,kernel-vxlan,weft-vxlan"]).unwrap();
        assert_eq!(only.setups(), [Setup::KernelVxlan, Setup::WeftVxlan]);
        assert_eq!(parse(&[]).unwrap().workers, None);
        assert_eq!(parse(&["--workers", "2"]).unwrap().workers, Some(2));
        assert!(parse(&["--workers", "0"]).is_err());
        assert!(!parse(&[]).unwrap().profile);
        assert!(parse(&["--quick", "--profile"]).unwrap().profile);
        let write = parse(&["--write-results", "bench/RESULTS.md"]).unwrap();
        assert_eq!(
            write.write_results.as_deref(),
            Some(Path::new("bench/RESULTS.md"))
        );
    }

    #[test]
    fn arguments_are_quoted_when_needed() {
        let args = ["a", "b c", ""].map(String::from);
        assert_eq!(quote_args(args.into_iter()), "a 'b c' ''");
    }
}
