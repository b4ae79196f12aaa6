//! Results: per-run samples, medians and ratios, and the markdown / JSON reports.

use std::fmt::Write as _;
use std::fs;
use std::process::Command;
use std::time::Duration;

use weft_testbed::run_command;

use crate::setups::Setup;

/// What one run of one setup measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Receiver goodput, Gbit/s.
    pub gbps: f64,
    /// TCP retransmissions of the sender.
    pub retransmits: Option<u64>,
    /// CPU time of the weft processes of both hosts per second of the run (1.0 = one core
    /// busy all the time).
    pub weft_cores: Option<f64>,
    /// Busy CPU time of the whole machine per second of the run (everything: iperf3, the
    /// kernel's softirqs, weft, and whatever else runs on the machine).
    pub machine_cores: Option<f64>,
    /// Data datagrams per `recvmmsg` on the receiving host (udp_rx_packets / recv_batches).
    pub rx_batch_fill: Option<f64>,
    /// Datagrams per `sendmmsg` on the sending host (tx_packets / send_batches).
    pub tx_batch_fill: Option<f64>,
}

impl Sample {
    /// Goodput per core of weft CPU time: how efficiently weft turns CPU into throughput.
    /// Unlike the goodput itself it hardly moves when other work on a shared machine takes
    /// CPU away from weft (weft is CPU-bound here).
    pub fn gbps_per_weft_core(&self) -> Option<f64> {
        self.weft_cores.filter(|&c| c > 0.0).map(|c| self.gbps / c)
    }
}

/// Every run of one setup.
#[derive(Debug, Clone, PartialEq)]
pub struct SetupResult {
    /// The setup.
    pub setup: Setup,
    /// One sample per successful run.
    pub samples: Vec<Sample>,
    /// The error of each failed run.
    pub failures: Vec<String>,
}

impl SetupResult {
    /// The median of `field` over the samples that have it.
    pub fn median(&self, field: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        median(self.samples.iter().filter_map(field).collect())
    }

    /// The median goodput, Gbit/s.
    pub fn median_gbps(&self) -> Option<f64> {
        self.median(|s| Some(s.gbps))
    }

    fn range_gbps(&self) -> Option<(f64, f64)> {
        let values = self.samples.iter().map(|s| s.gbps);
        let min = values.clone().reduce(f64::min)?;
        Some((min, values.reduce(f64::max)?))
    }
}

/// The median (mean of the two middle values for an even count); `None` when empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Where and how the measurements were made.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// The command line, as typed.
    pub command: String,
    /// When the run started (UTC).
    pub date: String,
    /// `uname -r`.
    pub kernel: String,
    /// Online CPUs and their model.
    pub cpus: String,
    /// /proc/loadavg's 1, 5 and 15 minute averages when the run started.
    pub load: String,
    /// The TCP congestion control of the client namespace.
    pub congestion_control: String,
    /// `iperf3 --version`, first line.
    pub iperf3: String,
    /// Which weft was measured: the binary, the library linked into the runner, the source
    /// tree's revision.
    pub weft: String,
    /// Runs per setup.
    pub runs: u32,
    /// Seconds per run.
    pub seconds: u32,
}

