//! rtnetlink plumbing for a Linux kernel bridge topology (the reference the
//! lab bench measures vswitchd against): bridges, veth pairs whose peer is
//! created straight inside another namespace, bridge ports, the kernel's
//! VXLAN device (the reference for overlay networks), interface counters
//! and permanent neighbour entries.
//!
//! Like `netlink`, every call opens its own socket on the calling thread, so
//! calling it from inside `netns::run_in` acts on that namespace.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::netlink::{context, format_mac, link_index};
use crate::netns;

/// The interface counters the lab bench reads (a subset of rtnl_link_stats64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// Create a Linux bridge `name` (STP off, the kernel default) and return its
/// index. It is left down.
pub fn create_bridge(name: &str) -> io::Result<u32> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
    ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL, &format!("bridge {name}"))?;
    index_of(name)
}

/// Create a veth pair: `name` in the calling thread's namespace, its peer
/// `peer_name` created directly inside namespace `peer_netns` (so the peer
/// name may exist here too, e.g. "eth0"). Returns the index of `name`.
pub fn create_veth_into(name: &str, peer_name: &str, peer_netns: &str) -> io::Result<u32> {
    let what = format!("veth {name} peer {peer_netns}/{peer_name}");
    let ns = File::open(netns::path(peer_netns)).map_err(|e| context(e, format!("{what}: open netns")))?;
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName(peer_name.to_string()));
    // The kernel only reads the fd during the request; `ns` outlives it.
    peer.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL, &what)?;
    drop(ns);
    index_of(name)
}

/// What a kernel VXLAN device is made with.
#[derive(Debug, Clone, Copy)]
pub struct VxlanSpec {
    pub vni: u32,
    /// The underlay address it sends from.
    pub local: Ipv4Addr,
    /// The one remote VTEP (unicast; `ip link add ... remote`).
    pub remote: Ipv4Addr,
    /// The underlay interface.
    pub dev: u32,
    pub port: u16,
}

/// Create a Linux `vxlan` device `name` (`ip link add NAME type vxlan id VNI
/// local LOCAL remote REMOTE dev DEV dstport PORT`), left down; returns its index.
pub fn create_vxlan(name: &str, spec: &VxlanSpec) -> io::Result<u32> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    let vxlan = vec![
        InfoVxlan::Id(spec.vni),
        InfoVxlan::Local(spec.local),
        InfoVxlan::Group(spec.remote),
        InfoVxlan::Link(spec.dev),
        InfoVxlan::Port(spec.port),
        InfoVxlan::Learning(true),
    ];
    msg.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Vxlan), LinkInfo::Data(InfoData::Vxlan(vxlan))]));
    let what = format!("vxlan {name} id {} remote {}", spec.vni, spec.remote);
    ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL, &what)?;
    index_of(name)
}

/// Make interface `index` a port of bridge `bridge` (`ip link set master`).
pub fn set_controller(index: u32, bridge: u32) -> io::Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::Controller(bridge));
    ack(RouteNetlinkMessage::SetLink(msg), 0, &format!("dev #{index} master #{bridge}"))
}

/// The 64-bit counters of interface `index`.
pub fn link_stats(index: u32) -> io::Result<LinkStats> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    let what = format!("stats of dev #{index}");
    let replies = request(RouteNetlinkMessage::GetLink(msg), 0, &what)?;
    let stats = replies.iter().find_map(|r| match r {
        RouteNetlinkMessage::NewLink(l) => l.attributes.iter().find_map(|a| match a {
            LinkAttribute::Stats64(s) => Some(LinkStats {
                rx_packets: s.rx_packets,
                tx_packets: s.tx_packets,
                rx_bytes: s.rx_bytes,
                tx_bytes: s.tx_bytes,
                rx_dropped: s.rx_dropped,
                tx_dropped: s.tx_dropped,
            }),
            _ => None,
        }),
        _ => None,
    });
    stats.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("netlink {what}: no IFLA_STATS64")))
}

