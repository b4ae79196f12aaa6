//! The soak's verdict: pure functions over the samples of one run, so that every rule is
//! unit-tested on synthetic series (`cargo test -p weft-bench`).
//!
//! The samples are split into thirds: the first third is warm-up (allocator arenas, socket
//! buffers, the route table reaching its steady size) and is ignored for growth; the
//! *maximum* of the last third is compared with the maximum of the middle third. Maxima,
//! not means or single samples, so that one noisy sample in the last third cannot fail a run
//! whose baseline saw the same peak, and a real leak (which lifts every later sample) cannot
//! hide. Allowed growth:
//!
//! - open descriptors and threads: at most [`Limits::fd_slack`] / [`Limits::thread_slack`]
//!   more (they are exact counts: a leak of one per route change or per datagram shows at
//!   once);
//! - RSS: at most the larger of [`Limits::rss_slack_ratio`] of the baseline and
//!   [`Limits::rss_slack_kib`] (a small daemon's RSS moves by a few MiB with the kernel's
//!   and the allocator's whims; a large one's by a few percent).
//!
//! Traffic must keep flowing: every interval between two samples must see the daemons'
//! `rx_packets` and the application's ping replies grow; a run of
//! [`Limits::stall_intervals`] intervals without growth anywhere, or no growth in the very
//! last interval, fails. A daemon that is no longer running fails, and so does a soak that
//! did not do what it claims (no route change succeeded, too many failed, or the hostile
//! datagrams never moved a drop counter).

use std::fmt::Write as _;
use std::ops::Range;

/// One reading of one daemon.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the load started.
    pub t: f64,
    /// Whether the process was still running (not gone, not a zombie).
    pub alive: bool,
    /// `VmRSS` of `/proc/PID/status`, in KiB.
    pub rss_kib: Option<u64>,
    /// Entries of `/proc/PID/fd`.
    pub fds: Option<u64>,
    /// `Threads` of `/proc/PID/status`.
    pub threads: Option<u64>,
    /// `rx_packets` of `weft stats`; `None` if it did not answer.
    pub rx_packets: Option<u64>,
    /// The sum of every `drop_*` counter of `weft stats`; `None` if it did not answer.
    pub drops: Option<u64>,
}

/// The samples of one host's daemon, in time order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSeries {
    /// The host number (1 or 2).
    pub host: u8,
    /// One sample per interval.
    pub samples: Vec<Sample>,
}

/// Everything a verdict is made of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    /// Every daemon's samples (taken at the same instants).
    pub hosts: Vec<HostSeries>,
    /// Ping replies received so far, at each sample instant.
    pub pings: Vec<u64>,
    /// Route changes (`weft peer add/del`) that succeeded.
    pub churn_ok: u64,
    /// Route changes that failed.
    pub churn_failed: u64,
    /// Hostile datagrams sent.
    pub hostile_sent: u64,
    /// The host they were sent to.
    pub hostile_target: u8,
}

/// The tolerances of the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Fewer samples than this cannot be judged (two per third).
    pub min_samples: usize,
    /// Open descriptors the last third's maximum may exceed the middle third's by.
    pub fd_slack: u64,
    /// Threads the last third's maximum may exceed the middle third's by.
    pub thread_slack: u64,
    /// RSS growth allowed as a fraction of the middle third's maximum...
    pub rss_slack_ratio: f64,
    /// ... or in KiB, whichever is larger.
    pub rss_slack_kib: u64,
    /// This many consecutive intervals without traffic fail the run.
    pub stall_intervals: usize,
    /// Failed route changes allowed, as a fraction of all.
    pub churn_failure_ratio: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_samples: 6,
            fd_slack: 4,
            thread_slack: 4,
            rss_slack_ratio: 0.10,
            rss_slack_kib: 8 * 1024,
            stall_intervals: 2,
            churn_failure_ratio: 0.01,
        }
    }
}

/// The outcome: the run passed if there is no failure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Why the run failed, one sentence each.
    pub failures: Vec<String>,
    /// What was observed, for the summary.
    pub notes: Vec<String>,
}

