//! Pipeline tests of a network's service port (the embedded DNS server's
//! TAP): queries for the gateway's port 53 reach it, nothing else does, and
//! its answers reach the containers, also with inter-container
//! communication off. In-memory ports, a switch with no worker threads.

use ports::mem::MemPort;
use proto::ethernet::{self, ETHERTYPE_IPV4};
use proto::{arp, icmp, ipv4, MacAddr};
use std::net::Ipv4Addr;
use std::sync::Arc;
use switch::{NetworkSpec, PortSpec, Switch};

const GW: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

struct Host {
    port: Arc<MemPort>,
    mac: MacAddr,
    ip: Ipv4Addr,
}

fn gw_mac() -> MacAddr {
    MacAddr::from_ipv4(GW)
}

fn network(sw: &Switch, index: u32, icc: bool) {
    let gateway = Ipv4Addr::new(10, index as u8, 0, 1);
    let subnet = format!("10.{index}.0.0/16").parse().unwrap();
    let spec = NetworkSpec { icc, ..NetworkSpec::bridge(index, &format!("net{index}"), subnet, gateway) };
    sw.add_network(spec).unwrap();
}

fn host(sw: &Switch, net: u32, last: u8) -> Host {
    let port = Arc::new(MemPort::new(64));
    let ip = Ipv4Addr::new(10, net as u8, 0, last);
    let mac = MacAddr::from_ipv4(ip);
    let spec =
        PortSpec { network: net, name: format!("h{last}"), mac, ipv4: ip, ipv6: None, queues: vec![port.clone()] };
    sw.add_port(spec).unwrap();
    Host { port, mac, ip }
}

/// The service port of network 1: the gateway's MAC and address.
fn service(sw: &Switch) -> Host {
    let port = Arc::new(MemPort::new(64));
    let spec = PortSpec {
        network: 1,
        name: "svc/dns1".into(),
        mac: gw_mac(),
        ipv4: GW,
        ipv6: None,
        queues: vec![port.clone()],
    };
    sw.set_service_port(spec).unwrap();
    Host { port, mac: gw_mac(), ip: GW }
}

/// Network 1 (ICC as given) with hosts a and b and a service port; network
/// 2 with host x.
fn lab(icc: bool) -> (Switch, Host, Host, Host, Host) {
    let sw = Switch::start(0).unwrap();
    network(&sw, 1, icc);
    network(&sw, 2, true);
    let (a, b) = (host(&sw, 1, 2), host(&sw, 1, 3));
    let x = host(&sw, 2, 2);
    let svc = service(&sw);
    (sw, a, b, x, svc)
}

/// An IPv4 frame carrying `l4` (a UDP or TCP header and payload).
fn ipv4_frame(src: (MacAddr, Ipv4Addr), dst: (MacAddr, Ipv4Addr), protocol: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20];
    ethernet::write_header(&mut f, dst.0, src.0, ETHERTYPE_IPV4);
    let h = ipv4::Header { src: src.1, dst: dst.1, protocol, ttl: 64, payload_len: l4.len() };
    ipv4::write_header(&mut f[14..], &h);
    f.extend_from_slice(l4);
    f
}

/// A UDP header (no checksum) and payload.
fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// A TCP SYN header (checksum left zero: the switch forwards it unchanged).
fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t
}

fn query(from: &Host, dport: u16) -> Vec<u8> {
    ipv4_frame((from.mac, from.ip), (gw_mac(), GW), ipv4::PROTO_UDP, &udp(40000, dport, b"\x12\x34query"))
}

fn answer_to(to: &Host) -> Vec<u8> {
    ipv4_frame((gw_mac(), GW), (to.mac, to.ip), ipv4::PROTO_UDP, &udp(53, 40000, b"\x12\x34answer"))
}

fn send(sw: &Switch, from: &Host, frame: Vec<u8>) {
    assert!(from.port.inject(frame));
    sw.poll_all();
}

fn arp_request(from: &Host, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    let me = arp::Host { mac: from.mac, ip: from.ip };
    let them = arp::Host { mac: MacAddr::ZERO, ip: target };
    arp::write_frame(&mut f, arp::OP_REQUEST, me, them, MacAddr::BROADCAST);
    f
}

#[test]
fn udp_and_tcp_to_the_gateways_port_53_reach_the_service_port_unchanged() {
    let (sw, a, b, _x, svc) = lab(true);
    let q = query(&a, 53);
    send(&sw, &a, q.clone());
    assert_eq!(svc.port.take_all(), vec![q], "the UDP query, byte for byte");
    let syn = ipv4_frame((a.mac, a.ip), (gw_mac(), GW), ipv4::PROTO_TCP, &tcp_syn(40001, 53));
    send(&sw, &a, syn.clone());
    assert_eq!(svc.port.take_all(), vec![syn], "the TCP SYN");
    assert!(a.port.take_all().is_empty() && b.port.take_all().is_empty());
    assert_eq!(sw.report().drops.no_route, 0);
}

