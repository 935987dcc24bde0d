//! IPv6 fixed headers (RFC 8200): a checked view, the header builder and
//! the pseudo-header sum upper-layer checksums start from.

use std::net::Ipv6Addr;

use crate::{be16, checksum, Error};

pub const HEADER_LEN: usize = 40;
pub const NEXT_ICMPV6: u8 = 58;
/// The hop limit of packets the switch originates.
pub const DEFAULT_HOP_LIMIT: u8 = 64;

/// fe80::1, the switch's link-local address on every IPv6 network (Docker's
/// bridge gets it too): the containers' default router.
pub const LINK_LOCAL_GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// ff02::1, all nodes on the link.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// A checked view of an IPv6 packet.
#[derive(Clone, Copy)]
pub struct Packet<'a> {
    buf: &'a [u8],
}

impl<'a> Packet<'a> {
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        if buf.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if buf[0] >> 4 != 6 {
            return Err(Error::Malformed("IPv6 version"));
        }
        let payload_len = be16(buf, 4) as usize;
        if HEADER_LEN + payload_len > buf.len() {
            return Err(Error::Malformed("IPv6 payload length"));
        }
        Ok(Packet { buf: &buf[..HEADER_LEN + payload_len] })
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf[6]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buf[7]
    }

    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        addr_at(self.buf, 8)
    }

    #[inline]
    pub fn dst(&self) -> Ipv6Addr {
        addr_at(self.buf, 24)
    }

    /// The whole packet, header included (up to its payload length).
    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        self.buf
    }

    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..]
    }
}

fn addr_at(buf: &[u8], at: usize) -> Ipv6Addr {
    let octets: [u8; 16] = buf[at..at + 16].try_into().expect("checked by parse");
    Ipv6Addr::from(octets)
}

/// What [`write_header`] writes.
pub struct Header {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    pub payload_len: usize,
}

/// Write a fixed header (no flow label, traffic class 0) at the start of
/// `buf` (at least [`HEADER_LEN`] long).
pub fn write_header(buf: &mut [u8], h: &Header) {
    buf[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    buf[4..6].copy_from_slice(&(h.payload_len as u16).to_be_bytes());
    buf[6] = h.next_header;
    buf[7] = h.hop_limit;
    buf[8..24].copy_from_slice(&h.src.octets());
    buf[24..40].copy_from_slice(&h.dst.octets());
}

/// The unfolded sum of the upper-layer pseudo-header (RFC 8200 8.1).
pub fn pseudo_header_sum(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: usize) -> u32 {
    let acc = checksum::sum(&src.octets(), 0);
    let acc = checksum::sum(&dst.octets(), acc);
    let l = (len as u32).to_be_bytes();
    checksum::sum(&[l[0], l[1], l[2], l[3], 0, 0, 0, next_header], acc)
}

/// The link-local address the kernel derives from `mac` (modified EUI-64,
/// RFC 4291 appendix A), what a namespace's interface has by default.
pub fn link_local_from_mac(mac: [u8; 6]) -> Ipv6Addr {
    let iid = [mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]];
    let mut octets = [0u8; 16];
    octets[0..2].copy_from_slice(&[0xfe, 0x80]);
    octets[8..].copy_from_slice(&iid);
    Ipv6Addr::from(octets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_version_and_length() {
        let mut buf = [0u8; 48];
        buf[0] = 0x60;
        buf[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(Packet::parse(&buf).unwrap().payload().len(), 8);
        buf[4..6].copy_from_slice(&9u16.to_be_bytes());
        assert!(Packet::parse(&buf).is_err());
        buf[0] = 0x40;
        assert!(Packet::parse(&buf).is_err());
        assert_eq!(Packet::parse(&buf[..39]).err(), Some(Error::Truncated));
    }

    #[test]
    fn header_round_trips() {
        let mut buf = [0u8; 48];
        let (src, dst) = ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap());
        write_header(&mut buf, &Header { src, dst, next_header: NEXT_ICMPV6, hop_limit: 255, payload_len: 8 });
        let ip = Packet::parse(&buf).unwrap();
        assert_eq!((ip.src(), ip.dst(), ip.next_header(), ip.hop_limit()), (src, dst, NEXT_ICMPV6, 255));
    }

    #[test]
    fn link_local_is_modified_eui64() {
        let ll = link_local_from_mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(ll, "fe80::42:acff:fe11:2".parse::<Ipv6Addr>().unwrap());
    }
}
