//! The namespace lab bench: the same two-namespace topology on the Linux
//! kernel bridge and on vswitchd, measured in one run on one machine.
//!
//!     sudo -E cargo bench --bench lab
//!
//! Self-contained (no iproute2, iperf3 or ping): namespaces, links and
//! addresses are made over netlink, traffic with the bench's own sockets.
//! Measured for both: TCP throughput (1 and 4 streams), 64-byte frame rate
//! (a sendmmsg generator in A aimed at an address B does not own, counted by
//! B's interface counters, so B's IP layer drops each frame early) and UDP
//! round-trip latency; for vswitchd also its CPU use when idle.
//!
//! The NAT row: TCP from a container to an "outside" namespace through a
//! masquerading router: for the kernel, a Linux bridge in a router namespace
//! with forwarding and an nftables masquerade rule out of a veth uplink
//! (skipped, shown as "-", when `nft` is not installed); for vswitchd, the
//! daemon in a host namespace owning the uplink veth (`--uplink`). Either
//! figure is an error unless the receiver saw the router's uplink address
//! as the peer.
//!
//! The overlay row: TCP between containers on two hosts (namespaces joined
//! by a veth underlay) over VXLAN: for the kernel, a Linux bridge and a
//! `vxlan` device on each host; for vswitchd, one daemon per host with an
//! overlay network and the other host as its peer (lab/overlay.rs).
//!
//! Environment: LAB_SECS (seconds per throughput test, default 5),
//! LAB_WORKERS (vswitchd workers, default: the number of cores),
//! LAB_GEN_THREADS (64-byte generator threads, default 1), LAB_RTTS (measured
//! round trips, default 20000), LAB_ONLY=nat or LAB_ONLY=overlay (measure
//! only that row, both columns, for A/B runs; the other rows show "-";
//! LAB_NAT_ONLY=1 is LAB_ONLY=nat).
//!
//! Scaling mode: `LAB_SCALING=1,2,4,8 sudo -E cargo bench --bench lab`
//! prints, instead of the table above, the 64-byte forwarding rate through
//! vswitchd for each worker count, with speed-up and efficiency; there
//! LAB_GEN_THREADS defaults to the worker count (see lab/scaling.rs).

#[path = "lab/overlay.rs"]
mod overlay;
#[path = "lab/report.rs"]
mod report;
#[path = "lab/scaling.rs"]
mod scaling;
#[path = "lab/topo.rs"]
mod topo;
#[path = "lab/traffic.rs"]
mod traffic;

use std::net::IpAddr;
use std::time::Duration;

use report::{Figure, Figures, Machine, RunInfo, NAT_TCP1, OVERLAY_TCP1};
use serde_json::json;
use topo::{Cleanup, Nat, Pair};

/// Round trips before the measured ones (ARP, caches, wake-ups).
const RTT_WARMUP: usize = 1000;
/// Upper bound on the whole latency test, so a lossy switch cannot stall it.
const RTT_BUDGET: Duration = Duration::from_secs(30);
/// How long vswitchd's CPU use is sampled while idle.
const IDLE_SAMPLE: Duration = Duration::from_secs(5);

struct Config {
    secs: Duration,
    workers: usize,
    gen_threads: usize,
    rtts: usize,
}

