//! IPv4 packets (RFC 791).
//!
//! [`Packet`] is a view over a whole IPv4 packet (header, options, payload). After
//! [`Packet::new_checked`] the invariants `20 <= header_len <= total_len <= buffer.len()`
//! hold, so every accessor is panic-free; bytes after `total_len` (e.g. Ethernet padding) are
//! ignored by the accessors.

use std::net::Ipv4Addr;

use super::{checksum, WireError};

/// Byte ranges of the fixed header fields.
mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Length of the IPv4 header without options.
pub const HEADER_LEN: usize = 20;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A read/write view over an IPv4 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking anything; accessors may panic if it is not valid.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking it holds a structurally valid IPv4 packet.
    ///
    /// Errors: shorter than 20 bytes [`WireError::Truncated`]; version not 4
    /// [`WireError::BadVersion`]; IHL below 5 or header longer than `total_len`
    /// [`WireError::BadHeaderLen`]; `total_len` beyond the buffer
    /// [`WireError::BadTotalLen`]. The header checksum is not verified (see
    /// [`verify_checksum`](Self::verify_checksum)).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Validates the lengths `new_checked` validates.
    pub fn check_len(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 {
            return Err(WireError::BadVersion);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        let total_len = usize::from(self.total_len());
        if total_len > data.len() {
            return Err(WireError::BadTotalLen);
        }
        if header_len > total_len {
            return Err(WireError::BadHeaderLen);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn read_u16(&self, range: core::ops::Range<usize>) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[range.start], d[range.start + 1]])
    }

    /// The version field (4 for a checked packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL * 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The type-of-service / DSCP+ECN byte.
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// The total length field: header plus payload, in bytes.
    pub fn total_len(&self) -> u16 {
        self.read_u16(field::TOTAL_LEN)
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        self.read_u16(field::IDENT)
    }

    /// The Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.read_u16(field::FLAGS_FRAG) & FLAG_DF != 0
    }

    /// The More Fragments flag.
    pub fn more_frags(&self) -> bool {
        self.read_u16(field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// The fragment offset **in bytes** (the header field times 8; at most 65528).
    pub fn frag_offset(&self) -> u16 {
        self.frag_offset_units() << 3
    }

    /// The raw fragment offset field, in 8-byte units.
    pub fn frag_offset_units(&self) -> u16 {
        self.read_u16(field::FLAGS_FRAG) & FRAG_OFFSET_MASK
    }

    /// Whether this is a fragment of a larger datagram (MF set or a nonzero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset_units() != 0
    }

    /// The time-to-live field.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol field (e.g. [`super::PROTO_UDP`]).
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let d = self.buffer.as_ref();
        Ipv4Addr::new(d[12], d[13], d[14], d[15])
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let d = self.buffer.as_ref();
        Ipv4Addr::new(d[16], d[17], d[18], d[19])
    }

    /// The header bytes, options included (`..header_len`).
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Whether the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.header()) == 0
    }

    /// The payload: bytes `header_len..total_len`.
    pub fn payload(&self) -> &[u8] {
        let total = usize::from(self.total_len());
        &self.buffer.as_ref()[self.header_len()..total]
    }

    /// The whole packet: bytes `..total_len` (without any padding after it).
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn write_u16(&mut self, range: core::ops::Range<usize>, value: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the version (high nibble of byte 0).
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets the header length in bytes (must be a multiple of 4, 20..=60).
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    /// Sets the type-of-service byte.
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    /// Sets the total length field.
    pub fn set_total_len(&mut self, len: u16) {
        self.write_u16(field::TOTAL_LEN, len);
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, ident: u16) {
        self.write_u16(field::IDENT, ident);
    }

    /// Sets flags and fragment offset: `DF`, `MF`, and the offset in bytes (must be a
    /// multiple of 8).
    pub fn set_flags_and_frag_offset(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut v = (offset >> 3) & FRAG_OFFSET_MASK;
        if dont_frag {
            v |= FLAG_DF;
        }
        if more_frags {
            v |= FLAG_MF;
        }
        self.write_u16(field::FLAGS_FRAG, v);
    }

    /// Sets the time-to-live field (the checksum is not updated).
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol field.
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.write_u16(field::CHECKSUM, checksum);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// Computes and writes the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// Lowers the TTL by one and patches the header checksum incrementally (RFC 1624 eqn. 3
    /// on the 16-bit word TTL|protocol). Returns the new TTL.
    ///
    /// The caller guarantees `ttl() > 0` (a TTL of 0 wraps to 255 rather than panicking).
    /// A correct checksum stays correct.
    pub fn decrement_ttl(&mut self) -> u8 {
        let old_ttl = self.ttl();
        let new_ttl = old_ttl.wrapping_sub(1);
        let proto = u16::from(self.protocol());
        let old_word = (u16::from(old_ttl) << 8) | proto;
        let new_word = (u16::from(new_ttl) << 8) | proto;
        self.set_ttl(new_ttl);
        let c = checksum::update16(self.checksum(), old_word, new_word);
        self.set_checksum(c);
        new_ttl
    }

    /// The payload, mutable: bytes `header_len..total_len`.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        let total = usize::from(self.total_len());
        &mut self.buffer.as_mut()[start..total]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The high-level form of an IPv4 header without options, as weft emits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload (e.g. [`super::PROTO_ICMP`]).
    pub protocol: u8,
    /// Payload length in bytes (total length minus the 20-byte header).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
}

