//! Harness of the lab tests: a `vswitchd` per test in its own temporary
//! directory, `vsctl` wrappers, uniquely named namespaces that are removed
//! even when the test fails, and traffic made with plain sockets opened
//! inside those namespaces (no ping or iperf binaries).
//!
//! A socket keeps the network namespace it was created in, so the helpers
//! open sockets on a thread inside a namespace (`ports::netns::run_in`) and
//! then use them from any thread.

#![allow(dead_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use ports::netns;

pub mod cluster;
pub mod dns;
pub mod ipv6;
use serde_json::Value;

pub const VSWITCHD: &str = env!("CARGO_BIN_EXE_vswitchd");
pub const VSCTL: &str = env!("CARGO_BIN_EXE_vsctl");

/// How long a starting daemon may take to answer `list-nets`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Lab tests must fail loudly, never pass silently, without root.
pub fn require_root() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "lab test needs root (namespaces, TAP devices): run it as root");
}

static NEXT_NAME: AtomicUsize = AtomicUsize::new(0);

/// A name no other test of this run (or of a concurrent run) uses: short,
/// because it also names threads and shows in `vsctl stats`.
pub fn unique_name(prefix: &str) -> String {
    let n = NEXT_NAME.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id())
}

/// One `vswitchd` with its own state directory and control socket.
///
/// Dropping it stops the daemon (SIGTERM, then SIGKILL), deletes every
/// namespace the test registered (also those vswitchd created for it) and
/// removes the temporary directory. When the test is panicking, the tail of
/// the daemon's log is printed first.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub workers: usize,
    namespaces: Mutex<Vec<String>>,
    starts: usize,
    /// The network namespace vswitchd runs in (None: the test's own).
    netns: Option<String>,
    /// Flags passed after the standard ones (e.g. `--uplink up0`).
    extra_args: Vec<String>,
}

impl Daemon {
    /// Start a daemon with two workers and wait until it answers.
    pub fn start() -> Daemon {
        Daemon::start_with_workers(2)
    }

    pub fn start_with_workers(workers: usize) -> Daemon {
        Daemon::start_with(workers, None, &[])
    }

    /// Start a daemon with two workers inside network namespace `netns`
    /// (entered with setns(CLONE_NEWNET) between fork and exec, so it keeps
    /// the test's mount namespace and sees the namespaces it creates under
    /// /run/netns), passing `extra_args` after the standard flags; also on
    /// every restart with `spawn`. `netns` is not registered for cleanup:
    /// it belongs to the caller.
    pub fn start_in_netns(netns: &str, extra_args: &[&str]) -> Daemon {
        Daemon::start_with(2, Some(netns), extra_args)
    }

    fn start_with(workers: usize, netns: Option<&str>, extra_args: &[&str]) -> Daemon {
        require_root();
        let dir = PathBuf::from(format!("/tmp/{}", unique_name("vswlab")));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create test dir");
        let mut d = Daemon {
            child: None,
            state_dir: dir.join("state"),
            socket: dir.join("vswitchd.sock"),
            log: dir.join("vswitchd.log"),
            dir,
            workers,
            namespaces: Mutex::new(Vec::new()),
            starts: 0,
            netns: netns.map(str::to_string),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        };
        d.spawn();
        d
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon not running").id()
    }

    /// Start vswitchd (again) on this state directory and wait until ready.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        self.starts += 1;
        let mut log = fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open daemon log");
        writeln!(log, "===== vswitchd start #{} =====", self.starts).ok();
        let mut cmd = Command::new(VSWITCHD);
        cmd.arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--workers")
            .arg(self.workers.to_string())
            .args(&self.extra_args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or("info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let ns_file = self.netns.as_ref().map(|ns| exec_in_netns(&mut cmd, ns));
        let child = cmd.spawn().expect("spawn vswitchd");
        drop(ns_file);
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("vswitchd exited during start-up ({status}); log:\n{}", self.log_tail(4000));
            }
            if self.socket.exists() && self.vsctl(&["list-nets"]).status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!("vswitchd did not answer list-nets within {READY_TIMEOUT:?}; log:\n{}", self.log_tail(4000));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9: no chance to save or clean anything.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon not running");
        child.kill().expect("SIGKILL vswitchd");
        child.wait().expect("wait vswitchd");
    }

