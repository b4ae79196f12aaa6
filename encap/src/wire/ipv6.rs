//! IPv6 packets (RFC 8200), fixed header only.
//!
//! [`Packet`] is a view over a whole IPv6 packet. After [`Packet::new_checked`] the
//! invariant `40 + payload_len <= buffer.len()` holds, so every accessor is panic-free;
//! bytes after `40 + payload_len` are ignored. Extension headers are part of the payload:
//! [`Packet::next_header`] is the first of them (or the upper-layer protocol).
//! Jumbograms (payload length 0 with a Jumbo Payload option) are not supported: their
//! payload reads as empty.

use std::net::Ipv6Addr;

use super::WireError;

/// Byte ranges of the header fields.
mod field {
    use core::ops::Range;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// A read/write view over an IPv6 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking anything; accessors may panic if it is not valid.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking it holds a structurally valid IPv6 packet.
    ///
    /// Errors: shorter than 40 bytes [`WireError::Truncated`]; version not 6
    /// [`WireError::BadVersion`]; `40 + payload_len` beyond the buffer
    /// [`WireError::BadTotalLen`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Validates the lengths `new_checked` validates.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 6 {
            return Err(WireError::BadVersion);
        }
        if self.total_len() > len {
            return Err(WireError::BadTotalLen);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (6 for a checked packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// The traffic class.
    pub fn traffic_class(&self) -> u8 {
        let d = self.buffer.as_ref();
        (d[0] << 4) | (d[1] >> 4)
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        let d = self.buffer.as_ref();
        (u32::from(d[1] & 0x0f) << 16) | (u32::from(d[2]) << 8) | u32::from(d[3])
    }

    /// The payload length field (extension headers included, fixed header excluded).
    pub fn payload_len(&self) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[field::PAYLOAD_LEN.start], d[field::PAYLOAD_LEN.start + 1]])
    }

    /// The whole packet's length: `40 + payload_len`.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// The next header field (first extension header or upper-layer protocol).
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        Ipv6Addr::from(a)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        Ipv6Addr::from(a)
    }

    /// The payload: bytes `40..40 + payload_len` (extension headers included).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.total_len()]
    }

    /// The whole packet: bytes `..40 + payload_len`.
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 6, the traffic class and the flow label (the whole first 32-bit word).
    pub fn set_version_class_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let word = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0xf_ffff);
        self.buffer.as_mut()[0..4].copy_from_slice(&word.to_be_bytes());
    }

    /// Sets the payload length field.
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the next header field.
    pub fn set_next_header(&mut self, next_header: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = next_header;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// The payload, mutable: bytes `40..40 + payload_len`.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The high-level form of an IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header (first extension header or upper-layer protocol).
    pub next_header: u8,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
}

impl Repr {
    /// Parses the fixed header of a packet (traffic class and flow label are not
    /// represented).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, WireError> {
        packet.check_len()?;
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
        })
    }

    /// Length of the header `emit` writes (always 40).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header into the first 40 bytes of `packet`: version 6, traffic
    /// class 0, flow label 0, payload length (saturating at 65535) and the fields.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version_class_flow(0, 0);
        packet.set_payload_len(self.payload_len.min(usize::from(u16::MAX)) as u16);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;
    use crate::wire::PROTO_ICMPV6;

    fn echo_request() -> Vec<u8> {
        fixture("wire/ipv6-icmpv6-echo-request.hex")
    }

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_captured_echo_request() {
        let bytes = echo_request();
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.total_len(), bytes.len());
        assert_eq!(usize::from(p.payload_len()), bytes.len() - 40);
        assert_eq!(p.next_header(), PROTO_ICMPV6);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), addr("fd00:198:18::1"));
        assert_eq!(p.dst_addr(), addr("fd00:198:18::2"));
        assert_eq!(p.payload().len(), bytes.len() - 40);
    }

    #[test]
    fn repr_round_trip_matches_capture() {
        let bytes = echo_request();
        let p = Packet::new_checked(&bytes[..]).unwrap();
        let repr = Repr::parse(&p).unwrap();
        let mut out = bytes.clone();
        out[..40].fill(0xee);
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        // The kernel may set a flow label; everything else is determined by the fields.
        let mut expected = bytes.clone();
        expected[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
        assert_eq!(out, expected);
        assert_eq!(
            Repr::parse(&Packet::new_checked(&out[..]).unwrap()).unwrap(),
            repr
        );
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = echo_request();
        for n in 0..bytes.len() {
            let expected = if n < HEADER_LEN {
                WireError::Truncated
            } else {
                WireError::BadTotalLen
            };
            assert_eq!(
                Packet::new_checked(&bytes[..n]).unwrap_err(),
                expected,
                "prefix {n}"
            );
        }
    }

    #[test]
    fn rejects_wrong_version_and_long_payload_len() {
        let mut b = echo_request();
        b[0] = 0x45;
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadVersion));
        let mut b = echo_request();
        let too_long = (b.len() - 40 + 1) as u16;
        b[4..6].copy_from_slice(&too_long.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadTotalLen));
    }

    #[test]
    fn setters_round_trip() {
        let mut b = echo_request();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_hop_limit(3);
        p.set_src_addr(addr("fd00:100:96:1::1"));
        p.set_dst_addr(addr("fd00:100:96:2::1"));
        p.set_version_class_flow(0xb8, 0x12345);
        assert_eq!(p.hop_limit(), 3);
        assert_eq!(p.src_addr(), addr("fd00:100:96:1::1"));
        assert_eq!(p.dst_addr(), addr("fd00:100:96:2::1"));
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.version(), 6);
        p.set_payload_len(0);
        assert!(p.payload().is_empty());
    }
}
