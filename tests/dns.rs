//! Lab tests of the embedded DNS server: real vswitchd in a host namespace,
//! containers in namespaces asking the gateway over UDP and TCP, and an
//! upstream server in an outside namespace. They need root (and fail
//! without).
//!
//! Run: `cargo test --test dns`.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::time::{Duration, Instant};

use common::dns::*;
use common::ipv6::endpoint_ipv6;
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use ports::netns;

const PING: Duration = Duration::from_secs(5);

#[test]
fn names_and_aliases_resolve_and_the_rest_is_forwarded() {
    let lab = DnsLab::start();
    let d = &lab.d;
    d.add_net("names", "10.131.0.0/24", &[]);
    let web_ns = d.ns_name();
    let web = d.add_port("names", &web_ns, &["--name", "web", "--alias", "www", "--alias", "Front.End"]);
    let db = d.new_port("names");
    let gw = web.gateway;
    assert_eq!(web.json["Aliases"], serde_json::json!(["www", "Front.End"]));

    // A for a name, for aliases (in any case, with or without the dot), over UDP and TCP.
    assert_eq!(a_records(&ask(&db.netns, gw, "web", RecordType::A)), [web.ip]);
    assert_eq!(a_records(&ask(&db.netns, gw, "WWW.", RecordType::A)), [web.ip]);
    assert_eq!(a_records(&ask(&db.netns, gw, "front.end", RecordType::A)), [web.ip]);
    assert_eq!(a_records(&ask(&web.netns, gw, &db.name, RecordType::A)), [db.ip]);
    assert_eq!(a_records(&ask(&web.netns, gw, "web.names", RecordType::A)), [web.ip], "NAME.NETWORK");
    assert_eq!(a_records(&ask_tcp(&db.netns, gw, "www", RecordType::A)), [web.ip], "over TCP");
    // PTR: NAME.NETWORK.
    assert_eq!(ptr_records(&ask(&db.netns, gw, &reverse_name(web.ip), RecordType::PTR)), ["web.names."]);
    // No IPv6 on this network: NODATA, not NXDOMAIN.
    let m = ask(&db.netns, gw, "web", RecordType::AAAA);
    assert!(m.answers.is_empty() && m.response_code == ResponseCode::NoError, "{m:?}");

    // Names not its own go upstream, and the answer comes back.
    let m = ask(&web.netns, gw, "api.outside.test", RecordType::A);
    assert_eq!(a_records(&m), [OUTSIDE_ANSWER]);
    assert!(is_nxdomain(&ask(&web.netns, gw, "nosuch.example", RecordType::A)));
    assert!(lab.upstream.asked().iter().any(|n| n == "nosuch.example."), "{:?}", lab.upstream.asked());
    assert!(!lab.upstream.asked().iter().any(|n| n.starts_with("web")), "local names were forwarded");

    // The gateway still answers ping itself.
    assert!(ping(&web.netns, gw, PING), "ping of the gateway");
    // The service port shows in stats, with what it answered.
    let stats = d.stats();
    let svc = format!("{}/dns", service_netns(d));
    let row = stats.0["ports"].as_array().unwrap().iter().find(|p| p["name"].as_str().unwrap().starts_with(&svc));
    assert!(row.is_some_and(|r| r["tx_packets"].as_u64() > Some(0)), "no service port in {}", stats.0["ports"]);
}

