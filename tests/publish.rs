//! Lab tests of published ports, hairpin, user filter rules and
//! inter-container communication off: vswitchd runs in a "host" namespace
//! of its own and owns an uplink (a veth whose other end sits in an
//! "outside" namespace standing for the world).
//!
//! ```text
//!   container ──TAP── vswitchd (netns H) ──AF_PACKET── H:up0 ══veth══ O:eth0 10.252.0.1/24
//!                     uplink address 10.252.0.2/24, next hop 10.252.0.1
//! ```
//!
//! Like tests/nat.rs they need root, make and remove their own namespaces
//! (also on failure) and only ever send to addresses inside them.
//! Run: `cargo test --test publish -- --test-threads=2`.

mod common;

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// O:eth0, the outside client, and the switch's next hop.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 1);
/// The address the switch owns on the uplink segment, where ports are published.
const UPLINK: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 2);
/// How long a connection or exchange that must work may take (ARP included).
const REACH: Duration = Duration::from_secs(6);
/// How long we wait for something that must not work.
const BLOCKED: Duration = Duration::from_millis(1500);
const PING: Duration = Duration::from_secs(4);

/// A daemon in its own host namespace with an uplink to an outside
/// namespace (see `common::UplinkLab`), at this file's addresses.
type Lab = UplinkLab;

impl Lab {
    fn start() -> Lab {
        UplinkLab::start_at(OUTSIDE, UPLINK)
    }
}

fn up(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(UPLINK, port)
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        other => panic!("not IPv4: {other}"),
    }
}

/// The lines of `vsctl port NETNS`, as a set.
fn port_lines(d: &Daemon, ns: &str) -> BTreeSet<String> {
    d.vsctl_ok(&["port", ns]).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
}

fn set(lines: &[&str]) -> BTreeSet<String> {
    lines.iter().map(|l| l.to_string()).collect()
}

/// `list-rules --json` as an array.
fn rules(d: &Daemon) -> Vec<Value> {
    let v = d.vsctl_json(&["list-rules", "--json"]);
    v.as_array().unwrap_or_else(|| panic!("list-rules --json must print an array: {v}")).clone()
}

/// `add-rule args...`; returns the id it prints.
fn add_rule(d: &Daemon, args: &[&str]) -> u64 {
    let mut a = vec!["add-rule"];
    a.extend_from_slice(args);
    let out = d.vsctl_ok(&a);
    out.trim().parse().unwrap_or_else(|e| panic!("add-rule {args:?} must print the rule id, printed {out:?}: {e}"))
}

// ---------------------------------------------------------------------------
// Servers on a chosen port (0: any) inside a namespace, bound to 0.0.0.0 so
// they outlive a TAP device that goes away and comes back.

/// Echo servers on every address of `ns` at `port` (0: any free port).
fn tcp_srv(ns: &str, port: u16) -> TcpEcho {
    TcpEcho::bind(ns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
}

fn udp_srv(ns: &str, port: u16) -> UdpEcho {
    UdpEcho::bind(ns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
}

// ---------------------------------------------------------------------------
// Clients.

/// A TCP connection from `ns` to `dst`, failing after `timeout`. The
/// kernel picks the local port at connect time, so it never collides with a
/// TIME_WAIT of an earlier connection to the same destination.
fn tcp_connect(ns: &str, dst: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    in_ns(ns, move || TcpStream::connect_timeout(&dst.into(), timeout))
}

/// Connect from `ns` to `dst` (retrying for `within`, each try 2 s at most),
/// exchange `msg` through the echo, and return the connection's (local,
/// peer) addresses.
fn tcp_reach(
    ns: &str,
    dst: SocketAddrV4,
    msg: &[u8],
    within: Duration,
) -> Result<(SocketAddrV4, SocketAddrV4), String> {
    let deadline = Instant::now() + within;
    let mut conn = loop {
        let t = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(100), Duration::from_secs(2));
        match tcp_connect(ns, dst, t) {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => return Err(format!("connect {dst} from {ns}: {e}")),
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    };
    echo_round(&mut conn, msg)?;
    let local = v4(conn.local_addr().map_err(|e| e.to_string())?);
    let peer = v4(conn.peer_addr().map_err(|e| e.to_string())?);
    Ok((local, peer))
}

/// Write `msg` and read the same bytes back (2 s at most).
fn echo_round(conn: &mut TcpStream, msg: &[u8]) -> Result<(), String> {
    conn.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    conn.write_all(msg).map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0u8; msg.len()];
    conn.read_exact(&mut back).map_err(|e| format!("read the echo: {e}"))?;
    if back != msg {
        return Err(format!("echo differs: sent {msg:?}, got {back:?}"));
    }
    Ok(())
}

/// One connect attempt that must fail; returns how long it took to fail
/// and why.
fn tcp_blocked(ns: &str, dst: SocketAddrV4, what: &str) -> (Duration, io::Error) {
    let started = Instant::now();
    match tcp_connect(ns, dst, BLOCKED) {
        Ok(c) => panic!("{what}: connect {dst} from {ns} succeeded ({:?} -> {:?})", c.local_addr(), c.peer_addr()),
        Err(e) => (started.elapsed(), e),
    }
}

/// A UDP socket in `ns` (any address, any port).
fn udp_client(ns: &str) -> UdpSocket {
    in_ns(ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))).unwrap_or_else(|e| panic!("bind UDP in {ns}: {e}"))
}

