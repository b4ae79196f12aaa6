//! What the policy hook costs per packet (`weft-encap`'s `policy` and `acl`), on the
//! flannel UDP backend driven through the `Backend` trait as the engine drives it:
//!
//! - `policy_encap/<policy>` and `policy_decap/<policy>`: one 1400-byte IPv4/UDP packet
//!   read from the device / received from the peer, with `none` (the bare backend),
//!   `allow_all` (the engine's default: `Policed<_, AllowAll>`, which must cost nothing),
//!   `acl_empty` (the daemon without `[[acl]]` rules: one atomic load, nothing parsed),
//!   `acl_1_rule` (one rule that allows the packet) and `acl_100_rules` (100 rules none of
//!   which matches, so all are checked before the default allows it: the worst case);
//! - `acl_judge/<rules>`: `AclPolicy::judge` alone on a parsed flow.
//!
//! Every benchmark first checks the verdict it is about to time. As in `encap`, the packet's
//! TTL decrement is undone with three byte stores inside the timed closure.
//!
//! Full run: `cargo bench -p weft-bench --bench policy`; CI runs it in short mode.
#![allow(missing_docs)] // criterion_group! / criterion_main! generate undocumented items.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use weft_bench::packets::{
    self, endpoint_v4, host_addr_v4, ipv4_udp, remote_routes_v4, with_headroom, LOCAL_HOST,
    REMOTE_HOST,
};
use weft_encap::acl::{Acl, AclRule, AclSet, PortRange};
use weft_encap::backend::{Backend, PacketBuf};
use weft_encap::flannel::{FlannelBackend, FlannelConfig};
use weft_encap::policy::{AllowAll, Decision, Direction, FlowKey, Policed, Policy, PolicyContext};
use weft_encap::table::{Cidr, SubnetTable};
use weft_encap::verdict::Verdict;
use weft_encap::wire::PROTO_TCP;

const SIZE: usize = 1400;
/// Offsets of the IPv4 TTL byte and header checksum.
const TTL: usize = 8;
const IP_CHECKSUM: usize = 10;

fn backend() -> FlannelBackend {
    FlannelBackend::new(FlannelConfig {
        local_v4: Some(host_addr_v4(LOCAL_HOST, 0)),
        ..FlannelConfig::default()
    })
}

/// `count` rules that never match the benchmark's UDP packets (TCP to ports of their own),
/// then the default `allow`.
fn miss_rules(count: u16) -> AclSet {
    let rules = (0..count)
        .map(|i| {
            AclRule::new(Decision::Drop)
                .protocol(PROTO_TCP)
                .destination_ports(PortRange::new(1000 + i, 1000 + i))
        })
        .collect();
    AclSet::new(rules, Decision::Allow)
}

/// One rule that allows the packets (UDP from anywhere in the overlay).
fn one_rule() -> AclSet {
    let overlay: Cidr = "100.64.0.0/10".parse().unwrap();
    AclSet::new(
        vec![AclRule::new(Decision::Allow).protocol(17).source(overlay)],
        Decision::Drop,
    )
}

/// A packet buffer with headroom, and how to undo the backend's in-place TTL decrement.
struct InPlace {
    buf: Vec<u8>,
    headroom: usize,
    len: usize,
    saved: [u8; 3],
}

impl InPlace {
    fn new(packet: &[u8], headroom: usize) -> InPlace {
        let buf = with_headroom(packet, headroom);
        let saved = [
            buf[headroom + TTL],
            buf[headroom + IP_CHECKSUM],
            buf[headroom + IP_CHECKSUM + 1],
        ];
        InPlace {
            buf,
            headroom,
            len: packet.len(),
            saved,
        }
    }

    fn pkt(&mut self) -> PacketBuf<'_> {
        PacketBuf::new(&mut self.buf, self.headroom, self.len).unwrap()
    }

    #[inline(always)]
    fn reset(&mut self) {
        self.buf[self.headroom + TTL] = self.saved[0];
        self.buf[self.headroom + IP_CHECKSUM] = self.saved[1];
        self.buf[self.headroom + IP_CHECKSUM + 1] = self.saved[2];
    }
}