#[test]
fn aaaa_on_a_dual_stack_network() {
    let lab = DnsLab::start();
    let d = &lab.d;
    d.add_net("dual", "10.132.0.0/24", &["--ipv6", "--subnet6", "2001:db8:132::/64"]);
    let a = d.new_port("dual");
    let b = d.add_port("dual", &d.ns_name(), &["--name", "bee", "--alias", "svc"]);
    let (b6, _) = endpoint_ipv6(&b).expect("an IPv6 address");
    assert_eq!(aaaa_records(&ask(&a.netns, a.gateway, "bee", RecordType::AAAA)), [b6]);
    assert_eq!(aaaa_records(&ask(&a.netns, a.gateway, "svc", RecordType::AAAA)), [b6]);
    assert_eq!(a_records(&ask(&a.netns, a.gateway, "bee", RecordType::A)), [b.ip]);
    let (a6, _) = endpoint_ipv6(&a).unwrap();
    let nibbles: String = a6.octets().iter().rev().map(|o| format!("{:x}.{:x}.", o & 0xf, o >> 4)).collect();
    let m = ask(&b.netns, b.gateway, &format!("{nibbles}ip6.arpa."), RecordType::PTR);
    assert_eq!(ptr_records(&m), [format!("{}.dual.", a.name)]);
    assert_ne!(b6, Ipv6Addr::UNSPECIFIED);
}

#[test]
fn an_alias_of_several_containers_answers_round_robin() {
    let lab = DnsLab::start();
    let d = &lab.d;
    d.add_net("rr", "10.133.0.0/24", &[]);
    let client = d.new_port("rr");
    let backends: Vec<Endpoint> = (0..3).map(|_| d.add_port("rr", &d.ns_name(), &["--alias", "api"])).collect();
    let mut want: Vec<Ipv4Addr> = backends.iter().map(|b| b.ip).collect();
    want.sort();
    let mut firsts = Vec::new();
    for _ in 0..6 {
        let mut got = a_records(&ask(&client.netns, client.gateway, "api", RecordType::A));
        firsts.push(got[0]);
        got.sort();
        assert_eq!(got, want, "every backend in every answer");
    }
    // Each answer starts one further along: all three lead, twice each.
    for ip in &want {
        assert_eq!(firsts.iter().filter(|f| *f == ip).count(), 2, "{ip} led {firsts:?}");
    }
    assert_ne!(firsts[0], firsts[1]);
}

#[test]
fn names_are_scoped_to_the_networks_a_container_shares() {
    let lab = DnsLab::start();
    let d = &lab.d;
    d.add_net("front", "10.134.0.0/24", &[]);
    d.add_net("back", "10.135.0.0/24", &[]);
    let web = d.add_port("front", &d.ns_name(), &["--name", "web"]);
    let cache = d.add_port("back", &d.ns_name(), &["--name", "cache"]);
    let db_ns = d.ns_name();
    let db_front = d.add_port("front", &db_ns, &["--name", "db"]);
    let db_back = d.add_port("back", &db_ns, &["--name", "db"]);

    // web shares nothing with cache: not answered here, forwarded, NXDOMAIN.
    let m = ask(&web.netns, web.gateway, "cache", RecordType::A);
    assert!(is_nxdomain(&m) && m.answers.is_empty(), "web resolved cache: {m:?}");
    assert!(lab.upstream.asked().iter().any(|n| n == "cache."), "the name went upstream");
    assert!(is_nxdomain(&ask(&web.netns, web.gateway, "cache.back", RecordType::A)));
    // db is on both: it resolves both, through either gateway, each on its own network first.
    for gw in [db_front.gateway, db_back.gateway] {
        assert_eq!(a_records(&ask(&db_ns, gw, "web", RecordType::A)), [web.ip], "via {gw}");
        assert_eq!(a_records(&ask(&db_ns, gw, "cache", RecordType::A)), [cache.ip], "via {gw}");
    }
    assert_eq!(a_records(&ask(&web.netns, web.gateway, "db", RecordType::A)), [db_front.ip]);
    assert_eq!(a_records(&ask(&cache.netns, cache.gateway, "db", RecordType::A)), [db_back.ip]);
    // A query to another network's gateway is routed, not served: no answer.
    let q = query("web", RecordType::A);
    assert!(ask_raw(&web.netns, cache.gateway, &q, Duration::from_secs(2)).is_err());
}

