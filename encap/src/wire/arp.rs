//! ARP for IPv4 over Ethernet (RFC 826).
//!
//! Only the Ethernet/IPv4 form is supported: hardware type 1, protocol type 0x0800,
//! hardware length 6, protocol length 4, 28 bytes in all. [`Packet::new_checked`] rejects
//! anything else with [`WireError::Unsupported`], so the accessors can use fixed offsets.
//! The buffer may be longer (Ethernet padding); the extra bytes are ignored.

use std::net::Ipv4Addr;

use super::ethernet::{EthernetAddress, ETHERTYPE_IPV4};
use super::WireError;

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// Operation: request.
pub const OP_REQUEST: u16 = 1;
/// Operation: reply.
pub const OP_REPLY: u16 = 2;

/// Hardware type: Ethernet.
const HTYPE_ETHERNET: u16 = 1;

/// Byte ranges of the fields.
mod field {
    use core::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// A read/write view over an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn ipv4_at(d: &[u8], r: core::ops::Range<usize>) -> Ipv4Addr {
    Ipv4Addr::new(d[r.start], d[r.start + 1], d[r.start + 2], d[r.start + 3])
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking anything; accessors may panic if it is shorter than
    /// 28 bytes.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking it holds an Ethernet/IPv4 ARP packet.
    ///
    /// Errors: shorter than 28 bytes [`WireError::Truncated`]; another hardware or protocol
    /// type or address length [`WireError::Unsupported`]. Any operation value is accepted.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Validates what `new_checked` validates.
    pub fn check_len(&self) -> Result<(), WireError> {
        let d = self.buffer.as_ref();
        if d.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if self.hardware_type() != HTYPE_ETHERNET
            || self.protocol_type() != ETHERTYPE_IPV4
            || d[field::HLEN] != 6
            || d[field::PLEN] != 4
        {
            return Err(WireError::Unsupported);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn read_u16(&self, r: core::ops::Range<usize>) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[r.start], d[r.start + 1]])
    }

    /// The hardware type (1 = Ethernet for a checked packet).
    pub fn hardware_type(&self) -> u16 {
        self.read_u16(field::HTYPE)
    }

    /// The protocol type (0x0800 = IPv4 for a checked packet).
    pub fn protocol_type(&self) -> u16 {
        self.read_u16(field::PTYPE)
    }

    /// The operation ([`OP_REQUEST`], [`OP_REPLY`], or another value).
    pub fn operation(&self) -> u16 {
        self.read_u16(field::OPER)
    }

    /// The sender hardware address.
    pub fn sender_hardware_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::SHA])
    }

    /// The sender protocol address.
    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::SPA)
    }

    /// The target hardware address (zero in a request).
    pub fn target_hardware_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::THA])
    }

    /// The target protocol address.
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes the fixed Ethernet/IPv4 preamble: hardware type 1, protocol 0x0800, lengths
    /// 6 and 4.
    pub fn set_ethernet_ipv4(&mut self) {
        let d = self.buffer.as_mut();
        d[field::HTYPE].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        d[field::PTYPE].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        d[field::HLEN] = 6;
        d[field::PLEN] = 4;
    }

    /// Sets the operation.
    pub fn set_operation(&mut self, operation: u16) {
        self.buffer.as_mut()[field::OPER].copy_from_slice(&operation.to_be_bytes());
    }

    /// Sets the sender hardware address.
    pub fn set_sender_hardware_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&addr.0);
    }

    /// Sets the sender protocol address.
    pub fn set_sender_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&addr.octets());
    }

    /// Sets the target hardware address.
    pub fn set_target_hardware_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&addr.0);
    }

    /// Sets the target protocol address.
    pub fn set_target_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&addr.octets());
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The high-level form of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The operation ([`OP_REQUEST`] or [`OP_REPLY`]).
    pub operation: u16,
    /// Sender hardware address.
    pub sender_hardware_addr: EthernetAddress,
    /// Sender protocol address.
    pub sender_protocol_addr: Ipv4Addr,
    /// Target hardware address.
    pub target_hardware_addr: EthernetAddress,
    /// Target protocol address.
    pub target_protocol_addr: Ipv4Addr,
}

