//! Steering flannel UDP datagrams over the workers' `SO_REUSEPORT` sockets by inner flow.
//!
//! flannel's UDP backend sends from port 8285 to port 8285, so the kernel's default choice in
//! a reuseport group (a hash of the outer addresses and ports) sends everything from one peer
//! host to one worker. A classic BPF program attached to the group
//! (`SO_ATTACH_REUSEPORT_CBPF`) sees the UDP payload, which is the raw inner IP packet, and
//! picks socket `hash % n` from the inner addresses and ports instead. The hash is symmetric
//! (XOR of both directions' fields), so a flow and its replies land on the same worker index
//! on both hosts, and that worker's TUN queue also gets the flow's outbound packets (the
//! TUN sends a flow to the queue that last wrote it).

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use super::cvt;

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// One instruction of [`flow_program`] before its jumps are resolved.
enum Op {
    /// An instruction without jumps.
    S(u32, u32),
    /// A conditional jump: `code`, `k`, where to go if true and if false.
    J(u32, u32, &'static str, &'static str),
    /// An unconditional jump.
    Ja(&'static str),
    /// A label (takes no slot).
    L(&'static str),
}

/// Resolves the labels of `ops` into relative jump offsets.
fn assemble(ops: &[Op]) -> Vec<libc::sock_filter> {
    let mut labels = Vec::new();
    let mut at = 0u32;
    for op in ops {
        match op {
            Op::L(name) => labels.push((*name, at)),
            _ => at += 1,
        }
    }
    let target = |name: &str| {
        labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, at)| *at)
            .expect("every jump target is a label of the program")
    };
    let mut out = Vec::new();
    for op in ops {
        let here = out.len() as u32;
        let offset = |name| target(name) - here - 1;
        match *op {
            Op::S(code, k) => out.push(stmt(code, k)),
            Op::J(code, k, t, f) => out.push(jump(code, k, offset(t) as u8, offset(f) as u8)),
            Op::Ja(to) => out.push(stmt(libc::BPF_JMP | libc::BPF_JA, offset(to))),
            Op::L(_) => {}
        }
    }
    out
}

