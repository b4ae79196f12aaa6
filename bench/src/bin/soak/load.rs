//! The load of a soak run, four loops that run at once until the run stops: TCP and UDP
//! streams (iperf3) between host 1's pod and host 2, pings both ways, route changes on host
//! 1 through its control socket, and hostile datagrams from host 2 to host 1's weft.
//!
//! Every loop is made of bounded steps (`iperf3 -t`, `ping -c -w`, one control command, a
//! Python sender given a time and a count), each also killed by a timeout, and checks the
//! stop flag between steps; a loop that panics sets the flag on its way out
//! ([`StopOnPanic`]), so the others end too and the guards clean up.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use weft_testbed::{
    overlay_addr, overlay_subnet, pod_addr, underlay_addr, vtep_mac, wait_until, Netns,
    PingSummary, Testbed, WeftDaemon,
};

use crate::Backend;

/// The pod on host 1 that carries the application traffic: `100.96.1.2`.
pub const POD: u8 = 2;
/// Host 2's second underlay address, which weft does not know as a peer: `198.18.0.66`.
pub const STRANGER: u8 = 66;
/// Length of one iperf3 run.
const IPERF_SECONDS: u64 = 5;
/// The TCP rate of the iperf3 runs (bounded: the machine is shared and the soak is about
/// time, not speed).
const TCP_RATE: &str = "100M";
/// The UDP runs: 200-byte datagrams at this rate.
const UDP_RATE: &str = "20M";
/// The iperf3 port inside host 2.
const IPERF_PORT: &str = "5201";
/// Pings per ping run (0.02 s apart: a run lasts half a second).
const PINGS_PER_RUN: u32 = 25;
/// At most this many made-up routes are in host 1's table at once.
const MAX_EXTRA_ROUTES: usize = 48;
/// Every this many route changes, the real route to host 2 is added again (replaced).
const READD_EVERY: u64 = 10;
/// Every this many route changes, the real route to host 2 is deleted and added back.
const FLAP_EVERY: u64 = 40;
/// Length of one run of the hostile sender.
const HOSTILE_CHUNK_SECONDS: u64 = 5;
/// How many load-generator errors are kept for the report.
const KEPT_ERRORS: usize = 8;

/// The hostile datagram generator (Python 3, no dependencies).
const HOSTILE_PY: &str = include_str!("hostile.py");

/// Sets the flag when dropped while its thread panics, so that a loop (or the sampler) that
/// panics stops the whole run at once.
pub struct StopOnPanic<'a>(pub &'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// A small xorshift64* generator: the soak needs variety, not quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a constant).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// An octet in `low..=high`.
    fn octet(&mut self, low: u8, high: u8) -> u8 {
        self.range(u64::from(low), u64::from(high)) as u8
    }
}

/// What the loops did, counted as they go.
#[derive(Debug, Default)]
pub struct Tally {
    /// iperf3 runs that finished successfully.
    pub iperf_ok: AtomicU64,
    /// iperf3 runs that failed.
    pub iperf_failed: AtomicU64,
    /// Echo requests sent.
    pub pings_sent: AtomicU64,
    /// Echo replies received.
    pub pings_received: AtomicU64,
    /// Route changes that succeeded.
    pub churn_ok: AtomicU64,
    /// Route changes that failed.
    pub churn_failed: AtomicU64,
    /// The longest route change, in milliseconds (a `weft peer` process, start to exit).
    pub churn_max_ms: AtomicU64,
    /// Hostile datagrams sent.
    pub hostile_sent: AtomicU64,
    /// Hostile datagrams the sender could not send (`sendto` failed).
    pub hostile_errors: AtomicU64,
    /// Hostile datagrams sent, by kind.
    pub hostile_kinds: Mutex<BTreeMap<String, u64>>,
    /// The first few errors of the loops, and how many there were.
    pub errors: Mutex<(Vec<String>, u64)>,
}

impl Tally {
    fn error(&self, what: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.1 += 1;
        if errors.0.len() < KEPT_ERRORS {
            errors.0.push(what);
        }
    }

