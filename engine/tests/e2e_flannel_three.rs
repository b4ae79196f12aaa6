//! End-to-end tests of `weft flannel` with three hosts on one switch and etcd in a fourth
//! namespace (198.18.0.100): every host leases the subnet its previous subnet.env names,
//! writes its lease exactly as flanneld does, and pods on all three reach each other (udp
//! and vxlan backends). The udp test also follows a lease written by hand as flanneld
//! writes it, and its removal when its etcd lease is revoked. All need root.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::flannel::{
    find_lease, peers, start_flannel, subnet_file, subnet_leases, vtep_mac_of, with_client,
    write_previous_env, PREFIX, UP_TIMEOUT,
};
use common::require_root;
use weft_testbed::{
    ping, pod_addr, tcp_transfer, underlay_addr, wait_until, EtcdServer, Netns, NsChild, TempDir,
    Testbed, UDP_OVERLAY_MTU, UDP_PORT, UNDERLAY_IFNAME, VXLAN_OVERLAY_MTU,
};

/// How long a lease change may take to reach every host's table.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a lease written by hand may take to show in every host's `weft peer list`.
const HAND_LEASE_TIMEOUT: Duration = Duration::from_secs(5);
const HOSTS: [u8; 3] = [1, 2, 3];
/// The namespace that runs etcd, on the underlay at 198.18.0.100.
const ETCD_HOST: u8 = 100;
/// The pod on each host: `100.96.<host>.2`.
const POD: u8 = 2;
const TRANSFER_BYTES: u64 = 10 << 20;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Udp,
    Vxlan,
}

impl Backend {
    fn config(self) -> &'static str {
        match self {
            Backend::Udp => r#"{"Network":"100.96.0.0/16","Backend":{"Type":"udp"}}"#,
            Backend::Vxlan => r#"{"Network":"100.96.0.0/16","Backend":{"Type":"vxlan"}}"#,
        }
    }

    fn overlay_mtu(self) -> u32 {
        match self {
            Backend::Udp => UDP_OVERLAY_MTU,
            Backend::Vxlan => VXLAN_OVERLAY_MTU,
        }
    }
}

/// subnet.env of host `index` as flanneld writes it for subnet 100.96.<index>.0/24.
fn subnet_env(index: u8, mtu: u32) -> String {
    format!(
        "FLANNEL_NETWORK=100.96.0.0/16\nFLANNEL_SUBNET=100.96.{index}.1/24\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=false\n"
    )
}

/// Pins host `index` to 100.96.<index>.0/24: a previous subnet.env that names it (with a
/// stale MTU, so that the rewrite shows).
fn pin_subnet(dir: &Path, index: u8) {
    write_previous_env(dir, index, &format!("100.96.{index}.1"), 1);
}

/// `weft flannel --iface u0 --workers 1` on host `index`.
fn start(bed: &Testbed, index: u8, endpoint: &str, dir: &Path) -> NsChild {
    start_flannel(
        bed,
        index,
        endpoint,
        dir,
        &["--iface", UNDERLAY_IFNAME],
        &[],
        &[],
    )
}

/// Every daemon's log, for failure messages.
fn logs(daemons: &[NsChild]) -> String {
    HOSTS
        .iter()
        .zip(daemons)
        .map(|(h, d)| format!("--- host {h} ---\n{}", d.stderr()))
        .collect()
}

/// The udp route `weft peer list` shows for a lease of `subnet` held by `public_ip`.
fn udp_route(subnet: &str, public_ip: Ipv4Addr) -> String {
    format!("{subnet} {public_ip}:{UDP_PORT}")
}