/// Send `payload` to `dst` from `sock` until it comes back; returns where
/// the answer came from.
fn udp_reach(sock: &UdpSocket, dst: SocketAddrV4, payload: &[u8], within: Duration) -> Result<SocketAddrV4, String> {
    udp_round_trip(sock, dst, payload, Duration::from_millis(300), within)
}

// ---------------------------------------------------------------------------

#[test]
fn publish_specs_are_parsed_listed_and_refused_cleanly() {
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("pn", "10.253.1.0/24", &[]);
    let a = d.ns_name();
    d.add_port("pn", &a, &["-p", "8080:80", "-p", "5300:53/udp", "-p", "9000-9009:7000-7009"]);
    assert_eq!(
        port_lines(d, &a),
        set(&["80/tcp -> 10.252.0.2:8080", "53/udp -> 10.252.0.2:5300", "7000-7009/tcp -> 10.252.0.2:9000-9009"]),
        "vsctl port {a}"
    );

    // No host port: the lowest free ones of 32768-60999, per protocol.
    let out = d.vsctl_ok(&["publish", "pn", &a, "81"]);
    assert!(out.contains("81/tcp -> 10.252.0.2:32768"), "publish 81 printed {out:?}");
    let out = d.vsctl_ok(&["publish", "pn", &a, "82-84"]);
    assert!(out.contains("82-84/tcp -> 10.252.0.2:32769-32771"), "publish 82-84 printed {out:?}");
    let out = d.vsctl_ok(&["publish", "pn", &a, "10.252.0.2::85/udp"]);
    assert!(out.contains("85/udp -> 10.252.0.2:32768"), "publish 10.252.0.2::85/udp printed {out:?}");
    // HOSTIP = the uplink address is accepted.
    d.vsctl_ok(&["publish", "pn", &a, "10.252.0.2:8081:86"]);
    let a_ports = set(&[
        "80/tcp -> 10.252.0.2:8080",
        "53/udp -> 10.252.0.2:5300",
        "7000-7009/tcp -> 10.252.0.2:9000-9009",
        "81/tcp -> 10.252.0.2:32768",
        "82-84/tcp -> 10.252.0.2:32769-32771",
        "85/udp -> 10.252.0.2:32768",
        "86/tcp -> 10.252.0.2:8081",
    ]);
    assert_eq!(port_lines(d, &a), a_ports, "vsctl port {a}");

    // A second container: host ports taken by A are refused, naming A.
    let b = d.ns_name();
    d.add_port("pn", &b, &[]);
    let owner = format!("already published by {a}/eth0");
    for spec in ["8080:80", "9005:80", "5300:53/udp", "32770:80", "8999-9000:80-81"] {
        let err = d.vsctl_err(&["publish", "pn", &b, spec]);
        assert_one_line_naming(&format!("publish {spec} on a taken host port"), &err, &[&owner]);
    }
    // Same number, other protocol: free.
    d.vsctl_ok(&["publish", "pn", &b, "5300:53"]);
    assert_eq!(port_lines(d, &b), set(&["53/tcp -> 10.252.0.2:5300"]));
    // A host IP other than the uplink address.
    let err = d.vsctl_err(&["publish", "pn", &b, "10.9.9.9:8090:80"]);
    assert_one_line_naming("publish on a foreign host IP", &err, &["10.9.9.9"]);
    // Malformed specs.
    for spec in ["0", "70000", "80/sctp", "8080:0", "9000-9002:80-81", "90-80", "abc", "nope:80:80", "a:b:c:d"] {
        let err = d.vsctl_err(&["publish", "pn", &b, spec]);
        assert_one_line_naming(&format!("publish {spec:?}"), &err, &["invalid", "spec", spec]);
    }
    assert_eq!(port_lines(d, &b), set(&["53/tcp -> 10.252.0.2:5300"]), "a refused publish changed B's ports");
    assert_eq!(port_lines(d, &a), a_ports, "a refused publish changed A's ports");

    // A refused add-port leaves nothing behind: no endpoint, no namespace.
    let c = d.ns_name();
    for specs in [
        vec!["-p", "8090:80", "-p", "8080:81"],
        vec!["-p", "8090:80", "-p", "8090:81"],
        vec!["-p", "8090:80", "-p", "80/sctp"],
    ] {
        let mut args = vec!["add-port", "pn", &c];
        args.extend_from_slice(&specs);
        let err = d.vsctl_err(&args);
        assert_one_line_naming(&format!("add-port {specs:?}"), &err, &["published", "invalid", "8090", "8080"]);
        assert!(!ports::netns::exists(&c), "refused add-port {specs:?} left namespace {c} behind");
        d.vsctl_err(&["port", &c]);
        let listed = d.vsctl_ok(&["list-ports", "pn"]);
        assert!(!listed.contains(&c), "refused add-port {specs:?} left an endpoint: {listed}");
    }
    // ... and did not keep 8090 for itself.
    d.add_port("pn", &c, &["-p", "8090:80"]);
    assert_eq!(port_lines(d, &c), set(&["80/tcp -> 10.252.0.2:8090"]));

    // Unpublish frees the host port for someone else.
    d.vsctl_ok(&["unpublish", "pn", &a, "8080:80"]);
    assert!(!port_lines(d, &a).contains("80/tcp -> 10.252.0.2:8080"), "unpublish left the mapping listed");
    d.vsctl_ok(&["publish", "pn", &b, "8080:80"]);
    d.vsctl_ok(&["unpublish", "pn", &a, "7000-7009"]);
    d.vsctl_ok(&["publish", "pn", &b, "9000-9009:7000-7009"]);
    let err = d.vsctl_err(&["unpublish", "pn", &a, "8080:80"]);
    assert_one_line_naming("unpublish of a mapping that is gone", &err, &["no published port", "80"]);
    let err = d.vsctl_err(&["port", "vswnosuchns"]);
    assert_one_line_naming("port of an unknown namespace", &err, &["vswnosuchns"]);
}

