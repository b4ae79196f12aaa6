//! iperf3 inside the testbed: a one-shot server, a bounded client run (TCP with one or more
//! streams, or small UDP datagrams), and the few numbers read from the client's JSON report.
//!
//! The JSON is not parsed in full (no JSON crate in the workspace): the report's `end`
//! section holds flat objects (`sum_sent`, `sum_received`, `cpu_utilization_percent`) whose
//! number fields are read by [`flat_number`]. The unit tests run it on a real iperf3 3.12
//! report.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use weft_testbed::{wait_until, Netns, NsChild};

/// The TCP port the iperf3 server listens on (inside the server's namespace).
pub const PORT: u16 = 5201;
/// How long the server gets to start listening.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to connect (iperf3 `--connect-timeout`, milliseconds).
const CONNECT_TIMEOUT_MS: u32 = 5000;
/// Time a client run may take beyond its `-t` before it is killed.
const CLIENT_SLACK: Duration = Duration::from_secs(30);

/// A one-shot iperf3 server (`-s -1`: it exits after one test); killed on `Drop` if it has
/// not exited by then.
pub struct Server {
    child: NsChild,
}

impl Server {
    /// Starts `iperf3 -s -1 -B bind` in `netns` and waits until it listens.
    pub fn start(netns: &Netns, bind: Ipv4Addr) -> Result<Server> {
        let bind = bind.to_string();
        let port = PORT.to_string();
        let mut child = netns.spawn(&["iperf3", "-s", "-1", "-B", &bind, "-p", &port])?;
        let filter = format!("sport = :{PORT}");
        let what = format!("iperf3 to listen on {bind}:{PORT} in {}", netns.name());
        wait_until(LISTEN_TIMEOUT, &what, || {
            !child.is_running()
                || netns
                    .exec(&["ss", "-H", "-l", "-t", "-n", &filter])
                    .map(|out| out.status.success() && !out.stdout.is_empty())
                    .unwrap_or(false)
        })?;
        if let Some(status) = child.try_wait()? {
            bail!(
                "iperf3 server exited ({status}) before listening: {}",
                child.stderr().trim()
            );
        }
        Ok(Server { child })
    }

    /// Waits (briefly) for the server to finish after its one test; it is killed otherwise.
    pub fn finish(mut self) {
        let _ = self.child.wait_timeout(Duration::from_secs(5));
    }
}

/// What one iperf3 test sends from the client to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// `streams` parallel TCP streams (`-P streams`).
    Tcp {
        /// Parallel streams.
        streams: u32,
    },
    /// UDP datagrams of `payload` bytes as fast as the sender can (`-u -l payload -b 0`).
    Udp {
        /// UDP payload bytes per datagram.
        payload: u32,
    },
}

impl Test {
    /// The iperf3 client arguments that select this test.
    fn args(self) -> Vec<String> {
        match self {
            Test::Tcp { streams } => vec!["-P".into(), streams.to_string()],
            Test::Udp { payload } => vec![
                "-u".into(),
                "-l".into(),
                payload.to_string(),
                "-b".into(),
                "0".into(),
            ],
        }
    }
}

/// What one TCP client run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TcpReport {
    /// Goodput the receiver saw, all streams together (`end.sum_received.bits_per_second`).
    pub bits_per_second: f64,
    /// TCP retransmissions of the sender (`end.sum_sent.retransmits`).
    pub retransmits: Option<u64>,
}

/// What one UDP client run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UdpReport {
    /// Datagrams the sender sent per second.
    pub sent_per_second: f64,
    /// Datagrams the receiver got per second (sent - lost, over the receiver's seconds).
    pub delivered_per_second: f64,
}

