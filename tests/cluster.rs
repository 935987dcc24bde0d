//! Lab tests of overlay networks shared through etcd: "hosts" are network
//! namespaces on a kernel-bridge underlay, each running its own vswitchd
//! with `--cluster-store`, and an etcd server (Debian's etcd-server,
//! installed on first use) on the underlay. They need root (and fail
//! without).
//!
//! Run: `cargo test --test cluster`.

mod common;

use common::cluster::{Etcd, Underlay};
use common::dns::{a_records, ask};
use common::ipv6;
use common::*;
use hickory_proto::rr::RecordType;
use std::net::Ipv4Addr;
use std::time::Duration;

const PING: Duration = Duration::from_secs(5);
/// How long the cluster may take to show a change on every host.
const SETTLE: Duration = Duration::from_secs(10);
/// The hosts' lease in these tests: short, so a dead host's entries go soon.
const TTL: &str = "3";

/// VTEP address of host `i` on underlay `/24` number `lab`.
fn vtep(lab: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 253, lab, 1 + i as u8)
}

/// The underlay with `hosts` hosts and etcd on .100, and a vswitchd on each.
fn cluster(lab: u8, hosts: usize) -> (Underlay, Etcd, Vec<Daemon>) {
    let underlay = Underlay::create(hosts, Ipv4Addr::new(10, 253, lab, 100));
    let etcd = Etcd::start(&underlay.ns.0, underlay.address);
    let daemons = (0..hosts).map(|i| host_daemon(&underlay, &etcd, lab, i)).collect();
    (underlay, etcd, daemons)
}

fn host_daemon(underlay: &Underlay, etcd: &Etcd, lab: u8, i: usize) -> Daemon {
    let cidr = format!("{}/24", vtep(lab, i));
    let gateway = underlay.address.to_string();
    let store = etcd.url();
    let args = ["--uplink", UPLINK_IFACE, "--uplink-ip", &cidr, "--uplink-gw", &gateway];
    let cluster_args = ["--cluster-store", &store, "--cluster-ttl", TTL];
    Daemon::start_in_netns(&underlay.hosts[i].0, &[&args[..], &cluster_args[..]].concat())
}

fn has_network(d: &Daemon, name: &str) -> bool {
    d.list_nets().as_array().unwrap().iter().any(|n| n["Name"] == name)
}

fn peers(d: &Daemon, net: &str) -> Vec<String> {
    let inspect = d.show_net(net);
    inspect[0]["Peers"].as_array().unwrap().iter().map(|p| p["IP"].as_str().unwrap().to_string()).collect()
}

/// Captures of what every host sends into the underlay (a capture sees
/// what comes in on its interface: here, from the host at its other end).
fn capture_hosts(underlay: &Underlay) -> Vec<PacketSocket> {
    (0..underlay.hosts.len()).map(|i| PacketSocket::open(&underlay.ns.0, &format!("h{i}"))).collect()
}

/// The inner frames of the VXLAN datagrams the captures have seen, or see
/// within 300 ms.
fn vxlan_inner_frames(captures: &[PacketSocket]) -> Vec<Vec<u8>> {
    let inner =
        |f: &[u8]| proto::vxlan::decapsulate(f, proto::vxlan::UDP_PORT).ok().flatten().map(|d| d.inner.to_vec());
    let frames = captures.iter().flat_map(|c| c.collect(Duration::from_millis(300)));
    frames.filter_map(|f| inner(&f)).collect()
}

fn fdb_has(d: &Daemon, net: &str, mac: &str) -> bool {
    d.vsctl_ok(&["fdb-show", net]).contains(mac)
}

