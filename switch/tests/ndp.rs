//! IPv6 pipeline tests: the NDP proxy, DAD, the gateway's fe80::1 and
//! ICMPv6 echo, and the RA guard, with in-memory ports.

use ports::mem::MemPort;
use proto::ethernet::{self, ETHERTYPE_IPV6};
use proto::{icmpv6, ipv6, ndp, MacAddr};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use switch::{Ipv6Spec, NetworkSpec, PortSpec, Switch};

const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

struct Host {
    port: Arc<MemPort>,
    mac: MacAddr,
    ip6: Ipv6Addr,
}

impl Host {
    fn link_local(&self) -> Ipv6Addr {
        ipv6::link_local_from_mac(self.mac.octets())
    }

    fn ndp(&self) -> ndp::Host {
        ndp::Host { mac: self.mac, ip: self.ip6 }
    }
}

fn gateway_mac() -> MacAddr {
    MacAddr::from_ipv4(Ipv4Addr::new(10, 1, 0, 1))
}

fn network(sw: &Switch, index: u32, dual_stack: bool) {
    network_with(sw, index, dual_stack, true)
}

fn network_with(sw: &Switch, index: u32, dual_stack: bool, icc: bool) {
    let gateway = Ipv4Addr::new(10, index as u8, 0, 1);
    let subnet = format!("10.{index}.0.0/16").parse().unwrap();
    sw.add_network(NetworkSpec {
        icc,
        ipv6: dual_stack.then(|| Ipv6Spec { subnet: "2001:db8:1::/64".parse().unwrap(), gateway: GATEWAY6 }),
        ..NetworkSpec::bridge(index, &format!("net{index}"), subnet, gateway)
    })
    .unwrap();
}

fn host(sw: &Switch, net: u32, last: u8) -> Host {
    let port = Arc::new(MemPort::new(1024));
    let ipv4 = Ipv4Addr::new(10, net as u8, 0, last);
    let mac = MacAddr::from_ipv4(ipv4);
    let ip6 = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last as u16);
    let spec =
        PortSpec { network: net, name: format!("h{last}"), mac, ipv4, ipv6: Some(ip6), queues: vec![port.clone()] };
    sw.add_port(spec).unwrap();
    Host { port, mac, ip6 }
}

/// One dual-stack network with hosts a, b, c.
fn topology() -> (Switch, Host, Host, Host) {
    let sw = Switch::start(0).unwrap();
    network(&sw, 1, true);
    let (a, b, c) = (host(&sw, 1, 2), host(&sw, 1, 3), host(&sw, 1, 4));
    (sw, a, b, c)
}

fn send(sw: &Switch, from: &Host, frame: Vec<u8>) {
    assert!(from.port.inject(frame));
    sw.poll_all();
}

fn solicit(from: ndp::Host, target: Ipv6Addr) -> Vec<u8> {
    let mut f = vec![0u8; 128];
    let n = ndp::write_solicit(&mut f, from, target);
    f.truncate(n);
    f
}

/// The advertisement in `frame`: (eth dst, ip dst, target, flags, target's MAC option).
fn advert(frame: &[u8]) -> (MacAddr, Ipv6Addr, Ipv6Addr, u8, MacAddr) {
    let eth = ethernet::Frame::parse(frame).unwrap();
    let ip = ipv6::Packet::parse(eth.payload()).unwrap();
    let msg = icmpv6::message(&ip).unwrap();
    assert_eq!(msg[0], icmpv6::TYPE_NEIGHBOR_ADVERT);
    assert!(icmpv6::checksum_ok(&ip, msg), "advertisement checksum");
    assert_eq!(ip.hop_limit(), 255);
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&msg[8..24]).unwrap());
    let mac = MacAddr(msg[26..32].try_into().unwrap());
    (eth.dst(), ip.dst(), target, msg[4], mac)
}

#[test]
fn solicitation_for_an_endpoint_is_answered_on_the_asking_port_only() {
    let (sw, a, b, c) = topology();
    for target in [b.ip6, b.link_local()] {
        send(&sw, &a, solicit(a.ndp(), target));
        let got = a.port.take_all();
        assert_eq!(got.len(), 1, "one answer for {target}");
        let (eth_dst, ip_dst, answered, flags, mac) = advert(&got[0]);
        assert_eq!((eth_dst, ip_dst, answered, mac), (a.mac, a.ip6, target, b.mac));
        assert_eq!(flags, ndp::FLAG_SOLICITED | ndp::FLAG_OVERRIDE);
        assert!(b.port.take_all().is_empty() && c.port.take_all().is_empty(), "not flooded");
    }
}

