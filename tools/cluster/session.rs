//! The store thread: keeps this host's lease alive, keeps its records in
//! the store, and follows the store with one watch, publishing a fresh
//! [`View`] after every change. When the store is gone it retries every
//! second; the daemon forwards on with the last view meanwhile, and gets a
//! full one again when the store is back.

use super::records::{Revision, View, PREFIX};
use super::txn;
use super::{connect, timed, Shared};
use etcdv3client::pb;
use etcdv3client::EtcdClient;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::{interval, sleep, MissedTickBehavior};

/// How often the thread looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(200);
const RETRY: Duration = Duration::from_secs(1);

/// The thread's body: sessions until stopped.
pub(super) fn run(shared: &Shared) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return log::error!("cluster store: no runtime: {e}"),
    };
    rt.block_on(async {
        let mut down_since_logged = false;
        while !shared.stopping() {
            match session(shared).await {
                Ok(()) => return,
                Err(e) => {
                    let was_up = shared.connected.swap(false, Ordering::SeqCst);
                    if was_up || !down_since_logged {
                        log::warn!(
                            "cluster store {}: {e}; forwarding on with what is known, retrying every {}s",
                            shared.config.store,
                            RETRY.as_secs()
                        );
                        down_since_logged = true;
                    }
                }
            }
            sleep(RETRY).await;
        }
    });
}

/// One connection to the store, until it fails (Err) or the daemon stops (Ok).
async fn session(shared: &Shared) -> Result<(), String> {
    let mut client = connect(&shared.config).await?;
    let (lease, old) = ensure_lease(&mut client, shared).await?;
    republish(&mut client, shared, lease).await?;
    if let Some(old) = old {
        // Whatever is still under the old lease is no record of ours.
        let _ = timed("lease revoke", client.revoke_lease(old)).await;
    }
    let (mut mirror, revision) = read_all(&mut client, shared).await?;
    shared.publish_view(View::parse(revision, mirror.iter().map(|(k, v)| (k.as_str(), v.as_slice()))));
    let mut watcher = watch_from(&mut client, revision.number + 1).await?;
    let mut keepalive = timed("lease keep-alive", client.lease.keep_alive(lease)).await?;
    shared.connected.store(true, Ordering::SeqCst);
    log::info!("cluster store {}: connected at revision {}, lease {lease:x}", shared.config.store, revision.number);
    let mut renew = interval(shared.config.ttl / 3);
    renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stop_check = interval(STOP_CHECK);
    loop {
        tokio::select! {
            message = watcher.message() => {
                let response = message.map_err(|e| format!("watch: {e}"))?.ok_or("the watch was closed")?;
                if response.canceled || response.compact_revision > 0 {
                    return Err(format!("the watch was cancelled ({})", response.cancel_reason));
                }
                for event in &response.events {
                    apply(&mut mirror, event);
                }
                let revision = Revision::of(shared.epoch.load(Ordering::SeqCst), response.header.as_ref());
                shared.seen.fetch_max(revision.number, Ordering::SeqCst);
                if !response.events.is_empty() {
                    shared.publish_view(View::parse(revision, mirror.iter().map(|(k, v)| (k.as_str(), v.as_slice()))));
                }
            }
            _ = renew.tick() => {
                timed("lease keep-alive", keepalive.keep_alive()).await?;
                let answer = timed("lease keep-alive", keepalive.message()).await?.ok_or("keep-alive stream closed")?;
                if answer.ttl <= 0 {
                    shared.lease.store(0, Ordering::SeqCst);
                    return Err(format!("lease {lease:x} expired"));
                }
            }
            _ = stop_check.tick() => {
                if shared.stopping() {
                    return Ok(());
                }
            }
        }
    }
}

/// The host's lease: the one it has if the store still knows it, else a
/// new one (whose records `republish` puts back), with the one it replaces.
async fn ensure_lease(client: &mut EtcdClient, shared: &Shared) -> Result<(i64, Option<i64>), String> {
    let known = shared.lease.load(Ordering::SeqCst);
    if known != 0 {
        let info = timed("lease lookup", client.get_lease_info(known, false)).await;
        if info.is_ok_and(|i| i.ttl > 0) {
            return Ok((known, None));
        }
    }
    let ttl = shared.config.ttl.as_secs() as i64;
    let granted = timed("lease grant", client.grant_lease(ttl)).await?;
    // Under the lock: a claim in flight finishes under the old lease and
    // is then moved with the rest.
    let _owned = shared.owned.lock().await;
    shared.lease.store(granted.id, Ordering::SeqCst);
    Ok((granted.id, (known != 0).then_some(known)))
}

/// Put this host's records back under `lease`, endpoint by endpoint: where
/// its address claims are still its own, or free again (its lease expired
/// while the store was away). An endpoint whose address another host took
/// meanwhile is not published again; it is logged and left to them.
/// Each endpoint is written under the lock of the records, so a release
/// of it by the daemon comes wholly before or after.
async fn republish(client: &mut EtcdClient, shared: &Shared, lease: i64) -> Result<(), String> {
    let ids: Vec<String> = shared.owned.lock().await.keys().cloned().collect();
    for id in ids {
        let mut owned = shared.owned.lock().await;
        let Some(records) = owned.get(&id).cloned() else { continue }; // released meanwhile
        let refreshed = timed("write", client.kv.txn(txn::republish(&records, lease, true))).await?;
        if refreshed.succeeded {
            continue;
        }
        let reclaimed = timed("write", client.kv.txn(txn::republish(&records, lease, false))).await?;
        if !reclaimed.succeeded {
            let addresses: Vec<&str> = txn::claims(&records).map(|(key, _)| key.as_str()).collect();
            log::error!(
                "cluster store: endpoint {id}: {} taken by another host while this one was away; not published",
                addresses.join(", ")
            );
            let _ = timed("write", client.kv.txn(txn::withdraw(&records))).await;
            owned.remove(&id);
        }
    }
    Ok(())
}

/// Every key under the prefix, and the revision they are at: in a new
/// epoch when the store is back at an earlier revision than seen before.
async fn read_all(client: &mut EtcdClient, shared: &Shared) -> Result<(BTreeMap<String, Vec<u8>>, Revision), String> {
    let response = timed("read", client.kv.do_range(PREFIX).with_prefix()).await?;
    let number = response.header.as_ref().map_or(0, |h| h.revision);
    if number < shared.seen.swap(number, Ordering::SeqCst) {
        let epoch = shared.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        log::warn!("cluster store {}: back at revision {number}, lost data: epoch {epoch}", shared.config.store);
    }
    let revision = Revision::of(shared.epoch.load(Ordering::SeqCst), response.header.as_ref());
    let mirror = response.kvs.into_iter().map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.value)).collect();
    Ok((mirror, revision))
}

async fn watch_from(client: &mut EtcdClient, revision: i64) -> Result<etcdv3client::Watcher, String> {
    let mut watch = client.watch.do_watch(PREFIX).with_prefix();
    watch.request.start_revision = revision;
    timed("watch", watch).await
}

fn apply(mirror: &mut BTreeMap<String, Vec<u8>>, event: &pb::Event) {
    let Some(kv) = &event.kv else { return };
    let key = String::from_utf8_lossy(&kv.key).into_owned();
    if event.r#type == pb::event::EventType::Delete as i32 {
        mirror.remove(&key);
    } else {
        mirror.insert(key, kv.value.clone());
    }
}
