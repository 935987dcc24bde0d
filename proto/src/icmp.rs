//! ICMP echo (RFC 792): the switch answers pings to the addresses it owns.

use crate::ethernet::{self, ETHERTYPE_IPV4};
use crate::{checksum, ipv4, Error, MacAddr};

pub const TYPE_ECHO_REPLY: u8 = 0;
pub const TYPE_ECHO_REQUEST: u8 = 8;
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
pub const TYPE_TIME_EXCEEDED: u8 = 11;
/// Destination unreachable, code: fragmentation needed and DF set.
pub const CODE_FRAG_NEEDED: u8 = 4;

/// How much of the offending packet an error quotes: its IP header and the
/// first 8 bytes of its payload (RFC 792), which hold the ports.
fn quoted_len(offending: &ipv4::Packet) -> usize {
    (offending.header_len() + 8).min(offending.total_len())
}

/// Write into `out` an ICMP error (`kind`, `code`; `rest` is the second
/// word: the next-hop MTU for frag-needed, else 0) about `offending`, from
/// `from` to the packet's sender at `to_mac`. Returns the frame length.
pub fn write_error(
    out: &mut [u8],
    (kind, code, rest): (u8, u8, u32),
    offending: &ipv4::Packet,
    from: (MacAddr, std::net::Ipv4Addr),
    to_mac: MacAddr,
) -> usize {
    let quoted = &offending.bytes()[..quoted_len(offending)];
    let icmp_len = HEADER_LEN + quoted.len();
    ethernet::write_header(out, to_mac, from.0, ETHERTYPE_IPV4);
    let h =
        ipv4::Header { src: from.1, dst: offending.src(), protocol: ipv4::PROTO_ICMP, ttl: 64, payload_len: icmp_len };
    ipv4::write_header(&mut out[ethernet::HEADER_LEN..], &h);
    let start = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN;
    let msg = &mut out[start..start + icmp_len];
    msg[0] = kind;
    msg[1] = code;
    msg[2..4].fill(0);
    msg[4..8].copy_from_slice(&rest.to_be_bytes());
    msg[8..].copy_from_slice(quoted);
    let sum = checksum::compute(msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    start + icmp_len
}
const HEADER_LEN: usize = 8;

/// Is this IPv4 packet an unfragmented ICMP echo request with a valid checksum?
pub fn is_echo_request(ip: &ipv4::Packet) -> Result<bool, Error> {
    if ip.protocol() != ipv4::PROTO_ICMP || ip.is_fragment() {
        return Ok(false);
    }
    let msg = ip.payload();
    if msg.len() < HEADER_LEN {
        return Err(Error::Truncated);
    }
    if msg[0] != TYPE_ECHO_REQUEST {
        return Ok(false);
    }
    if checksum::compute(msg) != 0 {
        return Err(Error::Malformed("ICMP checksum"));
    }
    Ok(true)
}

/// Write into `out` the Ethernet frame answering the echo request `ip`
/// (sent by `requester`), from `our_mac`; returns the frame length, or None
/// when `out` is too small.
pub fn write_echo_reply(out: &mut [u8], ip: &ipv4::Packet, requester: MacAddr, our_mac: MacAddr) -> Option<usize> {
    let request = ip.payload();
    let frame_len = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + request.len();
    if out.len() < frame_len {
        return None;
    }
    ethernet::write_header(out, requester, our_mac, ETHERTYPE_IPV4);
    let header =
        ipv4::Header { src: ip.dst(), dst: ip.src(), protocol: ipv4::PROTO_ICMP, ttl: 64, payload_len: request.len() };
    ipv4::write_header(&mut out[ethernet::HEADER_LEN..], &header);
    let reply = &mut out[ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN..frame_len];
    reply.copy_from_slice(request);
    reply[0] = TYPE_ECHO_REPLY;
    reply[2..4].fill(0);
    let sum = checksum::compute(reply);
    reply[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(frame_len)
}

/// Build an echo request frame (used by tests and benches).
pub fn write_echo_request(
    out: &mut [u8],
    src: (MacAddr, std::net::Ipv4Addr),
    dst: (MacAddr, std::net::Ipv4Addr),
    ident: u16,
    seq: u16,
    payload: &[u8],
) -> usize {
    let icmp_len = HEADER_LEN + payload.len();
    ethernet::write_header(out, dst.0, src.0, ETHERTYPE_IPV4);
    let header = ipv4::Header { src: src.1, dst: dst.1, protocol: ipv4::PROTO_ICMP, ttl: 64, payload_len: icmp_len };
    ipv4::write_header(&mut out[ethernet::HEADER_LEN..], &header);
    let start = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN;
    let msg = &mut out[start..start + icmp_len];
    msg[0] = TYPE_ECHO_REQUEST;
    msg[1] = 0;
    msg[2..4].fill(0);
    msg[4..6].copy_from_slice(&ident.to_be_bytes());
    msg[6..8].copy_from_slice(&seq.to_be_bytes());
    msg[8..].copy_from_slice(payload);
    let sum = checksum::compute(msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    start + icmp_len
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn answers_an_echo_request() {
        let me = (MacAddr([2, 0, 0, 0, 0, 2]), Ipv4Addr::new(10, 0, 0, 2));
        let gw = (MacAddr([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 0, 0, 1));
        let mut req = [0u8; 128];
        let len = write_echo_request(&mut req, me, gw, 7, 1, b"hello");
        let eth = ethernet::Frame::parse(&req[..len]).unwrap();
        let ip = ipv4::Packet::parse(eth.payload()).unwrap();
        assert!(is_echo_request(&ip).unwrap());

        let mut out = [0u8; 128];
        let n = write_echo_reply(&mut out, &ip, me.0, gw.0).unwrap();
        let eth = ethernet::Frame::parse(&out[..n]).unwrap();
        assert_eq!(eth.dst(), me.0);
        let ip = ipv4::Packet::parse(eth.payload()).unwrap();
        assert_eq!((ip.src(), ip.dst()), (gw.1, me.1));
        assert!(ip.header_checksum_ok());
        let msg = ip.payload();
        assert_eq!(msg[0], TYPE_ECHO_REPLY);
        assert_eq!(checksum::compute(msg), 0);
        assert_eq!(&msg[4..8], &[0, 7, 0, 1]);
        assert_eq!(&msg[8..], b"hello");
    }

    #[test]
    fn writes_an_error_quoting_the_offending_header() {
        let me = (MacAddr([2, 0, 0, 0, 0, 2]), Ipv4Addr::new(10, 0, 0, 2));
        let far = (MacAddr([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(192, 0, 2, 9));
        let mut req = [0u8; 200];
        let len = write_echo_request(&mut req, me, far, 7, 1, &[0xab; 100]);
        let offending = ipv4::Packet::parse(&req[14..len]).unwrap();
        let gw = (MacAddr([2, 0, 0, 0, 0, 0x99]), Ipv4Addr::new(10, 0, 0, 1));
        let mut out = [0u8; 200];
        let n = write_error(&mut out, (TYPE_DEST_UNREACHABLE, CODE_FRAG_NEEDED, 1400), &offending, gw, me.0);
        let ip = ipv4::Packet::parse(&out[14..n]).unwrap();
        assert_eq!((ip.src(), ip.dst()), (gw.1, me.1));
        assert!(ip.header_checksum_ok());
        let msg = ip.payload();
        assert_eq!((msg[0], msg[1]), (TYPE_DEST_UNREACHABLE, CODE_FRAG_NEEDED));
        assert_eq!(u32::from_be_bytes(msg[4..8].try_into().unwrap()), 1400);
        assert_eq!(msg.len(), 8 + 20 + 8, "IP header and 8 bytes quoted");
        assert_eq!(&msg[8..36], &req[14..42]);
        assert_eq!(checksum::compute(msg), 0);
    }

    #[test]
    fn refuses_bad_checksum() {
        let me = (MacAddr([2, 0, 0, 0, 0, 2]), Ipv4Addr::new(10, 0, 0, 2));
        let gw = (MacAddr([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 0, 0, 1));
        let mut req = [0u8; 128];
        let len = write_echo_request(&mut req, me, gw, 7, 1, b"hello");
        req[len - 1] ^= 0xff;
        let ip = ipv4::Packet::parse(&req[14..len]).unwrap();
        assert!(is_echo_request(&ip).is_err());
    }
}
