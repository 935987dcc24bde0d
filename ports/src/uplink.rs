//! The uplink: the switch's port on the world outside, an AF_PACKET socket on
//! a host interface. Frames carry a `virtio_net_hdr` both ways, like a TAP,
//! so GSO super-frames and partial checksums cross it untouched.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::netlink::{self, context};
use crate::{FrameIo, Offload};
use proto::offload::VIRTIO_NET_HDR_LEN;

// linux/if_packet.h (libc has them only in its uapi module on some versions).
const SOL_PACKET: libc::c_int = 263;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
// asm-generic/socket.h: set buffer sizes past net.core.{r,w}mem_max (root).
const SO_SNDBUFFORCE: libc::c_int = 32;
const SO_RCVBUFFORCE: libc::c_int = 33;

/// Socket buffer size asked for each way: room for a burst of 64 KiB
/// super-frames while a worker is busy elsewhere.
const SOCKET_BUFFER: libc::c_int = 4 << 20;

/// `struct packet_mreq` (linux/if_packet.h).
#[repr(C)]
struct PacketMreq {
    mr_ifindex: libc::c_int,
    mr_type: libc::c_ushort,
    mr_alen: libc::c_ushort,
    mr_address: [u8; 8],
}

/// The switch's port on the world outside: an AF_PACKET socket on a host interface.
#[derive(Debug)]
pub struct Uplink {
    fd: OwnedFd,
    name: String,
    ifindex: u32,
    mac: [u8; 6],
    mtu: u32,
}

impl Uplink {
    /// Open on interface `ifname` in the calling thread's network namespace.
    ///
    /// The socket exchanges a `virtio_net_hdr` with every frame, never
    /// receives frames going out of the interface (ours or the host's), and
    /// holds the interface promiscuous while open: the switch owns its own
    /// MAC on the segment, like a separate host, so it must see frames for it.
    pub fn open(ifname: &str) -> io::Result<Uplink> {
        let what = format!("uplink {ifname}");
        let link = netlink::link(ifname)
            .map_err(|e| context(e, format!("{what}: lookup")))?
            .ok_or_else(|| context(io::Error::from_raw_os_error(libc::ENODEV), format!("{what}: lookup")))?;
        let mac = link.mac.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: not an Ethernet interface (no MAC address)"))
        })?;

        // Protocol 0 until bind: a socket made with ETH_P_ALL would queue
        // frames from every interface in the namespace until it is bound.
        let flags = libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: plain syscall.
        let raw = unsafe { libc::socket(libc::AF_PACKET, flags, 0) };
        if raw < 0 {
            return Err(context(io::Error::last_os_error(), format!("{what}: socket(AF_PACKET)")));
        }
        // SAFETY: `raw` is a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let what = what.as_str();
        let step = |name: &'static str| move |e: io::Error| context(e, format!("{what}: {name}"));

        setsockopt(&fd, SOL_PACKET, PACKET_VNET_HDR, &1).map_err(step("PACKET_VNET_HDR"))?;
        setsockopt(&fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &1).map_err(step("PACKET_IGNORE_OUTGOING"))?;
        set_buffer(&fd, SO_RCVBUFFORCE, libc::SO_RCVBUF).map_err(step("SO_RCVBUF"))?;
        set_buffer(&fd, SO_SNDBUFFORCE, libc::SO_SNDBUF).map_err(step("SO_SNDBUF"))?;

        // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::c_ushort;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = link.index as libc::c_int;
        // SAFETY: `addr` is a valid sockaddr_ll of the length given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(step("bind")(io::Error::last_os_error()));
        }

        let mreq = PacketMreq {
            mr_ifindex: link.index as libc::c_int,
            mr_type: PACKET_MR_PROMISC,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setsockopt(&fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq).map_err(step("PACKET_MR_PROMISC"))?;

        Ok(Uplink { fd, name: link.name, ifindex: link.index, mac, mtu: link.mtu })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface's own MAC (read via netlink at open).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The interface's MTU (read via netlink at open).
    pub fn mtu(&self) -> u32 {
        self.mtu
    }
}

