//! Routing beyond the networks: masquerade out of the uplink, and replies
//! translated back in. The switch owns an address on the uplink's segment
//! (answering ARP for it with its own MAC, like a separate host) and sends
//! everything beyond its networks to the uplink's next hop.

use crate::conntrack::{Tuple, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::datapath::{Shared, Snapshot};
use crate::fdb::PortId;
use crate::filter;
use crate::neighbour::Neighbour;
use crate::pipeline::{Context, Verdict};
use crate::stats::DropReason;
use proto::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use proto::offload::Offload;
use proto::{arp, checksum, icmp, ipv4, MacAddr};
use std::net::Ipv4Addr;

const L3: usize = ethernet::HEADER_LEN;

/// The uplink as the data path sees it.
pub struct Uplink {
    pub port: PortId,
    /// The address the switch owns on the uplink's segment, and its MAC there.
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// Next hop for everything beyond the networks.
    pub gateway: Ipv4Addr,
    /// Largest IP packet the uplink carries: bigger ones with DF set get
    /// ICMP fragmentation-needed instead of vanishing.
    pub mtu: u32,
    /// Whether the switch answers ARP for `ip` (not when it shares the
    /// host's address: the host does).
    answers_arp: bool,
    /// The next hop's MAC, once ARP told it.
    next_hop: Neighbour,
    /// The IPv6 side, when IPv6 is routed out of the uplink.
    pub v6: Option<crate::route6::Uplink6>,
}

impl Uplink {
    pub fn new(port: PortId, ip: Ipv4Addr, gateway: Ipv4Addr, mtu: u32) -> Uplink {
        Uplink {
            port,
            ip,
            mac: MacAddr::from_ipv4(ip),
            gateway,
            mtu,
            answers_arp: true,
            next_hop: Neighbour::default(),
            v6: None,
        }
    }

    /// An ARP request for the next hop, written into `buf`, unless its MAC
    /// is known or one was sent less than a second ago.
    pub fn gateway_request(&self, buf: &mut [u8]) -> Option<usize> {
        if !self.next_hop.should_ask() {
            return None;
        }
        let us = arp::Host { mac: self.mac, ip: self.ip };
        let them = arp::Host { mac: MacAddr::ZERO, ip: self.gateway };
        Some(arp::write_frame(buf, arp::OP_REQUEST, us, them, MacAddr::BROADCAST))
    }

    /// Use the host's own address and MAC on the uplink, leaving ARP to it.
    pub fn share_host_address(&mut self, mac: MacAddr) {
        self.mac = mac;
        self.answers_arp = false;
    }

    fn gateway_mac(&self) -> Option<MacAddr> {
        self.next_hop.mac()
    }
}

/// Where the translated fields of an IPv4 packet sit.
struct Flow {
    proto: u8,
    /// Offset of the L4 header in the frame.
    l4: usize,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
}

impl Flow {
    /// Offsets of the source and destination "ports" (the echo identifier
    /// for ICMP, which stands for both).
    fn port_offsets(&self) -> (usize, usize) {
        match self.proto {
            PROTO_ICMP => (self.l4 + 4, self.l4 + 4),
            _ => (self.l4, self.l4 + 2),
        }
    }

    fn checksum_offset(&self) -> usize {
        self.l4
            + match self.proto {
                PROTO_TCP => 16,
                PROTO_UDP => 6,
                _ => 2,
            }
    }
}

/// The flow of an unfragmented TCP, UDP or ICMP echo packet; `echo_type`
/// is the ICMP type accepted (request going out, reply coming in; none:
/// no ICMP).
fn parse_flow(frame: &[u8], echo_type: Option<u8>) -> Option<Flow> {
    let ip = ipv4::Packet::parse(&frame[L3..]).ok()?;
    if ip.is_later_fragment() {
        return None; // no L4 header: see `route_fragment_out` and `fragment_in`
    }
    let l4 = L3 + ip.header_len();
    let seg = ip.payload();
    let be16 = |at: usize| u16::from_be_bytes([seg[at], seg[at + 1]]);
    match ip.protocol() {
        PROTO_TCP if seg.len() >= 20 => {
            Some(Flow { proto: PROTO_TCP, l4, sport: be16(0), dport: be16(2), tcp_flags: seg[13] })
        }
        PROTO_UDP if seg.len() >= 8 => {
            Some(Flow { proto: PROTO_UDP, l4, sport: be16(0), dport: be16(2), tcp_flags: 0 })
        }
        PROTO_ICMP if seg.len() >= 8 && Some(seg[0]) == echo_type => {
            Some(Flow { proto: PROTO_ICMP, l4, sport: be16(4), dport: be16(4), tcp_flags: 0 })
        }
        _ => None,
    }
}

/// A container's packet for beyond its network: translate it and send it
/// out of the uplink.
pub(crate) fn route_out(ctx: &Context, frame: &mut [u8], offload: &Offload, scratch: &mut [u8]) -> Verdict {
    let (Some(uplink), false) = (ctx.snap.uplink.as_deref(), ctx.net.spec.internal) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let ip = ipv4::Packet::parse(&frame[L3..]).expect("classified");
    if is_any_network(ctx.snap, ip.dst()) {
        // Between networks there is no route: they are isolated.
        return Verdict::Drop(DropReason::NoRoute);
    }
    if ip.ttl() <= 1 {
        return icmp_error(ctx, &ip, (icmp::TYPE_TIME_EXCEEDED, 0, 0), scratch);
    }
    if ip.dst() == uplink.ip {
        return hairpin(ctx, uplink, frame, offload, scratch);
    }
    if ip.is_later_fragment() {
        return route_fragment_out(ctx, uplink, frame, scratch);
    }
    let Some(flow) = parse_flow(frame, Some(icmp::TYPE_ECHO_REQUEST)) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    if is_to_a_vtep(ctx.snap, &ip, &flow) {
        // Masqueraded behind the uplink (the VTEP), it would enter the
        // peer's overlay networks as this switch's own traffic.
        return Verdict::Drop(DropReason::Spoofed);
    }
    if ip.dont_fragment() && wire_len(frame, &ip, offload, &flow) > uplink.mtu as usize {
        return icmp_error(ctx, &ip, (icmp::TYPE_DEST_UNREACHABLE, icmp::CODE_FRAG_NEEDED, uplink.mtu), scratch);
    }
    let Some(next_hop) = uplink.gateway_mac() else {
        return resolve_gateway(uplink, scratch);
    };
    if ctx.net.spec.masquerade {
        let Some(nat_port) = track_out(ctx, &ip, &flow) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        rewrite(frame, offload, &flow, Side::Source, uplink.ip, nat_port);
    }
    decrement_ttl(frame);
    ethernet::write_header(frame, next_hop, uplink.mac, ETHERTYPE_IPV4);
    Verdict::Forward(uplink.port)
}

/// The external port of a container's flow out, tracking it if new.
fn track_out(ctx: &Context, ip: &ipv4::Packet, flow: &Flow) -> Option<u16> {
    let orig = Tuple { proto: flow.proto, src: ip.src(), sport: flow.sport, dst: ip.dst(), dport: flow.dport };
    ctx.shared.conntrack.lock().outbound(ctx.net.spec.index, orig, flow.tcp_flags, ctx.now)
}

/// A container's packet to the uplink address itself: a ping is answered;
/// anything else is masqueraded and delivered in again at once, as if it
/// had come back from the wire, so it reaches a published port's
/// container (hairpin).
fn hairpin(ctx: &Context, uplink: &Uplink, frame: &mut [u8], offload: &Offload, scratch: &mut [u8]) -> Verdict {
    let ip = ipv4::Packet::parse(&frame[L3..]).expect("classified");
    if is_echo_request(&ip) {
        let reply = icmp::write_echo_reply(scratch, &ip, ctx.in_port.spec.mac, ctx.net.spec.gateway_mac);
        return reply.map(Verdict::Reply).unwrap_or(Verdict::Drop(DropReason::Malformed));
    }
    let Some(flow) = parse_flow(frame, None) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let Some(nat_port) = track_out(ctx, &ip, &flow) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    rewrite(frame, offload, &flow, Side::Source, uplink.ip, nat_port);
    decrement_ttl(frame);
    deliver_in(ctx.snap, ctx.shared, ctx.now, uplink, frame, offload, scratch)
}

/// A later fragment of a datagram going out: no ports to translate, only
/// the source address (the first fragment carried the L4 header and its
/// checksum, which covers the whole datagram).
fn route_fragment_out(ctx: &Context, uplink: &Uplink, frame: &mut [u8], scratch: &mut [u8]) -> Verdict {
    let Some(next_hop) = uplink.gateway_mac() else {
        return resolve_gateway(uplink, scratch);
    };
    if ctx.net.spec.masquerade {
        set_address(frame, Side::Source, uplink.ip);
    }
    decrement_ttl(frame);
    ethernet::write_header(frame, next_hop, uplink.mac, ETHERTYPE_IPV4);
    Verdict::Forward(uplink.port)
}

fn is_echo_request(ip: &ipv4::Packet) -> bool {
    matches!(icmp::is_echo_request(ip), Ok(true))
}

/// The IP length the packet will have on the wire: a GSO super-frame is
/// cut into segments of its MSS first.
fn wire_len(frame: &[u8], ip: &ipv4::Packet, offload: &Offload, flow: &Flow) -> usize {
    if offload.is_gso() && flow.proto == PROTO_TCP {
        let tcp_header = ((frame[flow.l4 + 12] >> 4) as usize) * 4;
        return flow.l4 - L3 + tcp_header + offload.gso_size as usize;
    }
    ip.total_len()
}

/// An ICMP error about `ip` back to the container that sent it, from its
/// gateway.
fn icmp_error(ctx: &Context, ip: &ipv4::Packet, what: (u8, u8, u32), scratch: &mut [u8]) -> Verdict {
    if !ctx.shared.icmp_errors.take(ctx.now) {
        return Verdict::Drop(DropReason::NoRoute);
    }
    let from = (ctx.net.spec.gateway_mac, ctx.net.spec.gateway);
    Verdict::Reply(icmp::write_error(scratch, what, ip, from, ctx.in_port.spec.mac))
}

fn is_to_a_vtep(snap: &Snapshot, ip: &ipv4::Packet, flow: &Flow) -> bool {
    let overlay = &snap.overlay;
    flow.proto == PROTO_UDP && flow.dport == overlay.udp_port && overlay.neighbours.contains_key(&ip.dst())
}

fn is_any_network(snap: &Snapshot, ip: Ipv4Addr) -> bool {
    snap.networks.values().any(|d| d.spec.subnet.contains(&ip))
}

/// Ask for the next hop's MAC (at most once a second); the packet that
/// needed it is lost, as a kernel without a neighbour entry would queue
/// and then drop it.
fn resolve_gateway(uplink: &Uplink, scratch: &mut [u8]) -> Verdict {
    match uplink.gateway_request(scratch) {
        Some(len) => Verdict::Send(uplink.port, len),
        None => Verdict::Drop(DropReason::NoRoute),
    }
}

/// A frame that came in on the uplink: ARP for our address, or a reply to
/// a tracked flow, translated back to its container.
pub(crate) fn from_uplink(ctx: &UplinkContext, frame: &mut [u8], offload: &Offload, scratch: &mut [u8]) -> Verdict {
    let eth = match crate::pipeline::classify(frame) {
        Ok(eth) => eth,
        Err(reason) => return Verdict::Drop(reason),
    };
    if filter::verdict(&ctx.snap.rules, filter::Entry::Uplink, frame) == Some(filter::Action::Drop) {
        return Verdict::Drop(DropReason::Rule);
    }
    match eth.ethertype() {
        ETHERTYPE_ARP => uplink_arp(ctx, &eth, scratch),
        ETHERTYPE_IPV4 if eth.dst() == ctx.uplink.mac => match crate::overlay::decapsulate(ctx, frame, offload) {
            Some(verdict) => verdict,
            None => deliver_in(ctx.snap, ctx.shared, ctx.now, ctx.uplink, frame, offload, scratch),
        },
        ETHERTYPE_IPV6 => crate::route6::from_uplink(ctx, frame, offload, scratch),
        _ => Verdict::Drop(DropReason::NotForUs),
    }
}

/// What the uplink path sees besides the frame.
pub(crate) struct UplinkContext<'a> {
    pub snap: &'a Snapshot,
    pub shared: &'a Shared,
    pub uplink: &'a Uplink,
    pub now: u32,
}