impl Config {
    fn from_env() -> Config {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Config {
            secs: Duration::from_secs(env_usize("LAB_SECS", 5).max(1) as u64),
            workers: env_usize("LAB_WORKERS", cores).max(1),
            gen_threads: env_usize("LAB_GEN_THREADS", 1).max(1),
            rtts: env_usize("LAB_RTTS", 20_000).max(1),
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: a
    // 45-second run that needs root is not a test, so skip it there.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("lab bench: skipped (run it with `cargo bench --bench lab`, as root)");
        return;
    }
    require_root();
    let cfg = Config::from_env();
    topo::remove_stale();
    if let Some(counts) = scaling::worker_counts() {
        let gen_threads = std::env::var_os("LAB_GEN_THREADS").map(|_| cfg.gen_threads);
        scaling::run(&counts, cfg.secs, gen_threads);
        return;
    }

    // LAB_NAT_ONLY=1 (kept) is LAB_ONLY=nat.
    let only = std::env::var("LAB_ONLY")
        .ok()
        .or_else(|| std::env::var("LAB_NAT_ONLY").ok().filter(|v| v == "1").map(|_| "nat".to_string()));
    if let Some(row) = only.as_deref().filter(|r| !matches!(*r, "nat" | "overlay")) {
        panic!("LAB_ONLY={row:?}: want nat or overlay");
    }
    let one_row = only.is_some();
    let (mut bridge, bridge_mtu) = if one_row {
        (Figures::new(), None)
    } else {
        eprintln!("lab: topology K (Linux bridge in its own namespace)");
        let mut cleanup = Cleanup::default();
        let pair = topo::kernel_bridge(&mut cleanup);
        (measure(&pair, None, &cfg), Some(pair.mtu))
    };
    let (mut vswitchd, vswitchd_mtu) = if one_row {
        (Figures::new(), None)
    } else {
        eprintln!("lab: topology V (vswitchd, {} workers)", cfg.workers);
        let mut cleanup = Cleanup::default();
        let (pair, daemon) = topo::vswitchd(&mut cleanup, cfg.workers);
        let figures = measure(&pair, Some(daemon.pid), &cfg);
        if figures.values().any(Result::is_err) {
            eprintln!("---- vswitchd log (tail) ----\n{}\n---- end ----", daemon.log_tail(3000));
        }
        (figures, Some(pair.mtu))
    };

    let mut notes = Vec::new();
    let mut nat_mtu = json!({ "kernel": null, "vswitchd": null });
    if only.as_deref() != Some("overlay") {
        measure_nat_rows(&cfg, &mut bridge, &mut vswitchd, &mut notes, &mut nat_mtu);
    }
    if only.as_deref() != Some("nat") {
        measure_overlay_rows(&cfg, &mut bridge, &mut vswitchd);
    }

    let info = RunInfo {
        machine: Machine::detect(),
        config: json!({
            "secs": cfg.secs.as_secs(),
            "vswitchd_workers": cfg.workers,
            "generator_threads": cfg.gen_threads,
            "round_trips": cfg.rtts,
            "mtu": { "kernel_bridge": bridge_mtu, "vswitchd": vswitchd_mtu },
            "nat_container_mtu": nat_mtu,
        }),
        ovs: ovs_note(),
        notes,
    };
    report::print(&info, &bridge, &vswitchd);
}

/// The NAT row: kernel bridge + nftables masquerade (when `nft` is
/// installed) and vswitchd's uplink.
fn measure_nat_rows(
    cfg: &Config,
    bridge: &mut Figures,
    vswitchd: &mut Figures,
    notes: &mut Vec<String>,
    nat_mtu: &mut serde_json::Value,
) {
    match topo::nft_binary() {
        None => {
            let note = "kernel NAT: nft not installed (apt-get install nftables), column skipped";
            eprintln!("{note}");
            notes.push(note.to_string());
        }
        Some(nft) => {
            eprintln!("lab: topology kernel NAT (bridge + forwarding + nftables masquerade)");
            let mut cleanup = Cleanup::default();
            let nat = topo::kernel_nat(&mut cleanup);
            nat_mtu["kernel"] = json!(nat.pair.mtu);
            let figure = topo::masquerade(&nft, &nat).and_then(|()| measure_nat(&nat, cfg));
            record(bridge, &nat.pair, NAT_TCP1, figure);
        }
    }
    eprintln!("lab: topology vswitchd NAT ({} workers, uplink)", cfg.workers);
    {
        let mut cleanup = Cleanup::default();
        let (nat, daemon) = topo::vswitchd_nat(&mut cleanup, cfg.workers);
        nat_mtu["vswitchd"] = json!(nat.pair.mtu);
        let figure = measure_nat(&nat, cfg);
        if figure.is_err() {
            eprintln!("---- vswitchd log (tail) ----\n{}\n---- end ----", daemon.log_tail(3000));
        }
        record(vswitchd, &nat.pair, NAT_TCP1, figure);
    }
}

/// The overlay row: two hosts over VXLAN, kernel bridges + vxlan devices
/// against two vswitchd.
fn measure_overlay_rows(cfg: &Config, bridge: &mut Figures, vswitchd: &mut Figures) {
    eprintln!("lab: topology kernel overlay (bridge + vxlan on two hosts)");
    {
        let mut cleanup = Cleanup::default();
        let pair = overlay::kernel(&mut cleanup);
        let figure = measure_tcp1(&pair, cfg);
        record(bridge, &pair, OVERLAY_TCP1, figure);
    }
    eprintln!("lab: topology vswitchd overlay ({} workers per host)", cfg.workers);
    let mut cleanups = [Cleanup::default(), Cleanup::default()];
    let (pair, daemons) = overlay::vswitchd(&mut cleanups, cfg.workers);
    let figure = measure_tcp1(&pair, cfg);
    if figure.is_err() {
        for d in &daemons {
            eprintln!("---- vswitchd log (tail) ----\n{}\n---- end ----", d.log_tail(3000));
        }
    }
    record(vswitchd, &pair, OVERLAY_TCP1, figure);
}

/// One TCP stream A → B, once B is reachable.
fn measure_tcp1(pair: &Pair, cfg: &Config) -> Figure {
    traffic::reachable(pair, Duration::from_secs(5))
        .map_err(|e| format!("{} → {} unreachable: {e}", pair.a_ip, pair.b_ip))?;
    traffic::tcp_gbps(pair, 1, cfg.secs).map_err(err)
}

fn require_root() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("lab bench: must run as root (it creates network namespaces, bridges, veths and TAPs)");
        std::process::exit(2);
    }
}

