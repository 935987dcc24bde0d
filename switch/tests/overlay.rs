//! Overlay networks through the pipeline: two switches ("hosts") whose
//! in-memory uplinks are joined by a test underlay, one overlay network
//! (VNI 42) with a container on each host.

use ports::mem::MemPort;
use proto::ethernet::{self, ETHERTYPE_IPV4};
use proto::offload::{self, Offload};
use proto::{arp, ipv4, vxlan, MacAddr};
use std::net::Ipv4Addr;
use std::sync::Arc;
use switch::{NetworkSpec, PortSpec, RemoteEndpoint, Switch, UplinkSpec};

const VNI: u32 = 42;
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 130, 0, 1);

struct Host {
    sw: Switch,
    uplink: Arc<MemPort>,
    container: Arc<MemPort>,
    mac: MacAddr,
    ip: Ipv4Addr,
    vtep: Ipv4Addr,
}

fn host(n: u8, peer: u8) -> Host {
    host_with(n, peer, MemPort::new)
}

/// A host whose uplink and container take offloads (as AF_PACKET and TAPs do).
fn offloading_host(n: u8, peer: u8) -> Host {
    host_with(n, peer, MemPort::with_offloads)
}

fn host_with(n: u8, peer: u8, port: fn(usize) -> MemPort) -> Host {
    host_on(n, peer, port, false)
}

/// An uplink as a kernel without UDP GSO on packet sockets has it: it
/// refuses trains (EINVAL) and takes everything else.
struct RefusingTrains(Arc<MemPort>);

impl ports::FrameIo for RefusingTrains {
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, Offload)> {
        self.0.recv(buf)
    }
    fn send(&self, frame: &[u8], offload: &Offload) -> std::io::Result<()> {
        if offload.gso_type == offload::GSO_UDP_L4 {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.0.send(frame, offload)
    }
    fn takes_offloads(&self) -> bool {
        true
    }
    fn poll_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

fn host_on(n: u8, peer: u8, port: fn(usize) -> MemPort, refuses_trains: bool) -> Host {
    let sw = Switch::start(0).unwrap();
    sw.add_network(NetworkSpec::bridge(1, "ov", "10.130.0.0/24".parse().unwrap(), GATEWAY)).unwrap();
    let uplink = Arc::new(port(1024));
    let vtep = Ipv4Addr::new(192, 0, 2, n);
    sw.set_uplink(UplinkSpec {
        name: "up".into(),
        queues: vec![match refuses_trains {
            true => Arc::new(RefusingTrains(uplink.clone())),
            false => uplink.clone() as Arc<dyn ports::FrameIo>,
        }],
        ip: vtep,
        gateway: Ipv4Addr::new(192, 0, 2, 254),
        mtu: 1500,
        shared_mac: None,
        ipv6: None,
    })
    .unwrap();
    sw.set_overlay(1, VNI, vxlan::UDP_PORT).unwrap();
    sw.add_tunnel(1, Ipv4Addr::new(192, 0, 2, peer)).unwrap();
    let container = Arc::new(port(1024));
    let ip = Ipv4Addr::new(10, 130, 0, 1 + n);
    let mac = MacAddr::from_ipv4(ip);
    let spec =
        PortSpec { network: 1, name: format!("c{n}"), mac, ipv4: ip, ipv6: None, queues: vec![container.clone()] };
    sw.add_port(spec).unwrap();
    sw.poll_all();
    uplink.take_all(); // the uplink's own ARP for its gateway
    Host { sw, uplink, container, mac, ip, vtep }
}

/// Carry frames between the two uplinks (the underlay) until both are quiet;
/// returns the VXLAN frames that crossed.
fn underlay(a: &Host, b: &Host) -> Vec<Vec<u8>> {
    let mut crossed = Vec::new();
    for _ in 0..10 {
        a.sw.poll_all();
        b.sw.poll_all();
        let (from_a, from_b) = (a.uplink.take_all(), b.uplink.take_all());
        if from_a.is_empty() && from_b.is_empty() {
            break;
        }
        for (frames, to) in [(from_a, b), (from_b, a)] {
            for f in frames {
                if matches!(vxlan::decapsulate(&f, vxlan::UDP_PORT), Ok(Some(_))) {
                    crossed.push(f.clone());
                }
                to.uplink.inject(f);
            }
        }
    }
    crossed
}

fn arp_request(from: &Host, target: Ipv4Addr) -> Vec<u8> {
    arp_request_from(from.mac, from.ip, target)
}

fn arp_request_from(mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    let me = arp::Host { mac, ip };
    let them = arp::Host { mac: MacAddr::ZERO, ip: target };
    arp::write_frame(&mut f, arp::OP_REQUEST, me, them, MacAddr::BROADCAST);
    f
}

fn udp(from: &Host, to: &Host) -> Vec<u8> {
    udp_frame((from.mac, from.ip), (to.mac, to.ip))
}

fn udp_frame(from: (MacAddr, Ipv4Addr), to: (MacAddr, Ipv4Addr)) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + 6];
    ethernet::write_header(&mut f, to.0, from.0, ETHERTYPE_IPV4);
    let h = ipv4::Header { src: from.1, dst: to.1, protocol: ipv4::PROTO_UDP, ttl: 64, payload_len: 14 };
    ipv4::write_header(&mut f[14..], &h);
    f[42..].copy_from_slice(b"across");
    f
}