#[test]
fn publishing_without_an_uplink_is_refused() {
    let d = Daemon::start();
    d.add_net("nu", "10.253.2.0/24", &[]);
    let a = d.ns_name();
    let err = d.vsctl_err(&["add-port", "nu", &a, "-p", "8080:80"]);
    assert_one_line_naming("add-port -p without an uplink", &err, &["uplink"]);
    assert!(!ports::netns::exists(&a), "refused add-port left namespace {a} behind");
    d.add_port("nu", &a, &[]);
    let err = d.vsctl_err(&["publish", "nu", &a, "8080:80"]);
    assert_one_line_naming("publish without an uplink", &err, &["uplink"]);
    assert!(port_lines(&d, &a).is_empty());
}

#[test]
fn outside_client_reaches_a_published_tcp_port_with_its_real_address() {
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("pt", "10.253.3.0/24", &[]);
    let c = d.new_port("pt");
    let srv = tcp_srv(&c.netns, 0);
    let spec = format!("8080:{}", srv.port());
    d.vsctl_ok(&["publish", "pt", &c.netns, &spec]);

    for round in 0..3 {
        let (local, peer) = tcp_reach(lab.o(), up(8080), format!("pub-tcp-{round}").as_bytes(), REACH)
            .unwrap_or_else(|e| panic!("outside -> {UPLINK}:8080, connection {round}: {e}"));
        assert_eq!(peer, up(8080), "the answers came from {peer}");
        assert_eq!(*local.ip(), OUTSIDE);
        assert_eq!(srv.peers().last(), Some(&local), "the container saw {:?}, the client is {local}", srv.peers());
    }
    assert_eq!(srv.peers().len(), 3);
    // Nothing else on the uplink address reaches it.
    tcp_blocked(lab.o(), up(8081), "an unpublished host port");
    assert_eq!(srv.peers().len(), 3, "an unpublished port reached the container");
}