/// The uplink address answers ping, as the separate host it stands for.
fn echo_reply(uplink: &Uplink, frame: &[u8], scratch: &mut [u8]) -> Verdict {
    let eth = ethernet::Frame::parse(frame).expect("classified");
    let ip = ipv4::Packet::parse(eth.payload()).expect("classified");
    match icmp::write_echo_reply(scratch, &ip, eth.src(), uplink.mac) {
        Some(len) => Verdict::Reply(len),
        None => Verdict::Drop(DropReason::Malformed),
    }
}

fn uplink_arp(ctx: &UplinkContext, eth: &ethernet::Frame, scratch: &mut [u8]) -> Verdict {
    let uplink = ctx.uplink;
    let Ok(p) = arp::Packet::parse(eth.payload()) else {
        return Verdict::Drop(DropReason::Malformed);
    };
    if p.sender_ip() == uplink.gateway {
        uplink.next_hop.learn(p.sender_mac());
    }
    if let Some(vtep) = ctx.snap.overlay.neighbours.get(&p.sender_ip()) {
        vtep.learn(p.sender_mac());
    }
    match (p.op(), p.target_ip() == uplink.ip) {
        (arp::OP_REQUEST, true) if uplink.answers_arp => {
            let us = arp::Host { mac: uplink.mac, ip: uplink.ip };
            let asker = arp::Host { mac: p.sender_mac(), ip: p.sender_ip() };
            Verdict::Reply(arp::write_frame(scratch, arp::OP_REPLY, us, asker, eth.src()))
        }
        (arp::OP_REPLY, true) => Verdict::Consumed,
        _ => Verdict::Drop(DropReason::NotForUs),
    }
}

