//! Offloaded frames through the pipeline: GSO super-frames and partial
//! checksums go whole to ports that take them, and are segmented or
//! finished in software for ports that do not.

use ports::mem::MemPort;
use ports::Offload;
use proto::ethernet::{self, ETHERTYPE_IPV4};
use proto::offload::{F_NEEDS_CSUM, GSO_TCPV4};
use proto::{checksum, icmp, ipv4, MacAddr};
use std::net::Ipv4Addr;
use std::sync::Arc;
use switch::{NetworkSpec, PortSpec, Switch};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

fn switch_with(ports: &[(u8, Arc<MemPort>)]) -> Switch {
    let sw = Switch::start(0).unwrap();
    sw.add_network(NetworkSpec::bridge(1, "n", "10.1.0.0/16".parse().unwrap(), GATEWAY)).unwrap();
    for (last, port) in ports {
        let ip = host_ip(*last);
        let spec = PortSpec {
            network: 1,
            name: format!("h{last}"),
            mac: MacAddr::from_ipv4(ip),
            ipv4: ip,
            ipv6: None,
            queues: vec![port.clone()],
        };
        sw.add_port(spec).unwrap();
    }
    sw
}

fn host_ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, last)
}

/// TCP sum over the pseudo-header and segment: 0 when the checksum is right.
fn tcp_checksum_ok(frame: &[u8]) -> bool {
    let ip = ipv4::Packet::parse(&frame[14..]).unwrap();
    let len = ip.payload().len() as u32;
    let pseudo = checksum::sum(&frame[26..34], ipv4::PROTO_TCP as u32 + len);
    checksum::finish(checksum::sum(ip.payload(), pseudo)) == 0
}

/// A TCP frame from host 2 to `to` with `payload` bytes and a partial
/// checksum, as a TAP with offloads hands it over.
fn tcp_super_frame(to: u8, payload: usize, gso_size: u16) -> (Vec<u8>, Offload) {
    let (src, dst) = (host_ip(2), host_ip(to));
    let mut f = vec![0u8; 14 + 20 + 20 + payload];
    ethernet::write_header(&mut f, MacAddr::from_ipv4(dst), MacAddr::from_ipv4(src), ETHERTYPE_IPV4);
    let h = ipv4::Header { src, dst, protocol: ipv4::PROTO_TCP, ttl: 64, payload_len: 20 + payload };
    ipv4::write_header(&mut f[14..], &h);
    f[34 + 4..34 + 8].copy_from_slice(&7u32.to_be_bytes());
    f[34 + 12] = 5 << 4;
    f[34 + 13] = 0x18; // PSH|ACK
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    let pseudo = checksum::sum(&f[26..34], ipv4::PROTO_TCP as u32 + 20 + payload as u32);
    let partial = !checksum::finish(pseudo);
    f[34 + 16..34 + 18].copy_from_slice(&partial.to_be_bytes());
    let gso_type = if gso_size > 0 { GSO_TCPV4 } else { 0 };
    let offload = Offload { flags: F_NEEDS_CSUM, gso_type, gso_size, csum_start: 34, csum_offset: 16, hdr_len: 54 };
    (f, offload)
}

#[test]
fn super_frames_go_whole_to_ports_that_take_offloads() {
    let (a, b) = (Arc::new(MemPort::with_offloads(64)), Arc::new(MemPort::with_offloads(64)));
    let sw = switch_with(&[(2, a.clone()), (3, b.clone())]);
    let (frame, offload) = tcp_super_frame(3, 60_000, 1448);
    a.inject_offloaded(frame.clone(), offload);
    sw.poll_all();
    assert_eq!(b.take_offloaded(), Some((frame, offload)));
    assert!(b.take().is_none());
}

#[test]
fn super_frames_are_segmented_for_ports_without_offloads() {
    let (a, b) = (Arc::new(MemPort::with_offloads(64)), Arc::new(MemPort::new(64)));
    let sw = switch_with(&[(2, a.clone()), (3, b.clone())]);
    let (frame, offload) = tcp_super_frame(3, 10_000, 1448);
    a.inject_offloaded(frame.clone(), offload);
    sw.poll_all();
    let segments = b.take_all();
    assert_eq!(segments.len(), 7);
    let mut payload = vec![];
    for seg in &segments {
        assert!(seg.len() <= 14 + 40 + 1448);
        assert!(ipv4::Packet::parse(&seg[14..]).unwrap().header_checksum_ok());
        assert!(tcp_checksum_ok(seg));
        payload.extend_from_slice(&seg[54..]);
    }
    assert_eq!(payload, frame[54..].to_vec(), "the stream arrives whole and in order");
}