/// The program: returns `hash % sockets` for an IPv4 or IPv6 payload (the addresses, and
/// for unfragmented TCP and UDP the ports), and `sockets` (out of range: the kernel then
/// uses its own hash) for anything else. Only TCP and UDP ports count: other protocols'
/// bytes there change from packet to packet (an ICMP checksum) and would scatter a flow.
pub(crate) fn flow_program(sockets: u32) -> Vec<libc::sock_filter> {
    use libc::{
        BPF_ABS, BPF_ALU, BPF_B, BPF_H, BPF_IMM, BPF_IND, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K,
        BPF_LD, BPF_LDX, BPF_MEM, BPF_MISC, BPF_MOD, BPF_MSH, BPF_MUL, BPF_RET, BPF_RSH, BPF_ST,
        BPF_TAX, BPF_W, BPF_X, BPF_XOR,
    };
    use Op::*;
    let ld_w = |k| S(BPF_LD | BPF_W | BPF_ABS, k);
    let tax = || S(BPF_MISC | BPF_TAX, 0);
    let xor_x = || S(BPF_ALU | BPF_XOR | BPF_X, 0);
    let mut ops = vec![
        S(BPF_LD | BPF_B | BPF_ABS, 0),
        S(BPF_ALU | BPF_RSH | BPF_K, 4),
        J(BPF_JMP | BPF_JEQ | BPF_K, 4, "v4", "not_v4"),
        // IPv4: M[0] = src ^ dst.
        L("v4"),
        ld_w(12),
        tax(),
        ld_w(16),
        xor_x(),
        S(BPF_ST, 0),
        // Ports only for an unfragmented (offset 0, MF clear) TCP or UDP packet.
        S(BPF_LD | BPF_H | BPF_ABS, 6),
        J(BPF_JMP | BPF_JSET | BPF_K, 0x3fff, "no_ports", "v4_proto"),
        L("v4_proto"),
        S(BPF_LD | BPF_B | BPF_ABS, 9),
        J(BPF_JMP | BPF_JEQ | BPF_K, 6, "v4_ports", "v4_udp"),
        L("v4_udp"),
        J(BPF_JMP | BPF_JEQ | BPF_K, 17, "v4_ports", "no_ports"),
        L("v4_ports"),
        S(BPF_LDX | BPF_B | BPF_MSH, 0), // X = 4 * IHL
        S(BPF_LD | BPF_W | BPF_IND, 0),  // A = the ports
        tax(),
        S(BPF_LD | BPF_MEM, 0),
        Ja("mix"),
        L("not_v4"),
        J(BPF_JMP | BPF_JEQ | BPF_K, 6, "v6", "other"),
        // IPv6: M[0] = the XOR of the eight address words.
        L("v6"),
        ld_w(8),
        tax(),
    ];
    for k in [12, 16, 20, 24, 28, 32, 36] {
        ops.extend([ld_w(k), xor_x(), tax()]);
    }
    ops.extend([
        S(BPF_ST, 0),
        S(BPF_LD | BPF_B | BPF_ABS, 6), // next header
        J(BPF_JMP | BPF_JEQ | BPF_K, 6, "v6_ports", "v6_udp"),
        L("v6_udp"),
        J(BPF_JMP | BPF_JEQ | BPF_K, 17, "v6_ports", "no_ports"),
        L("v6_ports"),
        ld_w(40),
        tax(),
        S(BPF_LD | BPF_MEM, 0),
        Ja("mix"),
        L("no_ports"),
        S(BPF_LDX | BPF_IMM, 0),
        S(BPF_LD | BPF_MEM, 0),
        // A = addresses, X = ports (or 0). Mix: fold the ports onto each other, multiply
        // (Fibonacci hashing) and keep high bits. The raw low bits would not do: Linux gives
        // connect() even source ports, so bit 0 is the same for every flow of a host pair.
        L("mix"),
        xor_x(),
        tax(),
        S(BPF_ALU | BPF_RSH | BPF_K, 16),
        xor_x(),
        S(BPF_ALU | BPF_MUL | BPF_K, 0x9E37_79B1),
        S(BPF_ALU | BPF_RSH | BPF_K, 16),
        S(BPF_ALU | BPF_MOD | BPF_K, sockets.max(1)),
        S(BPF_RET | libc::BPF_A, 0),
        L("other"),
        S(BPF_RET | BPF_K, sockets),
    ]);
    assemble(&ops)
}

/// Attaches [`flow_program`] to the reuseport group of `socket` (any member; the group has
/// `sockets` members, bound in worker order).
pub fn steer_by_inner_flow(socket: impl AsFd, sockets: u32) -> io::Result<()> {
    attach(
        socket.as_fd(),
        SO_ATTACH_REUSEPORT_CBPF,
        &mut flow_program(sockets),
    )
}

/// Attaches a socket filter that drops every datagram before it is queued: for sockets that
/// only send (VXLAN's per-flow source ports), so that nobody can fill their receive buffers.
/// The kernel counts what it drops in the socket's drops (`/proc/net/udp`).
pub fn refuse_input(socket: impl AsFd) -> io::Result<()> {
    let mut program = [stmt(libc::BPF_RET | libc::BPF_K, 0)];
    attach(socket.as_fd(), libc::SO_ATTACH_FILTER, &mut program)
}

