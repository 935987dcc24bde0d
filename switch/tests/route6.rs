//! IPv6 routed through the uplink, with in-memory ports: containers'
//! packets leave with their own addresses towards the next hop, packets
//! from outside reach the container, the uplink answers neighbour
//! solicitations for containers' addresses, ICMPv6 errors where due.

use ports::mem::MemPort;
use proto::ethernet;
use proto::{icmpv6, ipv6, ndp, MacAddr};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use switch::{Ipv6Spec, NetworkSpec, PortSpec, Switch, UplinkSpec, UplinkSpec6};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const CONTAINER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 1, 0, 0, 2);
const UPLINK_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
const NEXT_HOP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const NEXT_HOP_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
const REMOTE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 99, 0, 0, 0, 0, 7);

struct Lab {
    sw: Switch,
    container: Arc<MemPort>,
    container_mac: MacAddr,
    uplink: Arc<MemPort>,
    uplink_mac: MacAddr,
}

fn gateway_mac() -> MacAddr {
    MacAddr::from_ipv4(GATEWAY)
}

fn lab(internal: bool) -> Lab {
    let sw = Switch::start(0).unwrap();
    sw.add_network(NetworkSpec {
        internal,
        // Inside the uplink's on-link /64: the router reaches containers by NDP.
        ipv6: Some(Ipv6Spec {
            subnet: "2001:db8:1:0:1::/80".parse().unwrap(),
            gateway: "2001:db8:1:0:1::1".parse().unwrap(),
        }),
        ..NetworkSpec::bridge(1, "n", "10.1.0.0/16".parse().unwrap(), GATEWAY)
    })
    .unwrap();
    let container = Arc::new(MemPort::with_offloads(256));
    let container_mac = MacAddr([2, 0x42, 10, 1, 0, 2]);
    let spec = PortSpec {
        network: 1,
        name: "c".into(),
        mac: container_mac,
        ipv4: Ipv4Addr::new(10, 1, 0, 2),
        ipv6: Some(CONTAINER6),
        queues: vec![container.clone()],
    };
    sw.add_port(spec).unwrap();
    let uplink = Arc::new(MemPort::with_offloads(256));
    sw.set_uplink(UplinkSpec {
        name: "up".into(),
        queues: vec![uplink.clone()],
        ip: Ipv4Addr::new(192, 0, 2, 2),
        gateway: Ipv4Addr::new(192, 0, 2, 1),
        mtu: 1500,
        shared_mac: None,
        ipv6: Some(UplinkSpec6 { ip: Some(UPLINK_IP6), gateway: NEXT_HOP6 }),
    })
    .unwrap();
    // At once the switch asks for both next hops (ARP and a solicitation).
    let solicits: Vec<MacAddr> = uplink
        .take_all()
        .iter()
        .filter_map(|f| {
            let eth = ethernet::Frame::parse(f).ok()?;
            let ip = ipv6::Packet::parse(eth.payload()).ok()?;
            let s = ndp::parse_solicit(&ip).ok()??;
            (s.target == NEXT_HOP6 && s.src == UPLINK_IP6).then_some(eth.src())
        })
        .collect();
    assert_eq!(solicits.len(), 1, "one solicitation for the IPv6 next hop at start");
    Lab { sw, container, container_mac, uplink, uplink_mac: solicits[0] }
}

/// An echo request frame of `payload_len` bytes.
fn echo(src: Ipv6Addr, dst: Ipv6Addr, macs: (MacAddr, MacAddr), hop_limit: u8, payload_len: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 40 + 8 + payload_len];
    let n = icmpv6::write_echo_request(&mut f, (macs.0, src), (macs.1, dst), 5, 1, &vec![0x5a; payload_len]);
    f.truncate(n);
    f[14 + 7] = hop_limit;
    f
}

impl Lab {
    /// Publish TCP 8080 on the uplink to port 80 of the container at `ip`.
    fn publish_8080_to(&self, ip: Ipv4Addr) {
        let target = switch::nat::Published { network: 1, ip, port: 80 };
        self.sw.set_published([((6u8, 8080u16), target)].into_iter().collect());
    }

    fn send_from_container(&self, frame: Vec<u8>) {
        self.container.inject(frame);
        self.sw.poll_all();
    }

    fn send_from_uplink(&self, frame: Vec<u8>) {
        self.uplink.inject(frame);
        self.sw.poll_all();
    }

