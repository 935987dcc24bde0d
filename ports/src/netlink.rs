//! rtnetlink requests (links, addresses, routes) in the calling thread's
//! network namespace: each call opens its own socket on the calling thread,
//! so calling it from inside `netns::run_in` configures that namespace.

use std::error::Error;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Longest interface name plus its NUL (IFNAMSIZ).
const IFNAMSIZ: usize = 16;

/// What `link` reports about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub up: bool,
}

/// Look up interface `name`; `None` if there is no such interface.
pub fn link(name: &str) -> io::Result<Option<Link>> {
    check_ifname(name)?;
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    match request(RouteNetlinkMessage::GetLink(msg), 0, name) {
        Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
            RouteNetlinkMessage::NewLink(l) => Some(parse_link(&l)),
            _ => None,
        })),
        Err(e) if os_error(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Index of interface `name`, `None` if there is no such interface.
pub fn link_index(name: &str) -> io::Result<Option<u32>> {
    Ok(link(name)?.map(|l| l.index))
}

/// Set the interface administratively up.
pub fn set_link_up(index: u32) -> io::Result<()> {
    let mut msg = link_message(index);
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    ack(RouteNetlinkMessage::SetLink(msg), 0, &format!("up dev #{index}"))
}

pub fn set_link_mac(index: u32, mac: [u8; 6]) -> io::Result<()> {
    let mut msg = link_message(index);
    msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
    let what = format!("address {} dev #{index}", format_mac(mac));
    ack(RouteNetlinkMessage::SetLink(msg), 0, &what)
}

pub fn set_link_mtu(index: u32, mtu: u32) -> io::Result<()> {
    let mut msg = link_message(index);
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    ack(RouteNetlinkMessage::SetLink(msg), 0, &format!("mtu {mtu} dev #{index}"))
}

/// Delete an interface (any kind, TAPs included, even while a fd holds it).
pub fn del_link(index: u32) -> io::Result<()> {
    let msg = link_message(index);
    ack(RouteNetlinkMessage::DelLink(msg), 0, &format!("dev #{index}"))
}

/// Add an IPv4 address; Ok if it is already there.
pub fn add_ipv4_addr(index: u32, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
    let msg = address_message(index, addr, prefix_len)?;
    let what = format!("{addr}/{prefix_len} dev #{index}");
    let flags = NLM_F_CREATE | NLM_F_EXCL;
    ignore_eexist(ack(RouteNetlinkMessage::NewAddress(msg), flags, &what))
}

/// Add IPv6 address `addr/prefix_len` to interface `index`; Ok if it is
/// there already. `dad`: run duplicate address detection first (the address
/// is tentative until it passes); Docker configures container addresses
/// without it, since its IPAM already made them unique.
pub fn add_ipv6_addr(index: u32, addr: Ipv6Addr, prefix_len: u8, dad: bool) -> io::Result<()> {
    if prefix_len > 128 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad prefix length {addr}/{prefix_len}")));
    }
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet6;
    msg.header.prefix_len = prefix_len;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Address(IpAddr::V6(addr)));
    if !dad {
        msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    let what = format!("{addr}/{prefix_len} dev #{index}");
    ignore_eexist(ack(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL, &what))
}

/// An IPv6 address of an interface and where its duplicate address
/// detection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6AddrState {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
    /// Still being checked for duplicates (not usable yet).
    pub tentative: bool,
    /// A duplicate answered: the address will not be used.
    pub dad_failed: bool,
}

/// The IPv6 addresses of interface `index`.
pub fn ipv6_addrs(index: u32) -> io::Result<Vec<Ipv6AddrState>> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet6;
    let replies = request(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP, "inet6")?;
    let addrs = replies.into_iter().filter_map(|r| match r {
        RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
            let addr = a.attributes.iter().find_map(|at| match at {
                AddressAttribute::Address(IpAddr::V6(ip)) => Some(*ip),
                _ => None,
            })?;
            let flags = a.attributes.iter().find_map(|at| match at {
                AddressAttribute::Flags(f) => Some(*f),
                _ => None,
            });
            let flags = flags.unwrap_or(AddressFlags::from_bits_retain(a.header.flags.bits() as u32));
            Some(Ipv6AddrState {
                addr,
                prefix_len: a.header.prefix_len,
                tentative: flags.contains(AddressFlags::Tentative),
                dad_failed: flags.contains(AddressFlags::Dadfailed),
            })
        }
        _ => None,
    });
    Ok(addrs.collect())
}

