//! `--profile`: where the machine's CPU time goes during the one-stream TCP measurement, from
//! a system-wide `perf record` and the `perf report` of it.
//!
//! A [`Recording`] runs `perf record -a -g -D <delay> -- sleep <s>` next to iperf3 (events on
//! from [`window`]'s delay into the measurement until shortly before its end), then `perf
//! report --no-children --sort comm,dso,symbol --stdio -g none` on its data; [`parse_report`]
//! reads the report's lines and [`Profile::from_entries`] sorts their samples into idle, the
//! application (iperf3), weft's workers in the kernel and in user space, and everything else.
//! Every share is a percentage of all samples, i.e. of the whole machine's CPU time over the
//! window. The unit tests run the parser on a real `perf report` of weft's UDP backend.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use weft_testbed::{run_command, wait_for, TempDir};

use crate::facts::first_line_of;
use crate::report::median;

/// The comm of the benchmark's application.
pub const APP_COMM: &str = "iperf3";
/// The comm prefix of weft's data-plane threads (`weft-worker-N`).
pub const WEFT_WORKER_COMM: &str = "weft-worker";
/// The comm of every CPU's idle task.
pub const IDLE_COMM: &str = "swapper";
/// The dso of kernel samples.
const KERNEL_DSO: &str = "[kernel.kallsyms]";
/// The dso of the weft binary (its file name); other dsos are named next to their symbols.
const WEFT_DSO: &str = "weft";
/// The kernel functions that copy data between user and kernel memory.
pub const COPY_SYMBOLS: [&str; 4] = [
    "_copy_to_iter",
    "_copy_from_iter",
    "copy_page_from_iter",
    "copy_page_to_iter",
];
/// Hottest weft user-space symbols reported per setup.
pub const HOT_SYMBOLS: usize = 8;
/// Hottest weft user-space symbols kept per run (more than reported, so that the medians
/// over the runs can choose among them).
const HOT_KEPT: usize = 32;
/// How long `perf record` may take beyond its window (starting up, writing the data).
const RECORD_SLACK: Duration = Duration::from_secs(30);
/// How long `perf report` may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the probe's `perf record` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an abandoned `perf record` gets to stop after SIGINT before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Longest perf error message kept.
const MESSAGE_CHARS: usize = 300;

/// The recorded part of a `seconds`-long measurement: (delay after its start, length). From
/// 1 s into it to 0.5 s before its end (0.25 s in and out for a 1-second measurement).
pub fn window(seconds: u32) -> (Duration, Duration) {
    let (delay, margin) = if seconds >= 2 {
        (Duration::from_millis(1000), Duration::from_millis(500))
    } else {
        (Duration::from_millis(250), Duration::from_millis(250))
    };
    let total = Duration::from_secs(u64::from(seconds));
    (delay, total.saturating_sub(delay + margin))
}

/// Whether perf can record the whole machine here: `Ok(perf --version)`, or why not (one
/// line). Records `true` once, system-wide with call graphs, as the measurements will.
pub fn probe() -> Result<String, String> {
    let version = first_line_of("perf", &["--version"]);
    if version == "unknown" {
        return Err(
            "`perf --version` failed: perf is not installed (apt-get install -y \
                    linux-perf)"
                .to_owned(),
        );
    }
    let record = || -> Result<()> {
        let dir = TempDir::new("weft-perf")?;
        let mut command = Command::new("perf");
        command
            .args(["record", "-a", "-g", "-o"])
            .arg(dir.path().join("probe.data"))
            .args(["--", "true"]);
        let output = run_command(command, PROBE_TIMEOUT)?;
        ensure!(
            output.status.success(),
            "`perf record -a -g -- true` failed ({}): {}",
            output.status,
            one_line(&String::from_utf8_lossy(&output.stderr))
        );
        Ok(())
    };
    record().map(|()| version).map_err(|e| format!("{e:#}"))
}

