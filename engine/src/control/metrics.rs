//! The operator's HTTP endpoint (`[metrics] listen`, off by default): Prometheus metrics at
//! `/metrics`, liveness at `/healthz`, readiness at `/readyz`.
//!
//! Every engine counter is a metric with labels: `backend`, `device` and `vni` (of the
//! daemon's first device), and `worker` (one series per worker; sum them for the engine);
//! drops are one metric, `weft_drops_total`, with a `reason` label. Beside them: the peers
//! and learned FDB entries of each device, the offloads in use, the workers, and whether the
//! devices are up.
//!
//! Clients are served on threads of their own (at most [`MAX_CLIENTS`] at once, each with
//! [`REQUEST_DEADLINE`] for its whole request), never on the data path.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dataplane::counters::Stats;

/// At most this many clients at once; more are answered 503 and closed.
pub const MAX_CLIENTS: usize = 16;
/// A client has this long to send its request line.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// One device of the daemon, as the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMetrics {
    /// The device name.
    pub device: String,
    /// Its VNI (VXLAN).
    pub vni: Option<u32>,
    /// Routes and VTEPs in its table.
    pub peers: usize,
    /// Learned FDB entries (VXLAN L2).
    pub fdb: Option<usize>,
}

/// Whether the daemon is alive and ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The workers run.
    pub alive: bool,
    /// The devices are up and the control plane has its table.
    pub ready: bool,
    /// What is wrong, when something is.
    pub problem: Option<String>,
}

