//! Attaching an endpoint: a TAP inside a named namespace, addressed and routed.
//!
//! `attach` is idempotent because vswitchd re-runs it for every port when it
//! restarts: the namespace and the persistent TAP are still there, and are
//! re-attached and (re)configured to the same state.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::netlink::{self, context, os_error};
use crate::netns;
use crate::tap::Tap;

/// Everything needed to plumb one container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub netns: String,
    /// Create the namespace if it does not exist.
    pub create_netns: bool,
    /// "eth0", "eth1", ...
    pub ifname: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub ipv4: Ipv4Addr,
    pub prefix_len: u8,
    /// Add a default route via this gateway if set.
    pub default_gw: Option<Ipv4Addr>,
    /// The IPv6 side on a dual-stack network. None: IPv6 is turned off on
    /// the interface, as Docker does for networks without IPv6, so the
    /// namespace sends no router solicitations, MLD or DAD multicasts for
    /// the switch to flood to every port.
    pub ipv6: Option<Ipv6Plumbing>,
    /// Queues to open: one per worker, so that each worker receives the
    /// flows the kernel hashes to its queue.
    pub queues: usize,
}

/// An endpoint's IPv6 configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Plumbing {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
    /// Add a default route via this (link-local) router address if set.
    pub default_gw: Option<Ipv6Addr>,
}

/// Make sure the namespace and its TAP exist and are configured as `spec`
/// says, and return the TAP's queues (their fds keep working in the host
/// namespace).
pub fn attach(spec: &EndpointSpec) -> io::Result<Vec<Tap>> {
    ensure_netns(&spec.netns, spec.create_netns)?;
    let inside = spec.clone();
    netns::run_in(&spec.netns, move || configure(&inside))?.map_err(|e| context(e, format!("netns {}", spec.netns)))
}

/// Remove TAP `ifname` from namespace `netns` (Ok if either is already gone),
/// then delete the namespace if `delete_netns`.
pub fn detach(netns: &str, ifname: &str, delete_netns: bool) -> io::Result<()> {
    netns::validate_name(netns).map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
    if !netns::exists(netns) {
        return Ok(());
    }
    let name = ifname.to_string();
    netns::run_in(netns, move || remove_tap(&name))?.map_err(|e| context(e, format!("netns {netns}")))?;
    if !delete_netns {
        return Ok(());
    }
    match netns::delete(netns) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn ensure_netns(name: &str, create: bool) -> io::Result<()> {
    netns::validate_name(name).map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
    if netns::exists(name) {
        return Ok(());
    }
    if !create {
        let msg = format!("netns {name} does not exist");
        return Err(io::Error::new(io::ErrorKind::NotFound, msg));
    }
    match netns::create(name) {
        // Someone else created it in between: just as good.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Inside the namespace: open the TAP and bring it to the configured state.
/// A TAP this call created is removed again if configuring it fails, so a
/// failed attach leaves nothing half-made behind.
fn configure(spec: &EndpointSpec) -> io::Result<Vec<Tap>> {
    let existed = netlink::link_index(&spec.ifname)?.is_some();
    let tap = Tap::open(&spec.ifname)?;
    tap.set_persist(true)?;
    match configure_link(spec).and_then(|()| open_more_queues(&tap, spec.queues)) {
        Ok(more) => Ok(std::iter::once(tap).chain(more).collect()),
        Err(e) => {
            if !existed {
                // Best effort: the configuring error is the one to report.
                let _ = tap.set_persist(false);
            }
            Err(e)
        }
    }
}

/// Queues beyond the first; they must be opened from inside the namespace.
fn open_more_queues(first: &Tap, queues: usize) -> io::Result<Vec<Tap>> {
    (1..queues.max(1)).map(|_| Tap::open(first.name())).collect()
}

fn configure_link(spec: &EndpointSpec) -> io::Result<()> {
    let ifname = &spec.ifname;
    let step = |e: io::Error| context(e, ifname.clone());
    let index = netlink::link_index(ifname)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{ifname}: vanished after TUNSETIFF")))?;
    netlink::set_link_mac(index, spec.mac).map_err(step)?;
    netlink::set_link_mtu(index, spec.mtu).map_err(step)?;
    netlink::add_ipv4_addr(index, spec.ipv4, spec.prefix_len).map_err(step)?;
    match spec.ipv6 {
        Some(_) => enable_ipv6(ifname)?,
        None => ipv6_sysctl(ifname, "disable_ipv6", "1")?,
    }
    netlink::set_link_up(index).map_err(step)?;
    bring_up_loopback()?;
    // After the address and "up": the gateway must be reachable on the link.
    if let Some(gw) = spec.default_gw {
        netlink::add_ipv4_default_route(index, gw).map_err(step)?;
    }
    if let Some(v6) = spec.ipv6 {
        netlink::add_ipv6_addr(index, v6.addr, v6.prefix_len, false).map_err(step)?;
        if let Some(gw) = v6.default_gw {
            netlink::add_ipv6_default_route(index, gw).map_err(step)?;
        }
    }
    Ok(())
}

/// IPv6 on, with the router configured rather than learnt: a container
/// takes neither router advertisements nor redirects (the switch drops
/// those from other containers anyway, but only when it can see them).
fn enable_ipv6(ifname: &str) -> io::Result<()> {
    ipv6_sysctl(ifname, "disable_ipv6", "0")?;
    ipv6_sysctl(ifname, "accept_ra", "0")?;
    ipv6_sysctl(ifname, "accept_redirects", "0")
}

/// Set an IPv6 sysctl of `ifname` in the calling thread's namespace (net
/// sysctls resolve against the opener's namespace). A kernel without IPv6
/// has no such file, which is just as good.
fn ipv6_sysctl(ifname: &str, name: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/{name}");
    match std::fs::write(&path, value) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(context(e, path)),
        _ => Ok(()),
    }
}

/// Containers expect a working `lo` (127.0.0.1), which starts down.
fn bring_up_loopback() -> io::Result<()> {
    let index = netlink::link_index("lo")?.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "lo: missing"))?;
    netlink::set_link_up(index).map_err(|e| context(e, "lo"))
}