/// Times `backend` on `packet` both ways.
fn bench_backend<B: Backend>(
    c: &mut Criterion,
    name: &str,
    mut backend: B,
    tables: &[Arc<SubnetTable>],
    outbound: &[u8],
    inbound: &[u8],
    peer: SocketAddr,
) {
    let headroom = backend.headroom();
    let mut out = InPlace::new(outbound, headroom);
    let verdict = backend.handle_device_packet(tables, 0, out.pkt(), 0);
    assert!(
        matches!(verdict, Verdict::SendToPeer { .. }),
        "{name}: {verdict:?}"
    );
    out.reset();
    let mut group = c.benchmark_group("policy_encap");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter(|| {
            let verdict = backend.handle_device_packet(black_box(tables), 0, out.pkt(), 0);
            out.reset();
            verdict
        })
    });
    group.finish();

    let mut inp = InPlace::new(inbound, headroom);
    let verdict = backend.handle_datagram(tables, peer, inp.pkt(), 0);
    assert!(
        matches!(verdict, Verdict::DeliverToDevice { .. }),
        "{name}: {verdict:?}"
    );
    inp.reset();
    let mut group = c.benchmark_group("policy_decap");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter(|| {
            let verdict = backend.handle_datagram(black_box(tables), peer, inp.pkt(), 0);
            inp.reset();
            verdict
        })
    });
    group.finish();
}

fn policies(c: &mut Criterion) {
    let tables = [Arc::new(packets::table(&remote_routes_v4(1)))];
    let outbound = ipv4_udp(
        host_addr_v4(LOCAL_HOST, 5),
        host_addr_v4(REMOTE_HOST, 7),
        SIZE,
    );
    let inbound = ipv4_udp(
        host_addr_v4(REMOTE_HOST, 7),
        host_addr_v4(LOCAL_HOST, 5),
        SIZE,
    );
    let peer = endpoint_v4(REMOTE_HOST);
    bench_backend(c, "none", backend(), &tables, &outbound, &inbound, peer);
    let allow_all = Policed::new(backend(), AllowAll);
    bench_backend(
        c,
        "allow_all",
        allow_all,
        &tables,
        &outbound,
        &inbound,
        peer,
    );
    // What `weft run` does without [[acl]] rules: an empty set, which judges nothing.
    let empty = Acl::new(AclSet::allow_all());
    let policed = Policed::new(backend(), empty.policy());
    bench_backend(c, "acl_empty", policed, &tables, &outbound, &inbound, peer);
    let one = Acl::new(one_rule());
    let policed = Policed::new(backend(), one.policy());
    bench_backend(c, "acl_1_rule", policed, &tables, &outbound, &inbound, peer);
    let hundred = Acl::new(miss_rules(100));
    let policed = Policed::new(backend(), hundred.policy());
    bench_backend(
        c,
        "acl_100_rules",
        policed,
        &tables,
        &outbound,
        &inbound,
        peer,
    );

    let flow = FlowKey::of_ip(&outbound).unwrap();
    let ctx = PolicyContext::new(Direction::Egress, 0, Some(peer));
    let mut group = c.benchmark_group("acl_judge");
    group.throughput(Throughput::Elements(1));
    for rules in [1u16, 10, 100] {
        let acl = Acl::new(miss_rules(rules));
        let mut policy = acl.policy();
        assert_eq!(policy.judge(&flow, &ctx), Decision::Allow);
        group.bench_function(BenchmarkId::from_parameter(format!("{rules}_rules")), |b| {
            b.iter(|| policy.judge(black_box(&flow), black_box(&ctx)))
        });
    }
    group.finish();
}

criterion_group!(benches, policies);
criterion_main!(benches);
