//! VXLAN (RFC 7348): an Ethernet frame wrapped in outer Ethernet, IPv4, UDP
//! and an 8-byte VXLAN header carrying the 24-bit network identifier (VNI),
//! to cross an IP underlay between VTEPs.

use std::net::Ipv4Addr;

use crate::ethernet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::offload::{self, Offload};
use crate::{be16, checksum, ipv4, ipv6, Error, MacAddr};

/// The IANA port (Linux's `dstport 4789`).
pub const UDP_PORT: u16 = 4789;
pub const HEADER_LEN: usize = 8;
const UDP_HEADER_LEN: usize = 8;
/// The "VNI is valid" flag (the only one defined).
const FLAG_VNI: u8 = 0x08;
/// Bytes encapsulation adds in front of the inner frame: outer Ethernet,
/// IPv4, UDP and VXLAN headers (50, hence overlay MTU = underlay MTU - 50).
pub const OVERHEAD: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + UDP_HEADER_LEN + HEADER_LEN;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Source ports come from this range (RFC 7348 5: the dynamic ports).
const SOURCE_PORTS: (u16, u16) = (49152, 65535);

/// The outer headers of one encapsulated frame.
#[derive(Clone, Copy, Debug)]
pub struct Outer {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub vni: u32,
    /// From a hash of the inner flow ([`source_port`]), so that the
    /// underlay spreads flows over its paths and queues.
    pub src_port: u16,
    pub dst_port: u16,
}

/// Write the outer headers for an inner frame of `inner_len` bytes into
/// `out[..OVERHEAD]`. The UDP checksum is left zero, as RFC 7348 allows over
/// IPv4 (the inner frame carries its own).
pub fn write_outer(out: &mut [u8], o: &Outer, inner_len: usize) {
    ethernet::write_header(out, o.dst_mac, o.src_mac, ETHERTYPE_IPV4);
    let udp_len = UDP_HEADER_LEN + HEADER_LEN + inner_len;
    let ip = ipv4::Header { src: o.src_ip, dst: o.dst_ip, protocol: ipv4::PROTO_UDP, ttl: 64, payload_len: udp_len };
    ipv4::write_header(&mut out[ethernet::HEADER_LEN..], &ip);
    let udp = &mut out[ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN..OVERHEAD];
    udp[0..2].copy_from_slice(&o.src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&o.dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[6..8].fill(0);
    write_vxlan_header(&mut udp[8..16], o.vni);
}

/// Bytes before the first VXLAN header of a train: outer Ethernet, IPv4, UDP.
pub const TRAIN_HEADERS: usize = OVERHEAD - HEADER_LEN;
/// The most datagram payload one train carries (outer IPv4's length limit).
pub const MAX_TRAIN_PAYLOAD: usize = u16::MAX as usize - ipv4::MIN_HEADER_LEN - UDP_HEADER_LEN;

/// Write the 8-byte VXLAN header for `vni` at the start of `out`.
pub fn write_vxlan_header(out: &mut [u8], vni: u32) {
    let vni = vni.to_be_bytes();
    out[..HEADER_LEN].copy_from_slice(&[FLAG_VNI, 0, 0, 0, vni[1], vni[2], vni[3], 0]);
}

/// Write the outer headers of a train into `out[..TRAIN_HEADERS]`: a UDP
/// GSO packet whose `payload_len` bytes (written behind them) are the
/// payloads of several VXLAN datagrams, each a VXLAN header and an inner
/// frame, `datagram` bytes each but the last. Returns the offload metadata
/// with which the kernel (or the NIC) cuts it into those datagrams, each
/// with its own IPv4 header and UDP checksum: one send for many frames.
pub fn write_train(out: &mut [u8], o: &Outer, payload_len: usize, datagram: usize) -> Offload {
    write_outer(out, o, payload_len - HEADER_LEN);
    let udp_len = (UDP_HEADER_LEN + payload_len) as u32;
    let addresses = [o.src_ip.octets(), o.dst_ip.octets()].concat();
    let pseudo = checksum::sum(&addresses, ipv4::PROTO_UDP as u32 + udp_len);
    let udp = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN;
    out[udp + 6..udp + 8].copy_from_slice(&(!checksum::finish(pseudo)).to_be_bytes());
    Offload {
        flags: offload::F_NEEDS_CSUM,
        gso_type: offload::GSO_UDP_L4,
        hdr_len: TRAIN_HEADERS as u16,
        gso_size: datagram as u16,
        csum_start: udp as u16,
        csum_offset: 6,
    }
}

/// Encapsulate `inner` into `out`; returns the whole frame's length, or
/// None when `out` is too small.
pub fn encapsulate(out: &mut [u8], o: &Outer, inner: &[u8]) -> Option<usize> {
    let len = OVERHEAD + inner.len();
    if out.len() < len || inner.len() > u16::MAX as usize - ipv4::MIN_HEADER_LEN - UDP_HEADER_LEN - HEADER_LEN {
        return None;
    }
    write_outer(out, o, inner.len());
    out[OVERHEAD..len].copy_from_slice(inner);
    Some(len)
}

/// The outer UDP source port for `inner`: a hash of its addresses and, for
/// TCP and UDP, its ports, folded into the dynamic range.
pub fn source_port(inner: &[u8]) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |bytes: &[u8]| {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(word)).wrapping_mul(0x0100_0000_01b3).rotate_left(23);
        }
    };
    mix(&inner[..inner.len().min(ethernet::HEADER_LEN)]);
    if let Some((addrs, ports)) = flow_fields(inner) {
        mix(addrs);
        mix(ports);
    }
    let span = (SOURCE_PORTS.1 - SOURCE_PORTS.0) as u64 + 1;
    SOURCE_PORTS.0 + ((h ^ (h >> 32)) % span) as u16
}