/// Where the metrics come from; each is called per request, on the server's thread.
pub struct MetricsContext {
    /// Labels on every series: `backend`, `device`, `vni`.
    pub labels: Vec<(&'static str, String)>,
    /// Each worker's counters, in worker order.
    pub workers: Box<dyn Fn() -> Vec<Stats> + Send + Sync>,
    /// Gauges: the engine's (workers, offloads) and the daemon's (devices up, lost).
    pub gauges: Box<dyn Fn() -> Vec<(String, u64)> + Send + Sync>,
    /// The devices.
    pub devices: Box<dyn Fn() -> Vec<DeviceMetrics> + Send + Sync>,
    /// Liveness and readiness.
    pub health: Box<dyn Fn() -> Health + Send + Sync>,
    /// The `[[acl]]` rules' hit counts: (rule number from 1, or `default`; action; hits).
    pub acl: Box<dyn Fn() -> Vec<(String, &'static str, u64)> + Send + Sync>,
}

/// Escapes a label value for the Prometheus text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_set(base: &[(&str, String)], extra: &[(&str, String)]) -> String {
    let all: Vec<String> = base
        .iter()
        .chain(extra)
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", all.join(","))
}

/// The Prometheus text exposition of everything `ctx` knows.
pub fn render(ctx: &MetricsContext) -> String {
    let mut out = String::new();
    let base = &ctx.labels;
    // Counters, one series per worker; drops under one name with a reason label.
    let workers = (ctx.workers)();
    let mut names: Vec<String> = Vec::new();
    if let Some(first) = workers.first() {
        names = first.iter().map(|(n, _)| n.to_owned()).collect();
    }
    let mut drops_header = false;
    for name in &names {
        let (metric, extra_label) = match name.strip_prefix("drop_") {
            Some(reason) => ("weft_drops_total".to_owned(), Some(("reason", reason))),
            None => (format!("weft_{name}_total"), None),
        };
        let header = extra_label.is_none() || !drops_header;
        if header {
            let help = if extra_label.is_some() {
                drops_header = true;
                "Packets dropped, by reason (see the README's counters)".to_owned()
            } else {
                format!("weft counter {name} (see the README's counters)")
            };
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
        }
        for (w, stats) in workers.iter().enumerate() {
            let mut extra = vec![("worker", w.to_string())];
            if let Some((k, v)) = extra_label {
                extra.push((k, v.to_owned()));
            }
            let value = stats.get(name).unwrap_or(0);
            let _ = writeln!(out, "{metric}{} {value}", label_set(base, &extra));
        }
    }
    // Gauges: offloads under one name with a feature label.
    let mut offload_header = false;
    for (name, value) in (ctx.gauges)() {
        match name.strip_prefix("offload_") {
            Some(feature) => {
                if !offload_header {
                    offload_header = true;
                    out.push_str("# HELP weft_offload Offloads in use (1) or not (0)\n# TYPE weft_offload gauge\n");
                }
                let labels = label_set(base, &[("feature", feature.to_owned())]);
                let _ = writeln!(out, "weft_offload{labels} {value}");
            }
            None => {
                let metric = format!("weft_{name}");
                let _ = writeln!(
                    out,
                    "# HELP {metric} weft gauge {name}\n# TYPE {metric} gauge\n{metric}{} {value}",
                    label_set(base, &[])
                );
            }
        }
    }
    // Per device: peers and the learned FDB.
    let devices = (ctx.devices)();
    out.push_str(
        "# HELP weft_peers Routes and VTEPs in the device's table\n# TYPE weft_peers gauge\n",
    );
    for d in &devices {
        let _ = writeln!(out, "weft_peers{} {}", device_labels(base, d), d.peers);
    }
    if devices.iter().any(|d| d.fdb.is_some()) {
        out.push_str(
            "# HELP weft_fdb_entries Learned FDB entries (VXLAN l2)\n# TYPE weft_fdb_entries gauge\n",
        );
        for d in &devices {
            if let Some(n) = d.fdb {
                let _ = writeln!(out, "weft_fdb_entries{} {n}", device_labels(base, d));
            }
        }
    }
    let acl = (ctx.acl)();
    if !acl.is_empty() {
        out.push_str(
            "# HELP weft_acl_hits_total Packets each [[acl]] rule (or the default action) decided\n# TYPE weft_acl_hits_total counter\n",
        );
        for (rule, action, hits) in acl {
            let labels = label_set(base, &[("rule", rule), ("action", action.to_owned())]);
            let _ = writeln!(out, "weft_acl_hits_total{labels} {hits}");
        }
    }
    let health = (ctx.health)();
    let _ = writeln!(
        out,
        "# HELP weft_ready 1 when the devices are up and the control plane has its table\n# TYPE weft_ready gauge\nweft_ready{} {}",
        label_set(base, &[]),
        u8::from(health.ready)
    );
    out
}

/// The base labels with `device` and `vni` of device `d` in place of the first device's.
fn device_labels(base: &[(&str, String)], d: &DeviceMetrics) -> String {
    let mut labels: Vec<(&str, String)> = base
        .iter()
        .filter(|(k, _)| *k != "device" && *k != "vni")
        .cloned()
        .collect();
    labels.push(("device", d.device.clone()));
    if let Some(vni) = d.vni {
        labels.push(("vni", vni.to_string()));
    }
    label_set(&labels, &[])
}

/// A running metrics endpoint; it serves until the process ends.
pub struct MetricsServer {
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` and serves on a thread of its own.
    pub fn start(addr: SocketAddr, ctx: MetricsContext) -> io::Result<MetricsServer> {
        MetricsServer::serve(TcpListener::bind(addr)?, ctx)
    }

    /// Serves on `listener` (bound earlier, e.g. before privileges were dropped) on a thread
    /// of its own.
    pub fn serve(listener: TcpListener, ctx: MetricsContext) -> io::Result<MetricsServer> {
        let addr = listener.local_addr()?;
        let ctx = Arc::new(ctx);
        std::thread::Builder::new()
            .name("weft-metrics".into())
            .spawn(move || serve(listener, ctx))?;
        Ok(MetricsServer { addr })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

fn serve(listener: TcpListener, ctx: Arc<MetricsContext>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        if active.load(Ordering::SeqCst) >= MAX_CLIENTS {
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = respond(&stream, "503 Service Unavailable", "text/plain", "busy\n");
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (ctx, done) = (ctx.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("weft-metrics-client".into())
            .spawn(move || {
                if let Err(e) = serve_one(&stream, &ctx) {
                    tracing::debug!("metrics client: {e}");
                }
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Reads the request line, with [`REQUEST_DEADLINE`] for all of it.
fn request_line(stream: &TcpStream) -> io::Result<String> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut line = Vec::new();
    let mut byte = [0u8; 256];
    while !line.contains(&b'\n') && line.len() < 8192 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request too slow"));
        }
        stream.set_read_timeout(Some(left))?;
        let n = (&*stream).read(&mut byte)?;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&byte[..n]);
    }
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    Ok(String::from_utf8_lossy(&line[..end]).trim().to_owned())
}

fn serve_one(stream: &TcpStream, ctx: &MetricsContext) -> io::Result<()> {
    stream.set_write_timeout(Some(REQUEST_DEADLINE))?;
    let line = request_line(stream)?;
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "GET" {
        return respond(stream, "405 Method Not Allowed", "text/plain", "GET only\n");
    }
    match path {
        "/metrics" => respond(stream, "200 OK", "text/plain; version=0.0.4", &render(ctx)),
        "/healthz" => {
            // Liveness: the workers run (a device outage weft is repairing is readiness').
            let h = (ctx.health)();
            if h.alive {
                respond(stream, "200 OK", "text/plain", "ok\n")
            } else {
                let body = format!("{}\n", h.problem.unwrap_or_else(|| "not running".into()));
                respond(stream, "503 Service Unavailable", "text/plain", &body)
            }
        }
        "/readyz" => {
            let h = (ctx.health)();
            if h.ready {
                respond(stream, "200 OK", "text/plain", "ready\n")
            } else {
                let body = format!("{}\n", h.problem.unwrap_or_else(|| "not ready yet".into()));
                respond(stream, "503 Service Unavailable", "text/plain", &body)
            }
        }
        _ => respond(
            stream,
            "404 Not Found",
            "text/plain",
            "/metrics, /healthz or /readyz\n",
        ),
    }
}

fn respond(stream: &TcpStream, status: &str, kind: &str, body: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut w = io::BufWriter::new(stream);
    w.write_all(head.as_bytes())?;
    w.write_all(body.as_bytes())?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::counters::Counters;
    use weft_encap::verdict::DropReason;

    fn ctx(ready: bool) -> MetricsContext {
        MetricsContext {
            acl: Box::new(|| vec![("1".into(), "allow", 7), ("default".into(), "deny", 2)]),
            labels: vec![
                ("backend", "vxlan".into()),
                ("device", "flannel.1".into()),
                ("vni", "1".into()),
            ],
            workers: Box::new(|| {
                let (a, b) = (Counters::default(), Counters::default());
                let mut local = crate::dataplane::counters::LocalCounters {
                    tx_packets: 5,
                    ..Default::default()
                };
                local.drop(DropReason::NoRoute);
                a.publish(&mut local);
                vec![a.snapshot(), b.snapshot()]
            }),
            gauges: Box::new(|| {
                vec![
                    ("workers".into(), 2),
                    ("offload_tun_tso".into(), 1),
                    ("device_up".into(), 1),
                ]
            }),
            devices: Box::new(|| {
                vec![
                    DeviceMetrics {
                        device: "flannel.1".into(),
                        vni: Some(1),
                        peers: 3,
                        fdb: None,
                    },
                    DeviceMetrics {
                        device: "weft.2".into(),
                        vni: Some(2),
                        peers: 1,
                        fdb: Some(7),
                    },
                ]
            }),
            health: Box::new(move || Health {
                alive: true,
                ready,
                problem: (!ready).then(|| "device flannel.1 is down".into()),
            }),
        }
    }

    #[test]
    fn every_counter_is_a_labelled_series_per_worker_and_the_format_holds() {
        let text = render(&ctx(true));
        let base = "backend=\"vxlan\",device=\"flannel.1\",vni=\"1\"";
        for line in [
            format!("weft_tx_packets_total{{{base},worker=\"0\"}} 5"),
            format!("weft_tx_packets_total{{{base},worker=\"1\"}} 0"),
            format!("weft_drops_total{{{base},worker=\"0\",reason=\"no_route\"}} 1"),
            format!("weft_drops_total{{{base},worker=\"1\",reason=\"bad_checksum\"}} 0"),
            format!("weft_offload{{{base},feature=\"tun_tso\"}} 1"),
            format!("weft_workers{{{base}}} 2"),
            format!("weft_device_up{{{base}}} 1"),
            "weft_peers{backend=\"vxlan\",device=\"weft.2\",vni=\"2\"} 1".to_owned(),
            "weft_fdb_entries{backend=\"vxlan\",device=\"weft.2\",vni=\"2\"} 7".to_owned(),
            format!("weft_ready{{{base}}} 1"),
            format!("weft_acl_hits_total{{{base},rule=\"1\",action=\"allow\"}} 7"),
            format!("weft_acl_hits_total{{{base},rule=\"default\",action=\"deny\"}} 2"),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // Each metric is declared once, before its series; every series line is
        // `name{labels} integer`.
        let mut declared = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(declared.insert(name.to_owned()), "{name} declared twice");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            assert!(declared.contains(name), "{name} used before its TYPE");
            assert!(series.ends_with('}'), "{line}");
            value.parse::<u64>().unwrap();
        }
        assert_eq!(
            text.matches("# TYPE weft_drops_total counter").count(),
            1,
            "{text}"
        );
    }

    fn get(addr: SocketAddr, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    #[test]
    fn health_and_readiness_over_http_and_a_slow_client_blocks_nobody() {
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), ctx(false)).unwrap();
        let addr = server.local_addr();
        // A client that never finishes its request.
        let _idle = TcpStream::connect(addr).unwrap();
        assert_eq!(get(addr, "/healthz").0, "HTTP/1.1 200 OK");
        let (status, body) = get(addr, "/readyz");
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(body, "device flannel.1 is down\n");
        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("weft_ready{"), "{body}");
        assert_eq!(get(addr, "/nope").0, "HTTP/1.1 404 Not Found");
    }
}
