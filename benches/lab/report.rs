//! The lab bench's output: a table (metric | kernel bridge | vswitchd |
//! ratio) with the machine it ran on, and the same figures as one JSON line.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// One measured figure, or why there is none.
pub type Figure = Result<f64, String>;

/// The figures of one topology, by metric key.
pub type Figures = BTreeMap<&'static str, Figure>;

/// A row of the table: key, title, unit, and whether higher is better.
pub struct Metric {
    pub key: &'static str,
    pub title: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
}

/// The NAT row's key: measured on topologies of its own (container → router
/// with masquerade → outside), not on the two-host pair of the other rows.
pub const NAT_TCP1: &str = "nat_tcp1_gbps";
pub const OVERLAY_TCP1: &str = "overlay_tcp1_gbps";

/// The rows, in the order they are printed.
pub const METRICS: &[Metric] = &[
    Metric { key: "tcp1_gbps", title: "TCP, 1 stream", unit: "Gbit/s", higher_is_better: true },
    Metric { key: "tcp4_gbps", title: "TCP, 4 streams", unit: "Gbit/s", higher_is_better: true },
    Metric { key: NAT_TCP1, title: "TCP via NAT to outside, 1 stream", unit: "Gbit/s", higher_is_better: true },
    Metric {
        key: OVERLAY_TCP1,
        title: "TCP over a VXLAN overlay, 2 hosts, 1 stream",
        unit: "Gbit/s",
        higher_is_better: true,
    },
    Metric { key: "frames_rx_mpps", title: "64-byte frames received", unit: "Mpps", higher_is_better: true },
    Metric { key: "frames_sent_mpps", title: "64-byte frames sent", unit: "Mpps", higher_is_better: true },
    Metric { key: "rtt_p50_us", title: "UDP round trip p50", unit: "us", higher_is_better: false },
    Metric { key: "rtt_p99_us", title: "UDP round trip p99", unit: "us", higher_is_better: false },
    Metric { key: "rtt_lost", title: "UDP round trips lost", unit: "count", higher_is_better: false },
    Metric { key: "cpu_idle_pct", title: "vswitchd CPU, idle", unit: "% core", higher_is_better: false },
    Metric { key: "cpu_64b_pct", title: "vswitchd CPU, 64-byte load", unit: "% core", higher_is_better: false },
    Metric { key: "cpu_idle_after_pct", title: "vswitchd CPU, idle after", unit: "% core", higher_is_better: false },
];

/// The machine the bench ran on.
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim()))
            .unwrap_or("unknown CPU")
            .to_string();
        Machine { cores, cpu, kernel: kernel_release() }
    }
}

fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct; its fields are NUL-terminated.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown kernel".into();
    }
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    release.to_string_lossy().into_owned()
}

/// How the run was configured, printed above the table and kept in the JSON.
pub struct RunInfo {
    pub machine: Machine,
    pub config: Value,
    pub ovs: String,
    /// Lines printed under the table (and kept in the JSON), e.g. why a
    /// column is missing.
    pub notes: Vec<String>,
}

fn ratio(bridge: Option<&Figure>, vswitchd: Option<&Figure>) -> Option<f64> {
    match (bridge?, vswitchd?) {
        (Ok(b), Ok(v)) if *b > 0.0 => Some(v / b),
        _ => None,
    }
}

fn cell(f: Option<&Figure>) -> String {
    match f {
        None => "-".into(),
        Some(Ok(v)) if v.fract() == 0.0 && v.abs() < 1e9 => format!("{v:.0}"),
        Some(Ok(v)) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(Ok(v)) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(Ok(v)) => format!("{v:.3}"),
        Some(Err(_)) => "error".into(),
    }
}

/// Print the table, any errors under it, then the JSON line.
pub fn print(info: &RunInfo, bridge: &Figures, vswitchd: &Figures) {
    let m = &info.machine;
    println!();
    println!("machine: {} cores, {}, Linux {}", m.cores, m.cpu, m.kernel);
    println!("config:  {}", info.config);
    println!("ratio = vswitchd / kernel bridge (higher is better for rates, lower for times and CPU)");
    println!("NAT row: kernel = Linux bridge + routing + nftables masquerade; vswitchd = its uplink and NAT");
    println!();
    println!("{:<56} | {:>13} | {:>10} | {:>6}", "metric", "kernel bridge", "vswitchd", "ratio");
    println!("{:-<56}-|-{:->13}-|-{:->10}-|-{:->6}", "", "", "", "");
    for metric in METRICS {
        let (b, v) = (bridge.get(metric.key), vswitchd.get(metric.key));
        let better = if metric.higher_is_better { "higher" } else { "lower" };
        let name = format!("{} ({}, {better} better)", metric.title, metric.unit);
        let r = ratio(b, v).map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into());
        println!("{name:<56} | {:>13} | {:>10} | {r:>6}", cell(b), cell(v));
    }
    for (label, figures) in [("kernel bridge", bridge), ("vswitchd", vswitchd)] {
        for (key, f) in figures {
            if let Err(e) = f {
                println!("error: {label} {key}: {e}");
            }
        }
    }
    println!("{}", info.ovs);
    for note in &info.notes {
        println!("{note}");
    }
    println!();
    println!("{}", json_line(info, bridge, vswitchd));
}

fn json_line(info: &RunInfo, bridge: &Figures, vswitchd: &Figures) -> String {
    let value = |f: Option<&Figure>| match f {
        Some(Ok(v)) => json!(v),
        Some(Err(e)) => json!({ "error": e }),
        None => Value::Null,
    };
    let mut metrics = serde_json::Map::new();
    for metric in METRICS {
        let (b, v) = (bridge.get(metric.key), vswitchd.get(metric.key));
        let entry = json!({
            "title": metric.title,
            "unit": metric.unit,
            "better": if metric.higher_is_better { "higher" } else { "lower" },
            "kernel_bridge": value(b),
            "vswitchd": value(v),
            "ratio": ratio(b, v),
        });
        metrics.insert(metric.key.to_string(), entry);
    }
    let m = &info.machine;
    json!({
        "bench": "vswitch-lab",
        "machine": { "cores": m.cores, "cpu": m.cpu, "kernel": m.kernel },
        "config": info.config,
        "metrics": metrics,
        "ovs": info.ovs,
        "notes": info.notes,
    })
    .to_string()
}
