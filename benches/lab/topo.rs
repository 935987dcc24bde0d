//! The topologies the lab bench measures, built with netlink and named
//! namespaces only (no iproute2): K, a Linux bridge in its own namespace with
//! a veth pair to each host namespace, and V, two namespaces attached to one
//! network of a vswitchd started for the run; for the NAT row, a container
//! reaching an "outside" namespace through a masquerading router, once with
//! the kernel (bridge + forwarding + nftables) and once with vswitchd and its
//! uplink. Everything is removed by a `Cleanup` guard, also when the bench
//! panics.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ports::kernel_bridge as kb;
use ports::netlink;
use ports::netns;
use serde_json::Value;

const VSWITCHD: &str = env!("CARGO_BIN_EXE_vswitchd");
const VSCTL: &str = env!("CARGO_BIN_EXE_vsctl");

/// Host 250 of each subnet: owned by nobody, mapped in A to B's MAC by a
/// permanent neighbour entry, so frames to it reach B's interface and are
/// dropped by B's IP layer (B does not forward).
pub const BLACKHOLE_HOST: u8 = 250;

/// How long a starting vswitchd may take to answer `list-nets`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Two hosts joined by a switch: what the traffic functions need.
#[derive(Debug, Clone)]
pub struct Pair {
    pub label: &'static str,
    pub a_ns: String,
    pub b_ns: String,
    pub a_ip: Ipv4Addr,
    pub b_ip: Ipv4Addr,
    /// B's interface (its rx counter is the 64-byte frame rate).
    pub b_if: String,
    /// Unowned address in the subnet that A sends to B's MAC.
    pub blackhole: Ipv4Addr,
    /// MTU of B's interface, as configured.
    pub mtu: u32,
}

/// Removes what a topology made: stops vswitchd, deletes namespaces and the
/// temporary directory, in that order (a daemon could recreate a namespace).
#[derive(Default)]
pub struct Cleanup {
    namespaces: Vec<String>,
    daemon: Option<Child>,
    dir: Option<PathBuf>,
}

impl Cleanup {
    /// Remember `name` for deletion before it is created, so that a failure
    /// half-way through creating it still removes it.
    pub fn track_ns(&mut self, name: &str) {
        self.namespaces.push(name.to_string());
    }

    fn stop_daemon(&mut self) {
        let Some(mut child) = self.daemon.take() else { return };
        // SAFETY: plain syscall on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("lab: vswitchd ignored SIGTERM for 5 s: SIGKILL");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.stop_daemon();
        // The DNS service namespace: a clean stop deletes it, a killed daemon does not.
        let service = self.dir.as_ref().map(|dir| vswitch::dns::service::service_netns(&dir.join("state")));
        for name in self.namespaces.drain(..).chain(service) {
            if netns::exists(&name) {
                if let Err(e) = netns::delete(&name) {
                    eprintln!("lab cleanup: delete netns {name}: {e}");
                }
            }
            // The resolv.conf vswitchd wrote for it.
            let _ = fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&name));
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = fs::remove_dir_all(&dir) {
                eprintln!("lab cleanup: remove {}: {e}", dir.display());
            }
        }
    }
}

/// Namespace names of this run: short (vswitchd names threads and ports after
/// them) and marked with our pid so that a killed run can be cleaned later.
pub fn ns_name(suffix: &str) -> String {
    format!("vl{}{suffix}", std::process::id())
}

/// The `ns_name` suffixes of all topologies: K, V, kernel NAT, vswitchd NAT.
const NS_SUFFIXES: &[&str] =
    &["kS", "kA", "kB", "vA", "vB", "kR", "kC", "kO", "nH", "nO", "nC", "xH", "xI", "xA", "xB", "oH", "oI", "oA", "oB"];

