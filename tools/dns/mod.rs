//! The embedded DNS server of user-defined networks: containers resolve each
//! other by name, and other names are forwarded upstream.
//!
//! It works on ordinary sockets handed to it (the daemon binds them to each
//! network's gateway port 53) and knows nothing of namespaces, TAPs or the
//! switch. The pieces:
//!
//! - [`names`]: the name table (endpoints, aliases, scoping, round-robin, PTR);
//! - [`resolver`]: what to answer to one query ([`Resolver`]);
//! - [`upstream`]: upstream servers and forwarding ([`Upstreams`]);
//! - [`server`]: the UDP and TCP serving loops of one network ([`DnsServer`]);
//! - [`resolvconf`]: the host's resolv.conf read, containers' written;
//! - [`service`]: the daemon's side: the service namespace, the TAPs that
//!   bring queries to the sockets, the name table and resolv.conf of the state;
//! - [`wire`]: the raw header looks that come before parsing.
//!
//! Use, in the daemon:
//!
//! ```no_run
//! use std::net::{TcpListener, UdpSocket};
//! use std::sync::Arc;
//! use vswitch::dns::{DnsServer, Endpoint, NameTable, NetnsEtc, ResolvConf, Resolver, Upstreams};
//!
//! let resolver = Arc::new(Resolver::new(Upstreams::from_host(), vswitch::dns::DEFAULT_TIMEOUT));
//! // On every add-port, del-port or alias change: the whole table again.
//! resolver.set_names(NameTable::new([Endpoint {
//!     network: "lab".into(),
//!     name: "web".into(),
//!     aliases: vec!["www".into()],
//!     ipv4: "10.77.0.2".parse().unwrap(),
//!     ipv6: None,
//!     key: "web".into(),
//! }]));
//! // Per network, on sockets bound to GATEWAY:53 (wherever they live):
//! let udp = UdpSocket::bind("10.77.0.1:53").unwrap();
//! let tcp = TcpListener::bind("10.77.0.1:53").unwrap();
//! let server = DnsServer::start(resolver.clone(), "lab", Some(udp), Some(tcp)).unwrap();
//! // Per endpoint: its resolv.conf, pointing at its network's gateway.
//! let text = ResolvConf::host().for_container("10.77.0.1".parse().unwrap());
//! NetnsEtc::default().write_resolv_conf("web", &text).unwrap();
//! // ... and when the network or the namespace goes:
//! server.stop();
//! NetnsEtc::default().remove_resolv_conf("web").unwrap();
//! ```

pub mod names;
pub mod resolvconf;
pub mod resolver;
pub mod server;
pub mod service;
pub mod upstream;
pub mod wire;

pub use names::{Endpoint, NameTable};
pub use resolvconf::{NetnsEtc, ResolvConf};
pub use resolver::{Outcome, Resolver, DEFAULT_TIMEOUT, LOCAL_TTL};
pub use server::DnsServer;
pub use upstream::{Transport, Upstreams};
