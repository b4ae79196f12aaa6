//! UDP datagrams (RFC 768; over IPv6 RFC 8200 8.1).
//!
//! [`Packet`] is a view over a UDP datagram (the IP payload). After [`Packet::new_checked`]
//! the invariant `8 <= len <= buffer.len()` holds (`len` = the UDP length field), so every
//! accessor is panic-free; bytes after `len` are ignored. The checksum covers the IP pseudo
//! header, so verifying and filling it takes the enclosing packet's addresses.

use std::net::{IpAddr, Ipv6Addr};

use super::{checksum, WireError, PROTO_UDP};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// A read/write view over a UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// Partial sum of the pseudo header for `src`/`dst`. Mixed families (a caller bug) are
/// summed as IPv4-mapped IPv6 addresses rather than panicking.
fn pseudo_header(src: IpAddr, dst: IpAddr, len: u32) -> checksum::Sum {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_header_v4(s, d, PROTO_UDP, len),
        _ => {
            let v6 = |a: IpAddr| -> Ipv6Addr {
                match a {
                    IpAddr::V4(a) => a.to_ipv6_mapped(),
                    IpAddr::V6(a) => a,
                }
            };
            checksum::pseudo_header_v6(&v6(src), &v6(dst), PROTO_UDP, len)
        }
    }
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking anything; accessors may panic if it is not valid.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking it holds a structurally valid datagram.
    ///
    /// Errors: shorter than 8 bytes [`WireError::Truncated`]; the length field below 8 or
    /// beyond the buffer [`WireError::BadTotalLen`] (so UDP jumbograms, length 0, are
    /// rejected).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Validates the lengths `new_checked` validates.
    pub fn check_len(&self) -> Result<(), WireError> {
        let buf_len = self.buffer.as_ref().len();
        if buf_len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN || len > buf_len {
            return Err(WireError::BadTotalLen);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn read_u16(&self, at: usize) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[at], d[at + 1]])
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        self.read_u16(0)
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        self.read_u16(2)
    }

    /// The length field: header plus payload, in bytes.
    pub fn len(&self) -> u16 {
        self.read_u16(4)
    }

    /// Whether the payload is empty (length field 8).
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The checksum field (0 = no checksum, IPv4 only).
    pub fn checksum(&self) -> u16 {
        self.read_u16(6)
    }

    /// The payload: bytes `8..len`.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// Whether the checksum is correct for a datagram from `src` to `dst`.
    ///
    /// A zero checksum means "none" and counts as valid over IPv4; over IPv6 it is invalid
    /// (RFC 8200 8.1).
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        if self.checksum() == 0 {
            return src.is_ipv4() && dst.is_ipv4();
        }
        let data = &self.buffer.as_ref()[..usize::from(self.len())];
        let s = pseudo_header(src, dst, u32::from(self.len()));
        checksum::fold(checksum::sum(data, s)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn write_u16(&mut self, at: usize, value: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        self.write_u16(0, port);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        self.write_u16(2, port);
    }

    /// Sets the length field.
    pub fn set_len(&mut self, len: u16) {
        self.write_u16(4, len);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.write_u16(6, checksum);
    }

    /// The payload, mutable: bytes `8..len`.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Computes and writes the checksum for a datagram from `src` to `dst` (pseudo header
    /// included). A computed 0 is sent as `0xffff` (RFC 768).
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let len = self.len();
        let s = pseudo_header(src, dst, u32::from(len));
        let c = !checksum::fold(checksum::sum(&self.buffer.as_ref()[..usize::from(len)], s));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The high-level form of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length in bytes (the length field minus 8).
    pub payload_len: usize,
}

impl Repr {
    /// Parses the header of a datagram. The checksum is not verified (it needs the
    /// addresses: see [`Packet::verify_checksum`]).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, WireError> {
        packet.check_len()?;
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: packet.payload().len(),
        })
    }

    /// Length of the header `emit` writes (always 8).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first 8 bytes of `packet`: ports, length
    /// `8 + payload_len` (saturating at 65535) and a **zero checksum**. Over IPv6, or to
    /// send a checksum over IPv4, call [`Packet::fill_checksum`] once the payload is in
    /// place.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        let len = (HEADER_LEN + self.payload_len).min(usize::from(u16::MAX));
        packet.set_len(len as u16);
        packet.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;
    use crate::wire::ipv4;
    use std::net::Ipv4Addr;

    /// (source, destination, UDP datagram) of the captured IPv4/UDP packet.
    fn captured() -> (IpAddr, IpAddr, Vec<u8>) {
        let ip = fixture("wire/ipv4-udp.hex");
        let p = ipv4::Packet::new_checked(&ip[..]).unwrap();
        (
            p.src_addr().into(),
            p.dst_addr().into(),
            p.payload().to_vec(),
        )
    }

    #[test]
    fn parses_captured_datagram() {
        let (s, d, bytes) = captured();
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(s, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(d, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)));
        assert_eq!(p.dst_port(), 9999);
        assert_eq!(usize::from(p.len()), bytes.len());
        assert_eq!(p.payload(), b"weft fixture\n");
        assert_ne!(p.checksum(), 0);
        assert!(p.verify_checksum(s, d));
        assert!(!p.verify_checksum(d, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3))));
    }

    #[test]
    fn repr_emit_and_fill_reproduce_capture() {
        let (s, d, bytes) = captured();
        let repr = Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(repr.dst_port, 9999);
        assert_eq!(repr.payload_len, bytes.len() - 8);
        let mut out = bytes.clone();
        out[..8].fill(0xee);
        let mut p = Packet::new_unchecked(&mut out[..]);
        repr.emit(&mut p);
        assert_eq!(p.checksum(), 0);
        assert!(p.verify_checksum(s, d)); // zero = none, fine over IPv4
        p.fill_checksum(s, d);
        assert_eq!(out, bytes);
    }

    #[test]
    fn zero_checksum_rules() {
        let v6s: IpAddr = "fd00:198:18::1".parse::<Ipv6Addr>().unwrap().into();
        let v6d: IpAddr = "fd00:198:18::2".parse::<Ipv6Addr>().unwrap().into();
        let mut b = [0u8; 8];
        let mut p = Packet::new_unchecked(&mut b[..]);
        Repr {
            src_port: 1,
            dst_port: 2,
            payload_len: 0,
        }
        .emit(&mut p);
        assert!(!p.verify_checksum(v6s, v6d));
        p.fill_checksum(v6s, v6d);
        assert!(p.verify_checksum(v6s, v6d));

        // Find a payload whose computed checksum is 0: it must be sent as 0xffff and verify.
        let s = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let d = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
        let mut b = [0u8; 10];
        let mut p = Packet::new_unchecked(&mut b[..]);
        Repr {
            src_port: 8285,
            dst_port: 8285,
            payload_len: 2,
        }
        .emit(&mut p);
        p.fill_checksum(s, d);
        // Adjust the payload word by the current checksum so the sum becomes 0xffff.
        let c = p.checksum();
        p.payload_mut().copy_from_slice(&c.to_be_bytes());
        p.fill_checksum(s, d);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(s, d));
    }

    #[test]
    fn rejects_truncations_and_bad_lengths() {
        let (_, _, bytes) = captured();
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
        let mut b = bytes.clone();
        b[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadTotalLen));
        b[4..6].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadTotalLen));
        // A shorter length field than the buffer is fine; the rest is ignored.
        b[4..6].copy_from_slice(&9u16.to_be_bytes());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 1);
        assert!(!p.is_empty());
    }
}