    /// Answer the switch's solicitation for the next hop; returns the uplink MAC.
    fn resolve_next_hop(&self) -> MacAddr {
        let mut na = vec![0u8; 128];
        let to = ndp::Host { mac: self.uplink_mac, ip: UPLINK_IP6 };
        let n = ndp::write_advert(&mut na, ndp::Host { mac: NEXT_HOP_MAC, ip: NEXT_HOP6 }, to, ndp::FLAG_SOLICITED);
        na.truncate(n);
        self.send_from_uplink(na);
        self.uplink_mac
    }
}

#[test]
fn a_containers_packet_leaves_with_its_own_address_towards_the_next_hop() {
    let lab = lab(false);
    let uplink_mac = lab.resolve_next_hop();
    lab.send_from_container(echo(CONTAINER6, REMOTE6, (lab.container_mac, gateway_mac()), 64, 8));
    let out = lab.uplink.take_all();
    assert_eq!(out.len(), 1);
    let eth = ethernet::Frame::parse(&out[0]).unwrap();
    let ip = ipv6::Packet::parse(eth.payload()).unwrap();
    assert_eq!((eth.dst(), eth.src()), (NEXT_HOP_MAC, uplink_mac));
    assert_eq!((ip.src(), ip.dst(), ip.hop_limit()), (CONTAINER6, REMOTE6, 63), "routed, not translated");
    assert!(icmpv6::checksum_ok(&ip, icmpv6::message(&ip).unwrap()));
}

#[test]
fn the_uplink_answers_solicitations_for_container_addresses() {
    let lab = lab(false);
    let mut ns = vec![0u8; 128];
    let n = ndp::write_solicit(&mut ns, ndp::Host { mac: NEXT_HOP_MAC, ip: NEXT_HOP6 }, CONTAINER6);
    ns.truncate(n);
    lab.send_from_uplink(ns);
    let out = lab.uplink.take_all();
    assert_eq!(out.len(), 1, "an advertisement for the container's address");
    let eth = ethernet::Frame::parse(&out[0]).unwrap();
    let ip = ipv6::Packet::parse(eth.payload()).unwrap();
    let msg = icmpv6::message(&ip).unwrap();
    assert_eq!((msg[0], eth.dst(), ip.dst()), (icmpv6::TYPE_NEIGHBOR_ADVERT, NEXT_HOP_MAC, NEXT_HOP6));
    assert_eq!(&msg[8..24], &CONTAINER6.octets());
    assert_eq!(&msg[26..32], &eth.src().0, "answered with the uplink's MAC");
    assert!(lab.container.take_all().is_empty(), "the container never sees the outside's NDP");
}

#[test]
fn a_packet_from_outside_reaches_the_container() {
    let lab = lab(false);
    let uplink_mac = lab.resolve_next_hop();
    lab.uplink.take_all();
    lab.container.take_all();
    lab.send_from_uplink(echo(REMOTE6, CONTAINER6, (NEXT_HOP_MAC, uplink_mac), 60, 8));
    let got = lab.container.take_all();
    assert_eq!(got.len(), 1);
    let eth = ethernet::Frame::parse(&got[0]).unwrap();
    let ip = ipv6::Packet::parse(eth.payload()).unwrap();
    assert_eq!((eth.dst(), eth.src(), ip.hop_limit()), (lab.container_mac, gateway_mac(), 59));
}

#[test]
fn hop_limit_and_size_get_icmpv6_errors() {
    let lab = lab(false);
    lab.resolve_next_hop();
    lab.container.take_all();
    lab.send_from_container(echo(CONTAINER6, REMOTE6, (lab.container_mac, gateway_mac()), 1, 8));
    lab.send_from_container(echo(CONTAINER6, REMOTE6, (lab.container_mac, gateway_mac()), 64, 1600));
    let got = lab.container.take_all();
    assert_eq!(got.len(), 2, "two errors back to the container");
    let kinds: Vec<(u8, u32)> = got
        .iter()
        .map(|f| {
            let ip = ipv6::Packet::parse(&f[14..]).unwrap();
            let msg = icmpv6::message(&ip).unwrap();
            assert!(icmpv6::checksum_ok(&ip, msg));
            assert_eq!((ip.src(), ip.dst()), ("2001:db8:1:0:1::1".parse().unwrap(), CONTAINER6));
            (msg[0], u32::from_be_bytes(msg[4..8].try_into().unwrap()))
        })
        .collect();
    assert_eq!(kinds, [(icmpv6::TYPE_TIME_EXCEEDED, 0), (icmpv6::TYPE_PACKET_TOO_BIG, 1500)]);
    assert!(lab.uplink.take_all().is_empty(), "neither left");
}

