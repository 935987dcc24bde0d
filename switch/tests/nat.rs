//! Masquerade through the pipeline, with an in-memory uplink: containers'
//! packets leave translated behind the uplink address, replies come back
//! translated to the container, checksums stay right.

use ports::mem::MemPort;
use ports::Offload;
use proto::ethernet::{self, ETHERTYPE_IPV4};
use proto::offload::F_NEEDS_CSUM;
use proto::{arp, checksum, gso, ipv4, MacAddr};
use std::net::Ipv4Addr;
use std::sync::Arc;
use switch::{NetworkSpec, PortSpec, Switch, UplinkSpec};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const CONTAINER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const NEXT_HOP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const NEXT_HOP_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

struct Lab {
    sw: Switch,
    container: Arc<MemPort>,
    uplink: Arc<MemPort>,
}

fn lab(internal: bool) -> Lab {
    lab_with(internal, true, None)
}

fn lab_with(internal: bool, masquerade: bool, shared_mac: Option<MacAddr>) -> Lab {
    let sw = Switch::start(0).unwrap();
    let spec =
        NetworkSpec { internal, masquerade, ..NetworkSpec::bridge(1, "n", "10.1.0.0/16".parse().unwrap(), GATEWAY) };
    sw.add_network(spec).unwrap();
    let container = Arc::new(MemPort::with_offloads(256));
    let mac = MacAddr::from_ipv4(CONTAINER);
    sw.add_port(PortSpec {
        network: 1,
        name: "c".into(),
        mac,
        ipv4: CONTAINER,
        ipv6: None,
        queues: vec![container.clone()],
    })
    .unwrap();
    let uplink = Arc::new(MemPort::with_offloads(256));
    let spec = UplinkSpec {
        name: "up".into(),
        queues: vec![uplink.clone()],
        ip: UPLINK_IP,
        gateway: NEXT_HOP,
        mtu: 1500,
        shared_mac,
        ipv6: None,
    };
    sw.set_uplink(spec).unwrap();
    Lab { sw, container, uplink }
}

impl Lab {
    /// Answer the ARP request the switch sent for its next hop.
    fn resolve_next_hop(&self) {
        let request = self.uplink.take().expect("an ARP request for the next hop");
        let arp = arp::Packet::parse(&request[14..]).unwrap();
        assert_eq!((arp.op(), arp.target_ip(), arp.sender_ip()), (arp::OP_REQUEST, NEXT_HOP, UPLINK_IP));
        let mut reply = vec![0u8; 60];
        let them = arp::Host { mac: NEXT_HOP_MAC, ip: NEXT_HOP };
        let us = arp::Host { mac: arp.sender_mac(), ip: UPLINK_IP };
        arp::write_frame(&mut reply, arp::OP_REPLY, them, us, arp.sender_mac());
        self.uplink.inject(reply);
        self.sw.poll_all();
    }
}

fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), eth_dst: MacAddr, eth_src: MacAddr) -> Vec<u8> {
    let payload = b"hello, outside";
    let mut f = vec![0u8; 14 + 20 + 8 + payload.len()];
    ethernet::write_header(&mut f, eth_dst, eth_src, ETHERTYPE_IPV4);
    let h = ipv4::Header { src: src.0, dst: dst.0, protocol: ipv4::PROTO_UDP, ttl: 64, payload_len: 8 + payload.len() };
    ipv4::write_header(&mut f[14..], &h);
    let u = &mut f[34..];
    u[0..2].copy_from_slice(&src.1.to_be_bytes());
    u[2..4].copy_from_slice(&dst.1.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u[8..].copy_from_slice(payload);
    let sum = l4_sum(&f);
    f[40..42].copy_from_slice(&checksum::finish(sum).to_be_bytes());
    f
}

/// Sum of pseudo-header and L4 segment of an IPv4 frame: 0xffff (or 0 after
/// finish) when the checksum inside is right.
fn l4_sum(frame: &[u8]) -> u32 {
    let ip = ipv4::Packet::parse(&frame[14..]).unwrap();
    let len = ip.payload().len() as u32;
    checksum::sum(ip.payload(), checksum::sum(&frame[26..34], ip.protocol() as u32 + len))
}

fn l4_checksum_ok(frame: &[u8]) -> bool {
    checksum::finish(l4_sum(frame)) == 0
}

fn ports_of(frame: &[u8]) -> (u16, u16) {
    (u16::from_be_bytes([frame[34], frame[35]]), u16::from_be_bytes([frame[36], frame[37]]))
}

#[test]
fn udp_goes_out_masqueraded_and_the_reply_comes_back() {
    let lab = lab(false);
    lab.resolve_next_hop();
    let gw_mac = MacAddr::from_ipv4(GATEWAY);
    lab.container.inject(udp((CONTAINER, 5353), (REMOTE, 53), gw_mac, MacAddr::from_ipv4(CONTAINER)));
    lab.sw.poll_all();

    let out = lab.uplink.take().expect("translated packet on the uplink");
    let eth = ethernet::Frame::parse(&out).unwrap();
    assert_eq!((eth.dst(), eth.src()), (NEXT_HOP_MAC, MacAddr::from_ipv4(UPLINK_IP)));
    let ip = ipv4::Packet::parse(&out[14..]).unwrap();
    assert_eq!((ip.src(), ip.dst(), ip.ttl()), (UPLINK_IP, REMOTE, 63));
    assert!(ip.header_checksum_ok());
    assert!(l4_checksum_ok(&out));
    let (nat_port, dport) = ports_of(&out);
    assert_eq!(dport, 53);
    assert!((32768..=60999).contains(&nat_port));

    let reply = udp((REMOTE, 53), (UPLINK_IP, nat_port), MacAddr::from_ipv4(UPLINK_IP), NEXT_HOP_MAC);
    lab.uplink.inject(reply);
    lab.sw.poll_all();
    let back = lab.container.take().expect("reply delivered to the container");
    let eth = ethernet::Frame::parse(&back).unwrap();
    assert_eq!((eth.dst(), eth.src()), (MacAddr::from_ipv4(CONTAINER), gw_mac));
    let ip = ipv4::Packet::parse(&back[14..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (REMOTE, CONTAINER));
    assert!(ip.header_checksum_ok());
    assert!(l4_checksum_ok(&back));
    assert_eq!(ports_of(&back), (53, 5353));

    let rows = lab.sw.conntrack_rows(Some(1));
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].src.as_str(), rows[0].nat_src.as_str()), ("10.1.0.2:5353", &*format!("192.0.2.2:{nat_port}")));
}

#[test]
fn the_first_packet_asks_for_the_next_hop() {
    let lab = lab(false);
    lab.uplink.take_all(); // the request made when the uplink came up
    let gw_mac = MacAddr::from_ipv4(GATEWAY);
    // Within the same second no second request goes out.
    lab.container.inject(udp((CONTAINER, 1), (REMOTE, 53), gw_mac, MacAddr::from_ipv4(CONTAINER)));
    lab.sw.poll_all();
    assert!(lab.uplink.take_all().iter().all(|f| f[12..14] == [8, 6]), "only ARP before the next hop is known");
    assert_eq!(lab.sw.report().drops.no_route, 1);
}

#[test]
fn the_switch_answers_arp_for_its_uplink_address() {
    let lab = lab(false);
    lab.uplink.take_all();
    let mut req = vec![0u8; 60];
    let asker = arp::Host { mac: NEXT_HOP_MAC, ip: NEXT_HOP };
    let target = arp::Host { mac: MacAddr::ZERO, ip: UPLINK_IP };
    arp::write_frame(&mut req, arp::OP_REQUEST, asker, target, MacAddr::BROADCAST);
    lab.uplink.inject(req);
    lab.sw.poll_all();
    let reply = lab.uplink.take().expect("ARP reply");
    let arp = arp::Packet::parse(&reply[14..]).unwrap();
    assert_eq!(
        (arp.op(), arp.sender_ip(), arp.sender_mac()),
        (arp::OP_REPLY, UPLINK_IP, MacAddr::from_ipv4(UPLINK_IP))
    );
}

