//! The etcd v3 client (`weft::control::etcd`) against a real etcd (Debian's `etcd-server`),
//! each test with its own etcd inside its own network namespace. The client always runs on a
//! thread inside that namespace ([`Netns::run_inside`]): no traffic in the root namespace.

use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use weft::control::etcd::{Client, EtcdConfig, EtcdError, Watch, WatchBatch, WatchEvent};
use weft_testbed::{make_test_certificates, wait_for, EtcdServer, EtcdTls, Netns, TempDir};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// How long anything etcd does may take to show.
const WAIT: Duration = Duration::from_secs(20);
const PREFIX: &str = "/coreos.com/network/subnets/";

fn require_root() {
    assert!(
        weft_testbed::is_root(),
        "these tests run etcd in network namespaces and must run as root (./.ci/run does)"
    );
}

fn new_client(endpoints: &[&str]) -> Client {
    let mut config = EtcdConfig::new(endpoints.iter().copied());
    config.timeout = Duration::from_secs(3);
    Client::new(config).expect("a valid client configuration")
}

/// Reads batches from `watch` on a thread of its own until `done` holds for the events seen
/// so far, or [`WAIT`] passes; returns the events and the watch's final error, if any.
fn collect_events(
    watch: Watch,
    mut done: impl FnMut(&[WatchEvent]) -> bool,
) -> (Vec<WatchEvent>, Option<EtcdError>) {
    let (sender, receiver) = mpsc::channel::<Result<WatchBatch, EtcdError>>();
    // The thread ends when the watch fails or when the receiver is gone and a batch arrives;
    // the test does not wait for it.
    thread::spawn(move || {
        let mut watch = watch;
        loop {
            let batch = watch.recv();
            let failed = batch.is_err();
            if sender.send(batch).is_err() || failed {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut events = Vec::new();
    while !done(&events) {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(Ok(batch)) => events.extend(batch.events),
            Ok(Err(error)) => return (events, Some(error)),
            Err(_) => panic!("timed out after {WAIT:?}; events so far: {events:?}"),
        }
    }
    (events, None)
}

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

#[test]
fn put_get_range_create_if_absent_and_delete() {
    require_root();
    let netns = Netns::new("etcd-kv").unwrap();
    let etcd = EtcdServer::start(&netns, LOCALHOST).unwrap();
    let endpoint = etcd.endpoint();
    netns
        .run_inside(|| {
            let client = new_client(&[&endpoint]);
            assert_eq!(client.get(key("10.5.1.0-24")).unwrap(), None);

            let revision = client.put(key("10.5.1.0-24"), b"one", 0).unwrap();
            let kv = client
                .get(key("10.5.1.0-24"))
                .unwrap()
                .expect("the key exists");
            assert_eq!(kv.value_str(), Some("one"));
            assert_eq!((kv.lease, kv.version), (0, 1));
            assert_eq!((kv.create_revision, kv.mod_revision), (revision, revision));

            let overwritten = client.put(key("10.5.1.0-24"), b"two", 0).unwrap();
            let kv = client.get(key("10.5.1.0-24")).unwrap().unwrap();
            assert_eq!((kv.version, kv.mod_revision), (2, overwritten));
            assert_eq!(kv.create_revision, revision);

            // create_if_absent: first wins, the second leaves the value alone.
            assert!(client
                .create_if_absent(key("10.5.2.0-24"), b"first", 0)
                .unwrap());
            assert!(!client
                .create_if_absent(key("10.5.2.0-24"), b"second", 0)
                .unwrap());
            let kv = client.get(key("10.5.2.0-24")).unwrap().unwrap();
            assert_eq!(kv.value_str(), Some("first"));

            // The prefix range holds exactly the keys under the prefix, in order.
            client
                .put(
                    "/coreos.com/network/config",
                    br#"{"Network":"10.5.0.0/16"}"#,
                    0,
                )
                .unwrap();
            client
                .put("/coreos.com/network/subnets0", b"not under the prefix", 0)
                .unwrap();
            let listing = client.range_prefix(PREFIX).unwrap();
            let keys: Vec<_> = listing.kvs.iter().filter_map(|kv| kv.key_str()).collect();
            assert_eq!(keys, [key("10.5.1.0-24"), key("10.5.2.0-24")]);
            assert!(listing.revision >= kv.mod_revision + 2, "{listing:?}");
            // Binary keys and values survive the base64 round trip.
            client.put(b"/bin/\xff\x00", b"\x00\x01\xfe", 0).unwrap();
            let kv = client.get(b"/bin/\xff\x00").unwrap().unwrap();
            assert_eq!(kv.value, b"\x00\x01\xfe");
            assert_eq!(client.range_prefix(b"/bin/\xff").unwrap().kvs.len(), 1);

            assert!(client.delete(key("10.5.1.0-24")).unwrap());
            assert!(!client.delete(key("10.5.1.0-24")).unwrap());
            assert_eq!(client.get(key("10.5.1.0-24")).unwrap(), None);
            // Once deleted, a key can be created again.
            assert!(client
                .create_if_absent(key("10.5.1.0-24"), b"again", 0)
                .unwrap());
        })
        .unwrap();
}

#[test]
fn leases_grant_time_to_live_revoke_and_expiry() {
    require_root();
    let netns = Netns::new("etcd-lease").unwrap();
    let etcd = EtcdServer::start(&netns, LOCALHOST).unwrap();
    let endpoint = etcd.endpoint();
    netns
        .run_inside(|| {
            let client = new_client(&[&endpoint]);
            let lease = client.lease_grant(86_400).unwrap();
            assert_ne!(lease.id, 0);
            assert_eq!(lease.ttl, 86_400);
            assert!(client
                .create_if_absent(key("10.5.3.0-24"), b"leased", lease.id)
                .unwrap());
            client.put(key("10.5.4.0-24"), b"reservation", 0).unwrap();

            let listing = client.range_prefix(PREFIX).unwrap();
            let leased = &listing.kvs[0];
            assert_eq!(leased.lease, lease.id);
            let left = client.lease_time_to_live(leased.lease).unwrap();
            assert!(
                left.is_some_and(|left| left > 86_000 && left <= 86_400),
                "{left:?}"
            );
            // A key without a lease: etcd answers TTL -1 for lease 0.
            let reservation = &listing.kvs[1];
            assert_eq!(reservation.lease, 0);
            assert_eq!(client.lease_time_to_live(reservation.lease).unwrap(), None);
            assert_eq!(client.lease_time_to_live(0x1234_5678).unwrap(), None);

            // Revoking deletes the attached key; the lease is gone afterwards.
            client.lease_revoke(lease.id).unwrap();
            assert_eq!(client.get(key("10.5.3.0-24")).unwrap(), None);
            assert_eq!(client.lease_time_to_live(lease.id).unwrap(), None);
            let error = client.lease_revoke(lease.id).unwrap_err();
            assert!(error.is_not_found(), "{error}");
            assert!(error.to_string().contains("lease not found"), "{error}");
            // A put with an unknown lease is refused.
            let error = client.put(key("x"), b"x", lease.id).unwrap_err();
            assert!(error.is_not_found(), "{error}");

            // A short lease expires by itself and takes its key along.
            let short = client.lease_grant(2).unwrap();
            client.put(key("10.5.5.0-24"), b"short", short.id).unwrap();
            wait_for(WAIT, "the short lease to expire", || {
                client
                    .get(key("10.5.5.0-24"))
                    .unwrap()
                    .is_none()
                    .then_some(())
            })
            .unwrap();
            assert_eq!(client.lease_time_to_live(short.id).unwrap(), None);
        })
        .unwrap();
}

#[test]
fn watch_sees_puts_and_deletes_after_its_start_revision() {
    require_root();
    let netns = Netns::new("etcd-watch").unwrap();
    let etcd = EtcdServer::start(&netns, LOCALHOST).unwrap();
    let endpoint = etcd.endpoint();
    netns
        .run_inside(|| {
            let client = new_client(&[&endpoint]);
            client.put(key("before"), b"old", 0).unwrap();
            let listing = client.range_prefix(PREFIX).unwrap();
            let watch = client.watch_prefix(PREFIX, listing.revision + 1).unwrap();
            assert_eq!(watch.endpoint(), endpoint);

            client.put("/elsewhere/a", b"not watched", 0).unwrap();
            let lease = client.lease_grant(60).unwrap();
            client.put(key("a"), b"1", lease.id).unwrap();
            client.put(key("a"), b"2", lease.id).unwrap();
            let deleted_at = client.put(key("b"), b"3", 0).unwrap() + 1;
            client.delete(key("b")).unwrap();
            client.lease_revoke(lease.id).unwrap();

            let (events, error) = collect_events(watch, |events| events.len() >= 5);
            assert!(error.is_none(), "{error:?}");
            let summary: Vec<String> = events
                .iter()
                .map(|event| match event {
                    WatchEvent::Put(kv) => format!(
                        "put {} {} lease={}",
                        kv.key_str().unwrap_or("?"),
                        kv.value_str().unwrap_or("?"),
                        kv.lease == lease.id
                    ),
                    WatchEvent::Delete { key, .. } => {
                        format!("delete {}", String::from_utf8_lossy(key))
                    }
                })
                .collect();
            assert_eq!(
                summary,
                [
                    format!("put {} 1 lease=true", key("a")),
                    format!("put {} 2 lease=true", key("a")),
                    format!("put {} 3 lease=false", key("b")),
                    format!("delete {}", key("b")),
                    // Revoking the lease deletes the key: a DELETE like any other.
                    format!("delete {}", key("a")),
                ]
            );
            assert!(matches!(
                &events[3],
                WatchEvent::Delete { mod_revision, .. } if *mod_revision == deleted_at
            ));

            // A watch from an older revision replays the history from there.
            let replay = client.watch_prefix(PREFIX, listing.revision).unwrap();
            let (events, error) = collect_events(replay, |events| !events.is_empty());
            assert!(error.is_none(), "{error:?}");
            assert!(
                matches!(&events[0], WatchEvent::Put(kv) if kv.key == key("before").as_bytes()),
                "{events:?}"
            );
        })
        .unwrap();
}

#[test]
fn compaction_is_reported_so_the_caller_lists_again() {
    require_root();
    let netns = Netns::new("etcd-compact").unwrap();
    let etcd = EtcdServer::start(&netns, LOCALHOST).unwrap();
    let endpoint = etcd.endpoint();
    netns
        .run_inside(|| {
            let client = new_client(&[&endpoint]);
            let first = client.put(key("a"), b"1", 0).unwrap();
            client.put(key("a"), b"2", 0).unwrap();
            let last = client.put(key("b"), b"3", 0).unwrap();
            etcd.compact(last).unwrap();

            // etcd 3.4 confirms the watch, then cancels it with compact_revision.
            let error = match client.watch_prefix(PREFIX, first) {
                Err(error) => error,
                Ok(watch) => collect_events(watch, |_| false)
                    .1
                    .expect("the watch fails"),
            };
            assert!(error.is_compacted(), "{error}");
            assert!(
                matches!(error, EtcdError::Compacted { compact_revision, .. } if compact_revision == last),
                "{error}"
            );

            // What the caller does then: list again and watch from the listing.
            let listing = client.range_prefix(PREFIX).unwrap();
            assert_eq!(listing.kvs.len(), 2);
            let watch = client.watch_prefix(PREFIX, listing.revision + 1).unwrap();
            client.put(key("c"), b"4", 0).unwrap();
            let (events, error) = collect_events(watch, |events| !events.is_empty());
            assert!(error.is_none(), "{error:?}");
            assert!(matches!(&events[0], WatchEvent::Put(kv) if kv.value == b"4"));
        })
        .unwrap();
}

#[test]
fn etcd_lost_ends_the_watch_and_the_client_recovers_after_a_restart() {
    require_root();
    let netns = Netns::new("etcd-lost").unwrap();
    let mut etcd = EtcdServer::start(&netns, LOCALHOST).unwrap();
    let endpoint = etcd.endpoint();
    netns
        .run_inside(|| {
            let client = new_client(&[&endpoint]);
            client.put(key("a"), b"1", 0).unwrap();
            let listing = client.range_prefix(PREFIX).unwrap();
            let watch = client.watch_prefix(PREFIX, listing.revision + 1).unwrap();

            etcd.stop().unwrap();
            let (events, error) = collect_events(watch, |_| false);
            assert!(events.is_empty());
            let error = error.expect("the watch ends");
            assert!(error.is_unreachable(), "{error}");

            let error = client.range_prefix(PREFIX).unwrap_err();
            assert!(error.is_unreachable(), "{error}");
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("etcd at {endpoint}: range {PREFIX}: ")),
                "{message}"
            );

            // etcd comes back with its data; the same client carries on, and a watch from
            // the last revision seen misses nothing.
            etcd.restart().unwrap();
            let kv = client.get(key("a")).unwrap().expect("the data survived");
            assert_eq!(kv.value, b"1");
            client.put(key("b"), b"2", 0).unwrap();
            let watch = client.watch_prefix(PREFIX, listing.revision + 1).unwrap();
            let (events, error) = collect_events(watch, |events| !events.is_empty());
            assert!(error.is_none(), "{error:?}");
            assert!(matches!(&events[0], WatchEvent::Put(kv) if kv.key == key("b").as_bytes()));
        })
        .unwrap();
}

#[test]
fn a_dead_endpoint_fails_over_to_the_next() {
    require_root();
    let netns = Netns::new("etcd-failover").unwrap();
    let etcd = EtcdServer::start(&netns, LOCALHOST).unwrap();
    let endpoint = etcd.endpoint();
    // Nothing listens there: connection refused.
    let dead = "http://127.0.0.1:2381";
    netns
        .run_inside(|| {
            let client = new_client(&[dead, &endpoint]);
            client.put(key("a"), b"1", 0).unwrap();
            assert!(client.get(key("a")).unwrap().is_some());
            let watch = client.watch_prefix(PREFIX, 0).unwrap();
            assert_eq!(watch.endpoint(), endpoint);

            // A fresh client whose first request is a watch fails over as well.
            let fresh = new_client(&[dead, &endpoint]);
            assert_eq!(fresh.watch_prefix(PREFIX, 1).unwrap().endpoint(), endpoint);

            // Only dead endpoints: the error names the endpoint and the operation.
            let dead_only = new_client(&[dead]);
            let error = dead_only.get(key("a")).unwrap_err();
            assert!(error.is_unreachable(), "{error}");
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("etcd at {dead}: get {}: ", key("a"))),
                "{message}"
            );
        })
        .unwrap();
}

