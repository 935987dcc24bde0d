//! IPv6 beyond the networks: routed, not translated (as Docker routes IPv6).
//! Containers' packets for the world outside leave by the uplink towards
//! its IPv6 next hop with their own addresses; packets from outside for a
//! container's address come in by the uplink. On the uplink's segment the
//! switch answers neighbour solicitations for every container's global
//! address (the NDP proxy Docker leaves to `ip -6 neigh add proxy`), so a
//! router that sees the containers' subnet on-link reaches them without a
//! route; a router with a route to the subnet via the switch works too.

use crate::datapath::Snapshot;
use crate::nat::UplinkContext;
use crate::neighbour::Neighbour;
use crate::pipeline::{Context, Verdict};
use crate::stats::DropReason;
use proto::ethernet::{self, ETHERTYPE_IPV6};
use proto::icmpv6::{self, TYPE_NEIGHBOR_ADVERT, TYPE_NEIGHBOR_SOLICIT};
use proto::offload::Offload;
use proto::{ipv6, ndp, MacAddr};
use std::net::Ipv6Addr;

const L3: usize = ethernet::HEADER_LEN;
/// Where the hop limit sits in the IPv6 header.
const HOP_LIMIT_AT: usize = L3 + 7;

/// The uplink's IPv6 side.
pub struct Uplink6 {
    /// The switch's global address on the uplink's segment, if it has one.
    pub ip: Option<Ipv6Addr>,
    /// Its link-local address there (derived from the uplink MAC).
    pub link_local: Ipv6Addr,
    /// Next hop for IPv6 beyond the networks.
    pub gateway: Ipv6Addr,
    /// Whether the switch answers for its own addresses (not when it
    /// shares the host's interface address and MAC: the host does).
    answers_own: bool,
    next_hop: Neighbour,
}

impl Uplink6 {
    pub fn new(ip: Option<Ipv6Addr>, gateway: Ipv6Addr, mac: MacAddr, answers_own: bool) -> Uplink6 {
        Uplink6 {
            ip,
            link_local: ipv6::link_local_from_mac(mac.octets()),
            gateway,
            answers_own,
            next_hop: Neighbour::default(),
        }
    }

    /// The address the switch speaks from on the uplink.
    fn source(&self) -> Ipv6Addr {
        self.ip.unwrap_or(self.link_local)
    }

    fn is_own(&self, ip: Ipv6Addr) -> bool {
        self.ip == Some(ip) || ip == self.link_local
    }

    fn gateway_mac(&self) -> Option<MacAddr> {
        self.next_hop.mac()
    }

    /// A solicitation for the next hop, unless its MAC is known or one was
    /// sent less than a second ago.
    pub fn gateway_solicit(&self, mac: MacAddr, buf: &mut [u8]) -> Option<usize> {
        if !self.next_hop.should_ask() {
            return None;
        }
        let len = ndp::write_solicit(buf, ndp::Host { mac, ip: self.source() }, self.gateway);
        (len > 0).then_some(len)
    }
}

/// Whether `ip` is a global unicast address a router may forward.
fn is_routable(ip: Ipv6Addr) -> bool {
    !(ip.is_multicast() || ip.is_unicast_link_local() || ip.is_loopback() || ip.is_unspecified())
}

/// A container's packet for an address beyond every network: out of the
/// uplink to the next hop, hop limit decremented; an ICMPv6 error back to
/// the container when the hop limit runs out or the packet is too big.
pub(crate) fn route_out(ctx: &Context, frame: &mut [u8], offload: &Offload, scratch: &mut [u8]) -> Verdict {
    let ip = ipv6::Packet::parse(&frame[L3..]).expect("classified");
    let uplink = ctx.snap.uplink.as_deref();
    let (Some(uplink), Some(v6), false) = (uplink, uplink.and_then(|u| u.v6.as_ref()), ctx.net.spec.internal) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    if !is_routable(ip.dst()) || network_of(ctx.snap, ip.dst()).is_some() {
        // Between networks there is no route: they are isolated.
        return Verdict::Drop(DropReason::NoRoute);
    }
    if !ctx.net.spec.ipv6.is_some_and(|own| own.subnet.contains(&ip.src())) {
        // Nothing is translated: a source outside the network (or a
        // link-local one, RFC 4291 2.5.6) would be another host's replies.
        return Verdict::Drop(DropReason::Spoofed);
    }
    if ip.hop_limit() <= 1 {
        return error_to_container(ctx, &ip, (icmpv6::TYPE_TIME_EXCEEDED, 0, 0), scratch);
    }
    if wire_len(frame, &ip, offload) > uplink.mtu as usize {
        return error_to_container(ctx, &ip, (icmpv6::TYPE_PACKET_TOO_BIG, 0, uplink.mtu), scratch);
    }
    if v6.is_own(ip.dst()) {
        if let Some(target) = v6.ip.and_then(|own| crate::published6::hairpin(ctx, own, frame, offload)) {
            return deliver(frame, target);
        }
        let ip = ipv6::Packet::parse(&frame[L3..]).expect("classified");
        return answer_echo(&ip, (ctx.in_port.spec.mac, ctx.net.spec.gateway_mac), scratch);
    }
    let Some(next_hop) = v6.gateway_mac() else {
        return match v6.gateway_solicit(uplink.mac, scratch) {
            Some(len) => Verdict::Send(uplink.port, len),
            None => Verdict::Drop(DropReason::NoRoute),
        };
    };
    if let Some(uplink_ip6) = v6.ip {
        crate::published6::outbound(ctx, uplink_ip6, frame, offload);
    }
    frame[HOP_LIMIT_AT] -= 1;
    ethernet::write_header(frame, next_hop, uplink.mac, ETHERTYPE_IPV6);
    Verdict::Forward(uplink.port)
}