/// `text`'s non-empty lines joined by spaces, at most [`MESSAGE_CHARS`] characters.
fn one_line(text: &str) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let mut line: String = joined.chars().take(MESSAGE_CHARS).collect();
    if joined.chars().count() > MESSAGE_CHARS {
        line.push('…');
    }
    line
}

/// A running system-wide `perf record`. [`Recording::finish`] waits for it and reads its
/// profile; on `Drop` a recording still running is stopped (SIGINT, then SIGKILL) and waited
/// for, and its data file is removed with its directory.
pub struct Recording {
    /// The `perf record` process.
    child: Child,
    /// What it was started as, for messages.
    command: String,
    /// When it should have finished, slack included.
    deadline: Instant,
    /// The data file, in `dir`.
    data: PathBuf,
    /// Where the data file and perf's stderr go; removed on `Drop` (after the fields above,
    /// so after perf has stopped).
    dir: TempDir,
}

impl Recording {
    /// Starts `perf record -a -g` over [`window`]`(seconds)` of a measurement that starts now.
    pub fn start(seconds: u32) -> Result<Recording> {
        let (delay, length) = window(seconds);
        let dir = TempDir::new("weft-perf")?;
        let data = dir.path().join("perf.data");
        let stderr_path = dir.path().join("record.stderr");
        let stderr = File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let delay_ms = delay.as_millis().to_string();
        // -D: events are off for the first `delay` of the workload, so perf starting up
        // (which takes a while system-wide) is not recorded either.
        let sleep = format!("{:.3}", (delay + length).as_secs_f64());
        let command = format!(
            "perf record -a -g -D {delay_ms} -o {} -- sleep {sleep}",
            data.display()
        );
        let child = Command::new("perf")
            .args(["record", "-a", "-g", "-D", &delay_ms, "-o"])
            .arg(&data)
            .args(["--", "sleep", &sleep])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting `{command}`"))?;
        Ok(Recording {
            child,
            command,
            deadline: Instant::now() + delay + length + RECORD_SLACK,
            data,
            dir,
        })
    }

    /// Waits for the recording to end and returns its profile.
    pub fn finish(mut self) -> Result<Profile> {
        let what = format!("`{}` to finish", self.command);
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let child = &mut self.child;
        let status = wait_for(remaining, &what, || child.try_wait().ok().flatten())?;
        if !status.success() {
            let stderr = std::fs::read(self.dir.path().join("record.stderr")).unwrap_or_default();
            bail!(
                "`{}` failed ({status}): {}",
                self.command,
                one_line(&String::from_utf8_lossy(&stderr))
            );
        }
        let mut command = Command::new("perf");
        command.args(["report", "-i"]).arg(&self.data).args([
            "--no-children",
            "--sort",
            "comm,dso,symbol",
            "--stdio",
            "-g",
            "none",
        ]);
        let output = run_command(command, REPORT_TIMEOUT)?;
        ensure!(
            output.status.success(),
            "`perf report -i {}` failed ({}): {}",
            self.data.display(),
            output.status,
            one_line(&String::from_utf8_lossy(&output.stderr))
        );
        let entries = parse_report(&String::from_utf8_lossy(&output.stdout))
            .context("reading perf report's output")?;
        Ok(Profile::from_entries(&entries))
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SIGINT makes perf stop its workload and end; SIGKILL if it does not. The child is
        // not reaped before it is waited for, so its pid cannot belong to anyone else.
        let mut interrupt = Command::new("kill");
        interrupt.args(["-s", "INT", &self.child.id().to_string()]);
        let _ = run_command(interrupt, STOP_GRACE);
        let child = &mut self.child;
        let stopped = wait_for(STOP_GRACE, "perf record to stop", || {
            child.try_wait().ok().flatten()
        });
        if stopped.is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One line of `perf report --sort comm,dso,symbol`: a share of all samples and where they
/// fell.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Percentage of all samples.
    pub share: f64,
    /// The thread's command name (`comm`).
    pub comm: String,
    /// The shared object (`[kernel.kallsyms]` for the kernel).
    pub dso: String,
    /// The symbol, without perf's `[k] ` / `[.] ` marker.
    pub symbol: String,
}

/// Where the columns of a report start (byte offsets, the same in its header and its lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Columns {
    /// Command.
    comm: usize,
    /// Shared Object.
    dso: usize,
    /// Symbol.
    symbol: usize,
    /// The column after Symbol, if any (perf 6 adds `IPC` and `[IPC Coverage]`).
    after_symbol: Option<usize>,
}