/// The IPv4 addresses of interface `index`, as (address, prefix length).
pub fn ipv4_addrs(index: u32) -> io::Result<Vec<(Ipv4Addr, u8)>> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    let replies = request(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP, "inet")?;
    let addrs = replies.into_iter().filter_map(|r| match r {
        RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
            local_ipv4(&a).map(|ip| (ip, a.header.prefix_len))
        }
        _ => None,
    });
    Ok(addrs.collect())
}

/// Add a default route via `gw` out of interface `index`; Ok if one exists.
///
/// An existing default route is kept as it is (EXCL, not REPLACE): with
/// several ports the first one to ask for a default route keeps it.
pub fn add_ipv4_default_route(index: u32, gw: Ipv4Addr) -> io::Result<()> {
    add_default_route(index, IpAddr::V4(gw))
}

/// Add an IPv6 default route via `gw` (a link-local router address) out of
/// interface `index`; Ok if one exists.
pub fn add_ipv6_default_route(index: u32, gw: Ipv6Addr) -> io::Result<()> {
    add_default_route(index, IpAddr::V6(gw))
}

fn add_default_route(index: u32, gw: IpAddr) -> io::Result<()> {
    let msg = default_route_message(index, gw);
    let what = format!("default via {gw} dev #{index}");
    ignore_eexist(ack(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_EXCL, &what))
}

/// The IPv4 routes of the main table as (destination, prefix length).
pub fn ipv4_routes() -> io::Result<Vec<(Ipv4Addr, u8)>> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    let replies = request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP, "inet")?;
    let routes = replies.into_iter().filter_map(|r| match r {
        RouteNetlinkMessage::NewRoute(r) if route_table(&r) == RouteHeader::RT_TABLE_MAIN as u32 => {
            Some((route_destination(&r), r.header.destination_prefix_length))
        }
        _ => None,
    });
    Ok(routes.collect())
}

/// The errno behind `e`, looking through the context that this crate adds to
/// its errors (which hides it from `io::Error::raw_os_error`).
pub fn os_error(e: &io::Error) -> Option<i32> {
    if let Some(code) = e.raw_os_error() {
        return Some(code);
    }
    let ctx = e.get_ref()?.downcast_ref::<Context>()?;
    os_error(&ctx.source)
}

/// Wrap `e` in a message saying what failed, keeping its kind and errno
/// (see `os_error`).
pub(crate) fn context(e: io::Error, msg: impl Into<String>) -> io::Error {
    io::Error::new(e.kind(), Context { msg: msg.into(), source: e })
}

#[derive(Debug)]
struct Context {
    msg: String,
    source: io::Error,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.msg, self.source)
    }
}

impl Error for Context {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

fn ignore_eexist(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if os_error(&e) == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

fn check_ifname(name: &str) -> io::Result<()> {
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains(['/', ':', '\0']) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid interface name {name:?}")));
    }
    Ok(())
}

fn link_message(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

fn parse_link(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Address(a) => link.mac = a.as_slice().try_into().ok(),
            _ => {}
        }
    }
    link
}

fn address_message(index: u32, addr: Ipv4Addr, prefix_len: u8) -> io::Result<AddressMessage> {
    if prefix_len > 32 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad prefix length {addr}/{prefix_len}")));
    }
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix_len;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
    msg.attributes.push(AddressAttribute::Address(IpAddr::V4(addr)));
    if let Some(brd) = broadcast(addr, prefix_len) {
        msg.attributes.push(AddressAttribute::Broadcast(brd));
    }
    Ok(msg)
}