/// A packet to the uplink address: translated to the container of the
/// flow it belongs to and sent there.
fn deliver_in(
    snap: &Snapshot,
    shared: &Shared,
    now: u32,
    uplink: &Uplink,
    frame: &mut [u8],
    offload: &Offload,
    scratch: &mut [u8],
) -> Verdict {
    let uplink_ip = uplink.ip;
    let ip = ipv4::Packet::parse(&frame[L3..]).expect("classified");
    if !ip.header_checksum_ok() {
        return Verdict::Drop(DropReason::Malformed); // corrupted on the wire: translate nothing
    }
    if ip.ttl() <= 1 {
        return Verdict::Drop(DropReason::NotForUs);
    }
    if ip.dst() != uplink_ip {
        return route_in(snap, ip.dst(), frame);
    }
    let remote = ip.src();
    if ip.is_later_fragment() {
        return fragment_in(snap, shared, frame);
    }
    if ip.protocol() == PROTO_ICMP && !ip.is_fragment() && is_icmp_error(ip.payload()) {
        return translate_error(snap, shared, now, uplink_ip, frame);
    }
    if is_echo_request(&ip) {
        return echo_reply(uplink, frame, scratch); // answered like the host it stands for
    }
    let first_fragment = ip.is_fragment().then(|| (ip.protocol(), remote, ip.ident()));
    let Some(flow) = parse_flow(frame, Some(icmp::TYPE_ECHO_REPLY)) else {
        return Verdict::Drop(DropReason::NotForUs);
    };
    let Some(target) = inbound_target(snap, shared, now, &flow, remote) else {
        return Verdict::Drop(DropReason::NotForUs);
    };
    let Some(net) = snap.networks.get(&target.network) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let Some(&(mac, port)) = net.neighbours.get(&target.ip) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    if let Some(key) = first_fragment {
        shared.fragments.lock().remember(key, (target.network, target.ip), now);
    }
    rewrite(frame, offload, &flow, Side::Destination, target.ip, target.port);
    decrement_ttl(frame);
    ethernet::write_header(frame, mac, net.spec.gateway_mac, ETHERTYPE_IPV4);
    Verdict::Forward(port)
}

