//! User filter rules, evaluated before the switch's own processing, in
//! order, first match wins (Docker's DOCKER-USER chain). A rule is scoped to
//! the frames entering from one network's ports, to those entering on the
//! uplink (as they arrive: addressed to the uplink address and the
//! published host port), or to both. Rules speak of IPv4 and IPv6 alike: a
//! rule with an address matches packets of that address's family, one
//! without matches both, and `icmp` stands for ICMPv6 too. ARP and IPv6
//! neighbour discovery are never matched, as Docker's DOCKER-USER chain
//! never sees them.

use ipnet::IpNet;
use proto::ethernet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use proto::{icmpv6, ipv4, ipv6};
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Everywhere,
    Network(u32),
    Uplink,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Drop,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: u32,
    pub scope: Scope,
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    /// IP protocol number (ICMP's, 1, for ICMPv6 too).
    pub proto: Option<u8>,
    /// TCP/UDP destination port.
    pub dport: Option<u16>,
    pub action: Action,
}

/// Where a frame entered the switch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Network(u32),
    Uplink,
}

impl Rule {
    fn applies_at(&self, entry: Entry) -> bool {
        match (self.scope, entry) {
            (Scope::Everywhere, _) | (Scope::Uplink, Entry::Uplink) => true,
            (Scope::Network(n), Entry::Network(m)) => n == m,
            _ => false,
        }
    }

    fn matches(&self, ip: &Header) -> bool {
        self.src.is_none_or(|n| n.contains(&ip.src))
            && self.dst.is_none_or(|n| n.contains(&ip.dst))
            && self.proto.is_none_or(|p| p == ip.proto)
            && self.dport.is_none_or(|p| Some(p) == ip.dport)
    }
}

/// What rules look at in a packet of either family.
struct Header {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    dport: Option<u16>,
}

/// The action of the first rule matching an IP frame entering at `entry`,
/// if any. Other frames (ARP) pass: rules speak of addresses.
pub fn verdict(rules: &[Rule], entry: Entry, frame: &[u8]) -> Option<Action> {
    if rules.is_empty() {
        return None;
    }
    let eth = ethernet::Frame::parse(frame).ok()?;
    let header = match eth.ethertype() {
        ETHERTYPE_IPV4 => ipv4_header(&ipv4::Packet::parse(eth.payload()).ok()?),
        ETHERTYPE_IPV6 => {
            let ip = ipv6::Packet::parse(eth.payload()).ok()?;
            if is_neighbour_discovery(&ip) {
                return None; // as ARP: rules never break neighbour resolution
            }
            ipv6_header(&ip)
        }
        _ => return None,
    };
    rules.iter().filter(|r| r.applies_at(entry)).find(|r| r.matches(&header)).map(|r| r.action)
}

fn ipv4_header(ip: &ipv4::Packet) -> Header {
    let has_ports = matches!(ip.protocol(), ipv4::PROTO_TCP | ipv4::PROTO_UDP) && !ip.is_fragment();
    let dport = destination_port(ip.payload(), has_ports);
    Header { src: ip.src().into(), dst: ip.dst().into(), proto: ip.protocol(), dport }
}

/// Router and neighbour solicitations and advertisements, and redirects.
fn is_neighbour_discovery(ip: &ipv6::Packet) -> bool {
    icmpv6::message(ip).is_some_and(|m| (icmpv6::TYPE_ROUTER_SOLICIT..=icmpv6::TYPE_REDIRECT).contains(&m[0]))
}

/// IPv6 without extension headers is looked into; a packet behind one
/// (hop-by-hop options, fragments) shows its next header and no port.
fn ipv6_header(ip: &ipv6::Packet) -> Header {
    let proto = match ip.next_header() {
        ipv6::NEXT_ICMPV6 => ipv4::PROTO_ICMP,
        other => other,
    };
    let dport = destination_port(ip.payload(), matches!(proto, ipv4::PROTO_TCP | ipv4::PROTO_UDP));
    Header { src: ip.src().into(), dst: ip.dst().into(), proto, dport }
}

