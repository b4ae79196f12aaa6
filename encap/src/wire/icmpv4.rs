//! ICMP for IPv4 (RFC 792).
//!
//! [`Packet`] is a view over an ICMP message (the IPv4 payload): type, code, checksum, the
//! 32-bit rest-of-header, and the data. After [`Packet::new_checked`] the buffer holds at
//! least the 8-byte header; the message is the whole buffer (pass exactly the IPv4 payload).

use super::{checksum, WireError};

/// Length of the ICMP header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;

/// Type: echo reply.
pub const TYPE_ECHO_REPLY: u8 = 0;
/// Type: destination unreachable.
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
/// Type: source quench (deprecated, still an error type).
pub const TYPE_SOURCE_QUENCH: u8 = 4;
/// Type: redirect.
pub const TYPE_REDIRECT: u8 = 5;
/// Type: echo request.
pub const TYPE_ECHO_REQUEST: u8 = 8;
/// Type: time exceeded.
pub const TYPE_TIME_EXCEEDED: u8 = 11;
/// Type: parameter problem.
pub const TYPE_PARAMETER_PROBLEM: u8 = 12;

/// Destination unreachable code: net unreachable.
pub const CODE_NET_UNREACHABLE: u8 = 0;
/// Destination unreachable code: host unreachable.
pub const CODE_HOST_UNREACHABLE: u8 = 1;
/// Destination unreachable code: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 3;
/// Destination unreachable code: fragmentation needed and DF set (RFC 1191: the next-hop MTU
/// is in the low 16 bits of the rest of header).
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Destination unreachable code: communication administratively prohibited (RFC 1812).
pub const CODE_ADMIN_PROHIBITED: u8 = 13;
/// Time exceeded code: TTL exceeded in transit.
pub const CODE_TTL_EXCEEDED: u8 = 0;

/// Whether `msg_type` is an ICMP error message (RFC 1812 4.3.2.7: no error is sent about
/// one): destination unreachable, source quench, redirect, time exceeded, parameter problem.
pub fn is_error_type(msg_type: u8) -> bool {
    matches!(
        msg_type,
        TYPE_DEST_UNREACHABLE
            | TYPE_SOURCE_QUENCH
            | TYPE_REDIRECT
            | TYPE_TIME_EXCEEDED
            | TYPE_PARAMETER_PROBLEM
    )
}

/// A read/write view over an ICMP message.
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

    /// The 32-bit rest of header (echo identifier+sequence, next-hop MTU, unused...).
    pub fn rest_of_header(&self) -> u32 {
        let d = self.buffer.as_ref();
        u32::from_be_bytes([d[4], d[5], d[6], d[7]])
    }

    /// Echo identifier (high 16 bits of the rest of header).
    pub fn echo_ident(&self) -> u16 {
        (self.rest_of_header() >> 16) as u16
    }

    /// Echo sequence number (low 16 bits of the rest of header).
    pub fn echo_seq(&self) -> u16 {
        self.rest_of_header() as u16
    }

    /// The data after the header (for errors: the quoted offending packet).
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Whether the checksum over the whole message is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
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

    /// Computes and writes the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
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
    use crate::wire::ipv4;

    fn icmp_of(name: &str) -> Vec<u8> {
        let ip = fixture(name);
        let p = ipv4::Packet::new_checked(&ip[..]).unwrap();
        p.payload().to_vec()
    }

    #[test]
    fn parses_captured_echo_pair() {
        let req = icmp_of("wire/ipv4-icmp-echo-request.hex");
        let rep = icmp_of("wire/ipv4-icmp-echo-reply.hex");
        let q = Packet::new_checked(&req[..]).unwrap();
        let r = Packet::new_checked(&rep[..]).unwrap();
        assert_eq!(q.msg_type(), TYPE_ECHO_REQUEST);
        assert_eq!(r.msg_type(), TYPE_ECHO_REPLY);
        assert_eq!((q.code(), r.code()), (0, 0));
        assert!(q.verify_checksum() && r.verify_checksum());
        assert_eq!(q.echo_ident(), r.echo_ident());
        assert_eq!(q.echo_seq(), 1);
        assert_eq!(q.data(), r.data());
        assert!(!is_error_type(q.msg_type()) && !is_error_type(r.msg_type()));
    }

    #[test]
    fn parses_captured_errors() {
        for (name, ty, code) in [
            (
                "wire/ipv4-icmp-time-exceeded.hex",
                TYPE_TIME_EXCEEDED,
                CODE_TTL_EXCEEDED,
            ),
            (
                "wire/ipv4-icmp-net-unreachable.hex",
                TYPE_DEST_UNREACHABLE,
                CODE_NET_UNREACHABLE,
            ),
            (
                "wire/ipv4-icmp-frag-needed.hex",
                TYPE_DEST_UNREACHABLE,
                CODE_FRAG_NEEDED,
            ),
            (
                "wire/ipv4-icmp-port-unreachable.hex",
                TYPE_DEST_UNREACHABLE,
                CODE_PORT_UNREACHABLE,
            ),
        ] {
            let m = icmp_of(name);
            let p = Packet::new_checked(&m[..]).unwrap();
            assert_eq!((p.msg_type(), p.code()), (ty, code), "{name}");
            assert!(p.verify_checksum(), "{name}");
            assert!(is_error_type(p.msg_type()));
            // The quote starts with the offending IPv4 header.
            assert_eq!(p.data()[0] >> 4, 4, "{name}");
        }
        let m = icmp_of("wire/ipv4-icmp-frag-needed.hex");
        let p = Packet::new_checked(&m[..]).unwrap();
        assert_eq!(p.rest_of_header() & 0xffff, 1280);
    }

    #[test]
    fn fill_checksum_reproduces_capture() {
        let orig = icmp_of("wire/ipv4-icmp-echo-request.hex");
        let mut m = orig.clone();
        let mut p = Packet::new_checked(&mut m[..]).unwrap();
        p.set_checksum(0xdead);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert_eq!(m, orig);
    }

    #[test]
    fn truncations_rejected_and_setters_work() {
        let m = icmp_of("wire/ipv4-icmp-echo-request.hex");
        for n in 0..HEADER_LEN {
            assert_eq!(Packet::new_checked(&m[..n]), Err(WireError::Truncated));
        }
        let mut b = [0u8; 8];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(TYPE_DEST_UNREACHABLE);
        p.set_code(CODE_FRAG_NEEDED);
        p.set_rest_of_header(1450);
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.rest_of_header(), 1450);
        assert!(p.data().is_empty());
        assert_eq!(b, [3, 4, 0xf7, 0x51, 0, 0, 0x05, 0xaa]);
    }

    #[test]
    fn error_types() {
        let errors: Vec<u8> = (0..=255).filter(|&t| is_error_type(t)).collect();
        assert_eq!(errors, vec![3, 4, 5, 11, 12]);
    }
}