/// A later fragment of a datagram coming in: it goes where its first
/// fragment went (a later fragment that overtook its first is dropped, and
/// the datagram with it, as the receiver would time it out anyway).
fn fragment_in(snap: &Snapshot, shared: &Shared, frame: &mut [u8]) -> Verdict {
    let ip = ipv4::Packet::parse(&frame[L3..]).expect("classified");
    let key = (ip.protocol(), ip.src(), ip.ident());
    let Some((network, container)) = shared.fragments.lock().lookup(&key) else {
        return Verdict::Drop(DropReason::NotForUs);
    };
    let Some(net) = snap.networks.get(&network) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let Some(&(mac, port)) = net.neighbours.get(&container) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    set_address(frame, Side::Destination, container);
    decrement_ttl(frame);
    ethernet::write_header(frame, mac, net.spec.gateway_mac, ETHERTYPE_IPV4);
    Verdict::Forward(port)
}

/// A packet from outside for a container of a network without masquerade:
/// routed in as it is.
fn route_in(snap: &Snapshot, dst: Ipv4Addr, frame: &mut [u8]) -> Verdict {
    let routed =
        snap.networks.values().find(|d| !d.spec.masquerade && !d.spec.internal && d.spec.subnet.contains(&dst));
    let Some(net) = routed else {
        return Verdict::Drop(DropReason::NotForUs);
    };
    let Some(&(mac, port)) = net.neighbours.get(&dst) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    decrement_ttl(frame);
    ethernet::write_header(frame, mac, net.spec.gateway_mac, ETHERTYPE_IPV4);
    Verdict::Forward(port)
}

