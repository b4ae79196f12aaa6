//! The control socket: add, remove and list peers, read counters, at runtime.
//!
//! A Unix stream socket, by default `@weft/<device>` in the abstract namespace. Abstract
//! sockets belong to the network namespace, so every host of a namespace test bed (and every
//! container) has its own, and `ip netns exec hostA weft peer list` talks to hostA's daemon.
//! Only root and the daemon's own user may use it (checked with `SO_PEERCRED`); others get
//! their request read and answered with `error: permission denied`, and are logged at most
//! once per 10 s.
//!
//! Clients are served concurrently on one poll loop of the control thread (the data plane
//! never waits on it): each has 5 s for its whole conversation, at most 128 are held, and a
//! new client past that drops the one that has waited longest.
//!
//! The protocol is one request line, answered by zero or more data lines and a final
//! `ok` or `error: <message>` line:
//!
//! ```text
//! peer add 100.96.2.0/24 198.18.0.2[:port] [vtep-mac]
//! peer del 100.96.2.0/24
//! peer list                  -> "<subnet> <endpoint>[ <vtep-mac>]" lines
//! neigh add 100.96.0.12 02:00:00:aa:00:0c   (VXLAN l2: what the ARP/ND proxy answers)
//! neigh del 100.96.0.12
//! neigh list                 -> "<ip> <mac> static|learned" lines
//! stats                      -> "<counter> <value>" lines
//! ```

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use weft_encap::acl::Acl;
use weft_encap::table::{Cidr, Route};
use weft_encap::wire::EthernetAddress;

use crate::control::config::{endpoint_problem, parse_endpoint};
use crate::dataplane::counters::Stats;
use crate::dataplane::engine::Inspector;
use crate::dataplane::routes::RouteTable;
use weft_encap::vxlan::{VxlanBackend, VxlanMode};