#[test]
fn outside_client_reaches_a_published_udp_port_with_its_real_address() {
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("pu", "10.253.4.0/24", &[]);
    let c = d.new_port("pu");
    let srv = udp_srv(&c.netns, 0);
    d.vsctl_ok(&["publish", "pu", &c.netns, &format!("5300:{}/udp", srv.port())]);
    // The same number over TCP is not published.
    let tcp = tcp_srv(&c.netns, srv.port());

    let sock = udp_client(lab.o());
    let me = v4(sock.local_addr().unwrap());
    for round in 0..3 {
        let payload = format!("pub-udp-{round}");
        let from = udp_reach(&sock, up(5300), payload.as_bytes(), REACH)
            .unwrap_or_else(|e| panic!("outside -> {UPLINK}:5300/udp, round {round}: {e}"));
        assert_eq!(from, up(5300), "the answer came from {from}");
        let sources = srv.sources_of(payload.as_bytes());
        assert_eq!(sources.len(), 1, "{sources:?}");
        let src = *sources.iter().next().unwrap();
        assert_eq!(*src.ip(), OUTSIDE, "the container saw {src}, not the outside client");
        assert_eq!(src.port(), me.port(), "the container saw {src}, the client is on port {}", me.port());
    }
    tcp_blocked(lab.o(), up(5300), "5300/tcp (only 5300/udp is published)");
    assert!(tcp.peers().is_empty(), "{:?}", tcp.peers());
}

#[test]
fn a_published_range_maps_port_by_port_and_ephemeral_ports_work() {
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("pr", "10.253.5.0/24", &[]);
    let ns = d.ns_name();
    let c = d.add_port("pr", &ns, &["-p", "9100-9102:7100-7102", "-p", "7200"]);
    let srvs: Vec<TcpEcho> = [7100, 7101, 7102, 7200].iter().map(|p| tcp_srv(&c.netns, *p)).collect();
    assert_eq!(
        port_lines(d, &ns),
        set(&["7100-7102/tcp -> 10.252.0.2:9100-9102", "7200/tcp -> 10.252.0.2:32768"]),
        "vsctl port {ns}"
    );
    for (i, host) in [9100u16, 9101, 9102, 32768].into_iter().enumerate() {
        let (local, peer) = tcp_reach(lab.o(), up(host), format!("range-{host}").as_bytes(), REACH)
            .unwrap_or_else(|e| panic!("outside -> {UPLINK}:{host}: {e}"));
        assert_eq!(peer, up(host));
        for (j, s) in srvs.iter().enumerate() {
            let want = if i == j { vec![local] } else { vec![] };
            assert_eq!(s.peers(), want, "after connecting to host port {host}: container port {}", s.port());
        }
        srvs[i].clear_peers();
    }
}

#[test]
fn unpublish_stops_new_connections() {
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("pw", "10.253.6.0/24", &[]);
    let c = d.new_port("pw");
    let tcp = tcp_srv(&c.netns, 80);
    let udp = udp_srv(&c.netns, 53);
    d.vsctl_ok(&["publish", "pw", &c.netns, "8080:80"]);
    d.vsctl_ok(&["publish", "pw", &c.netns, "5300:53/udp"]);
    tcp_reach(lab.o(), up(8080), b"before", REACH).unwrap_or_else(|e| panic!("before unpublish: {e}"));
    let sock = udp_client(lab.o());
    udp_reach(&sock, up(5300), b"before-udp", REACH).unwrap_or_else(|e| panic!("UDP before unpublish: {e}"));

    d.vsctl_ok(&["unpublish", "pw", &c.netns, "8080:80"]);
    d.vsctl_ok(&["unpublish", "pw", &c.netns, "53/udp"]);
    assert!(port_lines(d, &c.netns).is_empty(), "{:?}", port_lines(d, &c.netns));
    let (tcp_before, udp_before) = (tcp.peers().len(), udp.count());
    tcp_blocked(lab.o(), up(8080), "after unpublish");
    let fresh = udp_client(lab.o());
    let r = udp_reach(&fresh, up(5300), b"after-udp", BLOCKED);
    assert!(r.is_err(), "UDP reached the container after unpublish: {r:?}");
    assert_eq!(tcp.peers().len(), tcp_before, "a connection reached the container after unpublish");
    assert_eq!(udp.count(), udp_before, "a datagram reached the container after unpublish");

    // Publishing again works again.
    d.vsctl_ok(&["publish", "pw", &c.netns, "8080:80"]);
    tcp_reach(lab.o(), up(8080), b"again", REACH).unwrap_or_else(|e| panic!("after publishing again: {e}"));
}