/// Remove what earlier runs that were killed (SIGKILL skips Drop) left
/// behind: namespaces `vl<pid><suffix>` and directories `/tmp/vswitch-lab-<pid>`
/// whose pid is no longer alive.
pub fn remove_stale() {
    for name in dir_names(netns::RUN_DIR) {
        let Some(rest) = name.strip_prefix("vl") else { continue };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let ours = NS_SUFFIXES.contains(&&rest[digits.len()..]);
        if ours && dead(&digits) {
            eprintln!("lab: removing namespace {name} of a killed run");
            let _ = netns::delete(&name);
        }
    }
    for name in dir_names("/tmp") {
        let pid = |rest: &str| rest.trim_end_matches(|c: char| !c.is_ascii_digit()).to_string();
        if name.strip_prefix("vswitch-lab-").map(pid).is_some_and(|p| dead(&p)) {
            eprintln!("lab: removing /tmp/{name} of a killed run");
            let _ = fs::remove_dir_all(format!("/tmp/{name}"));
        }
    }
}

fn dir_names(dir: &str) -> Vec<String> {
    let entries = fs::read_dir(dir).into_iter().flatten().flatten();
    entries.map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

/// Whether `pid` (decimal digits) names no running process.
fn dead(pid: &str) -> bool {
    !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && !std::path::Path::new("/proc").join(pid).exists()
}

/// Topology K: bridge br0 in namespace kS, veth kA:eth0 <-> kS:va and
/// kB:eth0 <-> kS:vb, 10.201.0.2/24 and .3/24, MTU 1500, all up.
pub fn kernel_bridge(cleanup: &mut Cleanup) -> Pair {
    let (s, a, b) = (ns_name("kS"), ns_name("kA"), ns_name("kB"));
    for name in [&s, &a, &b] {
        cleanup.track_ns(name);
        netns::create(name).unwrap_or_else(|e| panic!("create netns {name}: {e}"));
    }
    let (a2, b2) = (a.clone(), b.clone());
    netns::run_in(&s, move || build_bridge(&a2, &b2)).expect("enter switch netns").expect("build bridge");
    let (a_ip, b_ip) = (Ipv4Addr::new(10, 201, 0, 2), Ipv4Addr::new(10, 201, 0, 3));
    let blackhole = Ipv4Addr::new(10, 201, 0, BLACKHOLE_HOST);
    let b_mac = configure_host(&b, "eth0", b_ip);
    configure_host(&a, "eth0", a_ip);
    add_blackhole(&a, "eth0", blackhole, b_mac);
    Pair { label: "kernel bridge", a_ns: a, b_ns: b, a_ip, b_ip, b_if: "eth0".into(), blackhole, mtu: 1500 }
}

/// Inside the switch namespace: the bridge and both veth pairs.
fn build_bridge(a_ns: &str, b_ns: &str) -> std::io::Result<()> {
    let br = kb::create_bridge("br0")?;
    netlink::set_link_mtu(br, 1500)?;
    for (port, host_ns) in [("va", a_ns), ("vb", b_ns)] {
        let index = kb::create_veth_into(port, "eth0", host_ns)?;
        netlink::set_link_mtu(index, 1500)?;
        kb::set_controller(index, br)?;
        netlink::set_link_up(index)?;
    }
    netlink::set_link_up(br)?;
    netlink::set_link_up(1) // lo, for completeness
}

/// Inside a host namespace of K: MTU, up, address; returns the MAC.
fn configure_host(ns: &str, ifname: &'static str, ip: Ipv4Addr) -> [u8; 6] {
    netns::run_in(ns, move || -> std::io::Result<[u8; 6]> {
        let link = netlink::link(ifname)?.ok_or_else(|| std::io::Error::other(format!("no {ifname}")))?;
        netlink::set_link_mtu(link.index, 1500)?;
        netlink::set_link_up(link.index)?;
        netlink::set_link_up(1)?;
        netlink::add_ipv4_addr(link.index, ip, 24)?;
        link.mac.ok_or_else(|| std::io::Error::other(format!("{ifname} has no MAC")))
    })
    .expect("enter host netns")
    .unwrap_or_else(|e| panic!("configure {ns}/{ifname}: {e}"))
}

/// In A: `blackhole` → B's MAC, permanent, so the generator needs no ARP.
fn add_blackhole(ns: &str, ifname: &str, blackhole: Ipv4Addr, mac: [u8; 6]) {
    let ifname = ifname.to_string();
    netns::run_in(ns, move || -> std::io::Result<()> {
        let index = netlink::link_index(&ifname)?.ok_or_else(|| std::io::Error::other(format!("no {ifname}")))?;
        kb::add_permanent_neighbour(index, blackhole, mac)
    })
    .expect("enter host netns")
    .unwrap_or_else(|e| panic!("neighbour {blackhole} in {ns}: {e}"));
}

/// A running vswitchd with its control socket, for the V topology.
pub struct Daemon {
    pub pid: u32,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    pub fn vsctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(VSCTL)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {VSCTL}: {e}"))?;
        if !out.status.success() {
            return Err(format!("vsctl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The last `n` bytes of vswitchd's log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&text[text.len().saturating_sub(n)..]).into_owned()
    }
}

/// Topology V: vswitchd with `workers` workers, network benchnet
/// 10.202.0.0/24, namespaces vA (.2) and vB (.3) attached by `vsctl add-port`.
pub fn vswitchd(cleanup: &mut Cleanup, workers: usize) -> (Pair, Daemon) {
    let dir = scratch_dir(cleanup);
    let daemon = start_daemon(cleanup, &dir, workers, None, &[]);
    let fail = |e: String| -> ! { panic!("{e}\n---- vswitchd log ----\n{}", daemon.log_tail(4000)) };
    daemon.vsctl(&["add-net", "benchnet", "--subnet", "10.202.0.0/24"]).unwrap_or_else(|e| fail(e));
    let (a_ns, b_ns) = (ns_name("vA"), ns_name("vB"));
    let (a_ip, b_ip) = (Ipv4Addr::new(10, 202, 0, 2), Ipv4Addr::new(10, 202, 0, 3));
    let a = add_port(&daemon, cleanup, "benchnet", &a_ns, a_ip).unwrap_or_else(|e| fail(e));
    let b = add_port(&daemon, cleanup, "benchnet", &b_ns, b_ip).unwrap_or_else(|e| fail(e));
    let blackhole = Ipv4Addr::new(10, 202, 0, BLACKHOLE_HOST);
    add_blackhole(&a_ns, &a.ifname, blackhole, b.mac);
    let b_if = b.ifname.clone();
    let mtu = netns::run_in(&b_ns, move || netlink::link(&b_if).ok().flatten().map(|l| l.mtu).unwrap_or(0))
        .expect("enter vB");
    let pair = Pair { label: "vswitchd", a_ns, b_ns, a_ip, b_ip, b_if: b.ifname, blackhole, mtu };
    (pair, daemon)
}

/// A fresh /tmp/vswitch-lab-PID for a daemon's state, socket and log,
/// removed by `cleanup`.
pub fn scratch_dir(cleanup: &mut Cleanup) -> PathBuf {
    scratch_dir_named(cleanup, "")
}

/// The same with `tag` after the pid, for a second daemon.
pub fn scratch_dir_named(cleanup: &mut Cleanup, tag: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/vswitch-lab-{}{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    cleanup.dir = Some(dir.clone());
    dir
}

/// Start vswitchd with `workers` workers and `extra` flags; inside namespace
/// `netns` if given (entered with setns between fork and exec, so it keeps
/// our mount namespace and sees /run/netns as we do).
pub fn start_daemon(
    cleanup: &mut Cleanup,
    dir: &std::path::Path,
    workers: usize,
    netns: Option<&str>,
    extra: &[&str],
) -> Daemon {
    let log = dir.join("vswitchd.log");
    let socket = dir.join("s.sock");
    let mut log_file = fs::File::create(&log).expect("create vswitchd log");
    let place = netns.map(|ns| format!(" (in netns {ns})")).unwrap_or_default();
    writeln!(log_file, "lab bench: {VSWITCHD} --workers {workers} {}{place}", extra.join(" ")).ok();
    let mut cmd = Command::new(VSWITCHD);
    cmd.arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(&socket)
        .arg("--workers")
        .arg(workers.to_string())
        .args(extra)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("dup log"))
        .stderr(log_file);
    // Opened here (O_CLOEXEC: the daemon does not inherit it), used by the
    // child between fork and exec, closed after spawn.
    let ns_file = netns.map(|ns| fs::File::open(netns::path(ns)).unwrap_or_else(|e| panic!("open netns {ns}: {e}")));
    if let Some(f) = &ns_file {
        enter_netns_on_exec(&mut cmd, f);
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {VSWITCHD}: {e}"));
    drop(ns_file);
    let daemon = Daemon { pid: child.id(), socket, log };
    cleanup.daemon = Some(child);
    wait_ready(cleanup, &daemon);
    daemon
}

fn wait_ready(cleanup: &mut Cleanup, daemon: &Daemon) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = cleanup.daemon.as_mut().expect("daemon").try_wait() {
            panic!("vswitchd exited during start-up ({status}); log:\n{}", daemon.log_tail(4000));
        }
        if daemon.socket.exists() && daemon.vsctl(&["list-nets"]).is_ok() {
            return;
        }
        if Instant::now() > deadline {
            panic!("vswitchd did not answer list-nets within {READY_TIMEOUT:?}; log:\n{}", daemon.log_tail(4000));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// What `vsctl add-port` reports that the bench needs.
pub struct Port {
    pub ifname: String,
    pub mac: [u8; 6],
}

pub fn add_port(daemon: &Daemon, cleanup: &mut Cleanup, net: &str, ns: &str, ip: Ipv4Addr) -> Result<Port, String> {
    cleanup.track_ns(ns);
    let out = daemon.vsctl(&["add-port", net, ns, "--ip", &ip.to_string()])?;
    let json: Value = serde_json::from_str(&out).map_err(|e| format!("add-port printed no JSON ({e}): {out}"))?;
    let field = |k: &str| json[k].as_str().map(str::to_string).ok_or(format!("add-port JSON lacks {k:?}: {json}"));
    let mac_text = field("MacAddress")?;
    let mac: Vec<u8> = mac_text.split(':').filter_map(|p| u8::from_str_radix(p, 16).ok()).collect();
    let mac = mac.try_into().map_err(|_| format!("bad MacAddress {mac_text:?}"))?;
    Ok(Port { ifname: field("Interface")?, mac })
}

/// Make `cmd`'s child enter the network namespace open as `ns` before exec.
/// `ns` must stay open until `spawn` returns.
fn enter_netns_on_exec(cmd: &mut Command, ns: &fs::File) {
    let fd = ns.as_raw_fd();
    // SAFETY: setns is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A container reaching an outside host through a masquerading router.
pub struct Nat {
    /// A = the container, B = the outside host (the TCP receiver).
    pub pair: Pair,
    /// The address the outside must see as the peer (the router's uplink).
    pub masquerade_ip: Ipv4Addr,
    /// The kernel router's namespace (where nftables rules go); None for vswitchd.
    pub router_ns: Option<String>,
}

/// The uplink's interface name in the router (kernel) or host (vswitchd) namespace.
pub const UPLINK_IF: &str = "up0";

/// In namespace `ns`: `ifname` (and lo) up, with `ip/24` and, if given, a
/// default route via `gw`.
pub fn address(ns: &str, ifname: &'static str, ip: Ipv4Addr, gw: Option<Ipv4Addr>) {
    netns::run_in(ns, move || -> std::io::Result<()> {
        let index = netlink::link_index(ifname)?.ok_or_else(|| std::io::Error::other(format!("no {ifname}")))?;
        netlink::add_ipv4_addr(index, ip, 24)?;
        netlink::set_link_up(index)?;
        netlink::set_link_up(1)?;
        match gw {
            Some(gw) => netlink::add_ipv4_default_route(index, gw),
            None => Ok(()),
        }
    })
    .expect("enter netns")
    .unwrap_or_else(|e| panic!("address {ns}/{ifname} {ip}/24: {e}"));
}

/// The MTU of `ifname` in `ns` (0 if unknown).
pub fn mtu_of(ns: &str, ifname: &str) -> u32 {
    let ifname = ifname.to_string();
    netns::run_in(ns, move || netlink::link(&ifname).ok().flatten().map(|l| l.mtu).unwrap_or(0)).unwrap_or(0)
}

/// Kernel NAT reference: container kC (eth0 10.205.0.2/24, default via
/// .1) — veth — router kR (bridge br0 10.205.0.1/24 with the container's
/// veth end kR:vc, IPv4 forwarding on, up0 10.206.0.2/24) — veth — outside
/// kO (eth0 10.206.0.1/24). MTU 1500 throughout. The masquerade rule is
/// added separately (`masquerade`), since it needs nftables.
pub fn kernel_nat(cleanup: &mut Cleanup) -> Nat {
    let (r, c, o) = (ns_name("kR"), ns_name("kC"), ns_name("kO"));
    for name in [&r, &c, &o] {
        cleanup.track_ns(name);
        netns::create(name).unwrap_or_else(|e| panic!("create netns {name}: {e}"));
    }
    let (c_ip, gw) = (Ipv4Addr::new(10, 205, 0, 2), Ipv4Addr::new(10, 205, 0, 1));
    let (o_ip, up_ip) = (Ipv4Addr::new(10, 206, 0, 1), Ipv4Addr::new(10, 206, 0, 2));
    let (c2, o2) = (c.clone(), o.clone());
    netns::run_in(&r, move || -> std::io::Result<()> {
        let br = kb::create_bridge("br0")?;
        netlink::set_link_mtu(br, 1500)?;
        let vc = kb::create_veth_into("vc", "eth0", &c2)?;
        netlink::set_link_mtu(vc, 1500)?;
        kb::set_controller(vc, br)?;
        netlink::set_link_up(vc)?;
        netlink::set_link_up(br)?;
        netlink::add_ipv4_addr(br, gw, 24)?;
        let up = kb::create_veth_into(UPLINK_IF, "eth0", &o2)?;
        netlink::set_link_mtu(up, 1500)?;
        netlink::add_ipv4_addr(up, up_ip, 24)?;
        netlink::set_link_up(up)?;
        netlink::set_link_up(1)?;
        // Net sysctls belong to the namespace of whoever opens them: this
        // thread is inside kR, so this turns on forwarding there only.
        fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
        match fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?.trim() {
            "1" => Ok(()),
            v => Err(std::io::Error::other(format!("ip_forward reads {v:?} after writing 1"))),
        }
    })
    .expect("enter router netns")
    .unwrap_or_else(|e| panic!("build the kernel NAT router: {e}"));
    address(&c, "eth0", c_ip, Some(gw));
    address(&o, "eth0", o_ip, None);
    let mtu = mtu_of(&c, "eth0");
    let pair = Pair {
        label: "kernel NAT",
        a_ns: c,
        b_ns: o,
        a_ip: c_ip,
        b_ip: o_ip,
        b_if: "eth0".into(),
        blackhole: Ipv4Addr::new(10, 206, 0, BLACKHOLE_HOST),
        mtu,
    };
    Nat { pair, masquerade_ip: up_ip, router_ns: Some(r) }
}

/// The `nft` binary on PATH, if nftables is installed.
pub fn nft_binary() -> Option<PathBuf> {
    find_in_path("nft")
}

/// Where the program `name` is on PATH, if anywhere.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Masquerade the kernel NAT container subnet out of the router's uplink:
/// `nft -f -` run inside the router namespace.
pub fn masquerade(nft: &std::path::Path, nat: &Nat) -> Result<(), String> {
    let router = nat.router_ns.as_deref().ok_or("not a kernel NAT topology")?;
    let subnet = format!("{}/24", Ipv4Addr::from(u32::from(nat.pair.a_ip) & 0xffff_ff00));
    let ruleset = format!(
        "table ip nat {{\n  chain postrouting {{\n    type nat hook postrouting priority 100;\n    \
         oif \"{UPLINK_IF}\" ip saddr {subnet} masquerade\n  }}\n}}\n"
    );
    let ns = fs::File::open(netns::path(router)).map_err(|e| format!("open netns {router}: {e}"))?;
    let mut cmd = Command::new(nft);
    cmd.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    enter_netns_on_exec(&mut cmd, &ns);
    let mut child = cmd.spawn().map_err(|e| format!("spawn {}: {e}", nft.display()))?;
    drop(ns);
    let written = child.stdin.take().expect("piped stdin").write_all(ruleset.as_bytes());
    let out = child.wait_with_output().map_err(|e| format!("wait for nft: {e}"))?;
    if !out.status.success() || written.is_err() {
        return Err(format!("nft -f - in {router} ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// vswitchd NAT: vswitchd in host namespace nH owning nH:up0 (uplink address
/// 10.203.0.2/24, next hop 10.203.0.1) — veth — outside nO (eth0
/// 10.203.0.1/24); network natbench 10.204.0.0/24 with container nC (.2) by
/// `vsctl add-port`.
pub fn vswitchd_nat(cleanup: &mut Cleanup, workers: usize) -> (Nat, Daemon) {
    let (h, o, c) = (ns_name("nH"), ns_name("nO"), ns_name("nC"));
    for name in [&h, &o] {
        cleanup.track_ns(name);
        netns::create(name).unwrap_or_else(|e| panic!("create netns {name}: {e}"));
    }
    let (o_ip, up_ip) = (Ipv4Addr::new(10, 203, 0, 1), Ipv4Addr::new(10, 203, 0, 2));
    let o2 = o.clone();
    netns::run_in(&h, move || -> std::io::Result<()> {
        let up = kb::create_veth_into(UPLINK_IF, "eth0", &o2)?;
        netlink::set_link_mtu(up, 1500)?;
        netlink::set_link_up(up)?;
        netlink::set_link_up(1)
    })
    .expect("enter host netns")
    .unwrap_or_else(|e| panic!("veth {h}/{UPLINK_IF} <-> {o}/eth0: {e}"));
    address(&o, "eth0", o_ip, None);
    let dir = scratch_dir(cleanup);
    let (up_cidr, gw) = (format!("{up_ip}/24"), o_ip.to_string());
    let uplink = ["--uplink", UPLINK_IF, "--uplink-ip", &up_cidr, "--uplink-gw", &gw];
    let daemon = start_daemon(cleanup, &dir, workers, Some(&h), &uplink);
    let fail = |e: String| -> ! { panic!("{e}\n---- vswitchd log ----\n{}", daemon.log_tail(4000)) };
    daemon.vsctl(&["add-net", "natbench", "--subnet", "10.204.0.0/24"]).unwrap_or_else(|e| fail(e));
    let c_ip = Ipv4Addr::new(10, 204, 0, 2);
    let port = add_port(&daemon, cleanup, "natbench", &c, c_ip).unwrap_or_else(|e| fail(e));
    let mtu = mtu_of(&c, &port.ifname);
    let pair = Pair {
        label: "vswitchd NAT",
        a_ns: c,
        b_ns: o,
        a_ip: c_ip,
        b_ip: o_ip,
        b_if: "eth0".into(),
        blackhole: Ipv4Addr::new(10, 203, 0, BLACKHOLE_HOST),
        mtu,
    };
    (Nat { pair, masquerade_ip: up_ip, router_ns: None }, daemon)
}
