//! The parts of vswitchd and vsctl that are not the data path: the control
//! protocol between them, the daemon's request handling and its state store.

pub mod cluster;
pub mod control;
pub mod daemon;
pub mod dns;
pub mod inspect;
pub mod publish;
pub mod server;
pub mod state;

/// Default place of the state directory (or VSWITCH_STATE_DIR).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vswitch";
/// Default control socket (or VSWITCH_SOCKET).
pub const DEFAULT_SOCKET: &str = "/run/vswitch/vswitchd.sock";
