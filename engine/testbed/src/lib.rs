//! A testbed of hosts and pods in Linux network namespaces, for end-to-end tests, `weft demo`
//! and the end-to-end benchmarks.
//!
//! # Model
//!
//! A *host* is a network namespace with an underlay interface `u0` carrying `198.18.0.N/24`;
//! host `N` owns the overlay subnet `100.96.N.0/24` and its weft device gets `100.96.N.0`.
//! Hosts are joined either by one veth pair ([`Testbed::two_hosts`]) or by a bridge `br0` in
//! a separate *switch* namespace with one veth per host ([`Testbed::switched`]).
//! [`Testbed::add_routed_host`] puts a host on a second segment (`198.19.0.N/24`) behind a
//! router namespace on the switch ([`Testbed::add_router`]): reachable, but not on the same
//! L2 segment (flannel's host-gw and DirectRouting care).
//! A *pod* is a namespace of its own whose `eth0` is a veth into the bridge `cni0`
//! (`100.96.N.1/24`) of its host, with a default route via `100.96.N.1`; the host forwards
//! (`net.ipv4.ip_forward=1`). This is the picture of flannel's documentation:
//!
//! ```text
//!  pod 100.96.1.2 -- cni0 100.96.1.1 -- hostA routing -- weft (flannel0 100.96.1.0)
//!    -- u0 198.18.0.1 ==veth== u0 198.18.0.2 -- weft (flannel0 100.96.2.0) -- hostB ...
//! ```
//!
//! [`WeftDaemon`] starts `weft run` inside a host, waits until its control socket answers, and
//! wraps the control commands (`weft stats`, `weft peer ...`, `weft fdb list`);
//! [`WeftDaemon::start_with_env`] adds environment variables (the `WEFT_FAULT_*` fault
//! injections). [`EngineConfig`] writes the `[engine]` section (`workers`, `offload`, `batch`)
//! of either backend's configuration. [`tcp_transfer`] sends one TCP flow and checks its
//! SHA-256; [`tcp_transfers`] runs many such flows at once, each with data of its own.
//!
//! [`EtcdServer`] runs a real single-member etcd inside a namespace (stop, restart,
//! compaction, auth), and [`Netns::run_inside`] runs a closure on a thread inside a namespace,
//! so a test's own client talks to it without touching the root namespace.
//!
//! For the VXLAN backend, [`VxlanConfig`] writes weft's L3 (`flannel.1` as a TUN) and L2 (a
//! TAP in a bridge) configurations, [`add_kernel_flannel_device`] and
//! [`add_kernel_flannel_peer`] program the kernel's `flannel.1` exactly as flanneld does
//! (the reference weft must interoperate with), [`add_kernel_vxlan_bridge_port`] builds the
//! kernel side of the "vxlan + bridge" L2 setup, [`BridgePod`] puts pods of one L2 subnet
//! (`100.96.0.0/24`) into a host's bridge, and [`PacketCapture`] records an interface with
//! `tcpdump` into a [`Pcap`].
//!
//! # Invariants
//!
//! - Nothing is created or configured in the root network namespace: every veth is created
//!   with both ends directly inside their namespaces (`ip -n X link add u0 type veth peer name
//!   u0 netns Y`), and every address and route lives inside a namespace.
//! - Every namespace, process and temporary file is owned by a guard ([`Netns`], [`NsChild`],
//!   [`TempDir`], [`ConfigFile`]) that removes it on `Drop`, also when a test panics.
//!   Dropping a [`Netns`] first terminates every process still running inside it.
//! - Names are unique per process and per call (prefix, process id, counter), so tests in the
//!   same or in different processes can run in parallel.
//! - Nothing waits with a fixed sleep: [`wait_until`] and [`wait_for`] poll a condition against
//!   a deadline and name what they awaited when it passes. Every command runs with a timeout.
//!
//! Everything here shells out to `ip`, `sysctl`, `ping`, `nc`, `ss`, `kill` and `sha256sum`
//! (the VXLAN helpers also to `bridge` and `tcpdump`, [`EtcdServer`] to `etcd`), and needs
//! root.
//!
//! # Example
//!
//! ```no_run
//! use std::path::Path;
//! use weft_testbed::{ping, Testbed, WeftConfig, WeftDaemon, DEFAULT_DEVICE};
//!
//! # fn main() -> Result<(), weft_testbed::TestbedError> {
//! let bed = Testbed::two_hosts("example")?;
//! let config_a = WeftConfig::udp(1, &[2]).write()?;
//! let config_b = WeftConfig::udp(2, &[1]).write()?;
//! let exe = Path::new("target/debug/weft");
//! let _a = WeftDaemon::start(exe, bed.host(1).netns(), config_a.path(), DEFAULT_DEVICE)?;
//! let _b = WeftDaemon::start(exe, bed.host(2).netns(), config_b.path(), DEFAULT_DEVICE)?;
//! let summary = ping(bed.host(1).netns(), bed.host(2).overlay_addr(), 3)?;
//! assert!(summary.all_received());
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

mod etcd;
pub use etcd::{make_test_certificates, EtcdServer, EtcdTls};

/// The flannel UDP backend's port, used as both source and destination.
pub const UDP_PORT: u16 = 8285;
/// The device name weft and flanneld use for the UDP backend.
pub const DEFAULT_DEVICE: &str = "flannel0";
/// The overlay network every host's subnet is carved from.
pub const OVERLAY_NETWORK: &str = "100.96.0.0/16";
/// The name of every host's underlay interface.
pub const UNDERLAY_IFNAME: &str = "u0";
/// The MTU of the underlay links.
pub const UNDERLAY_MTU: u32 = 1500;
/// The MTU of the UDP backend's device and of its pods: underlay MTU minus IPv4 and UDP headers.
pub const UDP_OVERLAY_MTU: u32 = UNDERLAY_MTU - 28;
/// The bridge that pods attach to inside their host.
pub const POD_BRIDGE: &str = "cni0";
/// The bridge inside the switch namespace of a switched testbed.
pub const SWITCH_BRIDGE: &str = "br0";
/// The host index of the router of a switched testbed ([`Testbed::add_router`]): it sits on
/// the switch at `198.18.0.254` and routes to the second underlay segment.
pub const ROUTER_HOST: u8 = 254;
/// The second underlay segment, behind the router: hosts added with
/// [`Testbed::add_routed_host`] are on it, `198.19.0.<index>/24`, the router is `.254`.
pub const ROUTED_SEGMENT: &str = "198.19.0.0/24";
/// The bridge inside the router namespace that joins the routed hosts.
pub const ROUTED_BRIDGE: &str = "br1";
/// How long an ordinary command may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a started daemon may take to answer `weft stats`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a process gets to exit after SIGTERM before it is sent SIGKILL.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// Everything that can go wrong while building or driving the testbed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// A program could not be started at all.
    #[error("cannot start `{command}`: {source} (is the program installed and on PATH?)")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it could not be started.
        #[source]
        source: io::Error,
    },
    /// A command that had to succeed exited with a failure status.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// What it wrote to stderr, trimmed.
        stderr: String,
    },
    /// A command ran longer than its timeout and was killed.
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    CommandTimeout {
        /// The command line.
        command: String,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// A polled condition did not become true before its deadline.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        waited: Duration,
    },
    /// A file-system operation on a temporary file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A weft daemon exited before it answered on its control socket.
    #[error(
        "weft daemon in namespace {netns} exited ({status}) before it was ready; its log:\n{log}"
    )]
    DaemonExited {
        /// The namespace the daemon ran in.
        netns: String,
        /// How it exited.
        status: ExitStatus,
        /// Everything it wrote to stdout and stderr.
        log: String,
    },
    /// A command's output did not have the expected shape.
    #[error("unexpected output from `{command}`: {output}")]
    UnexpectedOutput {
        /// The command line.
        command: String,
        /// The output that could not be understood.
        output: String,
    },
    /// The testbed was asked for something its topology cannot provide.
    #[error("invalid testbed request: {0}")]
    Invalid(String),
}

/// The result type of this module.
pub type Result<T, E = TestbedError> = std::result::Result<T, E>;

/// A process-wide counter that makes names unique together with the process id.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Serializes `ip netns add` and `ip netns del` within this process: on a fresh machine the
/// first `ip netns add` turns `/run/netns` into a shared mount point, and concurrent first
/// calls (parallel tests) could stack two mounts there.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

fn netns_lock() -> MutexGuard<'static, ()> {
    // A panic while holding the lock leaves nothing inconsistent: ignore the poisoning.
    NETNS_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `prefix-pid-counter`: unique among all callers in all processes on this machine.
fn unique_name(prefix: &str) -> String {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{id}", std::process::id())
}

/// The command line of `argv`, for messages.
fn describe(argv: &[&str]) -> String {
    argv.join(" ")
}

/// Whether this process runs with effective user id 0 (read from `/proc/self/status`).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Moves the calling thread into a new network namespace of its own with the loopback up:
/// for a test that needs real sockets on `127.0.0.0/8` and no topology (the namespace goes
/// with the process; nothing touches the root namespace).
pub fn enter_private_netns() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|errno| {
        TestbedError::Io {
            what: "creating a private network namespace (tests run as root)".into(),
            source: io::Error::from(errno),
        }
    })?;
    // The calling thread is in the new namespace now, so this acts on its loopback.
    host_exec_ok(&["ip", "link", "set", "lo", "up"]).map(|_| ())
}

/// Raises this process's soft limit of open files to at least `wanted` (up to the hard
/// limit): for a test that holds many connections at once. Returns the new soft limit.
pub fn raise_fd_limit(wanted: u64) -> Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let io_err = |what: &str, errno: nix::errno::Errno| TestbedError::Io {
        what: what.into(),
        source: io::Error::from(errno),
    };
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| io_err("reading RLIMIT_NOFILE", e))?;
    if soft >= wanted {
        return Ok(soft);
    }
    let new = wanted.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, new, hard)
        .map_err(|e| io_err("raising RLIMIT_NOFILE", e))?;
    Ok(new)
}

/// Polls `condition` until it returns true or `timeout` passes.
///
/// Polls quickly at first and backs off to every 100 ms. The error names `what` was awaited.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> Result<()> {
    wait_for(timeout, what, || condition().then_some(()))
}

/// Polls `probe` until it returns `Some(value)` or `timeout` passes, and returns the value.
///
/// Polls quickly at first and backs off to every 100 ms. The error names `what` was awaited.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(TestbedError::Timeout {
                what: what.to_owned(),
                waited,
            });
        }
        thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Waits for `child` to exit, for at most `timeout`; `None` if it is still running.
fn wait_child(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Ok(None);
        }
        thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Runs `command` with stdin from /dev/null, capturing stdout and stderr in temporary files
/// (not pipes, so a leftover grandchild cannot make this hang), killing it after `timeout`.
fn run_captured(mut command: Command, description: &str, timeout: Duration) -> Result<Output> {
    let dir = TempDir::new("weft-exec")?;
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    command
        .stdin(Stdio::null())
        .stdout(create_file(&stdout_path)?)
        .stderr(create_file(&stderr_path)?);
    log::debug!("running {description}");
    let mut child = command.spawn().map_err(|source| TestbedError::Spawn {
        command: description.to_owned(),
        source,
    })?;
    let status = wait_child(&mut child, timeout).map_err(|source| TestbedError::Io {
        what: format!("waiting for `{description}`"),
        source,
    })?;
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(TestbedError::CommandTimeout {
            command: description.to_owned(),
            timeout,
        });
    };
    Ok(Output {
        status,
        stdout: read_file(&stdout_path)?,
        stderr: read_file(&stderr_path)?,
    })
}

