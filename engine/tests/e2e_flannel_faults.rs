//! End-to-end tests of `weft flannel` under faults: two hosts racing for the same subnet, a
//! host restarting and a reservation, a watch whose revision was compacted while the host
//! was frozen, etcd unreachable at start, and flanneld's health endpoints. Each test builds
//! its own topology (unique namespace prefix) with a real etcd in host 1's namespace, reached
//! over the underlay; every etcd client runs inside a namespace. All need root.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::flannel::{
    leased_subnet, put_config, start_flannel, subnet_file, udp_lease, wait_peers, wait_written,
    with_client, write_previous_env, CHANGE_TIMEOUT, CONFIG_UDP, PREFIX, UP_TIMEOUT,
};
use common::{require_root, weft_exe};
use weft_testbed::{
    underlay_addr, wait_for, wait_until, EtcdServer, Netns, NsChild, TempDir, Testbed,
    TERMINATE_GRACE,
};

/// Puts the udp config at `<prefix>/config`.
fn put_udp_config(netns: &Netns, endpoint: &str) {
    put_config(netns, endpoint, CONFIG_UDP);
}

/// `weft flannel` on host `index` with `extra` flags; host 1 finds the underlay interface
/// with `--iface-regex`, host 2 with `--iface-can-reach`.
fn start(bed: &Testbed, index: u8, endpoint: &str, dir: &Path, extra: &[&str]) -> NsChild {
    let iface: &[&str] = if index == 1 {
        &["--iface-regex", "^u0$"]
    } else {
        &["--iface-can-reach", "198.18.0.1"]
    };
    start_flannel(bed, index, endpoint, dir, iface, extra, &[])
}

/// Waits until the daemon on host `index` is up: it logged `up:` and `weft peer list`
/// reaches its control socket (by then it handles SIGTERM).
fn wait_engine_up(bed: &Testbed, index: u8, daemon: &NsChild) {
    let netns = bed.host(index).netns();
    wait_until(
        UP_TIMEOUT,
        &format!("weft on host {index} to be up"),
        || {
            daemon.stderr().contains("weft: info: up: ")
                && netns
                    .exec(&[weft_exe().to_str().unwrap(), "peer", "list"])
                    .is_ok_and(|o| o.status.success())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}
host {index}'s log:
{}",
            daemon.stderr()
        )
    });
}

/// Every key under `<prefix>/subnets/`: (key without the prefix, value, etcd lease id).
fn leases(netns: &Netns, endpoint: &str) -> Vec<(String, String, i64)> {
    let prefix = format!("{PREFIX}/subnets/");
    with_client(netns, endpoint, |c| c.range_prefix(&prefix).unwrap().kvs)
        .into_iter()
        .map(|kv| {
            (
                kv.key_str()
                    .unwrap()
                    .strip_prefix(&prefix)
                    .unwrap()
                    .to_owned(),
                kv.value_str().unwrap().to_owned(),
                kv.lease,
            )
        })
        .collect()
}

#[test]
fn racing_hosts_get_distinct_subnets() {
    require_root();
    let bed = Testbed::two_hosts("flf-race").expect("two hosts");
    let dir = TempDir::new("weft-flf-race").expect("a temp dir");
    let h1 = bed.host(1).netns();
    let etcd = EtcdServer::start(h1, underlay_addr(1)).expect("etcd in host 1");
    let endpoint = etcd.endpoint();
    put_udp_config(h1, &endpoint);

    // Both hosts' previous subnet.env name the same subnet, and they start together.
    for index in [1, 2] {
        write_previous_env(dir.path(), index, "100.96.7.1", 1472);
    }
    let d1 = start(&bed, 1, &endpoint, dir.path(), &[]);
    let d2 = start(&bed, 2, &endpoint, dir.path(), &[]);
    let env1 = wait_written(dir.path(), 1, &d1);
    let env2 = wait_written(dir.path(), 2, &d2);
    let (s1, s2) = (leased_subnet(&env1), leased_subnet(&env2));
    let (log1, log2) = (d1.stderr(), d2.stderr());
    let logs = format!("host 1's log:\n{log1}\nhost 2's log:\n{log2}");
    assert_ne!(s1, s2, "two hosts, two subnets\n{logs}");
    let wanted = Ipv4Addr::new(100, 96, 7, 0);
    assert!(
        (s1 == wanted) ^ (s2 == wanted),
        "exactly one host has 100.96.7.0/24: {s1}, {s2}\n{logs}"
    );
    let (winner_log, loser_log) = if s1 == wanted {
        (&log1, &log2)
    } else {
        (&log2, &log1)
    };
    assert!(
        winner_log.contains("leased 100.96.7.0-24")
            && winner_log.contains("(the subnet of the previous subnet.env)"),
        "{logs}"
    );
    assert!(!loser_log.contains("leased 100.96.7.0-24"), "{logs}");
    if loser_log.contains("another host took the subnet first") {
        eprintln!("a real creation race happened and was lost, then retried");
    } else {
        eprintln!("no real race this time: the loser saw 100.96.7.0-24 already taken");
    }

    // Exactly the two leases, each with its host's value and an etcd lease.
    let mut listed = leases(h1, &endpoint);
    listed.sort();
    let mut expected = vec![
        (format!("{s1}-24"), udp_lease(underlay_addr(1))),
        (format!("{s2}-24"), udp_lease(underlay_addr(2))),
    ];
    expected.sort();
    assert_eq!(
        listed
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect::<Vec<_>>(),
        expected,
        "{logs}"
    );
    assert!(listed.iter().all(|(_, _, lease)| *lease != 0), "{listed:?}");
    // And they route to each other.
    for (index, daemon, other) in [(1, &d1, (s2, 2)), (2, &d2, (s1, 1))] {
        let route = format!("{}/24 {}:8285", other.0, underlay_addr(other.1));
        wait_peers(&bed, index, "the route to the other host", daemon, |p| {
            p.contains(&route)
        });
    }
}