#[test]
fn hairpin_reaches_a_published_port_from_the_same_and_another_network() {
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("hp1", "10.253.7.0/24", &[]);
    d.add_net("hp2", "10.253.8.0/24", &[]);
    let s = d.new_port("hp1");
    let tcp = tcp_srv(&s.netns, 80);
    let udp = udp_srv(&s.netns, 53);
    d.vsctl_ok(&["publish", "hp1", &s.netns, "8080:80"]);
    d.vsctl_ok(&["publish", "hp1", &s.netns, "5300:53/udp"]);
    let same = d.new_port("hp1");
    let other = d.new_port("hp2");

    for (what, c) in [("same network", &same), ("other network", &other)] {
        let msg = format!("hairpin-tcp-{what}");
        let (_, peer) = tcp_reach(&c.netns, up(8080), msg.as_bytes(), REACH)
            .unwrap_or_else(|e| panic!("{what}: {} -> {UPLINK}:8080: {e}", c.ip));
        assert_eq!(peer, up(8080), "{what}: the answers came from {peer}");
        let seen = tcp.peers();
        let last = seen.last().unwrap_or_else(|| panic!("{what}: the server accepted nothing"));
        assert_eq!(*last.ip(), UPLINK, "{what}: the server saw {last}, not the uplink address (masquerade)");

        let sock = udp_client(&c.netns);
        let payload = format!("hairpin-udp-{what}");
        let from = udp_reach(&sock, up(5300), payload.as_bytes(), REACH)
            .unwrap_or_else(|e| panic!("{what}: {} -> {UPLINK}:5300/udp: {e}", c.ip));
        assert_eq!(from, up(5300), "{what}: the UDP answer came from {from}");
        let sources = udp.sources_of(payload.as_bytes());
        assert!(
            !sources.is_empty() && sources.iter().all(|a| *a.ip() == UPLINK),
            "{what}: the server saw UDP from {sources:?}, not the uplink address"
        );
    }
    assert_eq!(tcp.peers().len(), 2, "{:?}", tcp.peers());
}

#[test]
fn an_uplink_drop_rule_blocks_a_published_port_until_deleted() {
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("rd", "10.253.9.0/24", &[]);
    let ns = d.ns_name();
    let c = d.add_port("rd", &ns, &["-p", "8080:80", "-p", "8081:81", "-p", "8080:53/udp"]);
    let t80 = tcp_srv(&c.netns, 80);
    let t81 = tcp_srv(&c.netns, 81);
    let u53 = udp_srv(&c.netns, 53);
    tcp_reach(lab.o(), up(8080), b"before", REACH).unwrap_or_else(|e| panic!("before the rule: {e}"));

    let before = d.stats().drops("rule");
    let id = add_rule(d, &["--uplink", "--proto", "tcp", "--dport", "8080", "--action", "drop"]);
    let listed = rules(d);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let r = &listed[0];
    assert_eq!(r["id"].as_u64(), Some(id), "{r}");
    assert_eq!(r["uplink"], true, "{r}");
    assert_eq!(r["proto"], "tcp", "{r}");
    assert_eq!(r["dport"].as_u64(), Some(8080), "{r}");
    assert_eq!(r["action"], "drop", "{r}");
    let text = d.vsctl_ok(&["list-rules"]);
    assert!(text.contains("8080") && text.contains("drop"), "list-rules:\n{text}");

    let n80 = t80.peers().len();
    let (took, why) = tcp_blocked(lab.o(), up(8080), "the drop rule");
    assert_eq!(why.kind(), io::ErrorKind::TimedOut, "connect failed after {took:?} ({why}): not silently dropped");
    assert_eq!(t80.peers().len(), n80, "a connection passed the drop rule");
    let after = d.stats().drops("rule");
    assert!(after > before, "drops.rule did not rise ({before} -> {after})");
    // The rule is that specific: another port, and UDP to the same number, pass.
    tcp_reach(lab.o(), up(8081), b"other-port", REACH).unwrap_or_else(|e| panic!("8081 with the rule: {e}"));
    assert_eq!(t81.peers().len(), 1);
    let sock = udp_client(lab.o());
    udp_reach(&sock, up(8080), b"udp-same-number", REACH).unwrap_or_else(|e| panic!("8080/udp with the rule: {e}"));
    assert!(!u53.sources_of(b"udp-same-number").is_empty());

    d.vsctl_ok(&["del-rule", &id.to_string()]);
    assert!(rules(d).is_empty(), "{:?}", rules(d));
    tcp_reach(lab.o(), up(8080), b"after", REACH).unwrap_or_else(|e| panic!("after del-rule: {e}"));
    let err = d.vsctl_err(&["del-rule", &id.to_string()]);
    assert_one_line_naming("del-rule of a deleted rule", &err, &[&id.to_string()]);
}

