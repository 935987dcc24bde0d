//! The two topologies the lab bench measures, built with netlink and named
//! namespaces only (no iproute2): K, a Linux bridge in its own namespace with
//! a veth pair to each host namespace, and V, two namespaces attached to one
//! network of a vswitchd started for the run. Everything is removed by a
//! `Cleanup` guard, also when the bench panics.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
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
const BLACKHOLE_HOST: u8 = 250;

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
    fn track_ns(&mut self, name: &str) {
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
        for name in self.namespaces.drain(..) {
            if netns::exists(&name) {
                if let Err(e) = netns::delete(&name) {
                    eprintln!("lab cleanup: delete netns {name}: {e}");
                }
            }
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

/// Remove what earlier runs that were killed (SIGKILL skips Drop) left
/// behind: namespaces `vl<pid><suffix>` and directories `/tmp/vswitch-lab-<pid>`
/// whose pid is no longer alive.
pub fn remove_stale() {
    for name in dir_names(netns::RUN_DIR) {
        let Some(rest) = name.strip_prefix("vl") else { continue };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let ours = ["kS", "kA", "kB", "vA", "vB"].contains(&&rest[digits.len()..]);
        if ours && dead(&digits) {
            eprintln!("lab: removing namespace {name} of a killed run");
            let _ = netns::delete(&name);
        }
    }
    for name in dir_names("/tmp") {
        if name.strip_prefix("vswitch-lab-").is_some_and(dead) {
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
    fn vsctl(&self, args: &[&str]) -> Result<String, String> {
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
    let dir = PathBuf::from(format!("/tmp/vswitch-lab-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    cleanup.dir = Some(dir.clone());
    let daemon = start_daemon(cleanup, &dir, workers);
    let fail = |e: String| -> ! { panic!("{e}\n---- vswitchd log ----\n{}", daemon.log_tail(4000)) };
    daemon.vsctl(&["add-net", "benchnet", "--subnet", "10.202.0.0/24"]).unwrap_or_else(|e| fail(e));
    let (a_ns, b_ns) = (ns_name("vA"), ns_name("vB"));
    let (a_ip, b_ip) = (Ipv4Addr::new(10, 202, 0, 2), Ipv4Addr::new(10, 202, 0, 3));
    let a = add_port(&daemon, cleanup, &a_ns, a_ip).unwrap_or_else(|e| fail(e));
    let b = add_port(&daemon, cleanup, &b_ns, b_ip).unwrap_or_else(|e| fail(e));
    let blackhole = Ipv4Addr::new(10, 202, 0, BLACKHOLE_HOST);
    add_blackhole(&a_ns, &a.ifname, blackhole, b.mac);
    let b_if = b.ifname.clone();
    let mtu = netns::run_in(&b_ns, move || netlink::link(&b_if).ok().flatten().map(|l| l.mtu).unwrap_or(0))
        .expect("enter vB");
    let pair = Pair { label: "vswitchd", a_ns, b_ns, a_ip, b_ip, b_if: b.ifname, blackhole, mtu };
    (pair, daemon)
}

fn start_daemon(cleanup: &mut Cleanup, dir: &std::path::Path, workers: usize) -> Daemon {
    let log = dir.join("vswitchd.log");
    let socket = dir.join("s.sock");
    let mut log_file = fs::File::create(&log).expect("create vswitchd log");
    writeln!(log_file, "lab bench: {VSWITCHD} --workers {workers}").ok();
    let child = Command::new(VSWITCHD)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(&socket)
        .arg("--workers")
        .arg(workers.to_string())
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("dup log"))
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {VSWITCHD}: {e}"));
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
struct Port {
    ifname: String,
    mac: [u8; 6],
}

fn add_port(daemon: &Daemon, cleanup: &mut Cleanup, ns: &str, ip: Ipv4Addr) -> Result<Port, String> {
    cleanup.track_ns(ns);
    let out = daemon.vsctl(&["add-port", "benchnet", ns, "--ip", &ip.to_string()])?;
    let json: Value = serde_json::from_str(&out).map_err(|e| format!("add-port printed no JSON ({e}): {out}"))?;
    let field = |k: &str| json[k].as_str().map(str::to_string).ok_or(format!("add-port JSON lacks {k:?}: {json}"));
    let mac_text = field("MacAddress")?;
    let mac: Vec<u8> = mac_text.split(':').filter_map(|p| u8::from_str_radix(p, 16).ok()).collect();
    let mac = mac.try_into().map_err(|_| format!("bad MacAddress {mac_text:?}"))?;
    Ok(Port { ifname: field("Interface")?, mac })
}