    /// SIGTERM and wait for the exit (SIGKILL after `timeout`); returns the
    /// exit status, or None if it had to be killed.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: plain syscall on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("wait vswitchd") {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("vswitchd ignored SIGTERM for {timeout:?}: SIGKILL");
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Whether the daemon process is still running.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("wait vswitchd").is_none(),
            None => false,
        }
    }

    /// The last `n` bytes of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read(&self.log).unwrap_or_default();
        let from = text.len().saturating_sub(n);
        String::from_utf8_lossy(&text[from..]).into_owned()
    }

    /// Run `vsctl --socket SOCK args...`.
    pub fn vsctl(&self, args: &[&str]) -> Output {
        Command::new(VSCTL)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run vsctl")
    }

    /// Run vsctl, panic with its stderr unless it succeeds; returns stdout.
    pub fn vsctl_ok(&self, args: &[&str]) -> String {
        let out = self.vsctl(args);
        assert!(
            out.status.success(),
            "vsctl {} failed ({}): {}\nstdout: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim(),
        );
        String::from_utf8(out.stdout).expect("vsctl stdout is UTF-8")
    }

    /// Run vsctl, assert that it is refused; returns its stderr.
    pub fn vsctl_err(&self, args: &[&str]) -> String {
        let out = self.vsctl(args);
        assert!(
            !out.status.success(),
            "vsctl {} succeeded but must be refused; stdout: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).trim(),
        );
        String::from_utf8(out.stderr).expect("vsctl stderr is UTF-8")
    }

    /// vsctl whose stdout is JSON.
    pub fn vsctl_json(&self, args: &[&str]) -> Value {
        let out = self.vsctl_ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("vsctl {}: bad JSON ({e}): {out}", args.join(" ")))
    }

    /// A fresh namespace name, deleted (if it exists) when the daemon is dropped.
    pub fn ns_name(&self) -> String {
        let name = unique_name("vswt");
        self.register_ns(&name);
        name
    }

    /// Have `name` deleted at the end of the test.
    pub fn register_ns(&self, name: &str) {
        self.namespaces.lock().unwrap().push(name.to_string());
    }

    /// `add-net NAME --subnet SUBNET extra...`; returns the network id.
    pub fn add_net(&self, name: &str, subnet: &str, extra: &[&str]) -> String {
        let mut args = vec!["add-net", name, "--subnet", subnet];
        args.extend_from_slice(extra);
        let id = self.vsctl_ok(&args).trim().to_string();
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "add-net must print a 64-hex id, printed {id:?}"
        );
        id
    }

    /// `add-port NET NS extra...` for a namespace registered for cleanup.
    pub fn add_port(&self, net: &str, ns: &str, extra: &[&str]) -> Endpoint {
        self.register_ns(ns);
        let mut args = vec!["add-port", net, ns];
        args.extend_from_slice(extra);
        let out = self.vsctl_ok(&args);
        Endpoint::parse(&out)
    }

    /// A new namespace (created by vswitchd) attached to `net`.
    pub fn new_port(&self, net: &str) -> Endpoint {
        let ns = self.ns_name();
        self.add_port(net, &ns, &[])
    }

    /// `stats --json`.
    pub fn stats(&self) -> Stats {
        Stats(self.vsctl_json(&["stats", "--json"]))
    }

    /// `show-net NAME` as JSON.
    pub fn show_net(&self, name: &str) -> Value {
        self.vsctl_json(&["show-net", name])
    }

    /// `list-nets --json`.
    pub fn list_nets(&self) -> Value {
        self.vsctl_json(&["list-nets", "--json"])
    }

    /// The daemon's resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("---- vswitchd log ({}) ----\n{}\n---- end of log ----", self.log.display(), self.log_tail(6000));
        }
        self.terminate(Duration::from_secs(5));
        // A clean stop deletes the DNS service namespace; a killed daemon leaves it.
        let service = dns::service_netns(self);
        if netns::exists(&service) {
            let _ = netns::delete(&service);
        }
        let names = mem::take(&mut *self.namespaces.lock().unwrap());
        for name in names {
            if netns::exists(&name) {
                if let Err(e) = netns::delete(&name) {
                    eprintln!("cleanup: delete netns {name}: {e}");
                }
            }
            // The resolv.conf vswitchd wrote for it (ip netns exec's /etc/netns/NAME).
            let _ = fs::remove_dir_all(Path::new("/etc/netns").join(&name));
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("cleanup: remove {}: {e}", self.dir.display());
        }
    }
}

/// Deletes a namespace the test created itself, also when the test panics.
pub struct NetnsGuard(pub String);

impl NetnsGuard {
    pub fn create() -> NetnsGuard {
        let name = unique_name("vswp");
        netns::create(&name).expect("create netns");
        NetnsGuard(name)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if netns::exists(&self.0) {
            if let Err(e) = netns::delete(&self.0) {
                eprintln!("cleanup: delete netns {}: {e}", self.0);
            }
        }
    }
}

/// What `add-port` prints.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub network: String,
    pub netns: String,
    pub name: String,
    pub interface: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub json: Value,
}

impl Endpoint {
    pub fn parse(text: &str) -> Endpoint {
        let json: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("add-port printed no JSON ({e}): {text}"));
        let field = |k: &str| -> String {
            json[k].as_str().unwrap_or_else(|| panic!("add-port JSON lacks string {k:?}: {json}")).to_string()
        };
        let (ip, prefix_len) = parse_cidr_addr(&field("IPv4Address"));
        Endpoint {
            id: field("Id"),
            network: field("Network"),
            netns: field("Netns"),
            name: field("Name"),
            interface: field("Interface"),
            mac: field("MacAddress"),
            ip,
            prefix_len,
            gateway: field("Gateway").parse().unwrap_or_else(|e| panic!("Gateway of {json}: {e}")),
            json,
        }
    }

    /// Name of this port in `vsctl stats`.
    pub fn stats_name(&self) -> String {
        format!("{}/{}", self.netns, self.interface)
    }

    pub fn mac_bytes(&self) -> [u8; 6] {
        parse_mac(&self.mac)
    }
}