impl Repr {
    /// Parses a packet. Operations other than request and reply are
    /// [`WireError::Unsupported`].
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, WireError> {
        packet.check_len()?;
        let operation = packet.operation();
        if operation != OP_REQUEST && operation != OP_REPLY {
            return Err(WireError::Unsupported);
        }
        Ok(Repr {
            operation,
            sender_hardware_addr: packet.sender_hardware_addr(),
            sender_protocol_addr: packet.sender_protocol_addr(),
            target_hardware_addr: packet.target_hardware_addr(),
            target_protocol_addr: packet.target_protocol_addr(),
        })
    }

    /// Length of the packet `emit` writes (always 28).
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the whole packet into the first 28 bytes of `packet`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_ethernet_ipv4();
        packet.set_operation(self.operation);
        packet.set_sender_hardware_addr(self.sender_hardware_addr);
        packet.set_sender_protocol_addr(self.sender_protocol_addr);
        packet.set_target_hardware_addr(self.target_hardware_addr);
        packet.set_target_protocol_addr(self.target_protocol_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;
    use crate::wire::ethernet::{self, ETHERTYPE_ARP};

    /// The ARP payload of a captured Ethernet frame (padding included if any).
    fn arp_of(name: &str) -> (EthernetAddress, Vec<u8>) {
        let frame = fixture(name);
        let f = ethernet::Frame::new_checked(&frame[..]).unwrap();
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        (f.src_addr(), f.payload().to_vec())
    }

    #[test]
    fn parses_captured_request_and_reply() {
        let (req_mac, req) = arp_of("wire/ethernet-arp-request.hex");
        let (rep_mac, rep) = arp_of("wire/ethernet-arp-reply.hex");
        let q = Repr::parse(&Packet::new_checked(&req[..]).unwrap()).unwrap();
        let r = Repr::parse(&Packet::new_checked(&rep[..]).unwrap()).unwrap();
        assert_eq!(q.operation, OP_REQUEST);
        assert_eq!(q.sender_hardware_addr, req_mac);
        assert_eq!(q.sender_protocol_addr, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(q.target_protocol_addr, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(r.operation, OP_REPLY);
        assert_eq!(r.sender_hardware_addr, rep_mac);
        assert_eq!(r.sender_protocol_addr, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(r.target_hardware_addr, req_mac);
        assert_eq!(r.target_protocol_addr, Ipv4Addr::new(198, 18, 0, 1));
    }

    #[test]
    fn emit_reproduces_capture() {
        for name in [
            "wire/ethernet-arp-request.hex",
            "wire/ethernet-arp-reply.hex",
        ] {
            let (_, bytes) = arp_of(name);
            let repr = Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut out[..]));
            assert_eq!(&out[..], &bytes[..PACKET_LEN], "{name}");
        }
    }

    #[test]
    fn rejects_truncations_and_other_kinds() {
        let (_, bytes) = arp_of("wire/ethernet-arp-request.hex");
        for n in 0..PACKET_LEN {
            assert_eq!(
                Packet::new_checked(&bytes[..n]),
                Err(WireError::Truncated),
                "{n}"
            );
        }
        for (at, value) in [(1, 6u8), (2, 0x86), (4, 8), (5, 16)] {
            let mut b = bytes.clone();
            b[at] = value;
            assert_eq!(
                Packet::new_checked(&b[..]),
                Err(WireError::Unsupported),
                "byte {at}"
            );
        }
        let mut b = bytes.clone();
        b[7] = 3; // RARP request: the view accepts it, the Repr does not.
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.operation(), 3);
        assert_eq!(Repr::parse(&p), Err(WireError::Unsupported));
    }
}