impl FrameIo for Uplink {
    fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Offload)> {
        let mut header = [0u8; VIRTIO_NET_HDR_LEN];
        let mut iov = [
            libc::iovec { iov_base: header.as_mut_ptr().cast(), iov_len: header.len() },
            libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() },
        ];
        // SAFETY: msghdr is plain old data; all zeroes is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        loop {
            // SAFETY: both iovecs point to writable buffers of their lengths;
            // msg has no name or control buffer. MSG_TRUNC makes the kernel
            // return the frame's real length, so truncation is seen.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
            if n >= 0 {
                let n = n as usize;
                if n < VIRTIO_NET_HDR_LEN {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "uplink read shorter than its vnet header"));
                }
                let len = n - VIRTIO_NET_HDR_LEN;
                if len > buf.len() {
                    let msg = format!("uplink {}: {len}-byte frame truncated to {} bytes", self.name, buf.len());
                    return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
                }
                return Ok((len, Offload::from_virtio(&header)));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn send(&self, frame: &[u8], offload: &Offload) -> io::Result<()> {
        crate::vnet::write_frame(self.fd.as_raw_fd(), frame, offload)
    }

    fn takes_offloads(&self) -> bool {
        true
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}

impl AsRawFd for Uplink {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a valid T of the length given, read during the call.
    let rc = unsafe {
        libc::setsockopt(fd.as_raw_fd(), level, name, (value as *const T).cast(), size_of::<T>() as libc::socklen_t)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ask for SOCKET_BUFFER with the forcing option (root: past the sysctl
/// maximum), falling back to the plain one (capped by the sysctl).
fn set_buffer(fd: &OwnedFd, force: libc::c_int, plain: libc::c_int) -> io::Result<()> {
    setsockopt(fd, libc::SOL_SOCKET, force, &SOCKET_BUFFER)
        .or_else(|_| setsockopt(fd, libc::SOL_SOCKET, plain, &SOCKET_BUFFER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel_bridge::create_veth_into;
    use crate::netlink::{add_ipv4_addr, link, set_link_up};
    use crate::netns::{self, testutil::*};
    use proto::offload::GSO_TCPV4;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    /// An ethertype for local experiments (IEEE 802): nothing else on the
    /// test link (IPv6 router solicitations, MLD) uses it.
    const TEST_ETHERTYPE: u16 = 0x88b5;
    const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x02];

    /// Two namespaces joined by a veth pair: "up0" in `sw`, "eth0" in `out`,
    /// both up. The guards delete the namespaces (and so the pair) on drop.
    struct Lab {
        sw: String,
        out: String,
        _guards: (NetnsGuard, NetnsGuard),
    }

    fn lab() -> Lab {
        require_root();
        let (sw, out) = (unique_name(), unique_name());
        let guards = (NetnsGuard::create(&sw), NetnsGuard::create(&out));
        let out2 = out.clone();
        netns::run_in(&sw, move || {
            let up0 = create_veth_into("up0", "eth0", &out2).unwrap();
            set_link_up(up0).unwrap();
        })
        .unwrap();
        netns::run_in(&out, || {
            let eth0 = link("eth0").unwrap().unwrap();
            crate::netlink::set_link_mac(eth0.index, PEER_MAC).unwrap();
            set_link_up(eth0.index).unwrap();
        })
        .unwrap();
        Lab { sw, out, _guards: guards }
    }

    fn open_in(ns: &str, ifname: &'static str) -> Uplink {
        netns::run_in(ns, move || Uplink::open(ifname)).unwrap().unwrap()
    }

    /// A plain AF_PACKET socket (no vnet header) on interface `ifname` of
    /// namespace `ns`: the independent end of each check.
    struct Plain(OwnedFd);

    impl Plain {
        fn open_in(ns: &str, ifname: &'static str) -> Plain {
            netns::run_in(ns, move || {
                let index = link(ifname).unwrap().unwrap().index;
                let proto = (libc::ETH_P_ALL as u16).to_be();
                // SAFETY: plain syscalls on an fd we own.
                let fd = unsafe {
                    let raw = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, proto as i32);
                    assert!(raw >= 0, "{}", io::Error::last_os_error());
                    OwnedFd::from_raw_fd(raw)
                };
                let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_protocol = proto;
                addr.sll_ifindex = index as i32;
                let len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: valid sockaddr_ll of that length.
                let rc = unsafe { libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_ll).cast(), len) };
                assert_eq!(rc, 0, "{}", io::Error::last_os_error());
                Plain(fd)
            })
            .unwrap()
        }

        fn send(&self, frame: &[u8]) {
            // SAFETY: frame is readable for its length.
            let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            assert_eq!(n, frame.len() as isize, "{}", io::Error::last_os_error());
        }

        /// Frames of TEST_ETHERTYPE coming in (not going out) within `wait`.
        fn incoming(&self, wait: Duration) -> Vec<Vec<u8>> {
            let mut frames = Vec::new();
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                let mut buf = vec![0u8; 65_536];
                // SAFETY: zeroed sockaddr_ll is valid; buffers outlive the call.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                let n = unsafe {
                    libc::recvfrom(
                        self.0.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut from as *mut libc::sockaddr_ll).cast(),
                        &mut len,
                    )
                };
                if n < 0 {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                buf.truncate(n as usize);
                if from.sll_pkttype != libc::PACKET_OUTGOING && is_test_frame(&buf) {
                    frames.push(buf);
                }
            }
            frames
        }
    }

    fn is_test_frame(frame: &[u8]) -> bool {
        frame.len() >= 14 && frame[12..14] == TEST_ETHERTYPE.to_be_bytes()
    }

    fn test_frame(dst: [u8; 6], src: [u8; 6], tag: u8, len: usize) -> Vec<u8> {
        let mut f = Vec::with_capacity(len);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
        f.extend((0..len - 14).map(|i| (i as u8).wrapping_mul(7) ^ tag));
        f
    }

    /// Frames of TEST_ETHERTYPE the uplink receives within `wait`.
    fn uplink_incoming(up: &Uplink, wait: Duration) -> Vec<(Vec<u8>, Offload)> {
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 65_536 + 64];
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            match up.recv(&mut buf) {
                Ok((n, offload)) if is_test_frame(&buf[..n]) => frames.push((buf[..n].to_vec(), offload)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("uplink recv: {e}"),
            }
        }
        frames
    }

    /// The promiscuity count (IFLA_PROMISCUITY) of `ifname` in the calling
    /// thread's namespace. Not IFF_PROMISC: SIOCGIFFLAGS and RTM_GETLINK show
    /// that flag only when set by the user (`ip link set promisc on`).
    fn promiscuity(ifname: &str) -> u32 {
        use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
        use netlink_packet_route::link::{LinkAttribute, LinkMessage};
        use netlink_packet_route::RouteNetlinkMessage;
        use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(ifname.to_string()));
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(msg)));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        let mut socket = Socket::new(NETLINK_ROUTE).unwrap();
        socket.bind_auto().unwrap();
        socket.connect(&SocketAddr::new(0, 0)).unwrap();
        socket.send(&buf, 0).unwrap();
        let (reply, _) = socket.recv_from_full().unwrap();
        let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = reply.payload else {
            panic!("RTM_GETLINK {ifname}: {:?}", reply.payload);
        };
        link.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Promiscuity(n) => Some(*n),
                _ => None,
            })
            .expect("IFLA_PROMISCUITY")
    }

    #[test]
    fn lab_receive_exact_frames_promiscuously() {
        let lab = lab();
        let up = open_in(&lab.sw, "up0");
        let mut buf = [0u8; 2048];
        assert_eq!(up.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(up.takes_offloads());
        assert_eq!(up.poll_fd(), Some(up.as_raw_fd()));
        assert_eq!(netns::run_in(&lab.sw, || promiscuity("up0")).unwrap(), 1, "uplink did not make up0 promiscuous");

        let peer = Plain::open_in(&lab.out, "eth0");
        let to_us = test_frame(up.mac(), PEER_MAC, 1, 60);
        let to_other = test_frame([0x02, 0x99, 0, 0, 0, 0x01], PEER_MAC, 2, 1514);
        let broadcast = test_frame([0xff; 6], PEER_MAC, 3, 100);
        for f in [&to_us, &to_other, &broadcast] {
            peer.send(f);
        }
        let got = uplink_incoming(&up, Duration::from_millis(300));
        let frames: Vec<&Vec<u8>> = got.iter().map(|(f, _)| f).collect();
        assert_eq!(frames, [&to_us, &to_other, &broadcast]);
        for (_, offload) in &got {
            assert_eq!(*offload, Offload::NONE);
        }

        // A frame larger than the buffer is reported, not silently cut.
        peer.send(&test_frame(up.mac(), PEER_MAC, 4, 1514));
        let deadline = Instant::now() + Duration::from_secs(2);
        let err = loop {
            let mut small = [0u8; 100];
            match up.recv(&mut small) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => break e,
                Ok((n, _)) => assert!(!is_test_frame(&small[..n]), "1514-byte frame fit in 100 bytes?"),
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("1514-byte frame truncated"), "{err}");

        drop(up);
        assert_eq!(netns::run_in(&lab.sw, || promiscuity("up0")).unwrap(), 0, "promiscuity outlived the uplink");
    }

    #[test]
    fn lab_send_arrives_intact_and_is_not_looped_back() {
        let lab = lab();
        let up = open_in(&lab.sw, "up0");
        let peer = Plain::open_in(&lab.out, "eth0");
        let frames = [test_frame(PEER_MAC, up.mac(), 5, 60), test_frame([0xff; 6], up.mac(), 6, 1514)];
        for f in &frames {
            up.send(f, &Offload::NONE).unwrap();
        }
        let wait = Duration::from_millis(300);
        assert_eq!(peer.incoming(wait), frames);
        // Ignore-outgoing: what we sent never comes back to us.
        assert_eq!(uplink_incoming(&up, wait), []);

        // A second uplink on the same interface does not see the first's
        // frames either (the kernel's outgoing tap is off for both).
        let other = open_in(&lab.sw, "up0");
        up.send(&frames[0], &Offload::NONE).unwrap();
        assert_eq!(peer.incoming(wait), [frames[0].clone()]);
        assert_eq!(uplink_incoming(&other, wait), []);

        // Too big for the MTU and not GSO: refused, not cut.
        let err = up.send(&test_frame(PEER_MAC, up.mac(), 7, 1515), &Offload::NONE).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE), "{err}");
    }

    #[test]
    fn lab_missing_interface() {
        require_root();
        let ns = unique_name();
        let _guard = NetnsGuard::create(&ns);
        let err = netns::run_in(&ns, || Uplink::open("nosuch0")).unwrap().unwrap_err();
        assert_eq!(netlink::os_error(&err), Some(libc::ENODEV));
        assert!(err.to_string().starts_with("uplink nosuch0: "), "{err}");
        let err = netns::run_in(&ns, || Uplink::open("a/b")).unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("uplink a/b"), "{err}");
    }

    #[test]
    fn lab_identity_matches_netlink() {
        let lab = lab();
        let (up, l) = netns::run_in(&lab.sw, || {
            crate::netlink::set_link_mtu(link("up0").unwrap().unwrap().index, 1400).unwrap();
            (Uplink::open("up0").unwrap(), link("up0").unwrap().unwrap())
        })
        .unwrap();
        assert_eq!(up.name(), "up0");
        assert_eq!(up.ifindex(), l.index);
        assert_eq!(Some(up.mac()), l.mac);
        assert_eq!(up.mtu(), 1400);
        assert_eq!(up.mtu(), l.mtu);
        let peer = netns::run_in(&lab.out, || link("eth0").unwrap().unwrap()).unwrap();
        assert_eq!(peer.mac, Some(PEER_MAC));
        assert_ne!(up.mac(), PEER_MAC);
    }

    /// The kernel's TCP over veth hands the uplink 64 KiB TSO super-frames
    /// with partial checksums, described in the vnet header.
    #[test]
    fn lab_receives_gso_super_frames() {
        let lab = lab();
        let (up, listener) = netns::run_in(&lab.sw, || {
            let index = link("up0").unwrap().unwrap().index;
            add_ipv4_addr(index, Ipv4Addr::new(10, 77, 0, 1), 24).unwrap();
            (Uplink::open("up0").unwrap(), TcpListener::bind("10.77.0.1:0").unwrap())
        })
        .unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = netns::run_in(&lab.out, move || {
            let eth0 = link("eth0").unwrap().unwrap().index;
            add_ipv4_addr(eth0, Ipv4Addr::new(10, 77, 0, 2), 24).unwrap();
            TcpStream::connect((Ipv4Addr::new(10, 77, 0, 1), port)).unwrap()
        })
        .unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut sink = Vec::new();
            s.read_to_end(&mut sink).unwrap();
            sink.len()
        });
        client.write_all(&vec![0x5a; 1 << 20]).unwrap();
        drop(client);
        assert_eq!(server.join().unwrap(), 1 << 20);

        let mut buf = vec![0u8; 65_536 + 64];
        let (mut gso, mut biggest) = (None, 0);
        loop {
            match up.recv(&mut buf) {
                Ok((n, offload)) => {
                    biggest = biggest.max(n);
                    if offload.is_gso() && gso.is_none() {
                        gso = Some((n, offload));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("uplink recv: {e}"),
            }
        }
        let (n, offload) = gso.unwrap_or_else(|| panic!("no GSO frame seen (biggest {biggest} bytes)"));
        assert!(n > up.mtu() as usize + 14, "GSO frame of {n} bytes");
        assert_eq!(offload.gso_type & !proto::offload::GSO_ECN, GSO_TCPV4);
        assert!(offload.needs_csum(), "{offload:?}");
        assert_eq!(offload.csum_start, 14 + 20);
        assert_eq!(offload.csum_offset, 16);
    }
}