/// "a.b.c.d/len" → (address, len).
pub fn parse_cidr_addr(s: &str) -> (Ipv4Addr, u8) {
    let (ip, len) = s.split_once('/').unwrap_or_else(|| panic!("{s:?} is not a.b.c.d/len"));
    (ip.parse().unwrap_or_else(|e| panic!("{s:?}: {e}")), len.parse().unwrap_or_else(|e| panic!("{s:?}: {e}")))
}

pub fn parse_mac(s: &str) -> [u8; 6] {
    let parts: Vec<u8> =
        s.split(':').map(|p| u8::from_str_radix(p, 16).unwrap_or_else(|e| panic!("MAC {s:?}: {e}"))).collect();
    parts.try_into().unwrap_or_else(|_| panic!("MAC {s:?} has not 6 octets"))
}

pub fn format_mac(mac: [u8; 6]) -> String {
    ports::netlink::format_mac(mac)
}

/// Docker's MAC for an IPv4 address: 02:42 and the four octets.
pub fn docker_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format_mac([0x02, 0x42, o[0], o[1], o[2], o[3]])
}

/// `vsctl stats --json`.
#[derive(Debug, Clone)]
pub struct Stats(pub Value);

impl Stats {
    /// The counters of the port named "NETNS/IFNAME".
    pub fn port(&self, name: &str) -> &Value {
        self.0["ports"]
            .as_array()
            .expect("stats.ports is an array")
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name:?} in stats: {}", self.0))
    }

    pub fn port_counter(&self, name: &str, counter: &str) -> u64 {
        self.port(name)[counter].as_u64().unwrap_or_else(|| panic!("stats of {name} lack {counter}: {}", self.0))
    }

    pub fn drops(&self, counter: &str) -> u64 {
        self.0["drops"][counter].as_u64().unwrap_or_else(|| panic!("stats.drops lacks {counter}: {}", self.0))
    }
}

// ---------------------------------------------------------------------------
// Sockets inside namespaces.

fn check(rc: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(rc)
    }
}

/// Run `f` inside namespace `ns`, panicking if the namespace cannot be entered.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    netns::run_in(ns, f).unwrap_or_else(|e| panic!("enter netns {ns}: {e}"))
}

/// socket(2) inside namespace `ns`.
pub fn socket_in(ns: &str, domain: i32, ty: i32, proto: i32) -> io::Result<OwnedFd> {
    in_ns(ns, move || {
        // SAFETY: plain syscall; the fd is owned by the returned OwnedFd.
        let fd = check(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) }, "socket")?;
        // SAFETY: fd is a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
}

fn set_timeout(fd: RawFd, opt: libc::c_int, t: Duration) -> io::Result<()> {
    let tv =
        libc::timeval { tv_sec: t.as_secs() as libc::time_t, tv_usec: t.subsec_micros().max(1) as libc::suseconds_t };
    // SAFETY: tv is a valid timeval of the size we pass.
    check(
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &tv as *const _ as *const libc::c_void,
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        },
        "setsockopt timeout",
    )
    .map(|_| ())
}

fn sockaddr_in(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from(ip).to_be();
    sa
}

static NEXT_IDENT: AtomicU16 = AtomicU16::new(0);

/// Ping `dst` from namespace `ns` with a raw ICMP socket: an echo request
/// every 200 ms until a matching reply (same identifier, from `dst`) arrives
/// or `timeout` passes. The first requests may wait for ARP.
pub fn ping(ns: &str, dst: Ipv4Addr, timeout: Duration) -> bool {
    ping_detail(ns, dst, timeout).is_ok()
}

/// Like `ping`, but a failure says what happened (requests sent, send
/// errors, other packets seen).
pub fn ping_detail(ns: &str, dst: Ipv4Addr, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let sock = socket_in(ns, libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)
        .map_err(|e| format!("raw ICMP socket in {ns}: {e}"))?;
    let opened = started.elapsed();
    let fd = sock.as_raw_fd();
    let ident = (std::process::id() as u16).wrapping_mul(31).wrapping_add(NEXT_IDENT.fetch_add(1, Ordering::Relaxed));
    set_timeout(fd, libc::SO_RCVTIMEO, Duration::from_millis(50)).map_err(|e| e.to_string())?;
    let sa = sockaddr_in(dst, 0);
    let deadline = Instant::now() + timeout;
    let (mut seq, mut sent, mut send_errors, mut other) = (0u16, 0, 0, 0);
    let mut last_error = None;
    let mut next_send = Instant::now();
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "no echo reply from {dst} in {ns} within {timeout:?}: {sent} requests sent, \
                 {send_errors} send errors (last: {last_error:?}), {other} other ICMP packets \
                 received; socket opened in {opened:?}"
            ));
        }
        if now >= next_send {
            seq = seq.wrapping_add(1);
            let msg = echo_request(ident, seq, b"vswitch-lab-ping");
            // SAFETY: msg and sa are valid for the lengths passed.
            let rc = unsafe {
                libc::sendto(
                    fd,
                    msg.as_ptr() as *const libc::c_void,
                    msg.len(),
                    0,
                    &sa as *const _ as *const libc::sockaddr,
                    mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                // EHOSTUNREACH after a failed ARP etc.: keep trying until the deadline.
                send_errors += 1;
                last_error = Some(io::Error::last_os_error().to_string());
            } else {
                sent += 1;
            }
            next_send = now + Duration::from_millis(200);
        }
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 0 {
            continue; // timeout, ICMP error queued etc.
        }
        if is_echo_reply_from(&buf[..n as usize], dst, ident) {
            return Ok(started.elapsed());
        }
        other += 1;
    }
}