    /// The kept errors and how many there were in all.
    pub fn errors(&self) -> (Vec<String>, u64) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Everything the loops share.
pub struct Load<'a> {
    /// The backend under test.
    pub backend: Backend,
    /// The two hosts (and host 1's pod).
    pub bed: &'a Testbed,
    /// weft on host 1 and on host 2.
    pub daemons: &'a [WeftDaemon; 2],
    /// When the loops stop starting new steps.
    pub deadline: Instant,
    /// Set to stop every loop and the sampler (end of the run, a dead daemon, a panic).
    pub stop: AtomicBool,
    /// Set by SIGINT/SIGTERM.
    pub interrupted: &'a AtomicBool,
    /// Route changes per second on host 1.
    pub churn_rate: f64,
    /// Hostile datagrams per second.
    pub hostile_rate: f64,
    /// The seed of the route changes and the hostile mix.
    pub seed: u64,
    /// What the loops did.
    pub tally: Tally,
}

impl Load<'_> {
    /// Whether the loops should stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
            || self.interrupted.load(Ordering::SeqCst)
            || Instant::now() >= self.deadline
    }

    /// Sleeps `duration`, waking early when the run stops.
    fn pause(&self, duration: Duration) {
        let end = Instant::now() + duration;
        while !self.stopping() {
            let now = Instant::now();
            if now >= end {
                break;
            }
            thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    // ----------------------------------------------------------------------------------------
    // iperf3: host 1's pod <-> host 2, TCP both ways and small UDP datagrams.

    /// Runs iperf3 back to back until the run stops: TCP pod -> host 2, TCP host 2 -> pod
    /// (`-R`), UDP 200-byte datagrams pod -> host 2, in turn.
    pub fn iperf_loop(&self) {
        let modes: [&[&str]; 3] = [
            &["-b", TCP_RATE],
            &["-R", "-b", TCP_RATE],
            &["-u", "-l", "200", "-b", UDP_RATE],
        ];
        let mut round = 0usize;
        while !self.stopping() {
            let seconds = IPERF_SECONDS.min(self.remaining().as_secs());
            if seconds < 2 {
                break;
            }
            let mode = modes[round % modes.len()];
            round += 1;
            match self.iperf_once(seconds, mode) {
                Ok(()) => {
                    self.tally.iperf_ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    self.tally.iperf_failed.fetch_add(1, Ordering::Relaxed);
                    self.tally
                        .error(format!("iperf3 {}: {error:#}", mode.join(" ")));
                    self.pause(Duration::from_secs(1));
                }
            }
        }
    }

    fn iperf_once(&self, seconds: u64, mode: &[&str]) -> Result<()> {
        let server_ns = self.bed.host(2).netns();
        let client_ns = self.bed.host(1).pod(POD).netns();
        let mut server = server_ns.spawn(&["iperf3", "-s", "-1", "-p", IPERF_PORT])?;
        let filter = format!("sport = :{IPERF_PORT}");
        wait_until(
            Duration::from_secs(10),
            "iperf3 to listen in host 2",
            || {
                !server.is_running()
                    || server_ns
                        .exec(&["ss", "-H", "-l", "-t", "-n", &filter])
                        .map(|out| out.status.success() && !out.stdout.is_empty())
                        .unwrap_or(false)
            },
        )?;
        if let Some(status) = server.try_wait()? {
            bail!("the server exited ({status}): {}", server.stderr().trim());
        }
        let destination = overlay_addr(2).to_string();
        let time = seconds.to_string();
        let mut argv = vec![
            "iperf3",
            "-c",
            &destination,
            "-p",
            IPERF_PORT,
            "-t",
            &time,
            "--connect-timeout",
            "3000",
        ];
        argv.extend_from_slice(mode);
        let output = client_ns.exec_timeout(&argv, Duration::from_secs(seconds + 15))?;
        // The one-shot server exits after its test; it is killed on drop otherwise.
        let _ = server.wait_timeout(Duration::from_secs(3));
        if !output.status.success() {
            let text = String::from_utf8_lossy(&output.stdout);
            let last = text.lines().rev().find(|l| !l.trim().is_empty());
            bail!(
                "{} {} {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                last.unwrap_or("")
            );
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // ping: host 2 -> pod and pod -> host 2, three sizes.

    /// Runs short ping floods (25 pings 20 ms apart) back to back until the run stops,
    /// alternating the direction and the size (56, 1000, 1400 bytes).
    pub fn ping_loop(&self) {
        let pod = self.bed.host(1).pod(POD);
        let host2 = self.bed.host(2).netns();
        let paths: [(&Netns, Ipv4Addr); 2] =
            [(host2, pod.address()), (pod.netns(), overlay_addr(2))];
        let sizes = ["56", "1000", "1400"];
        let count = PINGS_PER_RUN.to_string();
        let mut round = 0usize;
        while !self.stopping() {
            let (from, to) = paths[round % paths.len()];
            let size = sizes[(round / paths.len()) % sizes.len()];
            round += 1;
            let to = to.to_string();
            let argv = [
                "ping", "-n", "-q", "-c", &count, "-i", "0.02", "-W", "1", "-w", "5", "-s", size,
                &to,
            ];
            match from.exec_timeout(&argv, Duration::from_secs(10)) {
                Ok(output) => {
                    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
                    text.push_str(&String::from_utf8_lossy(&output.stderr));
                    let summary = PingSummary::parse(&text);
                    let tally = &self.tally;
                    tally
                        .pings_sent
                        .fetch_add(u64::from(summary.transmitted), Ordering::Relaxed);
                    tally
                        .pings_received
                        .fetch_add(u64::from(summary.received), Ordering::Relaxed);
                    if summary.received == 0 {
                        // The line that says why (an ICMP error, a failing send), if any.
                        let why = text
                            .lines()
                            .map(str::trim)
                            .find(|l| {
                                !l.is_empty()
                                    && !l.starts_with("PING")
                                    && !l.starts_with("---")
                                    && !l.contains("packets transmitted")
                            })
                            .unwrap_or("no output");
                        self.tally.error(format!(
                            "ping {} -> {to} ({size} bytes): {summary}: {why}",
                            from.name()
                        ));
                        self.pause(Duration::from_millis(500));
                    }
                }
                Err(error) => {
                    self.tally
                        .error(format!("ping {} -> {to}: {error}", from.name()));
                    self.pause(Duration::from_millis(500));
                }
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Route churn on host 1.

    /// Changes host 1's routes through its control socket, `churn_rate` times per second,
    /// until the run stops: made-up subnets (`100.96.X.0/24`, `100.96.X.128/25`,
    /// `100.96.X.Y/32`, X in 10..=249) added, replaced and deleted toward made-up endpoints
    /// in 198.18.0.0/15 (never answered: 198.19.0.0/16 is not routed, 198.18.0.100-199 never
    /// answers ARP), at most [`MAX_EXTRA_ROUTES`] at once; the real route to host 2 is
    /// added again every [`READD_EVERY`] changes and deleted and added back every
    /// [`FLAP_EVERY`].
    pub fn churn_loop(&self) {
        let daemon = &self.daemons[0];
        let mut rng = Rng::new(self.seed ^ 0xc4a2_0000);
        let period = Duration::from_secs_f64(1.0 / self.churn_rate);
        let real = (overlay_subnet(2), underlay_addr(2).to_string(), vtep_mac(2));
        let mut live: Vec<String> = Vec::new();
        let mut next = Instant::now();
        let mut op = 0u64;
        while !self.stopping() {
            op += 1;
            if op % FLAP_EVERY == 0 {
                self.route_op(daemon, &["peer", "del", "--subnet", &real.0]);
                self.add_route(daemon, &real.0, &real.1, &real.2);
            } else if op % READD_EVERY == 0 {
                self.add_route(daemon, &real.0, &real.1, &real.2);
            } else {
                self.random_change(daemon, &mut rng, &mut live);
            }
            next += period;
            let now = Instant::now();
            if next > now {
                self.pause(next - now);
            } else {
                // Behind (a slow control command): do not try to catch up in a burst.
                next = now;
            }
        }
    }

    fn random_change(&self, daemon: &WeftDaemon, rng: &mut Rng, live: &mut Vec<String>) {
        let roll = rng.range(0, 99);
        if live.len() < MAX_EXTRA_ROUTES && (live.is_empty() || roll < 55) {
            let Some(subnet) = (0..20)
                .map(|_| made_up_subnet(rng))
                .find(|subnet| !live.contains(subnet))
            else {
                return;
            };
            let (endpoint, mac) = made_up_endpoint(rng);
            if self.add_route(daemon, &subnet, &endpoint, &mac) {
                live.push(subnet);
            }
        } else if roll < 75 {
            let subnet = live[rng.range(0, live.len() as u64 - 1) as usize].clone();
            let (endpoint, mac) = made_up_endpoint(rng);
            self.add_route(daemon, &subnet, &endpoint, &mac);
        } else {
            let subnet = live.swap_remove(rng.range(0, live.len() as u64 - 1) as usize);
            self.route_op(daemon, &["peer", "del", "--subnet", &subnet]);
        }
    }

    /// `weft peer add` (with the VTEP MAC for VXLAN); whether it succeeded.
    fn add_route(&self, daemon: &WeftDaemon, subnet: &str, endpoint: &str, mac: &str) -> bool {
        let mut args = vec!["peer", "add", "--subnet", subnet, "--endpoint", endpoint];
        if self.backend == Backend::Vxlan {
            args.extend_from_slice(&["--vtep-mac", mac]);
        }
        self.route_op(daemon, &args)
    }

    /// Runs one control command on host 1 and counts it; whether it succeeded.
    fn route_op(&self, daemon: &WeftDaemon, args: &[&str]) -> bool {
        let start = Instant::now();
        let result = daemon.control(args);
        let ms = start.elapsed().as_millis() as u64;
        self.tally.churn_max_ms.fetch_max(ms, Ordering::Relaxed);
        let failure = match result {
            Ok(output) if output.status.success() => None,
            Ok(output) => Some(format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(error) => Some(error.to_string()),
        };
        match failure {
            None => {
                self.tally.churn_ok.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(why) => {
                self.tally.churn_failed.fetch_add(1, Ordering::Relaxed);
                self.tally.error(format!("weft {}: {why}", args.join(" ")));
                false
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Hostile datagrams, host 2 -> weft on host 1.

    /// Runs the hostile sender in chunks of [`HOSTILE_CHUNK_SECONDS`] until the run stops:
    /// from host 2's own address (a known peer) and from [`STRANGER`] (unknown), to host 1's
    /// weft port, at `hostile_rate` datagrams per second.
    pub fn hostile_loop(&self) {
        let mut chunk = 0u64;
        while !self.stopping() {
            let seconds = HOSTILE_CHUNK_SECONDS.min(self.remaining().as_secs());
            if seconds == 0 {
                break;
            }
            chunk += 1;
            if let Err(error) = self.hostile_once(seconds, self.seed.wrapping_add(chunk)) {
                self.tally.error(format!("hostile sender: {error:#}"));
                self.pause(Duration::from_secs(1));
            }
        }
    }

    fn hostile_once(&self, seconds: u64, seed: u64) -> Result<()> {
        let limit = (self.hostile_rate * seconds as f64).ceil() as u64 + 1;
        let args = [
            self.backend.name().to_owned(),
            underlay_addr(1).to_string(),
            self.backend.port().to_string(),
            underlay_addr(2).to_string(),
            underlay_addr(STRANGER).to_string(),
            self.hostile_rate.to_string(),
            seconds.to_string(),
            limit.to_string(),
            vtep_mac(1),
            vtep_mac(2),
            overlay_addr(1).to_string(),
            pod_addr(1, POD).to_string(),
            pod_addr(2, 9).to_string(),
            seed.to_string(),
        ];
        let mut argv = vec!["python3", "-c", HOSTILE_PY];
        argv.extend(args.iter().map(String::as_str));
        let output = self
            .bed
            .host(2)
            .netns()
            .exec_timeout(&argv, Duration::from_secs(seconds + 10))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let line = stdout
            .lines()
            .find(|line| line.starts_with("sent "))
            .with_context(|| format!("no summary line in its output: {stdout}"))?;
        let (sent, kinds, errors) = parse_hostile_summary(line)
            .with_context(|| format!("cannot read its summary line: {line}"))?;
        self.tally.hostile_sent.fetch_add(sent, Ordering::Relaxed);
        self.tally
            .hostile_errors
            .fetch_add(errors, Ordering::Relaxed);
        let mut all = self
            .tally
            .hostile_kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (kind, count) in kinds {
            *all.entry(kind).or_default() += count;
        }
        Ok(())
    }
}

/// A made-up subnet of the churn: `100.96.X.0/24`, `100.96.X.128/25` or `100.96.X.Y/32`.
fn made_up_subnet(rng: &mut Rng) -> String {
    let x = rng.octet(10, 249);
    match rng.range(0, 3) {
        0 => format!("100.96.{x}.128/25"),
        1 => format!("100.96.{x}.{}/32", rng.octet(1, 254)),
        _ => format!("100.96.{x}.0/24"),
    }
}

/// A made-up endpoint in 198.18.0.0/15 that never answers (198.19.A.B is not routed in the
/// testbed, 198.18.0.100-199 is on the underlay link but nobody has it), and a VTEP MAC.
fn made_up_endpoint(rng: &mut Rng) -> (String, String) {
    let endpoint = if rng.range(0, 1) == 0 {
        format!("198.19.{}.{}", rng.octet(1, 254), rng.octet(1, 254))
    } else {
        format!("198.18.0.{}", rng.octet(100, 199))
    };
    let mac = format!(
        "02:00:00:ee:{:02x}:{:02x}",
        rng.octet(0, 255),
        rng.octet(0, 255)
    );
    (endpoint, mac)
}

/// The hostile sender's summary line: datagrams sent, (kind, count) of each kind, datagrams
/// it could not send.
type HostileSummary = (u64, Vec<(String, u64)>, u64);

/// `sent N kind=count ... errors=E` -> (N, kinds, E).
pub fn parse_hostile_summary(line: &str) -> Option<HostileSummary> {
    let mut words = line.split_whitespace();
    if words.next()? != "sent" {
        return None;
    }
    let sent = words.next()?.parse().ok()?;
    let mut kinds = Vec::new();
    let mut errors = 0;
    for word in words {
        let (name, count) = word.split_once('=')?;
        let count = count.parse().ok()?;
        if name == "errors" {
            errors = count;
        } else {
            kinds.push((name.to_owned(), count));
        }
    }
    Some((sent, kinds, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_summary_is_parsed() {
        let (sent, kinds, errors) =
            parse_hostile_summary("sent 12 garbage=5 ttl1=7 errors=1").unwrap();
        assert_eq!((sent, errors), (12, 1));
        assert_eq!(kinds, [("garbage".to_owned(), 5), ("ttl1".to_owned(), 7)]);
        assert_eq!(
            parse_hostile_summary("sent 0  errors=0"),
            Some((0, vec![], 0))
        );
        assert_eq!(parse_hostile_summary("sent x"), None);
        assert_eq!(parse_hostile_summary("Traceback"), None);
    }

    #[test]
    fn made_up_routes_stay_out_of_the_real_ones() {
        let mut rng = Rng::new(7);
        for _ in 0..2000 {
            let subnet = made_up_subnet(&mut rng);
            let x: u8 = subnet.split('.').nth(2).unwrap().parse().unwrap();
            assert!((10..=249).contains(&x), "{subnet}");
            let (endpoint, mac) = made_up_endpoint(&mut rng);
            assert!(
                endpoint.starts_with("198.19.") || endpoint.starts_with("198.18.0.1"),
                "{endpoint}"
            );
            assert_ne!(endpoint, underlay_addr(STRANGER).to_string());
            assert!(mac.starts_with("02:00:00:ee:"), "{mac}");
        }
    }
}