#[test]
fn forwarding_relays_and_a_silent_upstream_gives_servfail_in_time() {
    let lab = DnsLab::start();
    let d = &lab.d;
    d.add_net("fwd", "10.136.0.0/24", &[]);
    let a = d.new_port("fwd");
    assert_eq!(a_records(&ask(&a.netns, a.gateway, "www.outside.test", RecordType::A)), [OUTSIDE_ANSWER]);
    assert_eq!(a_records(&ask_tcp(&a.netns, a.gateway, "tcp.outside.test", RecordType::A)), [OUTSIDE_ANSWER]);

    lab.upstream.set_silent(true);
    let sock = client(&a.netns);
    let started = Instant::now();
    // One query, never repeated: the server must answer it on its own.
    sock.send_to(&query("slow.outside.test", RecordType::A), (a.gateway, 53)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("no answer at all while the upstream is silent");
    let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
    let took = started.elapsed();
    assert_eq!(m.response_code, ResponseCode::ServFail, "{m:?}");
    assert!(took < Duration::from_secs(5), "SERVFAIL after {took:?}: after the client's own timeout (5 s)");
    assert!(took >= Duration::from_secs(3), "SERVFAIL after {took:?}: before the upstream was given its time");

    lab.upstream.set_silent(false);
    assert_eq!(a_records(&ask(&a.netns, a.gateway, "back.outside.test", RecordType::A)), [OUTSIDE_ANSWER]);
}

#[test]
fn internal_and_icc_off_networks_resolve_names() {
    let lab = DnsLab::start();
    let d = &lab.d;
    d.add_net("vault", "10.137.0.0/24", &["--internal"]);
    d.add_net("quiet", "10.138.0.0/24", &["--icc=false"]);
    let (v1, v2) = (d.new_port("vault"), d.new_port("vault"));
    assert_eq!(a_records(&ask(&v1.netns, v1.gateway, &v2.name, RecordType::A)), [v2.ip]);
    // No way out: names not local fail rather than leave.
    let m = ask(&v1.netns, v1.gateway, "x.outside.test", RecordType::A);
    assert_eq!(m.response_code, ResponseCode::ServFail);

    let (q1, q2) = (d.new_port("quiet"), d.new_port("quiet"));
    assert!(!ping(&q1.netns, q2.ip, Duration::from_secs(1)), "ICC off, yet containers reach each other");
    assert_eq!(a_records(&ask(&q1.netns, q1.gateway, &q2.name, RecordType::A)), [q2.ip]);
    assert_eq!(a_records(&ask_tcp(&q2.netns, q2.gateway, &q1.name, RecordType::A)), [q1.ip], "TCP on ICC off");
    assert!(ping(&q1.netns, q1.gateway, PING), "ping of the gateway with ICC off");
}

#[test]
fn malformed_queries_leave_the_server_answering() {
    let lab = DnsLab::start();
    let d = &lab.d;
    d.add_net("junk", "10.139.0.0/24", &[]);
    let a = d.new_port("junk");
    let b = d.new_port("junk");
    let gw = a.gateway;
    assert_eq!(a_records(&ask(&a.netns, gw, &b.name, RecordType::A)), [b.ip]);

    let sock: UdpSocket = client(&a.netns);
    // A header claiming a question that is not there: FORMERR.
    let formerr = exchange(&sock, gw, &[0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0], Duration::from_secs(3))
        .expect("an answer to a query without its question");
    assert_eq!(formerr.response_code, ResponseCode::FormErr);
    // Then junk of every kind: short, responses, random bytes, a label running off the end.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut junk: Vec<Vec<u8>> =
        vec![vec![], vec![0], vec![1, 2, 3], vec![0xff; 12], vec![0x12, 0x34, 0x81, 0x80, 0, 1]];
    junk.push([&[0x55, 0x55, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63][..], b"abc"].concat());
    for _ in 0..200 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 300) as usize;
        junk.push((0..len).map(|i| (seed >> (i % 57)) as u8).collect());
    }
    for j in &junk {
        let _ = sock.send_to(j, (gw, 53));
    }
    // Over TCP: a length that lies, then a close.
    let mut s = in_ns(&a.netns, move || std::net::TcpStream::connect((gw, 53))).expect("TCP to the gateway");
    use std::io::Write;
    let _ = s.write_all(&[0xff, 0xff, 1, 2, 3]);
    drop(s);

    assert!(lab.d.vsctl(&["list-nets"]).status.success(), "the daemon stopped answering vsctl");
    assert_eq!(a_records(&ask(&a.netns, gw, &b.name, RecordType::A)), [b.ip], "UDP after junk");
    assert_eq!(a_records(&ask_tcp(&b.netns, gw, &a.name, RecordType::A)), [a.ip], "TCP after junk");
}