#[test]
fn an_overlay_network_made_once_serves_containers_on_every_host() {
    let (underlay, _etcd, mut d) = cluster(10, 3);
    d[0].add_net("ov", "10.150.0.0/24", &["--driver", "overlay"]);
    for host in &d[1..] {
        assert!(wait_for(SETTLE, || has_network(host, "ov")), "the network did not reach every host");
        let inspect = host.show_net("ov");
        assert_eq!((inspect[0]["Driver"].as_str(), inspect[0]["Scope"].as_str()), (Some("overlay"), Some("global")));
        assert_eq!(inspect[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"], "4096");
    }
    let stderr = d[1].vsctl_err(&["add-net", "ov", "--subnet", "10.151.0.0/24", "--driver", "overlay"]);
    assert_one_line_naming("the same name on another host", &stderr, &["exists"]);

    // Cluster-wide IPAM: each host hands out the next address nobody holds.
    let c0 = d[0].new_port("ov");
    let c1 = d[1].new_port("ov");
    let c2 = d[2].new_port("ov");
    let mut ips = vec![c0.ip, c1.ip, c2.ip];
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "two hosts handed out one address: {} {} {}", c0.ip, c1.ip, c2.ip);
    let taken = c1.ip.to_string();
    let stderr = d[0].vsctl_err(&["add-port", "ov", &d[0].ns_name(), "--ip", &taken]);
    assert_one_line_naming("an address another host holds", &stderr, &[&taken]);
    // So are a MAC and a DNS name, whichever host holds them, and whether
    // or not the view has shown them yet (the claim in the store decides).
    let stderr = d[0].vsctl_err(&["add-port", "ov", &d[0].ns_name(), "--mac", &c2.mac]);
    assert_one_line_naming("a MAC another host holds", &stderr, &[&c2.mac]);
    let stderr = d[2].vsctl_err(&["add-port", "ov", &d[2].ns_name(), "--name", &c1.name.to_uppercase()]);
    assert_one_line_naming("a name another host holds", &stderr, &["name"]);

    // Every host knows the others' endpoints before any frame: the MACs
    // are pinned, and ARP never crosses the underlay.
    assert!(wait_for(SETTLE, || fdb_has(&d[0], "ov", &c1.mac) && fdb_has(&d[0], "ov", &c2.mac)));
    assert!(wait_for(SETTLE, || fdb_has(&d[1], "ov", &c0.mac)));
    let captures = capture_hosts(&underlay);
    assert!(ping(&c0.netns, c1.ip, PING), "host 0's container cannot ping host 1's");
    assert!(ping(&c2.netns, c0.ip, PING), "host 2's container cannot ping host 0's");
    let inner = vxlan_inner_frames(&captures);
    assert!(!inner.is_empty(), "the capture saw no VXLAN at all");
    let arp = inner.iter().filter(|f| f.len() > 14 && f[12..14] == [0x08, 0x06]).count();
    assert_eq!(arp, 0, "ARP crossed the underlay inside VXLAN");
    tcp_stream(&c1.netns, c1.ip, &c0.netns, 8 << 20).unwrap_or_else(|e| panic!("TCP across the overlay: {e}"));
    let mut peer_ips = peers(&d[0], "ov");
    peer_ips.sort();
    assert_eq!(peer_ips, vec![vtep(10, 1).to_string(), vtep(10, 2).to_string()]);

    // The embedded DNS knows the containers of every host.
    let gateway: Ipv4Addr = "10.150.0.1".parse().unwrap();
    assert_eq!(a_records(&ask(&c0.netns, gateway, &c1.name, RecordType::A)), vec![c1.ip]);
    d[1].vsctl_ok(&["alias", "ov", &c1.netns, "db"]);
    let resolves = || a_records(&ask(&c0.netns, gateway, "db", RecordType::A)) == vec![c1.ip];
    assert!(wait_for(SETTLE, resolves), "an alias given on host 1 is not known on host 0");

    // A port removed on one host disappears on all; its address is free again.
    d[2].vsctl_ok(&["del-port", "ov", &c2.netns]);
    assert!(wait_for(SETTLE, || !fdb_has(&d[0], "ov", &c2.mac)), "host 2's old endpoint stayed at host 0");
    assert!(wait_for(SETTLE, || !peers(&d[0], "ov").contains(&vtep(10, 2).to_string())), "the tunnel stayed");
    let again = d[0].add_port("ov", &d[0].ns_name(), &["--ip", &c2.ip.to_string()]);
    assert_eq!(again.ip, c2.ip);

    // The network goes only when no host has ports on it, and then everywhere.
    let stderr = d[2].vsctl_err(&["del-net", "ov"]);
    assert_one_line_naming("del-net with ports elsewhere", &stderr, &["other hosts"]);
    for (host, ep) in [(&d[0], &c0), (&d[0], &again), (&d[1], &c1)] {
        host.vsctl_ok(&["del-port", "ov", &ep.netns]);
    }
    assert!(wait_for(SETTLE, || d[2].vsctl(&["del-net", "ov"]).status.success()), "del-net stayed refused");
    for host in &d {
        assert!(wait_for(SETTLE, || !has_network(host, "ov")), "the network outlived its removal on a host");
    }

    // A host that was down while a network was made anew under the same
    // name finds the new one when it comes back.
    d[0].add_net("ov2", "10.154.0.0/24", &["--driver", "overlay", "--vni", "4200"]);
    assert!(wait_for(SETTLE, || has_network(&d[2], "ov2")));
    d[2].kill9();
    d[0].vsctl_ok(&["del-net", "ov2"]);
    d[0].add_net("ov2", "10.155.0.0/24", &["--driver", "overlay", "--vni", "4300"]);
    d[2].spawn();
    let renewed = || d[2].show_net("ov2")[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"] == "4300";
    assert!(wait_for(SETTLE, renewed), "the restarted host kept the old network");
}

#[test]
fn forwarding_survives_a_store_outage_and_dead_hosts_expire() {
    let (underlay, mut etcd, mut d) = cluster(11, 2);
    let v6 = ["--driver", "overlay", "--vni", "77", "--ipv6", "--subnet6", "fd00:152::/64"];
    d[0].add_net("ov", "10.152.0.0/24", &v6);
    assert!(wait_for(SETTLE, || has_network(&d[1], "ov")));
    let c0 = d[0].new_port("ov");
    let c1 = d[1].new_port("ov");
    assert!(wait_for(SETTLE, || fdb_has(&d[0], "ov", &c1.mac)));
    assert!(ping(&c0.netns, c1.ip, PING));
    // Dual stack across hosts: the NDP proxy answers for the remote endpoint too.
    let (c1_v6, _) = ipv6::endpoint_ipv6(&c1).expect("host 1's container has IPv6");
    let captures = capture_hosts(&underlay);
    ipv6::ping6(&c0.netns, &c0.interface, c1_v6, PING).unwrap_or_else(|e| panic!("IPv6 across the overlay: {e}"));
    let inner = vxlan_inner_frames(&captures);
    assert!(!inner.is_empty(), "the capture saw no VXLAN at all");
    assert_eq!(ipv6::solicitations_for(&inner, c1_v6), 0, "a neighbour solicitation crossed the underlay");

    // The store goes away: what is known keeps forwarding; changes that
    // need the store are refused and change nothing.
    etcd.stop();
    assert!(ping(&c0.netns, c1.ip, PING), "forwarding stopped with the store");
    tcp_stream(&c0.netns, c0.ip, &c1.netns, 2 << 20).unwrap_or_else(|e| panic!("TCP during the outage: {e}"));
    let before = d[1].vsctl_ok(&["show-net", "ov"]);
    let stderr = d[1].vsctl_err(&["add-port", "ov", &d[1].ns_name()]);
    assert_one_line_naming("add-port without the store", &stderr, &["cluster store"]);
    assert_eq!(d[1].vsctl_ok(&["show-net", "ov"]), before, "a refused add-port changed the network");
    d[1].add_net("local", "10.153.0.0/24", &[]); // bridge networks need no store

    // The store is back: both hosts catch up.
    etcd.spawn();
    let late = {
        let ns = d[1].ns_name();
        assert!(
            wait_for(SETTLE, || d[1].vsctl(&["add-port", "ov", &ns]).status.success()),
            "add-port stayed refused after the store came back"
        );
        d[1].register_ns(&ns);
        Endpoint::parse(&d[1].vsctl_ok(&["add-port", "ov", &ns, "--may-exist"]))
    };
    assert!(wait_for(SETTLE, || fdb_has(&d[0], "ov", &late.mac)), "host 0 did not catch up");
    assert!(ping(&c0.netns, late.ip, PING));

    // A store that lost everything gets it back from the hosts: the
    // network (a claim needs it), from a host with ports on it, and their
    // endpoints; and the hosts follow the store's new history.
    etcd.wipe();
    let after_wipe = {
        let ns = d[1].ns_name();
        let added = || d[1].vsctl(&["add-port", "ov", &ns]).status.success();
        assert!(wait_for(SETTLE, added), "the network did not come back to a wiped store");
        d[1].register_ns(&ns);
        Endpoint::parse(&d[1].vsctl_ok(&["add-port", "ov", &ns, "--may-exist"]))
    };
    assert!(wait_for(SETTLE, || fdb_has(&d[0], "ov", &after_wipe.mac)), "host 0 stopped following the store");
    assert!(ping(&c0.netns, after_wipe.ip, PING));
    let stderr = d[1].vsctl_err(&["add-port", "ov", &d[1].ns_name(), "--ip", &c0.ip.to_string()]);
    assert_one_line_naming("an address held before the wipe", &stderr, &[&c0.ip.to_string()]);

    // A host killed without a word: its lease expires and its endpoints go.
    d[1].kill9();
    assert!(
        wait_for(SETTLE, || !fdb_has(&d[0], "ov", &c1.mac) && peers(&d[0], "ov").is_empty()),
        "a dead host's endpoints outlived its lease"
    );
    // Back from a restart, it publishes them again.
    d[1].spawn();
    assert!(wait_for(SETTLE, || fdb_has(&d[0], "ov", &c1.mac)), "the restarted host's endpoints did not return");
    assert!(ping(&c0.netns, c1.ip, PING), "no traffic after the host came back");
}

#[test]
fn bad_cluster_flags_are_refused() {
    require_root();
    let uplink = ["--uplink", "lo", "--uplink-ip", "192.0.2.1/24", "--uplink-gw", "192.0.2.2"];
    let cases: [(&[&str], &[&str], &str); 3] = [
        (&uplink, &["--cluster-store", "consul://x:1"], "etcd://"),
        (&uplink, &["--cluster-store", "etcd://x:1", "--cluster-advertise", "192.0.2.9"], "VTEP"),
        (&[], &["--cluster-store", "etcd://x:1"], "--uplink"),
    ];
    for (base, flags, words) in cases {
        let out = std::process::Command::new(VSWITCHD).args(base).args(flags).output().expect("run vswitchd");
        assert!(!out.status.success(), "{flags:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(words), "{flags:?}: {stderr}");
    }
}