/// The first line of `program args`' stdout, or `unknown`.
pub fn first_line_of(program: &str, args: &[&str]) -> String {
    let mut command = Command::new(program);
    command.args(args);
    run_command(command, Duration::from_secs(10))
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `N x <model name>` from /proc/cpuinfo and the available parallelism.
pub fn cpu_description() -> String {
    let count = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown model".to_owned());
    format!("{count} x {model}")
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The kernel release (`uname -r`).
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn ratio(value: Option<f64>, reference: Option<f64>) -> String {
    match (value, reference) {
        (Some(v), Some(r)) if r > 0.0 => format!("{:.2}×", v / r),
        _ => "–".to_owned(),
    }
}

fn or_dash(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

/// The markdown report: header, table, setup descriptions, failures.
pub fn markdown(context: &Context, results: &[SetupResult]) -> String {
    let reference = |setup| {
        results
            .iter()
            .find(|r| r.setup == setup)
            .and_then(SetupResult::median_gbps)
    };
    let (kernel, direct) = (reference(Setup::KernelVxlan), reference(Setup::Direct));
    let mut out = String::new();
    let _ = writeln!(out, "## weft end-to-end TCP throughput\n");
    let _ = writeln!(out, "- command: `{}`", context.command);
    let _ = writeln!(out, "- date: {}", context.date);
    let _ = writeln!(
        out,
        "- machine: {}, kernel {}, load average at start {}",
        context.cpus, context.kernel, context.load
    );
    let _ = writeln!(out, "- weft: {}", context.weft);
    let _ = writeln!(
        out,
        "- method: two hosts in network namespaces joined by one veth (MTU 1500); {}, one TCP \
         stream from host 1 to host 2 (congestion control {}), {} s per run, {} run(s) per \
         setup, setups interleaved run by run; medians of the runs\n",
        context.iperf3, context.congestion_control, context.seconds, context.runs
    );
    let _ = writeln!(
        out,
        "| setup | Gbit/s (median) | min–max | vs kernel-vxlan | vs direct | weft CPU (cores) | Gbit/s per weft core | machine busy (cores) | pkts per recvmmsg / sendmmsg | TCP retransmits |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for result in results {
        let gbps = result.median_gbps();
        let range = result
            .range_gbps()
            .map_or_else(|| "–".to_owned(), |(lo, hi)| format!("{lo:.2}–{hi:.2}"));
        let fill = match (
            result.median(|s| s.rx_batch_fill),
            result.median(|s| s.tx_batch_fill),
        ) {
            (None, None) => "–".to_owned(),
            (rx, tx) => format!("{} / {}", or_dash(rx, 1), or_dash(tx, 1)),
        };
        let retransmits = result.median(|s| s.retransmits.map(|r| r as f64));
        let runs = if result.failures.is_empty() {
            String::new()
        } else {
            format!(
                " ({} of {} runs failed)",
                result.failures.len(),
                result.failures.len() + result.samples.len()
            )
        };
        let _ = writeln!(
            out,
            "| {}{runs} | {} | {range} | {} | {} | {} | {} | {} | {fill} | {} |",
            result.setup,
            or_dash(gbps, 2),
            ratio(gbps, kernel),
            ratio(gbps, direct),
            or_dash(result.median(|s| s.weft_cores), 2),
            or_dash(result.median(Sample::gbps_per_weft_core), 2),
            or_dash(result.median(|s| s.machine_cores), 2),
            or_dash(retransmits, 0),
        );
    }
    let _ = writeln!(out);
    for result in results {
        let _ = writeln!(out, "- `{}`: {}", result.setup, result.setup.description());
    }
    let _ = writeln!(
        out,
        "\nColumns: goodput is iperf3's receiver figure; ratios divide medians measured in \
         this same run. weft CPU is the user + system time of both hosts' weft processes \
         (/proc/<pid>/stat) per second of the run; Gbit/s per weft core is the median of \
         the per-run quotients. Machine busy is every CPU's non-idle time (/proc/stat): \
         iperf3, the kernel's softirqs, weft, and anything else running on the machine. \
         Packets per recvmmsg are host 2's (udp_rx_packets / recv_batches), per sendmmsg \
         host 1's (tx_packets / send_batches). Retransmits are the sender's."
    );
    let failures: Vec<_> = results
        .iter()
        .flat_map(|r| r.failures.iter().map(move |f| (r.setup, f)))
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nFailed runs:\n");
        for (setup, failure) in failures {
            let _ = writeln!(out, "- `{setup}`: {}", failure.replace('\n', " "));
        }
    }
    out
}

/// `value` as a JSON string literal.
fn json_string(value: &str) -> String {
    let mut quoted = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(quoted, "\\u{:04x}", c as u32);
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn json_number(value: Option<f64>) -> String {
    value
        .filter(|v| v.is_finite())
        .map_or_else(|| "null".to_owned(), |v| format!("{v}"))
}

/// The same results as JSON (every sample, plus the medians).
pub fn json(context: &Context, results: &[SetupResult]) -> String {
    let mut out = String::from("{\n");
    for (key, value) in [
        ("command", &context.command),
        ("date", &context.date),
        ("kernel", &context.kernel),
        ("cpus", &context.cpus),
        ("load", &context.load),
        ("congestion_control", &context.congestion_control),
        ("iperf3", &context.iperf3),
        ("weft", &context.weft),
    ] {
        let _ = writeln!(out, "  {}: {},", json_string(key), json_string(value));
    }
    let _ = writeln!(
        out,
        "  \"runs\": {},\n  \"seconds\": {},\n  \"setups\": [",
        context.runs, context.seconds
    );
    for (i, result) in results.iter().enumerate() {
        let samples: Vec<String> = result
            .samples
            .iter()
            .map(|s| {
                format!(
                    "{{\"gbps\": {}, \"retransmits\": {}, \"weft_cores\": {}, \"machine_cores\": {}, \"rx_batch_fill\": {}, \"tx_batch_fill\": {}}}",
                    json_number(Some(s.gbps)),
                    s.retransmits.map_or_else(|| "null".to_owned(), |r| r.to_string()),
                    json_number(s.weft_cores),
                    json_number(s.machine_cores),
                    json_number(s.rx_batch_fill),
                    json_number(s.tx_batch_fill),
                )
            })
            .collect();
        let failures: Vec<String> = result.failures.iter().map(|f| json_string(f)).collect();
        let _ = writeln!(
            out,
            "    {{\"setup\": {}, \"median_gbps\": {}, \"samples\": [{}], \"failures\": [{}]}}{}",
            json_string(result.setup.name()),
            json_number(result.median_gbps()),
            samples.join(", "),
            failures.join(", "),
            if i + 1 < results.len() { "," } else { "" }
        );
    }
    out.push_str("  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(gbps: f64) -> Sample {
        Sample {
            gbps,
            retransmits: Some(3),
            weft_cores: None,
            machine_cores: Some(2.0),
            rx_batch_fill: None,
            tx_batch_fill: None,
        }
    }

    fn context() -> Context {
        Context {
            command: "weft-e2e-bench --runs 3".into(),
            date: "2025-01-01 00:00:00 UTC".into(),
            kernel: "6.1".into(),
            cpus: "2 x test".into(),
            load: "0.50 0.40 0.30".into(),
            congestion_control: "cubic".into(),
            iperf3: "iperf 3.12".into(),
            weft: "target/release/weft".into(),
            runs: 3,
            seconds: 5,
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn table_has_ratios_to_both_references() {
        let results = vec![
            SetupResult {
                setup: Setup::Direct,
                samples: vec![sample(40.0), sample(20.0), sample(30.0)],
                failures: vec![],
            },
            SetupResult {
                setup: Setup::KernelVxlan,
                samples: vec![sample(10.0)],
                failures: vec![],
            },
            SetupResult {
                setup: Setup::WeftUdp,
                samples: vec![Sample {
                    weft_cores: Some(1.5),
                    rx_batch_fill: Some(7.0),
                    tx_batch_fill: None,
                    ..sample(5.0)
                }],
                failures: vec!["boom\nline".into()],
            },
        ];
        let text = markdown(&context(), &results);
        assert!(
            text.contains(
                "| direct | 30.00 | 20.00–40.00 | 3.00× | 1.00× | – | – | 2.00 | – | 3 |"
            ),
            "{text}"
        );
        assert!(text.contains("| weft-udp (1 of 2 runs failed) | 5.00 | 5.00–5.00 | 0.50× | 0.17× | 1.50 | 3.33 | 2.00 | 7.0 / – | 3 |"), "{text}");
        assert!(text.contains("- `weft-udp`: boom line"), "{text}");
        let json = json(&context(), &results);
        assert!(json.contains("\"median_gbps\": 30,"), "{json}");
        assert!(json.contains("\"failures\": [\"boom\\nline\"]"), "{json}");
    }
}
