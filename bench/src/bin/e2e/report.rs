//! Results: medians over runs and ratios to the kernel vxlan, the markdown report, the JSON
//! dump, and the generated section of `bench/RESULTS.md`. The CPU profile (`--profile`)
//! adds a section and JSON keys only when it was asked for.

use std::fmt::Write as _;

use crate::facts::Facts;
use crate::measure::{RunSample, TcpSample, STREAMS, UDP_PAYLOAD};
use crate::profile::{self, Profile, APP_COMM, COPY_SYMBOLS, IDLE_COMM, WEFT_WORKER_COMM};
use crate::setups::Setup;

/// Every run of one setup.
#[derive(Debug, Clone, PartialEq)]
pub struct SetupResult {
    /// The setup.
    pub setup: Setup,
    /// One entry per run: its measurements, or why the setup did not come up.
    pub runs: Vec<Result<RunSample, String>>,
}

impl SetupResult {
    /// Whether some run carried traffic in some measurement.
    pub fn carried_traffic(&self) -> bool {
        self.runs
            .iter()
            .any(|run| run.as_ref().is_ok_and(RunSample::carried_traffic))
    }

    /// The median of `field` over the runs' samples that have it.
    fn median(&self, field: impl Fn(&RunSample) -> Option<f64>) -> Option<f64> {
        median(self.runs.iter().flatten().filter_map(field).collect())
    }

    /// The median of `field` of the `tcp` measurement chosen by `which`.
    fn tcp_median(
        &self,
        which: impl Fn(&RunSample) -> &Result<TcpSample, String>,
        field: impl Fn(&TcpSample) -> Option<f64>,
    ) -> Option<f64> {
        self.median(|run| which(run).as_ref().ok().and_then(&field))
    }

    /// The median CPU profile of the runs that have one (`--profile`).
    pub fn profile(&self) -> Option<Profile> {
        let profiles: Vec<&Profile> = self
            .runs
            .iter()
            .flatten()
            .filter_map(|run| run.profile.as_ref()?.as_ref().ok())
            .collect();
        Profile::median_of(&profiles)
    }

    /// The cell of `metric`: median over the runs, failures, and the last failure's reason.
    pub fn cell(&self, metric: Metric) -> Cell {
        let mut values = Vec::new();
        let mut failures = Vec::new();
        for run in &self.runs {
            match run.as_ref().map(|run| metric.value(run)) {
                Ok(Ok(value)) => values.push(value),
                Ok(Err(error)) | Err(error) => failures.push(error.as_str()),
            }
        }
        Cell {
            median: median(values),
            failed: failures.len(),
            runs: self.runs.len(),
            reason: failures.last().map(|reason| short_reason(reason)),
        }
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

/// A figure of the main table (a column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// One TCP stream, Gbit/s.
    Tcp1,
    /// [`STREAMS`] TCP streams together, Gbit/s.
    Tcp4,
    /// [`UDP_PAYLOAD`]-byte UDP datagrams delivered, thousands per second.
    Udp,
    /// Median round trip under no load, µs.
    RttP50,
    /// 99th percentile round trip under no load, µs.
    RttP99,
}

impl Metric {
    /// Every column, in report order.
    pub const ALL: [Metric; 5] = [
        Metric::Tcp1,
        Metric::Tcp4,
        Metric::Udp,
        Metric::RttP50,
        Metric::RttP99,
    ];

    /// The column header.
    pub fn header(self) -> String {
        match self {
            Metric::Tcp1 => "TCP 1 stream, Gbit/s".to_owned(),
            Metric::Tcp4 => format!("TCP {STREAMS} streams, Gbit/s"),
            Metric::Udp => format!("UDP {UDP_PAYLOAD} B delivered, kpkt/s"),
            Metric::RttP50 => "RTT p50, µs".to_owned(),
            Metric::RttP99 => "RTT p99, µs".to_owned(),
        }
    }

    /// The key in the JSON dump.
    pub fn key(self) -> &'static str {
        match self {
            Metric::Tcp1 => "tcp1_gbps",
            Metric::Tcp4 => "tcp4_gbps",
            Metric::Udp => "udp64_delivered_kpps",
            Metric::RttP50 => "rtt_p50_us",
            Metric::RttP99 => "rtt_p99_us",
        }
    }

