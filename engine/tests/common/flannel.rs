//! Helpers shared by the `weft flannel` end-to-end tests: etcd clients inside a namespace,
//! starting the daemon, its subnet.env, its routing table, and flanneld's lease forms.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weft::control::etcd::{Client, EtcdConfig, Kv};
use weft_testbed::{wait_until, Netns, NsChild, Testbed};

use super::weft_exe;

/// flanneld's default etcd prefix.
pub const PREFIX: &str = "/coreos.com/network";
/// A udp network config as an operator writes it.
pub const CONFIG_UDP: &str = r#"{"Network":"100.96.0.0/16","Backend":{"Type":"udp"}}"#;
/// How long a host may take to lease a subnet and come up.
pub const UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a lease change may take to reach a host's table.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `f` with an etcd client inside `netns` (no traffic in the root namespace).
pub fn with_client<T: Send>(
    netns: &Netns,
    endpoint: &str,
    f: impl FnOnce(&Client) -> T + Send,
) -> T {
    netns
        .run_inside(|| {
            let client = Client::new(EtcdConfig::new([endpoint])).expect("an etcd client");
            f(&client)
        })
        .expect("run inside the namespace")
}

/// Puts `config` at `<prefix>/config`.
pub fn put_config(netns: &Netns, endpoint: &str, config: &str) {
    with_client(netns, endpoint, |c| {
        c.put(format!("{PREFIX}/config"), config, 0)
            .expect("put the config")
    });
}

/// Every subnet lease in etcd (the keys under `<prefix>/subnets/`).
pub fn subnet_leases(netns: &Netns, endpoint: &str) -> Vec<Kv> {
    with_client(netns, endpoint, |c| {
        c.range_prefix(format!("{PREFIX}/subnets/"))
            .expect("read the subnet leases")
            .kvs
    })
}

/// The lease stored at `key` among `leases`; panics naming the key if there is none.
pub fn find_lease<'a>(leases: &'a [Kv], key: &str) -> &'a Kv {
    leases
        .iter()
        .find(|kv| kv.key_str() == Some(key))
        .unwrap_or_else(|| panic!("no {key} in {leases:?}"))
}

/// Where host `index` keeps its subnet.env under `dir`.
pub fn subnet_file(dir: &Path, index: u8) -> PathBuf {
    dir.join(format!("run{index}/subnet.env"))
}

/// `weft flannel --workers 1` on host `index` with its subnet file and state in `dir`, the
/// interface chosen by `iface` (e.g. `["--iface", "u0"]`), `extra` flags and `env`.
pub fn start_flannel(
    bed: &Testbed,
    index: u8,
    endpoint: &str,
    dir: &Path,
    iface: &[&str],
    extra: &[&str],
    env: &[(&str, &str)],
) -> NsChild {
    let subnet_file = subnet_file(dir, index);
    let state = dir.join(format!("state{index}"));
    let mut argv = vec![
        weft_exe().to_str().unwrap(),
        "flannel",
        "--etcd-endpoints",
        endpoint,
        "--subnet-file",
        subnet_file.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--workers",
        "1",
    ];
    argv.extend_from_slice(iface);
    argv.extend_from_slice(extra);
    let mut vars = vec![("WEFT_LOG", "info")];
    vars.extend_from_slice(env);
    bed.host(index)
        .netns()
        .spawn_with_env(&argv, &vars)
        .expect("start weft flannel")
}

/// Waits until `daemon` logged that it wrote its subnet.env (so a file left by an earlier
/// run does not count), and returns the file's `KEY=value` lines.
pub fn wait_written(dir: &Path, index: u8, daemon: &NsChild) -> Vec<String> {
    let path = subnet_file(dir, index);
    let wrote = format!("wrote {}", path.display());
    wait_until(
        UP_TIMEOUT,
        &format!("host {index} to write {wrote}"),
        || daemon.stderr().contains(&wrote),
    )
    .unwrap_or_else(|e| panic!("{e}\nhost {index}'s log:\n{}", daemon.stderr()));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `FLANNEL_SUBNET`'s network address: `100.96.X.1/24` -> `100.96.X.0`.
pub fn leased_subnet(env: &[String]) -> Ipv4Addr {
    let line = env
        .iter()
        .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
        .unwrap_or_else(|| panic!("no FLANNEL_SUBNET in {env:?}"));
    assert!(line.ends_with("/24"), "{env:?}");
    let addr: Ipv4Addr = line.split('/').next().unwrap().parse().unwrap();
    Ipv4Addr::from(u32::from(addr) - 1)
}

/// A subnet.env as flanneld leaves it, with `FLANNEL_SUBNET=<subnet_dot_one>/24` and
/// `FLANNEL_MTU=<mtu>`: what a host's next start takes as its previous subnet.
pub fn write_previous_env(dir: &Path, index: u8, subnet_dot_one: &str, mtu: u32) {
    let path = subnet_file(dir, index);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        format!(
            "FLANNEL_NETWORK=100.96.0.0/16\nFLANNEL_SUBNET={subnet_dot_one}/24\n\
             FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=false\n"
        ),
    )
    .unwrap();
}

/// `weft peer list` on host `index`, of the daemon that answers: the udp backend's
/// `flannel0`, else the vxlan backend's `flannel.1`.
pub fn peers(bed: &Testbed, index: u8) -> String {
    ["flannel0", "flannel.1"]
        .iter()
        .find_map(|device| {
            let argv = [
                weft_exe().to_str().unwrap(),
                "peer",
                "list",
                "--device",
                device,
            ];
            bed.host(index)
                .netns()
                .exec(&argv)
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        })
        .unwrap_or_default()
}

/// Polls host `index`'s `weft peer list` until `ok` holds; panics with it and the log.
pub fn wait_peers(
    bed: &Testbed,
    index: u8,
    what: &str,
    daemon: &NsChild,
    ok: impl Fn(&str) -> bool,
) {
    let mut last = String::new();
    if wait_until(CHANGE_TIMEOUT, what, || {
        last = peers(bed, index);
        ok(&last)
    })
    .is_err()
    {
        panic!(
            "host {index}: {what}; peer list:\n{last}\nlog:\n{}",
            daemon.stderr()
        );
    }
}

/// The lease value flanneld's udp backend writes for `public_ip`.
pub fn udp_lease(public_ip: Ipv4Addr) -> String {
    format!(r#"{{"PublicIP":"{public_ip}","PublicIPv6":null}}"#)
}

/// The VTEP MAC of a vxlan lease value, which must otherwise be exactly flanneld's form.
pub fn vtep_mac_of(value: &str, public_ip: Ipv4Addr) -> String {
    let head = format!(
        r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":""#
    );
    let mac = value
        .strip_prefix(&head)
        .and_then(|rest| rest.strip_suffix(r#""}}"#))
        .unwrap_or_else(|| panic!("not flanneld's vxlan lease form: {value}"));
    let octets: Vec<&str> = mac.split(':').collect();
    assert!(
        octets.len() == 6
            && octets
                .iter()
                .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit())),
        "a MAC: {value}"
    );
    mac.to_owned()
}
