//! The forwarding database of one network: which port a MAC lives behind.
//!
//! Workers read it without locks: the table is an immutable map published
//! through `ArcSwap`; each entry's port and last-seen time are atomics, so
//! refreshing a known MAC is a relaxed store. Only a MAC never seen before
//! takes the writer lock (copy, insert, publish), which is rare next to
//! the frames that follow it.

use arc_swap::{ArcSwap, Guard};
use parking_lot::Mutex;
use proto::MacAddr;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

pub type PortId = u32;

/// Learned MACs a network holds at most. Beyond, new MACs are not learned
/// (their frames flood until old ones age out): a container sending from
/// random source MACs must cost neither unbounded memory nor a table copy
/// per frame.
pub const MAX_LEARNED: usize = 16_384;
pub type Map = FxHashMap<MacAddr, Arc<Entry>>;

pub struct Entry {
    port: AtomicU32,
    /// Seconds on the switch's clock when last seen as a source.
    last_seen: AtomicU32,
    /// Endpoints' own MACs: never aged out, never moved by learning.
    is_static: bool,
}

impl Entry {
    pub fn port(&self) -> PortId {
        self.port.load(Relaxed)
    }
}

/// One row of `vsctl fdb-show`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub mac: String,
    pub port: PortId,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub age_secs: u32,
}

#[derive(Default)]
pub struct Fdb {
    map: ArcSwap<Map>,
    writer: Mutex<()>,
}

impl Fdb {
    /// The current table, to hold for the length of a batch.
    pub fn view(&self) -> Guard<Arc<Map>> {
        self.map.load()
    }

    /// Note that `mac` was seen as a source on `port` at `now`.
    #[inline]
    pub fn learn(&self, view: &Map, mac: MacAddr, port: PortId, now: u32) {
        match view.get(&mac) {
            Some(entry) => {
                // Stores only on change: a hot entry stays a shared cache line.
                if entry.last_seen.load(Relaxed) != now {
                    entry.last_seen.store(now, Relaxed);
                }
                if !entry.is_static && entry.port.load(Relaxed) != port {
                    entry.port.store(port, Relaxed);
                }
            }
            None => self.insert(mac, port, now, false),
        }
    }

    /// Pin an endpoint's MAC to its port.
    pub fn add_static(&self, mac: MacAddr, port: PortId) {
        self.insert(mac, port, 0, true);
    }

    fn insert(&self, mac: MacAddr, port: PortId, now: u32, is_static: bool) {
        if !is_static && self.map.load().len() >= MAX_LEARNED {
            return; // full: checked before the lock and the copy
        }
        let _w = self.writer.lock();
        let current = self.map.load();
        if !is_static && current.contains_key(&mac) {
            return; // another worker learned it meanwhile
        }
        let mut next = Map::clone(&current);
        let entry = Entry { port: AtomicU32::new(port), last_seen: AtomicU32::new(now), is_static };
        next.insert(mac, Arc::new(entry));
        self.map.store(Arc::new(next));
    }

    /// Forget every entry behind `port` (the port went away).
    pub fn remove_port(&self, port: PortId) {
        self.retain(|e| e.port() != port);
    }

    /// Forget these MACs where they are still behind these ports (remote
    /// endpoints that went, pinned to their tunnels): an entry that moved
    /// to another port since is someone else's now.
    pub fn forget(&self, pins: &[(MacAddr, PortId)]) {
        if pins.is_empty() {
            return;
        }
        let _w = self.writer.lock();
        let current = self.map.load();
        let next: Map =
            current.iter().filter(|(m, e)| !pins.contains(&(**m, e.port()))).map(|(m, e)| (*m, e.clone())).collect();
        self.map.store(Arc::new(next));
    }

    /// Forget learned entries not seen for `max_age` seconds; returns how many.
    pub fn age(&self, now: u32, max_age: u32) -> usize {
        self.retain(|e| e.is_static || now.saturating_sub(e.last_seen.load(Relaxed)) < max_age)
    }

    fn retain(&self, keep: impl Fn(&Entry) -> bool) -> usize {
        let _w = self.writer.lock();
        let current = self.map.load();
        if current.values().all(|e| keep(e)) {
            return 0;
        }
        let next: Map = current.iter().filter(|(_, e)| keep(e)).map(|(m, e)| (*m, e.clone())).collect();
        let removed = current.len() - next.len();
        self.map.store(Arc::new(next));
        removed
    }

    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, sorted by MAC, with ages relative to `now`.
    pub fn rows(&self, now: u32) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .map
            .load()
            .iter()
            .map(|(mac, e)| Row {
                mac: mac.to_string(),
                port: e.port(),
                kind: if e.is_static { "static" } else { "learned" },
                age_secs: if e.is_static { 0 } else { now.saturating_sub(e.last_seen.load(Relaxed)) },
            })
            .collect();
        rows.sort_by(|a, b| a.mac.cmp(&b.mac));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);

    #[test]
    fn learns_moves_and_ages() {
        let fdb = Fdb::default();
        fdb.learn(&fdb.view(), A, 1, 10);
        assert_eq!(fdb.view().get(&A).unwrap().port(), 1);
        fdb.learn(&fdb.view(), A, 2, 20);
        assert_eq!(fdb.view().get(&A).unwrap().port(), 2, "a MAC that moves is relearned");
        assert_eq!(fdb.age(319, 300), 0);
        assert_eq!(fdb.age(320, 300), 1);
        assert!(fdb.is_empty());
    }

    #[test]
    fn static_entries_neither_move_nor_age() {
        let fdb = Fdb::default();
        fdb.add_static(A, 1);
        fdb.learn(&fdb.view(), A, 2, 5);
        assert_eq!(fdb.view().get(&A).unwrap().port(), 1);
        assert_eq!(fdb.age(100_000, 300), 0);
        assert_eq!(fdb.rows(7)[0].kind, "static");
    }

    #[test]
    fn learning_stops_at_the_bound_but_endpoints_still_get_in() {
        let fdb = Fdb::default();
        for i in 0..(MAX_LEARNED + 100) as u32 {
            let b = i.to_be_bytes();
            fdb.learn(&fdb.view(), MacAddr([2, 1, b[0], b[1], b[2], b[3]]), 1, 0);
        }
        assert_eq!(fdb.len(), MAX_LEARNED);
        fdb.add_static(A, 2);
        assert_eq!(fdb.view().get(&A).unwrap().port(), 2);
    }

    #[test]
    fn removing_a_port_forgets_its_macs() {
        let fdb = Fdb::default();
        fdb.add_static(A, 1);
        fdb.learn(&fdb.view(), B, 2, 0);
        fdb.remove_port(1);
        let rows = fdb.rows(3);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].mac.as_str(), rows[0].port, rows[0].age_secs), ("02:00:00:00:00:0b", 2, 3));
    }
}