/// The broadcast address of a subnet; none for /31 and /32 (RFC 3021).
fn broadcast(addr: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Addr> {
    if prefix_len >= 31 {
        return None;
    }
    let host_mask = u32::MAX >> prefix_len;
    Some(Ipv4Addr::from(u32::from(addr) | host_mask))
}

fn local_ipv4(msg: &AddressMessage) -> Option<Ipv4Addr> {
    msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    })
}

fn default_route_message(index: u32, gw: IpAddr) -> RouteMessage {
    let mut msg = RouteMessage::default();
    let (family, gateway) = match gw {
        IpAddr::V4(ip) => (AddressFamily::Inet, RouteAddress::Inet(ip)),
        IpAddr::V6(ip) => (AddressFamily::Inet6, RouteAddress::Inet6(ip)),
    };
    msg.header.address_family = family;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    // RTPROT_BOOT is what `ip route add` uses for routes added by hand.
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes.push(RouteAttribute::Gateway(gateway));
    msg.attributes.push(RouteAttribute::Oif(index));
    msg
}

/// The table of a route: the 32-bit attribute when present, else the header.
fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(msg.header.table as u32)
}

fn route_destination(msg: &RouteMessage) -> Ipv4Addr {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// The rtnetlink name of a request, for error messages.
fn message_name(msg: &RouteNetlinkMessage) -> &'static str {
    match msg {
        RouteNetlinkMessage::NewLink(_) => "RTM_NEWLINK",
        RouteNetlinkMessage::DelLink(_) => "RTM_DELLINK",
        RouteNetlinkMessage::GetLink(_) => "RTM_GETLINK",
        RouteNetlinkMessage::SetLink(_) => "RTM_SETLINK",
        RouteNetlinkMessage::NewAddress(_) => "RTM_NEWADDR",
        RouteNetlinkMessage::GetAddress(_) => "RTM_GETADDR",
        RouteNetlinkMessage::NewRoute(_) => "RTM_NEWROUTE",
        RouteNetlinkMessage::GetRoute(_) => "RTM_GETROUTE",
        _ => "rtnetlink request",
    }
}

/// Send a request that returns nothing but its acknowledgement.
fn ack(msg: RouteNetlinkMessage, flags: u16, what: &str) -> io::Result<()> {
    request(msg, flags, what).map(drop)
}

/// Send one request on a fresh socket and collect the replies up to its
/// acknowledgement (or, for a dump, up to NLMSG_DONE).
fn request(msg: RouteNetlinkMessage, flags: u16, what: &str) -> io::Result<Vec<RouteNetlinkMessage>> {
    let name = message_name(&msg);
    let describe = |e: io::Error| context(e, format!("netlink {name} {what}"));
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    // A dump ends with NLMSG_DONE; anything else is asked to end with an ACK.
    let flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
    let socket = open_socket().map_err(describe)?;
    let request = encode(msg, flags, 1);
    socket.send(&request, 0).map_err(describe)?;
    collect_replies(&socket, 1).map_err(describe)
}

fn open_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

fn encode(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

fn collect_replies(socket: &Socket, seq: u32) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut replies = Vec::new();
    loop {
        let (datagram, _) = socket.recv_from_full()?;
        for packet in decode_all(&datagram)? {
            if packet.header.sequence_number != seq {
                continue; // not ours (cannot happen on a private socket, but cheap)
            }
            match packet.payload {
                NetlinkPayload::InnerMessage(m) => replies.push(m),
                NetlinkPayload::Done(_) => return Ok(replies),
                NetlinkPayload::Error(e) if e.code.is_none() => return Ok(replies),
                NetlinkPayload::Error(e) => return Err(e.to_io()),
                _ => {}
            }
        }
    }
}