/// Runs `iperf3 -c dst -B src -t seconds -J <test>` in `netns`, killed if it runs
/// `seconds` + 30 s, and returns its JSON report.
pub fn run_client(
    netns: &Netns,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    seconds: u32,
    test: Test,
) -> Result<String> {
    let (src, dst) = (src.to_string(), dst.to_string());
    let (port, time) = (PORT.to_string(), seconds.to_string());
    let connect_timeout = CONNECT_TIMEOUT_MS.to_string();
    let test_args = test.args();
    let mut argv = vec![
        "iperf3",
        "-c",
        &dst,
        "-B",
        &src,
        "-p",
        &port,
        "-t",
        &time,
        "-J",
        "--connect-timeout",
        &connect_timeout,
    ];
    argv.extend(test_args.iter().map(String::as_str));
    let timeout = Duration::from_secs(u64::from(seconds)) + CLIENT_SLACK;
    let output = netns.exec_timeout(&argv, timeout)?;
    let json = String::from_utf8_lossy(&output.stdout).into_owned();
    if let Some(error) = error_message(&json) {
        bail!("iperf3 {src} -> {dst} failed: {error}");
    }
    if !output.status.success() {
        bail!(
            "iperf3 {src} -> {dst} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(json)
}

/// The numbers of a TCP client's JSON report.
pub fn parse_tcp(json: &str) -> Result<TcpReport> {
    let Some(bits_per_second) = flat_number(json, "sum_received", "bits_per_second") else {
        bail!("no end.sum_received.bits_per_second in: {}", json.trim());
    };
    let retransmits = flat_number(json, "sum_sent", "retransmits").map(|r| r as u64);
    Ok(TcpReport {
        bits_per_second,
        retransmits,
    })
}

/// The numbers of a UDP client's JSON report: `end.sum_sent` for the sender and
/// `end.sum_received` for the receiver (iperf3 before 3.11 has only `end.sum`, whose packet
/// and loss counts are the same).
pub fn parse_udp(json: &str) -> Result<UdpReport> {
    let received = if json.contains("\"sum_received\"") {
        "sum_received"
    } else {
        "sum"
    };
    let sent = if json.contains("\"sum_sent\"") {
        "sum_sent"
    } else {
        "sum"
    };
    let field = |object: &str, key: &str| {
        flat_number(json, object, key)
            .with_context(|| format!("no end.{object}.{key} in the UDP report"))
    };
    let packets = field(received, "packets")?;
    let lost = field(received, "lost_packets")?;
    let receiver_seconds = field(received, "seconds")?;
    let sent_packets = field(sent, "packets")?;
    let sender_seconds = field(sent, "seconds")?;
    if receiver_seconds <= 0.0 || sender_seconds <= 0.0 {
        bail!("the UDP report has no duration");
    }
    Ok(UdpReport {
        sent_per_second: sent_packets / sender_seconds,
        delivered_per_second: (packets - lost).max(0.0) / receiver_seconds,
    })
}

/// The number `key` inside the first flat object `"object": { ... }` of `json`.
pub fn flat_number(json: &str, object: &str, key: &str) -> Option<f64> {
    let start = json.find(&format!("\"{object}\""))?;
    let body = &json[start..];
    let body = &body[..body.find('}')?];
    let at = body.find(&format!("\"{key}\""))? + key.len() + 2;
    let value = body[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = value
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
        .unwrap_or(value.len());
    value[..end].parse().ok()
}

/// iperf3's `"error": "..."` message, if the report has one.
pub fn error_message(json: &str) -> Option<&str> {
    let at = json.find("\"error\"")? + "\"error\"".len();
    let value = json[at..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    Some(&value[..value.find('"')?])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `end` section of a real iperf3 3.12 report (one stream over loopback).
    const REPORT: &str = r#"{
	"end":	{
		"streams":	[{
				"sender":	{
					"socket":	5,
					"bits_per_second":	17085125601.015606,
					"retransmits":	10,
					"sender":	true
				},
				"receiver":	{
					"socket":	5,
					"bits_per_second":	17084408335.599022,
					"sender":	true
				}
			}],
		"sum_sent":	{
			"start":	0,
			"end":	1.00039,
			"seconds":	1.00039,
			"bytes":	2136473600,
			"bits_per_second":	17085125601.015606,
			"retransmits":	10,
			"sender":	true
		},
		"sum_received":	{
			"start":	0,
			"end":	1.000432,
			"seconds":	1.000432,
			"bytes":	2136473600,
			"bits_per_second":	1.7084408335599022e10,
			"sender":	true
		},
		"cpu_utilization_percent":	{
			"host_total":	35.1361467203144,
			"remote_total":	52.061324465315074
		},
		"sender_tcp_congestion":	"bbr"
	}
}"#;

    #[test]
    fn reads_goodput_and_retransmits_from_the_sums() {
        let report = parse_tcp(REPORT).unwrap();
        assert_eq!(report.bits_per_second, 17084408335.599022);
        assert_eq!(report.retransmits, Some(10));
        assert_eq!(
            flat_number(REPORT, "cpu_utilization_percent", "remote_total"),
            Some(52.061324465315074)
        );
        assert_eq!(error_message(REPORT), None);
    }

    #[test]
    fn a_key_outside_the_object_is_not_found() {
        // sum_received has no retransmits; the sender's must not be picked up.
        assert_eq!(flat_number(REPORT, "sum_received", "retransmits"), None);
        assert_eq!(flat_number(REPORT, "no_such_object", "bytes"), None);
        assert!(parse_tcp("{}").is_err());
        assert!(parse_udp("{}").is_err());
    }

    /// The `end` section of a real iperf3 3.12 UDP report (`-u -l 64 -b 0 -t 1`, veth).
    const UDP_REPORT: &str = r#"{
	"end":	{
		"streams":	[{
				"udp":	{
					"socket":	5,
					"seconds":	1.000018,
					"lost_packets":	96893,
					"packets":	209210,
					"sender":	true
				}
			}],
		"sum":	{
			"start":	0,
			"end":	1.000164,
			"seconds":	1.000164,
			"bytes":	13389440,
			"lost_packets":	96893,
			"packets":	209210,
			"sender":	true
		},
		"sum_sent":	{
			"start":	0,
			"end":	1.000018,
			"seconds":	1.000018,
			"bytes":	13389440,
			"lost_packets":	0,
			"packets":	209210,
			"sender":	true
		},
		"sum_received":	{
			"start":	0,
			"end":	1.000164,
			"seconds":	1.000164,
			"bytes":	7188288,
			"lost_packets":	96893,
			"packets":	209210,
			"sender":	false
		}
	}
}"#;

    #[test]
    fn udp_delivered_is_sent_minus_lost_over_the_receivers_time() {
        let report = parse_udp(UDP_REPORT).unwrap();
        assert!(
            (report.sent_per_second - 209_206.2).abs() < 1.0,
            "{report:?}"
        );
        // 209,210 - 96,893 = 112,317 datagrams = 7,188,288 bytes / 64.
        assert!(
            (report.delivered_per_second - 112_298.6).abs() < 1.0,
            "{report:?}"
        );
        // An old report with only `sum` gives the same delivered rate.
        let old = UDP_REPORT
            .replace("\"sum_sent\"", "\"x_sent\"")
            .replace("\"sum_received\"", "\"x_received\"");
        let report = parse_udp(&old).unwrap();
        assert!(
            (report.delivered_per_second - 112_298.6).abs() < 1.0,
            "{report:?}"
        );
    }

    #[test]
    fn test_arguments() {
        assert_eq!(Test::Tcp { streams: 4 }.args(), ["-P", "4"]);
        assert_eq!(
            Test::Udp { payload: 64 }.args(),
            ["-u", "-l", "64", "-b", "0"]
        );
    }

    #[test]
    fn reads_the_error_of_a_failed_run() {
        let json = "{\n\t\"start\":\t{},\n\t\"end\":\t{},\n\t\"error\":\t\"unable to connect to server: Connection refused\"\n}";
        assert_eq!(
            error_message(json),
            Some("unable to connect to server: Connection refused")
        );
    }
}