impl Columns {
    /// The columns named by the header line `names` (`# Overhead  Command ...`) and the
    /// line of dots under it (`# ........  .......`, one run of dots per column, as wide as
    /// its widest value).
    fn read(names: &str, dots: &str) -> Option<Columns> {
        let bytes = dots.as_bytes();
        let starts: Vec<usize> = (0..bytes.len())
            .filter(|&i| bytes[i] == b'.' && (i == 0 || bytes[i - 1] != b'.'))
            .collect();
        let name = |i: usize| {
            let end = starts.get(i + 1).copied().unwrap_or(names.len());
            field(names, starts[i], end).trim()
        };
        let column = |wanted: &str| (0..starts.len()).find(|&i| name(i) == wanted);
        if column("Overhead")? != 0 {
            return None;
        }
        let symbol = column("Symbol")?;
        Some(Columns {
            comm: starts[column("Command")?],
            dso: starts[column("Shared Object")?],
            symbol: starts[symbol],
            after_symbol: starts.get(symbol + 1).copied(),
        })
    }

    /// The entry of a report line, if it starts with a percentage.
    fn entry(&self, line: &str) -> Option<Entry> {
        let share = field(line, 0, self.comm)
            .trim()
            .strip_suffix('%')?
            .trim()
            .parse()
            .ok()?;
        let symbol = field(line, self.symbol, self.after_symbol.unwrap_or(line.len())).trim();
        // perf marks a symbol with its privilege level: `[k] ` kernel, `[.] ` user, ...
        let symbol = match symbol.as_bytes() {
            [b'[', _, b']', b' ', ..] => symbol[4..].trim_start(),
            _ => symbol,
        };
        Some(Entry {
            share,
            comm: field(line, self.comm, self.dso).trim().to_owned(),
            dso: field(line, self.dso, self.symbol).trim().to_owned(),
            symbol: symbol.to_owned(),
        })
    }
}

/// `line[from..to]`, clamped to the line and moved forward to character boundaries.
fn field(line: &str, from: usize, to: usize) -> &str {
    let boundary = |mut at: usize| {
        at = at.min(line.len());
        while !line.is_char_boundary(at) {
            at += 1;
        }
        at
    };
    let (from, to) = (boundary(from), boundary(to));
    line.get(from..to.max(from)).unwrap_or("")
}

/// The entries of the text of `perf report --no-children --sort comm,dso,symbol --stdio
/// -g none`. Comments (`#`) and blank lines are skipped, and so is any line that does not
/// start with a percentage; the columns are found from the header, so command names, shared
/// objects and symbols may contain spaces. Fails if the header or every entry is missing.
pub fn parse_report(text: &str) -> Result<Vec<Entry>> {
    let lines: Vec<&str> = text.lines().collect();
    let columns = lines
        .windows(2)
        .find_map(|pair| {
            let [names, dots] = pair else { return None };
            (names.starts_with('#') && dots.starts_with('#')).then(|| Columns::read(names, dots))?
        })
        .context(
            "no `# Overhead  Command  Shared Object  Symbol` header followed by a line of dots",
        )?;
    let entries: Vec<Entry> = lines
        .iter()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| columns.entry(line))
        .collect();
    ensure!(!entries.is_empty(), "the report has no samples");
    Ok(entries)
}

