//! ICMPv6 (RFC 4443) and the Neighbor Discovery message types (RFC 4861).
//!
//! [`Packet`] is a view over an ICMPv6 message (the upper-layer payload of an IPv6 packet):
//! type, code, checksum, the 32-bit rest-of-header, and the data. After
//! [`Packet::new_checked`] the buffer holds at least the 8-byte header; the message is the
//! whole buffer. The checksum covers the IPv6 pseudo header, so verifying and filling it
//! takes the addresses of the enclosing packet.

use std::net::Ipv6Addr;

use super::{checksum, WireError, PROTO_ICMPV6};

/// Length of the ICMPv6 header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;

/// Type: destination unreachable.
pub const TYPE_DEST_UNREACHABLE: u8 = 1;
/// Type: packet too big (the rest of header is the MTU).
pub const TYPE_PACKET_TOO_BIG: u8 = 2;
/// Type: time exceeded.
pub const TYPE_TIME_EXCEEDED: u8 = 3;
/// Type: parameter problem.
pub const TYPE_PARAMETER_PROBLEM: u8 = 4;
/// Type: echo request.
pub const TYPE_ECHO_REQUEST: u8 = 128;
/// Type: echo reply.
pub const TYPE_ECHO_REPLY: u8 = 129;
/// Type: router solicitation.
pub const TYPE_ROUTER_SOLICITATION: u8 = 133;
/// Type: router advertisement.
pub const TYPE_ROUTER_ADVERTISEMENT: u8 = 134;
/// Type: neighbor solicitation.
pub const TYPE_NEIGHBOR_SOLICITATION: u8 = 135;
/// Type: neighbor advertisement.
pub const TYPE_NEIGHBOR_ADVERTISEMENT: u8 = 136;

/// Destination unreachable code: no route to destination.
pub const CODE_NO_ROUTE: u8 = 0;
/// Destination unreachable code: communication with destination administratively prohibited.
pub const CODE_ADMIN_PROHIBITED: u8 = 1;
/// Destination unreachable code: address unreachable.
pub const CODE_ADDRESS_UNREACHABLE: u8 = 3;
/// Destination unreachable code: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 4;
/// Time exceeded code: hop limit exceeded in transit.
pub const CODE_HOP_LIMIT_EXCEEDED: u8 = 0;

/// Whether `msg_type` is an ICMPv6 error message (types 0..=127, RFC 4443 2.1).
pub fn is_error_type(msg_type: u8) -> bool {
    msg_type < 128
}

