//! Pipeline tests: a switch with no worker threads, driven by `poll_all`,
//! with in-memory ports standing in for TAPs.

use ports::mem::MemPort;
use proto::ethernet::{self, ETHERTYPE_IPV4};
use proto::{arp, icmp, ipv4, MacAddr};
use std::net::Ipv4Addr;
use std::sync::Arc;
use switch::stats::DropReport;
use switch::{NetworkSpec, PortSpec, Switch};

struct Host {
    port: Arc<MemPort>,
    mac: MacAddr,
    ip: Ipv4Addr,
}

fn ip(a: u8, b: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, a, 0, b)
}

fn network(sw: &Switch, index: u32) {
    let gateway = ip(index as u8, 1);
    let subnet = format!("10.{index}.0.0/16").parse().unwrap();
    sw.add_network(NetworkSpec::bridge(index, &format!("net{index}"), subnet, gateway)).unwrap();
}

fn host(sw: &Switch, net: u32, last: u8) -> Host {
    let port = Arc::new(MemPort::new(1024));
    let ip = ip(net as u8, last);
    let mac = MacAddr::from_ipv4(ip);
    let spec =
        PortSpec { network: net, name: format!("h{last}"), mac, ipv4: ip, ipv6: None, queues: vec![port.clone()] };
    sw.add_port(spec).unwrap();
    Host { port, mac, ip }
}

/// Two networks: hosts a, b, c on network 1, host x on network 2.
fn topology() -> (Switch, Host, Host, Host, Host) {
    let sw = Switch::start(0).unwrap();
    network(&sw, 1);
    network(&sw, 2);
    let (a, b, c) = (host(&sw, 1, 2), host(&sw, 1, 3), host(&sw, 1, 4));
    let x = host(&sw, 2, 2);
    (sw, a, b, c, x)
}

fn udp_like(src: &Host, dst_mac: MacAddr, dst_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8];
    ethernet::write_header(&mut f, dst_mac, src.mac, ETHERTYPE_IPV4);
    let h = ipv4::Header { src: src.ip, dst: dst_ip, protocol: ipv4::PROTO_UDP, ttl: 64, payload_len: 8 };
    ipv4::write_header(&mut f[14..], &h);
    f
}

fn arp_request(from: &Host, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    let me = arp::Host { mac: from.mac, ip: from.ip };
    let them = arp::Host { mac: MacAddr::ZERO, ip: target };
    arp::write_frame(&mut f, arp::OP_REQUEST, me, them, MacAddr::BROADCAST);
    f
}

fn send(sw: &Switch, from: &Host, frame: Vec<u8>) {
    assert!(from.port.inject(frame));
    sw.poll_all();
}

fn drops(sw: &Switch) -> DropReport {
    sw.report().drops
}

#[test]
fn unknown_unicast_floods_within_its_network_only() {
    let (sw, a, b, c, x) = topology();
    let stranger = MacAddr([2, 9, 9, 9, 9, 9]);
    send(&sw, &a, udp_like(&a, stranger, ip(1, 99)));
    assert_eq!(b.port.take_all().len(), 1);
    assert_eq!(c.port.take_all().len(), 1);
    assert!(a.port.take_all().is_empty(), "never back out of the port it came in on");
    assert!(x.port.take_all().is_empty(), "never into another network");
}

#[test]
fn known_unicast_goes_to_its_port_only() {
    let (sw, a, b, c, _x) = topology();
    // Endpoint MACs are static entries: no flooding even before any traffic.
    send(&sw, &a, udp_like(&a, b.mac, b.ip));
    assert_eq!(b.port.take_all().len(), 1);
    assert!(c.port.take_all().is_empty());
}

#[test]
fn learns_a_mac_seen_as_source() {
    let (sw, a, b, c, _x) = topology();
    let behind_b = Host { port: b.port.clone(), mac: MacAddr([2, 7, 7, 7, 7, 7]), ip: ip(1, 77) };
    send(&sw, &b, udp_like(&behind_b, a.mac, a.ip));
    a.port.take_all();
    send(&sw, &a, udp_like(&a, behind_b.mac, behind_b.ip));
    assert_eq!(b.port.take_all().len(), 1);
    assert!(c.port.take_all().is_empty(), "learned: not flooded");
    let rows = sw.fdb_rows(1).unwrap();
    assert!(rows.iter().any(|r| r.mac == "02:07:07:07:07:07" && r.kind == "learned"));
}

#[test]
fn does_not_forward_across_networks_even_to_a_known_mac() {
    let (sw, a, _b, _c, x) = topology();
    send(&sw, &a, udp_like(&a, x.mac, x.ip));
    assert!(x.port.take_all().is_empty());
}

