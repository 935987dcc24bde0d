//! The engine of vswitch: networks and their address management (model, IPAM),
//! the forwarding tables (FDB), the pipeline stages a frame goes through, and
//! the per-core workers that run them over the ports.

pub mod conntrack;
pub mod datapath;
pub mod fdb;
pub mod filter;
pub mod ipam;
pub mod ipam6;
pub mod model;
pub mod nat;
pub mod neighbour;
pub mod overlay;
pub mod pipeline;
mod published6;
pub mod ratelimit;
pub mod route6;
pub mod service;
pub mod stats;
mod worker;

pub use datapath::{Ipv6Spec, NetworkSpec, PortSpec, RemoteEndpoint, Switch, UplinkSpec, UplinkSpec6};
