//! VXLAN headers (RFC 7348 section 5).
//!
//! ```text
//!  0               1               2               3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```
//!
//! [`Header`] is a view over a VXLAN header followed by the inner Ethernet frame (the UDP
//! payload). After [`Header::new_checked`] the buffer holds at least the 8-byte header.
//! `new_checked` does **not** require the I flag: the receiver decides what a frame without it
//! means (weft counts it as its own drop reason, `vxlan_no_i_flag`); use
//! [`Header::has_vni_flag`] for that check. [`Repr::parse`] requires the flag and returns
//! [`WireError::Unsupported`] without it. Reserved bits are ignored on receive (RFC 7348:
//! "MUST be ignored on receipt") and written as zero.

use super::WireError;

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;

/// The I flag: the VNI is valid.
pub const FLAG_VNI: u8 = 0x08;

/// The UDP port the Linux kernel and flannel use by default.
pub const PORT_LINUX: u16 = 8472;

/// The IANA-assigned VXLAN UDP port (RFC 7348).
pub const PORT_IANA: u16 = 4789;

/// Largest VNI (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;

/// A read/write view over a VXLAN header and the frame after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps a buffer without checking anything; accessors may panic if it is shorter than
    /// 8 bytes.
    pub const fn new_unchecked(buffer: T) -> Header<T> {
        Header { buffer }
    }

    /// Wraps a buffer after checking it holds the 8-byte header ([`WireError::Truncated`]
    /// otherwise). The flags are not checked.
    pub fn new_checked(buffer: T) -> Result<Header<T>, WireError> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
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

    /// The flags byte (first byte; only the I flag, [`FLAG_VNI`], has a meaning).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Whether the I flag is set (the VNI is valid).
    pub fn has_vni_flag(&self) -> bool {
        self.flags() & FLAG_VNI != 0
    }

    /// The 24-bit VNI (bytes 4..7), whatever the flags say.
    pub fn vni(&self) -> u32 {
        let d = self.buffer.as_ref();
        (u32::from(d[4]) << 16) | (u32::from(d[5]) << 8) | u32::from(d[6])
    }

    /// The inner Ethernet frame: everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    /// Sets the flags byte.
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[0] = flags;
    }

    /// Sets the VNI (only the low 24 bits are used). The reserved byte after it is left as
    /// is.
    pub fn set_vni(&mut self, vni: u32) {
        let b = vni.to_be_bytes();
        self.buffer.as_mut()[4..7].copy_from_slice(&b[1..4]);
    }

    /// The inner frame, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Header<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The high-level form of a VXLAN header: just the VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The 24-bit VXLAN Network Identifier.
    pub vni: u32,
}

impl Repr {
    /// Parses a header. Without the I flag the result is [`WireError::Unsupported`]
    /// (check [`Header::has_vni_flag`] first to count that case separately). Reserved bits
    /// are ignored.
    pub fn parse<T: AsRef<[u8]>>(header: &Header<T>) -> Result<Repr, WireError> {
        header.check_len()?;
        if !header.has_vni_flag() {
            return Err(WireError::Unsupported);
        }
        Ok(Repr { vni: header.vni() })
    }