#[test]
fn arp_for_a_known_endpoint_is_answered_not_flooded() {
    let (sw, a, b, c, _x) = topology();
    send(&sw, &a, arp_request(&a, b.ip));
    assert!(b.port.take_all().is_empty(), "not flooded to the target");
    assert!(c.port.take_all().is_empty(), "not flooded to a bystander");
    let replies = a.port.take_all();
    assert_eq!(replies.len(), 1);
    let eth = ethernet::Frame::parse(&replies[0]).unwrap();
    assert_eq!(eth.dst(), a.mac);
    let reply = arp::Packet::parse(eth.payload()).unwrap();
    assert_eq!(reply.op(), arp::OP_REPLY);
    assert_eq!((reply.sender_ip(), reply.sender_mac()), (b.ip, b.mac));
    assert_eq!((reply.target_ip(), reply.target_mac()), (a.ip, a.mac));
}

#[test]
fn arp_for_the_gateway_is_answered() {
    let (sw, a, b, _c, _x) = topology();
    send(&sw, &a, arp_request(&a, ip(1, 1)));
    let replies = a.port.take_all();
    let eth = ethernet::Frame::parse(&replies[0]).unwrap();
    let reply = arp::Packet::parse(eth.payload()).unwrap();
    assert_eq!(reply.sender_mac(), MacAddr::from_ipv4(ip(1, 1)));
    assert!(b.port.take_all().is_empty());
}

#[test]
fn arp_for_an_unknown_address_floods_and_probes_pass() {
    let (sw, a, b, c, x) = topology();
    send(&sw, &a, arp_request(&a, ip(1, 200)));
    assert_eq!(b.port.take_all().len(), 1);
    assert_eq!(c.port.take_all().len(), 1);
    assert!(x.port.take_all().is_empty());
    // A host asking for its own address (duplicate detection) is not answered.
    send(&sw, &a, arp_request(&a, a.ip));
    assert!(a.port.take_all().is_empty());
}

#[test]
fn the_gateway_answers_ping() {
    let (sw, a, b, _c, _x) = topology();
    let gw = (MacAddr::from_ipv4(ip(1, 1)), ip(1, 1));
    let mut req = vec![0u8; 128];
    let len = icmp::write_echo_request(&mut req, (a.mac, a.ip), gw, 42, 7, b"ping!");
    req.truncate(len);
    send(&sw, &a, req);
    let replies = a.port.take_all();
    assert_eq!(replies.len(), 1);
    let eth = ethernet::Frame::parse(&replies[0]).unwrap();
    let ip4 = ipv4::Packet::parse(eth.payload()).unwrap();
    assert_eq!((ip4.src(), ip4.dst()), (gw.1, a.ip));
    assert_eq!(ip4.payload()[0], icmp::TYPE_ECHO_REPLY);
    assert!(b.port.take_all().is_empty());
}

#[test]
fn traffic_beyond_the_gateway_is_counted_and_dropped() {
    let (sw, a, b, _c, _x) = topology();
    let gw_mac = MacAddr::from_ipv4(ip(1, 1));
    send(&sw, &a, udp_like(&a, gw_mac, Ipv4Addr::new(192, 0, 2, 1)));
    assert!(a.port.take_all().is_empty() && b.port.take_all().is_empty());
    assert_eq!(drops(&sw).no_route, 1);
}

#[test]
fn malformed_frames_are_counted_and_dropped() {
    let (sw, a, b, _c, _x) = topology();
    let good = udp_like(&a, MacAddr::BROADCAST, ip(1, 255));
    let mut lying = good.clone();
    lying[14 + 2..14 + 4].copy_from_slice(&1500u16.to_be_bytes());
    let mut multicast_src = good.clone();
    multicast_src[6] = 0x01;
    let mut llc = good.clone();
    llc[12..14].copy_from_slice(&40u16.to_be_bytes());
    let mut lldp = good.clone();
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    for frame in [vec![0u8; 5], good[..20].to_vec(), lying, multicast_src, llc, arp_request(&a, b.ip)[..30].to_vec()] {
        send(&sw, &a, frame);
    }
    send(&sw, &a, lldp);
    assert!(b.port.take_all().is_empty(), "nothing malformed goes through");
    let d = drops(&sw);
    assert_eq!((d.malformed, d.unsupported_ethertype), (6, 1));
    assert_eq!(sw.report().ports[0].rx_drops, 7);
    // And the switch still forwards.
    send(&sw, &a, good);
    assert_eq!(b.port.take_all().len(), 1);
}