#[test]
fn a_restarted_host_takes_back_its_subnet_and_a_reservation_stays_without_lease() {
    require_root();
    let bed = Testbed::two_hosts("flf-rst").expect("two hosts");
    let dir = TempDir::new("weft-flf-rst").expect("a temp dir");
    let h1 = bed.host(1).netns();
    let etcd = EtcdServer::start(h1, underlay_addr(1)).expect("etcd in host 1");
    let endpoint = etcd.endpoint();
    put_udp_config(h1, &endpoint);

    // (a) Host 1 comes up, stops, comes back: same subnet, its lease reused.
    let mut d1 = start(&bed, 1, &endpoint, dir.path(), &[]);
    let s1 = leased_subnet(&wait_written(dir.path(), 1, &d1));
    wait_engine_up(&bed, 1, &d1);
    let first_log = d1.stderr();
    let status = d1.terminate(TERMINATE_GRACE).expect("stop host 1");
    assert!(
        status.success(),
        "weft flannel exited {status}:\n{first_log}"
    );
    drop(d1);
    let d1 = start(&bed, 1, &endpoint, dir.path(), &[]);
    let again = leased_subnet(&wait_written(dir.path(), 1, &d1));
    let log1 = d1.stderr();
    assert_eq!(again, s1, "first run:\n{first_log}\nsecond run:\n{log1}");
    assert!(
        log1.contains(&format!("reusing lease {s1}-24")),
        "second run:\n{log1}"
    );
    let listed = leases(h1, &endpoint);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].0, format!("{s1}-24"));
    assert_ne!(listed[0].2, 0, "host 1's key is bound to an etcd lease");

    // (b) A reservation for host 2 (a key without an etcd lease), before host 2 ever ran.
    let reservation = "100.96.42.0-24";
    let reserved_value = udp_lease(underlay_addr(2));
    assert_ne!(s1, Ipv4Addr::new(100, 96, 42, 0), "host 1 took the subnet");
    with_client(h1, &endpoint, |c| {
        c.put(
            format!("{PREFIX}/subnets/{reservation}"),
            &reserved_value,
            0,
        )
        .unwrap()
    });
    let d2 = start(&bed, 2, &endpoint, dir.path(), &[]);
    let s2 = leased_subnet(&wait_written(dir.path(), 2, &d2));
    let log2 = d2.stderr();
    assert_eq!(s2, Ipv4Addr::new(100, 96, 42, 0), "{log2}");
    assert!(
        log2.contains(&format!("reusing reservation {reservation}")),
        "{log2}"
    );
    let kv = with_client(h1, &endpoint, |c| {
        c.get(format!("{PREFIX}/subnets/{reservation}")).unwrap()
    })
    .unwrap_or_else(|| panic!("the reservation is gone\n{log2}"));
    assert_eq!(kv.lease, 0, "the reservation got an etcd lease\n{log2}");
    assert_eq!(kv.value_str(), Some(reserved_value.as_str()));
    assert_eq!(leases(h1, &endpoint).len(), 2);

    // Host 1 routes to the reserved subnet, host 2 to host 1's.
    wait_peers(&bed, 1, "the route to the reservation", &d1, |p| {
        p.contains("100.96.42.0/24 198.18.0.2:8285")
    });
    wait_peers(&bed, 2, "the route to host 1", &d2, |p| {
        p.contains(&format!("{s1}/24 198.18.0.1:8285"))
    });
    // Still no lease on the reservation once host 2 runs (it is not renewed with one).
    let kv = with_client(h1, &endpoint, |c| {
        c.get(format!("{PREFIX}/subnets/{reservation}")).unwrap()
    })
    .expect("the reservation");
    assert_eq!(kv.lease, 0, "{}", d2.stderr());
}

