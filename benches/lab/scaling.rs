//! Scaling mode (LAB_SCALING=1,2,4,8): the 64-byte forwarding rate through
//! vswitchd for each worker count, instead of the normal table.
//!
//! For each W: a fresh vswitchd with `--workers W` and the two-namespace
//! topology V; LAB_GEN_THREADS generator threads (default W), each sending
//! one flow from its own UDP source port, chosen by probing (`pick_ports`)
//! so that the flows hash onto different TAP queues and so reach different
//! workers; frames received per second at B over LAB_SECS. vswitchd pins worker i to CPU i, so the
//! generators are pinned to the highest allowed CPUs when workers and
//! generators fit the machine together, and left unpinned (and the row
//! flagged) when they do not. Everything is removed between worker counts.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::report::Machine;
use crate::topo::{self, Cleanup};
use crate::traffic::{self, Generators};

/// First candidate source port; candidates are SRC_PORT_BASE, +1, ...
const SRC_PORT_BASE: u16 = 40000;
/// Candidate source ports probed at most, per worker count.
const MAX_PROBES: usize = 64;
/// How long each candidate port is probed.
const PROBE: Duration = Duration::from_millis(200);
/// Efficiency (speed-up / W) the issue asks for.
const TARGET_EFFICIENCY: f64 = 0.8;
/// Received / sent above this: the generators may bound the row, not the switch.
const GENERATOR_BOUND: f64 = 0.95;

/// The worker counts of LAB_SCALING, if set (comma- or space-separated).
pub fn worker_counts() -> Option<Vec<usize>> {
    let v = std::env::var("LAB_SCALING").ok()?;
    let counts: Vec<usize> = v
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => panic!("LAB_SCALING={v:?}: {s:?} is not a positive whole number"),
        })
        .collect();
    if counts.is_empty() {
        panic!("LAB_SCALING={v:?} names no worker count (e.g. LAB_SCALING=1,2,4,8)");
    }
    Some(counts)
}

/// One worker count's measurement.
struct Row {
    workers: usize,
    gen_threads: usize,
    /// CPUs the generators were pinned to (empty: unpinned).
    gen_cpus: Vec<usize>,
    result: Result<traffic::FrameRate, String>,
    /// CPU % of one core of each worker thread during the test (warm-up included).
    worker_cpu: Vec<f64>,
    /// Per generator thread, the worker its flow reached in the probe.
    flow_workers: Vec<Option<usize>>,
    notes: Vec<String>,
}

impl Row {
    fn meaningful(&self, cores: usize) -> bool {
        self.workers <= cores
    }
}

pub fn run(counts: &[usize], secs: Duration, gen_override: Option<usize>) {
    let machine = Machine::detect();
    let allowed = allowed_cpus();
    eprintln!(
        "lab scaling: workers {counts:?}, {} s each, {} cores (CPUs {})",
        secs.as_secs(),
        machine.cores,
        cpu_list(&allowed)
    );
    let mut rows = Vec::new();
    for &workers in counts {
        let gen_threads = gen_override.unwrap_or(workers).max(1);
        rows.push(measure(workers, gen_threads, &allowed, machine.cores, secs));
    }
    print(&machine, &allowed, secs, &rows);
}