impl Repr {
    /// Parses the header of a packet.
    ///
    /// Options are skipped (not represented); the checksum is not verified. Fragments
    /// (MF set or nonzero offset) are rejected with [`WireError::Unsupported`] because the
    /// representation cannot carry them.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, WireError> {
        packet.check_len()?;
        if packet.is_fragment() {
            return Err(WireError::Unsupported);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.payload().len(),
            ttl: packet.ttl(),
        })
    }

    /// Length of the header `emit` writes (always 20).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first 20 bytes of `packet`: version 4, IHL 5, TOS 0,
    /// total length `20 + payload_len` (saturating at 65535), ident 0, no flags, offset 0,
    /// and the checksum filled. The buffer must hold at least 20 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN);
        packet.set_tos(0);
        let total = (HEADER_LEN + self.payload_len).min(usize::from(u16::MAX));
        packet.set_total_len(total as u16);
        packet.set_ident(0);
        packet.set_flags_and_frag_offset(false, false, 0);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.set_checksum(0);
        let c = checksum::checksum(&packet.buffer.as_ref()[..HEADER_LEN]);
        packet.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;
    use crate::wire::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

    fn echo_request() -> Vec<u8> {
        fixture("wire/ipv4-icmp-echo-request.hex")
    }

    #[test]
    fn parses_captured_echo_request() {
        let bytes = echo_request();
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(usize::from(p.total_len()), bytes.len());
        assert_eq!(p.protocol(), PROTO_ICMP);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.src_addr(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(198, 18, 0, 2));
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), bytes.len() - 20);
    }

    #[test]
    fn parses_captured_tcp_and_udp() {
        let tcp = fixture("wire/ipv4-tcp-syn.hex");
        let p = Packet::new_checked(&tcp[..]).unwrap();
        assert_eq!(p.protocol(), PROTO_TCP);
        assert!(p.verify_checksum());
        assert_eq!(p.dst_addr(), Ipv4Addr::new(198, 18, 0, 2));
        let udp = fixture("wire/ipv4-udp.hex");
        let p = Packet::new_checked(&udp[..]).unwrap();
        assert_eq!(p.protocol(), PROTO_UDP);
        assert!(p.verify_checksum());
        assert_eq!(usize::from(p.total_len()), udp.len());
    }

    #[test]
    fn repr_round_trip_matches_header_fields() {
        let bytes = echo_request();
        let p = Packet::new_checked(&bytes[..]).unwrap();
        let repr = Repr::parse(&p).unwrap();
        assert_eq!(repr.payload_len, bytes.len() - 20);
        assert_eq!(repr.buffer_len(), 20);
        let mut out = bytes.clone();
        out[..20].fill(0);
        let mut q = Packet::new_unchecked(&mut out[..]);
        repr.emit(&mut q);
        let q = Packet::new_checked(&out[..]).unwrap();
        assert!(q.verify_checksum());
        assert_eq!(Repr::parse(&q).unwrap(), repr);
        // The kernel sets ident and DF; emit writes ident 0, no flags. Everything else of the
        // header is determined by the fields and must match the capture byte for byte.
        let mut expected = bytes[..20].to_vec();
        expected[4..8].fill(0);
        expected[10..12].fill(0);
        let c = checksum::checksum(&expected);
        expected[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(&out[..20], &expected[..]);
        assert_eq!(&out[20..], &bytes[20..]);
    }

    #[test]
    fn repr_rejects_fragments() {
        let mut bytes = echo_request();
        Packet::new_unchecked(&mut bytes[..]).set_flags_and_frag_offset(false, true, 0);
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&bytes[..])),
            Err(WireError::Unsupported)
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
        assert!(Packet::new_checked(&bytes[..]).is_ok());
    }

    #[test]
    fn padding_after_total_len_is_ignored() {
        let mut bytes = echo_request();
        let len = bytes.len();
        bytes.extend_from_slice(&[0xaa; 10]);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.payload().len(), len - 20);
        assert_eq!(p.packet().len(), len);
    }

    #[test]
    fn rejects_bad_version_ihl_and_lengths() {
        let good = echo_request();
        let mut b = good.clone();
        b[0] = 0x65;
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadVersion));
        for ihl in 0..5u8 {
            b[0] = 0x40 | ihl;
            assert_eq!(
                Packet::new_checked(&b[..]),
                Err(WireError::BadHeaderLen),
                "ihl {ihl}"
            );
        }
        // IHL 15 = 60 bytes > a total length of 40.
        let mut b = good.clone();
        b[0] = 0x4f;
        b[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadHeaderLen));
        // Total length below the header length.
        let mut b = good.clone();
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadHeaderLen));
        // Total length beyond the buffer.
        let mut b = good.clone();
        b[2..4].copy_from_slice(&(good.len() as u16 + 1).to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadTotalLen));
    }

    /// A minimal header with `ttl`, whose checksum field ends up as `target` by choosing the
    /// identification field.
    fn header_with_checksum(ttl: u8, target: u16) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&20u16.to_be_bytes());
        h[8] = ttl;
        h[9] = PROTO_UDP;
        h[12..16].copy_from_slice(&[198, 18, 0, 1]);
        h[16..20].copy_from_slice(&[198, 18, 0, 2]);
        // Want: checksum(h with ident x and checksum target) == 0, i.e. the folded sum of
        // everything but the ident is S, and S + x + target == 0xffff (one's complement).
        let s = checksum::fold(checksum::sum(&h, 0));
        let need = !checksum::fold(u64::from(s) + u64::from(target));
        h[4..6].copy_from_slice(&need.to_be_bytes());
        h[10..12].copy_from_slice(&target.to_be_bytes());
        h
    }

    #[test]
    fn decrement_ttl_keeps_checksum_valid() {
        let mut bytes = echo_request();
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        let ttl = p.ttl();
        assert_eq!(p.decrement_ttl(), ttl - 1);
        assert_eq!(p.ttl(), ttl - 1);
        assert!(p.verify_checksum());
        let patched = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), patched);
    }

    #[test]
    fn decrement_ttl_rfc1624_edge_cases() {
        // Checksum 0x0000 before the update (the sum of the other words is 0xffff).
        let mut h = header_with_checksum(64, 0x0000);
        let mut p = Packet::new_checked(&mut h[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.checksum(), 0x0000);
        p.decrement_ttl();
        assert!(p.verify_checksum());
        assert_eq!(p.checksum(), 0x0100);

        // A header whose checksum becomes 0x0000 after the update: before it is 0xfeff.
        let mut h = header_with_checksum(64, 0xfeff);
        let mut p = Packet::new_checked(&mut h[..]).unwrap();
        assert!(p.verify_checksum());
        p.decrement_ttl();
        assert!(p.verify_checksum());
        // Eqn. 3 yields +0 here, exactly what a full recomputation yields.
        assert_eq!(p.checksum(), 0x0000);
        let patched = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), patched);

        // Every TTL and a spread of checksum values: incremental == recomputed.
        for ttl in 1..=255u8 {
            for target in [0x0000u16, 0x0001, 0x00ff, 0x0100, 0x7fff, 0xfeff, 0xfffe] {
                let mut h = header_with_checksum(ttl, target);
                let mut p = Packet::new_checked(&mut h[..]).unwrap();
                assert!(p.verify_checksum(), "ttl {ttl} target {target:#x}");
                p.decrement_ttl();
                assert!(p.verify_checksum(), "ttl {ttl} target {target:#x}");
                let patched = p.checksum();
                p.fill_checksum();
                assert_eq!(p.checksum(), patched, "ttl {ttl} target {target:#x}");
            }
        }
    }

    #[test]
    fn setters_round_trip() {
        let mut bytes = echo_request();
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        p.set_src_addr(Ipv4Addr::new(100, 96, 1, 2));
        p.set_dst_addr(Ipv4Addr::new(100, 96, 2, 3));
        p.set_ttl(9);
        p.set_ident(0x1234);
        p.set_flags_and_frag_offset(false, true, 1480);
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(100, 96, 1, 2));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(100, 96, 2, 3));
        assert_eq!(p.ttl(), 9);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.more_frags() && !p.dont_frag());
        assert_eq!(p.frag_offset(), 1480);
        assert_eq!(p.frag_offset_units(), 185);
        assert!(p.is_fragment());
    }
}
