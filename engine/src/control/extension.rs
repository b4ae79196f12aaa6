//! `weft ext`: weft as flanneld's `extension` backend (FLANNEL.md §5).
//!
//! An operator who keeps flanneld (for its Kubernetes subnet manager, say) points its four
//! extension hooks at weft, and weft carries the packets with the flannel UDP wire format:
//!
//! - `weft ext pre` (before flanneld takes its lease) prints one stable line, `{"Port":8285}`,
//!   which flanneld publishes as the lease's `BackendData`.
//! - `weft ext post` (after the lease; `NETWORK`, `SUBNET`, `PUBLIC_IP` in the environment)
//!   writes a `weft run` configuration for that lease into the state directory and starts
//!   the daemon detached from flanneld (its own process group, output to a log file, so
//!   flanneld's wait for the hook's output ends), then waits until its control socket
//!   answers. If a daemon with the same configuration already answers (flanneld restarted),
//!   it is kept; one with another configuration is stopped first.
//! - `weft ext add` / `weft ext remove` (each remote lease; `SUBNET`, `PUBLIC_IP`, and the
//!   remote `BackendData` on stdin) add or replace / remove the route to that host through
//!   the control socket; both are idempotent (flanneld calls `add` again on every daily
//!   renewal).
//!
//! Only the environment is read, never the command line, so the hooks behave the same under
//! flanneld's old `sh -c "<cmd>"` execution and its new one (since v0.28.2: the command split
//! on white space, no shell).

use std::fmt::Write as _;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft_encap::table::Cidr;

use crate::control::config::default_control_socket;
use crate::control::socket::{request, ControlError};

/// How long `post` waits for a started daemon's control socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// One of flanneld's four extension hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hook {
    /// `PreStartupCommand`.
    Pre,
    /// `PostStartupCommand`.
    Post,
    /// `SubnetAddCommand`.
    Add,
    /// `SubnetRemoveCommand`.
    Remove,
}

/// Where the extension keeps its daemon.
#[derive(Debug, Clone)]
pub struct ExtOptions {
    /// The state directory: `extension.toml`, `extension.pid`, `extension.log`.
    pub state_dir: PathBuf,
    /// The TUN device (and so the control socket `@weft/<device>`).
    pub device: String,
    /// The UDP port of the flannel wire format on every host.
    pub port: u16,
    /// The `weft` binary that runs the daemon.
    pub weft: PathBuf,
}

/// Why a hook failed: one line for flanneld's log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtError {
    /// An environment variable flanneld passes is missing or malformed.
    #[error("environment variable {name} = {value:?}: {reason}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value (empty when missing).
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A file in the state directory could not be written.
    #[error("{path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The daemon could not be started or did not come up.
    #[error("starting `{weft} run --config {config}`: {reason}")]
    Start {
        /// The binary.
        weft: String,
        /// The configuration file.
        config: String,
        /// What happened (with the end of its log).
        reason: String,
    },
    /// The daemon refused a request or is not running.
    #[error("the weft daemon at {socket}: {source}")]
    Control {
        /// The control socket.
        socket: String,
        /// The failure.
        #[source]
        source: ControlError,
    },
}