fn measure(workers: usize, gen_threads: usize, allowed: &[usize], cores: usize, secs: Duration) -> Row {
    eprintln!("lab scaling: vswitchd, {workers} workers, {gen_threads} generator threads");
    let mut notes = Vec::new();
    if workers > cores {
        notes.push(format!("{workers} workers exceed the machine's {cores} cores: not meaningful"));
    }
    // vswitchd pins worker i to CPU i % cores; keep the generators off those.
    let free: Vec<usize> = allowed.iter().copied().filter(|&c| c >= workers).collect();
    let gen_cpus: Vec<usize> = if gen_threads <= free.len() {
        free.iter().rev().take(gen_threads).copied().collect()
    } else {
        notes.push(format!(
            "{workers} workers + {gen_threads} generators exceed {cores} cores: generators unpinned, sharing the workers' cores"
        ));
        Vec::new()
    };
    let mut cleanup = Cleanup::default();
    let (pair, daemon) = topo::vswitchd(&mut cleanup, workers);
    let mut spread = Vec::new();
    let result = traffic::reachable(&pair, Duration::from_secs(5))
        .map_err(|e| format!("{} → {} unreachable: {e}", pair.a_ip, pair.b_ip))
        .map(|()| {
            let (ports, workers_hit) = pick_ports(&pair, daemon.pid, workers, gen_threads, &mut notes);
            spread = workers_hit;
            Generators { threads: gen_threads, src_ports: ports, cpus: gen_cpus.clone() }
        });
    let before = worker_ticks(daemon.pid);
    let start = Instant::now();
    let result = result.and_then(|gen| traffic::frame_rate_with(&pair, &gen, secs).map_err(|e| e.to_string()));
    let elapsed = start.elapsed();
    let after = worker_ticks(daemon.pid);
    let worker_cpu = before
        .iter()
        .map(|(name, t0)| {
            let t1 = after.iter().find(|(n, _)| n == name).map_or(*t0, |(_, t)| *t);
            traffic::ticks_to_percent(t1.saturating_sub(*t0), elapsed)
        })
        .collect();
    match &result {
        Ok(r) => eprintln!(
            "lab scaling: {workers} workers: received {:.3} Mpps, sent {:.3} Mpps",
            r.received_pps / 1e6,
            r.sent_pps / 1e6
        ),
        Err(e) => {
            eprintln!("lab scaling: {workers} workers: error: {e}");
            eprintln!("---- vswitchd log (tail) ----\n{}\n---- end ----", daemon.log_tail(3000));
        }
    }
    if let Ok(r) = &result {
        if r.sent_pps > 0.0 && r.received_pps / r.sent_pps > GENERATOR_BOUND {
            notes.push(format!(
                "received ≥ {:.0}% of sent: the generators may bound this row, not the switch (raise LAB_GEN_THREADS)",
                GENERATOR_BOUND * 100.0
            ));
        }
    }
    drop(cleanup); // stop vswitchd, delete namespaces and scratch dir before the next W
    Row { workers, gen_threads, gen_cpus, result, worker_cpu, flow_workers: spread, notes }
}

/// Source ports for the generator threads such that their flows reach as
/// many different workers as possible: the TAP picks a queue (so a worker)
/// by a flow hash whose key is random per boot, so each candidate port is
/// probed with a short burst and attributed to the worker whose CPU time
/// rose most. Thread i wants worker i % W. Returns the ports and, per
/// thread, the worker its flow reached (None: not probed or unknown).
fn pick_ports(
    pair: &topo::Pair,
    pid: u32,
    workers: usize,
    threads: usize,
    notes: &mut Vec<String>,
) -> (Vec<u16>, Vec<Option<usize>>) {
    let sequential = || (0..threads).map(|i| SRC_PORT_BASE + i as u16).collect::<Vec<_>>();
    if workers == 1 {
        return (sequential(), vec![Some(0); threads]);
    }
    // Candidate ports by the worker they reach.
    let mut by_worker: Vec<Vec<u16>> = vec![Vec::new(); workers];
    let wanted = |w: usize| (threads + workers - 1 - w) / workers; // threads i with i % W == w
    for k in 0..MAX_PROBES {
        if (0..workers).all(|w| by_worker[w].len() >= wanted(w)) {
            break;
        }
        let port = SRC_PORT_BASE + k as u16;
        let t0 = worker_ticks(pid);
        if let Err(e) = traffic::burst(pair, port, PROBE) {
            notes.push(format!("probing source port {port}: {e}; ports not chosen by worker"));
            return (sequential(), vec![None; threads]);
        }
        let t1 = worker_ticks(pid);
        let busiest = t1
            .iter()
            .filter_map(|(name, t)| {
                let w: usize = name.strip_prefix("vsw-worker")?.parse().ok()?;
                let before = t0.iter().find(|(n, _)| n == name).map_or(*t, |(_, t)| *t);
                Some((t.saturating_sub(before), w))
            })
            .max();
        match busiest {
            Some((ticks, w)) if ticks > 0 && w < workers => by_worker[w].push(port),
            _ => {}
        }
    }
    let (mut ports, mut reached) = (Vec::new(), Vec::new());
    let mut next = vec![0usize; workers];
    let mut spare = SRC_PORT_BASE + MAX_PROBES as u16;
    for i in 0..threads {
        let w = i % workers;
        match by_worker[w].get(next[w]) {
            Some(&p) => {
                next[w] += 1;
                ports.push(p);
                reached.push(Some(w));
            }
            None => {
                ports.push(spare);
                spare += 1;
                reached.push(None);
            }
        }
    }
    let covered = by_worker.iter().filter(|v| !v.is_empty()).count();
    if covered < workers.min(threads) {
        notes.push(format!(
            "{MAX_PROBES} probed source ports reached only {covered} of {workers} workers: flows not spread evenly"
        ));
    }
    (ports, reached)
}