#[test]
fn containers_on_two_hosts_talk_through_the_overlay() {
    let (a, b) = (host(1, 2), host(2, 1));
    // The first flood finds no VTEP MAC yet: the tunnel asks the underlay.
    a.container.inject(arp_request(&a, b.ip));
    underlay(&a, &b);
    // Now the ARP request for B crosses, wrapped, and B's switch answers it
    // for B (its ARP proxy) back through the tunnel.
    a.container.inject(arp_request(&a, b.ip));
    let crossed = underlay(&a, &b);
    assert!(crossed.len() >= 2, "request and answer crossed the underlay: {}", crossed.len());
    let d = vxlan::decapsulate(&crossed[0], vxlan::UDP_PORT).unwrap().unwrap();
    assert_eq!((d.vni, d.src_ip, d.dst_ip), (VNI, a.vtep, b.vtep));
    assert!(b.container.take_all().is_empty(), "answered by B's switch, not flooded to B");
    let at_a = a.container.take_all();
    assert_eq!(at_a.len(), 1, "A got the answer through the tunnel");
    let answer = arp::Packet::parse(&at_a[0][14..]).unwrap();
    assert_eq!((answer.op(), answer.sender_ip(), answer.sender_mac()), (arp::OP_REPLY, b.ip, b.mac));
    // And data both ways, byte for byte.
    a.container.inject(udp(&a, &b));
    underlay(&a, &b);
    assert_eq!(b.container.take_all(), vec![udp(&a, &b)]);
    b.container.inject(udp(&b, &a));
    underlay(&a, &b);
    assert_eq!(a.container.take_all(), vec![udp(&b, &a)]);
    let rows = b.sw.fdb_rows(1).unwrap();
    assert!(rows.iter().any(|r| r.mac == a.mac.to_string() && r.kind == "learned"), "A's MAC learnt at B");
}

#[test]
fn vxlan_of_an_unknown_vni_or_vtep_is_counted_and_dropped() {
    let (a, b) = (host(1, 2), host(2, 1));
    let inner = udp(&a, &b);
    let outer = |vni: u32, src_ip: Ipv4Addr| {
        let mut f = vec![0u8; 256];
        let o = vxlan::Outer {
            src_mac: MacAddr([2, 0, 0, 0, 9, 9]),
            dst_mac: MacAddr::from_ipv4(b.vtep),
            src_ip,
            dst_ip: b.vtep,
            vni,
            src_port: 50000,
            dst_port: vxlan::UDP_PORT,
        };
        let n = vxlan::encapsulate(&mut f, &o, &inner).unwrap();
        f.truncate(n);
        f
    };
    b.uplink.inject(outer(43, a.vtep));
    b.uplink.inject(outer(VNI, Ipv4Addr::new(192, 0, 2, 77)));
    let mut broken = outer(VNI, a.vtep);
    broken[42] = 0; // no VNI flag
    b.uplink.inject(broken);
    b.sw.poll_all();
    assert!(b.container.take_all().is_empty());
    let drops = b.sw.report().drops;
    assert_eq!((drops.unknown_vtep, drops.malformed), (2, 1));
    // The right VNI from the right VTEP is delivered.
    b.uplink.inject(outer(VNI, a.vtep));
    b.sw.poll_all();
    assert_eq!(b.container.take_all(), vec![inner]);
}