#[test]
fn names_survive_a_restart_and_a_clean_stop_removes_the_service_namespace() {
    let mut lab = DnsLab::start();
    lab.d.add_net("keep", "10.140.0.0/24", &[]);
    let a = lab.d.new_port("keep");
    let b = lab.d.add_port("keep", &lab.d.ns_name(), &["--alias", "stay"]);
    let service = service_netns(&lab.d);
    assert!(netns::exists(&service), "no service namespace {service}");
    assert_eq!(a_records(&ask(&a.netns, a.gateway, "stay", RecordType::A)), [b.ip]);

    lab.d.kill9();
    assert!(netns::exists(&service), "the service namespace went with a killed daemon");
    lab.d.spawn();
    assert_eq!(a_records(&ask(&a.netns, a.gateway, "stay", RecordType::A)), [b.ip], "after kill -9");
    assert_eq!(a_records(&ask_tcp(&a.netns, a.gateway, &b.name, RecordType::A)), [b.ip], "TCP after kill -9");
    // A live alias change is saved with the endpoint.
    lab.d.vsctl_ok(&["alias", "keep", &a.netns, "later"]);

    let status = lab.d.terminate(Duration::from_secs(10)).expect("vswitchd did not stop on SIGTERM");
    assert!(status.success());
    assert!(!netns::exists(&service), "a clean stop left the service namespace {service}");
    assert!(resolv_conf(&a.netns).is_some(), "the containers' resolv.conf goes only with them");
    lab.d.spawn();
    assert_eq!(a_records(&ask(&b.netns, b.gateway, "later", RecordType::A)), [a.ip], "after SIGTERM and start");
    assert!(ping(&a.netns, b.ip, PING));
}