/// (thread name, utime + stime ticks) of each `vsw-worker*` thread of `pid`, sorted by name.
fn worker_ticks(pid: u32) -> Vec<(String, u64)> {
    let dir = format!("/proc/{pid}/task");
    let mut out: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let tid = e.file_name().to_string_lossy().into_owned();
            let comm = std::fs::read_to_string(format!("{dir}/{tid}/comm")).ok()?;
            let comm = comm.trim();
            if !comm.starts_with("vsw-worker") {
                return None;
            }
            let stat = std::fs::read_to_string(format!("{dir}/{tid}/stat")).ok()?;
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let u: u64 = fields.get(11)?.parse().ok()?;
            let s: u64 = fields.get(12)?.parse().ok()?;
            Some((comm.to_string(), u + s))
        })
        .collect();
    // vsw-worker10 after vsw-worker9.
    out.sort_by_key(|(n, _)| (n.len(), n.clone()));
    out
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) != 0 {
            let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            return (0..n).collect();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

fn cpu_list(cpus: &[usize]) -> String {
    if cpus.is_empty() {
        return "-".into();
    }
    let mut parts = Vec::new();
    let mut start = cpus[0];
    for w in cpus.windows(2) {
        if w[1] != w[0] + 1 {
            parts.push(range(start, w[0]));
            start = w[1];
        }
    }
    parts.push(range(start, *cpus.last().expect("non-empty")));
    parts.join(",")
}

fn range(a: usize, b: usize) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

fn print(machine: &Machine, allowed: &[usize], secs: Duration, rows: &[Row]) {
    let cores = machine.cores;
    // Baseline: the rate per worker of the first row that measured (W = 1
    // when the list starts with 1, as it should).
    let base = rows.iter().find_map(|r| r.result.as_ref().ok().map(|f| (r.workers, f.received_pps / r.workers as f64)));
    let speedup = |r: &Row| match (base, &r.result) {
        (Some((_, per_worker)), Ok(f)) if per_worker > 0.0 => Some(f.received_pps / per_worker),
        _ => None,
    };
    println!();
    println!(
        "machine: {} cores, {}, Linux {} (CPUs allowed: {})",
        cores,
        machine.cpu,
        machine.kernel,
        cpu_list(allowed)
    );
    println!(
        "scaling: 64-byte frames A → B through vswitchd, {} s per worker count; generator thread i sends one flow, \
         its UDP source port chosen by a {} ms probe so that it reaches worker i % W; workers pinned to CPUs \
         0..W-1 by vswitchd, generators to the highest free CPUs",
        secs.as_secs(),
        PROBE.as_millis()
    );
    if let Some((w, _)) = base {
        if w != 1 {
            println!("speed-up is against {w} workers' rate per worker (the list does not start at 1)");
        }
    }
    println!();
    println!(
        "{:>7} | {:>13} | {:>8} | {:>10} | {:>9} | {:>11} | {:>10} | worker CPU % (each)",
        "workers", "Mpps received", "speed-up", "efficiency", "Mpps sent", "gen threads", "gen CPUs"
    );
    println!(
        "{:->7}-|-{:->13}-|-{:->8}-|-{:->10}-|-{:->9}-|-{:->11}-|-{:->10}-|-{:-<20}",
        "", "", "", "", "", "", "", ""
    );
    let mut json_rows = Vec::new();
    for r in rows {
        let s = speedup(r);
        let eff = s.map(|s| s / r.workers as f64);
        let flag = if r.meaningful(cores) { "" } else { " *" };
        let (rx, tx) = match &r.result {
            Ok(f) => (format!("{:.3}", f.received_pps / 1e6), format!("{:.3}", f.sent_pps / 1e6)),
            Err(_) => ("error".into(), "error".into()),
        };
        let gen_cpus = if r.gen_cpus.is_empty() { "unpinned".into() } else { cpu_list(&sorted(&r.gen_cpus)) };
        let cpu: Vec<String> = r.worker_cpu.iter().map(|c| format!("{c:.0}")).collect();
        println!(
            "{:>7} | {:>13} | {:>8} | {:>10} | {:>9} | {:>11} | {:>10} | {}",
            format!("{}{flag}", r.workers),
            rx,
            s.map_or("-".into(), |s| format!("{s:.2}")),
            eff.map_or("-".into(), |e| format!("{e:.2}")),
            tx,
            r.gen_threads,
            gen_cpus,
            cpu.join("/")
        );
        json_rows.push(json!({
            "workers": r.workers,
            "rx_mpps": r.result.as_ref().ok().map(|f| f.received_pps / 1e6),
            "sent_mpps": r.result.as_ref().ok().map(|f| f.sent_pps / 1e6),
            "error": r.result.as_ref().err(),
            "speedup": s,
            "efficiency": eff,
            "generator_threads": r.gen_threads,
            "generator_cpus": r.gen_cpus,
            "worker_cpu_pct": r.worker_cpu,
            "flow_workers": r.flow_workers,
            "meaningful": r.meaningful(cores),
            "notes": r.notes,
        }));
    }
    if rows.iter().any(|r| !r.meaningful(cores)) {
        println!("* more workers than the machine's {cores} cores: the figure is not meaningful");
    }
    for r in rows {
        if let Err(e) = &r.result {
            println!("error: {} workers: {e}", r.workers);
        }
        for n in &r.notes {
            println!("note: {} workers: {n}", r.workers);
        }
    }
    let judged: Vec<f64> = rows
        .iter()
        .filter(|r| r.meaningful(cores) && r.gen_cpus.len() == r.gen_threads)
        .filter_map(|r| speedup(r).map(|s| s / r.workers as f64))
        .collect();
    let verdict: Value = if judged.len() < 2 {
        println!("target (efficiency ≥ {TARGET_EFFICIENCY}): not judged (fewer than 2 rows with free cores for workers and generators)");
        Value::Null
    } else {
        let met = judged.iter().all(|&e| e >= TARGET_EFFICIENCY);
        let min = judged.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "target (efficiency ≥ {TARGET_EFFICIENCY} on rows with free cores): {} (lowest {min:.2})",
            if met { "met" } else { "not met" }
        );
        json!(met)
    };
    println!(
        "note: the kernel spreads flows over TAP queues by flow hash; source ports are probed so each worker gets \
         its share, and the per-worker CPU column shows whether it did"
    );
    println!();
    let line = json!({
        "bench": "vswitch-lab-scaling",
        "machine": { "cores": cores, "cpu": machine.cpu, "kernel": machine.kernel, "cpus_allowed": allowed },
        "config": { "secs": secs.as_secs(), "src_port_base": SRC_PORT_BASE, "frame_bytes": 64 },
        "rows": json_rows,
        "target_efficiency": TARGET_EFFICIENCY,
        "target_met": verdict,
    });
    println!("{line}");
}

fn sorted(v: &[usize]) -> Vec<usize> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}