/// Runs `command` (anywhere, e.g. `weft demo` in the root namespace) with stdin from
/// /dev/null and stdout and stderr captured, killing it after `timeout`.
pub fn run_command(command: Command, timeout: Duration) -> Result<Output> {
    let description = format!("{command:?}");
    run_captured(command, &description, timeout)
}

/// Turns a finished command's output into its stdout, or an error carrying its stderr.
fn require_success(description: &str, output: Output) -> Result<String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(TestbedError::CommandFailed {
            command: description.to_owned(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Runs `argv` in the root namespace (only for `ip netns ...` and `ip -n ...`, which act on
/// namespaces, never on the root namespace's own configuration) and requires success.
fn host_exec_ok(argv: &[&str]) -> Result<String> {
    let description = describe(argv);
    let mut command = Command::new(argv[0]);
    command.args(&argv[1..]);
    let output = run_captured(command, &description, COMMAND_TIMEOUT)?;
    require_success(&description, output)
}

fn create_file(path: &Path) -> Result<File> {
    File::create(path).map_err(|source| TestbedError::Io {
        what: format!("creating {}", path.display()),
        source,
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| TestbedError::Io {
        what: format!("reading {}", path.display()),
        source,
    })
}

/// Sends `signal` (a name such as `TERM` or `KILL`) to process `pid` with `kill(1)`.
fn send_signal(pid: u32, signal: &str) -> Result<()> {
    let pid = pid.to_string();
    host_exec_ok(&["kill", "-s", signal, &pid]).map(drop)
}

/// A temporary directory under [`std::env::temp_dir`], removed with its contents on `Drop`.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a new, empty directory named `prefix-pid-counter`.
    pub fn new(prefix: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(unique_name(prefix));
        fs::create_dir(&path).map_err(|source| TestbedError::Io {
            what: format!("creating directory {}", path.display()),
            source,
        })?;
        Ok(Self { path })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to the file `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> Result<PathBuf> {
        let path = self.path.join(name);
        fs::write(&path, contents).map_err(|source| TestbedError::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.path) {
            log::warn!("cannot remove {}: {error}", self.path.display());
        }
    }
}

/// A network namespace, created on construction and deleted on `Drop`.
///
/// Dropping it terminates every process still inside the namespace (SIGTERM, then SIGKILL
/// after [`TERMINATE_GRACE`]) before `ip netns del`, so nothing outlives a test.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `prefix-pid-counter` with its loopback interface up.
    pub fn new(prefix: &str) -> Result<Self> {
        let name = unique_name(prefix);
        {
            let _serialized = netns_lock();
            host_exec_ok(&["ip", "netns", "add", &name])?;
        }
        let netns = Self { name };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name (as listed by `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a new thread that has entered the namespace (`setns(2)` of that thread
    /// only; the calling thread and the rest of the process stay where they are), and returns
    /// what `f` returns; a panic in `f` is resumed on the calling thread.
    ///
    /// Sockets `f` opens live in the namespace, so a test can talk to a server inside it
    /// without any traffic in the root namespace; processes `f` starts inherit it too.
    pub fn run_inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = Path::new("/run/netns").join(&self.name);
        let file = File::open(&path).map_err(|source| TestbedError::Io {
            what: format!("opening {}", path.display()),
            source,
        })?;
        let name = &self.name;
        thread::scope(|scope| {
            let inside = scope.spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                    |errno| TestbedError::Io {
                        what: format!("entering namespace {name}"),
                        source: io::Error::from(errno),
                    },
                )?;
                Ok(f())
            });
            match inside.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs `ip -n <name> <args>` and returns its stdout; fails if `ip` fails.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut argv = vec!["ip", "-n", &self.name];
        argv.extend_from_slice(args);
        host_exec_ok(&argv)
    }

    /// A [`Command`] that runs `argv` inside the namespace (`ip netns exec <name> argv...`).
    ///
    /// `ip netns exec` replaces itself with the program, so the child's pid is the program's.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(argv);
        command
    }

    fn describe(&self, argv: &[&str]) -> String {
        format!("[{}] {}", self.name, describe(argv))
    }

    /// Runs `argv` inside the namespace, waits at most [`COMMAND_TIMEOUT`] and returns its
    /// output whatever its exit status.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        self.exec_timeout(argv, COMMAND_TIMEOUT)
    }

    /// Like [`Netns::exec`], with an explicit timeout.
    pub fn exec_timeout(&self, argv: &[&str], timeout: Duration) -> Result<Output> {
        run_captured(self.command(argv), &self.describe(argv), timeout)
    }

    /// Runs `argv` inside the namespace, requires it to succeed and returns its stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> Result<String> {
        let output = self.exec(argv)?;
        require_success(&self.describe(argv), output)
    }

    /// Starts `argv` inside the namespace with stdin from /dev/null, stdout and stderr going to
    /// files (see [`NsChild::stdout`]). The process is terminated when the guard is dropped.
    pub fn spawn(&self, argv: &[&str]) -> Result<NsChild> {
        self.spawn_inner(argv, None, &[])
    }

    /// Like [`Netns::spawn`], with stdin read from the file `stdin`.
    pub fn spawn_with_stdin(&self, argv: &[&str], stdin: &Path) -> Result<NsChild> {
        self.spawn_inner(argv, Some(stdin), &[])
    }

    /// Like [`Netns::spawn`], with the environment variables `env` (name, value) added to the
    /// process's environment.
    pub fn spawn_with_env(&self, argv: &[&str], env: &[(&str, &str)]) -> Result<NsChild> {
        self.spawn_inner(argv, None, env)
    }

    fn spawn_inner(
        &self,
        argv: &[&str],
        stdin: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Result<NsChild> {
        let mut description = self.describe(argv);
        if !env.is_empty() {
            let assignments: Vec<String> = env
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            description = format!("{} {description}", assignments.join(" "));
        }
        let output_dir = TempDir::new("weft-child")?;
        let mut command = self.command(argv);
        command.envs(env.iter().copied());
        let stdin = match stdin {
            None => Stdio::null(),
            Some(path) => Stdio::from(File::open(path).map_err(|source| TestbedError::Io {
                what: format!("opening {} as stdin of `{description}`", path.display()),
                source,
            })?),
        };
        command
            .stdin(stdin)
            .stdout(create_file(&output_dir.path().join(NsChild::STDOUT))?)
            .stderr(create_file(&output_dir.path().join(NsChild::STDERR))?);
        log::debug!("starting {description}");
        let child = command.spawn().map_err(|source| TestbedError::Spawn {
            command: description.clone(),
            source,
        })?;
        Ok(NsChild {
            child,
            command: description,
            status: None,
            output_dir,
        })
    }

    /// Sets the sysctl `key` (e.g. `net.ipv4.ip_forward`) to `value` inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let setting = format!("{key}={value}");
        self.exec_ok(&["sysctl", "-q", "-w", &setting]).map(drop)
    }

    /// Whether a network interface called `ifname` exists inside the namespace.
    pub fn has_link(&self, ifname: &str) -> Result<bool> {
        let listing = self.ip(&["-o", "link", "show"])?;
        // Lines look like `7: flannel0: <...>` or `2: u0@if3: <...>`.
        Ok(listing.lines().any(|line| {
            line.split(": ")
                .nth(1)
                .map(|name| name.split('@').next() == Some(ifname))
                .unwrap_or(false)
        }))
    }

    /// The ids of the processes running inside the namespace (`ip netns pids`).
    pub fn pids(&self) -> Result<Vec<u32>> {
        let listing = host_exec_ok(&["ip", "netns", "pids", &self.name])?;
        Ok(listing
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect())
    }

    /// Terminates every process inside the namespace: SIGTERM, then SIGKILL after the grace.
    fn terminate_all(&self) {
        let signal_all = |signal: &str| {
            for pid in self.pids().unwrap_or_default() {
                // The process may have exited meanwhile; that is what we want anyway.
                let _ = send_signal(pid, signal);
            }
        };
        signal_all("TERM");
        let gone = |limit| {
            wait_until(limit, "processes in the namespace to exit", || {
                self.pids().map(|pids| pids.is_empty()).unwrap_or(true)
            })
            .is_ok()
        };
        if !gone(TERMINATE_GRACE) {
            signal_all("KILL");
            if !gone(TERMINATE_GRACE) {
                log::warn!("processes are still running in namespace {}", self.name);
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.terminate_all();
        let _serialized = netns_lock();
        if let Err(error) = host_exec_ok(&["ip", "netns", "del", &self.name]) {
            log::warn!("cannot delete namespace {}: {error}", self.name);
        }
    }
}

/// A process started inside a namespace by [`Netns::spawn`]; terminated on `Drop`
/// (SIGTERM, then SIGKILL after [`TERMINATE_GRACE`]).
///
/// Its stdout and stderr go to files that live as long as the guard.
#[derive(Debug)]
pub struct NsChild {
    child: Child,
    command: String,
    status: Option<ExitStatus>,
    output_dir: TempDir,
}

impl NsChild {
    const STDOUT: &'static str = "stdout";
    const STDERR: &'static str = "stderr";

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The command line it was started with, prefixed by the namespace.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Its exit status if it has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().map_err(|source| TestbedError::Io {
                what: format!("checking whether `{}` exited", self.command),
                source,
            })?;
        }
        Ok(self.status)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Waits at most `timeout` for it to exit; does not kill it when the timeout passes.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let what = format!("`{}` to exit", self.command);
        let mut failure = None;
        let status = wait_for(timeout, &what, || match self.try_wait() {
            Ok(status) => status,
            Err(error) => {
                failure = Some(error);
                None
            }
        });
        match failure {
            Some(error) => Err(error),
            None => status,
        }
    }

    /// Sends `signal` (a name such as `TERM`, `INT`, `HUP`) unless it has already exited.
    pub fn signal(&mut self, signal: &str) -> Result<()> {
        // Only signal a pid that has not been reaped: a reaped pid may belong to someone else.
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        send_signal(self.id(), signal)
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILL; returns how it exited.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.signal("TERM")?;
        match self.wait_timeout(grace) {
            Ok(status) => Ok(status),
            Err(TestbedError::Timeout { .. }) => {
                log::warn!(
                    "`{}` ignored SIGTERM for {grace:?}; killing it",
                    self.command
                );
                let _ = self.child.kill();
                let status = self.child.wait().map_err(|source| TestbedError::Io {
                    what: format!("waiting for killed `{}`", self.command),
                    source,
                })?;
                self.status = Some(status);
                Ok(status)
            }
            Err(error) => Err(error),
        }
    }

    /// The path of the file its stdout goes to.
    pub fn stdout_path(&self) -> PathBuf {
        self.output_dir.path().join(Self::STDOUT)
    }

    /// Everything it has written to stdout so far (lossy UTF-8).
    pub fn stdout(&self) -> String {
        self.read_output(Self::STDOUT)
    }

    /// Everything it has written to stderr so far (lossy UTF-8).
    pub fn stderr(&self) -> String {
        self.read_output(Self::STDERR)
    }

    fn read_output(&self, name: &str) -> String {
        fs::read(self.output_dir.path().join(name))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        if let Err(error) = self.terminate(TERMINATE_GRACE) {
            log::warn!("cannot terminate `{}`: {error}", self.command);
        }
    }
}

/// The underlay address of host `host`: `198.18.0.<host>`.
pub fn underlay_addr(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, host)
}

/// The underlay address of host `host` behind the router ([`Testbed::add_routed_host`]):
/// `198.19.0.<host>`.
pub fn routed_underlay_addr(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 0, host)
}

/// The IPv6 underlay address of host `host`: `fd00:198:18::<host>`.
pub fn underlay_addr6(host: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, u16::from(host))
}

