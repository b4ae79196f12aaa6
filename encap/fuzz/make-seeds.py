#!/usr/bin/env python3
"""Writes the seed inputs of the wire, icmp, neigh, flannel and vxlan fuzz targets from the
captured packets in fixtures/ (run from anywhere; rewrites seeds/<target>/fixture-*).

Each seed is a fixture packet wrapped in its target's input format (see the doc comment of
the target's check function in src/wire_checks.rs and src/packet_checks.rs). Crash inputs
found by a fuzzer (crash-*) sit next to them and are left alone.
"""
import os
import re
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "fixtures")
SEEDS = os.path.join(HERE, "seeds")


def fx(name):
    """The bytes of fixtures/<name> (hex text, '#' comments)."""
    text = open(os.path.join(FIXTURES, name)).read()
    digits = re.sub(r"\s", "", "".join(l.split("#")[0] for l in text.splitlines()))
    return bytes.fromhex(digits)


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "fixture-" + name), "wb") as f:
        f.write(data)


# Record of the flannel/vxlan inputs: [op, aux, len_hi, len_lo, bytes]. op: bit 0 datagram,
# bit 1 trait API (flannel) / wrap (vxlan), bits 2-4 headroom index (6 = 48 bytes), bits 5-6
# tailroom index (2 = 64 bytes). aux: bits 0-2 source, bits 3-4 device, bits 5-7 clock step.
HEAD48 = 6 << 2
TAIL64 = 2 << 5


def record(op, aux, pkt):
    return bytes([op, aux]) + struct.pack(">H", len(pkt)) + pkt