/// All figures of one topology; `daemon` is vswitchd's pid for V.
fn measure(pair: &Pair, daemon: Option<u32>, cfg: &Config) -> Figures {
    let mut f = Figures::new();
    if let Err(e) = traffic::reachable(pair, Duration::from_secs(5)) {
        // Nothing else can work: say so in every row rather than time out in each.
        let why = format!("{} → {} unreachable: {e}", pair.a_ip, pair.b_ip);
        eprintln!("lab: {}: {why}", pair.label);
        for m in report::METRICS.iter().filter(|m| m.key != NAT_TCP1) {
            f.insert(m.key, Err(why.clone()));
        }
        return f;
    }
    if let Some(pid) = daemon {
        record(&mut f, pair, "cpu_idle_pct", traffic::cpu_percent(pid, IDLE_SAMPLE).map_err(err));
    }
    measure_latency(&mut f, pair, cfg);
    record(&mut f, pair, "tcp1_gbps", traffic::tcp_gbps(pair, 1, cfg.secs).map_err(err));
    record(&mut f, pair, "tcp4_gbps", traffic::tcp_gbps(pair, 4, cfg.secs).map_err(err));
    measure_frames(&mut f, pair, daemon, cfg);
    if let Some(pid) = daemon {
        std::thread::sleep(Duration::from_secs(1)); // let queues drain and workers back off
        record(&mut f, pair, "cpu_idle_after_pct", traffic::cpu_percent(pid, IDLE_SAMPLE).map_err(err));
    }
    f
}

/// The NAT row: one TCP stream container → outside, an error unless the
/// outside saw the masquerade address as the peer.
fn measure_nat(nat: &Nat, cfg: &Config) -> Figure {
    let pair = &nat.pair;
    traffic::reachable(pair, Duration::from_secs(5))
        .map_err(|e| format!("{} → {} unreachable: {e}", pair.a_ip, pair.b_ip))?;
    let (gbps, peers) = traffic::tcp_gbps_peers(pair, 1, cfg.secs).map_err(err)?;
    let masq = IpAddr::V4(nat.masquerade_ip);
    match peers.iter().find(|p| p.ip() != masq) {
        None if !peers.is_empty() => Ok(gbps),
        None => Err("the receiver accepted no connection".into()),
        Some(p) => Err(format!("not masqueraded: the receiver saw peer {p}, expected {masq}")),
    }
}

fn measure_latency(f: &mut Figures, pair: &Pair, cfg: &Config) {
    match traffic::latency(pair, RTT_WARMUP, cfg.rtts, RTT_BUDGET) {
        Ok(l) => {
            record(f, pair, "rtt_p50_us", l.percentile(50.0).ok_or_else(|| "no samples".into()));
            record(f, pair, "rtt_p99_us", l.percentile(99.0).ok_or_else(|| "no samples".into()));
            record(f, pair, "rtt_lost", Ok(l.lost as f64));
        }
        Err(e) => {
            for key in ["rtt_p50_us", "rtt_p99_us", "rtt_lost"] {
                record(f, pair, key, Err(err(&e)));
            }
        }
    }
}

/// The 64-byte frame rate; for vswitchd also its CPU use meanwhile.
fn measure_frames(f: &mut Figures, pair: &Pair, daemon: Option<u32>, cfg: &Config) {
    let before = daemon.map(|pid| traffic::cpu_ticks(pid).map(|t| (t, std::time::Instant::now())));
    match traffic::frame_rate(pair, cfg.gen_threads, cfg.secs) {
        Ok(r) => {
            record(f, pair, "frames_rx_mpps", Ok(r.received_pps / 1e6));
            record(f, pair, "frames_sent_mpps", Ok(r.sent_pps / 1e6));
        }
        Err(e) => {
            record(f, pair, "frames_rx_mpps", Err(err(&e)));
            record(f, pair, "frames_sent_mpps", Err(err(&e)));
        }
    }
    if let (Some(pid), Some(Ok((t0, i0)))) = (daemon, before) {
        let pct = traffic::cpu_ticks(pid).map(|t1| traffic::ticks_to_percent(t1 - t0, i0.elapsed()));
        record(f, pair, "cpu_64b_pct", pct.map_err(err));
    }
}

fn record(f: &mut Figures, pair: &Pair, key: &'static str, figure: Figure) {
    match &figure {
        Ok(v) => eprintln!("lab: {:<13} {key:<20} {v:.3}", pair.label),
        Err(e) => eprintln!("lab: {:<13} {key:<20} error: {e}", pair.label),
    }
    f.insert(key, figure);
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The Open vSwitch column is only measured where ovs-vsctl is installed.
fn ovs_note() -> String {
    if topo::find_in_path("ovs-vsctl").is_some() {
        "OVS: ovs-vsctl is installed, but this bench has no Open vSwitch column yet; skipped".into()
    } else {
        "OVS: not installed, skipped".into()
    }
}