fn echo_request(ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut msg = vec![proto::icmp::TYPE_ECHO_REQUEST, 0, 0, 0];
    msg.extend_from_slice(&ident.to_be_bytes());
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(payload);
    let sum = proto::checksum::compute(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

/// A raw ICMP socket receives the IPv4 header too.
fn is_echo_reply_from(pkt: &[u8], from: Ipv4Addr, ident: u16) -> bool {
    let Ok(ip) = proto::ipv4::Packet::parse(pkt) else {
        return false;
    };
    let msg = ip.payload();
    ip.src() == from
        && ip.protocol() == proto::ipv4::PROTO_ICMP
        && msg.len() >= 8
        && msg[0] == proto::icmp::TYPE_ECHO_REPLY
        && msg[4..6] == ident.to_be_bytes()
}

/// The byte at `offset` of the stream `tcp_stream` sends: not periodic at
/// any power of two, so lost, duplicated or reordered segments show.
pub fn pattern_byte(offset: u64) -> u8 {
    let x = offset.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 29) as u8 ^ (offset / 1021) as u8
}

/// Send `bytes` of patterned data over TCP from `client_ns` to a listener on
/// `server_ip` in `server_ns`, and verify that every byte arrives intact.
/// Returns the time taken.
pub fn tcp_stream(
    server_ns: &str,
    server_ip: impl Into<std::net::IpAddr>,
    client_ns: &str,
    bytes: u64,
) -> Result<Duration, String> {
    let server_ip: std::net::IpAddr = server_ip.into();
    const IO_TIMEOUT: Duration = Duration::from_secs(15);
    let listener = in_ns(server_ns, move || TcpListener::bind((server_ip, 0)))
        .map_err(|e| format!("listen on {server_ip} in {server_ns}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;

    let server = thread::spawn(move || -> Result<u64, String> {
        let deadline = Instant::now() + IO_TIMEOUT;
        let (mut conn, _) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        conn.set_nonblocking(false).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got: u64 = 0;
        loop {
            let n = conn.read(&mut buf).map_err(|e| format!("read after {got} bytes: {e}"))?;
            if n == 0 {
                return Ok(got);
            }
            for (i, b) in buf[..n].iter().enumerate() {
                let off = got + i as u64;
                if *b != pattern_byte(off) {
                    return Err(format!("byte {off} is {b:#04x}, sent {:#04x}", pattern_byte(off)));
                }
            }
            got += n as u64;
        }
    });

    let start = Instant::now();
    let dst = std::net::SocketAddr::new(server_ip, port);
    let client = in_ns(client_ns, move || TcpStream::connect_timeout(&dst, Duration::from_secs(5)));
    let sent = match client {
        Ok(mut conn) => {
            conn.set_write_timeout(Some(IO_TIMEOUT)).ok();
            let mut chunk = vec![0u8; 256 * 1024];
            let mut off: u64 = 0;
            let mut res = Ok(());
            while off < bytes {
                let n = chunk.len().min((bytes - off) as usize);
                for (i, b) in chunk[..n].iter_mut().enumerate() {
                    *b = pattern_byte(off + i as u64);
                }
                if let Err(e) = conn.write_all(&chunk[..n]) {
                    res = Err(format!("write after {off} bytes: {e}"));
                    break;
                }
                off += n as u64;
            }
            let _ = conn.shutdown(std::net::Shutdown::Write);
            res
        }
        Err(e) => Err(format!("connect {dst} from {client_ns}: {e}")),
    };
    let received = server.join().map_err(|_| "server thread panicked".to_string())?;
    sent?;
    let got = received?;
    if got != bytes {
        return Err(format!("server received {got} bytes of {bytes}"));
    }
    Ok(start.elapsed())
}

/// A UDP socket bound to `ip:0` inside `ns`.
pub fn udp_socket(ns: &str, ip: Ipv4Addr) -> std::net::UdpSocket {
    in_ns(ns, move || std::net::UdpSocket::bind((ip, 0))).unwrap_or_else(|e| panic!("bind UDP {ip} in {ns}: {e}"))
}

/// Interface index of `ifname` in `ns`.
pub fn ifindex_in(ns: &str, ifname: &str) -> u32 {
    let name = ifname.to_string();
    in_ns(ns, move || ports::netlink::link_index(&name))
        .unwrap_or_else(|e| panic!("{ifname} in {ns}: {e}"))
        .unwrap_or_else(|| panic!("no {ifname} in {ns}"))
}

/// Lines of a /proc/net file as seen from inside `ns`.
pub fn proc_net_in(ns: &str, file: &str) -> String {
    let path = format!("/proc/thread-self/net/{file}");
    in_ns(ns, move || fs::read_to_string(&path)).unwrap_or_else(|e| panic!("read {file}: {e}"))
}

/// The neighbour (ARP) entry for `ip` in `ns`: Some(MAC) if resolved.
pub fn arp_entry(ns: &str, ip: Ipv4Addr) -> Option<String> {
    let table = proc_net_in(ns, "arp");
    let ip = ip.to_string();
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // IP address, HW type, Flags, HW address, Mask, Device
        (f.len() >= 4 && f[0] == ip && f[2] != "0x0").then(|| f[3].to_string())
    })
}

/// One IPv4 route from /proc/net/route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub iface: String,
    pub dst: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub mask: Ipv4Addr,
}

