//! Ethernet II frames and MAC addresses.
//!
//! [`Frame`] is a view over an Ethernet II frame without the FCS: destination, source,
//! ethertype, payload. After [`Frame::new_checked`] the buffer holds at least the 14-byte
//! header. 802.1Q tags are not interpreted (the ethertype then reads `0x8100`).

use core::fmt;
use core::str::FromStr;

use super::WireError;

/// Ethertype: IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype: ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethertype: IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Length of the Ethernet II header (destination, source, ethertype).
pub const HEADER_LEN: usize = 14;

/// A 48-bit Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);

    /// Builds an address from the first 6 bytes of `data` (panics if shorter: for
    /// already-validated slices).
    pub fn from_bytes(data: &[u8]) -> EthernetAddress {
        let mut a = [0u8; 6];
        a.copy_from_slice(&data[..6]);
        EthernetAddress(a)
    }

    /// The six bytes.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// Whether this is the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the group bit (least significant bit of the first byte) is set: multicast,
    /// broadcast included.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this is an individual (unicast) address: the group bit is clear.
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Whether the locally-administered bit (second least significant bit of the first
    /// byte) is set.
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// The error of parsing an [`EthernetAddress`] from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseEthernetAddressError;

impl fmt::Display for ParseEthernetAddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "invalid MAC address: expected six hex byte pairs separated by colons, \
             e.g. 02:00:00:00:01:00",
        )
    }
}

impl std::error::Error for ParseEthernetAddressError {}

impl FromStr for EthernetAddress {
    type Err = ParseEthernetAddressError;

    /// Parses `xx:xx:xx:xx:xx:xx`: exactly six groups of two hex digits (either case)
    /// separated by `:`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut groups = s.split(':');
        for byte in &mut out {
            let group = groups.next().ok_or(ParseEthernetAddressError)?;
            if group.len() != 2 || !group.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(ParseEthernetAddressError);
            }
            *byte = u8::from_str_radix(group, 16).map_err(|_| ParseEthernetAddressError)?;
        }
        if groups.next().is_some() {
            return Err(ParseEthernetAddressError);
        }
        Ok(EthernetAddress(out))
    }
}

/// A read/write view over an Ethernet II frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking anything; accessors may panic if it is shorter than
    /// 14 bytes.
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps a buffer after checking it holds the 14-byte header
    /// ([`WireError::Truncated`] otherwise).
    pub fn new_checked(buffer: T) -> Result<Frame<T>, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
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

    /// The destination address.
    pub fn dst_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[0..6])
    }

    /// The source address.
    pub fn src_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[6..12])
    }

    /// The ethertype (e.g. [`ETHERTYPE_IPV4`]).
    pub fn ethertype(&self) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[12], d[13]])
    }

    /// The payload: everything after the header (including any padding).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[0..6].copy_from_slice(&addr.0);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[6..12].copy_from_slice(&addr.0);
    }

    /// Sets the ethertype.
    pub fn set_ethertype(&mut self, ethertype: u16) {
        self.buffer.as_mut()[12..14].copy_from_slice(&ethertype.to_be_bytes());
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Frame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The high-level form of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: EthernetAddress,
    /// Destination address.
    pub dst_addr: EthernetAddress,
    /// Ethertype.
    pub ethertype: u16,
}

impl Repr {
    /// Parses the header of a frame.
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Repr, WireError> {
        frame.check_len()?;
        Ok(Repr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    /// Length of the header `emit` writes (always 14).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first 14 bytes of `frame`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    const MAC_A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0]);
    const MAC_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x02, 0]);

    #[test]
    fn address_text_forms() {
        let a: EthernetAddress = "02:00:00:00:01:00".parse().unwrap();
        assert_eq!(a, MAC_A);
        assert_eq!(a.to_string(), "02:00:00:00:01:00");
        let b: EthernetAddress = "0A:58:FF:ee:0d:9c".parse().unwrap();
        assert_eq!(b.to_string(), "0a:58:ff:ee:0d:9c");
        for bad in [
            "",
            "02:00:00:00:01",
            "02:00:00:00:01:00:00",
            "02:00:00:00:01:0",
            "02:00:00:00:01:000",
            "02-00-00-00-01-00",
            "02:00:00:00:01:0g",
            "+2:00:00:00:01:00",
            "02:00:00:00:01:00:",
        ] {
            assert_eq!(
                bad.parse::<EthernetAddress>(),
                Err(ParseEthernetAddressError),
                "{bad:?}"
            );
        }
        assert!(ParseEthernetAddressError
            .to_string()
            .contains("02:00:00:00:01:00"));
    }

    #[test]
    fn address_classes() {
        assert!(EthernetAddress::BROADCAST.is_broadcast());
        assert!(EthernetAddress::BROADCAST.is_multicast());
        assert!(!EthernetAddress::BROADCAST.is_unicast());
        assert!(MAC_A.is_unicast() && MAC_A.is_local() && !MAC_A.is_multicast());
        let ipv6_mcast = EthernetAddress([0x33, 0x33, 0, 0, 0, 1]);
        assert!(ipv6_mcast.is_multicast() && !ipv6_mcast.is_broadcast());
        let universal = EthernetAddress([0x00, 0x1b, 0x21, 1, 2, 3]);
        assert!(!universal.is_local() && universal.is_unicast());
    }

    #[test]
    fn parses_captured_vxlan_inner_frame() {
        let bytes = fixture("vxlan/inner-echo-request.hex");
        let f = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!(f.src_addr(), MAC_A);
        assert_eq!(f.dst_addr(), MAC_B);
        assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(f.payload()[0] >> 4, 4);
        let repr = Repr::parse(&f).unwrap();
        let mut out = bytes.clone();
        out[..14].fill(0);
        repr.emit(&mut Frame::new_unchecked(&mut out[..]));
        assert_eq!(out, bytes);
        assert_eq!(repr.buffer_len(), HEADER_LEN);
    }

    #[test]
    fn parses_captured_arp_frame_header() {
        let bytes = fixture("wire/ethernet-arp-request.hex");
        let f = Frame::new_checked(&bytes[..]).unwrap();
        assert!(f.dst_addr().is_broadcast());
        assert!(f.src_addr().is_unicast());
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        for n in 0..HEADER_LEN {
            assert_eq!(Frame::new_checked(&bytes[..n]), Err(WireError::Truncated));
        }
    }

    #[test]
    fn setters() {
        let mut b = [0u8; 14];
        let mut f = Frame::new_checked(&mut b[..]).unwrap();
        f.set_dst_addr(MAC_B);
        f.set_src_addr(MAC_A);
        f.set_ethertype(ETHERTYPE_IPV6);
        assert!(f.payload().is_empty());
        assert_eq!(f.payload_mut().len(), 0);
        assert_eq!(b, [2, 0, 0, 0, 2, 0, 2, 0, 0, 0, 1, 0, 0x86, 0xdd],);
    }
}