impl Verdict {
    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// (middle third, last third) of `n` samples; the first `n / 3` are warm-up and the last
/// third takes the remainder.
pub fn thirds(n: usize) -> (Range<usize>, Range<usize>) {
    let k = n / 3;
    (k..2 * k, 2 * k..n)
}

/// The largest present value of `get` over `samples[range]`.
fn max_in(samples: &[Sample], range: Range<usize>, get: fn(&Sample) -> Option<u64>) -> Option<u64> {
    samples[range].iter().filter_map(get).max()
}

/// "t A-B s" of the samples in `range`.
fn span(samples: &[Sample], range: Range<usize>) -> String {
    match (
        samples.get(range.start),
        samples.get(range.end.saturating_sub(1)),
    ) {
        (Some(first), Some(last)) => format!("t {:.1}-{:.1} s", first.t, last.t),
        _ => "no samples".to_owned(),
    }
}

/// Least-squares slope of `get` over `samples[range]`, per minute.
fn slope_per_minute(
    samples: &[Sample],
    range: Range<usize>,
    get: fn(&Sample) -> Option<u64>,
) -> Option<f64> {
    let points: Vec<(f64, f64)> = samples[range]
        .iter()
        .filter_map(|s| get(s).map(|v| (s.t, v as f64)))
        .collect();
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let var: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
    if var <= 0.0 {
        return None;
    }
    let cov: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_v)).sum();
    Some(cov / var * 60.0)
}

/// The intervals (sample `i - 1` to sample `i`) in which `values` did not grow; an absent
/// value counts as no growth, and the next present one is compared with the last present. Returns (longest run of such intervals and the sample range it
/// spans, length of the run that ends at the last interval).
fn stalls(values: &[Option<u64>]) -> (usize, Range<usize>, usize) {
    let mut longest = 0;
    let mut longest_at = 0..0;
    let mut current = 0;
    // The last value seen: an absent value is compared with the one before it.
    let mut previous = values.first().copied().flatten();
    for (i, &value) in values.iter().enumerate().skip(1) {
        let grew = matches!((previous, value), (Some(a), Some(b)) if b > a);
        if value.is_some() {
            previous = value;
        }
        if grew {
            current = 0;
        } else {
            current += 1;
            if current > longest {
                longest = current;
                longest_at = i - current..i + 1;
            }
        }
    }
    (longest, longest_at, current)
}

/// Judges whether traffic kept flowing in `values` (cumulative counts at each sample).
fn check_flow(
    what: &str,
    values: &[Option<u64>],
    times: &[f64],
    limits: &Limits,
    failures: &mut Vec<String>,
) {
    let (longest, at, last) = stalls(values);
    let when = |range: Range<usize>| {
        let unread = if values[range.clone()].iter().any(Option::is_none) {
            "; some could not be read"
        } else {
            ""
        };
        match (times.get(range.start), times.get(range.end - 1)) {
            (Some(a), Some(b)) => format!("t {a:.1}-{b:.1} s{unread}"),
            _ => format!("?{unread}"),
        }
    };
    if last > 0 {
        let n = values.len();
        failures.push(format!(
            "traffic stopped: {what} did not grow in the last {last} interval(s) ({})",
            when(n - 1 - last..n)
        ));
    } else if longest >= limits.stall_intervals {
        failures.push(format!(
            "traffic stalled: {what} did not grow for {longest} consecutive intervals ({})",
            when(at)
        ));
    }
}

/// Checks one resource count (fds, threads) for growth beyond `slack`.
fn check_count(
    host: u8,
    name: &str,
    samples: &[Sample],
    get: fn(&Sample) -> Option<u64>,
    slack: u64,
    failures: &mut Vec<String>,
) -> String {
    let (middle, last) = thirds(samples.len());
    let (Some(base), Some(end)) = (
        max_in(samples, middle.clone(), get),
        max_in(samples, last.clone(), get),
    ) else {
        return format!("{name} n/a");
    };
    if end > base + slack {
        failures.push(format!(
            "host {host}: {name} grew without bound: max {end} in the last third ({}) vs {base} \
             in the middle third ({}): +{}, allowed +{slack}",
            span(samples, last),
            span(samples, middle),
            end - base
        ));
    }
    let all: Vec<u64> = samples.iter().filter_map(get).collect();
    let (lo, hi) = (
        all.iter().min().copied().unwrap_or(0),
        all.iter().max().copied().unwrap_or(0),
    );
    format!("{name} {lo}..{hi} (middle-third max {base}, last-third max {end})")
}