#[test]
fn internal_networks_and_other_networks_get_no_route() {
    let lab = lab(true);
    lab.resolve_next_hop();
    let gw_mac = MacAddr::from_ipv4(GATEWAY);
    lab.container.inject(udp((CONTAINER, 1), (REMOTE, 53), gw_mac, MacAddr::from_ipv4(CONTAINER)));
    lab.sw.poll_all();
    assert!(lab.uplink.take_all().is_empty());
    assert_eq!(lab.sw.report().drops.no_route, 1);

    let open = self::lab(false);
    open.resolve_next_hop();
    open.container.inject(udp((CONTAINER, 1), (Ipv4Addr::new(10, 1, 0, 9), 53), gw_mac, MacAddr::from_ipv4(CONTAINER)));
    open.sw.poll_all();
    assert!(open.uplink.take_all().is_empty(), "the network's own subnet is not routed out");
}

#[test]
fn unsolicited_packets_on_the_uplink_are_not_forwarded() {
    let lab = lab(false);
    lab.resolve_next_hop();
    let stray = udp((REMOTE, 53), (UPLINK_IP, 40000), MacAddr::from_ipv4(UPLINK_IP), NEXT_HOP_MAC);
    lab.uplink.inject(stray);
    lab.sw.poll_all();
    assert!(lab.container.take_all().is_empty());
    assert_eq!(lab.sw.report().drops.not_for_us, 1);
}

#[test]
fn partial_checksums_stay_right_through_translation() {
    let lab = lab(false);
    lab.resolve_next_hop();
    let gw_mac = MacAddr::from_ipv4(GATEWAY);
    let mut frame = udp((CONTAINER, 7777), (REMOTE, 53), gw_mac, MacAddr::from_ipv4(CONTAINER));
    // Leave the UDP checksum to the "hardware": the field holds the pseudo-header sum.
    let ip = ipv4::Packet::parse(&frame[14..]).unwrap();
    let len = ip.payload().len() as u32;
    let pseudo = checksum::sum(&frame[26..34], ipv4::PROTO_UDP as u32 + len);
    frame[40..42].copy_from_slice(&(!checksum::finish(pseudo)).to_be_bytes());
    let partial = Offload { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..Offload::NONE };
    lab.container.inject_offloaded(frame, partial);
    lab.sw.poll_all();
    let (mut out, offload) = lab.uplink.take_offloaded().unwrap();
    assert!(offload.needs_csum(), "still partial: the uplink takes offloads");
    gso::finish_checksum(&mut out, &offload).unwrap();
    assert!(l4_checksum_ok(&out), "finishing after translation gives a right checksum");
}