/// Adds [`underlay_addr6`]`/64` to host `host`'s underlay interface (no duplicate address
/// detection, so it is usable at once): a dual-stack underlay.
pub fn add_underlay_addr6(netns: &Netns, host: u8) -> Result<()> {
    let addr = format!("{}/64", underlay_addr6(host));
    netns.ip(&["addr", "add", &addr, "dev", UNDERLAY_IFNAME, "nodad"])?;
    Ok(())
}

/// The address of host `host`'s weft device: `100.96.<host>.0`.
pub fn overlay_addr(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 96, host, 0)
}

/// The overlay subnet host `host` owns: `100.96.<host>.0/24`.
pub fn overlay_subnet(host: u8) -> String {
    format!("100.96.{host}.0/24")
}

/// The address of host `host`'s pod bridge `cni0`: `100.96.<host>.1`.
pub fn bridge_addr(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 96, host, 1)
}

/// The address of pod `pod` on host `host`: `100.96.<host>.<pod>`.
pub fn pod_addr(host: u8, pod: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 96, host, pod)
}

/// A pod: a namespace with `eth0` in its host's `cni0` bridge.
#[derive(Debug)]
pub struct Pod {
    host: u8,
    index: u8,
    netns: Netns,
}

impl Pod {
    /// The pod's namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The pod's address, `100.96.<host>.<index>`.
    pub fn address(&self) -> Ipv4Addr {
        pod_addr(self.host, self.index)
    }

    /// The last octet of the pod's address.
    pub fn index(&self) -> u8 {
        self.index
    }
}

/// A host: a namespace with the underlay interface `u0` (`198.18.0.<index>/24`) and,
/// once pods are added, a `cni0` bridge.
#[derive(Debug)]
pub struct Host {
    index: u8,
    underlay: Ipv4Addr,
    // Pods are dropped before their host.
    pods: Vec<Pod>,
    netns: Netns,
}

impl Host {
    /// The host's number `N`: underlay `198.18.0.N`, subnet `100.96.N.0/24`.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The host's namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The host's underlay address: `198.18.0.<index>`, or [`routed_underlay_addr`] for a
    /// host behind the router.
    pub fn underlay_addr(&self) -> Ipv4Addr {
        self.underlay
    }

    /// The address of the host's weft device, `100.96.<index>.0`.
    pub fn overlay_addr(&self) -> Ipv4Addr {
        overlay_addr(self.index)
    }

    /// The overlay subnet the host owns, `100.96.<index>.0/24`.
    pub fn subnet(&self) -> String {
        overlay_subnet(self.index)
    }

    /// The host's pods, in the order they were added.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The pod with address `100.96.<host>.<index>`.
    ///
    /// # Panics
    /// If there is no such pod (a bug in the test).
    pub fn pod(&self, index: u8) -> &Pod {
        self.pods
            .iter()
            .find(|pod| pod.index == index)
            .unwrap_or_else(|| panic!("host {} has no pod {index}", self.index))
    }
}

/// A set of hosts (and optionally a switch and pods) in network namespaces.
///
/// Dropping it removes every namespace, pods first, the switch last.
#[derive(Debug)]
pub struct Testbed {
    prefix: String,
    hosts: Vec<Host>,
    switch: Option<Netns>,
}

impl Testbed {
    /// Two hosts, 1 and 2, whose `u0` interfaces are the two ends of one veth pair.
    ///
    /// `prefix` starts every namespace name (keep it short and say what the test is).
    pub fn two_hosts(prefix: &str) -> Result<Self> {
        let first = Netns::new(&format!("{prefix}-h1"))?;
        let second = Netns::new(&format!("{prefix}-h2"))?;
        first.ip(&[
            "link",
            "add",
            UNDERLAY_IFNAME,
            "type",
            "veth",
            "peer",
            "name",
            UNDERLAY_IFNAME,
            "netns",
            second.name(),
        ])?;
        configure_underlay(&first, 1)?;
        configure_underlay(&second, 2)?;
        Ok(Self {
            prefix: prefix.to_owned(),
            hosts: vec![Host::new(1, first), Host::new(2, second)],
            switch: None,
        })
    }

    /// Hosts `1..=count` on a switch: a namespace with bridge `br0` and one veth per host.
    pub fn switched(prefix: &str, count: u8) -> Result<Self> {
        let switch = Netns::new(&format!("{prefix}-sw"))?;
        switch.ip(&["link", "add", SWITCH_BRIDGE, "type", "bridge"])?;
        switch.ip(&["link", "set", SWITCH_BRIDGE, "up"])?;
        let mut testbed = Self {
            prefix: prefix.to_owned(),
            hosts: Vec::new(),
            switch: Some(switch),
        };
        for index in 1..=count {
            testbed.add_host(index)?;
        }
        Ok(testbed)
    }

    /// Adds host `index` (underlay `198.18.0.<index>/24`) to the switch of a switched testbed.
    /// Any namespace that needs an underlay address (an etcd server on `.100`, an attacker)
    /// is added this way.
    pub fn add_host(&mut self, index: u8) -> Result<&Host> {
        let Some(switch) = &self.switch else {
            return Err(TestbedError::Invalid(format!(
                "host {index} cannot be added: the testbed has no switch (use Testbed::switched)"
            )));
        };
        if index == 0 || index == 255 || self.hosts.iter().any(|host| host.index == index) {
            return Err(TestbedError::Invalid(format!(
                "host index {index} is reserved or already in use"
            )));
        }
        let netns = Netns::new(&format!("{}-h{index}", self.prefix))?;
        plug_underlay(switch, &format!("p{index}"), SWITCH_BRIDGE, &netns)?;
        configure_underlay(&netns, index)?;
        if index != ROUTER_HOST && self.hosts.iter().any(|h| h.index == ROUTER_HOST) {
            route_to_routed_segment(&netns)?;
        }
        self.hosts.push(Host::new(index, netns));
        Ok(self.hosts.last().expect("a host was just pushed"))
    }

    /// Adds the router of a switched testbed, if it is not there yet: host [`ROUTER_HOST`]
    /// on the switch (`198.18.0.254`), forwarding, with a bridge [`ROUTED_BRIDGE`]
    /// (`198.19.0.254/24`) for the hosts behind it. Every host on the switch (also those
    /// added later) routes [`ROUTED_SEGMENT`] via `198.18.0.254`: its hosts are reachable,
    /// but not on the same L2 segment.
    pub fn add_router(&mut self) -> Result<&Host> {
        if !self.hosts.iter().any(|h| h.index == ROUTER_HOST) {
            self.add_host(ROUTER_HOST)?;
            let router = self.host(ROUTER_HOST).netns();
            router.sysctl("net.ipv4.ip_forward", "1")?;
            router.ip(&["link", "add", ROUTED_BRIDGE, "type", "bridge"])?;
            let gateway = format!("{}/24", routed_underlay_addr(ROUTER_HOST));
            router.ip(&["addr", "add", &gateway, "dev", ROUTED_BRIDGE])?;
            router.ip(&["link", "set", ROUTED_BRIDGE, "up"])?;
            for host in self.hosts.iter().filter(|h| h.index != ROUTER_HOST) {
                if u32::from(host.underlay) >> 8 == u32::from(underlay_addr(0)) >> 8 {
                    route_to_routed_segment(&host.netns)?;
                }
            }
        }
        Ok(self.host(ROUTER_HOST))
    }

    /// Adds host `index` behind the router (made first if needed, [`Testbed::add_router`]):
    /// its `u0` is `198.19.0.<index>/24` on the router's [`ROUTED_BRIDGE`], and it routes
    /// `198.18.0.0/24` via the router (`198.19.0.254`). Its overlay subnet is
    /// `100.96.<index>.0/24` as for any host.
    pub fn add_routed_host(&mut self, index: u8) -> Result<&Host> {
        if index == 0 || index >= ROUTER_HOST || self.hosts.iter().any(|h| h.index == index) {
            return Err(TestbedError::Invalid(format!(
                "host index {index} is reserved or already in use"
            )));
        }
        self.add_router()?;
        let netns = Netns::new(&format!("{}-h{index}", self.prefix))?;
        let router = self.host(ROUTER_HOST).netns();
        plug_underlay(router, &format!("r{index}"), ROUTED_BRIDGE, &netns)?;
        let mtu = UNDERLAY_MTU.to_string();
        let address = format!("{}/24", routed_underlay_addr(index));
        netns.ip(&["addr", "add", &address, "dev", UNDERLAY_IFNAME])?;
        netns.ip(&["link", "set", UNDERLAY_IFNAME, "mtu", &mtu, "up"])?;
        let gateway = routed_underlay_addr(ROUTER_HOST).to_string();
        netns.ip(&["route", "add", "198.18.0.0/24", "via", &gateway])?;
        self.hosts.push(Host {
            underlay: routed_underlay_addr(index),
            ..Host::new(index, netns)
        });
        Ok(self.hosts.last().expect("a host was just pushed"))
    }

    /// Adds pod `pod` (address `100.96.<host>.<pod>/24`) to host `host`, creating the host's
    /// `cni0` bridge (`100.96.<host>.1/24`) and enabling forwarding on the first call.
    ///
    /// `mtu` is the pod link's MTU; flannel gives pods the overlay device's MTU
    /// ([`UDP_OVERLAY_MTU`] for the UDP backend).
    pub fn add_pod(&mut self, host: u8, pod: u8, mtu: u32) -> Result<&Pod> {
        if !(2..=254).contains(&pod) {
            return Err(TestbedError::Invalid(format!(
                "pod index {pod} must be within 2..=254 (.1 is the bridge)"
            )));
        }
        let prefix = self.prefix.clone();
        let Some(owner) = self.hosts.iter_mut().find(|h| h.index == host) else {
            return Err(TestbedError::Invalid(format!("there is no host {host}")));
        };
        if owner.pods.iter().any(|existing| existing.index == pod) {
            return Err(TestbedError::Invalid(format!(
                "host {host} already has pod {pod}"
            )));
        }
        let host_ns = &owner.netns;
        if owner.pods.is_empty() && !host_ns.has_link(POD_BRIDGE)? {
            let bridge = format!("{}/24", bridge_addr(host));
            host_ns.ip(&["link", "add", POD_BRIDGE, "type", "bridge"])?;
            host_ns.ip(&["addr", "add", &bridge, "dev", POD_BRIDGE])?;
            host_ns.ip(&["link", "set", POD_BRIDGE, "up"])?;
            host_ns.sysctl("net.ipv4.ip_forward", "1")?;
        }
        let netns = Netns::new(&format!("{prefix}-h{host}-pod{pod}"))?;
        let address = format!("{}/24", pod_addr(host, pod));
        plug_into_bridge(
            host_ns,
            POD_BRIDGE,
            &format!("veth{pod}"),
            &netns,
            &address,
            None,
            mtu,
        )?;
        let gateway = bridge_addr(host).to_string();
        netns.ip(&["route", "add", "default", "via", &gateway])?;
        owner.pods.push(Pod {
            host,
            index: pod,
            netns,
        });
        Ok(owner.pods.last().expect("a pod was just pushed"))
    }

    /// Host `index`.
    ///
    /// # Panics
    /// If there is no such host (a bug in the test).
    pub fn host(&self, index: u8) -> &Host {
        self.hosts
            .iter()
            .find(|host| host.index == index)
            .unwrap_or_else(|| panic!("the testbed has no host {index}"))
    }

    /// All hosts, in the order they were added.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The switch namespace, if the testbed is switched.
    pub fn switch(&self) -> Option<&Netns> {
        self.switch.as_ref()
    }
}

impl Host {
    fn new(index: u8, netns: Netns) -> Self {
        Self {
            index,
            underlay: underlay_addr(index),
            pods: Vec::new(),
            netns,
        }
    }
}