/// Checks RSS growth; returns a note.
fn check_rss(host: u8, samples: &[Sample], limits: &Limits, failures: &mut Vec<String>) -> String {
    let get: fn(&Sample) -> Option<u64> = |s| s.rss_kib;
    let (middle, last) = thirds(samples.len());
    let (Some(base), Some(end)) = (
        max_in(samples, middle.clone(), get),
        max_in(samples, last.clone(), get),
    ) else {
        return "RSS n/a".to_owned();
    };
    let allowed = ((base as f64 * limits.rss_slack_ratio).ceil() as u64).max(limits.rss_slack_kib);
    if end > base + allowed {
        failures.push(format!(
            "host {host}: RSS grew without bound: max {end} KiB in the last third ({}) vs {base} \
             KiB in the middle third ({}): +{} KiB (+{:.1}%), allowed +{allowed} KiB (the larger \
             of {:.0}% and {} KiB)",
            span(samples, last.clone()),
            span(samples, middle.clone()),
            end - base,
            (end - base) as f64 * 100.0 / base.max(1) as f64,
            limits.rss_slack_ratio * 100.0,
            limits.rss_slack_kib
        ));
    }
    let first = samples.iter().find_map(get).unwrap_or(0);
    let mut note = format!(
        "RSS {first} -> {} KiB (middle-third max {base}, last-third max {end}",
        samples.iter().rev().find_map(get).unwrap_or(0)
    );
    if let Some(slope) = slope_per_minute(samples, middle.start..last.end, get) {
        let _ = write!(note, ", trend after warm-up {slope:+.0} KiB/min");
    }
    note.push(')');
    note
}

