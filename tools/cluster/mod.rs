//! The cluster store: overlay networks, their address management and their
//! endpoints shared by every vswitchd of a cluster through etcd
//! (`vswitchd --cluster-store etcd://HOST:PORT --cluster-advertise IP`).
//!
//! The daemon stays synchronous. Its writes (a network created or removed,
//! an endpoint's addresses claimed or released) are etcd transactions run
//! to completion on its own thread, each within a timeout, so a request is
//! refused with a clear error rather than half done when the store is away.
//! A store thread (`session`) keeps this host's lease alive and follows the
//! store with a watch; the daemon takes the newest [`View`] on its next tick
//! and programs the switch from it (`daemon::cluster`).

mod records;
mod session;
mod txn;

pub use records::{endpoint_records, EndpointRecord, Revision, View};

use etcdv3client::pb::{self, TxnRequest};
use etcdv3client::EtcdClient;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use switch::model::{Endpoint, Network};
use txn::{absent, delete, get, get_prefix, none_under, present, put};

/// How long one request to the store may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A host's lease by default: its endpoints disappear this long after it dies.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);
/// A day: a dead host's endpoints should not outlive it by more.
const MAX_TTL: Duration = Duration::from_secs(86_400);

/// `--cluster-store` and `--cluster-advertise`, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// As given, for messages.
    pub store: String,
    /// The etcd client URLs.
    pub endpoints: Vec<String>,
    /// This host's VTEP address: how the others reach its endpoints.
    pub advertise: Ipv4Addr,
    pub ttl: Duration,
}