/// Routes [`ROUTED_SEGMENT`] via the router's switch address in `netns`.
fn route_to_routed_segment(netns: &Netns) -> Result<()> {
    let router = underlay_addr(ROUTER_HOST).to_string();
    netns.ip(&["route", "add", ROUTED_SEGMENT, "via", &router])?;
    Ok(())
}

/// Gives `netns` its underlay interface: a veth whose end `port` stays in `hub` (the switch or
/// the router), at the underlay MTU, in `hub`'s bridge `bridge`.
fn plug_underlay(hub: &Netns, port: &str, bridge: &str, netns: &Netns) -> Result<()> {
    hub.ip(&[
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        UNDERLAY_IFNAME,
        "netns",
        netns.name(),
    ])?;
    let mtu = UNDERLAY_MTU.to_string();
    hub.ip(&["link", "set", port, "mtu", &mtu, "master", bridge, "up"])?;
    Ok(())
}

/// Gives `u0` in `netns` the address `198.18.0.<index>/24` and brings it up.
fn configure_underlay(netns: &Netns, index: u8) -> Result<()> {
    let address = format!("{}/24", underlay_addr(index));
    let mtu = UNDERLAY_MTU.to_string();
    netns.ip(&["addr", "add", &address, "dev", UNDERLAY_IFNAME])?;
    netns.ip(&["link", "set", UNDERLAY_IFNAME, "mtu", &mtu, "up"])?;
    Ok(())
}

/// One `[[peer]]` entry of a weft configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's overlay subnet, e.g. `100.96.2.0/24`.
    pub subnet: String,
    /// The peer's underlay address, `IP` or `IP:PORT`.
    pub endpoint: String,
}

/// The `[engine]` section of a weft configuration; only the keys that are set are written,
/// and no section at all when none is (the engine's defaults).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineConfig {
    /// `batch`: packets per `recvmmsg`/`sendmmsg` (1..=64).
    pub batch: Option<u32>,
    /// `workers`: worker threads, each with its own device queue and socket.
    pub workers: Option<u32>,
    /// `offload`: `"auto"` or `"off"`.
    pub offload: Option<String>,
}

impl EngineConfig {
    /// With `batch = batch`.
    pub fn batch(mut self, batch: u32) -> Self {
        self.batch = Some(batch);
        self
    }

    /// With `workers = workers`.
    pub fn workers(mut self, workers: u32) -> Self {
        self.workers = Some(workers);
        self
    }

    /// With `offload = "<mode>"` (`auto` or `off`).
    pub fn offload(mut self, mode: &str) -> Self {
        self.offload = Some(mode.to_owned());
        self
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.batch.is_none() && self.workers.is_none() && self.offload.is_none()
    }

    /// The section as TOML (with a leading blank line), or nothing when no key is set.
    pub fn to_toml(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        let mut text = "\n[engine]\n".to_owned();
        if let Some(batch) = self.batch {
            text.push_str(&format!("batch = {batch}\n"));
        }
        if let Some(workers) = self.workers {
            text.push_str(&format!("workers = {workers}\n"));
        }
        if let Some(offload) = &self.offload {
            text.push_str(&format!("offload = {}\n", toml_string(offload)));
        }
        text
    }
}

/// A weft configuration file's contents, in the shape `weft run --config` reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeftConfig {
    /// `backend`, e.g. `udp`.
    pub backend: String,
    /// `network`, the overlay network, e.g. `100.96.0.0/16`.
    pub network: String,
    /// `[device] name`.
    pub device_name: String,
    /// `[device] address`.
    pub device_address: Ipv4Addr,
    /// `[listen] address`.
    pub listen_address: Ipv4Addr,
    /// `[listen] port`.
    pub listen_port: u16,
    /// The `[[peer]]` entries.
    pub peers: Vec<PeerConfig>,
    /// The `[engine]` section (empty: the engine's defaults).
    pub engine: EngineConfig,
}

impl WeftConfig {
    /// The standard UDP-backend configuration of host `host` with static routes to `peers`
    /// (host numbers): device `flannel0` at `100.96.<host>.0`, listening on
    /// `198.18.0.<host>:8285`, one `[[peer]]` per peer host.
    pub fn udp(host: u8, peers: &[u8]) -> Self {
        Self {
            backend: "udp".to_owned(),
            network: OVERLAY_NETWORK.to_owned(),
            device_name: DEFAULT_DEVICE.to_owned(),
            device_address: overlay_addr(host),
            listen_address: underlay_addr(host),
            listen_port: UDP_PORT,
            peers: peers
                .iter()
                .map(|&peer| PeerConfig {
                    subnet: overlay_subnet(peer),
                    endpoint: underlay_addr(peer).to_string(),
                })
                .collect(),
            engine: EngineConfig::default(),
        }
    }

    /// The same configuration with the `[engine]` section `engine`.
    pub fn with_engine(mut self, engine: EngineConfig) -> Self {
        self.engine = engine;
        self
    }

    /// The configuration as TOML text.
    pub fn to_toml(&self) -> String {
        let mut text = format!(
            "backend = {}\nnetwork = {}\n\n[device]\nname = {}\naddress = {}\n\n\
             [listen]\naddress = {}\nport = {}\n",
            toml_string(&self.backend),
            toml_string(&self.network),
            toml_string(&self.device_name),
            toml_string(&self.device_address.to_string()),
            toml_string(&self.listen_address.to_string()),
            self.listen_port,
        );
        text.push_str(&self.engine.to_toml());
        for peer in &self.peers {
            text.push_str(&format!(
                "\n[[peer]]\nsubnet = {}\nendpoint = {}\n",
                toml_string(&peer.subnet),
                toml_string(&peer.endpoint),
            ));
        }
        text
    }

    /// Writes the configuration to a fresh temporary file.
    pub fn write(&self) -> Result<ConfigFile> {
        ConfigFile::new(&self.to_toml())
    }
}

/// `value` as a TOML basic string.
fn toml_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// A configuration file `weft.toml` in its own temporary directory, removed on `Drop`.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    // Keeps the directory (and the file) alive.
    _dir: TempDir,
}

impl ConfigFile {
    /// Writes `contents` verbatim (it need not be valid: tests feed bad configurations).
    pub fn new(contents: &str) -> Result<Self> {
        let dir = TempDir::new("weft-config")?;
        let path = dir.write("weft.toml", contents)?;
        Ok(Self { path, _dir: dir })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The counters printed by `weft stats`, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsOutput {
    counters: BTreeMap<String, u64>,
}

impl StatsOutput {
    /// Parses `name value` lines; `None` if a non-empty line has another shape.
    pub fn parse(text: &str) -> Option<Self> {
        let mut counters = BTreeMap::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let mut fields = line.split_whitespace();
            let (Some(name), Some(value), None) = (fields.next(), fields.next(), fields.next())
            else {
                return None;
            };
            counters.insert(name.to_owned(), value.parse().ok()?);
        }
        Some(Self { counters })
    }

    /// The counter `name`, if weft reported it.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counters.get(name).copied()
    }

    /// All counters, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counters
            .iter()
            .map(|(name, value)| (name.as_str(), *value))
    }
}

impl fmt::Display for StatsOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in self.iter() {
            writeln!(f, "{name} {value}")?;
        }
        Ok(())
    }
}

/// One route as listed by `weft peer list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRoute {
    /// The overlay subnet.
    pub subnet: String,
    /// The underlay endpoint, as weft prints it.
    pub endpoint: String,
}

/// A `weft run` daemon inside a host namespace; stopped (SIGTERM) on `Drop`.
#[derive(Debug)]
pub struct WeftDaemon {
    exe: PathBuf,
    device: String,
    netns: String,
    child: NsChild,
}

impl WeftDaemon {
    /// Starts `exe run --config config` inside `netns` and waits (at most [`READY_TIMEOUT`])
    /// until `weft stats` answers on the control socket of `device`.
    pub fn start(exe: &Path, netns: &Netns, config: &Path, device: &str) -> Result<Self> {
        Self::start_with_env(exe, netns, config, device, &[])
    }

    /// Like [`WeftDaemon::start`], with the environment variables `env` (name, value) set for
    /// the daemon, e.g. the fault injections `WEFT_FAULT_REFUSE_TUN_OFFLOAD=1` and
    /// `WEFT_FAULT_REFUSE_TUN_GSO_WRITE=1`.
    pub fn start_with_env(
        exe: &Path,
        netns: &Netns,
        config: &Path,
        device: &str,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let exe_arg = exe.to_string_lossy();
        let config_arg = config.to_string_lossy();
        let child = netns.spawn_with_env(&[&exe_arg, "run", "--config", &config_arg], env)?;
        let mut daemon = Self {
            exe: exe.to_owned(),
            device: device.to_owned(),
            netns: netns.name().to_owned(),
            child,
        };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let what = format!(
            "weft in namespace {} to answer `weft stats` (device {})",
            self.netns, self.device
        );
        let mut exited = None;
        let ready = wait_until(READY_TIMEOUT, &what, || {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    exited = Some(status);
                    return true;
                }
                Ok(None) => {}
                Err(_) => return false,
            }
            self.control(&["stats"])
                .map(|output| output.status.success())
                .unwrap_or(false)
        });
        if let Some(status) = exited {
            return Err(TestbedError::DaemonExited {
                netns: self.netns.clone(),
                status,
                log: self.log(),
            });
        }
        ready.map_err(|error| match error {
            TestbedError::Timeout { what, waited } => TestbedError::Timeout {
                what: format!("{what}; its log so far:\n{}", self.log()),
                waited,
            },
            other => other,
        })
    }

    /// The namespace the daemon runs in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The daemon's process.
    pub fn process(&mut self) -> &mut NsChild {
        &mut self.child
    }

    /// Runs `weft <args>` inside the daemon's namespace (adding `--device` unless it is the
    /// default) and returns its output whatever its status.
    pub fn control(&self, args: &[&str]) -> Result<Output> {
        let exe = self.exe.to_string_lossy();
        let mut argv = vec![exe.as_ref()];
        argv.extend_from_slice(args);
        if self.device != DEFAULT_DEVICE {
            argv.extend_from_slice(&["--device", &self.device]);
        }
        let description = format!("[{}] {}", self.netns, describe(&argv));
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns]).args(&argv);
        run_captured(command, &description, COMMAND_TIMEOUT)
    }

    fn control_ok(&self, args: &[&str]) -> Result<String> {
        let output = self.control(args)?;
        require_success(&format!("[{}] weft {}", self.netns, args.join(" ")), output)
    }

    /// The daemon's counters (`weft stats`).
    pub fn stats(&self) -> Result<StatsOutput> {
        let text = self.control_ok(&["stats"])?;
        StatsOutput::parse(&text).ok_or_else(|| TestbedError::UnexpectedOutput {
            command: format!("[{}] weft stats", self.netns),
            output: text,
        })
    }

    /// Adds a route (`weft peer add --subnet <subnet> --endpoint <endpoint>`).
    pub fn peer_add(&self, subnet: &str, endpoint: &str) -> Result<()> {
        self.control_ok(&["peer", "add", "--subnet", subnet, "--endpoint", endpoint])
            .map(drop)
    }

    /// Removes a route (`weft peer del --subnet <subnet>`).
    pub fn peer_del(&self, subnet: &str) -> Result<()> {
        self.control_ok(&["peer", "del", "--subnet", subnet])
            .map(drop)
    }

    /// The routing table (`weft peer list`).
    pub fn peer_list(&self) -> Result<Vec<PeerRoute>> {
        let text = self.control_ok(&["peer", "list"])?;
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let mut fields = line.split_whitespace();
                match (fields.next(), fields.next(), fields.next()) {
                    (Some(subnet), Some(endpoint), None) => Ok(PeerRoute {
                        subnet: subnet.to_owned(),
                        endpoint: endpoint.to_owned(),
                    }),
                    _ => Err(TestbedError::UnexpectedOutput {
                        command: format!("[{}] weft peer list", self.netns),
                        output: text.clone(),
                    }),
                }
            })
            .collect()
    }

    /// Sends SIGTERM and waits at most `timeout` for the daemon to exit; returns how it exited.
    /// (It is killed with SIGKILL on `Drop` if it does not.)
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.child.signal("TERM")?;
        self.child.wait_timeout(timeout)
    }

    /// Everything the daemon has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        let mut log = self.child.stderr();
        let stdout = self.child.stdout();
        if !stdout.is_empty() {
            log.push_str("\n--- stdout ---\n");
            log.push_str(&stdout);
        }
        log
    }
}