#[test]
fn internal_networks_are_neither_routed_nor_proxied() {
    let lab = lab(true);
    lab.send_from_container(echo(CONTAINER6, REMOTE6, (lab.container_mac, gateway_mac()), 64, 8));
    assert!(lab.uplink.take_all().is_empty(), "nothing leaves an internal network");
    let mut ns = vec![0u8; 128];
    let n = ndp::write_solicit(&mut ns, ndp::Host { mac: NEXT_HOP_MAC, ip: NEXT_HOP6 }, CONTAINER6);
    ns.truncate(n);
    lab.send_from_uplink(ns);
    assert!(lab.uplink.take_all().is_empty(), "an internal container's address is not answered for");
}

/// A TCP segment (20-byte header, `flags`, no payload) with a right checksum.
fn tcp(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), macs: (MacAddr, MacAddr), flags: u8) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 40 + 20];
    ethernet::write_header(&mut f, macs.1, macs.0, proto::ethernet::ETHERTYPE_IPV6);
    let h = ipv6::Header { src: src.0, dst: dst.0, next_header: 6, hop_limit: 64, payload_len: 20 };
    ipv6::write_header(&mut f[14..], &h);
    let t = &mut f[54..];
    t[0..2].copy_from_slice(&src.1.to_be_bytes());
    t[2..4].copy_from_slice(&dst.1.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    let sum = proto::checksum::finish(proto::checksum::sum(t, ipv6::pseudo_header_sum(src.0, dst.0, 6, 20)));
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The (src, sport, dst, dport) of a TCP frame, after checking its checksum.
fn tcp_ends(frame: &[u8]) -> (Ipv6Addr, u16, Ipv6Addr, u16) {
    let ip = ipv6::Packet::parse(&frame[14..]).unwrap();
    let t = ip.payload();
    let sum = proto::checksum::sum(t, ipv6::pseudo_header_sum(ip.src(), ip.dst(), 6, t.len()));
    assert_eq!(proto::checksum::finish(sum), 0, "TCP checksum after translation");
    let port = |at: usize| u16::from_be_bytes([t[at], t[at + 1]]);
    (ip.src(), port(0), ip.dst(), port(2))
}

#[test]
fn a_port_published_on_the_uplinks_ipv6_address_reaches_the_container_and_answers_from_it() {
    let lab = lab(false);
    let uplink_mac = lab.resolve_next_hop();
    lab.container.take_all();
    lab.publish_8080_to(Ipv4Addr::new(10, 1, 0, 2));
    lab.send_from_uplink(tcp((REMOTE6, 40000), (UPLINK_IP6, 8080), (NEXT_HOP_MAC, uplink_mac), 0x02));
    let got = lab.container.take_all();
    assert_eq!(got.len(), 1, "the SYN reached the container");
    assert_eq!(tcp_ends(&got[0]), (REMOTE6, 40000, CONTAINER6, 80), "the client's own address is seen");
    lab.send_from_container(tcp((CONTAINER6, 80), (REMOTE6, 40000), (lab.container_mac, gateway_mac()), 0x12));
    let out = lab.uplink.take_all();
    assert_eq!(out.len(), 1);
    assert_eq!(tcp_ends(&out[0]), (UPLINK_IP6, 8080, REMOTE6, 40000), "the answer leaves from the published port");
    assert!(lab.sw.conntrack_rows(None).iter().any(|r| r.nat_src == format!("[{UPLINK_IP6}]:8080")));
    // A port nobody published is not let in.
    lab.send_from_uplink(tcp((REMOTE6, 40001), (UPLINK_IP6, 9999), (NEXT_HOP_MAC, uplink_mac), 0x02));
    assert!(lab.container.take_all().is_empty());
}

#[test]
fn a_container_reaches_a_port_published_on_the_ipv6_uplink_address_hairpin() {
    let lab = lab(false);
    let server = Arc::new(MemPort::with_offloads(256));
    let (server_mac, server6) = (MacAddr([2, 0x42, 10, 1, 0, 3]), Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 1, 0, 0, 3));
    let spec = PortSpec {
        network: 1,
        name: "s".into(),
        mac: server_mac,
        ipv4: Ipv4Addr::new(10, 1, 0, 3),
        ipv6: Some(server6),
        queues: vec![server.clone()],
    };
    lab.sw.add_port(spec).unwrap();
    lab.publish_8080_to(Ipv4Addr::new(10, 1, 0, 3));
    lab.send_from_container(tcp((CONTAINER6, 41000), (UPLINK_IP6, 8080), (lab.container_mac, gateway_mac()), 0x02));
    let got = server.take_all();
    assert_eq!(got.len(), 1, "the SYN reached the published port's container");
    let (src, nat_port, dst, dport) = tcp_ends(&got[0]);
    assert_eq!((src, dst, dport), (UPLINK_IP6, server6, 80), "masqueraded behind the uplink address");
    server.inject(tcp((server6, 80), (UPLINK_IP6, nat_port), (server_mac, gateway_mac()), 0x12));
    lab.sw.poll_all();
    let back = lab.container.take_all();
    assert_eq!(back.len(), 1, "the answer came back to the client container");
    assert_eq!(tcp_ends(&back[0]), (UPLINK_IP6, 8080, CONTAINER6, 41000));
    assert!(lab.uplink.take_all().is_empty(), "nothing left by the uplink");
}