#[test]
fn solicitation_for_the_gateway_is_answered_as_a_router() {
    let (sw, a, b, _c) = topology();
    for target in [ipv6::LINK_LOCAL_GATEWAY, GATEWAY6] {
        send(&sw, &a, solicit(a.ndp(), target));
        let got = a.port.take_all();
        let (_, _, answered, flags, mac) = advert(&got[0]);
        assert_eq!((answered, mac), (target, gateway_mac()));
        assert_eq!(flags, ndp::FLAG_ROUTER | ndp::FLAG_SOLICITED | ndp::FLAG_OVERRIDE);
        assert!(b.port.take_all().is_empty());
    }
}

#[test]
fn dad_for_a_taken_address_is_told_of_the_duplicate() {
    let (sw, a, b, _c) = topology();
    let probe = ndp::Host { mac: a.mac, ip: Ipv6Addr::UNSPECIFIED };
    for taken in [b.ip6, GATEWAY6, ipv6::LINK_LOCAL_GATEWAY] {
        send(&sw, &a, solicit(probe, taken));
        let got = a.port.take_all();
        assert_eq!(got.len(), 1, "DAD for {taken} answered");
        let (eth_dst, ip_dst, answered, flags, _) = advert(&got[0]);
        assert_eq!((eth_dst, ip_dst, answered), (ndp::multicast_mac(ipv6::ALL_NODES), ipv6::ALL_NODES, taken));
        assert_eq!(flags & ndp::FLAG_SOLICITED, 0, "RFC 4861 7.2.4: unsolicited to all nodes");
        assert!(b.port.take_all().is_empty());
    }
}

#[test]
fn dad_for_a_free_or_own_address_is_not_blocked() {
    let (sw, a, b, c) = topology();
    let probe = ndp::Host { mac: a.mac, ip: Ipv6Addr::UNSPECIFIED };
    let free: Ipv6Addr = "2001:db8:1::99".parse().unwrap();
    for target in [a.ip6, a.link_local(), free] {
        send(&sw, &a, solicit(probe, target));
        assert!(a.port.take_all().is_empty(), "nobody claims {target}");
        assert_eq!(b.port.take_all().len(), 1, "the probe goes on to the others");
        assert_eq!(c.port.take_all().len(), 1);
    }
}

#[test]
fn the_gateway_answers_icmpv6_echo_on_both_addresses() {
    let (sw, a, b, _c) = topology();
    for (dst, src) in [(ipv6::LINK_LOCAL_GATEWAY, a.link_local()), (GATEWAY6, a.ip6)] {
        let mut f = vec![0u8; 128];
        let n = icmpv6::write_echo_request(&mut f, (a.mac, src), (gateway_mac(), dst), 9, 1, b"ping");
        f.truncate(n);
        send(&sw, &a, f);
        let got = a.port.take_all();
        assert_eq!(got.len(), 1, "echo reply from {dst}");
        let eth = ethernet::Frame::parse(&got[0]).unwrap();
        let ip = ipv6::Packet::parse(eth.payload()).unwrap();
        let msg = icmpv6::message(&ip).unwrap();
        assert_eq!((eth.src(), ip.src(), ip.dst(), msg[0]), (gateway_mac(), dst, src, icmpv6::TYPE_ECHO_REPLY));
        assert!(icmpv6::checksum_ok(&ip, msg));
        assert!(b.port.take_all().is_empty());
    }
}

#[test]
fn router_advertisements_from_containers_are_dropped_and_solicitations_taken_in() {
    let (sw, a, b, _c) = topology();
    let icmp = |kind: u8| {
        let mut f = vec![0u8; 14 + 40 + 16];
        ethernet::write_header(&mut f, ndp::multicast_mac(ipv6::ALL_NODES), a.mac, ETHERTYPE_IPV6);
        let (src, dst) = (a.link_local(), ipv6::ALL_NODES);
        let h = ipv6::Header { src, dst, next_header: ipv6::NEXT_ICMPV6, hop_limit: 255, payload_len: 16 };
        ipv6::write_header(&mut f[14..], &h);
        f[54] = kind;
        icmpv6::seal(src, dst, &mut f[54..]);
        f
    };
    send(&sw, &a, icmp(icmpv6::TYPE_ROUTER_ADVERT));
    assert!(b.port.take_all().is_empty(), "rogue RA not flooded");
    assert_eq!(sw.report().drops.router_advert, 1);
    send(&sw, &a, icmp(icmpv6::TYPE_ROUTER_SOLICIT));
    assert!(b.port.take_all().is_empty() && a.port.take_all().is_empty());
}