fn is_icmp_error(message: &[u8]) -> bool {
    matches!(message.first(), Some(&icmp::TYPE_DEST_UNREACHABLE | &icmp::TYPE_TIME_EXCEEDED))
}

/// An ICMP error from outside about a packet we translated (port
/// unreachable, fragmentation needed, time exceeded): translated back to
/// the container it concerns, the quoted packet included.
fn translate_error(snap: &Snapshot, shared: &Shared, now: u32, uplink_ip: Ipv4Addr, frame: &mut [u8]) -> Verdict {
    let ip = ipv4::Packet::parse(&frame[L3..]).expect("classified");
    let (outer_header, end) = (ip.header_len(), L3 + ip.total_len());
    let quoted = L3 + outer_header + 8;
    // The quoted packet is cut short, so its own lengths cannot be checked
    // against it: check what is read here instead.
    if quoted + 20 > end || frame[quoted] >> 4 != 4 {
        return Verdict::Drop(DropReason::Malformed);
    }
    let quoted_l4 = quoted + ((frame[quoted] & 0x0f) as usize) * 4;
    if quoted_l4 + 8 > end || frame[quoted + 12..quoted + 16] != uplink_ip.octets() {
        return Verdict::Drop(DropReason::NotForUs);
    }
    let proto = frame[quoted + 9];
    let remote = Ipv4Addr::from(<[u8; 4]>::try_from(&frame[quoted + 16..quoted + 20]).unwrap());
    let at = |o: usize| u16::from_be_bytes([frame[o], frame[o + 1]]);
    let (nat_port_at, remote_port) = match proto {
        PROTO_ICMP => (quoted_l4 + 4, at(quoted_l4 + 4)),
        PROTO_TCP | PROTO_UDP => (quoted_l4, at(quoted_l4 + 2)),
        _ => return Verdict::Drop(DropReason::NotForUs),
    };
    let entry = shared.conntrack.lock().inbound(proto, remote, remote_port, at(nat_port_at), 0, now);
    let Some(entry) = entry else {
        return Verdict::Drop(DropReason::NotForUs);
    };
    let Some(net) = snap.networks.get(&entry.network) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let Some(&(mac, port)) = net.neighbours.get(&entry.orig.src) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let container = entry.orig.src.octets();
    frame[L3 + 16..L3 + 20].copy_from_slice(&container);
    update_field(frame, L3 + 10, |sum| checksum::update(sum, &uplink_ip.octets(), &container));
    frame[quoted + 12..quoted + 16].copy_from_slice(&container);
    update_field(frame, quoted + 10, |sum| checksum::update(sum, &uplink_ip.octets(), &container));
    frame[nat_port_at..nat_port_at + 2].copy_from_slice(&entry.orig.sport.to_be_bytes());
    // The message changed in several places: sum it afresh.
    let message = L3 + outer_header;
    frame[message + 2..message + 4].fill(0);
    let sum = checksum::compute(&frame[message..end]);
    frame[message + 2..message + 4].copy_from_slice(&sum.to_be_bytes());
    decrement_ttl(frame);
    ethernet::write_header(frame, mac, net.spec.gateway_mac, ETHERTYPE_IPV4);
    Verdict::Forward(port)
}

/// Where a packet from outside goes: the container of the tracked flow it
/// answers, or of the published port it is addressed to (tracked from now
/// on, so the container's answers leave from that port).
fn inbound_target(snap: &Snapshot, shared: &Shared, now: u32, flow: &Flow, remote: Ipv4Addr) -> Option<Published> {
    let mut conntrack = shared.conntrack.lock();
    if let Some(e) = conntrack.inbound(flow.proto, remote, flow.sport, flow.dport, flow.tcp_flags, now) {
        return Some(Published { network: e.network, ip: e.orig.src, port: e.orig.sport });
    }
    let target = *snap.published.get(&(flow.proto, flow.dport))?;
    let orig = Tuple { proto: flow.proto, src: target.ip, sport: target.port, dst: remote, dport: flow.sport };
    conntrack.inbound_published(target.network, orig, flow.dport, flow.tcp_flags, now);
    Some(target)
}