#[test]
fn other_traffic_for_the_gateway_stays_with_the_switch() {
    let (sw, a, b, _x, svc) = lab(true);
    // Another port of the gateway, and ICMP: not the service's.
    send(&sw, &a, query(&a, 54));
    let syn = ipv4_frame((a.mac, a.ip), (gw_mac(), GW), ipv4::PROTO_TCP, &tcp_syn(40001, 80));
    send(&sw, &a, syn);
    assert_eq!(sw.report().drops.no_route, 2);
    // Ping of the gateway: answered by the switch on the asking port.
    let mut req = vec![0u8; 128];
    let len = icmp::write_echo_request(&mut req, (a.mac, a.ip), (gw_mac(), GW), 7, 1, b"ping");
    req.truncate(len);
    send(&sw, &a, req);
    let replies = a.port.take_all();
    assert_eq!(replies.len(), 1, "the switch answers ping to the gateway");
    let ip = ipv4::Packet::parse(ethernet::Frame::parse(&replies[0]).unwrap().payload()).unwrap();
    assert_eq!((ip.src(), ip.payload()[0]), (GW, icmp::TYPE_ECHO_REPLY));
    // Port 53 of an address beyond the gateway is routed, not served.
    let beyond =
        ipv4_frame((a.mac, a.ip), (gw_mac(), Ipv4Addr::new(192, 0, 2, 53)), ipv4::PROTO_UDP, &udp(40000, 53, b"q"));
    send(&sw, &a, beyond);
    // A later fragment has no ports to judge by.
    let mut later = query(&a, 53);
    later[14 + 6..14 + 8].copy_from_slice(&0x0010u16.to_be_bytes());
    let sum = proto::checksum::compute(&{
        let mut h = later[14..34].to_vec();
        h[10..12].fill(0);
        h
    });
    later[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    send(&sw, &a, later);
    // ARP for the gateway: the proxy answers, the service never sees it.
    send(&sw, &a, arp_request(&a, GW));
    assert_eq!(a.port.take_all().len(), 1, "ARP for the gateway is answered");
    assert!(svc.port.take_all().is_empty(), "the service port got something not its own");
    assert!(b.port.take_all().is_empty());
}

#[test]
fn the_service_port_takes_no_part_in_flooding() {
    let (sw, a, b, _x, svc) = lab(true);
    send(
        &sw,
        &a,
        ipv4_frame((a.mac, a.ip), (MacAddr::BROADCAST, Ipv4Addr::BROADCAST), ipv4::PROTO_UDP, &udp(1, 53, b"")),
    );
    send(&sw, &a, ipv4_frame((a.mac, a.ip), (MacAddr([2, 9, 9, 9, 9, 9]), GW), ipv4::PROTO_UDP, &udp(1, 53, b"")));
    send(&sw, &a, arp_request(&a, Ipv4Addr::new(10, 1, 0, 99)));
    assert_eq!(b.port.take_all().len(), 3, "broadcast, unknown unicast and ARP flood to b");
    assert!(svc.port.take_all().is_empty(), "but never to the service port");
    // What the service sends to everyone goes nowhere.
    send(
        &sw,
        &svc,
        ipv4_frame((svc.mac, GW), (MacAddr::BROADCAST, Ipv4Addr::BROADCAST), ipv4::PROTO_UDP, &udp(53, 1, b"")),
    );
    assert!(a.port.take_all().is_empty() && b.port.take_all().is_empty());
    // Its MAC is not learned onto it: the gateway's MAC stays the switch's.
    send(&sw, &svc, answer_to(&a));
    assert!(sw.fdb_rows(1).unwrap().iter().all(|r| r.mac != gw_mac().to_string()));
}

fn check_answers_reach_the_asker(icc: bool) {
    let (sw, a, b, x, svc) = lab(icc);
    send(&sw, &a, query(&a, 53));
    assert_eq!(svc.port.take_all().len(), 1);
    let answer = answer_to(&a);
    send(&sw, &svc, answer.clone());
    assert_eq!(a.port.take_all(), vec![answer], "the answer, unchanged");
    assert!(b.port.take_all().is_empty() && x.port.take_all().is_empty());
    // The service's kernel resolves the asker by ARP: the proxy answers.
    send(&sw, &svc, arp_request(&svc, a.ip));
    let replies = svc.port.take_all();
    assert_eq!(replies.len(), 1, "ARP from the service port is answered");
    let reply = arp::Packet::parse(ethernet::Frame::parse(&replies[0]).unwrap().payload()).unwrap();
    assert_eq!((reply.sender_ip(), reply.sender_mac()), (a.ip, a.mac));
    assert!(a.port.take_all().is_empty() && b.port.take_all().is_empty(), "and not flooded");
    // Never to another network's container, even by its MAC.
    send(&sw, &svc, answer_to(&x));
    assert!(x.port.take_all().is_empty());
    assert_eq!(sw.report().drops.icc, 0);
}

#[test]
fn answers_reach_the_asker() {
    check_answers_reach_the_asker(true);
}

#[test]
fn answers_reach_the_asker_with_icc_off() {
    check_answers_reach_the_asker(false);
}

#[test]
fn with_icc_off_containers_still_do_not_reach_each_other() {
    let (sw, a, b, _x, _svc) = lab(false);
    let to_b = ipv4_frame((a.mac, a.ip), (b.mac, b.ip), ipv4::PROTO_UDP, &udp(1, 53, b""));
    send(&sw, &a, to_b);
    assert!(b.port.take_all().is_empty());
    assert_eq!(sw.report().drops.icc, 1);
}

#[test]
fn without_a_service_port_queries_are_dropped_and_the_network_can_go() {
    let (sw, a, _b, _x, svc) = lab(true);
    assert!(sw
        .set_service_port(PortSpec {
            network: 1,
            name: "again".into(),
            mac: gw_mac(),
            ipv4: GW,
            ipv6: None,
            queues: vec![Arc::new(MemPort::new(4))],
        })
        .is_err());
    for p in sw.report().ports.iter().filter(|p| p.network == "net1" && p.name != "svc/dns1") {
        sw.remove_port(p.id).unwrap();
    }
    assert!(sw.remove_network(1).unwrap_err().contains("service port"));
    sw.remove_service_port(1).unwrap();
    assert!(sw.report().ports.iter().all(|p| p.name != "svc/dns1"));
    assert!(sw.remove_service_port(1).is_err());
    send(&sw, &a, query(&a, 53));
    assert!(svc.port.take_all().is_empty());
    sw.remove_network(1).unwrap();
}