/// The IPv4 routes (main table) inside `ns`.
pub fn routes_in(ns: &str) -> Vec<Route> {
    let table = proc_net_in(ns, "route");
    let hex = |s: &str| Ipv4Addr::from(u32::from_str_radix(s, 16).expect("hex").swap_bytes());
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8).then(|| Route {
                iface: f[0].to_string(),
                dst: hex(f[1]),
                gateway: hex(f[2]),
                mask: hex(f[7]),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// AF_PACKET: raw frames in and out of an interface inside a namespace.

/// An AF_PACKET socket bound to one interface of a namespace.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSocket {
    /// Open on `ifname` in `ns`, seeing every EtherType.
    pub fn open(ns: &str, ifname: &str) -> PacketSocket {
        let ifindex = ifindex_in(ns, ifname);
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        let fd = socket_in(ns, libc::AF_PACKET, libc::SOCK_RAW, proto)
            .unwrap_or_else(|e| panic!("AF_PACKET socket in {ns}: {e}"));
        let s = PacketSocket { fd, ifindex };
        let sll = s.sockaddr(proto as u16, [0; 6]);
        // SAFETY: sll is a valid sockaddr_ll of the size we pass.
        check(
            unsafe {
                libc::bind(
                    s.fd.as_raw_fd(),
                    &sll as *const _ as *const libc::sockaddr,
                    mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            },
            "bind AF_PACKET",
        )
        .unwrap_or_else(|e| panic!("{ifname} in {ns}: {e}"));
        s
    }

    fn sockaddr(&self, proto_be: u16, dst: [u8; 6]) -> libc::sockaddr_ll {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto_be;
        sll.sll_ifindex = self.ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&dst);
        sll
    }

    /// Send one whole frame (Ethernet header included) as it is.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let sll = self.sockaddr(0, [0; 6]);
        // SAFETY: frame and sll are valid for the lengths passed.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        check(rc as libc::c_int, "send frame").map(|_| ())
    }

    /// Frames received (not sent by this namespace) during `window`.
    pub fn collect(&self, window: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + window;
        let mut frames = Vec::new();
        while let Some(f) = self.recv_frame(deadline) {
            frames.push(f);
        }
        frames
    }

    /// The next frame received (not sent by this namespace), if one comes
    /// before `deadline`.
    pub fn recv_frame(&self, deadline: Instant) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            set_timeout(self.fd.as_raw_fd(), libc::SO_RCVTIMEO, left).expect("SO_RCVTIMEO");
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
            let mut len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf and from are valid for the lengths passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                    &mut from as *mut _ as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if n < 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            buf.truncate(n as usize);
            return Some(buf);
        }
    }

    /// Resolve `target` with ARP requests of our own (the namespace's kernel
    /// keeps no neighbour entry): one request every 200 ms until a reply
    /// arrives or `timeout` passes. Frames that are not the answer go to `other`.
    pub fn arp_resolve(
        &self,
        me: ([u8; 6], Ipv4Addr),
        target: Ipv4Addr,
        timeout: Duration,
        other: &mut dyn FnMut(&[u8]),
    ) -> Option<[u8; 6]> {
        let mut req = [0u8; 64];
        let n = proto::arp::write_frame(
            &mut req,
            proto::arp::OP_REQUEST,
            proto::arp::Host { mac: proto::MacAddr(me.0), ip: me.1 },
            proto::arp::Host { mac: proto::MacAddr::ZERO, ip: target },
            proto::MacAddr::BROADCAST,
        );
        let answer = |f: &[u8]| -> Option<[u8; 6]> {
            let eth = proto::ethernet::Frame::parse(f).ok()?;
            if eth.ethertype() != proto::ethernet::ETHERTYPE_ARP {
                return None;
            }
            let arp = proto::arp::Packet::parse(eth.payload()).ok()?;
            (arp.op() == proto::arp::OP_REPLY && arp.sender_ip() == target && arp.target_ip() == me.1)
                .then(|| arp.sender_mac().octets())
        };
        self.exchange(&req[..n], timeout, answer, other)
    }

    /// Send an ICMP echo request to (`dst_mac`, `dst_ip`) in a frame of our
    /// own, every 200 ms until the reply comes or `timeout` passes.
    pub fn ping_raw(
        &self,
        me: ([u8; 6], Ipv4Addr),
        dst: ([u8; 6], Ipv4Addr),
        timeout: Duration,
        other: &mut dyn FnMut(&[u8]),
    ) -> bool {
        let ident = NEXT_IDENT.fetch_add(1, Ordering::Relaxed);
        let mut req = [0u8; 128];
        let n = proto::icmp::write_echo_request(
            &mut req,
            (proto::MacAddr(me.0), me.1),
            (proto::MacAddr(dst.0), dst.1),
            ident,
            1,
            b"vswitch-lab-raw-ping",
        );
        let answer = |f: &[u8]| -> Option<()> {
            let eth = proto::ethernet::Frame::parse(f).ok()?;
            if eth.ethertype() != proto::ethernet::ETHERTYPE_IPV4 || eth.dst().octets() != me.0 {
                return None;
            }
            let ip = proto::ipv4::Packet::parse(eth.payload()).ok()?;
            (ip.dst() == me.1 && is_echo_reply_from(eth.payload(), dst.1, ident)).then_some(())
        };
        self.exchange(&req[..n], timeout, answer, other).is_some()
    }

    /// Send `frame` every 200 ms until `answer` accepts a received frame.
    fn exchange<T>(
        &self,
        frame: &[u8],
        timeout: Duration,
        answer: impl Fn(&[u8]) -> Option<T>,
        other: &mut dyn FnMut(&[u8]),
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.send(frame).ok()?;
            let round = (Instant::now() + Duration::from_millis(200)).min(deadline);
            while let Some(f) = self.recv_frame(round) {
                match answer(&f) {
                    Some(v) => return Some(v),
                    None => other(&f),
                }
            }
        }
        None
    }
}