/// Split a datagram into its netlink messages.
fn decode_all(mut buf: &[u8]) -> io::Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
    let bad =
        |e: netlink_packet_core::DecodeError| io::Error::new(io::ErrorKind::InvalidData, format!("bad reply: {e}"));
    let mut packets = Vec::new();
    while !buf.is_empty() {
        let len = NetlinkBuffer::new_checked(buf).map_err(bad)?.length() as usize;
        packets.push(NetlinkMessage::deserialize(&buf[..len]).map_err(bad)?);
        // Messages are 4-byte aligned; the last one may lack its padding.
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    Ok(packets)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::{self, testutil::*};

    #[test]
    fn broadcast_addresses() {
        let a = Ipv4Addr::new(10, 1, 2, 3);
        assert_eq!(broadcast(a, 24), Some(Ipv4Addr::new(10, 1, 2, 255)));
        assert_eq!(broadcast(a, 0), Some(Ipv4Addr::BROADCAST));
        assert_eq!(broadcast(a, 31), None);
        assert_eq!(broadcast(a, 32), None);
    }

    #[test]
    fn requests_round_trip() {
        let msg = address_message(7, Ipv4Addr::new(10, 0, 0, 2), 24).unwrap();
        let buf = encode(RouteNetlinkMessage::NewAddress(msg.clone()), NLM_F_REQUEST, 9);
        let packets = decode_all(&buf).unwrap();
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].header.sequence_number, 9);
        assert_eq!(packets[0].payload, NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(msg)));
        assert!(address_message(7, Ipv4Addr::LOCALHOST, 33).is_err());
    }

    #[test]
    fn errors_keep_errno_and_say_what_failed() {
        let e = context(io::Error::from_raw_os_error(libc::EEXIST), "netlink RTM_NEWADDR x");
        let e = context(e, "netns foo");
        assert_eq!(os_error(&e), Some(libc::EEXIST));
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let text = e.to_string();
        assert!(text.starts_with("netns foo: netlink RTM_NEWADDR x: File exists"), "{text}");
        assert!(ignore_eexist(Err(e)).is_ok());
    }

    #[test]
    fn interface_names() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname(&"a".repeat(15)).is_ok());
        for bad in ["", "a/b", "a:b", &"a".repeat(16)] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_mac([2, 0, 0, 0xab, 0, 1]), "02:00:00:ab:00:01");
    }

    #[test]
    fn lab_links_addresses_routes() {
        require_root();
        let name = unique_name();
        let _guard = NetnsGuard::create(&name);
        netns::run_in(&name, || {
            let lo = link("lo").unwrap().expect("lo");
            assert_eq!((lo.index, lo.up), (1, false), "fresh namespace: lo is #1, down");
            set_link_up(1).unwrap();
            assert!(link("lo").unwrap().unwrap().up);
            assert_eq!(link_index("nosuchdev0").unwrap(), None);

            let _tap = crate::tap::Tap::open("tap0").unwrap();
            let index = link_index("tap0").unwrap().expect("tap0");
            set_link_mtu(index, 1400).unwrap();
            set_link_mac(index, [2, 0, 0, 0, 0, 7]).unwrap();
            set_link_up(index).unwrap();
            let tap = link("tap0").unwrap().unwrap();
            assert_eq!((tap.mtu, tap.mac, tap.up), (1400, Some([2, 0, 0, 0, 0, 7]), true));

            let (gw, ip) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
            let err = add_ipv4_default_route(index, gw).unwrap_err();
            assert_eq!(os_error(&err), Some(libc::ENETUNREACH), "{err}");
            assert!(err.to_string().starts_with("netlink RTM_NEWROUTE default via"), "{err}");
            add_ipv4_addr(index, ip, 24).unwrap();
            add_ipv4_addr(index, ip, 24).unwrap();
            assert_eq!(ipv4_addrs(index).unwrap(), vec![(ip, 24)]);
            add_ipv4_default_route(index, gw).unwrap();
            add_ipv4_default_route(index, gw).unwrap();
            let mut routes = ipv4_routes().unwrap();
            routes.sort();
            assert_eq!(routes, vec![(Ipv4Addr::UNSPECIFIED, 0), (Ipv4Addr::new(10, 0, 0, 0), 24)]);

            del_link(index).unwrap();
            assert_eq!(link_index("tap0").unwrap(), None);
        })
        .unwrap();
    }
}