/// The address bytes and the L4 port bytes of an inner IPv4/IPv6 frame.
fn flow_fields(inner: &[u8]) -> Option<(&[u8], &[u8])> {
    let eth = ethernet::Frame::parse(inner).ok()?;
    let (addrs, proto, l4) = match eth.ethertype() {
        ETHERTYPE_IPV4 => {
            let ip = ipv4::Packet::parse(eth.payload()).ok()?;
            (&eth.payload()[12..20], ip.protocol(), (!ip.is_later_fragment()).then(|| ip.payload()))
        }
        ETHERTYPE_IPV6 => {
            let ip = ipv6::Packet::parse(eth.payload()).ok()?;
            (&eth.payload()[8..40], ip.next_header(), Some(ip.payload()))
        }
        _ => return None,
    };
    let ports = match (proto, l4) {
        (ipv4::PROTO_TCP | ipv4::PROTO_UDP, Some(l4)) if l4.len() >= 4 => &l4[..4],
        _ => &[][..],
    };
    Some((addrs, ports))
}

/// A frame from the underlay, unwrapped.
#[derive(Debug, Clone, Copy)]
pub struct Decapsulated<'a> {
    pub vni: u32,
    /// The sending VTEP.
    pub src_ip: Ipv4Addr,
    pub src_mac: MacAddr,
    pub dst_ip: Ipv4Addr,
    /// The inner Ethernet frame.
    pub inner: &'a [u8],
}

