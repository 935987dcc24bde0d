//! Lab tests of overlay networks with static peers: two "hosts" (network
//! namespaces joined by a veth pair, the underlay), each running its own
//! vswitchd with its uplink on it, one overlay network stretched over both
//! with VXLAN. They need root (and fail without).
//!
//! Run: `cargo test --test overlay`.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;

const PING: Duration = Duration::from_secs(5);

/// Two host namespaces joined by a veth pair `up0` <-> `up0`, both ends up.
fn underlay() -> (NetnsGuard, NetnsGuard) {
    require_root();
    let (h1, h2) = (NetnsGuard::create(), NetnsGuard::create());
    let peer = h2.0.clone();
    in_ns(&h1.0, move || -> std::io::Result<()> {
        let up = ports::kernel_bridge::create_veth_into(UPLINK_IFACE, UPLINK_IFACE, &peer)?;
        ports::netlink::set_link_up(up)
    })
    .unwrap_or_else(|e| panic!("underlay veth: {e}"));
    in_ns(&h2.0, || -> std::io::Result<()> {
        let up = ports::netlink::link_index(UPLINK_IFACE)?.expect("the veth's other end");
        ports::netlink::set_link_up(up)
    })
    .unwrap_or_else(|e| panic!("underlay veth up: {e}"));
    (h1, h2)
}

/// vswitchd in `host`, its uplink (the VTEP) at `ip`, the other host as next hop.
fn host_daemon(host: &str, ip: Ipv4Addr, other: Ipv4Addr) -> Daemon {
    let (cidr, gw) = (format!("{ip}/24"), other.to_string());
    Daemon::start_in_netns(host, &["--uplink", UPLINK_IFACE, "--uplink-ip", &cidr, "--uplink-gw", &gw])
}