/// Polls every host's `weft peer list` until `ok` holds for all of them, for at most
/// `timeout`; returns how long each host took. Panics with the tables and logs otherwise.
fn wait_all_peers(
    bed: &Testbed,
    daemons: &[NsChild],
    what: &str,
    timeout: Duration,
    ok: impl Fn(&str) -> bool,
) -> Vec<Duration> {
    let start = Instant::now();
    let mut took: Vec<Option<Duration>> = vec![None; HOSTS.len()];
    let mut last = vec![String::new(); HOSTS.len()];
    let done = wait_until(timeout, what, || {
        for (i, &host) in HOSTS.iter().enumerate() {
            if took[i].is_none() {
                last[i] = peers(bed, host);
                if ok(&last[i]) {
                    took[i] = Some(start.elapsed());
                }
            }
        }
        took.iter().all(Option::is_some)
    });
    if let Err(e) = done {
        let tables: String = HOSTS
            .iter()
            .zip(&last)
            .zip(&took)
            .map(|((h, t), d)| format!("host {h} (done after {d:?}):\n{t}\n"))
            .collect();
        panic!("{e}\n{tables}\n{}", logs(daemons));
    }
    took.into_iter().map(Option::unwrap).collect()
}

/// Three hosts with one pod each, etcd on 198.18.0.100 with `backend`'s config, all three
/// `weft flannel` daemons up on their pinned subnets; checks subnet.env, the daemons' logs,
/// the leases in etcd (flanneld's exact form, bound to etcd leases), every host's route to
/// the other two (udp), pings between every ordered pair of pods and one TCP transfer.
/// Then `more` runs with the testbed, the etcd namespace, the endpoint and the daemons.
fn three_hosts(
    name: &str,
    backend: Backend,
    more: impl FnOnce(&Testbed, &Netns, &str, &[NsChild]),
) {
    require_root();
    let test_start = Instant::now();
    let mut bed = Testbed::switched(name, 3).expect("three switched hosts");
    bed.add_host(ETCD_HOST).expect("the etcd namespace");
    for host in HOSTS {
        bed.add_pod(host, POD, backend.overlay_mtu())
            .expect("a pod on each host");
    }
    let dir = TempDir::new(name).expect("a temp dir");
    let etcd_ns = bed.host(ETCD_HOST).netns();
    let etcd = EtcdServer::start(etcd_ns, underlay_addr(ETCD_HOST)).expect("etcd");
    let endpoint = etcd.endpoint();
    assert_eq!(endpoint, "http://198.18.0.100:2379");
    with_client(etcd_ns, &endpoint, |c| {
        c.put(format!("{PREFIX}/config"), backend.config(), 0)
            .unwrap()
    });

    let up_start = Instant::now();
    let daemons: Vec<NsChild> = HOSTS
        .iter()
        .map(|&h| {
            pin_subnet(dir.path(), h);
            start(&bed, h, &endpoint, dir.path())
        })
        .collect();
    for (&host, daemon) in HOSTS.iter().zip(&daemons) {
        let path = subnet_file(dir.path(), host);
        let want = subnet_env(host, backend.overlay_mtu());
        wait_until(UP_TIMEOUT, &format!("host {host}'s subnet.env"), || {
            std::fs::read_to_string(&path).is_ok_and(|t| t == want)
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}: {:?}\n{}",
                path.display(),
                std::fs::read_to_string(&path),
                logs(&daemons)
            )
        });
        let log = daemon.stderr();
        for want in [
            format!(
                "using interface {UNDERLAY_IFNAME} ({}, mtu 1500)",
                underlay_addr(host)
            ),
            format!(
                "leased 100.96.{host}.0-24 for 86400 s (the subnet of the previous subnet.env)"
            ),
        ] {
            assert!(log.contains(&want), "host {host}: {want:?} not in:\n{log}");
        }
    }
    eprintln!(
        "{name}: three hosts wrote their subnet.env {:?} after starting",
        up_start.elapsed()
    );

    // Each host's own lease, exactly as flanneld writes it, bound to a 24 h etcd lease.
    let leases = subnet_leases(etcd_ns, &endpoint);
    assert_eq!(leases.len(), 3, "{leases:?}");
    for host in HOSTS {
        let key = format!("{PREFIX}/subnets/100.96.{host}.0-24");
        let kv = find_lease(&leases, &key);
        let value = kv.value_str().unwrap();
        match backend {
            Backend::Udp => assert_eq!(
                value,
                format!(
                    r#"{{"PublicIP":"{}","PublicIPv6":null}}"#,
                    underlay_addr(host)
                ),
                "{key}"
            ),
            Backend::Vxlan => {
                vtep_mac_of(value, underlay_addr(host));
            }
        }
        assert_ne!(kv.lease, 0, "{key} is bound to an etcd lease");
        let ttl = with_client(etcd_ns, &endpoint, |c| {
            c.lease_time_to_live(kv.lease).unwrap()
        });
        assert!(
            ttl.is_some_and(|t| t > 86_000 && t <= 86_400),
            "{key}: ttl {ttl:?}"
        );
    }
    if backend == Backend::Vxlan {
        let macs: std::collections::BTreeSet<String> = leases
            .iter()
            .map(|kv| {
                let host = HOSTS
                    .iter()
                    .copied()
                    .find(|h| kv.key_str() == Some(&format!("{PREFIX}/subnets/100.96.{h}.0-24")))
                    .unwrap();
                vtep_mac_of(kv.value_str().unwrap(), underlay_addr(host))
            })
            .collect();
        assert_eq!(macs.len(), 3, "three distinct VTEP MACs: {leases:?}");
    }

    // udp: every host routes the other two hosts' subnets to their public IP, and nothing else.
    if backend == Backend::Udp {
        for &host in &HOSTS {
            let table = peers(&bed, host);
            wait_until(CHANGE_TIMEOUT, &format!("host {host}'s routes"), || {
                let table = peers(&bed, host);
                HOSTS.iter().filter(|&&o| o != host).all(|&o| {
                    table.contains(&udp_route(&format!("100.96.{o}.0/24"), underlay_addr(o)))
                })
            })
            .unwrap_or_else(|e| panic!("{e}\n{table}\n{}", logs(&daemons)));
            let table = peers(&bed, host);
            assert!(
                !table.contains(&format!("100.96.{host}.0/24")),
                "host {host} routes its own subnet away:\n{table}"
            );
        }
    }

    // Every ordered pair of pods: the first ping may wait for the routes (and, for vxlan,
    // nothing else: the neighbours are static), then three more must all come back.
    let ping_start = Instant::now();
    for from in HOSTS {
        for to in HOSTS.iter().copied().filter(|&to| to != from) {
            let source = bed.host(from).pod(POD).netns();
            let destination = pod_addr(to, POD);
            wait_until(
                UP_TIMEOUT,
                &format!("a ping from pod {} to {destination}", pod_addr(from, POD)),
                || ping(source, destination, 1).is_ok_and(|s| s.all_received()),
            )
            .unwrap_or_else(|e| panic!("{e}\n{}", logs(&daemons)));
            let summary = ping(source, destination, 3).expect("ping");
            assert!(
                summary.all_received(),
                "pod {} -> {destination}: {summary}\n{}",
                pod_addr(from, POD),
                summary.output
            );
        }
    }
    eprintln!(
        "{name}: all 6 pod pairs answered pings ({:?})",
        ping_start.elapsed()
    );

    // A pod-to-pod TCP transfer from host 1 to host 3 (through both hosts' daemons).
    let transfer = tcp_transfer(
        bed.host(1).pod(POD).netns(),
        bed.host(3).pod(POD).netns(),
        pod_addr(3, POD),
        5001,
        TRANSFER_BYTES,
        TRANSFER_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("pod 1 -> pod 3: {e}\n{}", logs(&daemons)));
    assert!(transfer.intact(), "{transfer}");
    assert_eq!(transfer.bytes_received, TRANSFER_BYTES, "{transfer}");
    eprintln!("{name}: pod 1 -> pod 3: {transfer}");

    more(&bed, etcd_ns, &endpoint, &daemons);

    // No daemon died or restarted along the way: one subnet.env write each.
    for (&host, daemon) in HOSTS.iter().zip(&daemons) {
        let log = daemon.stderr();
        assert_eq!(log.matches("wrote ").count(), 1, "host {host}:\n{log}");
    }
    let mut daemons = daemons;
    for (&host, daemon) in HOSTS.iter().zip(daemons.iter_mut()) {
        assert!(
            daemon.is_running(),
            "host {host} exited:\n{}",
            daemon.stderr()
        );
    }
    eprintln!("{name}: took {:?} in all", test_start.elapsed());
    drop(daemons);
    drop(etcd);
}