/// The IP length the packet will have on the wire: a TCP GSO super-frame
/// is cut into segments of its MSS first.
fn wire_len(frame: &[u8], ip: &ipv6::Packet, offload: &Offload) -> usize {
    let l4 = L3 + ipv6::HEADER_LEN;
    if offload.is_gso() && ip.next_header() == crate::conntrack::PROTO_TCP && frame.len() >= l4 + 20 {
        let tcp_header = ((frame[l4 + 12] >> 4) as usize) * 4;
        return ipv6::HEADER_LEN + tcp_header + offload.gso_size as usize;
    }
    ip.bytes().len()
}

/// An ICMPv6 error about `ip` back to the container that sent it, from its
/// gateway (fe80::1 when the container spoke from its link-local address).
fn error_to_container(ctx: &Context, ip: &ipv6::Packet, what: (u8, u8, u32), scratch: &mut [u8]) -> Verdict {
    if !icmpv6::may_answer_with_error(ip) || !ctx.shared.icmp_errors.take(ctx.now) {
        return Verdict::Drop(DropReason::NoRoute);
    }
    let Some(v6) = ctx.net.spec.ipv6 else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let src = if ip.src().is_unicast_link_local() { ipv6::LINK_LOCAL_GATEWAY } else { v6.gateway };
    match icmpv6::write_error(scratch, what, ip, (ctx.net.spec.gateway_mac, src), ctx.in_port.spec.mac) {
        0 => Verdict::Drop(DropReason::Malformed),
        len => Verdict::Reply(len),
    }
}

/// An echo reply to `ip` if it is an echo request, sent to `macs.0` from `macs.1`.
fn answer_echo(ip: &ipv6::Packet, (to, from): (MacAddr, MacAddr), scratch: &mut [u8]) -> Verdict {
    match icmpv6::is_echo_request(ip) {
        Ok(true) => match icmpv6::write_echo_reply(scratch, ip, to, from) {
            Some(len) => Verdict::Reply(len),
            None => Verdict::Drop(DropReason::Malformed),
        },
        Ok(false) => Verdict::Drop(DropReason::NotForUs),
        Err(_) => Verdict::Drop(DropReason::Malformed),
    }
}

/// The network whose IPv6 subnet holds `ip`.
fn network_of(snap: &Snapshot, ip: Ipv6Addr) -> Option<&crate::datapath::Domain> {
    snap.networks.values().map(|d| &**d).find(|d| d.spec.ipv6.is_some_and(|v6| v6.subnet.contains(&ip)))
}

