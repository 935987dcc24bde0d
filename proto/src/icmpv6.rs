//! ICMPv6 (RFC 4443): the checksum over the pseudo-header, and echo.

use crate::ethernet::{self, ETHERTYPE_IPV6};
use crate::ipv6::{self, NEXT_ICMPV6};
use crate::{checksum, Error, MacAddr};
use std::net::Ipv6Addr;

pub const TYPE_DEST_UNREACHABLE: u8 = 1;
pub const TYPE_PACKET_TOO_BIG: u8 = 2;
pub const TYPE_TIME_EXCEEDED: u8 = 3;
pub const TYPE_ECHO_REQUEST: u8 = 128;
pub const TYPE_ECHO_REPLY: u8 = 129;
pub const TYPE_ROUTER_SOLICIT: u8 = 133;
pub const TYPE_ROUTER_ADVERT: u8 = 134;
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;
pub const TYPE_REDIRECT: u8 = 137;

/// The ICMPv6 message `ip` carries directly (no extension headers), if it
/// carries one at least 4 bytes long.
pub fn message<'a>(ip: &ipv6::Packet<'a>) -> Option<&'a [u8]> {
    (ip.next_header() == NEXT_ICMPV6 && ip.payload().len() >= 4).then(|| ip.payload())
}

/// The checksum to store in `msg` (its checksum field counted as zero).
pub fn checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let acc = ipv6::pseudo_header_sum(src, dst, NEXT_ICMPV6, msg.len());
    let acc = checksum::sum(&msg[..2], acc);
    checksum::finish(checksum::sum(&msg[4..], acc))
}

/// Whether `msg`'s stored checksum is right.
pub fn checksum_ok(ip: &ipv6::Packet, msg: &[u8]) -> bool {
    let acc = ipv6::pseudo_header_sum(ip.src(), ip.dst(), NEXT_ICMPV6, msg.len());
    checksum::finish(checksum::sum(msg, acc)) == 0
}