/// Unwrap `frame` if it is VXLAN to UDP port `port`: Ok(None) when it is
/// not (another protocol or port), an error when it claims to be and
/// breaks the format.
pub fn decapsulate(frame: &[u8], port: u16) -> Result<Option<Decapsulated<'_>>, Error> {
    let Ok(eth) = ethernet::Frame::parse(frame) else { return Ok(None) };
    if eth.ethertype() != ETHERTYPE_IPV4 {
        return Ok(None);
    }
    let Ok(ip) = ipv4::Packet::parse(eth.payload()) else { return Ok(None) };
    if ip.protocol() != ipv4::PROTO_UDP || ip.is_fragment() {
        return Ok(None);
    }
    let udp = ip.payload();
    if udp.len() < UDP_HEADER_LEN || be16(udp, 2) != port {
        return Ok(None);
    }
    let udp_len = be16(udp, 4) as usize;
    if udp_len < UDP_HEADER_LEN + HEADER_LEN + ethernet::HEADER_LEN || udp_len > udp.len() {
        return Err(Error::Malformed("VXLAN UDP length"));
    }
    let vxlan = &udp[UDP_HEADER_LEN..UDP_HEADER_LEN + HEADER_LEN];
    if vxlan[0] & FLAG_VNI == 0 {
        return Err(Error::Malformed("VXLAN without the VNI flag"));
    }
    let vni = u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]);
    let inner = &udp[UDP_HEADER_LEN + HEADER_LEN..udp_len];
    Ok(Some(Decapsulated { vni, src_ip: ip.src(), src_mac: eth.src(), dst_ip: ip.dst(), inner }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner(sport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + 10];
        ethernet::write_header(&mut f, MacAddr([2, 0, 0, 0, 0, 2]), MacAddr([2, 0, 0, 0, 0, 1]), ETHERTYPE_IPV4);
        let h = ipv4::Header {
            src: Ipv4Addr::new(10, 9, 0, 2),
            dst: Ipv4Addr::new(10, 9, 0, 3),
            protocol: ipv4::PROTO_UDP,
            ttl: 64,
            payload_len: 18,
        };
        ipv4::write_header(&mut f[14..], &h);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f
    }

    fn outer(vni: u32) -> Outer {
        Outer {
            src_mac: MacAddr([2, 0, 0, 0, 1, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 1, 2]),
            src_ip: Ipv4Addr::new(192, 0, 2, 1),
            dst_ip: Ipv4Addr::new(192, 0, 2, 2),
            vni,
            src_port: 50000,
            dst_port: UDP_PORT,
        }
    }

    #[test]
    fn encapsulation_round_trips() {
        let inner = inner(1234);
        let mut out = [0u8; 256];
        let n = encapsulate(&mut out, &outer(0xabcdef), &inner).unwrap();
        assert_eq!(n, OVERHEAD + inner.len());
        assert_eq!(OVERHEAD, 50);
        let ip = ipv4::Packet::parse(&out[14..n]).unwrap();
        assert!(ip.header_checksum_ok());
        let d = decapsulate(&out[..n], UDP_PORT).unwrap().unwrap();
        assert_eq!((d.vni, d.src_ip, d.dst_ip, d.inner), (0xabcdef, outer(0).src_ip, outer(0).dst_ip, &inner[..]));
        assert_eq!(d.src_mac, outer(0).src_mac);
    }

    #[test]
    fn other_traffic_is_not_vxlan_and_broken_vxlan_is_an_error() {
        let mut out = [0u8; 256];
        let n = encapsulate(&mut out, &outer(7), &inner(1)).unwrap();
        assert!(decapsulate(&out[..n], 8472).unwrap().is_none(), "another port");
        assert!(decapsulate(&inner(1), UDP_PORT).unwrap().is_none(), "plain UDP");
        let mut no_flag = out;
        no_flag[42] = 0;
        assert!(decapsulate(&no_flag[..n], UDP_PORT).is_err());
        let mut short = out;
        short[38..40].copy_from_slice(&10u16.to_be_bytes());
        assert!(decapsulate(&short[..n], UDP_PORT).is_err());
    }

    #[test]
    fn source_ports_follow_the_inner_flow() {
        let (a, b) = (source_port(&inner(1000)), source_port(&inner(1001)));
        assert_eq!(a, source_port(&inner(1000)), "one flow, one port");
        assert_ne!(a, b, "flows spread");
        assert!(a >= 49152 && b >= 49152);
        let ports: std::collections::HashSet<u16> = (0..200).map(|p| source_port(&inner(p))).collect();
        assert!(ports.len() > 150, "hash spreads: {} distinct of 200", ports.len());
    }
}