#[test]
fn containers_on_two_hosts_talk_over_an_overlay_network() {
    let (h1, h2) = underlay();
    let (vtep1, vtep2): (Ipv4Addr, Ipv4Addr) = ("10.254.0.1".parse().unwrap(), "10.254.0.2".parse().unwrap());
    let mut d1 = host_daemon(&h1.0, vtep1, vtep2);
    let d2 = host_daemon(&h2.0, vtep2, vtep1);
    for (d, peer) in [(&d1, vtep2), (&d2, vtep1)] {
        d.add_net("ov", "10.140.0.0/24", &["--driver", "overlay", "--vni", "42"]);
        d.vsctl_ok(&["add-peer", "ov", &peer.to_string()]);
    }
    let inspect = d1.show_net("ov");
    assert_eq!((inspect[0]["Driver"].as_str(), inspect[0]["Scope"].as_str()), (Some("overlay"), Some("global")));
    assert_eq!(inspect[0]["Options"]["com.docker.network.driver.mtu"], "1450", "underlay MTU minus 50");
    assert_eq!(inspect[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"], "42");
    // Without a cluster store IPAM is per host: the addresses are given.
    let c1 = d1.add_port("ov", &d1.ns_name(), &["--ip", "10.140.0.2"]);
    let c2 = d2.add_port("ov", &d2.ns_name(), &["--ip", "10.140.0.3"]);

    assert!(ping(&c1.netns, c2.ip, PING), "host 1's container cannot ping host 2's");
    assert!(ping(&c2.netns, c1.ip, PING), "host 2's container cannot ping host 1's");
    tcp_stream(&c2.netns, c2.ip, &c1.netns, 8 << 20).unwrap_or_else(|e| panic!("TCP across the overlay: {e}"));
    tcp_stream(&c1.netns, c1.ip, &c2.netns, 2 << 20).unwrap_or_else(|e| panic!("TCP back: {e}"));
    let tunnel = format!("vxlan42/{vtep2}");
    assert!(d1.stats().port_counter(&tunnel, "tx_packets") > 0, "nothing went through {tunnel}");

    // Without the peer, host 2 is out of reach; and back with it.
    d1.vsctl_ok(&["del-peer", "ov", &vtep2.to_string()]);
    assert!(!ping(&c1.netns, c2.ip, Duration::from_secs(1)), "reached host 2 with no peer");
    d1.vsctl_ok(&["add-peer", "ov", &vtep2.to_string()]);
    assert!(ping(&c1.netns, c2.ip, PING), "the peer came back but the overlay did not");

    // The overlay and its peers are saved: after kill -9 traffic resumes.
    d1.kill9();
    d1.spawn();
    assert!(ping(&c1.netns, c2.ip, Duration::from_secs(10)), "the overlay did not come back after a restart");
}

#[test]
fn bad_overlay_requests_are_refused_and_change_nothing() {
    let (h1, _h2) = underlay();
    let d = host_daemon(&h1.0, "10.254.1.1".parse().unwrap(), "10.254.1.2".parse().unwrap());
    d.add_net("ov", "10.141.0.0/24", &["--driver", "overlay", "--vni", "7"]);
    d.add_net("br", "10.142.0.0/24", &[]);
    d.vsctl_ok(&["add-peer", "ov", "10.254.1.2"]);
    let before = d.vsctl_ok(&["show-net", "ov"]);
    let cases: &[(&[&str], &[&str])] = &[
        (&["add-net", "ov2", "--subnet", "10.143.0.0/24", "--driver", "overlay", "--vni", "7"], &["VNI 7", "in use"]),
        (&["add-net", "ov2", "--subnet", "10.143.0.0/24", "--driver", "overlay", "--vni", "16777216"], &["--vni"]),
        (&["add-net", "ov2", "--subnet", "10.143.0.0/24", "--vni", "9"], &["--vni", "overlay"]),
        (&["add-peer", "br", "10.254.1.3"], &["br", "not an overlay"]),
        (&["add-peer", "ov", "10.254.1.2"], &["10.254.1.2", "already"]),
        (&["add-peer", "ov", "10.254.1.1"], &["10.254.1.1", "own"]),
        (&["add-peer", "ov", "nonsense"], &["nonsense"]),
        (&["add-peer", "ov", "0.0.0.0"], &["0.0.0.0", "unicast"]),
        (&["add-peer", "ov", "224.0.0.1"], &["224.0.0.1", "unicast"]),
        (&["del-peer", "ov", "10.254.1.9"], &["10.254.1.9", "not a peer"]),
        (&["add-peer", "nosuch", "10.254.1.3"], &["nosuch"]),
    ];
    for (args, words) in cases {
        let stderr = d.vsctl_err(args);
        assert_one_line_naming(&args.join(" "), &stderr, words);
    }
    assert_eq!(d.vsctl_ok(&["show-net", "ov"]), before, "a refused request changed the network");
    // A switch without an uplink has no VTEP.
    let plain = Daemon::start();
    let stderr = plain.vsctl_err(&["add-net", "ov", "--driver", "overlay"]);
    assert_one_line_naming("overlay without uplink", &stderr, &["--uplink"]);
    assert!(before.contains("10.254.1.2"), "show-net lists the peers: {before}");
    // del-net takes the tunnels with it.
    assert!(d.stats().0.to_string().contains("vxlan7/10.254.1.2"));
    d.vsctl_ok(&["del-net", "ov"]);
    assert!(!d.stats().0.to_string().contains("vxlan7/"), "a tunnel outlived its network");
    d.add_net("ov", "10.141.0.0/24", &["--driver", "overlay", "--vni", "7"]);
}

#[test]
fn the_linux_vxlan_device_talks_to_containers_on_the_overlay() {
    let (h1, h2) = underlay();
    let (vtep1, vtep2): (Ipv4Addr, Ipv4Addr) = ("10.254.2.1".parse().unwrap(), "10.254.2.2".parse().unwrap());
    let kernel_ip: Ipv4Addr = "10.144.0.9".parse().unwrap();
    // Host 2 has no vswitchd: a kernel vxlan device, VNI 42, vswitchd's VTEP as remote.
    in_ns(&h2.0, move || -> std::io::Result<()> {
        use ports::{kernel_bridge, netlink};
        let up = netlink::link_index(UPLINK_IFACE)?.expect("underlay");
        netlink::add_ipv4_addr(up, vtep2, 24)?;
        let spec = kernel_bridge::VxlanSpec { vni: 42, local: vtep2, remote: vtep1, dev: up, port: 4789 };
        let vx = kernel_bridge::create_vxlan("vx0", &spec)?;
        netlink::add_ipv4_addr(vx, kernel_ip, 24)?;
        netlink::set_link_up(vx)
    })
    .unwrap_or_else(|e| panic!("kernel vxlan in {}: {e}", h2.0));
    let d1 = host_daemon(&h1.0, vtep1, vtep2);
    d1.add_net("ov", "10.144.0.0/24", &["--driver", "overlay", "--vni", "42"]);
    d1.vsctl_ok(&["add-peer", "ov", &vtep2.to_string()]);
    let c1 = d1.add_port("ov", &d1.ns_name(), &["--ip", "10.144.0.2"]);

    assert!(ping(&c1.netns, kernel_ip, PING), "the container cannot ping the kernel's vxlan device");
    assert!(ping(&h2.0, c1.ip, PING), "the kernel's vxlan device cannot ping the container");
    // The kernel hands over TCP super-frames whole, with partial checksums
    // inside the inner frame: switched whole, the bytes checked at the end.
    tcp_stream(&c1.netns, c1.ip, &h2.0, 8 << 20).unwrap_or_else(|e| panic!("TCP kernel vxlan → container: {e}"));
    tcp_stream(&h2.0, kernel_ip, &c1.netns, 8 << 20).unwrap_or_else(|e| panic!("TCP container → kernel vxlan: {e}"));
    assert_eq!(d1.stats().drops("malformed"), 0, "tunnel frames refused");
}
