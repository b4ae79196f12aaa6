//! Round-trip latency under no load: `ping` at 100 packets per second, every reply's time
//! read from ping's per-packet lines, percentiles computed here.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Result};
use weft_testbed::Netns;

/// Seconds between two echo requests (`ping -i`; below 0.2 s needs root, which the runner is).
const INTERVAL: &str = "0.01";
/// Requests per second at [`INTERVAL`].
const PER_SECOND: u32 = 100;
/// Fewest and most echo requests per measurement.
const COUNT_RANGE: (u32, u32) = (100, 300);
/// How long ping waits for the last reply (`-W`, seconds).
const REPLY_WAIT_S: u32 = 1;

/// What one latency measurement found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyReport {
    /// Median round trip, microseconds.
    pub p50_us: f64,
    /// 99th percentile round trip, microseconds.
    pub p99_us: f64,
    /// Echo requests sent.
    pub sent: u32,
    /// Replies received (the percentiles are over these).
    pub received: u32,
}

/// Echo requests for a measurement of about `seconds`: 100 per second, 100 to 300.
pub fn count_for(seconds: u32) -> u32 {
    seconds
        .saturating_mul(PER_SECOND)
        .clamp(COUNT_RANGE.0, COUNT_RANGE.1)
}

/// Pings `dst` from `netns` `count` times, 10 ms apart, and returns the percentiles of the
/// replies' round-trip times. Fails if no reply came back.
pub fn measure(netns: &Netns, dst: Ipv4Addr, count: u32) -> Result<LatencyReport> {
    let (count_arg, dst_arg) = (count.to_string(), dst.to_string());
    // -w bounds the whole run even if replies stop coming.
    let deadline = (count / PER_SECOND + REPLY_WAIT_S + 5).to_string();
    let wait = REPLY_WAIT_S.to_string();
    let argv = [
        "ping", "-n", "-i", INTERVAL, "-c", &count_arg, "-W", &wait, "-w", &deadline, &dst_arg,
    ];
    let timeout = Duration::from_secs(u64::from(count / PER_SECOND) + 20);
    let output = netns.exec_timeout(&argv, timeout)?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut rtts = parse_rtts_ms(&text);
    if rtts.is_empty() {
        bail!(
            "no reply to {count} pings of {dst}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    rtts.sort_by(f64::total_cmp);
    Ok(LatencyReport {
        p50_us: percentile(&rtts, 50.0) * 1000.0,
        p99_us: percentile(&rtts, 99.0) * 1000.0,
        sent: count,
        received: u32::try_from(rtts.len()).unwrap_or(u32::MAX),
    })
}

/// The round-trip times (ms) of ping's per-packet lines (`... icmp_seq=3 ttl=64 time=0.045
/// ms`), in the order they came.
pub fn parse_rtts_ms(output: &str) -> Vec<f64> {
    output
        .lines()
        .filter(|line| line.contains("icmp_seq="))
        .filter_map(|line| {
            let time = &line[line.find("time=")? + "time=".len()..];
            let end = time.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
            time[..end].parse().ok()
        })
        .collect()
}

/// The `p`th percentile of ascending `sorted` values by the nearest-rank method (the
/// smallest value with at least `p`% of the values at or below it); `sorted` must not be
/// empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_reply_and_nothing_else() {
        let output = "PING 198.18.0.2 (198.18.0.2) 56(84) bytes of data.\n\
            64 bytes from 198.18.0.2: icmp_seq=1 ttl=64 time=0.067 ms\n\
            64 bytes from 198.18.0.2: icmp_seq=2 ttl=64 time=1.56 ms\n\
            From 198.18.0.1 icmp_seq=3 Destination Host Unreachable\n\
            64 bytes from 198.18.0.2: icmp_seq=4 ttl=64 time=12 ms\n\
            \n--- 198.18.0.2 ping statistics ---\n\
            4 packets transmitted, 3 received, 25% packet loss, time 62ms\n\
            rtt min/avg/max/mdev = 0.067/4.542/12.000/0.009 ms\n";
        assert_eq!(parse_rtts_ms(output), [0.067, 1.56, 12.0]);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=300).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 150.0);
        assert_eq!(percentile(&values, 99.0), 297.0);
        assert_eq!(percentile(&values, 100.0), 300.0);
        assert_eq!(percentile(&values, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 99.0), 99.0);
    }

    #[test]
    fn count_follows_the_measurement_time() {
        assert_eq!(count_for(1), 100);
        assert_eq!(count_for(2), 200);
        assert_eq!(count_for(5), 300);
    }
}