/// Add (or replace) a permanent IPv4 neighbour entry `ip` → `mac` on
/// interface `index` (`ip neigh replace IP lladdr MAC nud permanent`).
pub fn add_permanent_neighbour(index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> io::Result<()> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.kind = RouteType::Unicast;
    msg.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    let what = format!("{ip} lladdr {} dev #{index}", format_mac(mac));
    ack(RouteNetlinkMessage::NewNeighbour(msg), NLM_F_CREATE | NLM_F_REPLACE, &what)
}

fn index_of(name: &str) -> io::Result<u32> {
    link_index(name)?.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{name} vanished after creation")))
}

/// The rtnetlink name of a request, for error messages.
fn message_name(msg: &RouteNetlinkMessage) -> &'static str {
    match msg {
        RouteNetlinkMessage::NewLink(_) => "RTM_NEWLINK",
        RouteNetlinkMessage::GetLink(_) => "RTM_GETLINK",
        RouteNetlinkMessage::SetLink(_) => "RTM_SETLINK",
        RouteNetlinkMessage::NewNeighbour(_) => "RTM_NEWNEIGH",
        _ => "rtnetlink request",
    }
}

fn ack(msg: RouteNetlinkMessage, flags: u16, what: &str) -> io::Result<()> {
    request(msg, flags | NLM_F_ACK, what).map(drop)
}

/// Send one request on a fresh socket; collect replies up to the ACK (or,
/// for a request without NLM_F_ACK, up to the first reply).
fn request(msg: RouteNetlinkMessage, flags: u16, what: &str) -> io::Result<Vec<RouteNetlinkMessage>> {
    let describe = |e: io::Error| context(e, format!("netlink {} {what}", message_name(&msg)));
    let wants_ack = flags & NLM_F_ACK != 0;
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(describe)?;
    socket.bind_auto().map_err(describe)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(describe)?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg.clone()));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).map_err(describe)?;
    collect(&socket, wants_ack).map_err(describe)
}

fn collect(socket: &Socket, wants_ack: bool) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut replies = Vec::new();
    loop {
        let (datagram, _) = socket.recv_from_full()?;
        let mut buf = datagram.as_slice();
        while !buf.is_empty() {
            let bad = |e: netlink_packet_core::DecodeError| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
            let len = NetlinkBuffer::new_checked(buf).map_err(bad)?.length() as usize;
            let packet = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len]).map_err(bad)?;
            buf = &buf[len.next_multiple_of(4).min(buf.len())..];
            match packet.payload {
                NetlinkPayload::InnerMessage(m) => replies.push(m),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(replies),
                _ => {}
            }
        }
        if !wants_ack && !replies.is_empty() {
            return Ok(replies);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{add_ipv4_addr, link, set_link_up};
    use crate::netns::testutil::*;

    #[test]
    fn lab_bridge_veth_stats_neighbour() {
        require_root();
        let (sw, host) = (unique_name(), unique_name());
        let _g1 = NetnsGuard::create(&sw);
        let _g2 = NetnsGuard::create(&host);
        let host2 = host.clone();
        netns::run_in(&sw, move || {
            let br = create_bridge("br0").unwrap();
            let va = create_veth_into("va", "eth0", &host2).unwrap();
            set_controller(va, br).unwrap();
            set_link_up(va).unwrap();
            set_link_up(br).unwrap();
            assert_eq!(link_stats(va).unwrap().tx_packets, 0);
        })
        .unwrap();
        netns::run_in(&host, || {
            let eth0 = link("eth0").unwrap().expect("peer created in this namespace");
            set_link_up(eth0.index).unwrap();
            add_ipv4_addr(eth0.index, Ipv4Addr::new(10, 9, 0, 2), 24).unwrap();
            let peer = Ipv4Addr::new(10, 9, 0, 250);
            add_permanent_neighbour(eth0.index, peer, [2, 0, 0, 0, 0, 9]).unwrap();
            add_permanent_neighbour(eth0.index, peer, [2, 0, 0, 0, 0, 9]).unwrap();
            let sock = std::net::UdpSocket::bind("10.9.0.2:0").unwrap();
            sock.send_to(&[0; 18], (peer, 9)).unwrap();
            // The frame leaves without ARP because the entry is permanent.
            let sent = link_stats(eth0.index).unwrap();
            assert!(sent.tx_packets >= 1, "{sent:?}");
        })
        .unwrap();
    }
}