#[test]
fn broken_solicitations_are_counted_as_malformed() {
    let (sw, a, b, _c) = topology();
    let mut f = solicit(a.ndp(), b.ip6);
    f[14 + 7] = 64; // hop limit: not on-link
    send(&sw, &a, f);
    assert!(a.port.take_all().is_empty() && b.port.take_all().is_empty());
    assert_eq!(sw.report().drops.malformed, 1);
}

#[test]
fn ipv6_unicast_between_endpoints_is_switched() {
    let (sw, a, b, c) = topology();
    let mut f = vec![0u8; 128];
    let n = icmpv6::write_echo_request(&mut f, (a.mac, a.ip6), (b.mac, b.ip6), 1, 1, b"hi");
    f.truncate(n);
    send(&sw, &a, f.clone());
    assert_eq!(b.port.take_all(), vec![f]);
    assert!(c.port.take_all().is_empty());
}

#[test]
fn ipv4_only_networks_leave_ndp_to_the_namespaces() {
    let sw = Switch::start(0).unwrap();
    network(&sw, 2, false);
    let (a, b) = (host(&sw, 2, 2), host(&sw, 2, 3));
    send(&sw, &a, solicit(a.ndp(), b.ip6));
    assert!(a.port.take_all().is_empty(), "no proxy answer");
    assert_eq!(b.port.take_all().len(), 1, "flooded like any multicast");
}

#[test]
fn with_icc_off_ipv6_reaches_only_the_gateway() {
    let sw = Switch::start(0).unwrap();
    network_with(&sw, 1, true, false);
    let (a, b) = (host(&sw, 1, 2), host(&sw, 1, 3));
    let mut f = vec![0u8; 128];
    let n = icmpv6::write_echo_request(&mut f, (a.mac, a.ip6), (b.mac, b.ip6), 1, 1, b"hi");
    send(&sw, &a, f[..n].to_vec());
    assert!(b.port.take_all().is_empty(), "container to container with ICC off");
    assert_eq!(sw.report().drops.icc, 1);
    let n = icmpv6::write_echo_request(&mut f, (a.mac, a.ip6), (gateway_mac(), GATEWAY6), 1, 1, b"hi");
    send(&sw, &a, f[..n].to_vec());
    assert_eq!(a.port.take_all().len(), 1, "the gateway still answers");
}

/// An unsolicited advertisement from `from` claiming `target` (as DAD's
/// announcement or a cache-poisoning attempt looks).
fn advertise(from: &Host, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut f = vec![0u8; 128];
    let all = ndp::Host { mac: ndp::multicast_mac(ipv6::ALL_NODES), ip: ipv6::ALL_NODES };
    let n = ndp::write_advert(&mut f, ndp::Host { mac: from.mac, ip: target }, all, ndp::FLAG_OVERRIDE);
    f.truncate(n);
    // write_advert sends from the target address; a liar may use another.
    f[14 + 8..14 + 24].copy_from_slice(&src.octets());
    let (s, d) = (src, ipv6::ALL_NODES);
    icmpv6::seal(s, d, &mut f[54..]);
    f
}

#[test]
fn a_container_cannot_claim_the_gateways_or_anothers_address() {
    let (sw, a, b, c) = topology();
    for target in [ipv6::LINK_LOCAL_GATEWAY, GATEWAY6, b.ip6, b.link_local()] {
        send(&sw, &a, advertise(&a, a.link_local(), target));
        assert!(b.port.take_all().is_empty() && c.port.take_all().is_empty(), "a claim to {target} was flooded");
    }
    send(&sw, &a, solicit(ndp::Host { mac: a.mac, ip: b.ip6 }, c.ip6));
    assert!(a.port.take_all().is_empty(), "a solicitation from B's address was answered");
    assert_eq!(sw.report().drops.spoofed, 5);
    // Announcing its own address is fine.
    send(&sw, &a, advertise(&a, a.link_local(), a.ip6));
    assert_eq!(b.port.take_all().len(), 1, "an endpoint's own announcement goes on");
}