    /// The figure of one run, or why its measurement failed.
    pub fn value(self, run: &RunSample) -> Result<f64, &String> {
        match self {
            Metric::Tcp1 => run.tcp1.as_ref().map(|s| s.gbps),
            Metric::Tcp4 => run.tcp4.as_ref().map(|s| s.gbps),
            Metric::Udp => run.udp.as_ref().map(|s| s.delivered_pps / 1e3),
            Metric::RttP50 => run.latency.as_ref().map(|l| l.p50_us),
            Metric::RttP99 => run.latency.as_ref().map(|l| l.p99_us),
        }
    }

    /// A figure with the precision that suits its size.
    pub fn format(self, value: f64) -> String {
        match self {
            Metric::Tcp1 | Metric::Tcp4 => format!("{value:.2}"),
            // ping reports whole microseconds.
            Metric::RttP50 | Metric::RttP99 => format!("{value:.0}"),
            Metric::Udp if value >= 100.0 => format!("{value:.0}"),
            Metric::Udp => format!("{value:.1}"),
        }
    }
}

/// One cell of the main table.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The median of the runs that measured the figure.
    pub median: Option<f64>,
    /// Runs whose measurement failed (or whose setup did not come up).
    pub failed: usize,
    /// Runs of the setup.
    pub runs: usize,
    /// The last failure, shortened.
    pub reason: Option<String>,
}

impl Cell {
    /// The cell's markdown: `median (ratio×)`, with a failure count when some runs failed,
    /// or `failed: <reason>` when every run failed (just `failed` if the cell to its left
    /// failed for the same reason, `left`).
    pub fn render(&self, metric: Metric, reference: Option<f64>, left: Option<&str>) -> String {
        let Some(value) = self.median else {
            return match &self.reason {
                Some(reason) if left == Some(reason.as_str()) => "failed".to_owned(),
                Some(reason) => format!("failed: {}", escape_cell(reason)),
                None => "–".to_owned(),
            };
        };
        let mut text = metric.format(value);
        if let Some(reference) = reference.filter(|&r| r > 0.0) {
            let _ = write!(text, " ({:.2}×)", value / reference);
        }
        if self.failed > 0 {
            let _ = write!(text, " [{} of {} runs failed]", self.failed, self.runs);
        }
        text
    }
}

/// The telling part of an error for a table cell: the line that names an unknown key or an
/// error if there is one, else the first line; at most [`REASON_CHARS`] characters.
pub fn short_reason(error: &str) -> String {
    let lines: Vec<&str> = error
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let telling = |needle: &str| {
        lines
            .iter()
            .find(|line| line.to_lowercase().contains(needle))
            .copied()
    };
    // A daemon's exit error names the daemon on its first line and quotes its log below.
    let later_error = || {
        lines
            .iter()
            .skip(1)
            .find(|line| line.to_lowercase().contains("error"))
            .copied()
    };
    let line = match telling("unknown") {
        // "weft: <path>: not valid weft configuration: line 17 column 1: unknown field ...":
        // the unknown thing is the news.
        Some(line) => {
            let at = line.find("unknown").or_else(|| line.find("Unknown"));
            &line[at.unwrap_or(0)..]
        }
        None => later_error()
            .or_else(|| lines.first().copied())
            .unwrap_or("unknown error"),
    };
    let mut reason: String = line.chars().take(REASON_CHARS).collect();
    if line.chars().count() > REASON_CHARS {
        reason.push('…');
    }
    reason
}

/// Longest reason shown in a cell.
const REASON_CHARS: usize = 100;