/// Fill in the checksum of the message at `msg` sent from `src` to `dst`.
pub fn seal(src: Ipv6Addr, dst: Ipv6Addr, msg: &mut [u8]) {
    let sum = checksum(src, dst, msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
}

/// Whether `ip` is an echo request with a good checksum; an ICMPv6 message
/// with a bad one is an error.
pub fn is_echo_request(ip: &ipv6::Packet) -> Result<bool, Error> {
    let Some(msg) = message(ip) else { return Ok(false) };
    if msg[0] != TYPE_ECHO_REQUEST {
        return Ok(false);
    }
    if msg.len() < 8 || !checksum_ok(ip, msg) {
        return Err(Error::Malformed("ICMPv6 echo"));
    }
    Ok(true)
}

/// Write into `out` the frame answering the echo request `ip` (sent by
/// `requester`) from `our_mac`, sourced from the address it was sent to;
/// None when `out` is too small.
pub fn write_echo_reply(out: &mut [u8], ip: &ipv6::Packet, requester: MacAddr, our_mac: MacAddr) -> Option<usize> {
    let request = ip.payload();
    let start = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
    let frame_len = start + request.len();
    if out.len() < frame_len {
        return None;
    }
    ethernet::write_header(out, requester, our_mac, ETHERTYPE_IPV6);
    let (src, dst) = (ip.dst(), ip.src());
    let header = ipv6::Header {
        src,
        dst,
        next_header: NEXT_ICMPV6,
        hop_limit: ipv6::DEFAULT_HOP_LIMIT,
        payload_len: request.len(),
    };
    ipv6::write_header(&mut out[ethernet::HEADER_LEN..], &header);
    let reply = &mut out[start..frame_len];
    reply.copy_from_slice(request);
    reply[0] = TYPE_ECHO_REPLY;
    seal(src, dst, reply);
    Some(frame_len)
}

/// An ICMPv6 error message, with the packet it is about, fits the IPv6
/// minimum MTU (RFC 4443 2.4 (c)).
const MAX_ERROR_PACKET: usize = 1280;

/// Write into `out` the frame carrying an ICMPv6 error (`kind`, `code`,
/// the 32-bit parameter: MTU for packet-too-big, else 0) about the IPv6
/// packet `offending`, from `from` to the packet's source at `to_mac`; as
/// much of the offending packet is quoted as fits in 1280 bytes. Returns
/// the frame length (0 when `out` is too small).
pub fn write_error(
    out: &mut [u8],
    (kind, code, param): (u8, u8, u32),
    offending: &ipv6::Packet,
    from: (MacAddr, Ipv6Addr),
    to_mac: MacAddr,
) -> usize {
    let quoted_bytes = offending.bytes();
    let quoted = quoted_bytes.len().min(MAX_ERROR_PACKET - ipv6::HEADER_LEN - 8);
    let msg_len = 8 + quoted;
    let start = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
    if out.len() < start + msg_len {
        return 0;
    }
    ethernet::write_header(out, to_mac, from.0, ETHERTYPE_IPV6);
    let (src, dst) = (from.1, offending.src());
    let header = ipv6::Header { src, dst, next_header: NEXT_ICMPV6, hop_limit: 255, payload_len: msg_len };
    ipv6::write_header(&mut out[ethernet::HEADER_LEN..], &header);
    let msg = &mut out[start..start + msg_len];
    msg[..4].copy_from_slice(&[kind, code, 0, 0]);
    msg[4..8].copy_from_slice(&param.to_be_bytes());
    msg[8..].copy_from_slice(&quoted_bytes[..quoted]);
    seal(src, dst, msg);
    start + msg_len
}

/// Whether `ip` may be answered with an ICMPv6 error (RFC 4443 2.4 (e)):
/// not an error message itself, not to or from a multicast or unspecified
/// address.
pub fn may_answer_with_error(ip: &ipv6::Packet) -> bool {
    let is_error = message(ip).is_some_and(|m| m[0] < 128);
    !is_error && !ip.dst().is_multicast() && !ip.src().is_multicast() && !ip.src().is_unspecified()
}

/// Build an echo request frame (used by tests and benches).
pub fn write_echo_request(
    out: &mut [u8],
    src: (MacAddr, Ipv6Addr),
    dst: (MacAddr, Ipv6Addr),
    ident: u16,
    seq: u16,
    payload: &[u8],
) -> usize {
    let msg_len = 8 + payload.len();
    ethernet::write_header(out, dst.0, src.0, ETHERTYPE_IPV6);
    let header = ipv6::Header { src: src.1, dst: dst.1, next_header: NEXT_ICMPV6, hop_limit: 64, payload_len: msg_len };
    ipv6::write_header(&mut out[ethernet::HEADER_LEN..], &header);
    let start = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
    let msg = &mut out[start..start + msg_len];
    msg[..4].copy_from_slice(&[TYPE_ECHO_REQUEST, 0, 0, 0]);
    msg[4..6].copy_from_slice(&ident.to_be_bytes());
    msg[6..8].copy_from_slice(&seq.to_be_bytes());
    msg[8..].copy_from_slice(payload);
    seal(src.1, dst.1, msg);
    start + msg_len
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    #[test]
    fn echo_request_gets_a_reply_with_a_good_checksum() {
        let (a, b): (Ipv6Addr, Ipv6Addr) = ("2001:db8::2".parse().unwrap(), "fe80::1".parse().unwrap());
        let mut req = [0u8; 128];
        let n = write_echo_request(&mut req, (A, a), (B, b), 7, 1, b"hello");
        let ip = ipv6::Packet::parse(&req[14..n]).unwrap();
        assert_eq!(is_echo_request(&ip), Ok(true));
        let mut out = [0u8; 128];
        let m = write_echo_reply(&mut out, &ip, A, B).unwrap();
        let reply = ipv6::Packet::parse(&out[14..m]).unwrap();
        assert_eq!((reply.src(), reply.dst()), (b, a));
        let msg = message(&reply).unwrap();
        assert_eq!(msg[0], TYPE_ECHO_REPLY);
        assert!(checksum_ok(&reply, msg));
        assert_eq!(&msg[8..], b"hello");
    }

    #[test]
    fn errors_quote_the_packet_up_to_the_minimum_mtu() {
        let (a, b): (Ipv6Addr, Ipv6Addr) = ("2001:db8::2".parse().unwrap(), "2001:db8:9::9".parse().unwrap());
        let mut big = vec![0u8; 3000];
        let n = write_echo_request(&mut big, (A, a), (B, b), 1, 1, &[7u8; 2000]);
        let ip = ipv6::Packet::parse(&big[14..n]).unwrap();
        assert!(may_answer_with_error(&ip));
        let mut out = [0u8; 2048];
        let gw: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let m = write_error(&mut out, (TYPE_PACKET_TOO_BIG, 0, 1500), &ip, (B, gw), A);
        assert_eq!(m, 14 + 1280);
        let err = ipv6::Packet::parse(&out[14..m]).unwrap();
        let msg = message(&err).unwrap();
        assert_eq!((err.src(), err.dst(), msg[0]), (gw, a, TYPE_PACKET_TOO_BIG));
        assert_eq!(u32::from_be_bytes(msg[4..8].try_into().unwrap()), 1500);
        assert!(checksum_ok(&err, msg));
        assert!(!may_answer_with_error(&err), "never an error about an error");
    }

    #[test]
    fn a_bad_checksum_is_an_error() {
        let mut req = [0u8; 128];
        let n = write_echo_request(&mut req, (A, "::2".parse().unwrap()), (B, "::1".parse().unwrap()), 1, 1, b"x");
        req[n - 1] ^= 0xff;
        let ip = ipv6::Packet::parse(&req[14..n]).unwrap();
        assert!(is_echo_request(&ip).is_err());
    }
}