#[test]
fn a_container_cannot_route_from_an_address_outside_its_network() {
    let lab = lab(false);
    lab.resolve_next_hop();
    let stranger: Ipv6Addr = "2001:db8:77::1".parse().unwrap();
    for src in [stranger, "fe80::42:aff:fe01:2".parse().unwrap()] {
        lab.send_from_container(echo(src, REMOTE6, (lab.container_mac, gateway_mac()), 64, 8));
    }
    assert!(lab.uplink.take_all().is_empty(), "a forged source left");
    assert_eq!(lab.sw.report().drops.spoofed, 2);
}

#[test]
fn packet_too_big_for_a_published_flow_reaches_its_container() {
    let lab = lab(false);
    let uplink_mac = lab.resolve_next_hop();
    lab.container.take_all();
    lab.publish_8080_to(Ipv4Addr::new(10, 1, 0, 2));
    lab.send_from_uplink(tcp((REMOTE6, 40000), (UPLINK_IP6, 8080), (NEXT_HOP_MAC, uplink_mac), 0x02));
    lab.container.take_all();
    lab.send_from_container(tcp((CONTAINER6, 80), (REMOTE6, 40000), (lab.container_mac, gateway_mac()), 0x12));
    let sent = lab.uplink.take_all().pop().expect("the answer left");
    // A router on the way says it is too big, about the packet as it left.
    let offending = ipv6::Packet::parse(&sent[14..]).unwrap();
    let router: Ipv6Addr = "2001:db8:5::1".parse().unwrap();
    let mut err = vec![0u8; 1400];
    let n = icmpv6::write_error(
        &mut err,
        (icmpv6::TYPE_PACKET_TOO_BIG, 0, 1280),
        &offending,
        (NEXT_HOP_MAC, router),
        uplink_mac,
    );
    err.truncate(n);
    err[14 + 24..14 + 40].copy_from_slice(&UPLINK_IP6.octets()); // write_error answers the source: the uplink
    icmpv6::seal(router, UPLINK_IP6, &mut err[54..]);
    lab.send_from_uplink(err);
    let got = lab.container.take_all();
    assert_eq!(got.len(), 1, "the error reached the container");
    let ip = ipv6::Packet::parse(&got[0][14..]).unwrap();
    let msg = icmpv6::message(&ip).unwrap();
    assert_eq!((ip.dst(), msg[0]), (CONTAINER6, icmpv6::TYPE_PACKET_TOO_BIG));
    assert!(icmpv6::checksum_ok(&ip, msg));
    let quoted = ipv6::Packet::parse(&msg[8..]).unwrap_or_else(|_| panic!("quoted packet"));
    assert_eq!(quoted.src(), CONTAINER6, "the quoted packet is the container's again");
    assert_eq!(u16::from_be_bytes([msg[48], msg[49]]), 80, "and its port");
}

#[test]
fn icmpv6_errors_are_rate_limited() {
    let lab = lab(false);
    lab.resolve_next_hop();
    lab.container.take_all();
    let mut errors = 0;
    for _ in 0..60 {
        for _ in 0..50 {
            lab.container.inject(echo(CONTAINER6, REMOTE6, (lab.container_mac, gateway_mac()), 1, 8));
        }
        for _ in 0..3 {
            lab.sw.poll_all(); // a poll takes one batch per port
        }
        errors += lab.container.take_all().len();
    }
    // 3,000 expiring packets in well under a second: one budget of the
    // switch's clock, or two if a second began in between.
    assert!(errors >= 1000, "only {errors} errors for 3000 expiring packets");
    assert!(errors <= 2000, "{errors} errors for 3000 expiring packets: not limited");
}
