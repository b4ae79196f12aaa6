//! SIGHUP re-reads the configuration file: `[[peer]]` routes added to or removed from the file
//! take effect without a restart, while routes added at runtime through the control socket stay.

use std::time::Duration;

use weft_testbed::{wait_until, ConfigFile, Testbed, WeftConfig, WeftDaemon};

#[test]
fn sighup_applies_peer_changes_from_the_file_and_keeps_runtime_routes() {
    assert!(
        weft_testbed::is_root(),
        "this end-to-end test builds network namespaces: run it as root"
    );
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_weft"));
    let bed = Testbed::two_hosts("wrld").unwrap();
    let b_config = WeftConfig::udp(2, &[1]).write().unwrap();
    let _b = WeftDaemon::start(exe, bed.host(2).netns(), b_config.path(), "flannel0").unwrap();

    // A starts with no peers at all.
    let with_peer = WeftConfig::udp(1, &[2]).to_toml();
    let without_peer: String = {
        let cut = with_peer
            .find("[[peer]]")
            .expect("the generated config has a [[peer]] table");
        with_peer[..cut].to_owned()
    };
    let a_config = ConfigFile::new(&without_peer).unwrap();
    let mut a = WeftDaemon::start(exe, bed.host(1).netns(), a_config.path(), "flannel0").unwrap();
    let reaches_b = || {
        weft_testbed::ping(bed.host(1).netns(), weft_testbed::overlay_addr(2), 1)
            .is_ok_and(|p| p.all_received())
    };
    assert!(!reaches_b(), "no route to B yet");

    // The peer appears in the file: SIGHUP, and traffic flows.
    std::fs::write(a_config.path(), &with_peer).unwrap();
    a.process().signal("HUP").unwrap();
    wait_until(
        Duration::from_secs(10),
        "ping A -> B after SIGHUP added the peer",
        reaches_b,
    )
    .unwrap();

    // A route added at runtime survives the next reload; the file's route goes away.
    a.peer_add("100.96.3.0/24", "198.18.0.3").unwrap();
    std::fs::write(a_config.path(), &without_peer).unwrap();
    a.process().signal("HUP").unwrap();
    wait_until(
        Duration::from_secs(10),
        "SIGHUP to remove the file's peer",
        || a.peer_list().is_ok_and(|routes| routes.len() == 1),
    )
    .unwrap();
    let routes = a.peer_list().unwrap();
    assert_eq!(routes[0].subnet, "100.96.3.0/24", "{routes:?}");
    assert!(!reaches_b(), "the removed route is gone");

    // A broken file is refused and the running routes stay.
    std::fs::write(a_config.path(), "backend = [").unwrap();
    a.process().signal("HUP").unwrap();
    wait_until(
        Duration::from_secs(10),
        "the reload error in the log",
        || a.log().contains("reload failed"),
    )
    .unwrap();
    assert!(a.process().is_running());
    assert_eq!(a.peer_list().unwrap().len(), 1);
}

#[test]
fn sighup_applies_vtep_changes_from_the_file() {
    assert!(
        weft_testbed::is_root(),
        "this end-to-end test builds network namespaces: run it as root"
    );
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_weft"));
    let bed = Testbed::two_hosts("wrlv").unwrap();
    let base = "backend = \"vxlan\"\nnetwork = \"100.96.0.0/16\"\n[device]\nname = \"weftl2\"\n\
                [listen]\naddress = \"198.18.0.1\"\n[vxlan]\nmode = \"l2\"\nvtep_mac = \"02:00:00:00:01:00\"\n";
    let with_vtep = format!("{base}[[peer]]\nendpoint = \"198.18.0.2\"\n");
    let config = ConfigFile::new(base).unwrap();
    let mut a = WeftDaemon::start(exe, bed.host(1).netns(), config.path(), "weftl2").unwrap();
    let vteps = |a: &WeftDaemon| {
        let out = a.control(&["peer", "list"]).unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(vteps(&a), "");
    std::fs::write(config.path(), &with_vtep).unwrap();
    a.process().signal("HUP").unwrap();
    wait_until(Duration::from_secs(10), "SIGHUP to add the VTEP", || {
        vteps(&a) == "vtep 198.18.0.2:8472"
    })
    .unwrap();
    std::fs::write(config.path(), base).unwrap();
    a.process().signal("HUP").unwrap();
    wait_until(Duration::from_secs(10), "SIGHUP to remove the VTEP", || {
        vteps(&a).is_empty()
    })
    .unwrap();
}

#[test]
fn a_fifo_in_place_of_the_file_neither_hangs_the_reload_nor_keeps_sigterm_out() {
    assert!(
        weft_testbed::is_root(),
        "this end-to-end test builds network namespaces: run it as root"
    );
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_weft"));
    let bed = Testbed::two_hosts("wrlf").unwrap();
    let config = ConfigFile::new(&WeftConfig::udp(1, &[2]).to_toml()).unwrap();
    let mut a = WeftDaemon::start(exe, bed.host(1).netns(), config.path(), "flannel0").unwrap();
    // An operator (or an attacker who can write the directory) puts a FIFO there.
    std::fs::remove_file(config.path()).unwrap();
    let path = config.path().to_str().unwrap().to_owned();
    bed.host(1).netns().exec_ok(&["mkfifo", &path]).unwrap();
    a.process().signal("HUP").unwrap();
    wait_until(
        Duration::from_secs(10),
        "the reload to refuse the FIFO",
        || a.log().contains("not a regular file"),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    assert_eq!(a.peer_list().unwrap().len(), 1, "the running routes stay");
    // SIGTERM is heard at once.
    let status = a
        .stop(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    assert!(status.success(), "{status}\n{}", a.log());
    let _ = std::fs::remove_file(&path);
}