#[test]
fn a_compacted_watch_is_recovered_by_listing_again() {
    require_root();
    let bed = Testbed::two_hosts("flf-cmp").expect("two hosts");
    let dir = TempDir::new("weft-flf-cmp").expect("a temp dir");
    let h1 = bed.host(1).netns();
    let mut etcd = EtcdServer::start(h1, underlay_addr(1)).expect("etcd in host 1");
    let endpoint = etcd.endpoint();
    put_udp_config(h1, &endpoint);
    let d1 = start(&bed, 1, &endpoint, dir.path(), &[]);
    let mut d2 = start(&bed, 2, &endpoint, dir.path(), &[]);
    let s1 = leased_subnet(&wait_written(dir.path(), 1, &d1));
    let s2 = leased_subnet(&wait_written(dir.path(), 2, &d2));
    let route_to_1 = format!("{s1}/24 198.18.0.1:8285");
    let route_to_2 = format!("{s2}/24 198.18.0.2:8285");
    wait_peers(&bed, 1, "host 1's route to host 2", &d1, |p| {
        p.contains(&route_to_2)
    });
    wait_peers(&bed, 2, "host 2's route to host 1", &d2, |p| {
        p.contains(&route_to_1)
    });

    // Host 2 freezes; etcd goes away (closing host 2's watch) and comes back; a lease is
    // added and the history compacted past it, all while host 2 cannot see anything.
    d2.signal("STOP").expect("SIGSTOP host 2");
    etcd.stop().expect("stop etcd");
    etcd.restart().expect("restart etcd");
    let third = format!("{PREFIX}/subnets/100.96.250.0-24");
    let added = with_client(h1, &endpoint, |c| {
        c.put(&third, udp_lease(Ipv4Addr::new(198, 18, 0, 9)), 0)
            .unwrap()
    });
    // One more revision (outside the prefix), so the compaction covers the addition.
    let latest = with_client(h1, &endpoint, |c| {
        c.put("/weft-test/marker", "1", 0).unwrap()
    });
    assert!(latest > added);
    etcd.compact(latest).expect("compact etcd");
    // The addition's revision is gone: a watch from it fails as compacted.
    let compacted = with_client(h1, &endpoint, |c| {
        match c.watch_prefix(format!("{PREFIX}/subnets/"), added) {
            Err(e) => e.is_compacted(),
            Ok(mut watch) => watch.recv().is_err_and(|e| e.is_compacted()),
        }
    });
    assert!(compacted, "a watch from revision {added} is not compacted");
    d2.signal("CONT").expect("SIGCONT host 2");

    // Host 2 cannot watch from where it was: it lists again and gets the new route, keeping
    // host 1's.
    wait_peers(
        &bed,
        2,
        "the route added during the compacted gap",
        &d2,
        |p| p.contains("100.96.250.0/24 198.18.0.9:8285") && p.contains(&route_to_1),
    );
    wait_peers(&bed, 1, "host 1's route to the third host", &d1, |p| {
        p.contains("100.96.250.0/24 198.18.0.9:8285") && p.contains(&route_to_2)
    });
    let log2 = d2.stderr();
    assert!(
        log2.contains("compacted") || log2.contains("listing the leases again"),
        "host 2's log does not mention the compaction:\n{log2}"
    );
    if log2.contains("listing the leases again") {
        eprintln!("host 2 saw the compaction on its watch stream and listed again");
    } else {
        eprintln!("host 2 saw the compaction when it created the watch");
    }
    // Still the same lease for host 2: nothing restarted.
    assert_eq!(log2.matches("wrote ").count(), 1, "{log2}");
    assert!(d2.is_running(), "{log2}");
}