/// The outcome of [`ping`].
#[derive(Clone, Debug, PartialEq)]
pub struct PingSummary {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Echo replies received.
    pub received: u32,
    /// Average round-trip time, if any reply came back.
    pub rtt_avg_ms: Option<f64>,
    /// Everything ping printed (stdout and stderr).
    pub output: String,
}

impl PingSummary {
    /// Whether at least one request was sent and every one was answered.
    pub fn all_received(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted
    }

    /// Parses ping's summary lines; counts are 0 when there is no summary.
    pub fn parse(output: &str) -> Self {
        let mut summary = Self {
            transmitted: 0,
            received: 0,
            rtt_avg_ms: None,
            output: output.to_owned(),
        };
        for line in output.lines() {
            if let Some((sent, rest)) = line.split_once(" packets transmitted, ") {
                summary.transmitted = sent.trim().parse().unwrap_or(0);
                summary.received = rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            } else if let Some((_, values)) = line.split_once(" = ") {
                if line.starts_with("rtt") || line.starts_with("round-trip") {
                    summary.rtt_avg_ms = values.split('/').nth(1).and_then(|v| v.parse().ok());
                }
            }
        }
        summary
    }
}

impl fmt::Display for PingSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} replies", self.received, self.transmitted)?;
        if let Some(avg) = self.rtt_avg_ms {
            write!(f, ", average round trip {avg:.3} ms")?;
        }
        Ok(())
    }
}

/// Pings `destination` from `netns` `count` times, 0.2 s apart, waiting at most 1 s for the
/// last reply. Losses are reported in the summary, not as an error.
pub fn ping(netns: &Netns, destination: impl Into<IpAddr>, count: u32) -> Result<PingSummary> {
    let count_arg = count.to_string();
    let destination = destination.into().to_string();
    let argv = [
        "ping",
        "-n",
        "-c",
        &count_arg,
        "-i",
        "0.2",
        "-W",
        "1",
        &destination,
    ];
    let timeout = Duration::from_millis(200) * count + Duration::from_secs(10);
    let output = netns.exec_timeout(&argv, timeout)?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok(PingSummary::parse(&text))
}

/// The SHA-256 of the file at `path` as lowercase hex, computed by `sha256sum` inside `netns`.
pub fn sha256_file(netns: &Netns, path: &Path) -> Result<String> {
    let path_arg = path.to_string_lossy();
    let text = netns.exec_ok(&["sha256sum", &path_arg])?;
    text.split_whitespace()
        .next()
        .filter(|hash| hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
        .ok_or_else(|| TestbedError::UnexpectedOutput {
            command: format!("sha256sum {path_arg}"),
            output: text.clone(),
        })
}

/// Writes `bytes` bytes from `/dev/urandom` to the file `name` in `dir`.
pub fn random_file(dir: &TempDir, name: &str, bytes: u64) -> Result<PathBuf> {
    let path = dir.path().join(name);
    let io_error = |source| TestbedError::Io {
        what: format!("writing {bytes} random bytes to {}", path.display()),
        source,
    };
    let mut source = File::open("/dev/urandom").map_err(io_error)?;
    let mut file = File::create(&path).map_err(io_error)?;
    let copied = io::copy(&mut io::Read::take(&mut source, bytes), &mut file).map_err(io_error)?;
    if copied != bytes {
        return Err(io_error(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("/dev/urandom gave only {copied} bytes"),
        )));
    }
    Ok(path)
}

/// The outcome of [`tcp_transfer`].
#[derive(Clone, Debug, PartialEq)]
pub struct Transfer {
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes the receiver got.
    pub bytes_received: u64,
    /// From the sender's start until the receiver had everything.
    pub elapsed: Duration,
    /// SHA-256 of the data sent.
    pub sent_sha256: String,
    /// SHA-256 of the data received, computed by the receiver.
    pub received_sha256: String,
}

impl Transfer {
    /// Whether everything arrived unchanged.
    pub fn intact(&self) -> bool {
        self.bytes_sent == self.bytes_received && self.sent_sha256 == self.received_sha256
    }

    /// Goodput in megabits per second.
    pub fn megabits_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64().max(1e-9);
        self.bytes_received as f64 * 8.0 / seconds / 1e6
    }
}

impl fmt::Display for Transfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} bytes in {:.3} s ({:.1} Mbit/s), sha256 {}",
            self.bytes_received,
            self.bytes_sent,
            self.elapsed.as_secs_f64(),
            self.megabits_per_second(),
            if self.intact() { "matches" } else { "DIFFERS" }
        )
    }
}

/// Sends `bytes` random bytes over one TCP connection from `sender` to `destination:port`,
/// where `receiver` listens with `nc -l`; the receiver hashes what it got with `sha256sum`.
///
/// The whole transfer is bounded by `timeout`. Corruption is reported in the [`Transfer`]
/// ([`Transfer::intact`]), not as an error; a stalled or refused connection is an error.
pub fn tcp_transfer(
    sender: &Netns,
    receiver: &Netns,
    destination: impl Into<IpAddr>,
    port: u16,
    bytes: u64,
    timeout: Duration,
) -> Result<Transfer> {
    let mut transfers = tcp_transfers(sender, receiver, destination, &[port], bytes, timeout)?;
    Ok(transfers.remove(0))
}

/// Runs one TCP transfer per port of `ports` at the same time, each of `bytes` random bytes
/// of its own (so data that lands in the wrong flow shows up as a wrong hash), from `sender`
/// to `destination:<port>` where `receiver` listens with `nc -l`. Returns the transfers in
/// the order of `ports`.
///
/// All listeners are up before the first sender starts; everything is bounded by `timeout`.
/// As with [`tcp_transfer`], corruption is reported in the [`Transfer`]s; a flow that does not
/// finish in time or a failing `nc` is an error that names every unfinished flow with the
/// bytes it had received so far.
pub fn tcp_transfers(
    sender: &Netns,
    receiver: &Netns,
    destination: impl Into<IpAddr>,
    ports: &[u16],
    bytes: u64,
    timeout: Duration,
) -> Result<Vec<Transfer>> {
    let destination: IpAddr = destination.into();
    // nc listens on IPv4 unless told otherwise.
    let family = if destination.is_ipv6() { "-6" } else { "-4" };
    let dir = TempDir::new("weft-transfers")?;
    let mut data = Vec::with_capacity(ports.len());
    for port in ports {
        let path = random_file(&dir, &format!("data-{port}"), bytes)?;
        let sha256 = sha256_file(sender, &path)?;
        data.push((path, sha256));
    }

    let mut listeners = Vec::with_capacity(ports.len());
    for port in ports {
        listeners.push(receiver.spawn(&["nc", family, "-d", "-l", &port.to_string()])?);
    }
    let mut listening = Vec::new();
    wait_until(
        COMMAND_TIMEOUT,
        &format!(
            "{} nc listeners on TCP ports {ports:?} in {}",
            ports.len(),
            receiver.name()
        ),
        || {
            if listeners.iter_mut().any(|listener| !listener.is_running()) {
                return true;
            }
            let Ok(output) = receiver.exec(&["ss", "-H", "-l", "-t", "-n"]) else {
                return false;
            };
            let text = String::from_utf8_lossy(&output.stdout);
            listening = text
                .lines()
                .filter_map(|line| line.split_whitespace().nth(3))
                .filter_map(|local| local.rsplit(':').next()?.parse::<u16>().ok())
                .collect();
            ports.iter().all(|port| listening.contains(port))
        },
    )?;
    for listener in &mut listeners {
        if let Some(status) = listener.try_wait()? {
            return Err(TestbedError::CommandFailed {
                command: listener.command().to_owned(),
                status,
                stderr: listener.stderr().trim().to_owned(),
            });
        }
    }

    let start = Instant::now();
    let destination_arg = destination.to_string();
    let mut senders = Vec::with_capacity(ports.len());
    for (port, (path, _)) in ports.iter().zip(&data) {
        senders.push(sender.spawn_with_stdin(
            &["nc", "-N", "-w", "10", &destination_arg, &port.to_string()],
            path,
        )?);
    }
    let mut finished: Vec<Option<Duration>> = vec![None; ports.len()];
    let waited = wait_until(
        timeout,
        &format!("{} concurrent TCP transfers to finish", ports.len()),
        || {
            for (index, done) in finished.iter_mut().enumerate() {
                if done.is_none() && !senders[index].is_running() && !listeners[index].is_running()
                {
                    *done = Some(start.elapsed());
                }
            }
            finished.iter().all(Option::is_some)
        },
    );
    if let Err(TestbedError::Timeout { what, waited }) = waited {
        let pending: Vec<String> = ports
            .iter()
            .zip(&finished)
            .zip(&listeners)
            .filter(|((_, done), _)| done.is_none())
            .map(|((port, _), listener)| {
                let received = fs::metadata(listener.stdout_path()).map_or(0, |m| m.len());
                format!("port {port}: {received} of {bytes} bytes")
            })
            .collect();
        return Err(TestbedError::Timeout {
            what: format!(
                "{what} ({} of {} unfinished: {})",
                pending.len(),
                ports.len(),
                pending.join(", ")
            ),
            waited,
        });
    }

    let mut transfers = Vec::with_capacity(ports.len());
    for index in 0..ports.len() {
        for child in [&mut senders[index], &mut listeners[index]] {
            let status = child.try_wait()?.expect("the flow has finished");
            if !status.success() {
                return Err(TestbedError::CommandFailed {
                    command: child.command().to_owned(),
                    status,
                    stderr: child.stderr().trim().to_owned(),
                });
            }
        }
        let received = listeners[index].stdout_path();
        let bytes_received = fs::metadata(&received)
            .map_err(|source| TestbedError::Io {
                what: format!("reading the size of {}", received.display()),
                source,
            })?
            .len();
        transfers.push(Transfer {
            bytes_sent: bytes,
            bytes_received,
            elapsed: finished[index].expect("the flow has finished"),
            sent_sha256: data[index].1.clone(),
            received_sha256: sha256_file(receiver, &received)?,
        });
    }
    Ok(transfers)
}

// ---------------------------------------------------------------------------------------------
// VXLAN: weft's vxlan configuration, the kernel's vxlan device as a peer, L2 pods, captures.
// ---------------------------------------------------------------------------------------------

/// The VXLAN backend's UDP port: Linux's and flannel's default (IANA's is 4789).
pub const VXLAN_PORT: u16 = 8472;
/// The VXLAN network identifier flannel uses by default.
pub const VXLAN_VNI: u32 = 1;
/// The device flanneld programs for VNI 1; weft's L3 device in the tests has the same name.
pub const VXLAN_DEVICE: &str = "flannel.1";
/// The MTU of a vxlan device over the IPv4 underlay, and of the pods behind it: the underlay
/// MTU minus the outer IPv4 (20), UDP (8) and VXLAN (8) headers and the inner Ethernet
/// header (14).
pub const VXLAN_OVERLAY_MTU: u32 = UNDERLAY_MTU - 50;
/// The bridge of the L2 ("vxlan + bridge") topology inside each host.
pub const L2_BRIDGE: &str = "br0";
/// The prefix length of the L2 topology's single pod subnet, `100.96.0.0/24`.
pub const L2_PREFIX_LEN: u8 = 24;