#[test]
fn frames_from_a_tunnel_are_not_flooded_to_another_tunnel() {
    let a = host(1, 2);
    a.sw.add_tunnel(1, Ipv4Addr::new(192, 0, 2, 3)).unwrap();
    // Resolve both VTEPs' MACs by their own ARP.
    for peer in [2u8, 3] {
        let mut f = vec![0u8; 60];
        let them = arp::Host { mac: MacAddr([2, 0, 0, 0, 0, peer]), ip: Ipv4Addr::new(192, 0, 2, peer) };
        let us = arp::Host { mac: MacAddr::from_ipv4(a.vtep), ip: a.vtep };
        arp::write_frame(&mut f, arp::OP_REPLY, them, us, us.mac);
        a.uplink.inject(f);
    }
    a.sw.poll_all();
    a.uplink.take_all();
    // A broadcast from VTEP .2 reaches the local container, not VTEP .3.
    let mut bcast = vec![0u8; 256];
    let o = vxlan::Outer {
        src_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        dst_mac: MacAddr::from_ipv4(a.vtep),
        src_ip: Ipv4Addr::new(192, 0, 2, 2),
        dst_ip: a.vtep,
        vni: VNI,
        src_port: 50001,
        dst_port: vxlan::UDP_PORT,
    };
    // For an address nobody here knows: flooded, not answered by the proxy.
    let stranger = (MacAddr([2, 0x42, 10, 130, 0, 9]), Ipv4Addr::new(10, 130, 0, 9));
    let request = arp_request_from(stranger.0, stranger.1, Ipv4Addr::new(10, 130, 0, 201));
    let n = vxlan::encapsulate(&mut bcast, &o, &request).unwrap();
    a.uplink.inject(bcast[..n].to_vec());
    a.sw.poll_all();
    assert_eq!(a.container.take_all().len(), 1, "delivered locally");
    assert!(a.uplink.take_all().is_empty(), "split horizon: not sent on to the other VTEP");
    // A local broadcast goes to both VTEPs (head-end replication).
    a.container.inject(arp_request(&a, Ipv4Addr::new(10, 130, 0, 200)));
    a.sw.poll_all();
    let sent = a.uplink.take_all();
    let vteps: Vec<Ipv4Addr> =
        sent.iter().map(|f| vxlan::decapsulate(f, vxlan::UDP_PORT).unwrap().unwrap().dst_ip).collect();
    assert_eq!(vteps.len(), 2, "one copy per VTEP: {vteps:?}");
}

#[test]
fn a_peers_unicast_is_never_sent_on_to_another_peer() {
    let a = host(1, 2);
    a.sw.add_tunnel(1, Ipv4Addr::new(192, 0, 2, 3)).unwrap();
    let wrapped = |from_vtep: u8, inner: &[u8]| {
        let o = vxlan::Outer {
            src_mac: MacAddr([2, 0, 0, 0, 0, from_vtep]),
            dst_mac: MacAddr::from_ipv4(a.vtep),
            src_ip: Ipv4Addr::new(192, 0, 2, from_vtep),
            dst_ip: a.vtep,
            vni: VNI,
            src_port: 50002,
            dst_port: vxlan::UDP_PORT,
        };
        let mut f = vec![0u8; 256];
        let n = vxlan::encapsulate(&mut f, &o, inner).unwrap();
        f.truncate(n);
        f
    };
    // X lives behind VTEP .3 (learnt from its frame)...
    let x = (MacAddr([2, 0x42, 10, 130, 0, 50]), Ipv4Addr::new(10, 130, 0, 50));
    a.uplink.inject(wrapped(3, &udp_frame(x, (a.mac, a.ip))));
    a.sw.poll_all();
    assert_eq!(a.container.take_all().len(), 1);
    a.uplink.take_all();
    // ...so a frame for X from VTEP .2 would go straight back out to .3: not so.
    let y = (MacAddr([2, 0x42, 10, 130, 0, 51]), Ipv4Addr::new(10, 130, 0, 51));
    a.uplink.inject(wrapped(2, &udp_frame(y, x)));
    a.sw.poll_all();
    assert!(a.uplink.take_all().is_empty(), "a peer's frame was sent on to another peer");
    assert_eq!(a.sw.report().drops.same_port, 1);
    let rx = a.sw.report().ports.iter().filter(|p| p.name.starts_with("vxlan")).map(|p| p.rx_packets).sum::<u64>();
    assert_eq!(rx, 2, "frames through the tunnels are counted where they came in");
}