#[test]
fn random_bytes_never_panic() {
    let (sw, a, _b, _c, _x) = topology();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 200) as usize;
        let mut frame: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
        if len > 14 && seed.is_multiple_of(3) {
            frame[12..14].copy_from_slice(&[0x08, (seed % 7) as u8 & 0x06]); // IPv4 or ARP
        }
        send(&sw, &a, frame);
    }
}

#[test]
fn removed_ports_leave_no_fdb_entries() {
    let (sw, a, b, c, _x) = topology();
    let b_id = sw.report().ports.iter().find(|p| p.name == "h3").unwrap().id;
    sw.remove_port(b_id).unwrap();
    assert!(sw.fdb_rows(1).unwrap().iter().all(|r| r.port != b_id));
    send(&sw, &a, udp_like(&a, b.mac, b.ip));
    assert!(b.port.take_all().is_empty());
    assert_eq!(c.port.take_all().len(), 1, "an unknown MAC floods again");
}

#[test]
fn networks_with_ports_cannot_be_removed() {
    let (sw, _a, _b, _c, x) = topology();
    assert!(sw.remove_network(2).is_err());
    drop(x);
    let id = sw.report().ports.iter().find(|p| p.network == "net2").unwrap().id;
    sw.remove_port(id).unwrap();
    sw.remove_network(2).unwrap();
}

#[test]
fn every_queue_of_a_multi_queue_port_is_received() {
    let sw = Switch::start(0).unwrap();
    network(&sw, 1);
    let b = host(&sw, 1, 3);
    let (q0, q1) = (Arc::new(MemPort::new(16)), Arc::new(MemPort::new(16)));
    let a_ip = ip(1, 2);
    let spec = PortSpec {
        network: 1,
        name: "mq".into(),
        mac: MacAddr::from_ipv4(a_ip),
        ipv4: a_ip,
        ipv6: None,
        queues: vec![q0.clone(), q1.clone()],
    };
    sw.add_port(spec).unwrap();
    let a = Host { port: q1.clone(), mac: MacAddr::from_ipv4(a_ip), ip: a_ip };
    send(&sw, &a, udp_like(&a, b.mac, b.ip));
    assert_eq!(b.port.take_all().len(), 1, "a frame on the second queue is switched");
    // Replies leave on one queue of the port (the inline engine is worker 0).
    send(&sw, &b, udp_like(&b, a.mac, a.ip));
    assert_eq!(q0.take_all().len() + q1.take_all().len(), 1);
}

#[test]
fn with_icc_off_containers_reach_only_the_gateway() {
    let sw = Switch::start(0).unwrap();
    let gateway = ip(1, 1);
    let spec = NetworkSpec { icc: false, ..NetworkSpec::bridge(1, "quiet", "10.1.0.0/16".parse().unwrap(), gateway) };
    sw.add_network(spec).unwrap();
    let (a, b) = (host(&sw, 1, 2), host(&sw, 1, 3));
    send(&sw, &a, udp_like(&a, b.mac, b.ip));
    send(&sw, &a, udp_like(&a, MacAddr::BROADCAST, ip(1, 255)));
    assert!(b.port.take_all().is_empty(), "no unicast, no broadcast between containers");
    assert_eq!(drops(&sw).icc, 2);

    let gw = (MacAddr::from_ipv4(gateway), gateway);
    let mut req = vec![0u8; 128];
    let len = icmp::write_echo_request(&mut req, (a.mac, a.ip), gw, 1, 1, b"hi");
    req.truncate(len);
    send(&sw, &a, req);
    send(&sw, &a, arp_request(&a, gateway));
    assert_eq!(a.port.take_all().len(), 2, "the gateway answers ping and ARP");
}

#[test]
fn a_container_cannot_claim_the_gateways_or_anothers_address_in_arp() {
    let (sw, a, b, c, _x) = topology();
    for claimed in [ip(1, 1), b.ip] {
        // Gratuitous ARP: sender and target the claimed address.
        let mut f = vec![0u8; 60];
        let liar = arp::Host { mac: a.mac, ip: claimed };
        arp::write_frame(&mut f, arp::OP_REQUEST, liar, liar, MacAddr::BROADCAST);
        send(&sw, &a, f);
        assert!(b.port.take_all().is_empty() && c.port.take_all().is_empty(), "a claim to {claimed} was flooded");
    }
    assert_eq!(drops(&sw).spoofed, 2);
    // Its own gratuitous ARP goes on.
    let mut f = vec![0u8; 60];
    let me = arp::Host { mac: a.mac, ip: a.ip };
    arp::write_frame(&mut f, arp::OP_REQUEST, me, me, MacAddr::BROADCAST);
    send(&sw, &a, f);
    assert_eq!(b.port.take_all().len(), 1);
}