def main():
    # wire: [view, bytes]; views 0 IPv4, 1 IPv6, 2 UDP, 3 ICMP, 4 ICMPv6, 5 Ethernet, 6 ARP,
    # 7 VXLAN.
    udp4 = fx("wire/ipv4-udp.hex")
    outer = fx("vxlan/outer-echo-request.hex")
    for name, view, data in [
        ("ipv4-udp", 0, udp4),
        ("ipv4-tcp-syn", 0, fx("wire/ipv4-tcp-syn.hex")),
        ("ipv4-port-unreachable", 0, fx("wire/ipv4-icmp-port-unreachable.hex")),
        ("ipv6-echo-request", 1, fx("wire/ipv6-icmpv6-echo-request.hex")),
        ("udp", 2, udp4[20:]),
        ("ethernet-arp-request", 5, fx("wire/ethernet-arp-request.hex")),
        ("ethernet-ns", 5, fx("neigh/ns.hex")),
        ("vxlan", 7, outer[28:]),
    ]:
        write("wire", name, bytes([view]) + data)

    # icmp: [sel, head, tail, mtu(4), flags, offender]; sel % 3: 0 net unreachable, 1 time
    # exceeded, 2 too big; (sel >> 2) & 3: source 0 198.18.0.2, 1 fd00:198:18::2.
    mtu1280 = struct.pack(">I", 1280)
    for name, sel, data in [
        ("ipv4-ttl1", 1, fx("wire/ipv4-offender-ttl1.hex")),
        ("ipv4-unroutable", 0, fx("wire/ipv4-offender-unroutable.hex")),
        ("ipv4-1428-df", 2, fx("wire/ipv4-offender-1428-df.hex")),
        ("ipv6-hop1", 1 | 4, fx("wire/ipv6-offender-hop1.hex")),
        ("ipv6-1448", 2 | 4, fx("wire/ipv6-offender-1448.hex")),
        ("ipv4-error-not-answered", 0, fx("wire/ipv4-icmp-port-unreachable.hex")),
    ]:
        write("icmp", name, bytes([sel, 48, 8]) + mtu1280 + bytes([0]) + data)

    # neigh: [cfg, head, tail, frame]; the VTEP is host B of fixtures/neigh.
    for name in ["arp-request", "ns", "ns-dad", "arp-reply", "na"]:
        write("neigh", name, bytes([0, 14, 100]) + fx("neigh/" + name + ".hex"))

    # flannel: [cfg, records]; cfg 3 = check_peer + check_inner_source, max_payload 1472.
    # Sources (aux & 7): 0 198.18.0.2 (owns 100.96.2.0/24), 4 a stranger.
    datagram = fx("flannel/datagram_v4.hex")[28:]  # echo request 100.96.1.0 -> 100.96.2.0
    reply = fx("flannel/echo_reply_v4.hex")  # 100.96.2.0 -> 100.96.1.0, from B
    dev = HEAD48 | TAIL64
    write("flannel", "device-v4-v6", bytes([3])
          + record(dev, 0, datagram)
          + record(dev | 2, 0x20, fx("flannel/echo_request_v6.hex")))
    write("flannel", "datagram-from-b", bytes([3])
          + record(dev | 1, 0, reply)
          + record(dev | 1, 4, reply)
          + record(dev | 3, 0x20, reply))
    # Ethernet padding after the IP packet: sent without it; a datagram with it is refused.
    write("flannel", "padded", bytes([3])
          + record(dev, 0, datagram + bytes(10))
          + record(dev | 1, 0, reply + bytes(10)))
    write("flannel", "icmp-errors", bytes([3])
          + record(dev, 0, fx("wire/ipv4-offender-ttl1.hex"))
          + record(dev, 0, fx("wire/ipv4-icmp-echo-request.hex"))
          + record(dev, 0, fx("wire/ipv6-offender-unroutable.hex"))
          + record(dev, 0, fx("wire/ipv6-offender-1448.hex")))
    # max_payload 1252 (cfg bits 2-3 = 1): the 1428-byte DF packet is too big.
    write("flannel", "too-big", bytes([3 | 4])
          + record(dev, 0, fx("wire/ipv4-offender-1428-df.hex")))

    # vxlan: [cfg, records]; cfg 7 = check_peer + check_inner_source + learning. Devices
    # (aux bits 3-4): 0 VNI 1 L3 (host A), 1 VNI 2 L2, 2 VNI 0x123456 L3 (host B of
    # fixtures/neigh). Sources (aux & 7): 0 198.18.0.2:8472 (B), 2 198.18.0.3 (C).
    outer_reply = fx("vxlan/outer-echo-reply.hex")[28:]  # from B, VNI 1, to host A
    inner_req = fx("vxlan/inner-echo-request.hex")
    write("vxlan", "l3-both-ways", bytes([7])
          + record(dev | 1, 0, outer_reply)
          + record(dev, 0, inner_req[14:]))
    # L2: a frame from B on VNI 2 teaches 02:00:00:00:01:00; a frame to it goes to B.
    write("vxlan", "l2-learn-then-send", bytes([7])
          + record(dev | 1 | 2, 1 << 3, inner_req)
          + record(dev, 1 << 3, fx("vxlan/inner-echo-reply.hex"))
          + record(dev, 1 << 3, fx("neigh/arp-request.hex")))
    # ARP and ND for the VTEP of device 2, wrapped in VXLAN + Ethernet to the VTEP MAC.
    write("vxlan", "neigh", bytes([7])
          + record(dev | 1 | 2, 2 << 3, fx("neigh/arp-request.hex")[14:])
          + record(dev | 1 | 2, 2 << 3, fx("neigh/ns.hex")[14:])
          + record(dev | 1 | 2, 2 << 3, fx("neigh/ns-dad.hex")[14:]))
    # A frame from the VTEP's own MAC; an IP packet with Ethernet padding after it (not
    # delivered with it).
    write("vxlan", "own-mac-and-padding", bytes([7])
          + record(dev | 1, 0, outer[28:36] + inner_req)
          + record(dev | 1, 0, outer_reply + bytes(6)))
    write("vxlan", "icmp-errors", bytes([7])
          + record(dev, 0, fx("wire/ipv4-icmp-echo-request.hex"))
          + record(dev, 0, fx("wire/ipv6-offender-1448.hex")))


if __name__ == "__main__":
    main()