/// One of weft's user-space symbols and its share.
#[derive(Debug, Clone, PartialEq)]
pub struct HotSymbol {
    /// The symbol.
    pub symbol: String,
    /// Its shared object (`weft` for the binary itself).
    pub dso: String,
    /// Percentage of all samples (every worker thread together).
    pub share: f64,
}

impl HotSymbol {
    /// The symbol, followed by its shared object unless that is the weft binary.
    pub fn name(&self) -> String {
        if self.dso == WEFT_DSO {
            self.symbol.clone()
        } else {
            format!("{} ({})", self.symbol, self.dso)
        }
    }
}

/// Where the machine's CPU time went: percentages of all samples.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Profile {
    /// The idle task (`swapper`; softirq work that ran on an otherwise idle CPU counts
    /// here too).
    pub idle: f64,
    /// The application, iperf3: user space and kernel.
    pub app: f64,
    /// Of [`Profile::app`], the kernel's copies ([`COPY_SYMBOLS`]).
    pub app_copies: f64,
    /// weft's workers (`weft-worker-N`) in the kernel.
    pub weft_kernel: f64,
    /// Of [`Profile::weft_kernel`], the copies ([`COPY_SYMBOLS`]).
    pub weft_kernel_copies: f64,
    /// weft's workers in user space (the binary and its libraries).
    pub weft_user: f64,
    /// Everything else (other threads of weft, perf itself, kernel threads, ...).
    pub other: f64,
    /// weft's user-space symbols, hottest first (at most [`HOT_KEPT`]).
    pub hot: Vec<HotSymbol>,
}

impl Profile {
    /// The breakdown of a report's entries.
    pub fn from_entries(entries: &[Entry]) -> Profile {
        let mut profile = Profile::default();
        let mut hot: Vec<HotSymbol> = Vec::new();
        for entry in entries {
            let copy = COPY_SYMBOLS.contains(&entry.symbol.as_str());
            let share = entry.share;
            if entry.comm == IDLE_COMM {
                profile.idle += share;
            } else if entry.comm == APP_COMM {
                profile.app += share;
                if copy {
                    profile.app_copies += share;
                }
            } else if entry.comm.starts_with(WEFT_WORKER_COMM) {
                if entry.dso == KERNEL_DSO {
                    profile.weft_kernel += share;
                    if copy {
                        profile.weft_kernel_copies += share;
                    }
                } else {
                    profile.weft_user += share;
                    match hot
                        .iter_mut()
                        .find(|h| h.symbol == entry.symbol && h.dso == entry.dso)
                    {
                        Some(symbol) => symbol.share += share,
                        None => hot.push(HotSymbol {
                            symbol: entry.symbol.clone(),
                            dso: entry.dso.clone(),
                            share,
                        }),
                    }
                }
            } else {
                profile.other += share;
            }
        }
        // perf prints two decimals; sums of them are rounded back to two.
        let round = |share: &mut f64| *share = (*share * 100.0).round() / 100.0;
        for share in [
            &mut profile.idle,
            &mut profile.app,
            &mut profile.app_copies,
            &mut profile.weft_kernel,
            &mut profile.weft_kernel_copies,
            &mut profile.weft_user,
            &mut profile.other,
        ] {
            round(share);
        }
        hot.iter_mut().for_each(|h| round(&mut h.share));
        profile.hot = hottest(hot, HOT_KEPT);
        profile
    }

    /// weft's workers in the kernel apart from the copies.
    pub fn weft_kernel_rest(&self) -> f64 {
        (self.weft_kernel - self.weft_kernel_copies).max(0.0)
    }