/// The ARP requests among `frames` that ask for `target`.
pub fn arp_requests_for(frames: &[Vec<u8>], target: Ipv4Addr) -> usize {
    frames
        .iter()
        .filter(|f| {
            let Ok(eth) = proto::ethernet::Frame::parse(f) else {
                return false;
            };
            if eth.ethertype() != proto::ethernet::ETHERTYPE_ARP {
                return false;
            }
            let Ok(arp) = proto::arp::Packet::parse(eth.payload()) else {
                return false;
            };
            arp.op() == proto::arp::OP_REQUEST && arp.target_ip() == target
        })
        .count()
}

/// Whether `hay` contains `needle`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Have `cmd` run in network namespace `ns` (setns(CLONE_NEWNET) between
/// fork and exec, so it keeps the test's mount namespace). The returned
/// file must live until `cmd` is spawned.
pub fn exec_in_netns(cmd: &mut Command, ns: &str) -> fs::File {
    use std::os::unix::process::CommandExt;
    // Used by the child between fork and exec (O_CLOEXEC: not inherited).
    let file = fs::File::open(netns::path(ns)).unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
    let fd = file.as_raw_fd();
    // SAFETY: setns is async-signal-safe and touches no memory of the
    // parent; the fd stays open until spawn returns (the caller holds it).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    file
}

/// Poll `f` every 100 ms until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Check that a refusal's message is one non-empty line mentioning at least
/// one of `words` (case-insensitive).
pub fn assert_one_line_naming(what: &str, stderr: &str, words: &[&str]) {
    let msg = stderr.trim();
    assert!(!msg.is_empty(), "{what}: refused with an empty message");
    assert_eq!(msg.lines().count(), 1, "{what}: the error must be one line, got:\n{msg}");
    let lower = msg.to_lowercase();
    assert!(words.iter().any(|w| lower.contains(&w.to_lowercase())), "{what}: error {msg:?} names none of {words:?}");
}

/// Whether `path` exists (for readability).
pub fn exists(path: impl AsRef<Path>) -> bool {
    path.as_ref().exists()
}

// ---------------------------------------------------------------------------
// The outside world: a "host" namespace for vswitchd and an "outside" one
// behind its uplink.

/// The uplink's interface name inside the host namespace.
pub const UPLINK_IFACE: &str = "up0";

/// Two namespaces the test made: `host`, where vswitchd runs and owns
/// `host/up0`, and `outside`, whose `eth0` (the other end of a veth pair)
/// holds `outside_ip/prefix_len` and stands for the world beyond the switch.
/// Both are deleted on drop, also when the test panics.
pub struct Outside {
    pub host: NetnsGuard,
    pub outside: NetnsGuard,
    pub outside_ip: Ipv4Addr,
    pub prefix_len: u8,
}

