//! Lab tests of dual-stack networks: real vswitchd, namespaces and TAPs,
//! IPv6 traffic made with plain sockets. They need root (and fail without).
//!
//! Run: `cargo test --test ipv6`.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::ipv6::*;
use common::*;

const PING: Duration = Duration::from_secs(5);

/// The interface of the default route via fe80::1 in /proc/net/ipv6_route
/// (destination ::/0), if there is one.
fn default_route_via_fe80_1(ns: &str) -> Option<String> {
    let table = proc_net_in(ns, "ipv6_route");
    table.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        let is_it = cols.len() > 9
            && cols[0] == "0".repeat(32)
            && cols[1] == "00"
            && cols[4] == "fe800000000000000000000000000001";
        is_it.then(|| cols[9].to_string())
    })
}

fn has_default_route_via_fe80_1(ns: &str) -> bool {
    default_route_via_fe80_1(ns).is_some()
}

#[test]
fn the_ipv6_default_route_moves_to_the_next_dual_stack_port() {
    let d = Daemon::start();
    d.add_net("v6g", "10.112.0.0/24", &["--ipv6", "--subnet6", "2001:db8:112::/64"]);
    d.add_net("v6h", "10.113.0.0/24", &["--ipv6", "--subnet6", "2001:db8:113::/64"]);
    let a = d.new_port("v6g");
    d.add_port("v6h", &a.netns, &[]);
    assert_eq!(default_route_via_fe80_1(&a.netns).as_deref(), Some("eth0"));
    d.vsctl_ok(&["del-port", "v6g", &a.netns]);
    assert_eq!(default_route_via_fe80_1(&a.netns).as_deref(), Some("eth1"), "the route did not move to eth1");
    ping6(&a.netns, "eth1", "2001:db8:113::1".parse().unwrap(), PING).unwrap_or_else(|e| panic!("via eth1: {e}"));
}