#[test]
fn network_rules_drop_container_traffic_first_match_wins() {
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("rn", "10.253.10.0/24", &[]);
    d.add_net("free", "10.253.11.0/24", &[]);
    let c = d.new_port("rn");
    let f = d.new_port("free");
    let tcp = tcp_srv(lab.o(), 0);
    let udp = udp_srv(lab.o(), 0);
    let (tdst, udst) = (SocketAddrV4::new(OUTSIDE, tcp.port()), SocketAddrV4::new(OUTSIDE, udp.port()));
    let sock = udp_client(&c.netns);
    udp_reach(&sock, udst, b"before", REACH).unwrap_or_else(|e| panic!("before the rules: {e}"));

    let dst = format!("{OUTSIDE}/32");
    let allow = add_rule(d, &["--net", "rn", "--dst", &dst, "--proto", "icmp", "--action", "allow"]);
    let drop = add_rule(d, &["--net", "rn", "--dst", &dst, "--action", "drop"]);
    let listed: Vec<u64> = rules(d).iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(listed, vec![allow, drop], "list-rules must keep the order of evaluation");
    let r = &rules(d)[1];
    assert!(r["network"] == "rn" || r["network"].as_str().is_some_and(|s| s.len() == 64), "{r}");
    assert!(r["dst"].as_str().is_some_and(|s| s.starts_with("10.252.0.1")), "{r}");

    let before = d.stats().drops("rule");
    // ICMP matches the allow rule first.
    ping_detail(&c.netns, OUTSIDE, PING).unwrap_or_else(|e| panic!("ping allowed by rule {allow}: {e}"));
    // UDP and TCP fall to the drop rule.
    let seen = udp.count();
    let r = udp_reach(&sock, udst, b"dropped", BLOCKED);
    assert!(r.is_err(), "UDP passed the drop rule: {r:?}");
    let (took, why) = tcp_blocked(&c.netns, tdst, "the --net drop rule");
    assert_eq!(
        why.kind(),
        io::ErrorKind::TimedOut,
        "the --net drop rule: failed after {took:?} ({why}): not silently dropped"
    );
    assert_eq!(udp.count(), seen, "a datagram reached the outside");
    assert!(tcp.peers().is_empty(), "{:?}", tcp.peers());
    let after = d.stats().drops("rule");
    assert!(after > before, "drops.rule did not rise ({before} -> {after})");
    // Other destinations (the gateway) and other networks are not affected.
    assert!(ping(&c.netns, c.gateway, PING), "the rule broke the gateway");
    let fsock = udp_client(&f.netns);
    udp_reach(&fsock, udst, b"other-net", REACH).unwrap_or_else(|e| panic!("a container of another network: {e}"));

    // Without the allow rule, ICMP falls to the drop rule too.
    d.vsctl_ok(&["del-rule", &allow.to_string()]);
    assert!(!ping(&c.netns, OUTSIDE, BLOCKED), "ping passed after its allow rule was deleted");
    d.vsctl_ok(&["del-rule", &drop.to_string()]);
    udp_reach(&sock, udst, b"after", REACH).unwrap_or_else(|e| panic!("after del-rule: {e}"));
    tcp_reach(&c.netns, tdst, b"after-tcp", REACH).unwrap_or_else(|e| panic!("TCP after del-rule: {e}"));
}

