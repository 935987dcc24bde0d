//! Neighbour Discovery (RFC 4861): neighbour solicitations the switch
//! answers for the addresses it knows, and the advertisements it answers with.

use crate::ethernet::{self, ETHERTYPE_IPV6};
use crate::icmpv6::{self, TYPE_NEIGHBOR_ADVERT, TYPE_NEIGHBOR_SOLICIT};
use crate::ipv6::{self, NEXT_ICMPV6};
use crate::{Error, MacAddr};
use std::net::Ipv6Addr;

/// NDP messages must arrive with the hop limit they were sent with (on-link only).
pub const HOP_LIMIT: u8 = 255;
/// Type, code, checksum, 4 reserved/flag bytes and the target address.
const MESSAGE_LEN: usize = 24;
const OPT_SOURCE_LINK_ADDR: u8 = 1;
const OPT_TARGET_LINK_ADDR: u8 = 2;
/// A link-layer address option for Ethernet: type, length (in 8-byte units), MAC.
const LINK_ADDR_OPT_LEN: usize = 8;

/// Advertisement flags.
pub const FLAG_ROUTER: u8 = 0x80;
pub const FLAG_SOLICITED: u8 = 0x40;
pub const FLAG_OVERRIDE: u8 = 0x20;

/// A neighbour solicitation, checked as RFC 4861 7.1.1 says a receiver must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solicit {
    pub target: Ipv6Addr,
    /// The sender (unspecified for duplicate address detection).
    pub src: Ipv6Addr,
}

impl Solicit {
    /// A duplicate address detection probe: the sender has no address yet.
    pub fn is_dad(&self) -> bool {
        self.src.is_unspecified()
    }
}

/// The solicitation `ip` carries; Ok(None) when it is not one, an error
/// when it claims to be one and breaks the rules.
pub fn parse_solicit(ip: &ipv6::Packet) -> Result<Option<Solicit>, Error> {
    let Some(msg) = icmpv6::message(ip) else { return Ok(None) };
    if msg[0] != TYPE_NEIGHBOR_SOLICIT {
        return Ok(None);
    }
    if ip.hop_limit() != HOP_LIMIT || msg[1] != 0 || msg.len() < MESSAGE_LEN {
        return Err(Error::Malformed("neighbour solicitation"));
    }
    if !icmpv6::checksum_ok(ip, msg) {
        return Err(Error::Malformed("neighbour solicitation checksum"));
    }
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&msg[8..24]).expect("length checked"));
    if target.is_multicast() {
        return Err(Error::Malformed("neighbour solicitation for a multicast target"));
    }
    let solicit = Solicit { target, src: ip.src() };
    if solicit.is_dad() && (!is_solicited_node(ip.dst()) || has_source_link_addr(&msg[MESSAGE_LEN..])?) {
        return Err(Error::Malformed("DAD probe"));
    }
    Ok(Some(solicit))
}

fn has_source_link_addr(mut options: &[u8]) -> Result<bool, Error> {
    let mut found = false;
    while !options.is_empty() {
        let len = 8 * *options.get(1).ok_or(Error::Truncated)? as usize;
        if len == 0 || len > options.len() {
            return Err(Error::Malformed("NDP option length"));
        }
        found |= options[0] == OPT_SOURCE_LINK_ADDR;
        options = &options[len..];
    }
    Ok(found)
}

/// ff02::1:ffXX:XXXX, where a node listens for solicitations for `addr`.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | o[13] as u16, u16::from_be_bytes([o[14], o[15]]))
}

fn is_solicited_node(addr: Ipv6Addr) -> bool {
    let s = addr.segments();
    s[..5] == [0xff02, 0, 0, 0, 0] && s[5] == 1 && s[6] >> 8 == 0xff
}

