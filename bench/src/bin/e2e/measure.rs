//! One run of one setup: bring it up, check the path, take every measurement, take it down.
//!
//! The measurements of a run, in order: round-trip latency under no load (ping), one TCP
//! stream, four TCP streams, 64-byte UDP datagrams. A measurement that fails is recorded
//! as failed and the next one is still tried; only a setup that does not come up, or whose
//! path does not answer a ping, fails the run as a whole.
//!
//! With `--profile` a system-wide `perf record` runs during the one-stream measurement (see
//! [`crate::profile`]); a profile that fails is recorded as failed and never fails the
//! measurement.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use weft_testbed::{ping, wait_until, StatsOutput, Testbed};

use crate::cpu;
use crate::iperf::{self, Test};
use crate::latency::{self, LatencyReport};
use crate::profile::{Profile, Recording};
use crate::setups::{counter_ratio, Running, Setup};

/// How long a freshly brought-up path may take to answer a ping.
const PATH_TIMEOUT: Duration = Duration::from_secs(15);
/// Parallel streams of the multi-stream TCP measurement.
pub const STREAMS: u32 = 4;
/// UDP payload bytes of the packet-rate measurement.
pub const UDP_PAYLOAD: u32 = 64;

/// What every run does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Seconds per throughput measurement (`iperf3 -t`).
    pub seconds: u32,
    /// Echo requests per latency measurement.
    pub pings: u32,
    /// `[engine] workers` for the weft setups (`--workers`), if given.
    pub workers: Option<u32>,
    /// Clock ticks per second (`getconf CLK_TCK`).
    pub clock_ticks: f64,
    /// Whether to profile the one-stream measurement (`--profile`, and perf can record).
    pub profile: bool,
}

/// A measurement's outcome: its figures, or why it failed.
pub type Outcome<T> = Result<T, String>;

/// What one TCP measurement found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TcpSample {
    /// Receiver goodput of all streams, Gbit/s.
    pub gbps: f64,
    /// TCP retransmissions of the sender.
    pub retransmits: Option<u64>,
    /// CPU time of both hosts' weft processes per second of the measurement (1.0 = one
    /// core busy all the time).
    pub weft_cores: Option<f64>,
    /// Busy CPU time of the whole machine per second of the measurement.
    pub machine_cores: Option<f64>,
    /// Data datagrams per `recvmmsg` on the receiving host (udp_rx_packets / recv_batches).
    pub rx_batch_fill: Option<f64>,
    /// Datagrams per `sendmmsg` on the sending host (tx_packets / send_batches).
    pub tx_batch_fill: Option<f64>,
}

impl TcpSample {
    /// Goodput per core of weft CPU time. Unlike the goodput itself it hardly moves when
    /// other work on a shared machine takes CPU away from weft.
    pub fn gbps_per_weft_core(&self) -> Option<f64> {
        self.weft_cores.filter(|&c| c > 0.0).map(|c| self.gbps / c)
    }
}

/// What one UDP packet-rate measurement found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UdpSample {
    /// Datagrams the receiver got per second.
    pub delivered_pps: f64,
    /// Datagrams the sender sent per second.
    pub sent_pps: f64,
}

/// Every measurement of one run of one setup.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSample {
    /// Round-trip latency under no load.
    pub latency: Outcome<LatencyReport>,
    /// One TCP stream.
    pub tcp1: Outcome<TcpSample>,
    /// [`STREAMS`] TCP streams.
    pub tcp4: Outcome<TcpSample>,
    /// [`UDP_PAYLOAD`]-byte UDP datagrams.
    pub udp: Outcome<UdpSample>,
    /// Problems noticed after the measurements (a weft that exited, ...).
    pub problems: Vec<String>,
    /// Where the machine's CPU time went during the one-stream measurement (`--profile`
    /// only; `None` without it or when that measurement failed).
    pub profile: Option<Outcome<Profile>>,
}

