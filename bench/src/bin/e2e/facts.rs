//! The facts recorded with every table: when, on which machine and kernel, which commit, and
//! the veth offload settings the setups ran under (OFFLOAD.md §6: they decide much of what
//! the kernel and weft can do between namespaces).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use weft_testbed::{run_command, Netns, UNDERLAY_IFNAME};

/// The `ethtool -k` features recorded for the underlay veth, in report order.
pub const OFFLOAD_FEATURES: [&str; 6] = [
    "tx-checksumming",
    "tcp-segmentation-offload",
    "generic-segmentation-offload",
    "generic-receive-offload",
    "rx-udp-gro-forwarding",
    "tx-udp-segmentation",
];

/// Where and how the measurements were made.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The command line, as typed.
    pub command: String,
    /// The arguments after the program name, as typed (for the "reproduce" line).
    pub args: String,
    /// When the run started (UTC).
    pub date: String,
    /// `nproc`, the CPU model and the memory.
    pub machine: String,
    /// `uname -r`.
    pub kernel: String,
    /// /proc/loadavg's 1, 5 and 15 minute averages when the run started.
    pub load: String,
    /// `git rev-parse --short HEAD`, with `-dirty` when tracked files differ from it.
    pub commit: String,
    /// The weft binary the weft setups run.
    pub weft: String,
    /// `iperf3 --version`, first line.
    pub iperf3: String,
    /// `ping -V`, first line.
    pub ping: String,
    /// The TCP congestion control of the client namespace.
    pub congestion_control: String,
    /// The underlay veth's offload settings per host at the start of the run.
    pub offloads: Vec<(String, String)>,
    /// The same at the end of the run, if they changed.
    pub offloads_changed: Option<Vec<(String, String)>>,
    /// Runs per setup.
    pub runs: u32,
    /// Seconds per throughput measurement.
    pub seconds: u32,
    /// Echo requests per latency measurement.
    pub pings: u32,
    /// `--workers`, if given.
    pub workers: Option<u32>,
    /// With `--profile`: `perf --version` if perf can record, else why it cannot.
    pub profile: Option<Result<String, String>>,
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

/// `nproc` (the available parallelism), the CPU model from /proc/cpuinfo and the memory
/// from /proc/meminfo, e.g. `2 CPUs (AMD EPYC 7B13), 23.4 GiB memory`.
pub fn machine() -> String {
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
    let memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|line| line.starts_with("MemTotal:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB", kib / (1024.0 * 1024.0)))
        })
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{count} CPUs ({model}), {memory} memory")
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

/// The commit of the checkout the runner runs in (the current directory, as the reproduce
/// line has it; else the one it was built from): `git rev-parse --short HEAD`, plus `-dirty`
/// if tracked files have uncommitted changes (`unknown` outside a git checkout).
pub fn commit() -> String {
    let built_from = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let (tree, revision) = [".", built_from]
        .into_iter()
        .map(|tree| {
            let revision = first_line_of("git", &["-C", tree, "rev-parse", "--short", "HEAD"]);
            (tree, revision)
        })
        .find(|(_, revision)| revision != "unknown")
        .unwrap_or((".", "unknown".to_owned()));
    let mut status = Command::new("git");
    status.args([
        "--no-optional-locks",
        "-C",
        tree,
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]);
    let dirty = run_command(status, Duration::from_secs(30))
        .map(|out| out.status.success() && !out.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        format!("{revision}-dirty")
    } else {
        revision
    }
}

/// The weft binary, for the report.
pub fn weft_binary(weft: Option<&Path>) -> String {
    weft.map_or_else(
        || "not used".to_owned(),
        |path| format!("`{}` (`weft run`)", path.display()),
    )
}

/// The offload settings of the underlay veth in `netns`: the [`OFFLOAD_FEATURES`] lines of
/// `ethtool -k u0` and `threaded` from sysfs, e.g. `tx-checksumming: on, ..., threaded: 0`.
pub fn veth_offloads(netns: &Netns) -> String {
    let ethtool = netns
        .exec_ok(&["ethtool", "-k", UNDERLAY_IFNAME])
        .unwrap_or_default();
    let threaded_path = format!("/sys/class/net/{UNDERLAY_IFNAME}/threaded");
    let threaded = netns
        .exec_ok(&["cat", &threaded_path])
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let mut parts = offload_lines(&ethtool);
    parts.push(format!("threaded: {threaded}"));
    parts.join(", ")
}

/// The [`OFFLOAD_FEATURES`] lines of an `ethtool -k` output, trimmed, in that order; a
/// feature ethtool does not list is `<name>: unknown`.
pub fn offload_lines(ethtool: &str) -> Vec<String> {
    OFFLOAD_FEATURES
        .iter()
        .map(|feature| {
            ethtool
                .lines()
                .map(str::trim)
                .find(|line| {
                    line.split_once(':')
                        .is_some_and(|(name, _)| name.trim() == *feature)
                })
                .map_or_else(|| format!("{feature}: unknown"), str::to_owned)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_recorded_offload_lines_in_order() {
        let ethtool = "Features for u0:\nrx-checksumming: on\ntx-checksumming: on\n\
            \ttx-checksum-ipv4: off [fixed]\ntcp-segmentation-offload: on\n\
            \ttx-tcp-segmentation: on\ngeneric-segmentation-offload: on\n\
            generic-receive-offload: off\ntx-udp-segmentation: on\n\
            rx-udp-gro-forwarding: off\n";
        assert_eq!(
            offload_lines(ethtool),
            [
                "tx-checksumming: on",
                "tcp-segmentation-offload: on",
                "generic-segmentation-offload: on",
                "generic-receive-offload: off",
                "rx-udp-gro-forwarding: off",
                "tx-udp-segmentation: on",
            ]
        );
        assert_eq!(offload_lines("")[0], "tx-checksumming: unknown");
    }

    #[test]
    fn machine_facts_are_readable() {
        assert!(machine().contains("CPUs ("), "{}", machine());
        assert_ne!(kernel_release(), "unknown");
    }
}