impl Outside {
    /// Create both namespaces and the veth pair; everything up (lo too).
    pub fn create(outside_ip: Ipv4Addr, prefix_len: u8) -> Outside {
        require_root();
        let o = Outside { host: NetnsGuard::create(), outside: NetnsGuard::create(), outside_ip, prefix_len };
        let outside = o.outside.0.clone();
        in_ns(&o.host.0, move || -> io::Result<()> {
            let up = ports::kernel_bridge::create_veth_into(UPLINK_IFACE, "eth0", &outside)?;
            ports::netlink::set_link_up(up)?;
            if let Some(lo) = ports::netlink::link_index("lo")? {
                ports::netlink::set_link_up(lo)?;
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("veth {}/{UPLINK_IFACE} <-> {}/eth0: {e}", o.host.0, o.outside.0));
        in_ns(&o.outside.0, move || -> io::Result<()> {
            let eth = ports::netlink::link_index("eth0")?.expect("eth0 in the outside namespace");
            ports::netlink::add_ipv4_addr(eth, outside_ip, prefix_len)?;
            ports::netlink::set_link_up(eth)?;
            let lo = ports::netlink::link_index("lo")?.expect("lo");
            ports::netlink::set_link_up(lo)
        })
        .unwrap_or_else(|e| panic!("address the outside namespace {}: {e}", o.outside.0));
        o
    }

    /// Start vswitchd in the host namespace with `--uplink up0 --uplink-ip
    /// UPLINK_IP/LEN --uplink-gw OUTSIDE_IP` and `extra` flags.
    pub fn start_daemon(&self, uplink_ip: Ipv4Addr, extra: &[&str]) -> Daemon {
        let cidr = format!("{uplink_ip}/{}", self.prefix_len);
        let gw = self.outside_ip.to_string();
        let mut args = vec!["--uplink", UPLINK_IFACE, "--uplink-ip", &cidr, "--uplink-gw", &gw];
        args.extend_from_slice(extra);
        Daemon::start_in_netns(&self.host.0, &args)
    }
}

/// Whether this build of vswitchd has an uplink (`--uplink` in its --help).
pub fn vswitchd_has_uplink() -> bool {
    let out = Command::new(VSWITCHD).arg("--help").output().expect("run vswitchd --help");
    String::from_utf8_lossy(&out.stdout).contains("--uplink")
}

/// Set SO_RCVTIMEO on a socket opened with `socket_in`.
pub fn set_recv_timeout(fd: &OwnedFd, t: Duration) -> io::Result<()> {
    set_timeout(fd.as_raw_fd(), libc::SO_RCVTIMEO, t)
}

/// One datagram from a socket opened with `socket_in` (SO_RCVTIMEO applies).
pub fn recv_raw(fd: &OwnedFd) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// A TCP connection from `ns`, from the given local address and port (port
/// 0: any), to `dst`; SO_REUSEADDR is set, so two namespaces (or a quick
/// reconnect) may use the same local port. Fails after `timeout`.
pub fn tcp_connect_from(ns: &str, src: SocketAddrV4, dst: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    let fd = socket_in(ns, libc::AF_INET, libc::SOCK_STREAM, 0)?;
    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid c_int of the size we pass.
    check(
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                &one as *const _ as *const libc::c_void,
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        },
        "SO_REUSEADDR",
    )?;
    let sa = sockaddr_in(*src.ip(), src.port());
    // SAFETY: sa is a valid sockaddr_in of the size we pass.
    check(
        unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const _ as *const libc::sockaddr,
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        },
        &format!("bind {src}"),
    )?;
    // connect(2) on a blocking socket gives up after SO_SNDTIMEO.
    set_timeout(fd.as_raw_fd(), libc::SO_SNDTIMEO, timeout)?;
    let da = sockaddr_in(*dst.ip(), dst.port());
    // SAFETY: da is a valid sockaddr_in of the size we pass.
    check(
        unsafe {
            libc::connect(
                fd.as_raw_fd(),
                &da as *const _ as *const libc::sockaddr,
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        },
        &format!("connect {src} -> {dst}"),
    )?;
    let conn = TcpStream::from(fd);
    conn.set_write_timeout(None)?;
    Ok(conn)
}

/// Datagrams a `UdpEcho` received: (source, payload).
type Received = std::sync::Arc<Mutex<Vec<(SocketAddrV4, Vec<u8>)>>>;

/// A UDP server inside a namespace that records every datagram (source and
/// payload) and sends the payload back to its source. Stops on drop.
pub struct UdpEcho {
    pub addr: SocketAddrV4,
    seen: Received,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl UdpEcho {
    pub fn start(ns: &str, ip: Ipv4Addr) -> UdpEcho {
        Self::bind(ns, SocketAddrV4::new(ip, 0))
    }

    /// A server at `at` (port 0: any free port).
    pub fn bind(ns: &str, at: SocketAddrV4) -> UdpEcho {
        let sock =
            in_ns(ns, move || std::net::UdpSocket::bind(at)).unwrap_or_else(|e| panic!("bind UDP {at} in {ns}: {e}"));
        let addr = match sock.local_addr().expect("UDP local address") {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("UDP server bound to {other}"),
        };
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let seen: Received = Default::default();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, std::net::SocketAddr::V4(from))) = sock.recv_from(&mut buf) else {
                    continue;
                };
                seen2.lock().unwrap().push((from, buf[..n].to_vec()));
                let _ = sock.send_to(&buf[..n], from);
            }
        });
        UdpEcho { addr, seen, stop, thread: Some(thread) }
    }

    /// Every datagram received so far: (source, payload).
    pub fn seen(&self) -> Vec<(SocketAddrV4, Vec<u8>)> {
        self.seen.lock().unwrap().clone()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The sources of the datagrams that carried `payload`.
    pub fn sources_of(&self, payload: &[u8]) -> std::collections::BTreeSet<SocketAddrV4> {
        self.seen.lock().unwrap().iter().filter(|(_, p)| p == payload).map(|(s, _)| *s).collect()
    }

    /// How many datagrams arrived.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Send `payload` from `sock` to `dst` every `every` until a datagram with
/// the same payload comes back or `timeout` passes; returns what came back
/// and from where.
pub fn udp_round_trip(
    sock: &std::net::UdpSocket,
    dst: SocketAddrV4,
    payload: &[u8],
    every: Duration,
    timeout: Duration,
) -> Result<SocketAddrV4, String> {
    let deadline = Instant::now() + timeout;
    sock.set_read_timeout(Some(every)).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65536];
    let (mut sent, mut other) = (0, 0);
    while Instant::now() < deadline {
        sock.send_to(payload, dst).map_err(|e| format!("send to {dst}: {e}"))?;
        sent += 1;
        let round = Instant::now() + every;
        while Instant::now() < round {
            match sock.recv_from(&mut buf) {
                Ok((n, std::net::SocketAddr::V4(from))) if &buf[..n] == payload => return Ok(from),
                Ok(_) => other += 1,
                Err(_) => break,
            }
        }
    }
    Err(format!("no echo from {dst} within {timeout:?}: {sent} datagrams sent, {other} other datagrams received"))
}

