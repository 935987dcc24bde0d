//! ARP for IPv4 over Ethernet (RFC 826).

use crate::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::{be16, Error, MacAddr};
use std::net::Ipv4Addr;

pub const PACKET_LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// A checked view of an Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy)]
pub struct Packet<'a> {
    buf: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Accept only the Ethernet/IPv4 flavour with request or reply opcodes.
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        if buf.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if be16(buf, 0) != 1 || be16(buf, 2) != ETHERTYPE_IPV4 || buf[4] != 6 || buf[5] != 4 {
            return Err(Error::Malformed("ARP for other than Ethernet/IPv4"));
        }
        let packet = Packet { buf };
        if !matches!(packet.op(), OP_REQUEST | OP_REPLY) {
            return Err(Error::Malformed("ARP opcode"));
        }
        Ok(packet)
    }

    #[inline]
    pub fn op(&self) -> u16 {
        be16(self.buf, 6)
    }

    #[inline]
    pub fn sender_mac(&self) -> MacAddr {
        MacAddr(self.buf[8..14].try_into().unwrap())
    }

    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        ipv4_at(self.buf, 14)
    }

    #[inline]
    pub fn target_mac(&self) -> MacAddr {
        MacAddr(self.buf[18..24].try_into().unwrap())
    }

    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        ipv4_at(self.buf, 24)
    }
}

fn ipv4_at(buf: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3])
}

/// The addresses of one side of an ARP exchange.
#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
}

/// Write a whole Ethernet frame holding an ARP packet into `buf`; returns its
/// length (60 bytes: padded to the Ethernet minimum).
pub fn write_frame(buf: &mut [u8], op: u16, sender: Host, target: Host, eth_dst: MacAddr) -> usize {
    const FRAME_LEN: usize = 60;
    buf[..FRAME_LEN].fill(0);
    ethernet::write_header(buf, eth_dst, sender.mac, ETHERTYPE_ARP);
    let p = &mut buf[ethernet::HEADER_LEN..];
    p[0..2].copy_from_slice(&1u16.to_be_bytes());
    p[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&op.to_be_bytes());
    p[8..14].copy_from_slice(&sender.mac.0);
    p[14..18].copy_from_slice(&sender.ip.octets());
    p[18..24].copy_from_slice(&target.mac.0);
    p[24..28].copy_from_slice(&target.ip.octets());
    FRAME_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(last: u8) -> Host {
        let ip = Ipv4Addr::new(10, 0, 0, last);
        Host { mac: MacAddr::from_ipv4(ip), ip }
    }

    #[test]
    fn round_trip() {
        let mut buf = [0u8; 64];
        let len = write_frame(&mut buf, OP_REQUEST, host(2), host(3), MacAddr::BROADCAST);
        let eth = ethernet::Frame::parse(&buf[..len]).unwrap();
        let arp = Packet::parse(eth.payload()).unwrap();
        assert_eq!(arp.op(), OP_REQUEST);
        assert_eq!(arp.sender_ip(), host(2).ip);
        assert_eq!(arp.sender_mac(), host(2).mac);
        assert_eq!(arp.target_ip(), host(3).ip);
        assert_eq!(arp.target_mac(), host(3).mac);
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(Packet::parse(&[0u8; 27]).err(), Some(Error::Truncated));
        assert!(Packet::parse(&[0u8; 28]).is_err());
        let mut buf = [0u8; 64];
        write_frame(&mut buf, 9, host(2), host(3), MacAddr::BROADCAST);
        assert!(Packet::parse(&buf[14..]).is_err());
    }
}