/// Runs `hook`, reading flanneld's variables through `env`; returns what to print.
pub fn run_hook(
    hook: Hook,
    options: &ExtOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExtError> {
    let socket = default_control_socket(&options.device);
    match hook {
        Hook::Pre => Ok(format!("{{\"Port\":{}}}", options.port)),
        Hook::Post => post(options, env, &socket).map(|()| String::new()),
        Hook::Add => {
            let subnet = subnet_var(env, "SUBNET")?;
            let ip = ip_var(env, "PUBLIC_IP")?;
            let line = format!("peer add {subnet} {ip}:{}", options.port);
            request(&socket, &line)
                .map(|_| String::new())
                .map_err(|source| ExtError::Control { socket, source })
        }
        Hook::Remove => {
            let subnet = subnet_var(env, "SUBNET")?;
            match request(&socket, &format!("peer del {subnet}")) {
                Ok(_) => Ok(String::new()),
                // Already gone: removing is idempotent.
                Err(e) if e.to_string().contains("no route") => Ok(String::new()),
                Err(source) => Err(ExtError::Control { socket, source }),
            }
        }
    }
}

fn var(env: &dyn Fn(&str) -> Option<String>, name: &'static str) -> Result<String, ExtError> {
    env(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or(ExtError::Env {
            name,
            value: String::new(),
            reason: "not set (flanneld sets it for this hook)",
        })
}

fn subnet_var(env: &dyn Fn(&str) -> Option<String>, name: &'static str) -> Result<Cidr, ExtError> {
    let value = var(env, name)?;
    match value.parse::<Cidr>() {
        Ok(c) if c.addr().is_ipv4() => Ok(c),
        _ => Err(ExtError::Env {
            name,
            value,
            reason: "expected an IPv4 subnet like 10.5.52.0/24",
        }),
    }
}

fn ip_var(env: &dyn Fn(&str) -> Option<String>, name: &'static str) -> Result<Ipv4Addr, ExtError> {
    let value = var(env, name)?;
    value.parse().map_err(|_| ExtError::Env {
        name,
        value,
        reason: "expected an IPv4 address",
    })
}

/// The `weft run` configuration for this host's lease.
fn config_text(options: &ExtOptions, network: Cidr, subnet: Cidr, public_ip: Ipv4Addr) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# written by `weft ext post` from flanneld's lease");
    let _ = writeln!(text, "backend = \"udp\"\nnetwork = \"{network}\"");
    let _ = writeln!(
        text,
        "\n[device]\nname = \"{}\"\naddress = \"{}\"",
        options.device,
        subnet.addr()
    );
    let _ = writeln!(
        text,
        "\n[listen]\naddress = \"{public_ip}\"\nport = {}",
        options.port
    );
    text
}

fn post(
    options: &ExtOptions,
    env: &dyn Fn(&str) -> Option<String>,
    socket: &str,
) -> Result<(), ExtError> {
    let network = subnet_var(env, "NETWORK")?;
    let subnet = subnet_var(env, "SUBNET")?;
    let public_ip = ip_var(env, "PUBLIC_IP")?;
    let text = config_text(options, network, subnet, public_ip);
    let dir = &options.state_dir;
    let state_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ExtError::State { path, source }
    };
    std::fs::create_dir_all(dir).map_err(state_err(dir))?;
    let config = dir.join("extension.toml");
    let pid_file = dir.join("extension.pid");
    let running = request(socket, "stats").is_ok();
    if running {
        if std::fs::read_to_string(&config).ok().as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        stop_daemon(&pid_file, socket);
    }
    let tmp = dir.join("extension.toml.tmp");
    std::fs::write(&tmp, &text).map_err(state_err(&tmp))?;
    std::fs::rename(&tmp, &config).map_err(state_err(&config))?;
    let log_path = dir.join("extension.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(state_err(&log_path))?;
    let log2 = log.try_clone().map_err(state_err(&log_path))?;
    let start_err = |reason: String| ExtError::Start {
        weft: options.weft.display().to_string(),
        config: config.display().to_string(),
        reason,
    };
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(&options.weft)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            // Out of flanneld's process group: its signals and its wait are not ours.
            .process_group(0)
            .spawn()
            .map_err(|e| start_err(e.to_string()))?
    };
    std::fs::write(&pid_file, format!("{}\n", child.id())).map_err(state_err(&pid_file))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if request(socket, "stats").is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(start_err(format!(
                "it exited ({status}): {}",
                log_tail(&log_path)
            )));
        }
        if Instant::now() >= deadline {
            return Err(start_err(format!(
                "no answer on {socket} after {} s: {}",
                START_TIMEOUT.as_secs(),
                log_tail(&log_path)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last line of the daemon's log, for an error message.
fn log_tail(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.lines().last().map(str::to_owned))
        .unwrap_or_default()
}

/// Stops the daemon recorded in `pid_file` (SIGTERM via kill(1)) and waits until its control
/// socket stops answering.
fn stop_daemon(pid_file: &Path, socket: &str) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return;
    };
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while request(socket, "stats").is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ExtOptions {
        ExtOptions {
            state_dir: PathBuf::from("/nonexistent"),
            device: "flannel0".into(),
            port: 8285,
            weft: PathBuf::from("weft"),
        }
    }

    #[test]
    fn pre_prints_one_stable_line() {
        let none = |_: &str| None;
        assert_eq!(
            run_hook(Hook::Pre, &options(), &none).unwrap(),
            "{\"Port\":8285}"
        );
    }

    #[test]
    fn missing_or_bad_variables_name_the_variable() {
        let none = |_: &str| None;
        let e = run_hook(Hook::Add, &options(), &none).unwrap_err();
        assert!(
            e.to_string().starts_with("environment variable SUBNET"),
            "{e}"
        );
        let bad = |name: &str| (name == "SUBNET").then(|| "10.5.52.0".to_owned());
        let e = run_hook(Hook::Remove, &options(), &bad).unwrap_err();
        assert!(e.to_string().contains("SUBNET = \"10.5.52.0\""), "{e}");
        let ip = |name: &str| match name {
            "SUBNET" => Some("10.5.52.0/24".to_owned()),
            "PUBLIC_IP" => Some("<nil>".to_owned()),
            _ => None,
        };
        let e = run_hook(Hook::Add, &options(), &ip).unwrap_err();
        assert!(e.to_string().contains("PUBLIC_IP = \"<nil>\""), "{e}");
    }

    #[test]
    fn the_daemon_config_follows_the_lease() {
        let text = config_text(
            &options(),
            "10.50.0.0/16".parse().unwrap(),
            "10.50.3.0/24".parse().unwrap(),
            Ipv4Addr::new(192, 168, 1, 7),
        );
        let config = crate::control::config::Config::parse(Path::new("ext.toml"), &text).unwrap();
        assert_eq!(config.device.address, Some(Ipv4Addr::new(10, 50, 3, 0)));
        assert_eq!(config.listen, "192.168.1.7:8285".parse().unwrap());
        assert!(config.peers.is_empty());
    }
}