/// With the cluster store each switch is told the other host's endpoints:
/// ARP for them is answered on the spot and their frames go straight to
/// their VTEP, so nothing is flooded over the underlay; and forgotten
/// endpoints are neither answered for nor pinned any more.
#[test]
fn remote_endpoints_are_answered_for_and_pinned_to_their_tunnel() {
    let (a, b) = (host(1, 2), host(2, 1));
    let remote_b = RemoteEndpoint { mac: b.mac, ipv4: b.ip, ipv6: None, vtep: b.vtep };
    a.sw.set_remote_endpoints(1, vec![remote_b.clone()]).unwrap();
    a.container.inject(arp_request(&a, b.ip));
    assert!(underlay(&a, &b).is_empty(), "the ARP request for a known remote endpoint crossed the underlay");
    let at_a = a.container.take_all();
    assert_eq!(at_a.len(), 1, "A's switch answered for B");
    let answer = arp::Packet::parse(&at_a[0][14..]).unwrap();
    assert_eq!((answer.sender_ip(), answer.sender_mac()), (b.ip, b.mac));
    let fdb = a.sw.fdb_rows(1).unwrap();
    let row = fdb.iter().find(|r| r.mac == b.mac.to_string()).expect("B's MAC pinned in A's FDB");
    assert_eq!(row.kind, "static");

    // Unicast to B: wrapped once, to B's VTEP only, once its MAC is known.
    a.container.inject(udp(&a, &b));
    underlay(&a, &b);
    b.container.take_all();
    a.container.inject(udp(&a, &b));
    let crossed = underlay(&a, &b);
    assert_eq!(crossed.len(), 1, "one wrapped frame, not a flood");
    assert_eq!(b.container.take_all().len(), 1);

    // The same set again changes nothing; an empty one forgets B.
    a.sw.set_remote_endpoints(1, vec![remote_b]).unwrap();
    a.sw.set_remote_endpoints(1, Vec::new()).unwrap();
    assert!(!a.sw.fdb_rows(1).unwrap().iter().any(|r| r.mac == b.mac.to_string()), "B outlived its removal");
    a.container.inject(arp_request(&a, b.ip));
    a.sw.poll_all();
    assert!(a.container.take_all().is_empty(), "answered for a forgotten endpoint");
    assert!(a.sw.set_remote_endpoints(9, Vec::new()).is_err(), "no such network");

    // A remote claiming a local endpoint's MAC takes nothing from it, not
    // when it comes and not when it goes.
    let local_port = |sw: &Switch| sw.fdb_rows(1).unwrap().into_iter().find(|r| r.mac == a.mac.to_string()).unwrap();
    let before = local_port(&a.sw);
    let impostor = RemoteEndpoint { mac: a.mac, ipv4: Ipv4Addr::new(10, 130, 0, 99), ipv6: None, vtep: b.vtep };
    a.sw.set_remote_endpoints(1, vec![impostor]).unwrap();
    assert_eq!(local_port(&a.sw), before);
    a.sw.set_remote_endpoints(1, Vec::new()).unwrap();
    assert_eq!(local_port(&a.sw), before);
}

/// A TCP super-frame from `from` to `to`: `payload` bytes in segments of `mss`.
fn tcp_super_frame(from: &Host, to: &Host, payload: usize, mss: u16) -> (Vec<u8>, Offload) {
    let mut f = vec![0u8; 14 + 20 + 20 + payload];
    ethernet::write_header(&mut f, to.mac, from.mac, ETHERTYPE_IPV4);
    let h = ipv4::Header { src: from.ip, dst: to.ip, protocol: ipv4::PROTO_TCP, ttl: 64, payload_len: 20 + payload };
    ipv4::write_header(&mut f[14..], &h);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&80u16.to_be_bytes());
    f[38..42].copy_from_slice(&7u32.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = 0x18; // PSH|ACK
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let offload = Offload {
        flags: offload::F_NEEDS_CSUM,
        gso_type: offload::GSO_TCPV4,
        hdr_len: 54,
        gso_size: mss,
        csum_start: 34,
        csum_offset: 16,
    };
    (f, offload)
}