/// Hands the classic BPF `program` to `socket` with the `SOL_SOCKET` option `option`.
fn attach(
    socket: BorrowedFd<'_>,
    option: libc::c_int,
    program: &mut [libc::sock_filter],
) -> io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "program too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `program`, which lives across the call and holds `len`
    // instructions; the kernel copies the program (and validates it) before returning.
    cvt(unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&prog as *const libc::sock_fprog).cast(),
            mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::test_support::in_private_netns;
    use crate::sys::test_support::skip_unless_root;
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    fn member(addr: SocketAddr) -> UdpSocket {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&addr.into()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s.into()
    }

    /// An IPv4/UDP "inner packet" from 100.96.1.5:`sport` to 100.96.2.7:`dport`.
    fn inner(sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[9] = 17;
        p[12..16].copy_from_slice(&[100, 96, 1, 5]);
        p[16..20].copy_from_slice(&[100, 96, 2, 7]);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    /// An IPv6/UDP "inner packet" from fd00:100:96:1::5 port `sport` to fd00:100:96:2::7.
    fn inner6(sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[6] = 17;
        p[8..24].copy_from_slice(
            &"fd00:100:96:1::5"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        p[24..40].copy_from_slice(
            &"fd00:100:96:2::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        p[40..42].copy_from_slice(&sport.to_be_bytes());
        p[42..44].copy_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn the_program_is_accepted_and_spreads_inner_flows_over_the_group() {
        skip_unless_root!();
        in_private_netns(|| {
            let addr: SocketAddr = "127.0.0.1:8285".parse().unwrap();
            let group = [member(addr), member(addr)];
            steer_by_inner_flow(&group[0], 2).expect("the kernel accepts the program");
            let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
            // One outer 4-tuple, many inner flows: the kernel's own hash would pick one
            // socket for all of them.
            let mut got = [0usize; 2];
            // Even source ports only, as Linux hands them to connect().
            for flow in 0..64u16 {
                sender
                    .send_to(&inner(40000 + 2 * flow, 5201), addr)
                    .unwrap();
                // The same flow twice must land on the same socket.
                sender
                    .send_to(&inner(40000 + 2 * flow, 5201), addr)
                    .unwrap();
            }
            let mut buf = [0u8; 64];
            for (i, s) in group.iter().enumerate() {
                while s.recv(&mut buf).is_ok() {
                    got[i] += 1;
                }
            }
            assert_eq!(got[0] + got[1], 128, "every datagram arrived: {got:?}");
            assert!(
                got[0] > 0 && got[1] > 0,
                "flows spread over both sockets: {got:?}"
            );
            assert!(
                got[0] % 2 == 0 && got[1] % 2 == 0,
                "a flow stays on one socket"
            );
            let mut got6 = [0usize; 2];
            for flow in 0..64u16 {
                sender
                    .send_to(&inner6(40000 + 2 * flow, 5201), addr)
                    .unwrap();
            }
            for (i, s) in group.iter().enumerate() {
                while s.recv(&mut buf).is_ok() {
                    got6[i] += 1;
                }
            }
            assert_eq!(got6[0] + got6[1], 64, "{got6:?}");
            assert!(
                got6[0] > 0 && got6[1] > 0,
                "IPv6 flows spread too: {got6:?}"
            );
        });
    }

    #[test]
    fn the_program_ends_in_returns_and_jumps_stay_inside_it() {
        let p = flow_program(4);
        assert!(p.len() < 80);
        let last = p.len() - 1;
        assert_eq!(p[last].k, 4, "anything else: an out-of-range index");
        assert_eq!(p[last - 2].k, 4, "modulo the group size");
        for (i, insn) in p.iter().enumerate() {
            if u32::from(insn.code) & 0x07 == libc::BPF_JMP {
                let (jt, jf) = (usize::from(insn.jt), usize::from(insn.jf));
                assert!(i + 1 + jt.max(jf) <= last, "jump at {i} leaves the program");
            }
        }
    }

    #[test]
    fn a_socket_that_refuses_input_queues_nothing() {
        skip_unless_root!();
        in_private_netns(|| {
            let refusing = UdpSocket::bind("127.0.0.1:0").unwrap();
            refuse_input(&refusing).expect("the kernel accepts the filter");
            refusing.set_nonblocking(true).unwrap();
            let open = UdpSocket::bind("127.0.0.1:0").unwrap();
            open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
            for _ in 0..100 {
                sender
                    .send_to(b"junk", refusing.local_addr().unwrap())
                    .unwrap();
            }
            // Loopback delivers in order: once the open socket has its datagram, the
            // refusing one has seen all of its own.
            sender
                .send_to(b"marker", open.local_addr().unwrap())
                .unwrap();
            let mut buf = [0u8; 16];
            assert_eq!(open.recv(&mut buf).unwrap(), 6);
            let err = refusing.recv(&mut buf).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
            // It still sends.
            refusing
                .send_to(b"out", open.local_addr().unwrap())
                .unwrap();
            assert_eq!(open.recv(&mut buf).unwrap(), 3);
        });
    }
}