impl RunSample {
    /// Whether any measurement of the run carried traffic.
    pub fn carried_traffic(&self) -> bool {
        self.latency.is_ok() || self.tcp1.is_ok() || self.tcp4.is_ok() || self.udp.is_ok()
    }
}

/// Total CPU ticks of `pids`, if every one of them could be read.
fn total_ticks(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&pid| cpu::cpu_ticks(pid)).sum()
}

/// One run of `setup`: bring it up, check the path, measure, take it down.
pub fn run(setup: Setup, bed: &Testbed, weft: Option<&Path>, plan: &Plan) -> Result<RunSample> {
    let mut running = setup.bring_up(bed, weft, plan.workers)?;
    let (src, dst) = setup.addresses();
    let client = bed.host(1).netns();
    let what = format!("{dst} to answer a ping from host 1 over {setup}");
    wait_until(PATH_TIMEOUT, &what, || {
        ping(client, dst, 1).is_ok_and(|s| s.all_received())
    })?;
    let before = running.stats()?;

    let latency = latency::measure(client, dst, plan.pings).map_err(|e| format!("{e:#}"));
    report("latency", &latency, |l| {
        format!("p50 {:.0} µs, p99 {:.0} µs", l.p50_us, l.p99_us)
    });
    let (tcp1, profile) = tcp(&mut running, bed, setup, (src, dst), plan, 1, plan.profile);
    report("1 stream", &tcp1, tcp_progress);
    if let Some(profile) = &profile {
        report("profile", profile, Profile::summary);
    }
    let (tcp4, _) = tcp(&mut running, bed, setup, (src, dst), plan, STREAMS, false);
    report("4 streams", &tcp4, tcp_progress);
    let udp = udp(bed, (src, dst), plan.seconds);
    report("UDP 64 B", &udp, |u| {
        format!(
            "{:.0} pkt/s delivered of {:.0} sent",
            u.delivered_pps, u.sent_pps
        )
    });

    let mut problems = Vec::new();
    if let Err(error) = running.check_alive() {
        problems.push(format!("{error:#}"));
    }
    match (before, running.finish()) {
        (Some((before_a, before_b)), Ok(Some((after_a, after_b)))) => {
            let grew = |before: &StatsOutput, after: &StatsOutput, name: &str| {
                after
                    .get(name)
                    .unwrap_or(0)
                    .saturating_sub(before.get(name).unwrap_or(0))
            };
            let sent = grew(&before_a, &after_a, "tx_packets");
            let delivered = grew(&before_b, &after_b, "rx_packets");
            ensure!(
                sent > 0 && delivered > 0,
                "the traffic did not go through weft (host 1's weft sent {sent}, host 2's \
                 delivered {delivered} packets)"
            );
        }
        (_, Err(error)) => problems.push(format!("reading weft's counters: {error:#}")),
        _ => {}
    }
    Ok(RunSample {
        latency,
        tcp1,
        tcp4,
        udp,
        problems,
        profile,
    })
}

/// Prints a measurement's outcome as progress on stderr.
fn report<T>(what: &str, outcome: &Outcome<T>, describe: impl Fn(&T) -> String) {
    match outcome {
        Ok(value) => eprint!("\n    {what}: {}", describe(value)),
        Err(error) => eprint!("\n    {what}: FAILED: {}", error.replace('\n', " ")),
    }
}

fn tcp_progress(sample: &TcpSample) -> String {
    let mut line = format!("{:.2} Gbit/s", sample.gbps);
    if let Some(cores) = sample.weft_cores {
        line.push_str(&format!(", weft CPU {cores:.2} cores"));
    }
    if let Some(cores) = sample.machine_cores {
        line.push_str(&format!(", machine busy {cores:.2} cores"));
    }
    if let (Some(rx), Some(tx)) = (sample.rx_batch_fill, sample.tx_batch_fill) {
        line.push_str(&format!(", {rx:.1} pkts/recvmmsg, {tx:.1} pkts/sendmmsg"));
    }
    line
}