/// The VTEP MAC the tests give host `host`: `02:00:00:00:<host>:00` (locally administered,
/// unicast), as in TESTBED.md's example.
pub fn vtep_mac(host: u8) -> String {
    format!("02:00:00:00:{host:02x}:00")
}

/// The address of pod `pod` in the L2 topology's single subnet: `100.96.0.<pod>`.
pub fn l2_pod_addr(pod: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 96, 0, pod)
}

/// The MAC the tests give pod `pod` of the L2 topology: `02:00:00:aa:00:<pod>`.
pub fn l2_pod_mac(pod: u8) -> String {
    format!("02:00:00:aa:00:{pod:02x}")
}

/// Whether a VNI carries IP packets (TUN, like `flannel.1`) or Ethernet frames (TAP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VxlanMode {
    /// `mode = "l3"`: a TUN; weft adds and strips the inner Ethernet header.
    L3,
    /// `mode = "l2"`: a TAP, usually enslaved to a bridge; weft keeps an FDB.
    L2,
}

impl VxlanMode {
    /// The value of the `mode` key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::L3 => "l3",
            Self::L2 => "l2",
        }
    }
}

/// One `[[peer]]` entry of a VXLAN configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanPeerConfig {
    /// `subnet`: the peer's overlay subnet (L3); `None` makes the peer a VTEP that gets
    /// flooded frames (L2).
    pub subnet: Option<String>,
    /// `endpoint`: the peer's underlay address, `IP` or `IP:PORT`.
    pub endpoint: String,
    /// `vtep_mac`: the peer's VTEP MAC (required in L3).
    pub vtep_mac: Option<String>,
}

/// A VXLAN-backend configuration file's contents, in the shape `weft run --config` reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanConfig {
    /// `network`, the overlay network.
    pub network: String,
    /// `[device] name`.
    pub device_name: String,
    /// `[device] address` (required in L3, usually absent in L2).
    pub device_address: Option<Ipv4Addr>,
    /// `[device] bridge`: the bridge the TAP is enslaved to (L2).
    pub bridge: Option<String>,
    /// `[listen] address`.
    pub listen_address: Ipv4Addr,
    /// `[listen] port`.
    pub listen_port: u16,
    /// `[vxlan] vni`.
    pub vni: u32,
    /// `[vxlan] mode`.
    pub mode: VxlanMode,
    /// `[vxlan] vtep_mac`; `None` lets weft generate one and keep it in `mac_file`.
    pub vtep_mac: Option<String>,
    /// `[vxlan] mac_file`; `None` leaves weft's default.
    pub mac_file: Option<PathBuf>,
    /// The `[[peer]]` entries.
    pub peers: Vec<VxlanPeerConfig>,
    /// The `[engine]` section (empty: the engine's defaults).
    pub engine: EngineConfig,
}

impl VxlanConfig {
    /// The L3 configuration of host `host` the way flannel's vxlan backend sets it up: TUN
    /// [`VXLAN_DEVICE`] at `100.96.<host>.0`, VTEP MAC [`vtep_mac`]`(host)`, listening on
    /// `198.18.0.<host>:8472`, VNI 1, and one `[[peer]]` per host of `peers` with its subnet,
    /// underlay address and VTEP MAC.
    pub fn l3(host: u8, peers: &[u8]) -> Self {
        Self {
            network: OVERLAY_NETWORK.to_owned(),
            device_name: VXLAN_DEVICE.to_owned(),
            device_address: Some(overlay_addr(host)),
            bridge: None,
            listen_address: underlay_addr(host),
            listen_port: VXLAN_PORT,
            vni: VXLAN_VNI,
            mode: VxlanMode::L3,
            vtep_mac: Some(vtep_mac(host)),
            mac_file: None,
            peers: peers
                .iter()
                .map(|&peer| VxlanPeerConfig {
                    subnet: Some(overlay_subnet(peer)),
                    endpoint: underlay_addr(peer).to_string(),
                    vtep_mac: Some(vtep_mac(peer)),
                })
                .collect(),
            engine: EngineConfig::default(),
        }
    }

    /// The L2 configuration of host `host`: TAP `device` without an address, enslaved to
    /// `bridge`, VTEP MAC [`vtep_mac`]`(host)`, listening on `198.18.0.<host>:8472`, VNI 1,
    /// and every host of `peers` as a VTEP (no subnet) that gets flooded frames.
    pub fn l2(host: u8, device: &str, bridge: &str, peers: &[u8]) -> Self {
        Self {
            network: OVERLAY_NETWORK.to_owned(),
            device_name: device.to_owned(),
            device_address: None,
            bridge: Some(bridge.to_owned()),
            listen_address: underlay_addr(host),
            listen_port: VXLAN_PORT,
            vni: VXLAN_VNI,
            mode: VxlanMode::L2,
            vtep_mac: Some(vtep_mac(host)),
            mac_file: None,
            peers: peers
                .iter()
                .map(|&peer| VxlanPeerConfig {
                    subnet: None,
                    endpoint: underlay_addr(peer).to_string(),
                    vtep_mac: None,
                })
                .collect(),
            engine: EngineConfig::default(),
        }
    }

    /// The same configuration with the `[engine]` section `engine`.
    pub fn with_engine(mut self, engine: EngineConfig) -> Self {
        self.engine = engine;
        self
    }

    /// The configuration as TOML text.
    pub fn to_toml(&self) -> String {
        let mut text = format!(
            "backend = \"vxlan\"\nnetwork = {}\n\n[device]\nname = {}\n",
            toml_string(&self.network),
            toml_string(&self.device_name),
        );
        if let Some(address) = self.device_address {
            text.push_str(&format!(
                "address = {}\n",
                toml_string(&address.to_string())
            ));
        }
        if let Some(bridge) = &self.bridge {
            text.push_str(&format!("bridge = {}\n", toml_string(bridge)));
        }
        text.push_str(&format!(
            "\n[listen]\naddress = {}\nport = {}\n\n[vxlan]\nvni = {}\nmode = {}\n",
            toml_string(&self.listen_address.to_string()),
            self.listen_port,
            self.vni,
            toml_string(self.mode.as_str()),
        ));
        if let Some(mac) = &self.vtep_mac {
            text.push_str(&format!("vtep_mac = {}\n", toml_string(mac)));
        }
        if let Some(path) = &self.mac_file {
            text.push_str(&format!(
                "mac_file = {}\n",
                toml_string(&path.to_string_lossy())
            ));
        }
        text.push_str(&self.engine.to_toml());
        for peer in &self.peers {
            text.push_str("\n[[peer]]\n");
            if let Some(subnet) = &peer.subnet {
                text.push_str(&format!("subnet = {}\n", toml_string(subnet)));
            }
            text.push_str(&format!("endpoint = {}\n", toml_string(&peer.endpoint)));
            if let Some(mac) = &peer.vtep_mac {
                text.push_str(&format!("vtep_mac = {}\n", toml_string(mac)));
            }
        }
        text
    }

    /// Writes the configuration to a fresh temporary file.
    pub fn write(&self) -> Result<ConfigFile> {
        ConfigFile::new(&self.to_toml())
    }
}

/// Programs the kernel's `flannel.1` inside host `host`'s namespace exactly the way flanneld
/// does (TESTBED.md, "The kernel as a peer"): a vxlan device with VNI 1 on `u0` from
/// `198.18.0.<host>`, destination port 8472, no learning, MAC `mac`, MTU
/// [`VXLAN_OVERLAY_MTU`], up, with the address `100.96.<host>.0/32`. Remote hosts are added
/// with [`add_kernel_flannel_peer`]. The veth keeps the kernel's offloads (checksum and
/// segmentation offload on): the kernel then sends its TSO frames whole and with partial
/// inner checksums, as it does between containers on one machine, and weft must take them.
pub fn add_kernel_flannel_device(netns: &Netns, host: u8, mac: &str) -> Result<()> {
    let address = format!("{}/32", overlay_addr(host));
    let local = IpAddr::V4(underlay_addr(host));
    add_kernel_vxlan(netns, VXLAN_DEVICE, local, mac, VXLAN_OVERLAY_MTU, &address)
}

/// A kernel vxlan device `name` as flanneld makes one: VNI 1 on `u0` from `local`, port
/// 8472, no learning, MAC `mac`, MTU `mtu`, up, with `address` (`IP/len`).
fn add_kernel_vxlan(
    netns: &Netns,
    name: &str,
    local: IpAddr,
    mac: &str,
    mtu: u32,
    address: &str,
) -> Result<()> {
    let vni = VXLAN_VNI.to_string();
    let local = local.to_string();
    let port = VXLAN_PORT.to_string();
    let mtu = mtu.to_string();
    netns.ip(&[
        "link",
        "add",
        name,
        "type",
        "vxlan",
        "id",
        &vni,
        "local",
        &local,
        "dev",
        UNDERLAY_IFNAME,
        "dstport",
        &port,
        "nolearning",
    ])?;
    netns.ip(&["link", "set", name, "address", mac, "mtu", &mtu, "up"])?;
    netns.ip(&["addr", "add", address, "dev", name, "nodad"])?;
    Ok(())
}

/// The device flanneld programs for VNI 1's IPv6 VTEP on a dual-stack network.
pub const VXLAN_V6_DEVICE: &str = "flannel-v6.1";

/// Programs the kernel's `flannel-v6.1` inside host `host`'s namespace as flanneld does on a
/// dual-stack vxlan network: a vxlan device with VNI 1 on `u0` from [`underlay_addr6`]
/// (which must be assigned, see [`add_underlay_addr6`]), port 8472, no learning, MAC `mac`,
/// MTU 1430 (the underlay's minus 70), up, with the lease's IPv6 network address `v6`/128.
/// Remote hosts are added with [`add_kernel_flannel_v6_peer`].
pub fn add_kernel_flannel_v6_device(
    netns: &Netns,
    host: u8,
    mac: &str,
    v6: Ipv6Addr,
) -> Result<()> {
    let local = IpAddr::V6(underlay_addr6(host));
    let address = format!("{v6}/128");
    add_kernel_vxlan(
        netns,
        VXLAN_V6_DEVICE,
        local,
        mac,
        UNDERLAY_MTU - 70,
        &address,
    )
}

/// Adds to the kernel's `flannel-v6.1` in `netns` what flanneld programs for a remote host's
/// IPv6 lease: the route `<subnet6> via <gateway> onlink` (the gateway is the subnet's
/// network address), the permanent neighbour entry for it with `peer_mac`, and the FDB entry
/// `<peer_mac> dst <endpoint>`.
pub fn add_kernel_flannel_v6_peer(
    netns: &Netns,
    subnet6: &str,
    gateway: Ipv6Addr,
    endpoint: Ipv6Addr,
    peer_mac: &str,
) -> Result<()> {
    let (gateway, endpoint) = (IpAddr::V6(gateway), IpAddr::V6(endpoint));
    let via = (gateway, endpoint, peer_mac);
    program_kernel_peer(
        netns,
        VXLAN_V6_DEVICE,
        subnet6,
        via,
        KernelNeighbour::Permanent,
    )
}

/// How the kernel's `flannel.1` learns a remote host's VTEP MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelNeighbour {
    /// flanneld's way: `ip neigh add <subnet .0> lladdr <MAC> nud permanent`.
    Permanent,
    /// No neighbour entry: the kernel resolves the gateway with ARP, which reaches the remote
    /// host through an all-zero flooding entry (`bridge fdb append 00:00:00:00:00:00 ...`).
    Arp,
}

