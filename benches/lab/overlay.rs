//! The overlay row: TCP between containers on two "hosts" (namespaces
//! joined by a veth underlay, MTU 1500) over VXLAN VNI 42, the containers'
//! MTU 1450. Kernel: on each host a Linux bridge with a `vxlan` device
//! (remote: the other host) and the container's veth. vswitchd: one daemon
//! per host with its uplink on the underlay, an overlay network and the
//! other host as its peer.

use std::net::Ipv4Addr;

use ports::kernel_bridge::{self as kb, VxlanSpec};
use ports::{netlink, netns};

use crate::topo::{self, ns_name, Cleanup, Daemon, Pair, BLACKHOLE_HOST, UPLINK_IF};

const VNI: u32 = 42;
const OVERLAY_MTU: u32 = 1450;

/// Create namespaces `names` (tracked for cleanup).
fn create(cleanup: &mut Cleanup, names: &[&String]) {
    for name in names {
        cleanup.track_ns(name);
        netns::create(name).unwrap_or_else(|e| panic!("create netns {name}: {e}"));
    }
}

/// Two host namespaces joined by veth `up0` <-> `up0` at `net.1` and `net.2`.
fn underlay(h1: &str, h2: &str, net: [u8; 3]) -> (Ipv4Addr, Ipv4Addr) {
    let (ip1, ip2) = (Ipv4Addr::new(net[0], net[1], net[2], 1), Ipv4Addr::new(net[0], net[1], net[2], 2));
    let peer = h2.to_string();
    netns::run_in(h1, move || -> std::io::Result<()> {
        let up = kb::create_veth_into(UPLINK_IF, UPLINK_IF, &peer)?;
        netlink::set_link_mtu(up, 1500)?;
        netlink::set_link_up(up)?;
        netlink::set_link_up(1)
    })
    .expect("enter host netns")
    .unwrap_or_else(|e| panic!("underlay veth {h1} <-> {h2}: {e}"));
    netns::run_in(h2, || -> std::io::Result<()> {
        let up = netlink::link_index(UPLINK_IF)?.ok_or_else(|| std::io::Error::other("no up0"))?;
        netlink::set_link_mtu(up, 1500)?;
        netlink::set_link_up(up)?;
        netlink::set_link_up(1)
    })
    .expect("enter host netns")
    .unwrap_or_else(|e| panic!("underlay up in {h2}: {e}"));
    (ip1, ip2)
}

/// In a kernel host: bridge br0 with vxlan vx0 (to `remote`) and a veth to
/// container namespace `container` (its eth0 at `ip`, MTU 1450).
fn kernel_host(host: &str, local: Ipv4Addr, remote: Ipv4Addr, container: &str, ip: Ipv4Addr) {
    let container2 = container.to_string();
    netns::run_in(host, move || -> std::io::Result<()> {
        let up = netlink::link_index(UPLINK_IF)?.ok_or_else(|| std::io::Error::other("no up0"))?;
        netlink::add_ipv4_addr(up, local, 24)?;
        let br = kb::create_bridge("br0")?;
        let spec = VxlanSpec { vni: VNI, local, remote, dev: up, port: proto::vxlan::UDP_PORT };
        let vx = kb::create_vxlan("vx0", &spec)?;
        let veth = kb::create_veth_into("vc", "eth0", &container2)?;
        for port in [vx, veth] {
            netlink::set_link_mtu(port, OVERLAY_MTU)?;
            kb::set_controller(port, br)?;
            netlink::set_link_up(port)?;
        }
        netlink::set_link_up(br)
    })
    .expect("enter host netns")
    .unwrap_or_else(|e| panic!("kernel overlay host {host}: {e}"));
    netns::run_in(container, || -> std::io::Result<()> {
        let eth = netlink::link_index("eth0")?.ok_or_else(|| std::io::Error::other("no eth0"))?;
        netlink::set_link_mtu(eth, OVERLAY_MTU)
    })
    .expect("enter container netns")
    .unwrap_or_else(|e| panic!("MTU in {container}: {e}"));
    topo::address(container, "eth0", ip, None);
}

/// Kernel reference: hosts xH, xI; containers xA (10.208.0.2) and xB (.3).
pub fn kernel(cleanup: &mut Cleanup) -> Pair {
    let (h1, h2, a, b) = (ns_name("xH"), ns_name("xI"), ns_name("xA"), ns_name("xB"));
    create(cleanup, &[&h1, &h2, &a, &b]);
    let (v1, v2) = underlay(&h1, &h2, [10, 207, 0]);
    let (a_ip, b_ip) = (Ipv4Addr::new(10, 208, 0, 2), Ipv4Addr::new(10, 208, 0, 3));
    kernel_host(&h1, v1, v2, &a, a_ip);
    kernel_host(&h2, v2, v1, &b, b_ip);
    pair("kernel overlay", a, b, a_ip, b_ip, "eth0".into())
}

/// vswitchd: hosts oH, oI with a daemon each; containers oA (10.210.0.2)
/// on oH and oB (.3) on oI. `cleanups` hold one daemon each.
pub fn vswitchd(cleanups: &mut [Cleanup; 2], workers: usize) -> (Pair, [Daemon; 2]) {
    let (h1, h2, a, b) = (ns_name("oH"), ns_name("oI"), ns_name("oA"), ns_name("oB"));
    create(&mut cleanups[0], &[&h1, &h2]);
    let (v1, v2) = underlay(&h1, &h2, [10, 209, 0]);
    let (a_ip, b_ip) = (Ipv4Addr::new(10, 210, 0, 2), Ipv4Addr::new(10, 210, 0, 3));
    let mut start = |i: usize, host: &str, local: Ipv4Addr, remote: Ipv4Addr, ns: &str, ip: Ipv4Addr| {
        let cleanup = &mut cleanups[i];
        let dir = topo::scratch_dir_named(cleanup, if i == 0 { "a" } else { "b" });
        let (cidr, gw) = (format!("{local}/24"), remote.to_string());
        let uplink = ["--uplink", UPLINK_IF, "--uplink-ip", &cidr, "--uplink-gw", &gw];
        let daemon = topo::start_daemon(cleanup, &dir, workers, Some(host), &uplink);
        let fail = |e: String| -> ! { panic!("{e}\n---- vswitchd log ----\n{}", daemon.log_tail(4000)) };
        let net = ["add-net", "ovbench", "--subnet", "10.210.0.0/24", "--driver", "overlay", "--vni", "42"];
        daemon.vsctl(&net).unwrap_or_else(|e| fail(e));
        daemon.vsctl(&["add-peer", "ovbench", &gw]).unwrap_or_else(|e| fail(e));
        let port = topo::add_port(&daemon, cleanup, "ovbench", ns, ip).unwrap_or_else(|e| fail(e));
        (daemon, port.ifname)
    };
    let (d1, _) = start(0, &h1, v1, v2, &a, a_ip);
    let (d2, b_if) = start(1, &h2, v2, v1, &b, b_ip);
    (pair("vswitchd overlay", a, b, a_ip, b_ip, b_if), [d1, d2])
}

fn pair(label: &'static str, a_ns: String, b_ns: String, a_ip: Ipv4Addr, b_ip: Ipv4Addr, b_if: String) -> Pair {
    let mtu = topo::mtu_of(&b_ns, &b_if);
    let o = a_ip.octets();
    let blackhole = Ipv4Addr::new(o[0], o[1], o[2], BLACKHOLE_HOST);
    Pair { label, a_ns, b_ns, a_ip, b_ip, b_if, blackhole, mtu }
}