#[test]
fn etcd_unreachable_at_start_is_retried() {
    require_root();
    let bed = Testbed::two_hosts("flf-unr").expect("two hosts");
    let dir = TempDir::new("weft-flf-unr").expect("a temp dir");
    let h1 = bed.host(1).netns();
    let endpoint = format!("http://{}:{}", underlay_addr(1), EtcdServer::CLIENT_PORT);
    let mut d1 = start(&bed, 1, &endpoint, dir.path(), &[]);
    wait_until(UP_TIMEOUT, "host 1 to say it is retrying", || {
        d1.stderr().contains("retrying")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d1.stderr()));
    assert!(d1.is_running(), "{}", d1.stderr());
    assert!(!subnet_file(dir.path(), 1).exists());

    let etcd = EtcdServer::start(h1, underlay_addr(1)).expect("etcd in host 1");
    assert_eq!(etcd.endpoint(), endpoint);
    put_udp_config(h1, &endpoint);
    let env = wait_written(dir.path(), 1, &d1);
    assert_eq!(env[0], "FLANNEL_NETWORK=100.96.0.0/16", "{env:?}");
    let s1 = leased_subnet(&env);
    let listed = leases(h1, &endpoint);
    assert_eq!(
        listed
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect::<Vec<_>>(),
        [(format!("{s1}-24"), udp_lease(underlay_addr(1)))],
        "{}",
        d1.stderr()
    );
    assert!(d1.is_running(), "{}", d1.stderr());
}

/// One `GET path HTTP/1.0` to `addr` from inside `netns`: the status and the body, `None`
/// if the connection or the exchange failed.
fn http_get(netns: &Netns, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    netns
        .run_inside(|| -> std::io::Result<(u16, String)> {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            let status = answer
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("not HTTP: {answer:?}")))?;
            let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            Ok((status, body.to_owned()))
        })
        .expect("run inside the namespace")
        .ok()
}

#[test]
fn health_endpoints_answer_as_flanneld() {
    require_root();
    let bed = Testbed::two_hosts("flf-hz").expect("two hosts");
    let dir = TempDir::new("weft-flf-hz").expect("a temp dir");
    let (h1, h2) = (bed.host(1).netns(), bed.host(2).netns());
    let etcd = EtcdServer::start(h1, underlay_addr(1)).expect("etcd in host 1");
    let endpoint = etcd.endpoint();
    let health = SocketAddr::new(underlay_addr(2).into(), 8099);
    let d2 = start(
        &bed,
        2,
        &endpoint,
        dir.path(),
        &["--healthz-port", "8099", "--healthz-ip", "198.18.0.2"],
    );
    wait_until(UP_TIMEOUT, "host 2 to say the config is missing", || {
        d2.stderr().contains("not found in etcd")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d2.stderr()));
    let healthz = wait_for(UP_TIMEOUT, "an answer on /healthz", || {
        http_get(h2, health, "/healthz")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d2.stderr()));
    assert_eq!(healthz, (200, "flanneld is running".to_owned()));
    let readyz = http_get(h2, health, "/readyz").expect("an answer on /readyz");
    assert_eq!(readyz, (503, "flanneld is not ready yet".to_owned()));
    let other = http_get(h2, health, "/metrics").expect("an answer on /metrics");
    assert_ne!(other.0, 200, "{other:?}");
    // Not on another address of the host: only the one asked for.
    let elsewhere = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 8099);
    assert_eq!(http_get(h2, elsewhere, "/healthz"), None);

    put_udp_config(h1, &endpoint);
    wait_written(dir.path(), 2, &d2);
    let mut last = None;
    wait_until(CHANGE_TIMEOUT, "/readyz to answer 200", || {
        last = http_get(h2, health, "/readyz");
        last.as_ref().is_some_and(|(status, _)| *status == 200)
    })
    .unwrap_or_else(|e| panic!("{e}: last {last:?}\n{}", d2.stderr()));
    assert_eq!(last, Some((200, "flanneld is ready".to_owned())));
    assert_eq!(
        http_get(h2, health, "/healthz"),
        Some((200, "flanneld is running".to_owned()))
    );
}

#[test]
fn sigterm_while_waiting_for_the_config_exits_cleanly() {
    // flanneld installs its SIGINT/SIGTERM handler before it waits for the config
    // (main.go), and `getConfig` returns errCanceled on it: flanneld exits 0.
    require_root();
    let bed = Testbed::two_hosts("flf-term").expect("two hosts");
    let dir = TempDir::new("weft-flf-term").expect("a temp dir");
    let h1 = bed.host(1).netns();
    let etcd = EtcdServer::start(h1, underlay_addr(1)).expect("etcd in host 1");
    let mut d1 = start(&bed, 1, &etcd.endpoint(), dir.path(), &[]);
    wait_until(UP_TIMEOUT, "host 1 to say the config is missing", || {
        d1.stderr().contains("not found in etcd")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d1.stderr()));
    let status = d1.terminate(TERMINATE_GRACE).expect("stop host 1");
    assert!(
        status.success(),
        "SIGTERM while waiting for the config: weft flannel exited {status}:\n{}",
        d1.stderr()
    );
    assert!(!subnet_file(dir.path(), 1).exists());
}
