//! IPv4 headers (RFC 791).

use crate::{be16, checksum, Error};
use std::net::Ipv4Addr;

pub const MIN_HEADER_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// A checked view of an IPv4 packet: the header length and total length fit in
/// the buffer (which may be longer: Ethernet pads short frames).
#[derive(Clone, Copy)]
pub struct Packet<'a> {
    buf: &'a [u8],
}

impl<'a> Packet<'a> {
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        if buf.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if buf[0] >> 4 != 4 {
            return Err(Error::Malformed("IPv4 version"));
        }
        let header_len = ((buf[0] & 0x0f) as usize) * 4;
        if header_len < MIN_HEADER_LEN {
            return Err(Error::Malformed("IPv4 header length below 20"));
        }
        let total_len = be16(buf, 2) as usize;
        if total_len < header_len || total_len > buf.len() {
            return Err(Error::Malformed("IPv4 total length"));
        }
        Ok(Packet { buf: &buf[..total_len] })
    }

    #[inline]
    pub fn header_len(&self) -> usize {
        ((self.buf[0] & 0x0f) as usize) * 4
    }

    /// The packet without Ethernet padding.
    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        self.buf
    }

    #[inline]
    pub fn total_len(&self) -> usize {
        self.buf.len()
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buf[8]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buf[9]
    }

    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[12], self.buf[13], self.buf[14], self.buf[15])
    }

    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[16], self.buf[17], self.buf[18], self.buf[19])
    }

    /// More fragments set, or a non-zero fragment offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.buf, 6) & 0x3fff != 0
    }

    /// A fragment other than the first: it carries no L4 header.
    #[inline]
    pub fn is_later_fragment(&self) -> bool {
        be16(self.buf, 6) & 0x1fff != 0
    }

    /// The identification shared by the fragments of one datagram.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buf, 4)
    }

    /// The DF flag: the sender wants an ICMP error, not fragmentation.
    #[inline]
    pub fn dont_fragment(&self) -> bool {
        self.buf[6] & 0x40 != 0
    }

    pub fn header_checksum_ok(&self) -> bool {
        checksum::compute(&self.buf[..self.header_len()]) == 0
    }

    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len()..]
    }
}

/// Fields of a header to write; the rest are zero (no options, no fragmentation).
pub struct Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub payload_len: usize,
}

/// Write a 20-byte header with its checksum at the start of `buf`.
pub fn write_header(buf: &mut [u8], h: &Header) {
    let total = (MIN_HEADER_LEN + h.payload_len) as u16;
    let b = &mut buf[..MIN_HEADER_LEN];
    b.fill(0);
    b[0] = 0x45;
    b[2..4].copy_from_slice(&total.to_be_bytes());
    b[6] = 0x40; // don't fragment
    b[8] = h.ttl;
    b[9] = h.protocol;
    b[12..16].copy_from_slice(&h.src.octets());
    b[16..20].copy_from_slice(&h.dst.octets());
    let sum = checksum::compute(b);
    b[10..12].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(payload_len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; MIN_HEADER_LEN + payload_len];
        let h = Header {
            src: Ipv4Addr::new(10, 0, 0, 2),
            dst: Ipv4Addr::new(10, 0, 0, 1),
            protocol: PROTO_ICMP,
            ttl: 64,
            payload_len,
        };
        write_header(&mut buf, &h);
        buf
    }

    #[test]
    fn round_trip() {
        let mut buf = packet(8);
        buf.extend_from_slice(&[0; 10]); // Ethernet padding
        let p = Packet::parse(&buf).unwrap();
        assert_eq!(p.src(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.protocol(), PROTO_ICMP);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.payload().len(), 8);
        assert!(p.header_checksum_ok());
        assert!(!p.is_fragment());
    }

    #[test]
    fn refuses_lying_lengths() {
        let mut buf = packet(8);
        buf[2..4].copy_from_slice(&100u16.to_be_bytes());
        assert!(Packet::parse(&buf).is_err(), "total length beyond the buffer");
        let mut buf = packet(8);
        buf[0] = 0x44;
        assert!(Packet::parse(&buf).is_err(), "header length below 20");
        let mut buf = packet(8);
        buf[0] = 0x65;
        assert!(Packet::parse(&buf).is_err(), "version 6 in an IPv4 frame");
        assert_eq!(Packet::parse(&[0x45; 19]).err(), Some(Error::Truncated));
    }
}