#[test]
fn basic_auth_authenticates_and_authenticates_again_after_a_restart() {
    require_root();
    let netns = Netns::new("etcd-auth").unwrap();
    let mut etcd = EtcdServer::start(&netns, LOCALHOST).unwrap();
    let endpoint = etcd.endpoint();
    let with_password = |password: &str| {
        let mut config = EtcdConfig::new([endpoint.as_str()]);
        config.username = Some("root".to_owned());
        config.password = Some(password.to_owned());
        Client::new(config).unwrap()
    };
    netns
        .run_inside(|| {
            // Credentials against a server without auth: used without a token.
            let early = with_password("s3cret");
            early.put(key("a"), b"1", 0).unwrap();

            etcd.enable_auth("s3cret").unwrap();
            let anonymous = new_client(&[&endpoint]);
            let error = anonymous.get(key("a")).unwrap_err();
            assert!(matches!(error, EtcdError::Server { .. }), "{error}");

            let error = with_password("wrong").get(key("a")).unwrap_err();
            assert!(
                error.to_string().contains("authentication failed"),
                "{error}"
            );

            let client = with_password("s3cret");
            assert_eq!(client.get(key("a")).unwrap().unwrap().value, b"1");
            // The client that first saw auth disabled notices and authenticates.
            assert_eq!(early.get(key("a")).unwrap().unwrap().value, b"1");

            // A restart forgets the simple tokens (kept in memory only), so the client is told
            // "invalid auth token" and authenticates again, for unary calls and for watches.
            // Quirk: a restart replays the raft log from the last backend write on, and with
            // it the authentications since then: a token survives a restart unless something
            // was written after it was issued. Hence a put before each restart.
            client.put(key("b"), b"2", 0).unwrap();
            etcd.restart().unwrap();
            let listing = client.range_prefix(PREFIX).unwrap();
            assert_eq!(listing.kvs.len(), 2);
            client.put(key("c"), b"3", 0).unwrap();
            etcd.restart().unwrap();
            let watch = client.watch_prefix(PREFIX, listing.revision + 2).unwrap();
            client.delete(key("b")).unwrap();
            let (events, error) = collect_events(watch, |events| !events.is_empty());
            assert!(error.is_none(), "{error:?}");
            assert!(
                matches!(&events[0], WatchEvent::Delete { key: k, .. } if k == key("b").as_bytes())
            );
        })
        .unwrap();
}