/// A TCP server inside a namespace: accepts any number of connections,
/// records each peer's address and echoes what it reads. Stops on drop.
pub struct TcpEcho {
    pub addr: SocketAddrV4,
    peers: std::sync::Arc<Mutex<Vec<SocketAddrV4>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TcpEcho {
    pub fn start(ns: &str, ip: Ipv4Addr) -> TcpEcho {
        Self::bind(ns, SocketAddrV4::new(ip, 0))
    }

    /// A server at `at` (port 0: any free port).
    pub fn bind(ns: &str, at: SocketAddrV4) -> TcpEcho {
        let listener =
            in_ns(ns, move || TcpListener::bind(at)).unwrap_or_else(|e| panic!("listen on {at} in {ns}: {e}"));
        let addr = match listener.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("TCP server bound to {other}"),
        };
        listener.set_nonblocking(true).unwrap();
        let peers = std::sync::Arc::new(Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (peers2, stop2) = (peers.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut conns = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, std::net::SocketAddr::V4(peer))) => {
                        peers2.lock().unwrap().push(peer);
                        let stop3 = stop2.clone();
                        conns.push(thread::spawn(move || {
                            conn.set_nonblocking(false).ok();
                            conn.set_read_timeout(Some(Duration::from_millis(100))).ok();
                            let mut buf = vec![0u8; 64 * 1024];
                            while !stop3.load(Ordering::Relaxed) {
                                match conn.read(&mut buf) {
                                    Ok(0) => return,
                                    Ok(n) => {
                                        if conn.write_all(&buf[..n]).is_err() {
                                            return;
                                        }
                                    }
                                    Err(e)
                                        if e.kind() == io::ErrorKind::WouldBlock
                                            || e.kind() == io::ErrorKind::TimedOut => {}
                                    Err(_) => return,
                                }
                            }
                        }));
                    }
                    Ok(_) => {}
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        TcpEcho { addr, peers, stop, thread: Some(thread) }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The peer address of every connection accepted so far.
    pub fn peers(&self) -> Vec<SocketAddrV4> {
        self.peers.lock().unwrap().clone()
    }

    /// Forget the peers seen so far.
    pub fn clear_peers(&self) {
        self.peers.lock().unwrap().clear();
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Write `msg` on `conn` and read back as many bytes: they must be the same.
pub fn tcp_echo_round(conn: &mut TcpStream, msg: &[u8]) -> Result<(), String> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    conn.write_all(msg).map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0u8; msg.len()];
    conn.read_exact(&mut back).map_err(|e| format!("read the echo: {e}"))?;
    if back != msg {
        return Err(format!(
            "echo differs: sent {:?}, got {:?}",
            String::from_utf8_lossy(msg),
            String::from_utf8_lossy(&back)
        ));
    }
    Ok(())
}

/// A daemon in its own host namespace with an uplink to an outside
/// namespace. Field order is drop order: the daemon (and the container
/// namespaces it registered) goes first, then the host and outside namespaces.
pub struct UplinkLab {
    pub d: Daemon,
    pub out: Outside,
}

impl UplinkLab {
    /// The outside namespace at `outside`/24, the switch's uplink address at `uplink`.
    pub fn start_at(outside: Ipv4Addr, uplink: Ipv4Addr) -> UplinkLab {
        require_root();
        assert!(vswitchd_has_uplink(), "this vswitchd has no --uplink flag (vswitchd --help)");
        let out = Outside::create(outside, 24);
        let d = out.start_daemon(uplink, &[]);
        UplinkLab { d, out }
    }

    /// The outside namespace's name.
    pub fn o(&self) -> &str {
        &self.out.outside.0
    }
}