#[test]
fn bad_rules_are_refused_and_change_nothing() {
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("rb", "10.253.12.0/24", &[]);
    let kept = add_rule(d, &["--net", "rb", "--proto", "udp", "--dport", "53", "--action", "allow"]);
    let before = rules(d);
    for (args, words) in [
        (vec!["--net", "nosuchnet", "--action", "drop"], vec!["nosuchnet"]),
        (vec!["--dport", "80", "--action", "drop"], vec!["dport", "proto"]),
        (vec!["--proto", "icmp", "--dport", "80", "--action", "drop"], vec!["dport", "proto"]),
        (vec!["--net", "rb", "--uplink", "--action", "drop"], vec!["uplink", "net"]),
        (vec!["--src", "10.1.2.300/24", "--action", "drop"], vec!["src", "10.1.2.300"]),
        (vec!["--dst", "nonsense", "--action", "drop"], vec!["dst", "nonsense"]),
        (vec!["--proto", "tcp", "--dport", "0", "--action", "drop"], vec!["dport", "0"]),
        (vec!["--proto", "tcp", "--dport", "70000", "--action", "drop"], vec!["dport", "70000"]),
        (vec!["--proto", "sctp", "--action", "drop"], vec!["proto", "sctp"]),
        (vec!["--action", "reject"], vec!["action", "reject"]),
        (vec!["--src", "10.0.0.0/8"], vec!["action"]),
    ] {
        let mut a = vec!["add-rule"];
        a.extend_from_slice(&args);
        let err = d.vsctl_err(&a);
        if err.contains("For more information, try '--help'") {
            // Refused by vsctl's argument parser (clap): its usual multi-line message.
            let lower = err.to_lowercase();
            assert!(words.iter().all(|w| lower.contains(w)), "add-rule {args:?}: {err:?} names none of {words:?}");
        } else {
            assert_one_line_naming(&format!("add-rule {args:?}"), &err, &words);
        }
    }
    let err = d.vsctl_err(&["del-rule", "999"]);
    assert_one_line_naming("del-rule 999", &err, &["999"]);
    assert_eq!(rules(d), before, "a refused rule changed the list");
    // A network named by a rule stays until the rule goes.
    let err = d.vsctl_err(&["del-net", "rb"]);
    assert_one_line_naming("del-net of a network a rule names", &err, &["rule"]);
    d.vsctl_ok(&["del-rule", &kept.to_string()]);
    d.vsctl_ok(&["del-net", "rb"]);
}

#[test]
fn icc_off_isolates_containers_but_not_the_gateway_or_the_outside() {
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("iso", "10.253.13.0/24", &["--icc=false"]);
    let a = d.new_port("iso");
    let b = d.new_port("iso");
    let out_udp = udp_srv(lab.o(), 0);
    let udst = SocketAddrV4::new(OUTSIDE, out_udp.port());
    let b_udp = udp_srv(&b.netns, 0);
    let a_udp = udp_srv(&a.netns, 0);
    let b_tcp = tcp_srv(&b.netns, 0);

    for c in [&a, &b] {
        assert!(ping(&c.netns, c.gateway, PING), "{} cannot ping its gateway", c.ip);
    }
    let before = d.stats().drops("icc");
    assert!(!ping(&a.netns, b.ip, BLOCKED), "A pinged B with --icc=false");
    assert!(!ping(&b.netns, a.ip, BLOCKED), "B pinged A with --icc=false");
    let sa = udp_client(&a.netns);
    let r = udp_reach(&sa, SocketAddrV4::new(b.ip, b_udp.port()), b"a-to-b", BLOCKED);
    assert!(r.is_err(), "A's UDP reached B and came back: {r:?}");
    let sb = udp_client(&b.netns);
    let r = udp_reach(&sb, SocketAddrV4::new(a.ip, a_udp.port()), b"b-to-a", BLOCKED);
    assert!(r.is_err(), "B's UDP reached A and came back: {r:?}");
    tcp_blocked(&a.netns, SocketAddrV4::new(b.ip, b_tcp.port()), "A -> B TCP with --icc=false");
    assert_eq!(b_udp.count() + a_udp.count(), 0, "a datagram crossed between containers");
    assert!(b_tcp.peers().is_empty(), "{:?}", b_tcp.peers());
    let after = d.stats().drops("icc");
    assert!(after > before, "drops.icc did not rise ({before} -> {after})");

    // Both still reach the gateway and the outside through the uplink.
    for (name, c, sock) in [("A", &a, &sa), ("B", &b, &sb)] {
        assert!(ping(&c.netns, c.gateway, PING), "{name} lost its gateway");
        ping_detail(&c.netns, OUTSIDE, PING).unwrap_or_else(|e| panic!("{name} cannot ping the outside: {e}"));
        let payload = format!("{name}-out");
        udp_reach(sock, udst, payload.as_bytes(), REACH).unwrap_or_else(|e| panic!("{name} UDP to the outside: {e}"));
        let sources = out_udp.sources_of(payload.as_bytes());
        assert!(sources.iter().all(|s| *s.ip() == UPLINK), "{name} reached the outside as {sources:?}");
    }
}