impl ClusterConfig {
    /// `etcd://HOST:PORT[,HOST:PORT…]`; `advertise` is `IP[:PORT]` (Docker's
    /// form; vswitchd serves nothing on the port) and must be the uplink's
    /// address, which is the VTEP.
    pub fn parse(store: &str, advertise: Option<&str>, uplink_ip: Ipv4Addr, ttl: Duration) -> Result<Self, String> {
        let hosts = store
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("invalid --cluster-store {store:?}: want etcd://HOST:PORT[,HOST:PORT...]"))?;
        let endpoints = hosts
            .split(',')
            .map(|host| match host.rsplit_once(':') {
                Some((name, port)) if !name.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
                    Ok(format!("http://{host}"))
                }
                _ => Err(format!("invalid --cluster-store {store:?}: {host:?} is not HOST:PORT")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let advertise = match advertise {
            None => uplink_ip,
            Some(text) => {
                let ip = text.rsplit_once(':').map_or(text, |(ip, _)| ip);
                let ip: Ipv4Addr = ip.parse().map_err(|_| {
                    format!("invalid --cluster-advertise {text:?}: want this host's VTEP address, IP[:PORT]")
                })?;
                if ip != uplink_ip {
                    return Err(format!(
                        "--cluster-advertise {ip} is not the uplink's address {uplink_ip}, which is this host's VTEP"
                    ));
                }
                ip
            }
        };
        if ttl < Duration::from_secs(2) || ttl > MAX_TTL {
            return Err(format!("invalid --cluster-ttl {}: want 2 to {} seconds", ttl.as_secs(), MAX_TTL.as_secs()));
        }
        Ok(ClusterConfig { store: store.to_string(), endpoints, advertise, ttl })
    }
}

/// What the daemon's thread and the store thread share.
pub(crate) struct Shared {
    config: ClusterConfig,
    /// This host's lease, 0 while it has none.
    lease: AtomicI64,
    /// The store's history as the store thread last found it (see [`Revision`]).
    epoch: AtomicU64,
    /// The highest revision the store thread has seen.
    seen: AtomicI64,
    /// The records this host keeps in the store, put back under a new
    /// lease when the old one was lost. Held across each write of them, by
    /// either thread, so that a republish and a release never interleave.
    owned: tokio::sync::Mutex<Owned>,
    /// The newest view not yet taken by the daemon.
    view: Mutex<Option<View>>,
    connected: AtomicBool,
    stop: AtomicBool,
}

/// Endpoint id → its records (key, value), the address claims first.
pub type Owned = BTreeMap<String, Vec<(String, String)>>;

impl Shared {
    fn publish_view(&self, view: View) {
        *self.view.lock() = Some(view);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The lease this host's records go under; none while the store is away.
    fn current_lease(&self) -> Result<i64, String> {
        match self.lease.load(Ordering::SeqCst) {
            0 => Err(format!("cluster store {} is unreachable; nothing was changed", self.config.store)),
            lease => Ok(lease),
        }
    }

    /// The revision a transaction of the daemon's brought the store to, if
    /// it changed anything, in the history the store thread follows.
    fn changed_revision(&self, response: &pb::TxnResponse) -> Option<Revision> {
        txn::changed_revision(self.epoch.load(Ordering::SeqCst), response)
    }
}

/// Why an endpoint could not be claimed.
#[derive(Debug)]
pub enum ClaimError {
    /// Another endpoint holds one of its addresses: here are the network's
    /// endpoints as the store has them now, to choose again from.
    Taken(Vec<EndpointRecord>),
    /// The store did not answer, or refused.
    Store(String),
}

/// The daemon's handle on the cluster store.
pub struct Cluster {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Runtime,
    client: Option<EtcdClient>,
    thread: Option<JoinHandle<()>>,
}

impl Cluster {
    /// Start following the store; `owned` are the records of this host's
    /// endpoints (saved ones, at a restart), kept in the store from now on.
    pub fn start(config: ClusterConfig, owned: Owned) -> std::io::Result<Cluster> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let shared = Arc::new(Shared {
            config,
            lease: AtomicI64::new(0),
            epoch: AtomicU64::new(0),
            seen: AtomicI64::new(0),
            owned: tokio::sync::Mutex::new(owned),
            view: Mutex::new(None),
            connected: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let for_thread = shared.clone();
        let thread =
            std::thread::Builder::new().name("cluster-store".into()).spawn(move || session::run(&for_thread))?;
        Ok(Cluster { shared, runtime, client: None, thread: Some(thread) })
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.shared.config
    }

    /// The newest view of the store since the last call, if any.
    pub fn take_view(&self) -> Option<View> {
        self.shared.view.lock().take()
    }

    /// Write a new overlay network (and its VNI), unless the cluster has
    /// one of that name or that VNI already. Returns the store's revision
    /// when it changed (every write here does, when it succeeds).
    pub fn create_network(&mut self, net: &Network) -> Result<Option<Revision>, String> {
        let vni = net.overlay.as_ref().ok_or("not an overlay network")?.vni;
        let (name_key, vni_key) = (records::network_key(&net.name), records::vni_key(vni));
        let json = serde_json::to_string(net).map_err(|e| e.to_string())?;
        let txn = TxnRequest {
            compare: vec![absent(&name_key), absent(&vni_key)],
            success: vec![put(&name_key, &json, 0), put(&vni_key, &net.name, 0)],
            failure: vec![get(&name_key)],
        };
        let response = self.txn(txn)?;
        if !response.succeeded {
            return Err(if txn::range_values(&response).next().is_some() {
                format!("network {:?} already exists in the cluster", net.name)
            } else {
                format!("VNI {vni} is in use in the cluster")
            });
        }
        Ok(self.shared.changed_revision(&response))
    }

    /// Remove an overlay network from the cluster, unless some host still
    /// has endpoints on it.
    pub fn delete_network(&mut self, name: &str, vni: u32) -> Result<Option<Revision>, String> {
        let txn = TxnRequest {
            compare: vec![none_under(&records::endpoints_prefix(name))],
            success: vec![delete(&records::network_key(name)), delete(&records::vni_key(vni))],
            failure: vec![],
        };
        let response = self.txn(txn)?;
        if !response.succeeded {
            return Err(format!("network {name} has active ports on other hosts (del-port them there first)"));
        }
        Ok(self.shared.changed_revision(&response))
    }

    /// Claim the endpoint's addresses and publish it, all or nothing, under
    /// this host's lease, while its network exists in the store.
    pub fn claim_endpoint(&mut self, ep: &Endpoint) -> Result<Option<Revision>, ClaimError> {
        let shared = self.shared.clone();
        let mut owned = shared.owned.blocking_lock();
        let lease = shared.current_lease().map_err(ClaimError::Store)?;
        let records = records::endpoint_records(shared.config.advertise, ep);
        let network = records::network_key(&ep.network);
        let mut compare: Vec<_> = records.iter().map(|(key, _)| absent(key)).collect();
        compare.push(present(&network));
        let txn = TxnRequest {
            compare,
            success: records.iter().map(|(key, value)| put(key, value, lease)).collect(),
            failure: vec![get(&network), get_prefix(&records::endpoints_prefix(&ep.network))],
        };
        let response = match self.txn(txn) {
            Ok(response) => response,
            Err(e) => {
                // It may have been carried out all the same: take it back.
                let _ = self.txn(txn::withdraw(&records));
                return Err(ClaimError::Store(e));
            }
        };
        if !response.succeeded {
            let mut found = txn::range_values(&response).peekable();
            if found.peek().is_none_or(|(key, _)| *key != network) {
                return Err(ClaimError::Store(format!("network {} was removed from the cluster", ep.network)));
            }
            let current = found
                .filter_map(|(key, value)| View::parse(Revision::default(), [(key, value)]).endpoints.pop())
                .collect();
            return Err(ClaimError::Taken(current));
        }
        owned.insert(ep.id.clone(), records);
        Ok(self.shared.changed_revision(&response))
    }

    /// Publish the changed record of an endpoint this host has claimed.
    pub fn update_endpoint(&mut self, ep: &Endpoint) -> Result<Option<Revision>, String> {
        let shared = self.shared.clone();
        let mut owned = shared.owned.blocking_lock();
        let lease = shared.current_lease()?;
        let records = records::endpoint_records(shared.config.advertise, ep);
        let (key, value) = records.last().expect("the endpoint's own record comes last");
        let txn = TxnRequest { compare: vec![], success: vec![put(key, value, lease)], failure: vec![] };
        let response = self.txn(txn)?;
        owned.insert(ep.id.clone(), records);
        Ok(self.shared.changed_revision(&response))
    }

    /// Withdraw the endpoint and free its addresses everywhere (those it
    /// still holds: one another host took meanwhile stays theirs).
    pub fn release_endpoint(&mut self, ep: &Endpoint) -> Result<Option<Revision>, String> {
        let shared = self.shared.clone();
        let mut owned = shared.owned.blocking_lock();
        let records = records::endpoint_records(shared.config.advertise, ep);
        let response = self.txn(txn::withdraw(&records))?;
        owned.remove(&ep.id);
        Ok(self.shared.changed_revision(&response))
    }

    /// Run one transaction on this thread, within the timeout. A failed
    /// connection is dropped, to be made again by the next request.
    fn txn(&mut self, txn: TxnRequest) -> Result<pb::TxnResponse, String> {
        let unreachable = |e: String| format!("cluster store {}: {e}; nothing was changed", self.shared.config.store);
        if self.client.is_none() {
            let connected = self.runtime.block_on(connect(&self.shared.config)).map_err(unreachable)?;
            self.client = Some(connected);
        }
        let mut client = self.client.clone().expect("connected above");
        let result = self.runtime.block_on(timed("transaction", client.kv.txn(txn)));
        if result.is_err() {
            self.client = None;
        }
        result.map_err(unreachable)
    }

    /// Stop following the store. The lease is left to expire, so that
    /// this host's endpoints stay while it restarts.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A client of the store's endpoints, connected within the timeout.
async fn connect(config: &ClusterConfig) -> Result<EtcdClient, String> {
    timed("connect", EtcdClient::new(config.endpoints.clone(), None)).await
}

/// `what` within the request timeout, its error said in words.
async fn timed<T, E: std::fmt::Display>(
    what: &str,
    request: impl std::future::IntoFuture<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request.into_future()).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer in {}s", REQUEST_TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPLINK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    #[test]
    fn store_and_advertise_flags_are_checked() {
        let c = ClusterConfig::parse("etcd://10.0.0.1:2379,etcd2:2379", None, UPLINK, DEFAULT_TTL).unwrap();
        assert_eq!(c.endpoints, vec!["http://10.0.0.1:2379", "http://etcd2:2379"]);
        assert_eq!(c.advertise, UPLINK);
        let c = ClusterConfig::parse("etcd://h:1", Some("192.0.2.1:2376"), UPLINK, DEFAULT_TTL).unwrap();
        assert_eq!(c.advertise, UPLINK);
        for (store, advertise, words) in [
            ("consul://h:1", None, "etcd://"),
            ("etcd://h", None, "HOST:PORT"),
            ("etcd://h:0", None, "HOST:PORT"),
            ("etcd://:1", None, "HOST:PORT"),
            ("etcd://h:1", Some("nonsense"), "--cluster-advertise"),
            ("etcd://h:1", Some("192.0.2.9"), "VTEP"),
        ] {
            let e = ClusterConfig::parse(store, advertise, UPLINK, DEFAULT_TTL).unwrap_err();
            assert!(e.contains(words), "{store} {advertise:?}: {e}");
        }
        for secs in [1, 86_401, u64::MAX] {
            let e = ClusterConfig::parse("etcd://h:1", None, UPLINK, Duration::from_secs(secs)).unwrap_err();
            assert!(e.contains("--cluster-ttl"), "{e}");
        }
    }
}