/// An IPv6 frame from the uplink: neighbour discovery for the switch's
/// and the containers' addresses, or a packet routed in to a container.
pub(crate) fn from_uplink(ctx: &UplinkContext, frame: &mut [u8], offload: &Offload, scratch: &mut [u8]) -> Verdict {
    let Some(v6) = ctx.uplink.v6.as_ref() else {
        return Verdict::Drop(DropReason::NotForUs);
    };
    let eth = ethernet::Frame::parse(frame).expect("classified");
    let ip = ipv6::Packet::parse(eth.payload()).expect("classified");
    if ip.src() == v6.gateway {
        v6.next_hop.learn(eth.src());
    }
    match icmpv6::message(&ip).map(|m| m[0]) {
        Some(TYPE_NEIGHBOR_SOLICIT) => return answer_solicit(ctx, v6, &eth, &ip, scratch),
        Some(TYPE_NEIGHBOR_ADVERT) => return Verdict::Consumed,
        _ => {}
    }
    if eth.dst() != ctx.uplink.mac {
        return Verdict::Drop(DropReason::NotForUs);
    }
    if v6.is_own(ip.dst()) {
        let (eth_src, own) = (eth.src(), ip.dst());
        if v6.ip == Some(own) {
            if ip.hop_limit() <= 1 {
                return Verdict::Drop(DropReason::NotForUs);
            }
            if icmpv6::message(&ip).is_some_and(|m| m[0] < 128) {
                // An error about a published flow (packet too big...): to its container.
                return match crate::published6::translate_error(ctx.snap, ctx.shared, ctx.now, own, frame) {
                    Some(target) => deliver(frame, target),
                    None => Verdict::Drop(DropReason::NotForUs),
                };
            }
            if let Some(target) = crate::published6::inbound(ctx.snap, ctx.shared, ctx.now, frame, offload) {
                return deliver(frame, target);
            }
        }
        let ip = ipv6::Packet::parse(&frame[L3..]).expect("classified");
        return answer_echo(&ip, (eth_src, ctx.uplink.mac), scratch);
    }
    route_in(ctx, v6, frame, scratch)
}

/// A container's address the switch answers for on the uplink: a global
/// address of a dual-stack network that is not internal.
fn routed_container(snap: &Snapshot, ip: Ipv6Addr) -> Option<(MacAddr, crate::fdb::PortId, MacAddr)> {
    let net = network_of(snap, ip).filter(|d| !d.spec.internal)?;
    let &(mac, port) = net.neighbours6.get(&ip)?;
    Some((mac, port, net.spec.gateway_mac))
}

/// Answer a solicitation from the segment for the switch's own addresses
/// or a container's (NDP proxy), with the uplink MAC.
fn answer_solicit(
    ctx: &UplinkContext,
    v6: &Uplink6,
    eth: &ethernet::Frame,
    ip: &ipv6::Packet,
    scratch: &mut [u8],
) -> Verdict {
    let solicit = match ndp::parse_solicit(ip) {
        Ok(Some(s)) => s,
        Ok(None) => return Verdict::Drop(DropReason::NotForUs),
        Err(_) => return Verdict::Drop(DropReason::Malformed),
    };
    let own = v6.answers_own && v6.is_own(solicit.target);
    if !own && routed_container(ctx.snap, solicit.target).is_none() {
        return Verdict::Drop(DropReason::NotForUs);
    }
    // A proxy's advertisements do not override (RFC 4861 7.2.8): should the
    // address's owner ever answer on the segment itself, it wins.
    let flags = ndp::FLAG_ROUTER | if own { ndp::FLAG_OVERRIDE } else { 0 };
    match ndp::write_answer(scratch, &solicit, eth.src(), ctx.uplink.mac, flags) {
        0 => Verdict::Drop(DropReason::Malformed),
        len => Verdict::Reply(len),
    }
}

/// A packet from outside for a container's address: to its port, hop limit
/// decremented (time exceeded back out when it runs out).
fn route_in(ctx: &UplinkContext, v6: &Uplink6, frame: &mut [u8], scratch: &mut [u8]) -> Verdict {
    let ip = ipv6::Packet::parse(&frame[L3..]).expect("classified");
    let Some((mac, port, gateway_mac)) = routed_container(ctx.snap, ip.dst()) else {
        return Verdict::Drop(DropReason::NotForUs);
    };
    if !is_routable(ip.src()) {
        return Verdict::Drop(DropReason::NotForUs); // link-local sources are not forwarded
    }
    if ip.hop_limit() <= 1 {
        if !icmpv6::may_answer_with_error(&ip) || !ctx.shared.icmp_errors.take(ctx.now) {
            return Verdict::Drop(DropReason::NotForUs);
        }
        let eth_src = MacAddr(frame[6..12].try_into().expect("classified"));
        let from = (ctx.uplink.mac, v6.source());
        return match icmpv6::write_error(scratch, (icmpv6::TYPE_TIME_EXCEEDED, 0, 0), &ip, from, eth_src) {
            0 => Verdict::Drop(DropReason::Malformed),
            len => Verdict::Reply(len),
        };
    }
    deliver(frame, (mac, port, gateway_mac))
}

/// Send a routed-in packet to a container: hop limit decremented, from the
/// gateway's MAC.
fn deliver(frame: &mut [u8], (mac, port, gateway_mac): (MacAddr, crate::fdb::PortId, MacAddr)) -> Verdict {
    frame[HOP_LIMIT_AT] -= 1;
    ethernet::write_header(frame, mac, gateway_mac, ETHERTYPE_IPV6);
    Verdict::Forward(port)
}
