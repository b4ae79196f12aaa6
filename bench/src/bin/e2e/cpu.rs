//! CPU time from /proc: of one process (weft's), and of the whole machine.
//!
//! Both count in clock ticks (`getconf CLK_TCK`, 100 on Linux); the caller turns deltas
//! over a run into "cores busy" (ticks / ticks per second / seconds of the run).

use std::fs;

/// Total CPU time (user + system, in clock ticks) the process `pid` has used so far, from
/// `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    parse_cpu_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field
/// 2) is in parentheses and may contain spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Ticks the whole machine has spent busy so far (every CPU; everything but idle and
/// iowait), from the first line of `/proc/stat`.
pub fn machine_busy_ticks() -> Option<u64> {
    parse_machine_busy_ticks(&fs::read_to_string("/proc/stat").ok()?)
}

/// The busy ticks of a `/proc/stat` text: the sum of the `cpu` line's fields except idle
/// (4th) and iowait (5th); guest time is already part of user time and is not added twice.
pub fn parse_machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    (fields.len() >= 4).then_some(busy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_from_the_last_parenthesis() {
        let stat =
            "4242 (we ft) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1234 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("4242 (weft) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("garbage"), None);
        // Our own process has a readable stat line.
        assert!(cpu_ticks(std::process::id()).is_some());
    }

    #[test]
    fn machine_busy_ticks_leave_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 7 3 2 1 40 0\ncpu0 50 2 25 500 3 1 1 0 20 0\n";
        assert_eq!(parse_machine_busy_ticks(stat), Some(161));
        assert_eq!(parse_machine_busy_ticks("cpu0 1 2 3 4"), None);
        assert!(machine_busy_ticks().is_some());
    }
}
