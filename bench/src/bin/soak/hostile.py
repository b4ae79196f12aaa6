# weft-soak's hostile datagram generator (run by weft-soak inside a host namespace).
#
# Sends a bounded mix of malformed, spoofed and odd datagrams to weft's UDP port: at most
# RATE per second, for at most SECONDS seconds and at most LIMIT datagrams, then prints one
# line "sent <total> <kind>=<count> ... errors=<n>" and exits.
#
# argv: backend target port peer_src stranger_src rate seconds limit target_mac peer_mac
#       target_addr pod_addr peer_inner seed
#   backend      "udp" (flannel: the inner IP packet is the payload) or "vxlan" (VNI 1, L3)
#   target       weft's underlay address; port its UDP port
#   peer_src     an address of this namespace that weft knows as a peer (passes check_peer)
#   stranger_src an address of this namespace that weft does not know
#   target_mac   weft's VTEP MAC, peer_mac the sending peer's (VXLAN)
#   target_addr  weft's overlay address, pod_addr a pod behind it
#   peer_inner   an inner source address inside the sending peer's subnet
import os
import random
import socket
import struct
import sys
import time

(backend, target, port, peer_src, stranger_src, rate, seconds, limit, target_mac, peer_mac,
 target_addr, pod_addr, peer_inner, seed) = sys.argv[1:15]
port, rate, seconds, limit = int(port), float(rate), float(seconds), int(limit)
rng = random.Random(int(seed))
aton = socket.inet_aton
MAX_UDP = 65507


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src, dst, payload, proto=1, ttl=64, total=None, bad_checksum=False, df=True):
    length = 20 + len(payload) if total is None else total
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, length & 0xFFFF, rng.randrange(65536),
                         0x4000 if df else 0, ttl, proto, 0, aton(src), aton(dst))
    sum_ = checksum(header) ^ (0x5A5A if bad_checksum else 0)
    return header[:10] + struct.pack("!H", sum_) + header[12:] + payload


def echo(size=24):
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x50AC, rng.randrange(65536)) + os.urandom(size)
    return icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]


def udp(size, dport=9):
    # UDP checksum 0: "none" for IPv4.
    return struct.pack("!HHHH", rng.randrange(1024, 65536), dport, 8 + size, 0) + os.urandom(size)


def tcp_bad_checksum(size=100):
    # An ACK to the iperf3 port whose checksum is certainly wrong.
    header = struct.pack("!HHIIBBHHH", rng.randrange(1024, 65536), 5201,
                         rng.randrange(1 << 32), rng.randrange(1 << 32), 5 << 4, 0x10,
                         65535, 0xDEAD, 0)
    return header + os.urandom(size)


def random_overlay(host_low=3, host_high=250):
    return "100.96.%d.%d" % (rng.randint(host_low, host_high), rng.randint(1, 254))


def inner_packet(kind):
    """An inner (L3) packet of the given kind."""
    if kind == "ttl1":
        return ipv4(peer_inner, pod_addr, echo(), ttl=1)
    if kind == "ttl0":
        return ipv4(peer_inner, target_addr, echo(), ttl=0)
    if kind == "spoofed-source":
        return ipv4(random_overlay(), rng.choice([target_addr, pod_addr]), echo())
    if kind == "bad-destination":
        dst = rng.choice(["255.255.255.255", "127.0.0.1", "0.1.2.3"])
        return ipv4(peer_inner, dst, udp(16))
    if kind == "elsewhere":
        # Not for this host: its kernel routes it back into weft (a churned route, a made-up
        # endpoint, or no route at all and an ICMP error).
        return ipv4(peer_inner, random_overlay(10, 249), echo())
    if kind == "bad-ip-checksum":
        return ipv4(peer_inner, target_addr, echo(), bad_checksum=True)
    if kind == "length-too-long":
        return ipv4(peer_inner, target_addr, echo(40), total=1000)
    if kind == "length-too-short":
        return ipv4(peer_inner, target_addr, echo(40), total=rng.randint(0, 19))
    if kind == "truncated-header":
        return ipv4(peer_inner, target_addr, echo())[:rng.randint(1, 19)]
    if kind == "ipv6-junk":
        return bytes([0x60]) + os.urandom(rng.randint(0, 60))
    if kind == "garbage":
        return os.urandom(rng.randint(1, 300))
    if kind == "empty":
        return b""
    if kind == "tcp-bad-checksum":
        return ipv4(peer_inner, pod_addr, tcp_bad_checksum(), proto=6)
    if kind == "oversize":
        room = MAX_UDP - 20 - 8 - (22 if backend == "vxlan" else 0)
        size = rng.choice([3000, 9000, 30000, room])
        return ipv4(peer_inner, pod_addr, udp(size), proto=17, df=False)
    raise SystemExit("unknown kind " + kind)


