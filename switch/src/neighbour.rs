//! A neighbour on the uplink's segment whose MAC the switch learns at run
//! time — the IPv4 and IPv6 next hops, the VTEPs of overlay networks: read
//! by every worker without a lock, and asked for (ARP or a neighbour
//! solicitation) at most once a second while unknown.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use proto::MacAddr;

/// Seconds between two requests for a MAC that is still unknown.
const RETRY_SECS: u32 = 1;

pub struct Neighbour {
    /// The MAC in the low six bytes; 0: unknown.
    mac: AtomicU64,
    /// Seconds since `created` of the last request, plus one (0: none yet).
    last_ask: AtomicU32,
    created: Instant,
}

impl Default for Neighbour {
    fn default() -> Neighbour {
        Neighbour { mac: AtomicU64::new(0), last_ask: AtomicU32::new(0), created: Instant::now() }
    }
}

impl Neighbour {
    pub fn mac(&self) -> Option<MacAddr> {
        match self.mac.load(Relaxed) {
            0 => None,
            v => Some(MacAddr(v.to_be_bytes()[2..].try_into().expect("6 bytes"))),
        }
    }

    /// Remember `mac` (a group or zero MAC is ignored). Stores only on
    /// change: senders read this line for every frame.
    pub fn learn(&self, mac: MacAddr) {
        if !mac.is_multicast() && mac != MacAddr::ZERO && self.mac() != Some(mac) {
            let mut v = [0u8; 8];
            v[2..].copy_from_slice(&mac.0);
            self.mac.store(u64::from_be_bytes(v), Relaxed);
        }
    }

    /// Whether to ask for the MAC now: it is unknown and no request went
    /// out in the last second. Workers racing here may both ask: harmless.
    pub fn should_ask(&self) -> bool {
        if self.mac().is_some() {
            return false;
        }
        let now = self.created.elapsed().as_secs() as u32 + 1;
        let last = self.last_ask.load(Relaxed);
        if last != 0 && now.saturating_sub(last) < RETRY_SECS {
            return false;
        }
        self.last_ask.store(now, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_once_while_unknown_and_never_once_known() {
        let n = Neighbour::default();
        assert!(n.should_ask());
        assert!(!n.should_ask(), "not again within the second");
        n.learn(MacAddr::BROADCAST);
        assert_eq!(n.mac(), None, "a group MAC is no neighbour's");
        n.learn(MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(n.mac(), Some(MacAddr([2, 0, 0, 0, 0, 1])));
        assert!(!n.should_ask());
    }
}