    /// Length of the header `emit` writes (always 8).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first 8 bytes of `header`: flags `0x08`, the VNI (low 24
    /// bits), all reserved bits zero.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut Header<T>) {
        let d = &mut header.buffer.as_mut()[..HEADER_LEN];
        d.fill(0);
        d[0] = FLAG_VNI;
        let b = (self.vni & VNI_MAX).to_be_bytes();
        d[4..7].copy_from_slice(&b[1..4]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;
    use crate::wire::ethernet::{self, EthernetAddress, ETHERTYPE_IPV4};
    use crate::wire::{ipv4, udp, PROTO_UDP};
    use std::net::{IpAddr, Ipv4Addr};

    /// Strips the outer IPv4 and UDP headers from a captured outer packet; returns the
    /// addresses, ports and the VXLAN bytes.
    fn vxlan_of(name: &str) -> (Ipv4Addr, Ipv4Addr, u16, u16, Vec<u8>) {
        let packet = fixture(name);
        let ip = ipv4::Packet::new_checked(&packet[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.protocol(), PROTO_UDP);
        let u = udp::Packet::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(ip.src_addr().into(), ip.dst_addr().into()));
        (
            ip.src_addr(),
            ip.dst_addr(),
            u.src_port(),
            u.dst_port(),
            u.payload().to_vec(),
        )
    }

    #[test]
    fn parses_kernel_vxlan_frames() {
        let inner_req = fixture("vxlan/inner-echo-request.hex");
        let inner_rep = fixture("vxlan/inner-echo-reply.hex");
        for (name, src, dst) in [
            (
                "vxlan/outer-echo-request.hex",
                [198, 18, 0, 1],
                [198, 18, 0, 2],
            ),
            (
                "vxlan/outer-echo-reply.hex",
                [198, 18, 0, 2],
                [198, 18, 0, 1],
            ),
        ] {
            let (s, d, _sport, dport, bytes) = vxlan_of(name);
            assert_eq!(s, Ipv4Addr::from(src), "{name}");
            assert_eq!(d, Ipv4Addr::from(dst), "{name}");
            assert_eq!(dport, PORT_LINUX, "{name}");
            let h = Header::new_checked(&bytes[..]).unwrap();
            assert_eq!(h.flags(), FLAG_VNI);
            assert!(h.has_vni_flag());
            assert_eq!(h.vni(), 1);
            assert_eq!(Repr::parse(&h), Ok(Repr { vni: 1 }));
            // Emitting the parsed header reproduces the kernel's bytes exactly.
            let mut out = [0xffu8; 8];
            Repr { vni: 1 }.emit(&mut Header::new_unchecked(&mut out[..]));
            assert_eq!(&out[..], &bytes[..8]);
            let inner = ethernet::Frame::new_checked(h.payload()).unwrap();
            assert_eq!(inner.ethertype(), ETHERTYPE_IPV4);
            let vtep_a: EthernetAddress = "02:00:00:00:01:00".parse().unwrap();
            if name.contains("request") {
                assert_eq!(inner.src_addr(), vtep_a);
                assert_eq!(h.payload(), &inner_req[..]);
            } else {
                assert_eq!(inner.dst_addr(), vtep_a);
                assert_eq!(h.payload(), &inner_rep[..]);
            }
        }
    }

    #[test]
    fn outer_udp_header_round_trips() {
        let packet = fixture("vxlan/outer-echo-request.hex");
        let ip = ipv4::Packet::new_checked(&packet[..]).unwrap();
        let (s, d) = (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()));
        let captured = ip.payload().to_vec();
        let u = udp::Packet::new_checked(&captured[..]).unwrap();
        // The kernel's vxlan device checksums outer IPv4 UDP (iproute2's default `udpcsum`);
        // receivers must also accept 0 ("no checksum").
        assert_ne!(u.checksum(), 0);
        assert!(u.verify_checksum(s, d));
        let repr = udp::Repr::parse(&u).unwrap();
        assert_eq!(repr.dst_port, PORT_LINUX);
        let mut out = captured.clone();
        out[..8].fill(0);
        let mut p = udp::Packet::new_unchecked(&mut out[..]);
        repr.emit(&mut p);
        p.fill_checksum(s, d);
        assert_eq!(out, captured);
    }

    #[test]
    fn flags_and_reserved_bits() {
        let mut b = [0u8; 8];
        Repr { vni: 0x12_3456 }.emit(&mut Header::new_unchecked(&mut b[..]));
        assert_eq!(b, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        // Reserved bits set everywhere: ignored on parse.
        let noisy = [0xff, 0xff, 0xff, 0xff, 0x12, 0x34, 0x56, 0xff];
        let h = Header::new_checked(&noisy[..]).unwrap();
        assert_eq!(Repr::parse(&h), Ok(Repr { vni: 0x12_3456 }));
        // No I flag: the view reads it, the Repr refuses it.
        let bare = [0xf7, 0, 0, 0, 0, 0, 1, 0];
        let h = Header::new_checked(&bare[..]).unwrap();
        assert!(!h.has_vni_flag());
        assert_eq!(h.vni(), 1);
        assert_eq!(Repr::parse(&h), Err(WireError::Unsupported));
        // VNI wider than 24 bits is cut; set_vni keeps the reserved byte.
        let mut b = [0u8; 8];
        b[7] = 0xaa;
        let mut h = Header::new_unchecked(&mut b[..]);
        h.set_vni(0x0100_0002);
        h.set_flags(FLAG_VNI);
        assert_eq!(b, [0x08, 0, 0, 0, 0, 0, 2, 0xaa]);
        let mut b = [0u8; 8];
        Repr { vni: 0xff00_0003 }.emit(&mut Header::new_unchecked(&mut b[..]));
        assert_eq!(Header::new_checked(&b[..]).unwrap().vni(), 3);
    }

    #[test]
    fn truncations_rejected() {
        let (_, _, _, _, bytes) = vxlan_of("vxlan/outer-echo-request.hex");
        for n in 0..HEADER_LEN {
            assert_eq!(Header::new_checked(&bytes[..n]), Err(WireError::Truncated));
        }
        assert!(Header::new_checked(&bytes[..HEADER_LEN])
            .unwrap()
            .payload()
            .is_empty());
    }
}