#[test]
fn published_ports_and_rules_survive_kill9_and_restart() {
    let mut lab = Lab::start();
    lab.d.add_net("rs", "10.253.14.0/24", &[]);
    let ns = lab.d.ns_name();
    let c = lab.d.add_port("rs", &ns, &["-p", "8080:80", "-p", "8082:82", "-p", "5300:53/udp"]);
    let other = lab.d.ns_name();
    lab.d.add_port("rs", &other, &[]);
    let t80 = tcp_srv(&c.netns, 80);
    let t82 = tcp_srv(&c.netns, 82);
    let u53 = udp_srv(&c.netns, 53);
    // A mapping that is withdrawn before the crash must not come back.
    lab.d.vsctl_ok(&["publish", "rs", &ns, "8090:80"]);
    lab.d.vsctl_ok(&["unpublish", "rs", &ns, "8090:80"]);
    let rule = add_rule(&lab.d, &["--uplink", "--proto", "tcp", "--dport", "8082", "--action", "drop"]);
    tcp_reach(lab.o(), up(8080), b"before", REACH).unwrap_or_else(|e| panic!("before the restart: {e}"));
    let (took, why) = tcp_blocked(lab.o(), up(8082), "the drop rule before the restart");
    assert_eq!(
        why.kind(),
        io::ErrorKind::TimedOut,
        "the drop rule before the restart: failed after {took:?} ({why}): not silently dropped"
    );
    let ports_before = port_lines(&lab.d, &ns);
    let rules_before = rules(&lab.d);

    lab.d.kill9();
    lab.d.spawn();

    assert_eq!(port_lines(&lab.d, &ns), ports_before, "published ports after kill -9 and restart");
    assert_eq!(rules(&lab.d), rules_before, "rules after kill -9 and restart");
    let (local, peer) = tcp_reach(lab.o(), up(8080), b"after", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("outside -> {UPLINK}:8080 after the restart: {e}"));
    assert_eq!(peer, up(8080));
    assert_eq!(t80.peers().last(), Some(&local), "the container saw {:?} after the restart", t80.peers());
    let sock = udp_client(lab.o());
    let from = udp_reach(&sock, up(5300), b"after-udp", REACH)
        .unwrap_or_else(|e| panic!("outside -> {UPLINK}:5300/udp after the restart: {e}"));
    assert_eq!(from, up(5300));
    assert!(u53.sources_of(b"after-udp").iter().all(|s| *s.ip() == OUTSIDE), "{:?}", u53.sources_of(b"after-udp"));
    let (took, why) = tcp_blocked(lab.o(), up(8082), "the drop rule after the restart");
    assert_eq!(
        why.kind(),
        io::ErrorKind::TimedOut,
        "the drop rule after the restart: failed after {took:?} ({why}): not silently dropped"
    );
    assert!(t82.peers().is_empty(), "{:?}", t82.peers());

    // The host ports are still held (refused to others), the withdrawn one is free.
    let err = lab.d.vsctl_err(&["publish", "rs", &other, "8080:80"]);
    assert_one_line_naming("publish of a host port held across the restart", &err, &["already published"]);
    lab.d.vsctl_ok(&["publish", "rs", &other, "8090:80"]);
    // And the restored rule is the one that blocked 8082.
    lab.d.vsctl_ok(&["del-rule", &rule.to_string()]);
    tcp_reach(lab.o(), up(8082), b"unblocked", REACH).unwrap_or_else(|e| panic!("8082 after del-rule: {e}"));
    assert_eq!(t82.peers().len(), 1);
}