/// Where the later fragments of a datagram coming in go: (protocol,
/// sender, IP identification) → (network, container), learned from the
/// first fragment, forgotten after [`FRAGMENT_TIMEOUT_SECS`].
#[derive(Default)]
pub struct Fragments {
    map: rustc_hash::FxHashMap<FragmentKey, ((u32, Ipv4Addr), u32)>,
}

type FragmentKey = (u8, Ipv4Addr, u16);
const FRAGMENT_TIMEOUT_SECS: u32 = 30;
/// Datagrams in reassembly at once; beyond, the oldest 1/64 are forgotten.
const MAX_FRAGMENTED: usize = 4096;

impl Fragments {
    fn remember(&mut self, key: FragmentKey, target: (u32, Ipv4Addr), now: u32) {
        if self.map.len() >= MAX_FRAGMENTED {
            self.forget_oldest(MAX_FRAGMENTED / 64);
        }
        self.map.insert(key, (target, now));
    }

    fn forget_oldest(&mut self, count: usize) {
        let mut by_age: Vec<(u32, FragmentKey)> = self.map.iter().map(|(k, (_, seen))| (*seen, *k)).collect();
        by_age.select_nth_unstable_by_key(count, |(seen, _)| *seen);
        for (_, key) in &by_age[..count] {
            self.map.remove(key);
        }
    }

    fn lookup(&self, key: &FragmentKey) -> Option<(u32, Ipv4Addr)> {
        self.map.get(key).map(|(target, _)| *target)
    }

    pub fn expire(&mut self, now: u32) {
        self.map.retain(|_, (_, seen)| now.saturating_sub(*seen) < FRAGMENT_TIMEOUT_SECS);
    }
}

/// Where a published host port leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// Data-path index of the container's network.
    pub network: u32,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// (protocol, host port) → container, for every published port.
pub type PublishedPorts = rustc_hash::FxHashMap<(u8, u16), Published>;

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Source,
    Destination,
}

/// Replace the source or destination address and port of an IPv4 packet,
/// keeping the IP and L4 checksums right by incremental update (RFC 1624).
/// A partial checksum (left for the receiver to finish) holds only the
/// pseudo-header sum: the address change goes into it, the port change is
/// covered when it is finished.
fn rewrite(frame: &mut [u8], offload: &Offload, flow: &Flow, side: Side, ip: Ipv4Addr, port: u16) {
    let old_ip = set_address(frame, side, ip);
    let new_ip = ip.octets();

    let (sport_at, dport_at) = flow.port_offsets();
    let port_at = if side == Side::Source { sport_at } else { dport_at };
    let old_port: [u8; 2] = frame[port_at..port_at + 2].try_into().unwrap();
    let new_port = port.to_be_bytes();
    frame[port_at..port_at + 2].copy_from_slice(&new_port);

    let csum_at = flow.checksum_offset();
    let has_pseudo_header = flow.proto != PROTO_ICMP;
    if offload.needs_csum() {
        if has_pseudo_header {
            update_field(frame, csum_at, |f| checksum::update_partial(f, &old_ip, &new_ip));
        }
        return;
    }
    if flow.proto == PROTO_UDP && frame[csum_at..csum_at + 2] == [0, 0] {
        return; // UDP without a checksum stays without one
    }
    update_field(frame, csum_at, |mut sum| {
        if has_pseudo_header {
            sum = checksum::update(sum, &old_ip, &new_ip);
        }
        match checksum::update(sum, &old_port, &new_port) {
            0 if flow.proto == PROTO_UDP => 0xffff,
            sum => sum,
        }
    });
}

/// Replace the source or destination address, keeping the IP header
/// checksum right; returns the old address.
fn set_address(frame: &mut [u8], side: Side, ip: Ipv4Addr) -> [u8; 4] {
    let at = L3 + if side == Side::Source { 12 } else { 16 };
    let old: [u8; 4] = frame[at..at + 4].try_into().unwrap();
    frame[at..at + 4].copy_from_slice(&ip.octets());
    update_field(frame, L3 + 10, |sum| checksum::update(sum, &old, &ip.octets()));
    old
}

fn decrement_ttl(frame: &mut [u8]) {
    let at = L3 + 8;
    let old = [frame[at], frame[at + 1]];
    frame[at] -= 1;
    let new = [frame[at], frame[at + 1]];
    update_field(frame, L3 + 10, |sum| checksum::update(sum, &old, &new));
}

fn update_field(frame: &mut [u8], at: usize, f: impl FnOnce(u16) -> u16) {
    let value = f(u16::from_be_bytes([frame[at], frame[at + 1]]));
    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
}