/// `streams` TCP streams from host 1 to host 2, with the CPU time they cost and (weft
/// setups) how full weft's batches were; with `profile`, also where the machine's CPU time
/// went meanwhile (`None` when the measurement itself failed).
fn tcp(
    running: &mut Running<'_>,
    bed: &Testbed,
    setup: Setup,
    (src, dst): (Ipv4Addr, Ipv4Addr),
    plan: &Plan,
    streams: u32,
    profile: bool,
) -> (Outcome<TcpSample>, Option<Outcome<Profile>>) {
    let mut profiled = None;
    let mut inner = || -> Result<TcpSample> {
        let server = iperf::Server::start(bed.host(2).netns(), dst)?;
        let pids = running.weft_pids();
        let stats_before = running.stats().ok().flatten();
        // Started just before iperf3: perf records from a second into the measurement. A
        // recording left behind by an early return is stopped when it is dropped.
        let recording = profile.then(|| Recording::start(plan.seconds));
        let (before, machine_before) = (total_ticks(&pids), cpu::machine_busy_ticks());
        let start = Instant::now();
        let json = iperf::run_client(
            bed.host(1).netns(),
            src,
            dst,
            plan.seconds,
            Test::Tcp { streams },
        );
        let wall = start.elapsed();
        let (after, machine_after) = (total_ticks(&pids), cpu::machine_busy_ticks());
        server.finish();
        let report = iperf::parse_tcp(&json?)?;
        let stats_after = running.stats().ok().flatten();

        let cores = |ticks: u64| ticks as f64 / plan.clock_ticks / wall.as_secs_f64();
        let weft_cores = match (setup.is_weft(), before, after) {
            (true, Some(before), Some(after)) => Some(cores(after.saturating_sub(before))),
            _ => None,
        };
        let machine_cores = match (machine_before, machine_after) {
            (Some(before), Some(after)) => Some(cores(after.saturating_sub(before))),
            _ => None,
        };
        let (rx_batch_fill, tx_batch_fill) = match (stats_before, stats_after) {
            (Some((a0, b0)), Some((a1, b1))) => (
                counter_ratio(&b0, &b1, "udp_rx_packets", "recv_batches"),
                counter_ratio(&a0, &a1, "tx_packets", "send_batches"),
            ),
            _ => (None, None),
        };
        profiled = recording.map(|recording| {
            recording
                .and_then(Recording::finish)
                .map_err(|e| format!("{e:#}"))
        });
        Ok(TcpSample {
            gbps: report.bits_per_second / 1e9,
            retransmits: report.retransmits,
            weft_cores,
            machine_cores,
            rx_batch_fill,
            tx_batch_fill,
        })
    };
    let sample = inner().map_err(|e| format!("{e:#}"));
    (sample, profiled)
}

/// [`UDP_PAYLOAD`]-byte UDP datagrams from host 1 to host 2 as fast as iperf3 sends them.
fn udp(bed: &Testbed, (src, dst): (Ipv4Addr, Ipv4Addr), seconds: u32) -> Outcome<UdpSample> {
    let inner = || -> Result<UdpSample> {
        let server = iperf::Server::start(bed.host(2).netns(), dst)?;
        let test = Test::Udp {
            payload: UDP_PAYLOAD,
        };
        let json = iperf::run_client(bed.host(1).netns(), src, dst, seconds, test);
        server.finish();
        let report = iperf::parse_udp(&json?)?;
        ensure!(
            report.delivered_per_second > 0.0,
            "no UDP datagram was delivered ({:.0} sent per second)",
            report.sent_per_second
        );
        Ok(UdpSample {
            delivered_pps: report.delivered_per_second,
            sent_pps: report.sent_per_second,
        })
    };
    inner().map_err(|e| format!("{e:#}"))
}
