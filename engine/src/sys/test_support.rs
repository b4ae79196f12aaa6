//! Helpers for the `sys` tests: private and named network namespaces, running `ip`, polling an
//! fd with a deadline.

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::netlink::Netlink;

/// Ends the calling test early, passing, with a note on stderr, when it does not run as
/// root: a test that needs a network namespace or a device skips cleanly in an unprivileged
/// `cargo test` instead of failing on `EPERM`. CI runs every test as root.
macro_rules! skip_unless_root {
    () => {
        if !weft_testbed::is_root() {
            eprintln!("skipped: this test needs root (network namespaces, devices)");
            return;
        }
    };
}
pub(crate) use skip_unless_root;

/// Runs `f` on a fresh thread that first moves into a private network namespace (with `lo`
/// brought up). The namespace disappears when the thread ends and its fds are closed, also when
/// `f` panics; the panic is forwarded to the caller.
pub(crate) fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = std::thread::spawn(move || {
        super::unshare_netns().expect("unshare(CLONE_NEWNET) (tests need root)");
        let mut nl = Netlink::open().unwrap();
        let lo = nl.link_by_name("lo").unwrap().expect("lo exists");
        nl.set_up(lo.index).unwrap();
        f()
    });
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs `ip args...` in the calling thread's network namespace (a child process inherits the
/// namespace of the thread that spawns it) and returns its stdout; panics if it fails.
pub(crate) fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A named namespace (`ip netns add`), deleted again on drop.
pub(crate) struct NamedNetns {
    name: String,
}

impl NamedNetns {
    pub(crate) fn create() -> NamedNetns {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "weft-sys-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        NamedNetns { name }
    }

    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <name> args...`.
    pub(crate) fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Waits until `fd` is readable or `timeout` passes; returns whether it became readable.
pub(crate) fn wait_readable(fd: impl AsFd, timeout: Duration) -> bool {
    let fd = fd.as_fd().as_raw_fd();
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `pfd` is one valid pollfd and we pass a count of 1.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return true;
        }
        if n == 0 || Instant::now() >= deadline {
            return false;
        }
        // n < 0: EINTR, try again until the deadline.
    }
}
