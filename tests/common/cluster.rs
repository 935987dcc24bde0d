//! Multi-host labs: "hosts" as namespaces whose `up0` interfaces hang on a
//! kernel bridge in an underlay namespace, and an etcd server (Debian's
//! etcd-server, installed on first use) on the underlay as the cluster store.

use super::*;
use std::sync::OnceLock;

/// The etcd client port.
pub const ETCD_PORT: u16 = 2379;

/// The underlay: a bridge `br0` in its own namespace with `address`/24 on
/// it, and one host namespace per veth, each with `up0` up and an address
/// of its own stack on it.
pub struct Underlay {
    pub ns: NetnsGuard,
    pub hosts: Vec<NetnsGuard>,
    pub address: Ipv4Addr,
}

impl Underlay {
    pub fn create(hosts: usize, address: Ipv4Addr) -> Underlay {
        require_root();
        let ns = NetnsGuard::create();
        let hosts: Vec<NetnsGuard> = (0..hosts).map(|_| NetnsGuard::create()).collect();
        let names: Vec<String> = hosts.iter().map(|h| h.0.clone()).collect();
        in_ns(&ns.0, move || -> io::Result<()> {
            use ports::{kernel_bridge, netlink};
            // etcd's clients in this namespace (the health check) reach it over lo.
            netlink::set_link_up(netlink::link_index("lo")?.expect("lo"))?;
            let bridge = kernel_bridge::create_bridge("br0")?;
            netlink::add_ipv4_addr(bridge, address, 24)?;
            netlink::set_link_up(bridge)?;
            for (i, host) in names.iter().enumerate() {
                let port = kernel_bridge::create_veth_into(&format!("h{i}"), UPLINK_IFACE, host)?;
                kernel_bridge::set_controller(port, bridge)?;
                netlink::set_link_up(port)?;
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("underlay bridge: {e}"));
        for (i, host) in hosts.iter().enumerate() {
            // The host's own stack talks to etcd from .51, .52...; vswitchd
            // owns the VTEP address beside it (--uplink-ip).
            let own = Ipv4Addr::from(u32::from(address) & !0xff | (51 + i as u32));
            in_ns(&host.0, move || -> io::Result<()> {
                let up = ports::netlink::link_index(UPLINK_IFACE)?.expect("the veth's host end");
                ports::netlink::add_ipv4_addr(up, own, 24)?;
                ports::netlink::set_link_up(up)
            })
            .unwrap_or_else(|e| panic!("underlay up0 in {}: {e}", host.0));
        }
        Underlay { ns, hosts, address }
    }
}

/// The etcd binary, installed from Debian's etcd-server on first use.
pub fn etcd_binary() -> PathBuf {
    static ETCD: OnceLock<PathBuf> = OnceLock::new();
    ETCD.get_or_init(|| {
        if let Some(path) = find_in_path("etcd") {
            return path;
        }
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends", "etcd-server"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
            install();
        }
        find_in_path("etcd").unwrap_or_else(|| {
            panic!("the cluster tests need etcd: `apt-get install etcd-server` failed (no network or no apt?)")
        })
    })
    .clone()
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// One etcd server in namespace `ns` on `ip`, its data in a temporary
/// directory; stopped (and the directory removed) on drop.
pub struct Etcd {
    child: Option<Child>,
    ns: String,
    ip: Ipv4Addr,
    dir: PathBuf,
}

impl Etcd {
    pub fn start(ns: &str, ip: Ipv4Addr) -> Etcd {
        let dir = PathBuf::from(format!("/tmp/{}", unique_name("vswetcd")));
        let mut etcd = Etcd { child: None, ns: ns.to_string(), ip, dir };
        etcd.spawn();
        etcd
    }

    /// `etcd://IP:PORT` for `--cluster-store`.
    pub fn url(&self) -> String {
        format!("etcd://{}:{ETCD_PORT}", self.ip)
    }

    /// Start the server (again, on the same data) and wait until it is healthy.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "etcd already running");
        let (client, peer) = (format!("http://{}:{ETCD_PORT}", self.ip), format!("http://{}:2380", self.ip));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("{}.log", self.dir.display()))
            .expect("etcd log");
        let mut cmd = Command::new(etcd_binary());
        cmd.args(["--name", "lab", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("lab={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let ns_file = exec_in_netns(&mut cmd, &self.ns);
        self.child = Some(cmd.spawn().expect("spawn etcd"));
        drop(ns_file);
        let (ns, ip) = (self.ns.clone(), self.ip);
        let healthy = wait_for(Duration::from_secs(20), || in_ns(&ns, move || health(ip)));
        if !healthy {
            let log = fs::read_to_string(format!("{}.log", self.dir.display())).unwrap_or_default();
            panic!("etcd did not become healthy; its log ends:\n{}", &log[log.len().saturating_sub(3000)..]);
        }
    }

    /// Start again with no data: a store that lost everything.
    pub fn wipe(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
        self.spawn();
    }

    /// Stop the server (SIGKILL: as a crash or a partition looks to clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_file(format!("{}.log", self.dir.display()));
    }
}

/// Whether etcd on `ip` says it is healthy (from inside its namespace).
fn health(ip: Ipv4Addr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddrV4::new(ip, ETCD_PORT).into(), Duration::from_millis(500))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}