#[test]
fn three_udp_hosts_reach_each_other_pod_to_pod() {
    three_hosts(
        "fl3-udp",
        Backend::Udp,
        |bed, etcd_ns, endpoint, daemons| {
            // A fourth host's lease, written by hand exactly as flanneld writes it: a 24 h etcd
            // lease, then the key bound to it.
            let key = format!("{PREFIX}/subnets/100.96.77.0-24");
            let public_ip = Ipv4Addr::new(198, 18, 0, 77);
            let route = udp_route("100.96.77.0/24", public_ip);
            let lease_id = with_client(etcd_ns, endpoint, |c| {
                let lease = c.lease_grant(86_400).unwrap();
                assert_eq!(lease.ttl, 86_400, "{lease:?}");
                c.put(
                    &key,
                    format!(r#"{{"PublicIP":"{public_ip}","PublicIPv6":null}}"#),
                    lease.id,
                )
                .unwrap();
                lease.id
            });
            assert_ne!(lease_id, 0);
            let took = wait_all_peers(
                bed,
                daemons,
                "the hand-written lease in every peer list",
                HAND_LEASE_TIMEOUT,
                |p| p.contains(&route),
            );
            for (host, t) in HOSTS.iter().zip(&took) {
                eprintln!("host {host}: the hand-written lease showed in its peer list {t:?} after the put");
            }
            let kv = with_client(etcd_ns, endpoint, |c| c.get(&key).unwrap()).expect("the lease");
            assert_eq!(
                kv.lease, lease_id,
                "the key is still bound to our etcd lease"
            );

            // Revoking the etcd lease deletes the key: every host drops the route, and keeps
            // its routes to the two other hosts.
            let revoked = Instant::now();
            with_client(etcd_ns, endpoint, |c| c.lease_revoke(lease_id).unwrap());
            assert!(
                with_client(etcd_ns, endpoint, |c| c.get(&key).unwrap()).is_none(),
                "revoking the etcd lease deletes {key}"
            );
            let took = wait_all_peers(
                bed,
                daemons,
                "the revoked lease's route gone from every peer list",
                CHANGE_TIMEOUT,
                |p| !p.contains("100.96.77.0/24"),
            );
            for (host, t) in HOSTS.iter().zip(&took) {
                eprintln!("host {host}: the revoked lease's route went after {t:?}");
            }
            eprintln!(
                "revocation handled everywhere {:?} after it",
                revoked.elapsed()
            );
            for &host in &HOSTS {
                let table = peers(bed, host);
                for other in HOSTS.iter().copied().filter(|&o| o != host) {
                    let want = udp_route(&format!("100.96.{other}.0/24"), underlay_addr(other));
                    assert!(
                        table.contains(&want),
                        "host {host} lost {want:?}:\n{table}\n{}",
                        logs(daemons)
                    );
                }
            }
            // And traffic still flows across the remaining routes.
            let summary = ping(bed.host(2).pod(POD).netns(), pod_addr(1, POD), 3).expect("ping");
            assert!(summary.all_received(), "after the revocation: {summary}");
        },
    );
}

#[test]
fn three_vxlan_hosts_reach_each_other_pod_to_pod() {
    three_hosts("fl3-vx", Backend::Vxlan, |_, _, _, _| {});
}
