//! What `/proc` says about a daemon: resident memory, threads, open descriptors, and whether
//! it is still running.

use std::fs;

/// One reading of `/proc/PID`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcReading {
    /// Running: the process exists and is no zombie (a daemon that exited stays a zombie
    /// until it is reaped, so its pid cannot be reused meanwhile).
    pub alive: bool,
    /// `VmRSS`, in KiB.
    pub rss_kib: Option<u64>,
    /// `Threads`.
    pub threads: Option<u64>,
    /// Entries of `/proc/PID/fd`.
    pub fds: Option<u64>,
}

/// Reads `/proc/<pid>/status` and counts `/proc/<pid>/fd`.
pub fn read(pid: u32) -> ProcReading {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return ProcReading::default();
    };
    let mut reading = parse_status(&status);
    if reading.alive {
        reading.fds = fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()
            .map(|entries| entries.count() as u64);
    }
    reading
}

/// The state, `VmRSS` and `Threads` lines of a `/proc/PID/status` text.
pub fn parse_status(text: &str) -> ProcReading {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let number = |name: &str| {
        field(name)
            .and_then(|value| value.split_whitespace().next())
            .and_then(|value| value.parse().ok())
    };
    let state = field("State").and_then(|value| value.chars().next());
    if !matches!(state, Some(s) if s != 'Z' && s != 'X') {
        // Exited: what is left of it says nothing about the daemon.
        return ProcReading::default();
    }
    ProcReading {
        alive: true,
        rss_kib: number("VmRSS"),
        threads: number("Threads"),
        fds: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_parsed() {
        let running = "Name:\tweft\nState:\tS (sleeping)\nVmPeak:\t  90000 kB\n\
                       VmRSS:\t    6144 kB\nThreads:\t4\n";
        assert_eq!(
            parse_status(running),
            ProcReading {
                alive: true,
                rss_kib: Some(6144),
                threads: Some(4),
                fds: None
            }
        );
        let zombie = "Name:\tweft\nState:\tZ (zombie)\nThreads:\t1\n";
        assert_eq!(parse_status(zombie), ProcReading::default());
    }

    #[test]
    fn this_process_can_be_read() {
        let me = read(std::process::id());
        assert!(me.alive);
        assert!(me.rss_kib.unwrap() > 0);
        assert!(me.threads.unwrap() >= 1);
        assert!(me.fds.unwrap() >= 3);
    }
}