    /// The median of every figure over `profiles` (a symbol missing from a run counts 0 in
    /// it), with the [`HOT_SYMBOLS`] hottest symbols; `None` when there is none.
    pub fn median_of(profiles: &[&Profile]) -> Option<Profile> {
        let of =
            |figure: &dyn Fn(&Profile) -> f64| median(profiles.iter().map(|p| figure(p)).collect());
        let symbols: BTreeSet<(&str, &str)> = profiles
            .iter()
            .flat_map(|p| p.hot.iter().map(|h| (h.symbol.as_str(), h.dso.as_str())))
            .collect();
        let hot = symbols
            .into_iter()
            .map(|(symbol, dso)| HotSymbol {
                symbol: symbol.to_owned(),
                dso: dso.to_owned(),
                share: of(&|p: &Profile| {
                    p.hot
                        .iter()
                        .find(|h| h.symbol == symbol && h.dso == dso)
                        .map_or(0.0, |h| h.share)
                })
                .unwrap_or(0.0),
            })
            .collect();
        Some(Profile {
            idle: of(&|p| p.idle)?,
            app: of(&|p| p.app)?,
            app_copies: of(&|p| p.app_copies)?,
            weft_kernel: of(&|p| p.weft_kernel)?,
            weft_kernel_copies: of(&|p| p.weft_kernel_copies)?,
            weft_user: of(&|p| p.weft_user)?,
            other: of(&|p| p.other)?,
            hot: hottest(hot, HOT_SYMBOLS),
        })
    }

    /// The breakdown on one line, for progress.
    pub fn summary(&self) -> String {
        format!(
            "idle {:.1}%, {APP_COMM} {:.1}% (copies {:.1}%), weft kernel {:.1}% (copies \
             {:.1}%), weft user {:.1}%, other {:.1}%",
            self.idle,
            self.app,
            self.app_copies,
            self.weft_kernel,
            self.weft_kernel_copies,
            self.weft_user,
            self.other
        )
    }
}