/// A TCP super-frame crosses the underlay as one UDP GSO train of VXLAN
/// datagrams (one send), and the other switch joins the train into one
/// super-frame again (one write to the container).
#[test]
fn a_tcp_super_frame_crosses_as_one_train_and_arrives_whole() {
    let (a, b) = (offloading_host(1, 2), offloading_host(2, 1));
    a.container.inject(udp(&a, &b)); // resolves B's VTEP MAC
    underlay(&a, &b);
    b.container.take_all();
    let (frame, offload) = tcp_super_frame(&a, &b, 20_000, 1000);
    a.container.inject_offloaded(frame.clone(), offload);
    a.sw.poll_all();
    let (train, train_offload) = a.uplink.take_offloaded().expect("the train");
    assert!(a.uplink.take().is_none(), "one send for the whole super-frame");
    assert_eq!((train_offload.gso_type, train_offload.gso_size as usize), (offload::GSO_UDP_L4, 8 + 54 + 1000));
    assert_eq!(train.len(), vxlan::TRAIN_HEADERS + 20 * (8 + 54 + 1000));

    b.uplink.inject_offloaded(train.clone(), train_offload);
    b.sw.poll_all();
    let (joined, joined_offload) = b.container.take_offloaded().expect("the super-frame");
    assert!(b.container.take().is_none(), "one write to the container");
    assert_eq!((joined_offload.gso_type, joined_offload.gso_size), (offload::GSO_TCPV4, 1000));
    assert_eq!(joined.len(), frame.len());
    assert_eq!(&joined[54..], &frame[54..], "the payload, in order");

    // A segment too big for one VXLAN datagram is refused, not sent.
    let (huge, huge_offload) = tcp_super_frame(&a, &b, 65_460, 65_460);
    let tx_errors = a.sw.report().drops.tx_error;
    a.container.inject_offloaded(huge, huge_offload);
    a.sw.poll_all();
    assert!(a.uplink.take().is_none(), "sent a datagram past IPv4's length");
    assert_eq!(a.sw.report().drops.tx_error, tx_errors + 1);

    // A train whose datagrams carry another VNI midway is refused whole.
    let mut forged = train;
    let second_vni = vxlan::TRAIN_HEADERS + (8 + 54 + 1000) + 4;
    forged[second_vni] ^= 1;
    b.uplink.inject_offloaded(forged, train_offload);
    b.sw.poll_all();
    assert!(b.container.take().is_none());
    assert_eq!(b.sw.report().drops.malformed, 1);
}

/// Trains stop at 64 datagrams (the kernel's limit); and an uplink that
/// refuses trains gets the datagrams one by one, which the other switch
/// takes as any VXLAN.
#[test]
fn long_super_frames_make_several_trains_and_refused_trains_go_one_by_one() {
    let (a, b) = (offloading_host(1, 2), offloading_host(2, 1));
    a.container.inject(udp(&a, &b));
    underlay(&a, &b);
    let (frame, offload) = tcp_super_frame(&a, &b, 100 * 500, 500);
    a.container.inject_offloaded(frame, offload);
    a.sw.poll_all();
    let trains: Vec<_> = std::iter::from_fn(|| a.uplink.take_offloaded()).collect();
    let datagrams: Vec<usize> =
        trains.iter().map(|(f, o)| (f.len() - vxlan::TRAIN_HEADERS).div_ceil(o.gso_size as usize)).collect();
    assert_eq!(datagrams, vec![64, 36]);

    let (c, d) = (host_on(1, 2, MemPort::with_offloads, true), offloading_host(2, 1));
    c.container.inject(udp(&c, &d));
    underlay(&c, &d);
    d.container.take_all();
    let (frame, offload) = tcp_super_frame(&c, &d, 20 * 1000, 1000);
    c.container.inject_offloaded(frame.clone(), offload);
    c.sw.poll_all();
    let sent = c.uplink.take_all();
    assert_eq!(sent.len(), 20, "one datagram per segment");
    for f in sent {
        d.uplink.inject(f);
    }
    d.sw.poll_all();
    let got = d.container.take_all();
    assert_eq!(got.len(), 20);
    let payload: Vec<u8> = got.iter().flat_map(|seg| seg[54..].to_vec()).collect();
    assert_eq!(payload, frame[54..].to_vec(), "every segment arrived, in order");
}