/// Adds to the kernel's `flannel.1` in `netns` what flanneld programs for remote host `peer`
/// with VTEP MAC `peer_mac`: the route `100.96.<peer>.0/24 via 100.96.<peer>.0 onlink`, the
/// neighbour entry (see [`KernelNeighbour`]) and the FDB entry `<peer_mac> dst
/// 198.18.0.<peer>`.
pub fn add_kernel_flannel_peer(
    netns: &Netns,
    peer: u8,
    peer_mac: &str,
    neighbour: KernelNeighbour,
) -> Result<()> {
    let gateway = IpAddr::V4(overlay_addr(peer));
    let endpoint = IpAddr::V4(underlay_addr(peer));
    let subnet = overlay_subnet(peer);
    program_kernel_peer(
        netns,
        VXLAN_DEVICE,
        &subnet,
        (gateway, endpoint, peer_mac),
        neighbour,
    )
}

/// What flanneld programs on the kernel vxlan device `device` for one remote lease: the
/// route `<subnet> via <gateway> onlink`, the neighbour entry for the gateway (see
/// [`KernelNeighbour`]) and the FDB entry `<mac> dst <endpoint>`; `via` is (gateway,
/// endpoint, mac).
fn program_kernel_peer(
    netns: &Netns,
    device: &str,
    subnet: &str,
    via: (IpAddr, IpAddr, &str),
    neighbour: KernelNeighbour,
) -> Result<()> {
    let (gateway, endpoint, peer_mac) = (via.0.to_string(), via.1.to_string(), via.2);
    netns.ip(&[
        "route", "add", subnet, "via", &gateway, "dev", device, "onlink",
    ])?;
    match neighbour {
        KernelNeighbour::Permanent => {
            netns.ip(&[
                "neigh",
                "add",
                &gateway,
                "lladdr",
                peer_mac,
                "dev",
                device,
                "nud",
                "permanent",
            ])?;
        }
        KernelNeighbour::Arp => {
            netns.exec_ok(&[
                "bridge",
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                device,
                "dst",
                &endpoint,
            ])?;
        }
    }
    netns.exec_ok(&[
        "bridge",
        "fdb",
        "add",
        peer_mac,
        "dev",
        device,
        "dst",
        &endpoint,
        "self",
        "permanent",
    ])?;
    Ok(())
}

/// Creates the bridge `name` inside `netns` (no address) and brings it up.
pub fn add_bridge(netns: &Netns, name: &str) -> Result<()> {
    netns.ip(&["link", "add", name, "type", "bridge"])?;
    netns.ip(&["link", "set", name, "up"])?;
    Ok(())
}

/// The seed's "vxlan + bridge": a kernel vxlan device `ifname` in host `host`'s namespace
/// (VNI 1 on `u0` from `198.18.0.<host>`, destination port 8472, learning on, MTU
/// [`VXLAN_OVERLAY_MTU`]) enslaved to `bridge`, flooding broadcast and unknown unicast to
/// every host of `flood_to` (`bridge fdb append 00:00:00:00:00:00 dev <ifname> dst <IP>`).
/// The veth keeps the kernel's offloads, as in [`add_kernel_flannel_device`].
pub fn add_kernel_vxlan_bridge_port(
    netns: &Netns,
    host: u8,
    ifname: &str,
    bridge: &str,
    flood_to: &[u8],
) -> Result<()> {
    let vni = VXLAN_VNI.to_string();
    let local = underlay_addr(host).to_string();
    let port = VXLAN_PORT.to_string();
    let mtu = VXLAN_OVERLAY_MTU.to_string();
    netns.ip(&[
        "link",
        "add",
        ifname,
        "type",
        "vxlan",
        "id",
        &vni,
        "local",
        &local,
        "dev",
        UNDERLAY_IFNAME,
        "dstport",
        &port,
        "learning",
    ])?;
    for &peer in flood_to {
        let endpoint = underlay_addr(peer).to_string();
        netns.exec_ok(&[
            "bridge",
            "fdb",
            "append",
            "00:00:00:00:00:00",
            "dev",
            ifname,
            "dst",
            &endpoint,
        ])?;
    }
    netns.ip(&["link", "set", ifname, "mtu", &mtu, "master", bridge, "up"])?;
    Ok(())
}

/// Plugs the namespace `pod` into `bridge` of the namespace `host`: a veth created inside
/// `host` (its end `host_end` enslaved to the bridge) whose other end is `eth0` in `pod`, with
/// `mtu`, the optional `mac` and the address `cidr`; both ends up. Nothing touches the root
/// namespace.
fn plug_into_bridge(
    host: &Netns,
    bridge: &str,
    host_end: &str,
    pod: &Netns,
    cidr: &str,
    mac: Option<&str>,
    mtu: u32,
) -> Result<()> {
    let mtu = mtu.to_string();
    host.ip(&[
        "link",
        "add",
        host_end,
        "mtu",
        &mtu,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        pod.name(),
    ])?;
    host.ip(&["link", "set", host_end, "master", bridge, "up"])?;
    if let Some(mac) = mac {
        pod.ip(&["link", "set", "eth0", "address", mac])?;
    }
    pod.ip(&["link", "set", "eth0", "mtu", &mtu, "up"])?;
    pod.ip(&["addr", "add", cidr, "dev", "eth0"])?;
    Ok(())
}

/// A pod of the L2 topology: a namespace whose `eth0` (a fixed MAC, one address of a subnet
/// shared by all hosts, no gateway) is a veth into a bridge of its host. Its namespace is
/// removed on `Drop`.
#[derive(Debug)]
pub struct BridgePod {
    address: Ipv4Addr,
    mac: String,
    netns: Netns,
}

impl BridgePod {
    /// Creates the pod's namespace and plugs it into `bridge` of the host namespace `host`:
    /// the host end is `vp<last octet of address>`, the pod end `eth0` with `mac`,
    /// `address/prefix_len` and `mtu`.
    pub fn attach(
        host: &Netns,
        bridge: &str,
        address: Ipv4Addr,
        prefix_len: u8,
        mac: &str,
        mtu: u32,
    ) -> Result<Self> {
        let netns = Netns::new(&format!("{}-pod{}", host.name(), address.octets()[3]))?;
        let host_end = format!("vp{}", address.octets()[3]);
        let cidr = format!("{address}/{prefix_len}");
        plug_into_bridge(host, bridge, &host_end, &netns, &cidr, Some(mac), mtu)?;
        Ok(Self {
            address,
            mac: mac.to_owned(),
            netns,
        })
    }

    /// The pod's namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The pod's address.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The MAC of the pod's `eth0`, as given to [`BridgePod::attach`].
    pub fn mac(&self) -> &str {
        &self.mac
    }
}

/// One entry of `weft fdb list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// The MAC, as weft prints it.
    pub mac: String,
    /// The VTEP it is reached at, as weft prints it.
    pub endpoint: String,
    /// Learned from a received frame (`learned`), or configured (`static`).
    pub learned: bool,
}

/// One line of `weft peer list` of the VXLAN backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanPeerEntry {
    /// The routed subnet; `None` for a VTEP line (`vtep <endpoint>`).
    pub subnet: Option<String>,
    /// The underlay endpoint, as weft prints it.
    pub endpoint: String,
    /// The peer's VTEP MAC, if weft prints one.
    pub vtep_mac: Option<String>,
}

impl WeftDaemon {
    /// The FDB of VNI `vni` (of the configured one when `None`), `weft fdb list`.
    pub fn fdb_list(&self, vni: Option<u32>) -> Result<Vec<FdbEntry>> {
        let vni = vni.map(|vni| vni.to_string());
        let mut args = vec!["fdb", "list"];
        if let Some(vni) = &vni {
            args.extend_from_slice(&["--vni", vni]);
        }
        let text = self.control_ok(&args)?;
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                match fields.as_slice() {
                    [mac, endpoint, kind @ ("learned" | "static")] => Ok(FdbEntry {
                        mac: (*mac).to_owned(),
                        endpoint: (*endpoint).to_owned(),
                        learned: *kind == "learned",
                    }),
                    _ => Err(TestbedError::UnexpectedOutput {
                        command: format!("[{}] weft {}", self.netns, args.join(" ")),
                        output: text.clone(),
                    }),
                }
            })
            .collect()
    }

    /// The routes and VTEPs of the VXLAN backend's configured VNI (`weft peer list`).
    pub fn vxlan_peer_list(&self) -> Result<Vec<VxlanPeerEntry>> {
        let text = self.control_ok(&["peer", "list"])?;
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                match fields.as_slice() {
                    ["vtep", endpoint] => Ok(VxlanPeerEntry {
                        subnet: None,
                        endpoint: (*endpoint).to_owned(),
                        vtep_mac: None,
                    }),
                    [subnet, endpoint] | [subnet, endpoint, _] => Ok(VxlanPeerEntry {
                        subnet: Some((*subnet).to_owned()),
                        endpoint: (*endpoint).to_owned(),
                        vtep_mac: fields.get(2).map(|mac| (*mac).to_owned()),
                    }),
                    _ => Err(TestbedError::UnexpectedOutput {
                        command: format!("[{}] weft peer list", self.netns),
                        output: text.clone(),
                    }),
                }
            })
            .collect()
    }
}

/// `tcpdump` writing what crosses one interface of a namespace into a pcap file; stopped
/// (SIGTERM) when dropped.
#[derive(Debug)]
pub struct PacketCapture {
    // Dropped before the directory that holds its file.
    child: NsChild,
    path: PathBuf,
    _dir: TempDir,
}

impl PacketCapture {
    /// Starts `tcpdump -i <ifname> -U -w <file> <filter>` inside `netns` and waits until it
    /// says it is listening. `-U` writes every packet as it is captured, so
    /// [`PacketCapture::packets`] sees it without stopping the capture.
    pub fn start(netns: &Netns, ifname: &str, filter: &[&str]) -> Result<Self> {
        let dir = TempDir::new("weft-capture")?;
        let path = dir.path().join(format!("{ifname}.pcap"));
        let path_arg = path.to_string_lossy().into_owned();
        let mut argv = vec![
            "tcpdump", "-i", ifname, "-n", "-U", "-s", "0", "-Z", "root", "-w", &path_arg,
        ];
        argv.extend_from_slice(filter);
        let mut child = netns.spawn(&argv)?;
        let what = format!("tcpdump on {ifname} in {} to start listening", netns.name());
        wait_until(COMMAND_TIMEOUT, &what, || {
            !child.is_running() || child.stderr().contains("listening on")
        })?;
        if let Some(status) = child.try_wait()? {
            return Err(TestbedError::CommandFailed {
                command: child.command().to_owned(),
                status,
                stderr: child.stderr().trim().to_owned(),
            });
        }
        Ok(Self {
            child,
            path,
            _dir: dir,
        })
    }

    /// What has been captured so far. A record tcpdump is still writing is left out.
    pub fn packets(&self) -> Result<Pcap> {
        let bytes = read_file(&self.path)?;
        if bytes.is_empty() {
            // tcpdump has not written the file header yet.
            return Ok(Pcap::default());
        }
        Pcap::parse(&bytes).ok_or_else(|| TestbedError::UnexpectedOutput {
            command: self.child.command().to_owned(),
            output: format!("{} is no pcap file", self.path.display()),
        })
    }

    /// The pcap file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The contents of a classic pcap file: the link type and every complete record's bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pcap {
    /// `LINKTYPE_*`: 1 = Ethernet, 101 = raw IP, 113 = Linux cooked.
    pub link_type: u32,
    /// The captured bytes of each packet, in capture order.
    pub packets: Vec<Vec<u8>>,
}

impl Pcap {
    /// `LINKTYPE_ETHERNET`.
    pub const ETHERNET: u32 = 1;
    /// `LINKTYPE_RAW`: a bare IPv4 or IPv6 packet (TUN devices).
    pub const RAW: u32 = 101;