/// A read/write view over an ICMPv6 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking anything; accessors may panic if it is shorter than
    /// 8 bytes.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking it holds at least the 8-byte header
    /// ([`WireError::Truncated`] otherwise).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Validates the length `new_checked` validates.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[2], d[3]])
    }

    /// The 32-bit rest of header (MTU of a packet too big, pointer of a parameter problem,
    /// echo identifier+sequence, reserved/flags of ND messages).
    pub fn rest_of_header(&self) -> u32 {
        let d = self.buffer.as_ref();
        u32::from_be_bytes([d[4], d[5], d[6], d[7]])
    }

    /// The data after the header (for errors: the quoted offending packet).
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Whether the checksum is correct for a message from `src` to `dst`.
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let data = self.buffer.as_ref();
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let s = checksum::pseudo_header_v6(src, dst, PROTO_ICMPV6, len);
        checksum::fold(checksum::sum(data, s)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    pub fn set_msg_type(&mut self, msg_type: u8) {
        self.buffer.as_mut()[0] = msg_type;
    }

    /// Sets the message code.
    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[1] = code;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[2..4].copy_from_slice(&checksum.to_be_bytes());
    }

    /// Sets the rest of header.
    pub fn set_rest_of_header(&mut self, rest: u32) {
        self.buffer.as_mut()[4..8].copy_from_slice(&rest.to_be_bytes());
    }

    /// The data after the header, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Computes and writes the checksum for a message from `src` to `dst` (pseudo header
    /// included).
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let s = checksum::pseudo_header_v6(src, dst, PROTO_ICMPV6, len);
        let c = !checksum::fold(checksum::sum(data, s));
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;
    use crate::wire::ipv6;

    /// (source, destination, ICMPv6 message) of an IPv6 fixture.
    fn message_of(name: &str) -> (Ipv6Addr, Ipv6Addr, Vec<u8>) {
        let ip = fixture(name);
        let p = ipv6::Packet::new_checked(&ip[..]).unwrap();
        assert_eq!(p.next_header(), PROTO_ICMPV6, "{name}");
        (p.src_addr(), p.dst_addr(), p.payload().to_vec())
    }

    #[test]
    fn parses_captured_echo_pair() {
        let (s, d, req) = message_of("wire/ipv6-icmpv6-echo-request.hex");
        let q = Packet::new_checked(&req[..]).unwrap();
        assert_eq!(q.msg_type(), TYPE_ECHO_REQUEST);
        assert!(q.verify_checksum(&s, &d));
        assert!(!q.verify_checksum(&d, &"fd00::1".parse().unwrap()));
        let (s, d, rep) = message_of("wire/ipv6-icmpv6-echo-reply.hex");
        let r = Packet::new_checked(&rep[..]).unwrap();
        assert_eq!(r.msg_type(), TYPE_ECHO_REPLY);
        assert!(r.verify_checksum(&s, &d));
        assert_eq!(q.rest_of_header(), r.rest_of_header());
        assert!(!is_error_type(q.msg_type()));
    }

    #[test]
    fn parses_captured_neighbor_discovery() {
        let (s, d, ns) = message_of("wire/ipv6-icmpv6-neighbor-solicitation.hex");
        let p = Packet::new_checked(&ns[..]).unwrap();
        assert_eq!(p.msg_type(), TYPE_NEIGHBOR_SOLICITATION);
        assert!(p.verify_checksum(&s, &d));
        // Target address follows the reserved word.
        assert_eq!(
            &p.data()[..16],
            &"fd00:198:18::2".parse::<Ipv6Addr>().unwrap().octets()
        );
        let (s, d, na) = message_of("wire/ipv6-icmpv6-neighbor-advertisement.hex");
        let p = Packet::new_checked(&na[..]).unwrap();
        assert_eq!(p.msg_type(), TYPE_NEIGHBOR_ADVERTISEMENT);
        assert!(p.verify_checksum(&s, &d));
    }

    #[test]
    fn parses_captured_errors() {
        for (name, ty, code) in [
            (
                "wire/ipv6-icmpv6-time-exceeded.hex",
                TYPE_TIME_EXCEEDED,
                CODE_HOP_LIMIT_EXCEEDED,
            ),
            (
                "wire/ipv6-icmpv6-no-route.hex",
                TYPE_DEST_UNREACHABLE,
                CODE_NO_ROUTE,
            ),
            (
                "wire/ipv6-icmpv6-packet-too-big.hex",
                TYPE_PACKET_TOO_BIG,
                0,
            ),
        ] {
            let (s, d, m) = message_of(name);
            let p = Packet::new_checked(&m[..]).unwrap();
            assert_eq!((p.msg_type(), p.code()), (ty, code), "{name}");
            assert!(p.verify_checksum(&s, &d), "{name}");
            assert!(is_error_type(p.msg_type()));
            assert_eq!(p.data()[0] >> 4, 6, "{name}");
        }
        let (_, _, m) = message_of("wire/ipv6-icmpv6-packet-too-big.hex");
        assert_eq!(Packet::new_checked(&m[..]).unwrap().rest_of_header(), 1280);
    }

    #[test]
    fn fill_checksum_reproduces_capture() {
        let (s, d, orig) = message_of("wire/ipv6-icmpv6-echo-request.hex");
        let mut m = orig.clone();
        let mut p = Packet::new_checked(&mut m[..]).unwrap();
        p.set_checksum(0);
        assert!(!p.verify_checksum(&s, &d));
        p.fill_checksum(&s, &d);
        assert_eq!(m, orig);
    }

    #[test]
    fn truncations_rejected_and_setters_work() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&[0u8; 8][..n]),
                Err(WireError::Truncated)
            );
        }
        let mut b = [0u8; 12];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(TYPE_PACKET_TOO_BIG);
        p.set_code(0);
        p.set_rest_of_header(1280);
        p.data_mut().copy_from_slice(&[0x60, 0, 0, 0]);
        let s: Ipv6Addr = "fd00:198:18::1".parse().unwrap();
        let d: Ipv6Addr = "fd00:198:18::2".parse().unwrap();
        p.fill_checksum(&s, &d);
        assert!(p.verify_checksum(&s, &d));
        assert_eq!(p.rest_of_header(), 1280);
        assert_eq!(p.data(), &[0x60, 0, 0, 0]);
    }

    #[test]
    fn error_types() {
        assert!(is_error_type(1) && is_error_type(127));
        assert!(!is_error_type(128) && !is_error_type(TYPE_NEIGHBOR_SOLICITATION));
    }
}
