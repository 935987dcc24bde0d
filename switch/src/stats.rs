//! Counters kept by the data path, and the report `vsctl stats` prints.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Per-port traffic counters; rx is written by the port's worker, tx by any.
#[derive(Default)]
pub struct PortCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rx_drops: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_drops: AtomicU64,
}

impl PortCounters {
    #[inline]
    pub fn received(&self, bytes: usize) {
        self.rx_packets.fetch_add(1, Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    #[inline]
    pub fn sent(&self, bytes: usize) {
        self.tx_packets.fetch_add(1, Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Relaxed);
    }
}

/// Why the switch dropped a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Truncated headers, lengths that lie, a multicast source MAC...
    Malformed,
    /// An EtherType the switch does not carry (802.3 LLC, LLDP...).
    UnsupportedEthertype,
    /// Addressed to the gateway but for a destination beyond the network.
    NoRoute,
    /// Unicast to a MAC that lives behind the port it came in on.
    SamePort,
    /// The output port refused the frame.
    TxError,
    /// A user filter rule said drop.
    Rule,
    /// Between two containers of a network with inter-container
    /// communication off.
    Icc,
    /// Came in on the uplink but is neither for the switch's address nor a
    /// reply to a tracked flow (the segment's other traffic).
    NotForUs,
}

/// Switch-wide drop counters, one per reason.
#[derive(Default)]
pub struct DropCounters {
    malformed: AtomicU64,
    unsupported_ethertype: AtomicU64,
    no_route: AtomicU64,
    same_port: AtomicU64,
    tx_error: AtomicU64,
    not_for_us: AtomicU64,
    icc: AtomicU64,
    rule: AtomicU64,
}

impl DropCounters {
    #[inline]
    pub fn count(&self, reason: DropReason) {
        let counter = match reason {
            DropReason::Malformed => &self.malformed,
            DropReason::UnsupportedEthertype => &self.unsupported_ethertype,
            DropReason::NoRoute => &self.no_route,
            DropReason::SamePort => &self.same_port,
            DropReason::TxError => &self.tx_error,
            DropReason::NotForUs => &self.not_for_us,
            DropReason::Icc => &self.icc,
            DropReason::Rule => &self.rule,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn report(&self) -> DropReport {
        DropReport {
            malformed: self.malformed.load(Relaxed),
            unsupported_ethertype: self.unsupported_ethertype.load(Relaxed),
            no_route: self.no_route.load(Relaxed),
            same_port: self.same_port.load(Relaxed),
            tx_error: self.tx_error.load(Relaxed),
            not_for_us: self.not_for_us.load(Relaxed),
            icc: self.icc.load(Relaxed),
            rule: self.rule.load(Relaxed),
        }
    }
}

/// Per-worker counters: frames handled and time spent handling them.
#[derive(Default)]
pub struct WorkerCounters {
    pub packets: AtomicU64,
    pub busy_ns: AtomicU64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct DropReport {
    pub malformed: u64,
    pub unsupported_ethertype: u64,
    pub no_route: u64,
    pub same_port: u64,
    pub tx_error: u64,
    #[serde(default)]
    pub not_for_us: u64,
    #[serde(default)]
    pub icc: u64,
    #[serde(default)]
    pub rule: u64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PortReport {
    pub id: u32,
    pub name: String,
    pub network: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_drops: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_drops: u64,
}

impl PortReport {
    pub fn new(id: u32, name: String, network: String, c: &PortCounters) -> PortReport {
        PortReport {
            id,
            name,
            network,
            rx_packets: c.rx_packets.load(Relaxed),
            rx_bytes: c.rx_bytes.load(Relaxed),
            rx_drops: c.rx_drops.load(Relaxed),
            tx_packets: c.tx_packets.load(Relaxed),
            tx_bytes: c.tx_bytes.load(Relaxed),
            tx_drops: c.tx_drops.load(Relaxed),
        }
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WorkerReport {
    pub index: usize,
    pub ports: usize,
    pub packets: u64,
    /// Share of wall time since start spent handling frames, in percent.
    pub busy_percent: f64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    pub ports: Vec<PortReport>,
    pub workers: Vec<WorkerReport>,
    pub drops: DropReport,
    #[serde(default)]
    pub conntrack: ConntrackReport,
}

/// Size of the connection table and what its bound cost.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ConntrackReport {
    pub entries: usize,
    /// Entries evicted to make room (the table was full).
    pub evictions: u64,
}