    /// Parses a classic pcap file (either byte order, micro- or nanosecond timestamps);
    /// `None` if it has no valid header. A truncated last record is ignored.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let header = bytes.get(..24)?;
        let magic = [header[0], header[1], header[2], header[3]];
        let read_u32: fn([u8; 4]) -> u32 = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => u32::from_le_bytes,
            [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => u32::from_be_bytes,
            _ => return None,
        };
        let field = |data: &[u8], at: usize| -> Option<u32> {
            data.get(at..at + 4)
                .map(|b| read_u32([b[0], b[1], b[2], b[3]]))
        };
        let link_type = field(header, 20)?;
        let mut packets = Vec::new();
        let mut at = 24;
        while let Some(record) = bytes.get(at..at + 16) {
            let captured = usize::try_from(field(record, 8)?).ok()?;
            let Some(data) = bytes.get(at + 16..at + 16 + captured) else {
                break;
            };
            packets.push(data.to_vec());
            at += 16 + captured;
        }
        Some(Self { link_type, packets })
    }
}

/// A TCP/IPv4 super-packet as a TUN with TSO hands one over, for the offload tests and
/// benchmarks: `prefix` zero bytes (room for a vnet header or an encapsulation), then one
/// IPv4 header (100.96.1.5 -> 100.96.2.7, TTL 64, DF if `df`) and one TCP header (port 40000
/// -> 5201, sequence `seq`, ACK, window 65535) whose lengths cover all `mss * segments`
/// payload bytes, the pseudo-header sum in the TCP checksum field (as the kernel leaves it
/// with `NEEDS_CSUM`), then the payload, byte `i` being `fill(i)`.
pub fn tcp_super_packet(
    prefix: usize,
    mss: usize,
    segments: usize,
    seq: u32,
    df: bool,
    fill: impl Fn(usize) -> u8,
) -> Vec<u8> {
    use weft_encap::wire::checksum;
    let payload = mss * segments;
    let (src, dst) = (Ipv4Addr::new(100, 96, 1, 5), Ipv4Addr::new(100, 96, 2, 7));
    let mut p = vec![0u8; prefix + 40];
    let ip = &mut p[prefix..prefix + 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    ip[6] = if df { 0x40 } else { 0 };
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let tcp = &mut p[prefix + 20..prefix + 40];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x10; // ACK
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let pseudo = checksum::pseudo_header_v4(src, dst, 6, (20 + payload) as u32);
    tcp[16..18].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
    p.extend((0..payload).map(fill));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_parse_name_value_lines() {
        let stats = StatsOutput::parse("tx_packets 3\ndrop_no_route 0\n\n").expect("valid");
        assert_eq!(stats.get("tx_packets"), Some(3));
        assert_eq!(stats.get("drop_no_route"), Some(0));
        assert_eq!(stats.get("rx_packets"), None);
        assert_eq!(stats.to_string(), "drop_no_route 0\ntx_packets 3\n");
        assert_eq!(StatsOutput::parse("tx_packets three"), None);
        assert_eq!(StatsOutput::parse("tx_packets 1 2"), None);
    }

    #[test]
    fn ping_summary_parses_iputils_output() {
        let output = "PING 100.96.2.0 (100.96.2.0) 56(84) bytes of data.\n\
                      64 bytes from 100.96.2.0: icmp_seq=1 ttl=64 time=0.387 ms\n\n\
                      --- 100.96.2.0 ping statistics ---\n\
                      3 packets transmitted, 2 received, 33.3333% packet loss, time 401ms\n\
                      rtt min/avg/max/mdev = 0.058/0.222/0.387/0.164 ms\n";
        let summary = PingSummary::parse(output);
        assert_eq!((summary.transmitted, summary.received), (3, 2));
        assert_eq!(summary.rtt_avg_ms, Some(0.222));
        assert!(!summary.all_received());

        let unreachable = "From 100.96.1.0 icmp_seq=1 Destination Net Unreachable\n\n\
                           --- 100.96.2.0 ping statistics ---\n\
                           1 packets transmitted, 0 received, +1 errors, 100% packet loss\n";
        let summary = PingSummary::parse(unreachable);
        assert_eq!((summary.transmitted, summary.received), (1, 0));
        assert_eq!(summary.rtt_avg_ms, None);

        let summary = PingSummary::parse("ping: connect: Network is unreachable\n");
        assert_eq!((summary.transmitted, summary.received), (0, 0));
        assert!(!summary.all_received());
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("100.96.0.0/16"), "\"100.96.0.0/16\"");
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }

    #[test]
    fn addresses_follow_the_host_number() {
        assert_eq!(underlay_addr(3), Ipv4Addr::new(198, 18, 0, 3));
        assert_eq!(overlay_addr(3), Ipv4Addr::new(100, 96, 3, 0));
        assert_eq!(overlay_subnet(3), "100.96.3.0/24");
        assert_eq!(bridge_addr(3), Ipv4Addr::new(100, 96, 3, 1));
        assert_eq!(pod_addr(3, 7), Ipv4Addr::new(100, 96, 3, 7));
    }

    #[test]
    fn vxlan_configs_have_the_documented_keys() {
        let l3 = VxlanConfig::l3(2, &[1]).to_toml();
        for line in [
            "backend = \"vxlan\"",
            "name = \"flannel.1\"",
            "address = \"100.96.2.0\"",
            "port = 8472",
            "vni = 1",
            "mode = \"l3\"",
            "vtep_mac = \"02:00:00:00:02:00\"",
            "subnet = \"100.96.1.0/24\"",
            "endpoint = \"198.18.0.1\"",
            "vtep_mac = \"02:00:00:00:01:00\"",
        ] {
            assert!(l3.lines().any(|l| l == line), "{line:?} missing in:\n{l3}");
        }
        let l2 = VxlanConfig::l2(2, "weft.1", "br0", &[1]).to_toml();
        assert!(l2.contains("bridge = \"br0\"\n") && l2.contains("mode = \"l2\"\n"));
        assert!(
            !l2.contains("subnet") && !l2.contains("address = \"100"),
            "{l2}"
        );
        let parsed: toml::Table = l2.parse().expect("valid TOML");
        assert_eq!(parsed["peer"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn engine_section_is_written_only_with_keys() {
        let plain = WeftConfig::udp(1, &[2]).to_toml();
        assert!(!plain.contains("[engine]"), "{plain}");
        let engine = EngineConfig::default().workers(2).offload("off").batch(1);
        for text in [
            WeftConfig::udp(1, &[2])
                .with_engine(engine.clone())
                .to_toml(),
            VxlanConfig::l3(1, &[2]).with_engine(engine).to_toml(),
        ] {
            let parsed: toml::Table = text.parse().expect("valid TOML");
            let section = parsed["engine"].as_table().expect("[engine] table");
            assert_eq!(section["workers"].as_integer(), Some(2), "{text}");
            assert_eq!(section["batch"].as_integer(), Some(1), "{text}");
            assert_eq!(section["offload"].as_str(), Some("off"), "{text}");
            assert_eq!(parsed["peer"].as_array().map(Vec::len), Some(1), "{text}");
        }
        let only_workers = EngineConfig::default().workers(3).to_toml();
        assert_eq!(only_workers, "\n[engine]\nworkers = 3\n");
    }

    #[test]
    fn pcap_parse_reads_records_and_ignores_a_truncated_tail() {
        let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&65535u32.to_le_bytes());
        file.extend_from_slice(&101u32.to_le_bytes());
        for packet in [&b"\x45abc"[..], &b"\x45de"[..]] {
            file.extend_from_slice(&[0; 8]);
            let len = packet.len() as u32;
            file.extend_from_slice(&len.to_le_bytes());
            file.extend_from_slice(&len.to_le_bytes());
            file.extend_from_slice(packet);
        }
        let complete = Pcap::parse(&file).expect("valid");
        assert_eq!(complete.link_type, Pcap::RAW);
        assert_eq!(
            complete.packets,
            vec![b"\x45abc".to_vec(), b"\x45de".to_vec()]
        );
        let truncated = Pcap::parse(&file[..file.len() - 1]).expect("valid");
        assert_eq!(truncated.packets.len(), 1);
        assert_eq!(Pcap::parse(&file[..20]), None);
        assert_eq!(Pcap::parse(&[0; 24]), None);
    }

    #[test]
    fn vxlan_names_follow_the_host_number() {
        assert_eq!(vtep_mac(2), "02:00:00:00:02:00");
        assert_eq!(l2_pod_mac(12), "02:00:00:aa:00:0c");
        assert_eq!(l2_pod_addr(12), Ipv4Addr::new(100, 96, 0, 12));
        assert_eq!(VXLAN_OVERLAY_MTU, 1450);
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("x"), unique_name("x"));
        assert!(unique_name("weft").starts_with(&format!("weft-{}-", std::process::id())));
    }
}

/// Listens on TCP `ports` (IPv4) in `netns` with a small `python3` server that accepts and
/// closes every connection, until the returned process is dropped. Returns once it listens.
pub fn tcp_listeners(netns: &Netns, ports: &[u16]) -> Result<NsChild> {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let script = format!(
        "import socket, select\n\
         socks = []\n\
         for p in [{}]:\n\
         \x20   s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         \x20   s.bind(('0.0.0.0', p)); s.listen(16); socks.append(s)\n\
         print('listening', flush=True)\n\
         while True:\n\
         \x20   for s in select.select(socks, [], [])[0]:\n\
         \x20       s.accept()[0].close()\n",
        ports.join(", ")
    );
    let mut child = netns.spawn(&["python3", "-c", &script])?;
    wait_until(COMMAND_TIMEOUT, "the TCP listeners", || {
        child.stdout().contains("listening") || !child.is_running()
    })?;
    if !child.is_running() {
        return Err(TestbedError::Invalid(format!(
            "the TCP listeners in {} exited: {}",
            netns.name(),
            child.stderr()
        )));
    }
    Ok(child)
}

/// What a TCP connect came to ([`tcp_connect`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// The connection was established.
    Connected,
    /// A TCP reset answered (nobody listens).
    Refused,
    /// `EHOSTUNREACH`: an ICMP error such as "administratively prohibited" answered.
    Unreachable,
    /// Nothing answered within the timeout (the SYN was dropped somewhere).
    Timeout,
    /// Anything else, as the probe printed it.
    Other(String),
}

/// Tries one TCP connection from `netns` to `to:port`, waiting at most `timeout` (with
/// `python3`, which tells the errors apart).
pub fn tcp_connect(
    netns: &Netns,
    to: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<ConnectOutcome> {
    let script = format!(
        "import socket, errno\n\
         s = socket.socket(socket.AF_INET6 if ':' in '{to}' else socket.AF_INET)\n\
         s.settimeout({})\n\
         try:\n\
         \x20   s.connect(('{to}', {port})); print('connected')\n\
         except socket.timeout:\n\
         \x20   print('timeout')\n\
         except OSError as e:\n\
         \x20   print({{errno.ECONNREFUSED: 'refused', errno.EHOSTUNREACH: 'unreachable'}}.get(e.errno, 'errno %d' % e.errno))\n",
        timeout.as_secs_f64()
    );
    let out = netns.exec_timeout(&["python3", "-c", &script], timeout + COMMAND_TIMEOUT)?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(match text.as_str() {
        "connected" => ConnectOutcome::Connected,
        "refused" => ConnectOutcome::Refused,
        "unreachable" => ConnectOutcome::Unreachable,
        "timeout" => ConnectOutcome::Timeout,
        _ => ConnectOutcome::Other(format!("{text} {}", String::from_utf8_lossy(&out.stderr))),
    })
}