fn destination_port(l4: &[u8], has_ports: bool) -> Option<u16> {
    (has_ports && l4.len() >= 4).then(|| u16::from_be_bytes([l4[2], l4[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::MacAddr;
    use std::net::Ipv4Addr;

    fn tcp_to(dst: Ipv4Addr, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        ethernet::write_header(&mut f, MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]), ETHERTYPE_IPV4);
        let h =
            ipv4::Header { src: Ipv4Addr::new(10, 0, 0, 2), dst, protocol: ipv4::PROTO_TCP, ttl: 64, payload_len: 20 };
        ipv4::write_header(&mut f[14..], &h);
        f[34 + 2..34 + 4].copy_from_slice(&dport.to_be_bytes());
        f
    }

    fn rule(id: u32, scope: Scope, dport: Option<u16>, action: Action) -> Rule {
        Rule { id, scope, src: None, dst: None, proto: Some(ipv4::PROTO_TCP), dport, action }
    }

    #[test]
    fn first_match_wins_within_scope() {
        let rules = [rule(1, Scope::Uplink, Some(8080), Action::Drop), rule(2, Scope::Network(1), None, Action::Allow)];
        let f = tcp_to(Ipv4Addr::new(192, 0, 2, 2), 8080);
        assert_eq!(verdict(&rules, Entry::Uplink, &f), Some(Action::Drop));
        assert_eq!(verdict(&rules, Entry::Network(1), &f), Some(Action::Allow));
        assert_eq!(verdict(&rules, Entry::Network(2), &f), None);
        let other_port = tcp_to(Ipv4Addr::new(192, 0, 2, 2), 80);
        assert_eq!(verdict(&rules, Entry::Uplink, &other_port), None);
        let allow_first =
            [rule(1, Scope::Everywhere, None, Action::Allow), rule(2, Scope::Everywhere, None, Action::Drop)];
        assert_eq!(verdict(&allow_first, Entry::Uplink, &f), Some(Action::Allow));
    }

    #[test]
    fn matches_addresses() {
        let mut r = rule(1, Scope::Everywhere, None, Action::Drop);
        r.dst = Some("192.0.2.0/24".parse().unwrap());
        assert_eq!(verdict(&[r.clone()], Entry::Uplink, &tcp_to(Ipv4Addr::new(192, 0, 2, 9), 1)), Some(Action::Drop));
        assert_eq!(verdict(&[r], Entry::Uplink, &tcp_to(Ipv4Addr::new(198, 51, 100, 9), 1)), None);
    }

    fn tcp6_to(dst: &str, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 20];
        ethernet::write_header(&mut f, MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]), ETHERTYPE_IPV6);
        let (src, dst) = ("2001:db8::2".parse().unwrap(), dst.parse().unwrap());
        let h = ipv6::Header { src, dst, next_header: ipv4::PROTO_TCP, hop_limit: 64, payload_len: 20 };
        ipv6::write_header(&mut f[14..], &h);
        f[54 + 2..54 + 4].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn neighbour_discovery_is_never_matched() {
        let mut f = vec![0u8; 14 + 40 + 24];
        ethernet::write_header(&mut f, MacAddr([0x33, 0x33, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]), ETHERTYPE_IPV6);
        let (src, dst) = ("fe80::2".parse().unwrap(), "ff02::1".parse().unwrap());
        let h = ipv6::Header { src, dst, next_header: ipv6::NEXT_ICMPV6, hop_limit: 255, payload_len: 24 };
        ipv6::write_header(&mut f[14..], &h);
        f[54] = icmpv6::TYPE_NEIGHBOR_ADVERT;
        let drop_icmp = Rule { proto: Some(ipv4::PROTO_ICMP), ..rule(1, Scope::Everywhere, None, Action::Drop) };
        assert_eq!(verdict(std::slice::from_ref(&drop_icmp), Entry::Uplink, &f), None);
        f[54] = icmpv6::TYPE_ECHO_REQUEST;
        assert_eq!(verdict(&[drop_icmp], Entry::Uplink, &f), Some(Action::Drop), "other ICMPv6 is");
    }

    #[test]
    fn rules_speak_of_ipv6_too() {
        let any_family = rule(1, Scope::Everywhere, Some(8080), Action::Drop);
        assert_eq!(verdict(&[any_family], Entry::Uplink, &tcp6_to("2001:db8:9::9", 8080)), Some(Action::Drop));
        let mut v6 = rule(1, Scope::Everywhere, None, Action::Drop);
        v6.dst = Some("2001:db8:9::/48".parse().unwrap());
        assert_eq!(verdict(&[v6.clone()], Entry::Uplink, &tcp6_to("2001:db8:9::9", 1)), Some(Action::Drop));
        assert_eq!(verdict(&[v6.clone()], Entry::Uplink, &tcp6_to("2001:db8:8::9", 1)), None);
        assert_eq!(verdict(&[v6], Entry::Uplink, &tcp_to(Ipv4Addr::new(192, 0, 2, 9), 1)), None, "other family");
        let mut v4 = rule(1, Scope::Everywhere, None, Action::Drop);
        v4.dst = Some("0.0.0.0/0".parse().unwrap());
        assert_eq!(verdict(&[v4], Entry::Uplink, &tcp6_to("2001:db8:9::9", 1)), None, "an IPv4 rule spares IPv6");
    }
}