INNER_KINDS = {
    "ttl1": 6, "ttl0": 3, "spoofed-source": 6, "bad-destination": 4, "elsewhere": 4,
    "bad-ip-checksum": 3, "length-too-long": 3, "length-too-short": 3,
    "truncated-header": 3, "ipv6-junk": 3, "garbage": 4, "empty": 2, "tcp-bad-checksum": 3,
    "oversize": 1,
}


def mac(text):
    return bytes(int(octet, 16) for octet in text.split(":"))


def vxlan(frame, vni=1, flags=0x08):
    return struct.pack("!B3sI", flags, b"\0\0\0", vni << 8) + frame


def ether(payload, dst=None, src=None, ethertype=0x0800):
    return (dst or mac(target_mac)) + (src or mac(peer_mac)) + struct.pack("!H", ethertype) + payload


def arp_request():
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac(peer_mac), aton(peer_inner),
                       b"\0" * 6, aton(target_addr))
    return ether(body, dst=b"\xff" * 6, ethertype=0x0806)


def vxlan_datagram(kind):
    if kind == "vx-too-short":
        return os.urandom(rng.randint(0, 7))
    if kind == "vx-no-i-flag":
        return vxlan(ether(inner_packet("ttl1")), flags=0)
    if kind == "vx-wrong-vni":
        return vxlan(ether(inner_packet("ttl1")), vni=rng.randint(2, (1 << 24) - 1))
    if kind == "vx-wrong-dst-mac":
        return vxlan(ether(inner_packet("ttl1"), dst=bytes([0x02]) + os.urandom(5)))
    if kind == "vx-own-src-mac":
        return vxlan(ether(inner_packet("ttl1"), src=mac(target_mac)))
    if kind == "vx-ethertype":
        return vxlan(ether(os.urandom(46), ethertype=rng.choice([0x88CC, 0x8100, 0x86DD])))
    if kind == "vx-truncated-ether":
        return vxlan(ether(b"")[:rng.randint(0, 13)])
    if kind == "vx-arp":
        return vxlan(arp_request())
    return vxlan(ether(inner_packet(kind)))


VXLAN_KINDS = {
    "vx-too-short": 3, "vx-no-i-flag": 3, "vx-wrong-vni": 3, "vx-wrong-dst-mac": 3,
    "vx-own-src-mac": 3, "vx-ethertype": 3, "vx-truncated-ether": 3, "vx-arp": 2,
}

if backend == "udp":
    kinds = dict(INNER_KINDS)
elif backend == "vxlan":
    kinds = dict(INNER_KINDS)
    kinds.update(VXLAN_KINDS)
else:
    raise SystemExit("unknown backend " + backend)
kinds["stranger"] = 4
names, weights = list(kinds), list(kinds.values())


def datagram(kind):
    if kind == "stranger":
        # A well-formed packet, from an address that is no peer.
        inner = ipv4(peer_inner, target_addr, echo())
        return vxlan(ether(inner)) if backend == "vxlan" else inner
    if backend == "vxlan":
        return vxlan_datagram(kind)
    return inner_packet(kind)


peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
peer.bind((peer_src, 0))
stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
stranger.bind((stranger_src, 0))

counts = {}
sent = errors = 0
start = time.monotonic()
while sent + errors < limit:
    elapsed = time.monotonic() - start
    if elapsed >= seconds:
        break
    due = min(limit, int(elapsed * rate) + 1)
    while sent + errors < due:
        kind = rng.choices(names, weights)[0]
        sock = stranger if kind == "stranger" else peer
        try:
            sock.sendto(datagram(kind), (target, port))
            sent += 1
            counts[kind] = counts.get(kind, 0) + 1
        except OSError:
            errors += 1
    time.sleep(0.005)

print("sent", sent, " ".join("%s=%d" % item for item in sorted(counts.items())),
      "errors=%d" % errors)