#[test]
fn tls_with_client_certificates() {
    require_root();
    let dir = TempDir::new("weft-etcd-tls").unwrap();
    if !make_test_certificates(dir.path(), LOCALHOST).expect("openssl") {
        eprintln!("openssl is not installed: TLS left untested");
        return;
    }
    let file = |name: &str| dir.path().join(name);
    let netns = Netns::new("etcd-tls").unwrap();
    let tls = EtcdTls {
        cert_file: file("server.pem"),
        key_file: file("server.key"),
        ca_file: file("ca.pem"),
    };
    let etcd = EtcdServer::start_tls(&netns, LOCALHOST, tls).unwrap();
    let endpoint = etcd.endpoint();
    assert!(endpoint.starts_with("https://"));
    netns
        .run_inside(|| {
            let mut config = EtcdConfig::new([endpoint.as_str()]);
            config.ca_file = Some(file("ca.pem"));
            config.cert_file = Some(file("client.pem"));
            config.key_file = Some(file("client.key"));
            let client = Client::new(config.clone()).unwrap();
            wait_for(WAIT, "etcd to answer over TLS", || {
                client.put(key("tls"), b"yes", 0).ok()
            })
            .unwrap();
            assert_eq!(client.get(key("tls")).unwrap().unwrap().value, b"yes");
            let watch = client.watch_prefix(PREFIX, 1).unwrap();
            let (events, error) = collect_events(watch, |events| !events.is_empty());
            assert!(error.is_none(), "{error:?}");
            assert_eq!(events.len(), 1);

            // Without a client certificate (a CA alone is ignored, as flanneld does) the
            // server is not trusted and would not accept us anyway.
            config.cert_file = None;
            config.key_file = None;
            let error = Client::new(config).unwrap().get(key("tls")).unwrap_err();
            assert!(error.is_unreachable(), "{error}");
        })
        .unwrap();
}