/// Remove the TAP: clear persist and let the last close remove it. If the TAP
/// is still attached elsewhere (EBUSY), delete it by netlink instead.
fn remove_tap(ifname: &str) -> io::Result<()> {
    let Some(index) = netlink::link_index(ifname)? else {
        return Ok(());
    };
    match Tap::open(ifname) {
        Ok(tap) => tap.set_persist(false),
        Err(e) if os_error(&e) == Some(libc::EBUSY) => {
            netlink::del_link(index).map_err(|e| context(e, ifname.to_string()))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::testutil::*;
    use crate::FrameIo;
    use std::time::{Duration, Instant};

    const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn spec(netns: &str) -> EndpointSpec {
        EndpointSpec {
            netns: netns.to_string(),
            create_netns: true,
            ifname: "eth0".into(),
            mac: [0x02, 0x42, 0xac, 0x11, 0x00, 0x02],
            mtu: 1450,
            ipv4: Ipv4Addr::new(172, 17, 0, 2),
            prefix_len: 16,
            default_gw: Some(Ipv4Addr::new(172, 17, 0, 1)),
            ipv6: None,
            queues: 2,
        }
    }

    /// Check, from inside the namespace, that the port is as `spec` says.
    fn assert_configured(spec: &EndpointSpec) {
        let s = spec.clone();
        netns::run_in(&spec.netns, move || {
            let link = netlink::link(&s.ifname).unwrap().expect("eth0 exists");
            assert_eq!((link.mac, link.mtu, link.up), (Some(s.mac), s.mtu, true));
            let addrs = netlink::ipv4_addrs(link.index).unwrap();
            assert_eq!(addrs, vec![(s.ipv4, s.prefix_len)]);
            assert!(netlink::link("lo").unwrap().unwrap().up, "lo is up");
            let routes = netlink::ipv4_routes().unwrap();
            assert!(routes.contains(&(Ipv4Addr::UNSPECIFIED, 0)), "{routes:?}");
        })
        .unwrap();
    }

    fn arp_request(sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&sender_ip.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target_ip.octets());
        f
    }

    /// Read frames until an ARP reply shows up (the kernel also sends
    /// IPv6 noise on a new link), or give up after a few seconds.
    fn wait_arp_reply(tap: &Tap) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            match tap.recv(&mut buf) {
                Ok((n, _)) if n >= 42 && buf[12..14] == [8, 6] && buf[20..22] == [0, 2] => return buf[..n].to_vec(),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("recv: {e}"),
            }
        }
        panic!("no ARP reply from the namespace");
    }

    #[test]
    fn lab_attach_is_idempotent_and_passes_frames() {
        require_root();
        let name = unique_name();
        let _guard = NetnsGuard(name.clone());
        let spec = spec(&name);

        let queues = attach(&spec).expect("first attach");
        assert_eq!(queues.len(), 2);
        assert_eq!(queues[1].name(), "eth0");
        assert_configured(&spec);
        drop(queues); // as on daemon exit: the persistent TAP stays
        let tap = attach(&spec).expect("second attach").remove(0);
        assert_configured(&spec);

        // The fd works from the host namespace: the kernel inside answers ARP.
        tap.send(&arp_request(Ipv4Addr::new(172, 17, 0, 1), spec.ipv4), &crate::Offload::NONE).unwrap();
        let reply = wait_arp_reply(&tap);
        assert_eq!(reply[0..6], PEER_MAC, "reply goes to the asker");
        assert_eq!(reply[22..28], spec.mac, "sender hardware address");
        assert_eq!(reply[28..32], spec.ipv4.octets(), "sender protocol address");

        drop(tap);
        detach(&name, "eth0", false).unwrap();
        let gone = netns::run_in(&name, || netlink::link_index("eth0").unwrap()).unwrap();
        assert_eq!(gone, None);
        detach(&name, "eth0", false).expect("detach of a gone TAP");
        detach(&name, "eth0", true).unwrap();
        assert!(!netns::exists(&name));
        detach(&name, "eth0", true).expect("detach in a gone netns");
    }

    #[test]
    fn lab_detach_while_attached() {
        require_root();
        let name = unique_name();
        let _guard = NetnsGuard(name.clone());
        let tap = attach(&spec(&name)).unwrap();
        detach(&name, "eth0", true).unwrap();
        assert!(!netns::exists(&name));
        drop(tap);
    }

    #[test]
    fn lab_errors_name_what_failed() {
        require_root();
        let name = unique_name();
        let _guard = NetnsGuard(name.clone());
        let mut s = spec(&name);
        s.create_netns = false;
        let err = attach(&s).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains(&name), "{err}");

        s.create_netns = true;
        s.mtu = 10; // below the minimum Ethernet MTU
        let err = attach(&s).unwrap_err();
        assert_eq!(os_error(&err), Some(libc::EINVAL), "{err}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("netns {name}: eth0: netlink RTM_SETLINK mtu 10")), "{text}");
        // The half-made TAP was removed again.
        let left = netns::run_in(&name, || netlink::link_index("eth0").unwrap()).unwrap();
        assert_eq!(left, None);
        let err = attach(&EndpointSpec { netns: "a/b".into(), ..s }).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