#[test]
fn partial_checksums_are_finished_for_ports_without_offloads() {
    let tap_like = Arc::new(MemPort::with_offloads(64));
    let (a, wire) = (Arc::new(MemPort::with_offloads(64)), Arc::new(MemPort::new(64)));
    let sw = switch_with(&[(2, a.clone()), (3, tap_like.clone()), (4, wire.clone())]);
    // Unknown unicast: flooded to a port with offloads and one without.
    let (mut frame, offload) = tcp_super_frame(9, 500, 0);
    frame[0..6].copy_from_slice(&[2, 9, 9, 9, 9, 9]);
    assert!(!tcp_checksum_ok(&frame));
    a.inject_offloaded(frame, offload);
    sw.poll_all();
    let finished = wire.take().unwrap();
    assert!(tcp_checksum_ok(&finished));
    assert_eq!(tap_like.take_all().len(), 1);
    assert_eq!(sw.report().drops.malformed, 0);
}

/// An echo request from host 2 to the gateway.
fn echo_to_gateway() -> Vec<u8> {
    let me = (MacAddr::from_ipv4(host_ip(2)), host_ip(2));
    let mut req = vec![0u8; 128];
    let len = icmp::write_echo_request(&mut req, me, (MacAddr::from_ipv4(GATEWAY), GATEWAY), 1, 1, b"abc");
    req.truncate(len);
    req
}

#[test]
fn the_gateway_finishes_a_partial_checksum_before_reading_it() {
    let a = Arc::new(MemPort::with_offloads(64));
    let sw = switch_with(&[(2, a.clone())]);
    let mut req = echo_to_gateway();
    req[34 + 2..34 + 4].fill(0); // left for the "hardware" to fill in
    let offload = Offload { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 2, ..Offload::NONE };
    a.inject_offloaded(req, offload);
    sw.poll_all();
    let reply = a.take().expect("echo reply");
    let ip = ipv4::Packet::parse(&reply[14..]).unwrap();
    assert_eq!(ip.payload()[0], icmp::TYPE_ECHO_REPLY);
}

#[test]
fn lying_offload_metadata_is_counted_not_trusted() {
    let (a, b) = (Arc::new(MemPort::with_offloads(64)), Arc::new(MemPort::new(64)));
    let sw = switch_with(&[(2, a.clone()), (3, b.clone())]);
    let (frame, offload) = tcp_super_frame(3, 3000, 1448);
    a.inject_offloaded(frame.clone(), Offload { csum_offset: 9000, gso_type: 0, ..offload });
    a.inject_offloaded(frame.clone(), Offload { gso_size: 0, ..offload });
    a.inject_offloaded(frame[..60].to_vec(), offload);
    sw.poll_all();
    assert!(b.take_all().is_empty());
    let report = sw.report();
    assert_eq!(report.drops.malformed, 3);
    assert_eq!(report.ports.iter().find(|p| p.name == "h2").unwrap().rx_drops, 3, "counted where they came in");
}

#[test]
fn offload_metadata_pointing_into_the_headers_is_refused_not_obeyed() {
    let a = Arc::new(MemPort::with_offloads(64));
    let sw = switch_with(&[(2, a.clone())]);
    let req = echo_to_gateway();
    // "Finish a checksum" over the Ethernet header, onto the EtherType.
    let hostile = Offload { flags: F_NEEDS_CSUM, csum_start: 0, csum_offset: 12, ..Offload::NONE };
    a.inject_offloaded(req, hostile);
    sw.poll_all();
    assert!(a.take_all().is_empty());
    assert_eq!(sw.report().drops.malformed, 1);
}

#[test]
fn random_offload_metadata_never_panics() {
    let (a, b) = (Arc::new(MemPort::with_offloads(64)), Arc::new(MemPort::new(64)));
    let sw = switch_with(&[(2, a.clone()), (3, b.clone())]);
    let (tcp, _) = tcp_super_frame(3, 3000, 1448);
    let ping = echo_to_gateway();
    let mut seed = 0x1234_5678_9abc_def0u64;
    for i in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let offload = Offload {
            flags: (seed & 3) as u8,
            gso_type: [0, 1, 3, 4, 5, 0x81][(seed >> 2) as usize % 6],
            hdr_len: (seed >> 8) as u16,
            gso_size: (seed >> 24) as u16 % 2000,
            csum_start: (seed >> 40) as u16 % 200,
            csum_offset: (seed >> 48) as u16 % 64,
        };
        let frame = if i % 2 == 0 { tcp.clone() } else { ping.clone() };
        a.inject_offloaded(frame, offload);
        sw.poll_all();
        a.take_all();
        b.take_all();
    }
}