#[test]
fn aliases_change_on_live_ports_and_bad_names_are_refused() {
    let lab = DnsLab::start();
    let d = &lab.d;
    d.add_net("live", "10.141.0.0/24", &[]);
    let a = d.new_port("live");
    let b = d.new_port("live");
    d.vsctl_ok(&["alias", "live", &b.netns, "cache"]);
    assert_eq!(a_records(&ask(&a.netns, a.gateway, "cache", RecordType::A)), [b.ip]);
    let ports = d.vsctl_json(&["list-ports", "live", "--json"]);
    assert!(ports.to_string().contains(r#""Aliases":["cache"]"#), "{ports}");

    let before = d.vsctl_json(&["list-ports", "--json"]);
    for (args, words) in [
        (vec!["alias", "live", &b.netns, "cache"], vec!["cache", "already"]),
        (vec!["alias", "live", &b.netns, "bad name"], vec!["invalid alias", "DNS name"]),
        (vec!["alias", "live", &b.netns, "x-"], vec!["invalid alias"]),
        (vec!["alias", "live", "nosuchns", "x"], vec!["nosuchns", "no port"]),
        (vec!["alias", "nosuchnet", &b.netns, "x"], vec!["nosuchnet"]),
        (vec!["unalias", "live", &b.netns, "other"], vec!["no alias", "other"]),
        (vec!["add-port", "live", "vswdnsbad", "--alias", "a..b"], vec!["invalid --alias", "a..b"]),
        (vec!["add-port", "live", "vswdnsbad", "--alias", "x", "--alias", "X"], vec!["--alias", "twice"]),
        (vec!["add-port", "live", "vswdnsbad", "--name", "under score ok but space not"], vec!["invalid --name"]),
    ] {
        let err = d.vsctl_err(&args);
        assert_one_line_naming(&args.join(" "), &err, &words);
    }
    assert!(!netns::exists("vswdnsbad"), "a refused add-port made a namespace");
    assert_eq!(d.vsctl_json(&["list-ports", "--json"]), before, "a refused request changed something");

    d.vsctl_ok(&["unalias", "live", &b.netns, "CACHE"]);
    let m = ask(&a.netns, a.gateway, "cache", RecordType::A);
    assert!(is_nxdomain(&m), "an alias taken away still resolves: {m:?}");
    // Ports of namespaces that leave take their names with them.
    d.vsctl_ok(&["del-port", "live", &b.netns]);
    assert!(is_nxdomain(&ask(&a.netns, a.gateway, &b.name, RecordType::A)));
}

#[test]
fn vswitchd_refuses_a_bad_dns_flag() {
    require_root();
    let dir = std::env::temp_dir().join(unique_name("vswdnsflag"));
    let out = std::process::Command::new(VSWITCHD)
        .args(["--state-dir", dir.join("state").to_str().unwrap(), "--socket", dir.join("s").to_str().unwrap()])
        .args(["--dns", "not-an-ip"])
        .output()
        .expect("run vswitchd");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid --dns \"not-an-ip\""), "{err}");
}

#[test]
fn resolv_conf_appears_and_goes_with_the_namespace() {
    let lab = DnsLab::start();
    let d = &lab.d;
    d.add_net("rc", "10.142.0.0/24", &[]);
    let a = d.new_port("rc");
    let text = resolv_conf(&a.netns).expect("no /etc/netns/NS/resolv.conf after add-port");
    assert!(text.contains(&format!("\nnameserver {}\n", a.gateway)), "{text}");
    assert_eq!(text.matches("nameserver").count(), 1, "{text}");
    // `ip netns exec` would show it; glibc in the namespace resolves with it.

    // The default network has no embedded DNS: the host's servers (here --dns).
    let c = d.new_port("bridge");
    let text = resolv_conf(&c.netns).expect("no resolv.conf on the default network");
    assert!(text.contains(&format!("nameserver {UPSTREAM_IP}\n")), "{text}");
    assert!(!text.contains(&format!("nameserver {}", c.gateway)), "{text}");
    // No DNS is served on the default network's gateway.
    assert!(ask_raw(&c.netns, c.gateway, &query("x", RecordType::A), Duration::from_secs(2)).is_err());

    // The namespace joins a user-defined network: its gateway serves it now.
    d.vsctl_ok(&["add-port", "rc", &c.netns]);
    let text = resolv_conf(&c.netns).unwrap();
    assert!(text.contains(&format!("nameserver {}\n", a.gateway)), "{text}");

    // del-port of the last port deletes the namespace, and the file goes with it.
    d.vsctl_ok(&["del-port", "rc", &a.netns]);
    assert!(!netns::exists(&a.netns));
    assert!(resolv_conf(&a.netns).is_none(), "resolv.conf outlived its namespace");
    assert!(!std::path::Path::new("/etc/netns").join(&a.netns).exists());

    // A namespace of the user's own with a resolv.conf of its own: left alone.
    let mine = NetnsGuard::create();
    let dir = std::path::Path::new("/etc/netns").join(&mine.0);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("resolv.conf"), "nameserver 192.0.2.99\n").unwrap();
    d.add_port("rc", &mine.0, &[]);
    d.vsctl_ok(&["del-port", "rc", &mine.0]);
    assert_eq!(std::fs::read_to_string(dir.join("resolv.conf")).unwrap(), "nameserver 192.0.2.99\n");
    std::fs::remove_dir_all(&dir).unwrap();
}