/// The `keep` hottest of `symbols`, hottest first (ties by name, so the order is stable).
fn hottest(mut symbols: Vec<HotSymbol>, keep: usize) -> Vec<HotSymbol> {
    symbols.sort_by(|a, b| {
        b.share
            .total_cmp(&a.share)
            .then_with(|| a.symbol.cmp(&b.symbol))
            .then_with(|| a.dso.cmp(&b.dso))
    });
    symbols.truncate(keep);
    symbols
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head and a selection of the lines (trailing blanks cut) of a real `perf report
    /// --no-children --sort comm,dso,symbol --stdio -g none` (perf 6.1) of 2 s of
    /// `perf record -a -g` during one TCP stream through weft's UDP backend on 2 CPUs.
    const REPORT: &str = r"# To display the perf.data header info, please use --header/--header-only options.
#
#
# Total Lost Samples: 0
#
# Samples: 14K of event 'cpu-clock:pppH'
# Event count (approx.): 3539250000
#
# Overhead  Command          Shared Object                        Symbol                                                                                                                    IPC   [IPC Coverage]
# ........  ...............  ...................................  ........................................................................................................................  ....................
#
    13.94%  weft-worker-0    [kernel.kallsyms]                    [k] _copy_from_iter                                                                                                       -      -
    12.45%  weft-worker-0    [kernel.kallsyms]                    [k] _copy_to_iter                                                                                                         -      -
     8.31%  swapper          [kernel.kallsyms]                    [k] pv_native_safe_halt                                                                                                   -      -
     7.06%  weft-worker-0    weft                                 [.] weft::sys::csum::x86::sum_avx512                                                                                      -      -
     4.85%  iperf3           [kernel.kallsyms]                    [k] _copy_to_iter                                                                                                         -      -
     4.47%  iperf3           [kernel.kallsyms]                    [k] _copy_from_iter                                                                                                       -      -
     2.69%  weft-worker-0    [kernel.kallsyms]                    [k] _raw_spin_unlock_irqrestore                                                                                           -      -
     2.51%  weft-worker-0    weft                                 [.] weft_encap::offload::split::split                                                                                     -      -
     2.12%  weft-worker-0    weft                                 [.] weft_encap::offload::coalesce::Coalescer::push                                                                        -      -
     1.46%  weft-worker-0    [kernel.kallsyms]                    [k] handle_softirqs                                                                                                       -      -
     1.21%  weft-worker-0    weft                                 [.] weft_encap::flannel::FlannelBackend::handle_datagram                                                                  -      -
     0.99%  weft-worker-0    weft                                 [.] weft_encap::offload::ip::fill_ipv4_checksum                                                                           -      -
     0.42%  weft-worker-0    weft                                 [.] weft::dataplane::worker::Worker<D,B>::apply                                                                           -      -
     0.28%  weft-worker-0    libc.so.6                            [.] __GI___writev                                                                                                         -      -
     0.11%  weft-worker-0    [kernel.kallsyms]                    [k] copy_page_from_iter                                                                                                   -      -
     0.01%  memfd:sealed-91  [kernel.kallsyms]                    [k] finish_task_switch.isra.0                                                                                             -      -
     0.01%  memfd:sealed-91  memfd:sealed-91173221a7ea (deleted)  [.] 0x00000000000c5852                                                                                                    -      -
     0.01%  sleep            ld-linux-x86-64.so.2                 [.] __GI___tunables_init                                                                                                  -      -
     0.01%  weft-e2e-bench   [kernel.kallsyms]                    [k] finish_task_switch.isra.0                                                                                             -      -
     0.01%  weft-worker-0    weft                                 [.] weft::dataplane::worker::Worker<D,B>::apply::{{closure}}                                                              -      -
     0.22%  weft-worker-0    weft                                 [.] <weft_encap::flannel::FlannelBackend as weft_encap::backend::Backend>::handle_datagram                                -      -
     0.01%  kworker/0:0-eve  [kernel.kallsyms]                    [k] _raw_spin_unlock_irq                                                                                                  -      -
     0.01%  perf             [kernel.kallsyms]                    [k] __memcg_slab_post_alloc_hook                                                                                          -      -
     0.01%  weft-links       [kernel.kallsyms]                    [k] __siphash_unaligned                                                                                                   -      -
";

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn reads_every_line_of_a_real_report() {
        let entries = parse_report(REPORT).unwrap();
        assert_eq!(entries.len(), 24);
        assert_eq!(
            entries[0],
            Entry {
                share: 13.94,
                comm: "weft-worker-0".into(),
                dso: "[kernel.kallsyms]".into(),
                symbol: "_copy_from_iter".into(),
            }
        );
        let by_symbol = |symbol: &str| entries.iter().find(|e| e.symbol == symbol).unwrap();
        // Spaces, `<...>` and `::` in a symbol; the IPC columns are not part of it.
        let generic = by_symbol(
            "<weft_encap::flannel::FlannelBackend as weft_encap::backend::Backend>::\
             handle_datagram",
        );
        assert_eq!((generic.share, generic.dso.as_str()), (0.22, "weft"));
        assert_eq!(
            by_symbol("weft::dataplane::worker::Worker<D,B>::apply").share,
            0.42
        );
        // A shared object with a space in its name.
        let memfd = by_symbol("0x00000000000c5852");
        assert_eq!(memfd.dso, "memfd:sealed-91173221a7ea (deleted)");
        assert_eq!(memfd.comm, "memfd:sealed-91");
        assert_eq!(by_symbol("__GI___writev").dso, "libc.so.6");
    }

    #[test]
    fn a_command_name_with_spaces_is_one_column() {
        // `opt cgu.2` (rustc's LLVM threads) is a real command name.
        let report = REPORT.replace("kworker/0:0-eve", "opt cgu.2      ");
        let entries = parse_report(&report).unwrap();
        let opt = entries.iter().find(|e| e.comm == "opt cgu.2").unwrap();
        assert_eq!(
            (opt.dso.as_str(), opt.symbol.as_str()),
            ("[kernel.kallsyms]", "_raw_spin_unlock_irq")
        );
    }

    #[test]
    fn sorts_the_samples_into_the_breakdown() {
        let profile = Profile::from_entries(&parse_report(REPORT).unwrap());
        assert_eq!(profile.idle, 8.31, "{profile:?}");
        assert_eq!(
            profile.app, 9.32,
            "rounded to perf's two decimals: {profile:?}"
        );
        assert!(close(profile.app, 4.85 + 4.47), "{profile:?}");
        assert!(close(profile.app_copies, 4.85 + 4.47), "{profile:?}");
        assert!(
            close(profile.weft_kernel, 13.94 + 12.45 + 2.69 + 1.46 + 0.11),
            "{profile:?}"
        );
        assert!(
            close(profile.weft_kernel_copies, 13.94 + 12.45 + 0.11),
            "{profile:?}"
        );
        assert!(
            close(profile.weft_kernel_rest(), 2.69 + 1.46),
            "{profile:?}"
        );
        assert!(
            close(
                profile.weft_user,
                7.06 + 2.51 + 2.12 + 1.21 + 0.99 + 0.42 + 0.28 + 0.22 + 0.01
            ),
            "{profile:?}"
        );
        // kworker, memfd (2), sleep, weft-e2e-bench, perf, weft-links.
        assert!(close(profile.other, 7.0 * 0.01), "{profile:?}");
        let names: Vec<String> = profile.hot.iter().map(HotSymbol::name).collect();
        assert_eq!(
            names[..4],
            [
                "weft::sys::csum::x86::sum_avx512",
                "weft_encap::offload::split::split",
                "weft_encap::offload::coalesce::Coalescer::push",
                "weft_encap::flannel::FlannelBackend::handle_datagram",
            ]
        );
        assert!(names.contains(&"__GI___writev (libc.so.6)".to_owned()));
        assert!(profile
            .summary()
            .starts_with("idle 8.3%, iperf3 9.3% (copies 9.3%)"));
    }

    #[test]
    fn a_report_without_header_or_samples_is_an_error() {
        assert!(parse_report("").is_err());
        let head: String = REPORT.lines().take(11).map(|l| format!("{l}\n")).collect();
        assert!(parse_report(&head).is_err());
        let no_dots = REPORT.replace("# ........", "# --------");
        assert!(parse_report(&no_dots).is_err());
    }

    #[test]
    fn medians_over_runs_count_a_missing_symbol_as_zero() {
        let symbol = |name: &str, share: f64| HotSymbol {
            symbol: name.into(),
            dso: "weft".into(),
            share,
        };
        let run = |idle: f64, hot: Vec<HotSymbol>| Profile {
            idle,
            weft_kernel: 40.0,
            weft_kernel_copies: 20.0,
            hot,
            ..Profile::default()
        };
        let a = run(10.0, vec![symbol("a", 5.0), symbol("b", 1.0)]);
        let b = run(20.0, vec![symbol("a", 3.0)]);
        let c = run(30.0, vec![symbol("b", 2.0), symbol("a", 4.0)]);
        let median = Profile::median_of(&[&a, &b, &c]).unwrap();
        assert_eq!(median.idle, 20.0);
        assert_eq!(median.weft_kernel_rest(), 20.0);
        assert_eq!(median.hot, [symbol("a", 4.0), symbol("b", 1.0)]);
        assert_eq!(Profile::median_of(&[]), None);
    }

    #[test]
    fn the_window_leaves_out_the_start_and_the_end() {
        let ms = |ms| Duration::from_millis(ms);
        assert_eq!(window(5), (ms(1000), ms(3500)));
        assert_eq!(window(2), (ms(1000), ms(500)));
        assert_eq!(window(1), (ms(250), ms(500)));
    }
}