/// A control-socket failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The socket could not be bound.
    #[error("cannot listen on control socket {socket}: {source}")]
    Bind {
        /// The socket name.
        socket: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The daemon could not be reached.
    #[error("cannot reach weft's control socket {socket}: {source} (is `weft run` running in this network namespace? see --device / --control)")]
    Connect {
        /// The socket name.
        socket: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The conversation broke off.
    #[error("control socket {socket}: {source}")]
    Io {
        /// The socket name.
        socket: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The daemon refused the request.
    #[error("{0}")]
    Refused(String),
}

fn unix_addr(socket: &str) -> io::Result<UnixAddr> {
    match socket.strip_prefix('@') {
        Some(name) => UnixAddr::from_abstract_name(name.as_bytes()),
        None => UnixAddr::from_pathname(socket),
    }
}

/// What the control server knows of one device (VNI) of the daemon.
pub struct VniControl {
    /// The VNI (`None` for the UDP backend).
    pub vni: Option<u32>,
    /// L3 or L2 (`None` for the UDP backend).
    pub mode: Option<VxlanMode>,
    /// Its routes, VTEPs and static FDB.
    pub routes: RouteTable,
    /// Subnets must lie inside one of these; empty = anywhere.
    pub networks: Vec<Cidr>,
    /// This host's own overlay addresses on it, which no peer subnet may contain.
    pub local_addresses: Vec<IpAddr>,
    /// The engine's index of the device.
    pub device: usize,
}

/// What the control server needs to know of the daemon.
pub struct ControlContext {
    /// The devices; requests without `vni N` go to the first.
    pub vnis: Vec<VniControl>,
    /// Where counters come from.
    pub stats: Box<dyn Fn() -> Stats + Send + Sync>,
    /// Looks into the running backend (the learned FDB), if there is one.
    pub inspector: Option<Inspector>,
    /// The `[[acl]]` rules in force, if the daemon has them (`acl list`).
    pub acl: Option<Acl>,
    /// The port of an endpoint given without one.
    pub default_port: u16,
    /// The daemon's underlay (listen) addresses: an endpoint must be of one of their
    /// families, and not one of them.
    pub underlay: Vec<IpAddr>,
}

const USAGE: &str = "expected [vni N] followed by `peer add SUBNET ENDPOINT [MAC]`, `peer del SUBNET`, \
`peer list`, `vtep add ENDPOINT`, `vtep del ENDPOINT`, `fdb add MAC ENDPOINT`, `fdb del MAC`, `fdb list`, \
`neigh add IP MAC`, `neigh del IP`, `neigh list`, `acl list`, or `stats`";

impl ControlContext {
    fn handle(&self, line: &str, out: &mut Vec<String>) -> Result<(), String> {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        let target = match words.as_slice() {
            ["vni", n, ..] => {
                let n: u32 = n.parse().map_err(|_| format!("vni {n:?}: not a number"))?;
                let t = self
                    .vnis
                    .iter()
                    .find(|v| v.vni == Some(n))
                    .ok_or_else(|| format!("VNI {n} is not served here"))?;
                words.drain(..2);
                t
            }
            _ => self.vnis.first().ok_or("no device")?,
        };
        match words.as_slice() {
            ["peer", "add", subnet, endpoint, rest @ ..] if rest.len() <= 1 => {
                let route = self.parse_route(target, subnet, endpoint, rest.first().copied())?;
                target.routes.insert(route).map_err(|e| e.to_string())?;
                tracing::info!(
                    subnet = %route.subnet,
                    peer = %route.endpoint,
                    vni = %vni_field(target.vni),
                    "peer route added"
                );
                Ok(())
            }
            ["peer", "del", subnet] => {
                let subnet: Cidr = subnet
                    .parse()
                    .map_err(|e| format!("subnet {subnet:?}: {e}"))?;
                match target.routes.remove(&subnet) {
                    Some(r) => {
                        tracing::info!(
                            subnet = %r.subnet,
                            peer = %r.endpoint,
                            vni = %vni_field(target.vni),
                            "peer route removed"
                        );
                        Ok(())
                    }
                    None => Err(format!("no route for {subnet}")),
                }
            }
            ["peer", "list"] => {
                for r in target.routes.routes() {
                    out.push(match r.vtep_mac {
                        Some(mac) => format!("{} {} {}", r.subnet, r.endpoint, mac),
                        None => format!("{} {}", r.subnet, r.endpoint),
                    });
                }
                out.extend(target.routes.vteps().iter().map(|ep| format!("vtep {ep}")));
                Ok(())
            }
            ["vtep", "add", endpoint] => {
                let ep = self.parse_endpoint(endpoint)?;
                target.routes.insert_vtep(ep).map_err(|e| e.to_string())?;
                tracing::info!(peer = %ep, vni = %vni_field(target.vni), "vtep added");
                Ok(())
            }
            ["vtep", "del", endpoint] => {
                let ep = self.parse_endpoint(endpoint)?;
                if target.routes.remove_vtep(&ep) {
                    tracing::info!(peer = %ep, vni = %vni_field(target.vni), "vtep removed");
                    Ok(())
                } else {
                    Err(format!("no vtep {ep}"))
                }
            }
            ["fdb", "add", mac, endpoint] => {
                let mac = parse_mac(mac)?;
                let ep = self.parse_endpoint(endpoint)?;
                target
                    .routes
                    .insert_fdb(mac, ep)
                    .map_err(|e| e.to_string())?;
                tracing::info!(mac = %mac, peer = %ep, vni = %vni_field(target.vni), "static fdb entry added");
                Ok(())
            }
            ["fdb", "del", mac] => {
                let mac = parse_mac(mac)?;
                if target.routes.remove_fdb(&mac) {
                    Ok(())
                } else {
                    Err(format!("no static entry for {mac}"))
                }
            }
            ["fdb", "list"] => {
                let device = target.device;
                let learned = self.inspect_vxlan(move |b| {
                    b.fdb(device)
                        .map(|f| f.entries().map(|(m, e, _)| (m, e)).collect::<Vec<_>>())
                });
                out.extend(learned.iter().map(|(m, e)| format!("{m} {e} learned")));
                let snapshot = target.routes.snapshot();
                out.extend(
                    snapshot
                        .fdb_entries()
                        .map(|(m, e)| format!("{m} {e} static")),
                );
                Ok(())
            }
            ["neigh", "add", ip, mac] => {
                if target.mode != Some(VxlanMode::L2) {
                    return Err("neighbour entries need VXLAN l2 mode".to_owned());
                }
                let ip = parse_neigh_ip(ip)?;
                let mac = parse_mac(mac)?;
                if !mac.is_unicast() || mac == EthernetAddress::default() {
                    return Err(format!("mac {mac}: must be a unicast MAC address"));
                }
                target
                    .routes
                    .insert_neigh(ip, mac)
                    .map_err(|e| e.to_string())?;
                tracing::info!(ip = %ip, mac = %mac, vni = %vni_field(target.vni), "static neighbour entry added");
                Ok(())
            }
            ["neigh", "del", ip] => {
                let ip = parse_neigh_ip(ip)?;
                if target.routes.remove_neigh(&ip) {
                    tracing::info!(ip = %ip, vni = %vni_field(target.vni), "static neighbour entry removed");
                    Ok(())
                } else {
                    Err(format!("no static neighbour entry for {ip}"))
                }
            }
            ["neigh", "list"] => {
                let device = target.device;
                let learned =
                    self.inspect_vxlan(move |b| b.neigh_cache(device).map(|c| c.entries()));
                out.extend(
                    learned
                        .iter()
                        .map(|(ip, mac, _)| format!("{ip} {mac} learned")),
                );
                let snapshot = target.routes.snapshot();
                out.extend(
                    snapshot
                        .neigh_entries()
                        .iter()
                        .map(|(ip, mac)| format!("{ip} {mac} static")),
                );
                Ok(())
            }
            ["acl", "list"] => {
                let set = self.acl.as_ref().ok_or("this daemon has no acl")?.current();
                for (i, rule) in set.rules().iter().enumerate() {
                    out.push(format!("{} {rule} hits {}", i + 1, set.hits(i)));
                }
                out.push(format!(
                    "default {} hits {}",
                    set.default_action().name(),
                    set.default_hits()
                ));
                Ok(())
            }
            ["stats"] => {
                let stats = (self.stats)();
                out.extend(stats.iter().map(|(n, v)| format!("{n} {v}")));
                Ok(())
            }
            _ => Err(format!("unknown request {line:?}; {USAGE}")),
        }
    }

    /// What `f` finds in the running VXLAN backend (learned entries), or nothing when there
    /// is no such backend, no inspector, or `f` finds nothing.
    fn inspect_vxlan<T: Default + Send + 'static>(
        &self,
        f: impl FnOnce(&VxlanBackend) -> Option<T> + Send + 'static,
    ) -> T {
        self.inspector
            .as_ref()
            .and_then(|i| i.inspect::<VxlanBackend, _>(f))
            .flatten()
            .unwrap_or_default()
    }

    fn parse_endpoint(&self, endpoint: &str) -> Result<std::net::SocketAddr, String> {
        let ep = parse_endpoint(endpoint, self.default_port)
            .ok_or_else(|| format!("endpoint {endpoint:?}: expected IP or IP:PORT"))?;
        if !self.underlay.iter().any(|a| a.is_ipv4() == ep.is_ipv4()) {
            return Err(format!(
                "endpoint {ep} is of another address family than the underlay"
            ));
        }
        if let Some(why) = endpoint_problem(ep.ip()) {
            return Err(format!("endpoint {ep} {why}"));
        }
        if self.underlay.contains(&ep.ip()) {
            return Err(format!("endpoint {ep} is this host's own underlay address"));
        }
        Ok(ep)
    }

    fn parse_route(
        &self,
        target: &VniControl,
        subnet: &str,
        endpoint: &str,
        mac: Option<&str>,
    ) -> Result<Route, String> {
        let subnet: Cidr = subnet
            .parse()
            .map_err(|e| format!("subnet {subnet:?}: {e}"))?;
        if !target.networks.is_empty() && !target.networks.iter().any(|n| n.covers(&subnet)) {
            let nets: Vec<String> = target.networks.iter().map(|n| n.to_string()).collect();
            return Err(format!(
                "subnet {subnet} is outside the overlay ({})",
                nets.join(", ")
            ));
        }
        if target.local_addresses.iter().any(|a| subnet.contains(*a)) {
            return Err(format!("subnet {subnet} contains this host's own address"));
        }
        let ep = self.parse_endpoint(endpoint)?;
        let vtep_mac = mac.map(parse_mac).transpose()?;
        if target.mode == Some(VxlanMode::L3) && vtep_mac.is_none() {
            return Err(format!(
                "subnet {subnet}: a VXLAN l3 route needs the peer's VTEP MAC"
            ));
        }
        Ok(Route {
            subnet,
            endpoint: ep,
            vtep_mac,
        })
    }
}

/// A VNI as a log field: `-` for the UDP backend.
fn vni_field(vni: Option<u32>) -> String {
    vni.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A neighbour entry's address: unicast (never unspecified, multicast, broadcast or
/// loopback).
fn parse_neigh_ip(text: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = text
        .parse()
        .map_err(|_| format!("ip {text:?}: expected an IPv4 or IPv6 address"))?;
    let unicast = match ip {
        IpAddr::V4(a) => {
            !(a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback())
        }
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast() || a.is_loopback()),
    };
    if unicast {
        Ok(ip)
    } else {
        Err(format!("ip {ip}: must be a unicast address"))
    }
}

fn parse_mac(text: &str) -> Result<EthernetAddress, String> {
    text.parse::<EthernetAddress>()
        .map_err(|_| format!("mac {text:?}: expected e.g. 02:00:00:00:01:00"))
}

/// A running control server; the socket file (if any) is removed on drop.
pub struct ControlServer {
    socket: String,
}

impl ControlServer {
    /// Binds `socket` and serves requests on a background thread.
    pub fn start(socket: &str, ctx: ControlContext) -> Result<ControlServer, ControlError> {
        let bind_err = |source| ControlError::Bind {
            socket: socket.to_owned(),
            source,
        };
        if !socket.starts_with('@') {
            let path = Path::new(socket);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(bind_err)?;
            }
            // A stale socket from a crashed daemon; a live one would still be refused below
            // only by the connect check, so test it first.
            if UnixStream::connect(path).is_ok() {
                return Err(bind_err(io::Error::from(io::ErrorKind::AddrInUse)));
            }
            let _ = std::fs::remove_file(path);
        }
        let listener = unix_addr(socket)
            .and_then(|a| UnixListener::bind_addr(&a))
            .map_err(bind_err)?;
        let ctx = Arc::new(ctx);
        let name = socket.to_owned();
        std::thread::Builder::new()
            .name("weft-control".into())
            .spawn(move || serve(listener, ctx, name))
            .map_err(bind_err)?;
        Ok(ControlServer {
            socket: socket.to_owned(),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if !self.socket.starts_with('@') {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

/// At most this many clients are served at once; a new one past it drops the one that has
/// waited longest, so idle connections can never lock an operator out.
const MAX_CLIENTS: usize = 128;
/// A client has this long from its connection to send its request and take the answer.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// The longest request line; what follows is ignored.
const MAX_REQUEST: usize = 4096;
/// Refused clients are logged at most once per this interval, with a count of the others.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

const LISTENER: Token = Token(0);

/// One client of the control socket.
struct Client {
    stream: mio::net::UnixStream,
    since: Instant,
    /// Refused (not root, not our user): its request is read, then answered with the refusal.
    refused: bool,
    request: Vec<u8>,
    /// The answer, once the request is complete; `written` bytes of it went out.
    answer: Option<Vec<u8>>,
    written: usize,
}

impl Client {
    /// Moves the conversation on as far as the socket allows. Returns whether it is over.
    fn progress(&mut self, ctx: &ControlContext) -> io::Result<bool> {
        if self.answer.is_none() {
            let mut chunk = [0u8; 1024];
            let complete = loop {
                match self.stream.read(&mut chunk) {
                    Ok(0) => break true,
                    Ok(n) => {
                        self.request.extend_from_slice(&chunk[..n]);
                        if self.request.contains(&b'\n') || self.request.len() >= MAX_REQUEST {
                            break true;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if !complete {
                return Ok(false);
            }
            self.answer = Some(if self.refused {
                b"error: permission denied\n".to_vec()
            } else {
                let end = self
                    .request
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(self.request.len())
                    .min(MAX_REQUEST);
                answer(ctx, &String::from_utf8_lossy(&self.request[..end]))
            });
        }
        let answer = self.answer.as_deref().unwrap_or_default();
        while self.written < answer.len() {
            match self.stream.write(&answer[self.written..]) {
                Ok(0) => return Ok(true),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// The answer to one request line: its data lines, then `ok` or `error: ...`.
fn answer(ctx: &ControlContext, line: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let result = ctx.handle(line.trim(), &mut out);
    let mut text = String::new();
    for l in out {
        text.push_str(&l);
        text.push('\n');
    }
    match result {
        Ok(()) => text.push_str("ok\n"),
        Err(e) => {
            text.push_str("error: ");
            text.push_str(&e.replace('\n', " "));
            text.push('\n');
        }
    }
    text.into_bytes()
}

/// Logs refused clients without letting a flood of them flood the log.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    fn refused(&mut self, name: &str, uid: u32) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        let more = match self.suppressed {
            0 => String::new(),
            n => format!(" ({n} more refused since the last report)"),
        };
        tracing::warn!(
            socket = %name,
            uid,
            "refused a client (only root and the daemon's user may use the control socket){more}"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

fn serve(listener: UnixListener, ctx: Arc<ControlContext>, name: String) {
    if let Err(e) = serve_clients(listener, &ctx, &name) {
        tracing::error!("control socket {name} stopped: {e}");
    }
}

/// The control server's loop: every client at once on one poll, each with a deadline for
/// its whole conversation, at most [`MAX_CLIENTS`] of them.
fn serve_clients(listener: UnixListener, ctx: &ControlContext, name: &str) -> io::Result<()> {
    // The owner of /proc/self is this process's effective uid.
    let own_uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::UnixListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(64);
    let mut clients: HashMap<usize, Client> = HashMap::new();
    let mut next_token = 1usize;
    let mut refusals = RefusalLog::default();
    loop {
        let now = Instant::now();
        let timeout = clients
            .values()
            .map(|c| (c.since + REQUEST_DEADLINE).saturating_duration_since(now))
            .min();
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept(&listener, &poll, &mut clients, &mut next_token, |uid| {
                    let refused = uid.is_none_or(|u| u != 0 && u != own_uid);
                    if refused {
                        refusals.refused(name, uid.unwrap_or(u32::MAX));
                    }
                    refused
                });
                continue;
            }
            let Token(t) = event.token();
            let Some(client) = clients.get_mut(&t) else {
                continue;
            };
            let over = client.progress(ctx).unwrap_or_else(|e| {
                tracing::debug!("control socket {name}: {e}");
                true
            });
            if over {
                if let Some(mut client) = clients.remove(&t) {
                    let _ = poll.registry().deregister(&mut client.stream);
                }
            }
        }
        let now = Instant::now();
        clients.retain(|_, c| {
            let keep = now < c.since + REQUEST_DEADLINE;
            if !keep {
                let _ = poll.registry().deregister(&mut c.stream);
            }
            keep
        });
    }
}

/// Accepts every waiting connection; `refuse` says, from the peer's uid, whether to refuse
/// it. Past [`MAX_CLIENTS`], the client that has waited longest is dropped.
fn accept(
    listener: &mio::net::UnixListener,
    poll: &Poll,
    clients: &mut HashMap<usize, Client>,
    next_token: &mut usize,
    mut refuse: impl FnMut(Option<u32>) -> bool,
) {
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    tracing::warn!("control socket: cannot accept a client: {e}");
                }
                return;
            }
        };
        if clients.len() >= MAX_CLIENTS {
            let oldest = clients.iter().min_by_key(|(_, c)| c.since).map(|(&t, _)| t);
            if let Some(mut dropped) = oldest.and_then(|t| clients.remove(&t)) {
                let _ = poll.registry().deregister(&mut dropped.stream);
            }
        }
        let refused = refuse(crate::sys::peer_uid(&stream).ok());
        let token = *next_token;
        *next_token = next_token.wrapping_add(1).max(1);
        if poll
            .registry()
            .register(
                &mut stream,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            continue;
        }
        clients.insert(
            token,
            Client {
                stream,
                since: Instant::now(),
                refused,
                request: Vec::new(),
                answer: None,
                written: 0,
            },
        );
    }
}

/// Sends one request to the daemon at `socket`; returns the data lines of the answer.
pub fn request(socket: &str, line: &str) -> Result<Vec<String>, ControlError> {
    let stream = unix_addr(socket)
        .and_then(|a| UnixStream::connect_addr(&a))
        .map_err(|source| ControlError::Connect {
            socket: socket.to_owned(),
            source,
        })?;
    let io_err = |source| ControlError::Io {
        socket: socket.to_owned(),
        source,
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io_err)?;
    // A daemon that refuses us may answer and close before taking the whole request: its
    // answer is still there to read, and says more than the broken pipe.
    let sent = (&stream).write_all(format!("{}\n", line.trim()).as_bytes());
    let mut lines = Vec::new();
    for l in BufReader::new(&stream).lines() {
        let l = match (l, &sent) {
            (Ok(l), _) => l,
            (Err(_), Err(e)) => return Err(io_err(io::Error::new(e.kind(), e.to_string()))),
            (Err(e), Ok(())) => return Err(io_err(e)),
        };
        if l == "ok" {
            return Ok(lines);
        }
        if let Some(msg) = l.strip_prefix("error: ") {
            return Err(ControlError::Refused(msg.to_owned()));
        }
        lines.push(l);
    }
    Err(io_err(match sent {
        Err(e) => e,
        Ok(()) => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection without an answer",
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::counters::Counters;

    fn ctx(routes: RouteTable) -> ControlContext {
        let counters = Arc::new(Counters::default());
        ControlContext {
            vnis: vec![VniControl {
                vni: None,
                mode: None,
                routes,
                networks: vec!["100.96.0.0/16".parse().unwrap()],
                local_addresses: vec!["100.96.1.0".parse().unwrap()],
                device: 0,
            }],
            stats: Box::new(move || counters.snapshot()),
            inspector: None,
            acl: None,
            default_port: 8285,
            underlay: vec!["198.18.0.1".parse().unwrap()],
        }
    }

    fn unique_name(what: &str) -> String {
        format!(
            "@weft-test/{what}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )
    }

    fn connect(name: &str) -> UnixStream {
        UnixStream::connect_addr(&unix_addr(name).unwrap()).unwrap()
    }

    /// Whether the server still holds `stream` open: nothing to read yet, no end of file.
    fn still_open(stream: &UnixStream) -> bool {
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let open =
            matches!((&*stream).read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        stream.set_nonblocking(false).unwrap();
        open
    }

    #[test]
    fn an_idle_client_does_not_delay_the_next_one() {
        let name = unique_name("idle");
        let _server = ControlServer::start(&name, ctx(RouteTable::default())).unwrap();
        let idle = connect(&name);
        let stats = request(&name, "stats").unwrap();
        assert!(stats.iter().any(|l| l.starts_with("tx_packets")));
        // Served while the idle client was still waiting, not after it timed out.
        assert!(still_open(&idle), "the idle client was dropped first");
    }

    #[test]
    fn a_client_sending_a_byte_at_a_time_blocks_nobody_and_is_cut_at_the_deadline() {
        let name = unique_name("drip");
        let _server = ControlServer::start(&name, ctx(RouteTable::default())).unwrap();
        let drip = connect(&name);
        let dripping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let cut = {
            let dripping = dripping.clone();
            let mut drip = drip.try_clone().unwrap();
            std::thread::spawn(move || {
                // A byte every 100 ms, never a newline, for at most 20 s.
                let started = std::time::Instant::now();
                let mut cut = false;
                while started.elapsed() < Duration::from_secs(20) {
                    if drip.write_all(b"s").is_err() {
                        cut = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                dripping.store(false, std::sync::atomic::Ordering::SeqCst);
                cut
            })
        };
        let stats = request(&name, "stats").unwrap();
        assert!(stats.iter().any(|l| l.starts_with("tx_packets")));
        assert!(
            dripping.load(std::sync::atomic::Ordering::SeqCst),
            "answered only once the slow client had stopped"
        );
        // The slow client gets the whole-request deadline, not a deadline per byte.
        assert!(cut.join().unwrap(), "the slow client was never cut off");
    }

    #[test]
    fn a_thousand_idle_connections_do_not_lock_operators_out() {
        let limit = weft_testbed::raise_fd_limit(4096).unwrap();
        assert!(
            limit >= 2100,
            "RLIMIT_NOFILE {limit} is too low for this test"
        );
        let name = unique_name("many");
        let _server = ControlServer::start(&name, ctx(RouteTable::default())).unwrap();
        let idle: Vec<UnixStream> = (0..1000).map(|_| connect(&name)).collect();
        let stats = request(&name, "stats").unwrap();
        assert!(stats.iter().any(|l| l.starts_with("tx_packets")));
        drop(idle);
    }

    #[test]
    fn requests_over_an_abstract_socket() {
        let routes = RouteTable::default();
        let name = format!(
            "@weft-test/{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let _server = ControlServer::start(&name, ctx(routes.clone())).unwrap();
        assert!(request(&name, "peer add 100.96.2.0/24 198.18.0.2")
            .unwrap()
            .is_empty());
        assert_eq!(routes.routes().len(), 1);
        assert_eq!(
            routes.routes()[0].endpoint,
            "198.18.0.2:8285".parse().unwrap()
        );
        request(
            &name,
            "peer add 100.96.3.0/24 198.18.0.3:9000 02:00:00:00:03:00",
        )
        .unwrap();
        let list = request(&name, "peer list").unwrap();
        assert_eq!(
            list,
            [
                "100.96.2.0/24 198.18.0.2:8285",
                "100.96.3.0/24 198.18.0.3:9000 02:00:00:00:03:00"
            ]
        );
        request(&name, "peer del 100.96.2.0/24").unwrap();
        assert_eq!(routes.routes().len(), 1);
        let stats = request(&name, "stats").unwrap();
        assert!(stats.iter().any(|l| l == "tx_packets 0"), "{stats:?}");
        for (bad, why) in [
            ("peer del 100.96.2.0/24", "no route"),
            ("peer add 100.97.0.0/24 198.18.0.2", "outside the overlay"),
            ("peer add 100.96.1.0/24 198.18.0.2", "own address"),
            ("peer add 100.96.4.0/24 fd00::2", "family"),
            ("peer add 100.96.4.0/24 0.0.0.0", "unspecified"),
            ("peer add 100.96.4.0/24 127.0.0.2", "loopback"),
            ("peer add 100.96.4.0/24 239.1.1.1", "multicast"),
            ("peer add 100.96.4.0/24 255.255.255.255", "broadcast"),
            ("peer add 100.96.4.0/24 198.18.0.1", "own underlay address"),
            ("peer add 100.96.4.0/24 198.18.0.3", "share an address"),
            ("peer add 100.96.4.0/33 198.18.0.2", "prefix length"),
            ("frobnicate", "unknown request"),
        ] {
            match request(&name, bad) {
                Err(ControlError::Refused(msg)) => assert!(msg.contains(why), "{bad}: {msg}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn vxlan_requests_vteps_fdb_and_vni_selection() {
        let l3 = RouteTable::default();
        let l2 = RouteTable::default();
        let counters = Arc::new(Counters::default());
        let ctx = ControlContext {
            vnis: vec![
                VniControl {
                    vni: Some(1),
                    mode: Some(VxlanMode::L3),
                    routes: l3.clone(),
                    networks: vec!["100.96.0.0/16".parse().unwrap()],
                    local_addresses: vec!["100.96.1.0".parse().unwrap()],
                    device: 0,
                },
                VniControl {
                    vni: Some(2),
                    mode: Some(VxlanMode::L2),
                    routes: l2.clone(),
                    networks: Vec::new(),
                    local_addresses: Vec::new(),
                    device: 1,
                },
            ],
            stats: Box::new(move || counters.snapshot()),
            inspector: None,
            acl: None,
            default_port: 8472,
            underlay: vec!["198.18.0.1".parse().unwrap()],
        };
        let name = format!(
            "@weft-test/vx-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let _server = ControlServer::start(&name, ctx).unwrap();
        // L3 routes need the peer's VTEP MAC.
        match request(&name, "peer add 100.96.2.0/24 198.18.0.2") {
            Err(ControlError::Refused(msg)) => assert!(msg.contains("VTEP MAC"), "{msg}"),
            other => panic!("{other:?}"),
        }
        request(&name, "peer add 100.96.2.0/24 198.18.0.2 02:00:00:00:02:00").unwrap();
        assert_eq!(
            l3.routes()[0].vtep_mac,
            Some("02:00:00:00:02:00".parse().unwrap())
        );
        // `vni 2` selects the L2 VNI: VTEPs and static FDB entries go there.
        request(&name, "vni 2 vtep add 198.18.0.3").unwrap();
        request(&name, "vni 2 fdb add 02:00:00:00:aa:01 198.18.0.4").unwrap();
        assert_eq!(l2.vteps(), ["198.18.0.3:8472".parse().unwrap()]);
        assert!(l3.vteps().is_empty());
        let list = request(&name, "vni 2 peer list").unwrap();
        assert_eq!(list, ["vtep 198.18.0.3:8472"]);
        let fdb = request(&name, "vni 2 fdb list").unwrap();
        assert_eq!(fdb, ["02:00:00:00:aa:01 198.18.0.4:8472 static"]);
        request(&name, "vni 2 fdb del 02:00:00:00:aa:01").unwrap();
        request(&name, "vni 2 vtep del 198.18.0.3").unwrap();
        assert!(request(&name, "vni 2 fdb list").unwrap().is_empty());
        // Static neighbour entries of the L2 VNI (the ARP/ND proxy's table).
        request(&name, "vni 2 neigh add 100.96.0.12 02:00:00:aa:00:0c").unwrap();
        request(&name, "vni 2 neigh add fd00:96::12 02:00:00:aa:00:0c").unwrap();
        assert_eq!(
            request(&name, "vni 2 neigh list").unwrap(),
            [
                "100.96.0.12 02:00:00:aa:00:0c static",
                "fd00:96::12 02:00:00:aa:00:0c static"
            ]
        );
        assert_eq!(
            l2.snapshot().static_neigh("100.96.0.12".parse().unwrap()),
            Some("02:00:00:aa:00:0c".parse().unwrap())
        );
        request(&name, "vni 2 neigh del 100.96.0.12").unwrap();
        assert_eq!(
            request(&name, "vni 2 neigh list").unwrap(),
            ["fd00:96::12 02:00:00:aa:00:0c static"]
        );
        for (bad, why) in [
            ("vni 2 vtep del 198.18.0.3", "no vtep"),
            ("vni 2 fdb del 02:00:00:00:aa:01", "no static entry"),
            ("vni 9 peer list", "VNI 9 is not served"),
            ("vni x peer list", "not a number"),
            ("vni 2 fdb add nonsense 198.18.0.4", "mac"),
            ("neigh add 100.96.0.12 02:00:00:aa:00:0c", "l2 mode"),
            (
                "vni 2 neigh add 224.0.0.1 02:00:00:aa:00:0c",
                "unicast address",
            ),
            (
                "vni 2 neigh add 100.96.0.12 ff:ff:ff:ff:ff:ff",
                "unicast MAC",
            ),
            ("vni 2 neigh add nonsense 02:00:00:aa:00:0c", "ip"),
            ("vni 2 neigh del 100.96.0.12", "no static neighbour entry"),
        ] {
            match request(&name, bad) {
                Err(ControlError::Refused(msg)) => assert!(msg.contains(why), "{bad}: {msg}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn unreachable_daemon_says_where_it_looked() {
        let e = request("@weft-test/nobody-here", "stats")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("@weft-test/nobody-here") && e.contains("weft run"),
            "{e}"
        );
    }
}