#[test]
fn a_published_port_reaches_the_container_with_the_clients_address() {
    let lab = lab(false);
    lab.resolve_next_hop();
    let target = switch::nat::Published { network: 1, ip: CONTAINER, port: 53 };
    lab.sw.set_published([((ipv4::PROTO_UDP, 8053), target)].into_iter().collect());

    let query = udp((REMOTE, 4444), (UPLINK_IP, 8053), MacAddr::from_ipv4(UPLINK_IP), NEXT_HOP_MAC);
    lab.uplink.inject(query);
    lab.sw.poll_all();
    let got = lab.container.take().expect("delivered to the container");
    let ip = ipv4::Packet::parse(&got[14..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (REMOTE, CONTAINER), "the container sees the client's real address");
    assert_eq!(ports_of(&got), (4444, 53));
    assert!(l4_checksum_ok(&got) && ip.header_checksum_ok());

    let gw_mac = MacAddr::from_ipv4(GATEWAY);
    lab.container.inject(udp((CONTAINER, 53), (REMOTE, 4444), gw_mac, MacAddr::from_ipv4(CONTAINER)));
    lab.sw.poll_all();
    let answer = lab.uplink.take().expect("the answer goes out");
    let ip = ipv4::Packet::parse(&answer[14..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (UPLINK_IP, REMOTE));
    assert_eq!(ports_of(&answer), (8053, 4444), "from the published port");
    assert!(l4_checksum_ok(&answer));

    lab.sw.set_published(Default::default());
    let again = udp((REMOTE, 5555), (UPLINK_IP, 8053), MacAddr::from_ipv4(UPLINK_IP), NEXT_HOP_MAC);
    lab.uplink.inject(again);
    lab.sw.poll_all();
    assert!(lab.container.take_all().is_empty(), "unpublished: a new client gets nowhere");
}

#[test]
fn hairpin_reaches_a_published_port_from_inside() {
    let lab = lab(false);
    lab.resolve_next_hop();
    let server_ip = Ipv4Addr::new(10, 1, 0, 3);
    let server = Arc::new(MemPort::with_offloads(64));
    let mac = MacAddr::from_ipv4(server_ip);
    lab.sw
        .add_port(PortSpec {
            network: 1,
            name: "s".into(),
            mac,
            ipv4: server_ip,
            ipv6: None,
            queues: vec![server.clone()],
        })
        .unwrap();
    let target = switch::nat::Published { network: 1, ip: server_ip, port: 80 };
    lab.sw.set_published([((ipv4::PROTO_UDP, 8080), target)].into_iter().collect());
    let gw_mac = MacAddr::from_ipv4(GATEWAY);

    lab.container.inject(udp((CONTAINER, 4000), (UPLINK_IP, 8080), gw_mac, MacAddr::from_ipv4(CONTAINER)));
    lab.sw.poll_all();
    assert!(lab.uplink.take_all().is_empty(), "hairpin never touches the wire");
    let got = server.take().expect("the published container gets it");
    let ip = ipv4::Packet::parse(&got[14..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (UPLINK_IP, server_ip), "masqueraded, as from outside");
    let (nat_port, dport) = ports_of(&got);
    assert_eq!(dport, 80);
    assert!(l4_checksum_ok(&got) && ip.header_checksum_ok());

    server.inject(udp((server_ip, 80), (UPLINK_IP, nat_port), gw_mac, mac));
    lab.sw.poll_all();
    let back = lab.container.take().expect("the answer comes back to the client");
    let ip = ipv4::Packet::parse(&back[14..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (UPLINK_IP, CONTAINER));
    assert_eq!(ports_of(&back), (8080, 4000), "from the published port it asked");
    assert!(l4_checksum_ok(&back));
}

#[test]
fn a_user_drop_rule_takes_effect_before_a_published_port() {
    use switch::filter::{Action, Rule, Scope};
    let lab = lab(false);
    lab.resolve_next_hop();
    let target = switch::nat::Published { network: 1, ip: CONTAINER, port: 53 };
    lab.sw.set_published([((ipv4::PROTO_UDP, 8053), target)].into_iter().collect());
    let rule = Rule {
        id: 1,
        scope: Scope::Uplink,
        src: None,
        dst: None,
        proto: Some(ipv4::PROTO_UDP),
        dport: Some(8053),
        action: Action::Drop,
    };
    lab.sw.set_rules(vec![rule]);
    let query = udp((REMOTE, 4444), (UPLINK_IP, 8053), MacAddr::from_ipv4(UPLINK_IP), NEXT_HOP_MAC);
    lab.uplink.inject(query.clone());
    lab.sw.poll_all();
    assert!(lab.container.take_all().is_empty());
    assert_eq!(lab.sw.report().drops.rule, 1);
    assert!(lab.sw.conntrack_rows(None).is_empty(), "nothing tracked for a dropped packet");

    lab.sw.set_rules(vec![]);
    lab.uplink.inject(query);
    lab.sw.poll_all();
    assert_eq!(lab.container.take_all().len(), 1);
}

/// The ICMP message of a frame the switch sent.
fn icmp_of(frame: &[u8]) -> (ipv4::Packet<'_>, u8, u8) {
    let ip = ipv4::Packet::parse(&frame[14..]).unwrap();
    assert!(ip.header_checksum_ok());
    assert_eq!(checksum::compute(ip.payload()), 0, "ICMP checksum");
    let msg = ip.payload();
    (ip, msg[0], msg[1])
}

#[test]
fn ttl_running_out_gets_time_exceeded_from_the_gateway() {
    let lab = lab(false);
    lab.resolve_next_hop();
    let gw_mac = MacAddr::from_ipv4(GATEWAY);
    let mut f = udp((CONTAINER, 1), (REMOTE, 53), gw_mac, MacAddr::from_ipv4(CONTAINER));
    f[14 + 8] = 1;
    f[14 + 10..14 + 12].fill(0);
    let sum = checksum::compute(&f[14..34]);
    f[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    lab.container.inject(f);
    lab.sw.poll_all();
    assert!(lab.uplink.take_all().is_empty());
    let err = lab.container.take().expect("an ICMP error back");
    let (ip, kind, code) = icmp_of(&err);
    assert_eq!((ip.src(), ip.dst(), kind, code), (GATEWAY, CONTAINER, 11, 0));
}

#[test]
fn too_big_for_the_uplink_gets_frag_needed() {
    let lab = lab(false);
    lab.resolve_next_hop();
    let gw_mac = MacAddr::from_ipv4(GATEWAY);
    let mut f = udp((CONTAINER, 1), (REMOTE, 53), gw_mac, MacAddr::from_ipv4(CONTAINER));
    f.resize(14 + 1600, 0);
    let total = (f.len() - 14) as u16;
    f[14 + 2..14 + 4].copy_from_slice(&total.to_be_bytes());
    f[38..40].copy_from_slice(&(total - 20).to_be_bytes());
    f[14 + 10..14 + 12].fill(0);
    let sum = checksum::compute(&f[14..34]);
    f[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    lab.container.inject(f);
    lab.sw.poll_all();
    assert!(lab.uplink.take_all().is_empty(), "not sent to vanish on the wire");
    let err = lab.container.take().expect("frag-needed back");
    let (ip, kind, code) = icmp_of(&err);
    assert_eq!((ip.dst(), kind, code), (CONTAINER, 3, 4));
    assert_eq!(u32::from_be_bytes(ip.payload()[4..8].try_into().unwrap()), 1500, "the uplink's MTU");
}

#[test]
fn icmp_errors_from_outside_reach_the_container_translated() {
    let lab = lab(false);
    lab.resolve_next_hop();
    let gw_mac = MacAddr::from_ipv4(GATEWAY);
    lab.container.inject(udp((CONTAINER, 5353), (REMOTE, 53), gw_mac, MacAddr::from_ipv4(CONTAINER)));
    lab.sw.poll_all();
    let sent = lab.uplink.take().unwrap();
    // The remote answers "port unreachable", quoting what it got.
    let offending = ipv4::Packet::parse(&sent[14..]).unwrap();
    let mut err = vec![0u8; 200];
    let from = (NEXT_HOP_MAC, REMOTE);
    let len = proto::icmp::write_error(&mut err, (3, 3, 0), &offending, from, MacAddr::from_ipv4(UPLINK_IP));
    err.truncate(len);
    lab.uplink.inject(err);
    lab.sw.poll_all();
    let got = lab.container.take().expect("the error reaches the container");
    let (ip, kind, code) = icmp_of(&got);
    assert_eq!((ip.src(), ip.dst(), kind, code), (REMOTE, CONTAINER, 3, 3));
    let quoted = &ip.payload()[8..];
    assert_eq!(&quoted[12..16], &CONTAINER.octets(), "the quoted packet is the container's own");
    assert_eq!(u16::from_be_bytes([quoted[20], quoted[21]]), 5353, "with its own port");
    assert_eq!(checksum::compute(&quoted[..20]), 0, "quoted header checksum kept right");
}

#[test]
fn without_masquerade_containers_keep_their_addresses_both_ways() {
    let lab = lab_with(false, false, None);
    lab.resolve_next_hop();
    let gw_mac = MacAddr::from_ipv4(GATEWAY);
    lab.container.inject(udp((CONTAINER, 5353), (REMOTE, 53), gw_mac, MacAddr::from_ipv4(CONTAINER)));
    lab.sw.poll_all();
    let out = lab.uplink.take().expect("routed out");
    let ip = ipv4::Packet::parse(&out[14..]).unwrap();
    assert_eq!((ip.src(), ip.ttl()), (CONTAINER, 63), "the container's own address");
    assert!(ip.header_checksum_ok() && l4_checksum_ok(&out));
    assert!(lab.sw.conntrack_rows(None).is_empty(), "nothing to track");

    // The world outside routes 10.1.0.0/16 to the uplink address.
    lab.uplink.inject(udp((REMOTE, 53), (CONTAINER, 5353), MacAddr::from_ipv4(UPLINK_IP), NEXT_HOP_MAC));
    lab.sw.poll_all();
    let back = lab.container.take().expect("routed in");
    let ip = ipv4::Packet::parse(&back[14..]).unwrap();
    assert_eq!((ip.src(), ip.dst(), ip.ttl()), (REMOTE, CONTAINER, 63));
    assert!(ip.header_checksum_ok());
}

#[test]
fn random_frames_on_the_uplink_never_panic() {
    let lab = lab(false);
    lab.resolve_next_hop();
    let gw_mac = MacAddr::from_ipv4(GATEWAY);
    // A tracked flow, so that some random replies get far into translation.
    lab.container.inject(udp((CONTAINER, 5353), (REMOTE, 53), gw_mac, MacAddr::from_ipv4(CONTAINER)));
    lab.sw.poll_all();
    let template = lab.uplink.take().unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut f = template.clone();
        // Keep the Ethernet header aimed at us; scramble a few bytes after it.
        f[0..6].copy_from_slice(&MacAddr::from_ipv4(UPLINK_IP).0);
        for k in 0..4 {
            let at = 14 + ((seed >> (k * 12)) as usize % (f.len() - 14));
            f[at] = (seed >> (k * 8 + 3)) as u8;
        }
        f.truncate(14 + (seed as usize % (f.len() - 13)));
        if round % 3 == 0 && f.len() > 34 {
            f[14 + 9] = 1; // ICMP: the error-translation path
            f[34] = 3;
        }
        let offload = if round % 5 == 0 {
            Offload {
                flags: F_NEEDS_CSUM,
                csum_start: (seed % 80) as u16,
                csum_offset: (seed % 20) as u16,
                ..Offload::NONE
            }
        } else {
            Offload::NONE
        };
        lab.uplink.inject_offloaded(f, offload);
        lab.sw.poll_all();
        lab.container.take_all();
        lab.uplink.take_all();
    }
}

/// Make `f` (an IPv4 frame) a fragment: offset in 8-byte units, MF flag,
/// identification; the header checksum is made right again.
fn fragment(mut f: Vec<u8>, offset_units: u16, more: bool, ident: u16) -> Vec<u8> {
    let flags = (offset_units & 0x1fff) | if more { 0x2000 } else { 0 };
    f[14 + 4..14 + 6].copy_from_slice(&ident.to_be_bytes());
    f[14 + 6..14 + 8].copy_from_slice(&flags.to_be_bytes());
    f[14 + 10..14 + 12].fill(0);
    let sum = checksum::compute(&f[14..34]);
    f[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    f
}

#[test]
fn fragmented_datagrams_are_translated_both_ways() {
    let lab = lab(false);
    lab.resolve_next_hop();
    let gw_mac = MacAddr::from_ipv4(GATEWAY);
    let first = fragment(udp((CONTAINER, 5353), (REMOTE, 53), gw_mac, MacAddr::from_ipv4(CONTAINER)), 0, true, 7);
    let mut later = fragment(udp((CONTAINER, 0), (REMOTE, 0), gw_mac, MacAddr::from_ipv4(CONTAINER)), 3, false, 7);
    later[34..42].copy_from_slice(b"payload!"); // no UDP header in a later fragment
    let later = fragment(later, 3, false, 7);
    lab.container.inject(first);
    lab.container.inject(later);
    lab.sw.poll_all();
    let out = lab.uplink.take_all();
    assert_eq!(out.len(), 2, "both fragments leave");
    for f in &out {
        let ip = ipv4::Packet::parse(&f[14..]).unwrap();
        assert_eq!(ip.src(), UPLINK_IP);
        assert!(ip.header_checksum_ok());
    }
    let (nat_port, _) = ports_of(&out[0]);
    assert_eq!(&out[1][34..42], b"payload!", "the later fragment's data untouched");

    let reply_first =
        fragment(udp((REMOTE, 53), (UPLINK_IP, nat_port), MacAddr::from_ipv4(UPLINK_IP), NEXT_HOP_MAC), 0, true, 99);
    let reply_later =
        fragment(udp((REMOTE, 0), (UPLINK_IP, 0), MacAddr::from_ipv4(UPLINK_IP), NEXT_HOP_MAC), 3, false, 99);
    lab.uplink.inject(reply_first);
    lab.uplink.inject(reply_later);
    lab.sw.poll_all();
    let back = lab.container.take_all();
    assert_eq!(back.len(), 2, "both fragments reach the container");
    for f in &back {
        let ip = ipv4::Packet::parse(&f[14..]).unwrap();
        assert_eq!(ip.dst(), CONTAINER);
        assert!(ip.header_checksum_ok());
    }
    assert_eq!(ports_of(&back[0]).1, 5353);
}

#[test]
fn the_uplink_address_answers_ping_from_outside_and_inside() {
    let lab = lab(false);
    lab.resolve_next_hop();
    let mut req = vec![0u8; 128];
    let len = proto::icmp::write_echo_request(
        &mut req,
        (NEXT_HOP_MAC, REMOTE),
        (MacAddr::from_ipv4(UPLINK_IP), UPLINK_IP),
        9,
        1,
        b"hi",
    );
    req.truncate(len);
    lab.uplink.inject(req);
    lab.sw.poll_all();
    let reply = lab.uplink.take().expect("echo reply on the uplink");
    let (ip, kind, _) = icmp_of(&reply);
    assert_eq!((ip.src(), ip.dst(), kind), (UPLINK_IP, REMOTE, 0));

    let gw_mac = MacAddr::from_ipv4(GATEWAY);
    let mut req = vec![0u8; 128];
    let len = proto::icmp::write_echo_request(
        &mut req,
        (MacAddr::from_ipv4(CONTAINER), CONTAINER),
        (gw_mac, UPLINK_IP),
        9,
        1,
        b"hi",
    );
    req.truncate(len);
    lab.container.inject(req);
    lab.sw.poll_all();
    let reply = lab.container.take().expect("echo reply to the container");
    let (ip, kind, _) = icmp_of(&reply);
    assert_eq!((ip.src(), ip.dst(), kind), (UPLINK_IP, CONTAINER, 0));
}

#[test]
fn sharing_the_hosts_address_leaves_arp_to_the_host() {
    let host_mac = MacAddr([2, 0xaa, 0, 0, 0, 1]);
    let lab = lab_with(false, true, Some(host_mac));
    let request = lab.uplink.take().expect("the next hop is still resolved");
    assert_eq!(ethernet::Frame::parse(&request).unwrap().src(), host_mac, "from the host's MAC");
    let mut ask = vec![0u8; 60];
    let asker = arp::Host { mac: NEXT_HOP_MAC, ip: NEXT_HOP };
    arp::write_frame(
        &mut ask,
        arp::OP_REQUEST,
        asker,
        arp::Host { mac: MacAddr::ZERO, ip: UPLINK_IP },
        MacAddr::BROADCAST,
    );
    lab.uplink.inject(ask);
    lab.sw.poll_all();
    assert!(lab.uplink.take_all().is_empty(), "the host answers ARP for its own address, not the switch");

    let mut reply = vec![0u8; 60];
    arp::write_frame(&mut reply, arp::OP_REPLY, asker, arp::Host { mac: host_mac, ip: UPLINK_IP }, host_mac);
    lab.uplink.inject(reply);
    lab.sw.poll_all();
    let gw_mac = MacAddr::from_ipv4(GATEWAY);
    lab.container.inject(udp((CONTAINER, 1), (REMOTE, 53), gw_mac, MacAddr::from_ipv4(CONTAINER)));
    lab.sw.poll_all();
    let out = lab.uplink.take().expect("masqueraded out");
    assert_eq!(ethernet::Frame::parse(&out).unwrap().src(), host_mac);
    let (nat_port, _) = ports_of(&out);
    lab.uplink.inject(udp((REMOTE, 53), (UPLINK_IP, nat_port), host_mac, NEXT_HOP_MAC));
    lab.sw.poll_all();
    assert_eq!(lab.container.take_all().len(), 1, "replies to the host's MAC are translated");
}
