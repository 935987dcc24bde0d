//! The daemon's persisted desired state: networks and endpoints, written
//! atomically (temp file, fsync, rename, fsync dir) so a crash at any point
//! leaves either the old state or the new one.

use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use switch::model::{Endpoint, Network, UserRule};

const STATE_FILE: &str = "state.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub networks: Vec<Network>,
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub rules: Vec<UserRule>,
}

impl State {
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    pub fn endpoints_of<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints.iter().filter(move |e| e.network == network)
    }

    pub fn endpoints_in_netns<'a>(&'a self, netns: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints.iter().filter(move |e| e.netns == netns)
    }
}

/// Where the state lives on disk.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> io::Result<Store> {
        fs::create_dir_all(dir).map_err(|e| io::Error::new(e.kind(), format!("state dir {}: {e}", dir.display())))?;
        Ok(Store { dir: dir.to_path_buf() })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The saved state, or an empty one on first start.
    pub fn load(&self) -> io::Result<State> {
        match fs::read(self.path()) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", self.path().display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, state: &State) -> io::Result<()> {
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(state)?)?;
        file.sync_all()?;
        fs::rename(&tmp, self.path())?;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads() {
        let dir = std::env::temp_dir().join(format!("vsw-state-test-{}", std::process::id()));
        let store = Store::new(&dir).unwrap();
        assert_eq!(store.load().unwrap(), State::default());
        let subnet = "10.0.0.0/24".parse().unwrap();
        let net = Network {
            id: "a".repeat(64),
            name: "n".into(),
            created: "2026-01-01T00:00:00Z".into(),
            subnet,
            gateway: "10.0.0.1".parse().unwrap(),
            ip_range: None,
            mtu: 1500,
            index: 1,
            internal: false,
            icc: true,
            masquerade: true,
            ipv6: Some(switch::model::Ipv6Config {
                subnet: "2001:db8::/64".parse().unwrap(),
                gateway: "2001:db8::1".parse().unwrap(),
            }),
            overlay: None,
        };
        let state = State { networks: vec![net], endpoints: vec![], rules: vec![] };
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        assert!(!dir.join("state.json.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