/// The Ethernet group address IPv6 multicast `addr` maps to (RFC 2464).
pub fn multicast_mac(addr: Ipv6Addr) -> MacAddr {
    let o = addr.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// One end of an NDP exchange: MAC and IPv6 address.
#[derive(Debug, Clone, Copy)]
pub struct Host {
    pub mac: MacAddr,
    pub ip: Ipv6Addr,
}

const FRAME_LEN: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + MESSAGE_LEN + LINK_ADDR_OPT_LEN;

/// Write into `out` the advertisement that `target` (the address answered
/// for, at `target.mac`) sends to `to`; returns the frame length, 0 when
/// `out` is too small.
pub fn write_advert(out: &mut [u8], target: Host, to: Host, flags: u8) -> usize {
    write_message(out, TYPE_NEIGHBOR_ADVERT, flags, (target, target.ip), to, OPT_TARGET_LINK_ADDR)
}

/// Write the advertisement answering `solicit` (received from `asker_mac`)
/// for its target, which lives at `mac`: to the solicitor with the
/// Solicited flag, or, for a DAD probe, to all nodes without it (RFC 4861
/// 7.2.4). `flags` adds Router and Override as the answerer sees fit.
/// Returns the frame length, 0 when `out` is too small.
pub fn write_answer(out: &mut [u8], solicit: &Solicit, asker_mac: MacAddr, mac: MacAddr, flags: u8) -> usize {
    let target = Host { mac, ip: solicit.target };
    if solicit.is_dad() {
        let all_nodes = Host { mac: multicast_mac(ipv6::ALL_NODES), ip: ipv6::ALL_NODES };
        write_advert(out, target, all_nodes, flags)
    } else {
        write_advert(out, target, Host { mac: asker_mac, ip: solicit.src }, flags | FLAG_SOLICITED)
    }
}

/// Write a solicitation from `from` for `target` to its solicited-node
/// group (tests and benches; `from.ip` unspecified makes a DAD probe).
pub fn write_solicit(out: &mut [u8], from: Host, target: Ipv6Addr) -> usize {
    let group = solicited_node(target);
    let to = Host { mac: multicast_mac(group), ip: group };
    let n = write_message(out, TYPE_NEIGHBOR_SOLICIT, 0, (from, target), to, OPT_SOURCE_LINK_ADDR);
    if from.ip.is_unspecified() && n > 0 {
        // A DAD probe carries no source link-layer address option.
        let len = n - LINK_ADDR_OPT_LEN;
        let ip_start = ethernet::HEADER_LEN;
        out[ip_start + 4..ip_start + 6].copy_from_slice(&((MESSAGE_LEN) as u16).to_be_bytes());
        let msg = &mut out[ip_start + ipv6::HEADER_LEN..len];
        icmpv6::seal(from.ip, group, msg);
        return len;
    }
    n
}

fn write_message(out: &mut [u8], kind: u8, flags: u8, from: (Host, Ipv6Addr), to: Host, opt: u8) -> usize {
    if out.len() < FRAME_LEN {
        return 0;
    }
    let (sender, target) = from;
    ethernet::write_header(out, to.mac, sender.mac, ETHERTYPE_IPV6);
    let msg_len = MESSAGE_LEN + LINK_ADDR_OPT_LEN;
    let header = ipv6::Header {
        src: sender.ip,
        dst: to.ip,
        next_header: NEXT_ICMPV6,
        hop_limit: HOP_LIMIT,
        payload_len: msg_len,
    };
    ipv6::write_header(&mut out[ethernet::HEADER_LEN..], &header);
    let msg = &mut out[ethernet::HEADER_LEN + ipv6::HEADER_LEN..FRAME_LEN];
    msg[..8].copy_from_slice(&[kind, 0, 0, 0, flags, 0, 0, 0]);
    msg[8..24].copy_from_slice(&target.octets());
    msg[24..26].copy_from_slice(&[opt, 1]);
    msg[26..32].copy_from_slice(&sender.mac.0);
    icmpv6::seal(sender.ip, to.ip, msg);
    FRAME_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([2, 0x42, 0xac, 0x11, 0, 2]);

    fn parse(frame: &[u8]) -> Result<Option<Solicit>, Error> {
        parse_solicit(&ipv6::Packet::parse(&frame[ethernet::HEADER_LEN..]).unwrap())
    }

    #[test]
    fn solicitation_round_trips() {
        let mut buf = [0u8; 128];
        let me: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let target: Ipv6Addr = "2001:db8::3".parse().unwrap();
        let n = write_solicit(&mut buf, Host { mac: MAC, ip: me }, target);
        let s = parse(&buf[..n]).unwrap().unwrap();
        assert_eq!((s.target, s.src, s.is_dad()), (target, me, false));
        assert_eq!(&buf[..6], &[0x33, 0x33, 0xff, 0, 0, 3]);
    }

    #[test]
    fn dad_probe_is_recognised() {
        let mut buf = [0u8; 128];
        let target: Ipv6Addr = "fe80::42:acff:fe11:2".parse().unwrap();
        let n = write_solicit(&mut buf, Host { mac: MAC, ip: Ipv6Addr::UNSPECIFIED }, target);
        assert!(parse(&buf[..n]).unwrap().unwrap().is_dad());
    }

    #[test]
    fn rule_breakers_are_refused() {
        let mut buf = [0u8; 128];
        let n = write_solicit(&mut buf, Host { mac: MAC, ip: "fe80::2".parse().unwrap() }, "fe80::3".parse().unwrap());
        let mut forwarded = buf;
        forwarded[ethernet::HEADER_LEN + 7] = 254; // hop limit: came through a router
        assert!(parse(&forwarded[..n]).is_err());
        let mut corrupt = buf;
        corrupt[n - 1] ^= 1;
        assert!(parse(&corrupt[..n]).is_err());
    }

    #[test]
    fn advert_carries_target_and_its_mac() {
        let mut buf = [0u8; 128];
        let target = Host { mac: MAC, ip: "fe80::1".parse().unwrap() };
        let to = Host { mac: MacAddr([2, 0, 0, 0, 0, 9]), ip: "fe80::9".parse().unwrap() };
        let n = write_advert(&mut buf, target, to, FLAG_ROUTER | FLAG_SOLICITED | FLAG_OVERRIDE);
        let ip = ipv6::Packet::parse(&buf[ethernet::HEADER_LEN..n]).unwrap();
        let msg = icmpv6::message(&ip).unwrap();
        assert!(icmpv6::checksum_ok(&ip, msg));
        assert_eq!((msg[0], msg[4], ip.hop_limit()), (TYPE_NEIGHBOR_ADVERT, 0xe0, 255));
        assert_eq!(&msg[8..24], &target.ip.octets());
        assert_eq!(&msg[26..32], &MAC.0);
    }

    #[test]
    fn solicited_node_group() {
        let g = solicited_node("2001:db8::242:ac11:2".parse().unwrap());
        assert_eq!(g, "ff02::1:ff11:2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(multicast_mac(g), MacAddr([0x33, 0x33, 0xff, 0x11, 0, 2]));
    }
}