/// `text` made safe for a markdown table cell.
fn escape_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn or_dash(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

/// `a / b` of two optional figures, or `–` when both are missing.
fn pair(a: Option<f64>, b: Option<f64>, digits: usize) -> String {
    match (a, b) {
        (None, None) => "–".to_owned(),
        (a, b) => format!("{} / {}", or_dash(a, digits), or_dash(b, digits)),
    }
}

/// The veth offload line: one entry if both hosts agree, else one per host.
fn offload_summary(offloads: &[(String, String)]) -> String {
    match offloads {
        [(_, first), rest @ ..] if rest.iter().all(|(_, o)| o == first) => {
            format!("{first} (both hosts)")
        }
        _ => offloads
            .iter()
            .map(|(host, o)| format!("{host}: {o}"))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// The reproduce command line for `args`.
pub fn reproduce(args: &str) -> String {
    let args = if args.is_empty() {
        String::new()
    } else {
        format!(" {args}")
    };
    format!("cargo build --release -p weft -p weft-bench && target/release/weft-e2e-bench{args}")
}

/// The markdown report: the recorded facts, the main table, the CPU table, the setups and
/// the failures.
pub fn markdown(facts: &Facts, results: &[SetupResult]) -> String {
    let kernel = results.iter().find(|r| r.setup == Setup::KernelVxlan);
    let mut out = String::new();
    let _ = writeln!(out, "### weft end-to-end benchmark, {}\n", facts.date);
    let _ = writeln!(out, "- command: `{}`", facts.command);
    let _ = writeln!(
        out,
        "- reproduce (as root, in the repository, with `iperf3`, `iputils-ping` and `ethtool` \
         installed): `{}`",
        reproduce(&facts.args)
    );
    let _ = writeln!(out, "- date: {}", facts.date);
    let _ = writeln!(
        out,
        "- machine: {}; load average at start {}",
        facts.machine, facts.load
    );
    let _ = writeln!(out, "- kernel: {}", facts.kernel);
    let _ = writeln!(out, "- commit: {}", facts.commit);
    let _ = writeln!(out, "- weft: {}", facts.weft);
    let _ = writeln!(
        out,
        "- tools: {}; {}; TCP congestion control {}",
        facts.iperf3, facts.ping, facts.congestion_control
    );
    let _ = writeln!(
        out,
        "- veth offloads (underlay veth `u0`, `ethtool -k u0` and `/sys/class/net/u0/threaded` \
         inside the host namespaces, kernel defaults, untouched by every setup): {}",
        offload_summary(&facts.offloads)
    );
    if let Some(end) = &facts.offloads_changed {
        let _ = writeln!(
            out,
            "- **veth offloads changed during the run**; at the end: {}",
            offload_summary(end)
        );
    }
    let workers = facts.workers.map_or_else(
        || "the engine's default".to_owned(),
        |w| format!("`[engine] workers = {w}`"),
    );
    let _ = writeln!(
        out,
        "- method: two hosts in network namespaces joined by one veth (MTU 1500), host 1 -> \
         host 2; per run and setup: bring the setup up, {} pings 10 ms apart, one TCP stream, \
         {STREAMS} TCP streams and {UDP_PAYLOAD}-byte UDP datagrams at full speed (iperf3, \
         {} s each), take it down; {} run(s), setups interleaved run by run; weft workers: \
         {workers}\n",
        facts.pings, facts.seconds, facts.runs
    );

    let _ = writeln!(
        out,
        "Median over the runs (ratio to the kernel vxlan's median):\n"
    );
    let _ = write!(out, "| setup |");
    for metric in Metric::ALL {
        let _ = write!(out, " {} |", metric.header());
    }
    let _ = writeln!(out, "\n|---|{}", "--:|".repeat(Metric::ALL.len()));
    for result in results {
        let _ = write!(out, "| {} |", result.setup.label());
        let mut left: Option<String> = None;
        for metric in Metric::ALL {
            let reference = kernel.and_then(|k| k.cell(metric).median);
            let cell = result.cell(metric);
            let text = cell.render(metric, reference, left.as_deref());
            let _ = write!(out, " {text} |");
            left = cell.median.is_none().then_some(cell.reason).flatten();
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "\nCPU and batching (medians):\n");
    let _ = writeln!(
        out,
        "| setup | weft CPU, cores (1 / {STREAMS} streams) | Gbit/s per weft core (1 / \
         {STREAMS}) | machine busy, cores (1 / {STREAMS}) | pkts per recvmmsg / sendmmsg (1 \
         stream) | TCP retransmits (1 / {STREAMS}) | UDP {UDP_PAYLOAD} B sent, kpkt/s |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|");
    for result in results {
        let tcp1 = |field: fn(&TcpSample) -> Option<f64>| {
            result.tcp_median(|run: &RunSample| &run.tcp1, field)
        };
        let tcp4 = |field: fn(&TcpSample) -> Option<f64>| {
            result.tcp_median(|run: &RunSample| &run.tcp4, field)
        };
        let retransmits = |s: &TcpSample| s.retransmits.map(|r| r as f64);
        let sent = result.median(|run| run.udp.as_ref().ok().map(|u| u.sent_pps / 1e3));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            result.setup.label(),
            pair(tcp1(|s| s.weft_cores), tcp4(|s| s.weft_cores), 2),
            pair(
                tcp1(TcpSample::gbps_per_weft_core),
                tcp4(TcpSample::gbps_per_weft_core),
                2
            ),
            pair(tcp1(|s| s.machine_cores), tcp4(|s| s.machine_cores), 2),
            pair(tcp1(|s| s.rx_batch_fill), tcp1(|s| s.tx_batch_fill), 1),
            pair(tcp1(retransmits), tcp4(retransmits), 0),
            sent.map_or_else(|| "–".to_owned(), |s| Metric::Udp.format(s)),
        );
    }
    if let Some(status) = &facts.profile {
        profile_section(&mut out, status, facts.seconds, results);
    }
    let _ = writeln!(out);
    for result in results {
        let _ = writeln!(
            out,
            "- {} (`--only {}`): {}",
            result.setup.label(),
            result.setup.name(),
            result.setup.description()
        );
    }
    let _ = writeln!(
        out,
        "\nColumns: TCP figures are iperf3's receiver goodput (all streams together); UDP is \
         the datagrams the receiver got per second (sent - lost), not what the sender sent; \
         RTT is ping's per-reply time, percentiles by nearest rank over the replies. Ratios \
         divide medians of this same run set; for RTT a ratio above 1 is slower than the \
         kernel. weft CPU is the user + system time of both hosts' weft processes \
         (/proc/<pid>/stat) per second of the measurement; Gbit/s per weft core is the median \
         of the per-run quotients. Machine busy is every CPU's non-idle time (/proc/stat). \
         Packets per recvmmsg are host 2's (udp_rx_packets / recv_batches), per sendmmsg host \
         1's (tx_packets / send_batches), during the 1-stream measurement. These are \
         benchmark figures, never pass/fail criteria."
    );
    let failures: Vec<String> = results
        .iter()
        .flat_map(|result| {
            result.runs.iter().enumerate().flat_map(move |(i, run)| {
                let errors: Vec<String> = match run {
                    Err(error) => vec![format!("did not come up: {error}")],
                    Ok(run) => [
                        ("latency", run.latency.as_ref().err()),
                        ("1 stream", run.tcp1.as_ref().err()),
                        ("4 streams", run.tcp4.as_ref().err()),
                        ("UDP", run.udp.as_ref().err()),
                        (
                            "profile",
                            run.profile.as_ref().and_then(|p| p.as_ref().err()),
                        ),
                    ]
                    .into_iter()
                    .filter_map(|(what, error)| error.map(|e| format!("{what}: {e}")))
                    .chain(run.problems.iter().cloned())
                    .collect(),
                };
                errors.into_iter().map(move |error| {
                    let error: String = error.replace('\n', " ").trim().chars().take(600).collect();
                    format!("- {}, run {}: {error}", result.setup.label(), i + 1)
                })
            })
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nFailures:\n\n{}", failures.join("\n"));
    }
    out
}

/// A share of all samples as a table figure.
fn percent(share: f64) -> String {
    format!("{share:.1}%")
}

/// The `--profile` section: the breakdown of every setup's CPU time and weft's hottest
/// symbols (medians of the runs), or why there is none (`status`: the perf version, or why
/// perf cannot record).
fn profile_section(
    out: &mut String,
    status: &Result<String, String>,
    seconds: u32,
    results: &[SetupResult],
) {
    let perf = match status {
        Ok(perf) => perf,
        Err(reason) => {
            let _ = writeln!(
                out,
                "\nCPU profile (`--profile`): not taken, perf cannot record: {reason}"
            );
            return;
        }
    };
    let (delay, length) = profile::window(seconds);
    let _ = writeln!(
        out,
        "\nCPU profile of the 1-stream measurement (`--profile`, {perf}: `perf record -a -g` \
         over {:.1} s of its {seconds} s from {:.2} s in, `perf report --no-children --sort \
         comm,dso,symbol`), in % of all samples, i.e. of the whole machine's CPU time; medians \
         of the runs:\n",
        length.as_secs_f64(),
        delay.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| setup | idle | {APP_COMM} (of it kernel copies) | weft workers in the kernel \
         (copies + rest) | weft workers in user space | everything else |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|");
    let medians: Vec<(&SetupResult, Option<Profile>)> =
        results.iter().map(|r| (r, r.profile())).collect();
    for (result, median) in &medians {
        let label = result.setup.label();
        let Some(p) = median else {
            let _ = writeln!(out, "| {label} | – | – | – | – | – |");
            continue;
        };
        let (kernel, user) = if result.setup.is_weft() {
            (
                format!(
                    "{} ({} + {})",
                    percent(p.weft_kernel),
                    percent(p.weft_kernel_copies),
                    percent(p.weft_kernel_rest())
                ),
                percent(p.weft_user),
            )
        } else {
            ("–".to_owned(), "–".to_owned())
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} ({}) | {kernel} | {user} | {} |",
            percent(p.idle),
            percent(p.app),
            percent(p.app_copies),
            percent(p.other)
        );
    }
    let hot: Vec<String> = medians
        .iter()
        .filter_map(|(result, median)| {
            let median = median.as_ref().filter(|p| !p.hot.is_empty())?;
            let symbols: Vec<String> = median
                .hot
                .iter()
                .map(|h| format!("`{}` {}", h.name(), percent(h.share)))
                .collect();
            Some(format!(
                "- {}: {}",
                result.setup.label(),
                symbols.join(", ")
            ))
        })
        .collect();
    if !hot.is_empty() {
        let _ = writeln!(
            out,
            "\nweft's hottest user-space symbols in the 1-stream measurement (% of all \
             samples, medians):\n\n{}",
            hot.join("\n")
        );
    }
    let copies = COPY_SYMBOLS.map(|s| format!("`{s}`")).join(", ");
    let _ = writeln!(
        out,
        "\nProfile columns: idle is the `{IDLE_COMM}` task (softirq work that ran on an \
         otherwise idle CPU counts there too); {APP_COMM} is the application's threads, user \
         space and kernel (for the veth and the kernel vxlan that includes the whole path \
         through the kernel); copies are the kernel's {copies}; weft workers are the \
         `{WEFT_WORKER_COMM}-N` threads, in the kernel (`[kernel.kallsyms]`) or in user space \
         (weft and its libraries); everything else includes perf itself and weft's other \
         threads. The medians of the columns need not add up to 100%. perf costs CPU time too, \
         so the 1-stream figures of a `--profile` run are a little lower than without it."
    );
}

/// The marker line that starts the generated section of the results file.
pub const BEGIN_MARKER: &str = "<!-- weft-e2e-bench --write-results: begin (generated; the \
                                text up to the end marker is replaced on every write) -->";
/// The marker line that ends the generated section of the results file.
pub const END_MARKER: &str = "<!-- weft-e2e-bench --write-results: end -->";

/// The results file with `section` as its generated part: between the markers if the file
/// has them, else appended (or a new file when there is none).
pub fn update_results(existing: Option<&str>, section: &str) -> String {
    let block = format!("{BEGIN_MARKER}\n\n{}\n{END_MARKER}", section.trim_end());
    match existing {
        Some(text) => match (text.find(BEGIN_MARKER), text.find(END_MARKER)) {
            (Some(begin), Some(end)) if begin < end => format!(
                "{}{block}{}",
                &text[..begin],
                &text[end + END_MARKER.len()..]
            ),
            _ => format!("{}\n\n{block}\n", text.trim_end()),
        },
        None => format!("# weft benchmark results\n\n{block}\n"),
    }
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

/// A measurement's figures as a JSON object, or `{"error": ...}`.
fn json_outcome<T>(outcome: &Result<T, String>, fields: impl Fn(&T) -> String) -> String {
    match outcome {
        Ok(value) => format!("{{{}}}", fields(value)),
        Err(error) => format!("{{\"error\": {}}}", json_string(error)),
    }
}

fn json_profile(profile: &Profile) -> String {
    let hot: Vec<String> = profile
        .hot
        .iter()
        .map(|h| {
            format!(
                "{{\"symbol\": {}, \"dso\": {}, \"pct\": {}}}",
                json_string(&h.symbol),
                json_string(&h.dso),
                json_number(Some(h.share))
            )
        })
        .collect();
    format!(
        "\"idle_pct\": {}, \"app_pct\": {}, \"app_copies_pct\": {}, \"weft_kernel_pct\": {}, \
         \"weft_kernel_copies_pct\": {}, \"weft_user_pct\": {}, \"other_pct\": {}, \"hot\": [{}]",
        json_number(Some(profile.idle)),
        json_number(Some(profile.app)),
        json_number(Some(profile.app_copies)),
        json_number(Some(profile.weft_kernel)),
        json_number(Some(profile.weft_kernel_copies)),
        json_number(Some(profile.weft_user)),
        json_number(Some(profile.other)),
        hot.join(", ")
    )
}

fn json_tcp(sample: &TcpSample) -> String {
    format!(
        "\"gbps\": {}, \"retransmits\": {}, \"weft_cores\": {}, \"machine_cores\": {}, \
         \"rx_batch_fill\": {}, \"tx_batch_fill\": {}",
        json_number(Some(sample.gbps)),
        json_number(sample.retransmits.map(|r| r as f64)),
        json_number(sample.weft_cores),
        json_number(sample.machine_cores),
        json_number(sample.rx_batch_fill),
        json_number(sample.tx_batch_fill),
    )
}

/// The same results as JSON: the facts, every run's figures, and the medians.
pub fn json(facts: &Facts, results: &[SetupResult]) -> String {
    let mut out = String::from("{\n");
    let offloads = offload_summary(&facts.offloads);
    for (key, value) in [
        ("command", &facts.command),
        ("date", &facts.date),
        ("machine", &facts.machine),
        ("kernel", &facts.kernel),
        ("load", &facts.load),
        ("commit", &facts.commit),
        ("weft", &facts.weft),
        ("iperf3", &facts.iperf3),
        ("ping", &facts.ping),
        ("congestion_control", &facts.congestion_control),
        ("veth_offloads", &offloads),
    ] {
        let _ = writeln!(out, "  {}: {},", json_string(key), json_string(value));
    }
    match &facts.profile {
        None => {}
        Some(Ok(perf)) => {
            let _ = writeln!(out, "  \"profile\": {{\"perf\": {}}},", json_string(perf));
        }
        Some(Err(reason)) => {
            let _ = writeln!(
                out,
                "  \"profile\": {{\"error\": {}}},",
                json_string(reason)
            );
        }
    }
    let _ = writeln!(
        out,
        "  \"runs\": {},\n  \"seconds\": {},\n  \"pings\": {},\n  \"setups\": [",
        facts.runs, facts.seconds, facts.pings
    );
    for (i, result) in results.iter().enumerate() {
        let mut medians: Vec<String> = Metric::ALL
            .iter()
            .map(|&m| format!("\"{}\": {}", m.key(), json_number(result.cell(m).median)))
            .collect();
        if matches!(facts.profile, Some(Ok(_))) {
            medians.push(format!(
                "\"profile\": {}",
                result.profile().map_or_else(
                    || "null".to_owned(),
                    |p| format!("{{{}}}", json_profile(&p))
                )
            ));
        }
        let runs: Vec<String> = result
            .runs
            .iter()
            .map(|run| match run {
                Err(error) => format!("{{\"error\": {}}}", json_string(error)),
                Ok(run) => format!(
                    "{{\"latency\": {}, \"tcp1\": {}, \"tcp4\": {}, \"udp64\": {}, \"problems\": [{}]{}}}",
                    json_outcome(&run.latency, |l| format!(
                        "\"p50_us\": {}, \"p99_us\": {}, \"sent\": {}, \"received\": {}",
                        json_number(Some(l.p50_us)),
                        json_number(Some(l.p99_us)),
                        l.sent,
                        l.received
                    )),
                    json_outcome(&run.tcp1, json_tcp),
                    json_outcome(&run.tcp4, json_tcp),
                    json_outcome(&run.udp, |u| format!(
                        "\"delivered_pps\": {}, \"sent_pps\": {}",
                        json_number(Some(u.delivered_pps)),
                        json_number(Some(u.sent_pps))
                    )),
                    run.problems
                        .iter()
                        .map(|p| json_string(p))
                        .collect::<Vec<_>>()
                        .join(", "),
                    run.profile.as_ref().map_or_else(String::new, |profile| format!(
                        ", \"profile\": {}",
                        json_outcome(profile, json_profile)
                    )),
                ),
            })
            .collect();
        let _ = writeln!(
            out,
            "    {{\"setup\": {}, \"medians\": {{{}}}, \"runs\": [{}]}}{}",
            json_string(result.setup.name()),
            medians.join(", "),
            runs.join(", "),
            if i + 1 < results.len() { "," } else { "" }
        );
    }
    out.push_str("  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencyReport;
    use crate::measure::UdpSample;
    use crate::profile::HotSymbol;

    fn tcp(gbps: f64) -> TcpSample {
        TcpSample {
            gbps,
            retransmits: Some(3),
            weft_cores: None,
            machine_cores: Some(2.0),
            rx_batch_fill: None,
            tx_batch_fill: None,
        }
    }

    fn run(gbps: f64, p50: f64) -> RunSample {
        RunSample {
            latency: Ok(LatencyReport {
                p50_us: p50,
                p99_us: 2.0 * p50,
                sent: 200,
                received: 200,
            }),
            tcp1: Ok(tcp(gbps)),
            tcp4: Ok(tcp(2.0 * gbps)),
            udp: Ok(UdpSample {
                delivered_pps: 100_000.0 * gbps,
                sent_pps: 300_000.0,
            }),
            problems: vec![],
            profile: None,
        }
    }

    fn facts() -> Facts {
        Facts {
            command: "weft-e2e-bench --runs 3".into(),
            args: "--runs 3".into(),
            date: "2025-01-01 00:00:00 UTC".into(),
            machine: "2 CPUs (test), 1.0 GiB memory".into(),
            kernel: "6.1".into(),
            load: "0.50 0.40 0.30".into(),
            commit: "abc1234-dirty".into(),
            weft: "`target/release/weft`".into(),
            iperf3: "iperf 3.12".into(),
            ping: "ping from iputils 20221126".into(),
            congestion_control: "cubic".into(),
            offloads: vec![
                ("host 1".into(), "tx-checksumming: on, threaded: 0".into()),
                ("host 2".into(), "tx-checksumming: on, threaded: 0".into()),
            ],
            offloads_changed: None,
            runs: 3,
            seconds: 5,
            pings: 300,
            workers: None,
            profile: None,
        }
    }

    fn results() -> Vec<SetupResult> {
        vec![
            SetupResult {
                setup: Setup::Direct,
                runs: vec![
                    Ok(run(40.0, 30.0)),
                    Ok(run(20.0, 50.0)),
                    Ok(run(30.0, 40.0)),
                ],
            },
            SetupResult {
                setup: Setup::KernelVxlan,
                runs: vec![Ok(run(10.0, 60.0))],
            },
            SetupResult {
                setup: Setup::WeftUdp,
                runs: vec![
                    Ok(RunSample {
                        tcp4: Err("iperf3 died".into()),
                        ..run(5.0, 120.0)
                    }),
                    Err("boom\nline".into()),
                ],
            },
            SetupResult {
                setup: Setup::WeftUdpOffBatch1,
                runs: vec![Err(
                    "weft daemon in namespace x exited (exit status: 1) before \
                                it was ready; its log:\nError: reading /tmp/weft.toml\n\
                                unknown field `offload`, expected `batch` | x"
                        .into(),
                )],
            },
        ]
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn cells_have_medians_ratios_and_failures() {
        let results = results();
        let text = markdown(&facts(), &results);
        assert!(
            text.contains(
                "| direct veth | 30.00 (3.00×) | 60.00 (3.00×) | 3000 (3.00×) | 40 (0.67×) | \
                 80 (0.67×) |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| kernel vxlan | 10.00 (1.00×) | 20.00 (1.00×) | 1000 (1.00×) | 60 (1.00×) |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| weft udp | 5.00 (0.50×) [1 of 2 runs failed] | failed: boom | 500 (0.50×) \
                 [1 of 2 runs failed] | 120 (2.00×) [1 of 2 runs failed] |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| weft udp, offload off, batch 1 | failed: unknown field `offload`, expected \
                 `batch` \\| x | failed | failed | failed | failed |"
            ),
            "{text}"
        );
        assert!(
            text.contains("- weft udp, run 1: 4 streams: iperf3 died"),
            "{text}"
        );
        assert!(
            text.contains("- weft udp, run 2: did not come up: boom line"),
            "{text}"
        );
        assert!(
            text.contains("tx-checksumming: on, threaded: 0 (both hosts)"),
            "{text}"
        );
        assert!(
            text.contains("| direct veth | – | – | 2.00 / 2.00 | – | 3 / 3 | 300 |"),
            "{text}"
        );
        assert!(results[2].carried_traffic());
        assert!(!results[3].carried_traffic());
        let json = json(&facts(), &results);
        assert!(json.contains("\"tcp1_gbps\": 30,"), "{json}");
        assert!(json.contains("{\"error\": \"boom\\nline\"}"), "{json}");
    }

    #[test]
    fn the_profile_section_is_there_only_with_profile() {
        let mut results = results();
        assert!(!markdown(&facts(), &results).contains("CPU profile"));
        assert!(!json(&facts(), &results).contains("profile"));
        let symbol = |symbol: &str, dso: &str, share| HotSymbol {
            symbol: symbol.into(),
            dso: dso.into(),
            share,
        };
        let profile = |idle: f64| Profile {
            idle,
            app: 18.0,
            app_copies: 9.0,
            weft_kernel: 50.0,
            weft_kernel_copies: 20.0,
            weft_user: 20.0,
            other: 2.0,
            hot: vec![
                symbol("weft::sys::csum::x86::sum_avx512", "weft", 7.0),
                symbol("__GI___writev", "libc.so.6", 0.5),
            ],
        };
        results[2].runs[0] = Ok(RunSample {
            profile: Some(Ok(profile(10.0))),
            ..run(5.0, 120.0)
        });
        results[2].runs.push(Ok(RunSample {
            profile: Some(Ok(profile(20.0))),
            ..run(5.0, 120.0)
        }));
        results[1].runs[0] = Ok(RunSample {
            profile: Some(Err("perf died".into())),
            ..run(10.0, 60.0)
        });
        let facts = Facts {
            profile: Some(Ok("perf version 6.1".into())),
            ..facts()
        };
        let text = markdown(&facts, &results);
        assert!(
            text.contains("`perf record -a -g` over 3.5 s of its 5 s from 1.00 s in"),
            "{text}"
        );
        assert!(
            text.contains(
                "| weft udp | 15.0% | 18.0% (9.0%) | 50.0% (20.0% + 30.0%) | 20.0% | 2.0% |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| kernel vxlan | – | – | – | – | – |"),
            "{text}"
        );
        assert!(
            text.contains(
                "- weft udp: `weft::sys::csum::x86::sum_avx512` 7.0%, `__GI___writev \
                 (libc.so.6)` 0.5%"
            ),
            "{text}"
        );
        assert!(
            text.contains("- kernel vxlan, run 1: profile: perf died"),
            "{text}"
        );
        let json = json(&facts, &results);
        assert!(
            json.contains("\"profile\": {\"perf\": \"perf version 6.1\"},"),
            "{json}"
        );
        assert!(json.contains("\"profile\": {\"idle_pct\": 15, "), "{json}");
        assert!(
            json.contains("\"profile\": {\"error\": \"perf died\"}"),
            "{json}"
        );
        assert!(
            json.contains("{\"symbol\": \"__GI___writev\", \"dso\": \"libc.so.6\", \"pct\": 0.5}"),
            "{json}"
        );

        let facts = Facts {
            profile: Some(Err("perf is not installed".into())),
            ..facts
        };
        assert!(markdown(&facts, &results).contains(
            "CPU profile (`--profile`): not taken, perf cannot record: perf is not installed"
        ));
    }

    #[test]
    fn short_reasons() {
        assert_eq!(short_reason("first\nsecond"), "first");
        assert_eq!(
            short_reason("weft exited; its log:\nError: bad config\nmore"),
            "Error: bad config"
        );
        assert_eq!(short_reason(&"x".repeat(150)).chars().count(), 101);
        assert_eq!(
            short_reason(
                "weft daemon in namespace e2eb-h1-1-4 exited (exit status: 1) before it was \
                 ready; its log:\nweft: /tmp/weft-config-1-2/weft.toml: not valid weft \
                 configuration: line 17 column 1: unknown field `offload`, expected `batch`\n"
            ),
            "unknown field `offload`, expected `batch`"
        );
    }

    #[test]
    fn results_file_section_is_replaced_between_the_markers() {
        let fresh = update_results(None, "table 1\n");
        assert!(
            fresh.starts_with("# weft benchmark results\n\n<!--"),
            "{fresh}"
        );
        let text = format!("intro\n\n{BEGIN_MARKER}\nold\n{END_MARKER}\n\nafter\n");
        let updated = update_results(Some(&text), "table 2");
        assert_eq!(
            updated,
            format!("intro\n\n{BEGIN_MARKER}\n\ntable 2\n{END_MARKER}\n\nafter\n")
        );
        assert_eq!(update_results(Some(&updated), "table 2"), updated);
        let appended = update_results(Some("intro\n"), "t");
        assert_eq!(
            appended,
            format!("intro\n\n{BEGIN_MARKER}\n\nt\n{END_MARKER}\n")
        );
    }

    #[test]
    fn reproduce_line() {
        assert_eq!(
            reproduce("--quick"),
            "cargo build --release -p weft -p weft-bench && target/release/weft-e2e-bench --quick"
        );
    }
}
