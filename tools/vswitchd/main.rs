//! vswitchd: the foreground daemon. Holds the desired state, serves vsctl on
//! a Unix socket and runs the data path's workers.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use vswitch::cluster::ClusterConfig;
use vswitch::daemon::{Daemon, UplinkConfig, UplinkFlags};
use vswitch::dns::service::DnsConfig;
use vswitch::server::Server;
use vswitch::state::Store;
use vswitch::{DEFAULT_SOCKET, DEFAULT_STATE_DIR};

#[derive(Parser)]
#[command(version, about = "Userspace switch giving network namespaces Docker-style networks")]
struct Args {
    /// Where networks and endpoints are persisted.
    #[arg(long, env = "VSWITCH_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// The control socket vsctl talks to.
    #[arg(long, env = "VSWITCH_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Data path worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Interface to the world outside the networks: the switch sends and
    /// receives on it itself and masquerades the networks behind --uplink-ip.
    #[arg(long, value_name = "IFACE")]
    uplink: Option<String>,
    /// The address (with prefix) the switch owns on the uplink's segment.
    #[arg(long, value_name = "CIDR", requires = "uplink")]
    uplink_ip: Option<String>,
    /// Next hop beyond the networks (default: the host's default route via IFACE).
    #[arg(long, value_name = "IP", requires = "uplink")]
    uplink_gw: Option<String>,
    /// The switch's own IPv6 address (with prefix) on the uplink's segment
    /// (default: it speaks from its link-local address).
    #[arg(long, value_name = "CIDR", requires = "uplink")]
    uplink_ip6: Option<String>,
    /// IPv6 next hop beyond the networks (default: the host's IPv6 default
    /// route via IFACE; with neither, IPv6 is not routed out).
    #[arg(long, value_name = "IP", requires = "uplink")]
    uplink_gw6: Option<String>,
    /// UDP port of overlay networks' VXLAN on the uplink (Linux's vxlan dstport).
    #[arg(long, value_name = "PORT", requires = "uplink")]
    vxlan_port: Option<u16>,
    /// The cluster store that overlay networks are shared through
    /// (etcd://HOST:PORT[,HOST:PORT...]); without it, overlay networks use
    /// static peers (vsctl add-peer).
    #[arg(long, value_name = "URL", requires = "uplink")]
    cluster_store: Option<String>,
    /// This host's address in the cluster, IP[:PORT]: its VTEP, the uplink's
    /// address (the default). The port of Docker's form is not used.
    #[arg(long, value_name = "IP[:PORT]", requires = "cluster_store")]
    cluster_advertise: Option<String>,
    /// Seconds a host's endpoints outlive it in the cluster store (its lease).
    #[arg(long, value_name = "SECS", requires = "cluster_store", default_value_t = vswitch::cluster::DEFAULT_TTL.as_secs())]
    cluster_ttl: u64,
    /// Upstream DNS server for names the embedded DNS does not know
    /// (repeatable; default: the host's resolv.conf less loopback entries).
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<String>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    if workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    let uplink = args
        .uplink
        .as_deref()
        .map(|ifname| {
            let flags = UplinkFlags {
                ip: args.uplink_ip.as_deref(),
                gateway: args.uplink_gw.as_deref(),
                ip6: args.uplink_ip6.as_deref(),
                gateway6: args.uplink_gw6.as_deref(),
                vxlan_port: args.vxlan_port,
            };
            UplinkConfig::from_flags(ifname, &flags)
        })
        .transpose()?;
    let cluster = match (&args.cluster_store, &uplink) {
        (Some(store), Some(uplink)) => Some(ClusterConfig::parse(
            store,
            args.cluster_advertise.as_deref(),
            uplink.ip,
            Duration::from_secs(args.cluster_ttl),
        )?),
        _ => None,
    };
    let dns_servers = args.dns.iter().map(|ip| parse_dns_server(ip)).collect::<Result<Vec<_>, _>>()?;
    let store = Store::new(&args.state_dir).map_err(|e| e.to_string())?;
    let _lock = lock_state_dir(&args.state_dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).map_err(|e| format!("signal handler: {e}"))?;
    }
    let server = Server::bind(&args.socket).map_err(|e| e.to_string())?;
    let dns = DnsConfig::new(store.dir(), dns_servers);
    let mut daemon =
        Daemon::start_with_dns(store, workers, uplink.as_ref(), dns).map_err(|e| format!("starting: {e}"))?;
    if let Some(config) = cluster {
        daemon.join_cluster(config).map_err(|e| format!("joining the cluster store: {e}"))?;
    }
    log::info!(
        "vswitchd ready: {workers} workers, state in {}, control socket {}",
        args.state_dir.display(),
        args.socket.display()
    );
    server.serve(&mut daemon, &stop);
    log::info!("stopping: saving state; ports stay in their namespaces for the next start");
    daemon.shutdown();
    Ok(())
}

/// A `--dns` server: a unicast address.
fn parse_dns_server(text: &str) -> Result<std::net::IpAddr, String> {
    match text.parse::<std::net::IpAddr>() {
        Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => Ok(ip),
        _ => Err(format!("invalid --dns {text:?}: want the unicast IPv4 or IPv6 address of a DNS server")),
    }
}

/// One daemon per state directory: a second one would fight over the TAPs.
fn lock_state_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!("state dir {} is in use by another vswitchd", dir.display()));
    }
    Ok(file)
}