/// Serve one TCP echo on [server_ip]:port in `server_ns`; connect from
/// `client_ns` to [dst]:dst_port, send a greeting and read it back.
/// Returns the address the server saw the client at.
fn published_echo_once(
    server_ns: &str,
    server_ip: Ipv6Addr,
    port: u16,
    client_ns: &str,
    dst: Ipv6Addr,
    dst_port: u16,
) -> Result<Ipv6Addr, String> {
    let listener = in_ns(server_ns, move || TcpListener::bind((server_ip, port))).map_err(|e| e.to_string())?;
    let server = std::thread::spawn(move || -> Result<Ipv6Addr, String> {
        let (mut conn, peer) = listener.accept().map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).map_err(|e| e.to_string())?;
        conn.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        match peer {
            SocketAddr::V6(p) => Ok(*p.ip()),
            other => Err(format!("peer {other}")),
        }
    });
    let to = SocketAddr::from((dst, dst_port));
    let mut conn = in_ns(client_ns, move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .map_err(|e| format!("connect {to}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    conn.write_all(b"hello over v6").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = conn.read(&mut buf).map_err(|e| format!("read echo: {e}"))?;
    if &buf[..n] != b"hello over v6" {
        return Err(format!("echo was {:?}", &buf[..n]));
    }
    server.join().map_err(|_| "server panicked".to_string())?
}

#[test]
fn dual_stack_containers_reach_each_other_and_the_gateway_over_ipv6() {
    let mut d = Daemon::start();
    d.add_net("v6a", "10.106.0.0/24", &["--ipv6", "--subnet6", "2001:db8:106::/64"]);
    let a = d.new_port("v6a");
    let b = d.new_port("v6a");
    let (a6, prefix) = endpoint_ipv6(&a).expect("add-port prints the IPv6 address");
    let (b6, _) = endpoint_ipv6(&b).unwrap();
    assert_eq!(prefix, 64);
    // Docker's form: the subnet's prefix and the MAC (02:42:0a:6a:00:02).
    assert_eq!(a6, "2001:db8:106::242:a6a:2".parse::<Ipv6Addr>().unwrap());
    assert_eq!(a.json["IPv6Gateway"], "2001:db8:106::1");

    let inspect = d.show_net("v6a");
    assert_eq!(inspect[0]["EnableIPv6"], true);
    assert_eq!(inspect[0]["IPAM"]["Config"][1]["Subnet"], "2001:db8:106::/64");
    assert_eq!(inspect[0]["Containers"][&a.id]["IPv6Address"], format!("{a6}/64"));
    assert!(has_default_route_via_fe80_1(&a.netns), "no IPv6 default route via fe80::1 in A");

    ping6(&a.netns, "eth0", b6, PING).unwrap_or_else(|e| panic!("A → B over IPv6: {e}"));
    ping6(&a.netns, "eth0", "fe80::1".parse().unwrap(), PING).unwrap_or_else(|e| panic!("A → fe80::1: {e}"));
    ping6(&b.netns, "eth0", "2001:db8:106::1".parse().unwrap(), PING).unwrap_or_else(|e| panic!("B → gateway6: {e}"));
    // IPv4 still works beside it.
    assert!(ping(&a.netns, b.ip, PING), "A → B over IPv4 on a dual-stack network");

    // A TCP stream over IPv6, both ways, with the namespaces' default offloads.
    tcp_stream(&b.netns, b6, &a.netns, 16 << 20).unwrap_or_else(|e| panic!("TCP A → B over IPv6: {e}"));
    tcp_stream(&a.netns, a6, &b.netns, 4 << 20).unwrap_or_else(|e| panic!("TCP B → A over IPv6: {e}"));

    // The IPv6 side is saved: after kill -9 the restarted daemon forwards it.
    d.kill9();
    d.spawn();
    ping6(&a.netns, "eth0", b6, Duration::from_secs(10)).unwrap_or_else(|e| panic!("A → B after restart: {e}"));
    let c = d.new_port("v6a");
    assert_eq!(endpoint_ipv6(&c).unwrap().0, "2001:db8:106::242:a6a:4".parse::<Ipv6Addr>().unwrap());
}

#[test]
fn neighbour_solicitations_for_known_addresses_are_not_flooded() {
    let d = Daemon::start();
    d.add_net("v6b", "10.107.0.0/24", &["--ipv6", "--subnet6", "2001:db8:107::/64"]);
    let a = d.new_port("v6b");
    let b = d.new_port("v6b");
    let c = d.new_port("v6b");
    let (b6, _) = endpoint_ipv6(&b).unwrap();
    // Let the namespaces' own start-up chatter (DAD, MLD) pass first.
    std::thread::sleep(Duration::from_millis(500));
    let cap_c = PacketSocket::open(&c.netns, "eth0");
    ping6(&a.netns, "eth0", b6, PING).unwrap_or_else(|e| panic!("A → B: {e}"));
    ping6(&a.netns, "eth0", "fe80::1".parse().unwrap(), PING).unwrap_or_else(|e| panic!("A → fe80::1: {e}"));
    let frames = cap_c.collect(Duration::from_millis(500));
    assert_eq!(solicitations_for(&frames, b6), 0, "A's solicitation for B was flooded to C");
    assert_eq!(solicitations_for(&frames, "fe80::1".parse().unwrap()), 0, "solicitation for fe80::1 flooded");

    // Control (the capture works): a solicitation for an unknown address floods.
    let unknown: Ipv6Addr = "2001:db8:107::dead".parse().unwrap();
    let _ = ping6(&a.netns, "eth0", unknown, Duration::from_millis(1500));
    let frames = cap_c.collect(Duration::from_millis(500));
    assert!(solicitations_for(&frames, unknown) > 0, "the capture in C saw no flooded solicitation at all");
}

#[test]
fn duplicate_address_detection_sees_a_duplicate_and_passes_a_free_address() {
    let d = Daemon::start();
    d.add_net("v6c", "10.108.0.0/24", &["--ipv6", "--subnet6", "2001:db8:108::/64"]);
    let a = d.new_port("v6c");
    let b = d.new_port("v6c");
    let (b6, _) = endpoint_ipv6(&b).unwrap();
    let free: Ipv6Addr = "2001:db8:108::77".parse().unwrap();
    // B's address (B could answer for itself too) and the gateway's, which
    // only the switch can defend.
    let gateway6: Ipv6Addr = "2001:db8:108::1".parse().unwrap();
    for ip in [b6, gateway6, free] {
        add_ipv6_with_dad(&a.netns, "eth0", ip, 64);
    }
    let state = |ip: Ipv6Addr| ipv6_addrs_in(&a.netns, "eth0").into_iter().find(|s| s.addr == ip);
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let (dups, ok) = ([state(b6), state(gateway6)], state(free));
        let settled = dups.iter().all(|d| d.is_some_and(|s| s.dad_failed)) && ok.is_some_and(|s| !s.tentative);
        if settled || Instant::now() > deadline {
            for (ip, dup) in [b6, gateway6].iter().zip(dups) {
                assert!(dup.is_some_and(|s| s.dad_failed), "{ip} taken twice without DAD failing: {dup:?}");
            }
            assert!(ok.is_some_and(|s| !s.tentative && !s.dad_failed), "a free address was blocked: {ok:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The free address is usable: B reaches it.
    ping6(&b.netns, "eth0", free, PING).unwrap_or_else(|e| panic!("B → A's second address: {e}"));
}

#[test]
fn bad_ipv6_requests_are_refused_and_change_nothing() {
    let d = Daemon::start();
    d.add_net("v4only", "10.109.0.0/24", &[]);
    d.add_net("v6d", "10.110.0.0/24", &["--ipv6", "--subnet6", "2001:db8:110::/64"]);
    let before = d.vsctl_ok(&["show-net", "v6d"]);
    let ns = d.ns_name();
    d.register_ns(&ns);
    let cases: &[(&[&str], &[&str])] = &[
        (&["add-port", "v4only", &ns, "--ip6", "2001:db8:109::5"], &["--ip6", "v4only", "IPv6"]),
        (&["add-port", "v6d", &ns, "--ip6", "2001:db8:999::5"], &["2001:db8:999::5", "not a host"]),
        (&["add-port", "v6d", &ns, "--ip6", "2001:db8:110::1"], &["2001:db8:110::1", "in use"]),
        (&["add-port", "v6d", &ns, "--ip6", "nonsense"], &["--ip6", "nonsense"]),
        (&["add-net", "v6e", "--ipv6", "--subnet6", "2001:db8:110:0:1::/80"], &["overlaps", "v6d"]),
        (&["add-net", "v6e", "--ipv6", "--subnet6", "2001:db8::1/64"], &["host bits"]),
        (
            &["add-net", "v6e", "--ipv6", "--subnet6", "2001:db8:111::/64", "--gateway6", "2001:db8:112::1"],
            &["gateway"],
        ),
    ];
    for (args, words) in cases {
        let stderr = d.vsctl_err(args);
        assert_one_line_naming(&args.join(" "), &stderr, words);
    }
    assert_eq!(d.vsctl_ok(&["show-net", "v6d"]), before, "a refused request changed the network");
    assert!(!d.list_nets().to_string().contains("v6e"), "a refused add-net left a network behind");
    // --ipv6 without --subnet6: a unique local /64 of its own.
    d.add_net("v6f", "10.111.0.0/24", &["--ipv6"]);
    let subnet6 = d.show_net("v6f")[0]["IPAM"]["Config"][1]["Subnet"].as_str().unwrap().to_string();
    assert!(subnet6.starts_with("fd") && subnet6.ends_with("::/64"), "default IPv6 subnet {subnet6}");
}

#[test]
fn ipv6_is_routed_to_the_outside_with_the_uplink_answering_ndp_for_containers() {
    let out = Outside::create("10.252.0.1".parse().unwrap(), 24);
    let outside6: Ipv6Addr = "2001:db8:252::100".parse().unwrap();
    add_ipv6(&out.outside.0, "eth0", outside6, 64);
    let uplink_ip = "10.252.0.2".parse().unwrap();
    let d = out.start_daemon(uplink_ip, &["--uplink-ip6", "2001:db8:252::2/64", "--uplink-gw6", "2001:db8:252::100"]);
    // The containers' /80 lies inside the segment's on-link /64: the
    // outside reaches them by neighbour discovery, answered by the uplink.
    d.add_net("v6out", "10.120.0.0/24", &["--ipv6", "--subnet6", "2001:db8:252:0:1::/80"]);
    let c = d.new_port("v6out");
    let (c6, _) = endpoint_ipv6(&c).unwrap();
    let capture = PacketSocket::open(&out.outside.0, "eth0");

    ping6(&c.netns, "eth0", outside6, PING).unwrap_or_else(|e| panic!("container → outside over IPv6: {e}"));
    ping6(&out.outside.0, "eth0", c6, PING).unwrap_or_else(|e| panic!("outside → container over IPv6: {e}"));
    let uplink_mac = parse_mac(&docker_mac(uplink_ip));
    let answers = advertisements_for(&capture.collect(Duration::from_millis(300)), c6);
    assert!(!answers.is_empty(), "the outside saw no neighbour advertisement for {c6}");
    assert!(answers.iter().all(|(_, mac)| *mac == uplink_mac), "answered with another MAC: {answers:?}");

    // TCP both ways through the uplink, with the container's own address.
    tcp_stream(&out.outside.0, outside6, &c.netns, 8 << 20).unwrap_or_else(|e| panic!("TCP container → outside: {e}"));
    tcp_stream(&c.netns, c6, &out.outside.0, 4 << 20).unwrap_or_else(|e| panic!("TCP outside → container: {e}"));

    // A port published on the uplink's IPv6 address reaches the container,
    // which sees the client's own address.
    d.vsctl_ok(&["publish", "v6out", &c.netns, "8081:80"]);
    let peer = published_echo_once(&c.netns, c6, 80, &out.outside.0, "2001:db8:252::2".parse().unwrap(), 8081)
        .unwrap_or_else(|e| panic!("published port over IPv6: {e}"));
    assert_eq!(peer, outside6, "the container saw {peer}, not the client");

    // A user rule on the uplink applies to IPv6 as to IPv4.
    let rule =
        d.vsctl_ok(&["add-rule", "--uplink", "--src", &outside6.to_string(), "--proto", "icmp", "--action", "drop"]);
    assert!(ping6(&out.outside.0, "eth0", c6, Duration::from_secs(1)).is_err(), "the drop rule let ICMPv6 in");
    assert!(d.stats().drops("rule") > 0, "the rule's drops are not counted");
    d.vsctl_ok(&["del-rule", rule.trim()]);
    ping6(&out.outside.0, "eth0", c6, PING).unwrap_or_else(|e| panic!("outside → container after del-rule: {e}"));

    // An internal network's containers stay inside.
    d.add_net("v6in", "10.121.0.0/24", &["--internal", "--ipv6", "--subnet6", "2001:db8:252:0:2::/80"]);
    let i = d.new_port("v6in");
    let (i6, _) = endpoint_ipv6(&i).unwrap();
    let capture = PacketSocket::open(&out.outside.0, "eth0");
    assert!(ping6(&i.netns, "eth0", outside6, Duration::from_secs(1)).is_err(), "an internal container got out");
    let from_internal = capture.collect(Duration::from_millis(200)).iter().any(|f| {
        let ip = proto::ethernet::Frame::parse(f).ok().and_then(|e| proto::ipv6::Packet::parse(e.payload()).ok());
        ip.is_some_and(|ip| ip.src() == i6)
    });
    assert!(!from_internal, "a packet from the internal container reached the outside");
    assert!(ping6(&out.outside.0, "eth0", i6, Duration::from_secs(1)).is_err(), "an internal container was reached");
}