/// The verdict on `run`.
pub fn judge(run: &Run, limits: &Limits) -> Verdict {
    let mut failures = Vec::new();
    let mut notes = Vec::new();

    for series in &run.hosts {
        if let Some(dead) = series.samples.iter().find(|s| !s.alive) {
            failures.push(format!(
                "host {}: weft is no longer running (first seen at t {:.1} s)",
                series.host, dead.t
            ));
        }
    }

    let n = run.hosts.iter().map(|h| h.samples.len()).min().unwrap_or(0);
    if n < limits.min_samples {
        failures.push(format!(
            "too few samples to judge growth: {n}, at least {} needed (run longer or sample \
             more often)",
            limits.min_samples
        ));
    } else {
        for series in &run.hosts {
            let samples = &series.samples[..n];
            let host = series.host;
            let rss = check_rss(host, samples, limits, &mut failures);
            let fds = check_count(
                host,
                "open fds",
                samples,
                |s| s.fds,
                limits.fd_slack,
                &mut failures,
            );
            let threads = check_count(
                host,
                "threads",
                samples,
                |s| s.threads,
                limits.thread_slack,
                &mut failures,
            );
            notes.push(format!("host {host}: {rss}; {fds}; {threads}"));
        }
    }

    for series in &run.hosts {
        let values: Vec<Option<u64>> = series.samples.iter().map(|s| s.rx_packets).collect();
        let times: Vec<f64> = series.samples.iter().map(|s| s.t).collect();
        let what = format!("host {}'s rx_packets", series.host);
        check_flow(&what, &values, &times, limits, &mut failures);
    }
    if let Some(first) = run.hosts.first() {
        let values: Vec<Option<u64>> = run.pings.iter().copied().map(Some).collect();
        let times: Vec<f64> = first.samples.iter().map(|s| s.t).collect();
        check_flow("ping replies", &values, &times, limits, &mut failures);
    }

    let churn_total = run.churn_ok + run.churn_failed;
    if run.churn_ok == 0 {
        failures.push(format!(
            "soak setup: no route change succeeded ({} failed)",
            run.churn_failed
        ));
    } else if run.churn_failed as f64 > limits.churn_failure_ratio * churn_total as f64 {
        failures.push(format!(
            "route changes failed: {} of {churn_total} (more than {:.0}%)",
            run.churn_failed,
            limits.churn_failure_ratio * 100.0
        ));
    }

    let target = run.hosts.iter().find(|h| h.host == run.hostile_target);
    let drops = target.map(|h| {
        let first = h.samples.iter().find_map(|s| s.drops).unwrap_or(0);
        let last = h.samples.iter().rev().find_map(|s| s.drops).unwrap_or(0);
        last.saturating_sub(first)
    });
    match drops {
        _ if run.hostile_sent == 0 => {
            failures.push("soak setup: no hostile datagram was sent".to_owned())
        }
        Some(0) | None => failures.push(format!(
            "soak setup: {} hostile datagrams were sent but host {}'s drop counters did not \
             move",
            run.hostile_sent, run.hostile_target
        )),
        Some(moved) => notes.push(format!(
            "hostile datagrams: {} sent to host {}, its drop counters +{moved}",
            run.hostile_sent, run.hostile_target
        )),
    }

    Verdict { failures, notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A healthy daemon: flat RSS, fds and threads, rx growing, sampled every 5 s.
    fn steady(host: u8, n: usize) -> HostSeries {
        HostSeries {
            host,
            samples: (0..n)
                .map(|i| Sample {
                    t: i as f64 * 5.0,
                    alive: true,
                    rss_kib: Some(12_000),
                    fds: Some(20),
                    threads: Some(4),
                    rx_packets: Some(1000 * i as u64),
                    drops: Some(50 * i as u64),
                })
                .collect(),
        }
    }

    fn run(hosts: Vec<HostSeries>) -> Run {
        let n = hosts[0].samples.len();
        Run {
            hosts,
            pings: (0..n as u64).map(|i| i * 40).collect(),
            churn_ok: 600,
            churn_failed: 0,
            hostile_sent: 3000,
            hostile_target: 1,
        }
    }

    fn judged(run: &Run) -> Verdict {
        judge(run, &Limits::default())
    }

    fn assert_fails_with(verdict: &Verdict, needle: &str) {
        assert!(
            verdict.failures.iter().any(|f| f.contains(needle)),
            "expected a failure containing {needle:?}, got {:#?}",
            verdict.failures
        );
    }

    #[test]
    fn thirds_split_warm_up_middle_and_last() {
        assert_eq!(thirds(6), (2..4, 4..6));
        assert_eq!(thirds(12), (4..8, 8..12));
        assert_eq!(thirds(25), (8..16, 16..25));
    }

    #[test]
    fn a_steady_run_passes() {
        let verdict = judged(&run(vec![steady(1, 24), steady(2, 24)]));
        assert!(verdict.passed(), "{:#?}", verdict.failures);
        assert!(
            verdict.notes[0].contains("RSS 12000 -> 12000 KiB"),
            "{:?}",
            verdict.notes
        );
        assert!(
            verdict.notes[0].contains("+0 KiB/min"),
            "{:?}",
            verdict.notes
        );
    }

    #[test]
    fn warm_up_growth_is_ignored() {
        let mut host = steady(1, 24);
        for (i, sample) in host.samples.iter_mut().enumerate().take(8) {
            sample.rss_kib = Some(2_000 + 1_250 * i as u64);
            sample.fds = Some(10 + i as u64);
        }
        let verdict = judged(&run(vec![host, steady(2, 24)]));
        assert!(verdict.passed(), "{:#?}", verdict.failures);
    }

    #[test]
    fn a_steady_rss_leak_fails() {
        // 1.5 MiB per sample: the last third's maximum is 12 MiB above the middle third's.
        let mut host = steady(1, 24);
        for (i, sample) in host.samples.iter_mut().enumerate() {
            sample.rss_kib = Some(12_000 + 1536 * i as u64);
        }
        let verdict = judged(&run(vec![host, steady(2, 24)]));
        assert_fails_with(&verdict, "host 1: RSS grew without bound");
        assert_eq!(verdict.failures.len(), 1, "{:#?}", verdict.failures);
    }

    #[test]
    fn rss_noise_within_the_slack_passes() {
        // +-3 MiB of jitter, and one 7 MiB spike in the last third.
        let mut host = steady(1, 24);
        for (i, sample) in host.samples.iter_mut().enumerate() {
            let jitter = [0, 3072, 1024, 2048, 0, 3072][i % 6];
            sample.rss_kib = Some(12_000 + jitter);
        }
        host.samples[20].rss_kib = Some(12_000 + 3072 + 7 * 1024);
        let verdict = judged(&run(vec![host, steady(2, 24)]));
        assert!(verdict.passed(), "{:#?}", verdict.failures);
    }

    #[test]
    fn rss_slack_is_the_larger_of_ten_percent_and_8_mib() {
        let big = |last_third: u64| {
            let mut host = steady(1, 12);
            for (i, sample) in host.samples.iter_mut().enumerate() {
                sample.rss_kib = Some(if i >= 8 { last_third } else { 200 * 1024 });
            }
            judged(&run(vec![host, steady(2, 12)]))
        };
        // 200 MiB baseline: 10% (20 MiB) is the slack, not 8 MiB.
        assert!(big(215 * 1024).passed());
        assert_fails_with(&big(221 * 1024), "allowed +20480 KiB");
        let small = |last_third: u64| {
            let mut host = steady(1, 12);
            for (i, sample) in host.samples.iter_mut().enumerate() {
                sample.rss_kib = Some(if i >= 8 { last_third } else { 10 * 1024 });
            }
            judged(&run(vec![host, steady(2, 12)]))
        };
        // 10 MiB baseline: 8 MiB is the slack, not 1 MiB.
        assert!(small(18 * 1024).passed());
        assert_fails_with(&small(18 * 1024 + 1), "allowed +8192 KiB");
    }

    #[test]
    fn fd_growth_beyond_four_fails() {
        let with_fds = |extra: u64| {
            let mut host = steady(2, 24);
            host.samples[22].fds = Some(20 + extra);
            judged(&run(vec![steady(1, 24), host]))
        };
        assert!(with_fds(4).passed());
        let verdict = with_fds(5);
        assert_fails_with(&verdict, "host 2: open fds grew without bound: max 25");
        assert_fails_with(&verdict, "+5, allowed +4");
    }

    #[test]
    fn thread_growth_fails() {
        let mut host = steady(1, 24);
        for (i, sample) in host.samples.iter_mut().enumerate() {
            sample.threads = Some(4 + i as u64);
        }
        assert_fails_with(&judged(&run(vec![host, steady(2, 24)])), "threads grew");
    }

    #[test]
    fn a_dead_daemon_fails() {
        let mut host = steady(1, 24);
        for sample in &mut host.samples[15..] {
            *sample = Sample {
                t: sample.t,
                ..Sample::default()
            };
        }
        let verdict = judged(&run(vec![host, steady(2, 24)]));
        assert_fails_with(
            &verdict,
            "host 1: weft is no longer running (first seen at t 75.0 s)",
        );
        assert_fails_with(&verdict, "traffic stopped: host 1's rx_packets");
    }

    #[test]
    fn traffic_that_stops_fails() {
        // No growth in the last interval.
        let mut host = steady(2, 24);
        host.samples[23].rx_packets = host.samples[22].rx_packets;
        assert_fails_with(
            &judged(&run(vec![steady(1, 24), host])),
            "traffic stopped: host 2's rx_packets did not grow in the last 1 interval(s) (t \
             110.0-115.0 s)",
        );
        // Two intervals without growth in the middle.
        let mut host = steady(1, 24);
        host.samples[11].rx_packets = host.samples[10].rx_packets;
        host.samples[12].rx_packets = host.samples[10].rx_packets;
        assert_fails_with(
            &judged(&run(vec![host, steady(2, 24)])),
            "did not grow for 2 consecutive intervals (t 50.0-60.0 s)",
        );
        // One interval without growth, or one unanswered `weft stats`, is tolerated; two
        // unanswered in a row are not.
        let mut host = steady(1, 24);
        host.samples[11].rx_packets = None;
        assert!(judged(&run(vec![host, steady(2, 24)])).passed());
        let mut host = steady(1, 24);
        host.samples[11].rx_packets = None;
        host.samples[12].rx_packets = None;
        assert_fails_with(
            &judged(&run(vec![host, steady(2, 24)])),
            "host 1's rx_packets did not grow for 2 consecutive intervals (t 50.0-60.0 s; some \
             could not be read)",
        );
        let mut host = steady(1, 24);
        host.samples[11].rx_packets = host.samples[10].rx_packets;
        assert!(judged(&run(vec![host, steady(2, 24)])).passed());
    }

    #[test]
    fn pings_that_stop_fail() {
        let mut soak = run(vec![steady(1, 24), steady(2, 24)]);
        for ping in &mut soak.pings[20..] {
            *ping = 800;
        }
        assert_fails_with(&judged(&soak), "traffic stopped: ping replies");
    }

    #[test]
    fn too_few_samples_fail() {
        assert_fails_with(
            &judged(&run(vec![steady(1, 5), steady(2, 5)])),
            "too few samples to judge growth: 5",
        );
    }

    #[test]
    fn churn_and_hostile_traffic_must_have_happened() {
        let mut soak = run(vec![steady(1, 24), steady(2, 24)]);
        soak.churn_failed = 6;
        assert!(judged(&soak).passed(), "1% of failures is tolerated");
        soak.churn_failed = 7;
        assert_fails_with(&judged(&soak), "route changes failed: 7 of 607");
        soak.churn_failed = 0;
        soak.churn_ok = 0;
        assert_fails_with(&judged(&soak), "no route change succeeded");

        let mut soak = run(vec![steady(1, 24), steady(2, 24)]);
        soak.hostile_sent = 0;
        assert_fails_with(&judged(&soak), "no hostile datagram was sent");
        let mut soak = run(vec![steady(1, 24), steady(2, 24)]);
        for sample in &mut soak.hosts[0].samples {
            sample.drops = Some(7);
        }
        assert_fails_with(&judged(&soak), "host 1's drop counters did not move");
    }

    #[test]
    fn slope_is_per_minute() {
        let mut host = steady(1, 13);
        for (i, sample) in host.samples.iter_mut().enumerate() {
            sample.rss_kib = Some(10_000 + 100 * i as u64); // 100 KiB per 5 s
        }
        let slope = slope_per_minute(&host.samples, 0..13, |s| s.rss_kib).unwrap();
        assert!((slope - 1200.0).abs() < 1e-6, "{slope}");
    }
}
