//! The name table: who is called what on which network, and which of those
//! names a given asker may see.
//!
//! A table is built whole from the daemon's endpoints and never changed; the
//! daemon builds a new one on every add-port, del-port or alias change and
//! publishes it with [`super::Resolver::set_names`] (an atomic pointer swap,
//! so a query in flight keeps the table it started with).
//!
//! Scoping follows Docker: a query arriving on network N from address A was
//! asked by the endpoint that owns A on N; it sees the names of every network
//! that endpoint's namespace (its key) is attached to: N first, then the
//! others in the order their endpoints were given. The first network with the
//! name wins; names on networks the asker is not attached to do not exist for
//! it. An address nobody owns on N (a stray or spoofed source) sees N alone.
//!
//! A name is an endpoint's name or one of its aliases, matched without regard
//! to case and with or without the trailing dot. Several endpoints of one
//! network behind a name all answer, in an order that rotates on each query.
//! As in Docker, `NAME.NETWORK` also resolves, on that network only (and only
//! for askers attached to it), and PTR answers are `NAME.NETWORK.`.

use hickory_proto::rr::Name;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// One endpoint as the daemon knows it: the input of a [`NameTable`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The network it is attached to.
    pub network: String,
    /// Its name on that network (`add-port --name`); empty for none.
    pub name: String,
    /// Further names on that network (`--alias`).
    pub aliases: Vec<String>,
    /// Its address on that network.
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address on that network, on dual-stack networks.
    pub ipv6: Option<Ipv6Addr>,
    /// What ties the endpoints of one container together: its namespace.
    pub key: String,
}

/// The addresses behind one name on one network.
#[derive(Debug, Default)]
pub struct Addresses {
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
    next_v4: AtomicUsize,
    next_v6: AtomicUsize,
}

impl Addresses {
    /// The IPv4 addresses, rotated one step further on each call.
    pub fn v4(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        rotated(&self.v4, &self.next_v4)
    }

    /// The IPv6 addresses, rotated one step further on each call.
    pub fn v6(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        rotated(&self.v6, &self.next_v6)
    }

    /// Whether the name has IPv4 addresses.
    pub fn has_v4(&self) -> bool {
        !self.v4.is_empty()
    }

    /// Whether the name has IPv6 addresses.
    pub fn has_v6(&self) -> bool {
        !self.v6.is_empty()
    }
}

/// `list` starting one further along on each call: round-robin answers.
/// (A counter per family: a client asking A and AAAA in turn would otherwise
/// always see every other rotation.)
fn rotated<'a, T: Copy>(list: &'a [T], next: &AtomicUsize) -> impl Iterator<Item = T> + 'a {
    let start = if list.len() > 1 { next.fetch_add(1, Relaxed) % list.len() } else { 0 };
    list[start..].iter().chain(&list[..start]).copied()
}

/// The names of one network.
#[derive(Debug)]
struct Network {
    /// Lower-case dotted name (no trailing dot) → addresses.
    names: HashMap<String, Addresses>,
    /// Address → `NAME.NETWORK.`, for PTR.
    ptr: HashMap<IpAddr, Name>,
    /// Address → index of the key (container) that owns it here.
    owner: HashMap<IpAddr, usize>,
}

/// The networks an asker sees, the one the query arrived on first.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'t> {
    arrived: Option<usize>,
    /// Every network of the asker's key (the arrival one included).
    attached: &'t [usize],
}

impl Scope<'_> {
    /// Indexes into the table's networks, in lookup order.
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        let arrived = self.arrived;
        arrived.into_iter().chain(self.attached.iter().copied().filter(move |n| Some(*n) != arrived))
    }

    fn contains(&self, net: usize) -> bool {
        self.arrived == Some(net) || self.attached.contains(&net)
    }

    /// Whether the asker is attached to any network: empty scopes see no names.
    pub fn is_empty(&self) -> bool {
        self.arrived.is_none() && self.attached.is_empty()
    }
}

/// An immutable table of names; see the module documentation.
#[derive(Debug, Default)]
pub struct NameTable {
    networks: Vec<Network>,
    /// Exact network name → index.
    by_name: HashMap<String, usize>,
    /// Lower-case network name → index (first one wins), for `NAME.NETWORK`.
    by_lower: HashMap<String, usize>,
    /// Networks of each key, in the order their endpoints came.
    keys: Vec<Vec<usize>>,
    /// Networks marked internal: no forwarding for askers that have only those.
    internal: Vec<bool>,
    endpoints: usize,
}

impl NameTable {
    /// A table of these endpoints. Names are compared case-insensitively; an
    /// empty name or alias, or one that is not a valid DNS name, is skipped.
    pub fn new(endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        let mut t = NameTable::default();
        let mut key_index: HashMap<String, usize> = HashMap::new();
        for ep in endpoints {
            t.endpoints += 1;
            let net = t.network_index(&ep.network);
            let key = *key_index.entry(ep.key.clone()).or_insert_with(|| {
                t.keys.push(Vec::new());
                t.keys.len() - 1
            });
            if !t.keys[key].contains(&net) {
                t.keys[key].push(net);
            }
            let n = &mut t.networks[net];
            let addrs = std::iter::once(IpAddr::V4(ep.ipv4)).chain(ep.ipv6.map(IpAddr::V6));
            for ip in addrs.clone() {
                n.owner.entry(ip).or_insert(key);
            }
            for name in std::iter::once(&ep.name).chain(&ep.aliases) {
                let Some(name) = normalise(name) else { continue };
                let entry = n.names.entry(name).or_default();
                if !entry.v4.contains(&ep.ipv4) {
                    entry.v4.push(ep.ipv4);
                }
                if let Some(v6) = ep.ipv6 {
                    if !entry.v6.contains(&v6) {
                        entry.v6.push(v6);
                    }
                }
            }
            // PTR names the endpoint by its own name, as Docker does (not by alias).
            if let Some(target) = normalise(&ep.name).and_then(|name| ptr_target(&name, &ep.network)) {
                for ip in addrs {
                    n.ptr.entry(ip).or_insert_with(|| target.clone());
                }
            }
        }
        t.internal = vec![false; t.networks.len()];
        t
    }

    /// The same table with these networks marked internal (`add-net
    /// --internal`): an asker attached only to internal networks gets
    /// SERVFAIL for names that are not local, instead of a forwarded answer,
    /// as Docker's resolver does for sandboxes without external access.
    pub fn with_internal<S: AsRef<str>>(mut self, networks: impl IntoIterator<Item = S>) -> Self {
        for name in networks {
            if let Some(&i) = self.by_name.get(name.as_ref()) {
                self.internal[i] = true;
            }
        }
        self
    }

    fn network_index(&mut self, name: &str) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        let lower = name.to_ascii_lowercase();
        let i = self.networks.len();
        self.networks.push(Network { names: HashMap::new(), ptr: HashMap::new(), owner: HashMap::new() });
        self.by_name.insert(name.to_string(), i);
        self.by_lower.entry(lower).or_insert(i);
        i
    }

    /// How many endpoints the table was built from.
    pub fn len(&self) -> usize {
        self.endpoints
    }

    /// Whether the table has no endpoints.
    pub fn is_empty(&self) -> bool {
        self.endpoints == 0
    }

    /// What an asker at `asker` on `network` may see.
    pub fn scope(&self, network: &str, asker: IpAddr) -> Scope<'_> {
        let Some(&net) = self.by_name.get(network) else {
            return Scope { arrived: None, attached: &[] };
        };
        let attached = match self.networks[net].owner.get(&asker.to_canonical()) {
            Some(&key) => &self.keys[key][..],
            None => &[],
        };
        Scope { arrived: Some(net), attached }
    }

    /// Whether queries in this scope may be forwarded upstream: the asker is
    /// on at least one network that is not internal. An asker on a network
    /// the table does not know may (its network has no names, so no flag).
    pub fn may_forward(&self, scope: &Scope<'_>) -> bool {
        scope.is_empty() || scope.iter().any(|n| !self.internal[n])
    }

    /// The addresses behind `name` (lower-case, dotted, no trailing dot) for
    /// this scope: the name on the first network of the scope that has it,
    /// else `NAME.NETWORK` on a network of the scope.
    pub fn lookup(&self, scope: &Scope<'_>, name: &str) -> Option<&Addresses> {
        if let Some(found) = scope.iter().find_map(|n| self.networks[n].names.get(name)) {
            return Some(found);
        }
        // a.b.c: "a.b" on network "c", then "a" on network "b.c" (Docker's order).
        let mut end = name.len();
        while let Some(dot) = name[..end].rfind('.') {
            let (prefix, network) = (&name[..dot], &name[dot + 1..]);
            if let Some(&net) = self.by_lower.get(network) {
                if scope.contains(net) {
                    if let Some(found) = self.networks[net].names.get(prefix) {
                        return Some(found);
                    }
                }
            }
            end = dot;
        }
        None
    }

    /// `NAME.NETWORK.` of the endpoint at `ip` on a network of this scope.
    pub fn reverse(&self, scope: &Scope<'_>, ip: IpAddr) -> Option<&Name> {
        let ip = ip.to_canonical();
        scope.iter().find_map(|n| self.networks[n].ptr.get(&ip))
    }

    /// The name of a network index.
    #[cfg(test)]
    fn network_name(&self, i: usize) -> &str {
        self.by_name.iter().find(|(_, n)| **n == i).map(|(name, _)| name.as_str()).unwrap_or("")
    }
}

/// A name as the table keys it: lower case, no trailing dot, and only what a
/// query can spell (labels of 1–63 bytes, 253 in all).
fn normalise(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_graphic()));
    valid.then_some(name)
}

/// Check a name given for an endpoint (`--name`, `--alias`): labels of 1–63
/// letters, digits, '-' or '_' (not starting or ending with '-'), joined by
/// dots, 253 bytes in all. `what` names the flag in the one-line error.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "invalid {what} {name:?}: a DNS name is labels of letters, digits, '-' and '_' \
             (1-63 each, no '-' at either end) joined by dots, at most 253 in all"
        ));
    }
    Ok(())
}

/// `name.network.` as a DNS name, if it is one.
fn ptr_target(name: &str, network: &str) -> Option<Name> {
    let mut n = Name::from_ascii(format!("{name}.{network}")).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// The key [`NameTable::lookup`] takes for a query name: its labels in lower
/// case joined by dots, or `None` when a label could not be in the table (a
/// dot or a non-printable byte inside a label).
pub fn query_key(name: &Name, key: &mut String) -> bool {
    key.clear();
    for (i, label) in name.iter().enumerate() {
        if label.is_empty() || !label.iter().all(|b| b.is_ascii_graphic() && *b != b'.') {
            return false;
        }
        if i > 0 {
            key.push('.');
        }
        key.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
    }
    !key.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(network: &str, name: &str, aliases: &[&str], ip: [u8; 4], key: &str) -> Endpoint {
        Endpoint {
            network: network.into(),
            name: name.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            ipv4: ip.into(),
            ipv6: None,
            key: key.into(),
        }
    }

    fn v4(a: &Addresses) -> Vec<Ipv4Addr> {
        a.v4().collect()
    }

    /// web and db on "front"; db and cache on "back"; lone on "other".
    fn table() -> NameTable {
        NameTable::new([
            ep("front", "web", &["www"], [10, 1, 0, 2], "ns-web"),
            ep("front", "db", &[], [10, 1, 0, 3], "ns-db"),
            ep("back", "db", &["store"], [10, 2, 0, 3], "ns-db"),
            ep("back", "cache", &[], [10, 2, 0, 4], "ns-cache"),
            ep("other", "lone", &[], [10, 3, 0, 2], "ns-lone"),
        ])
    }

    #[test]
    fn scope_is_the_networks_of_the_askers_namespace() {
        let t = table();
        let web = t.scope("front", "10.1.0.2".parse().unwrap());
        assert!(t.lookup(&web, "db").is_some());
        assert!(t.lookup(&web, "www").is_some());
        assert!(t.lookup(&web, "cache").is_none(), "cache is on back, which web is not attached to");
        assert!(t.lookup(&web, "lone").is_none());

        // db is on both networks: it sees cache (back) through either.
        let db_front = t.scope("front", "10.1.0.3".parse().unwrap());
        assert_eq!(v4(t.lookup(&db_front, "cache").unwrap()), vec![Ipv4Addr::new(10, 2, 0, 4)]);
        assert!(t.lookup(&db_front, "web").is_some());
        assert!(t.lookup(&db_front, "lone").is_none());
    }

    #[test]
    fn the_arrival_network_wins_for_a_name_on_several() {
        let t = table();
        let db_front = t.scope("front", "10.1.0.3".parse().unwrap());
        assert_eq!(v4(t.lookup(&db_front, "db").unwrap()), vec![Ipv4Addr::new(10, 1, 0, 3)]);
        let db_back = t.scope("back", "10.2.0.3".parse().unwrap());
        assert_eq!(v4(t.lookup(&db_back, "db").unwrap()), vec![Ipv4Addr::new(10, 2, 0, 3)]);
        let order: Vec<&str> = db_back.iter().map(|n| t.network_name(n)).collect();
        assert_eq!(order, ["back", "front"]);
    }

    #[test]
    fn unknown_askers_see_only_the_arrival_network_and_unknown_networks_nothing() {
        let t = table();
        let stray = t.scope("back", "10.2.0.99".parse().unwrap());
        assert!(t.lookup(&stray, "cache").is_some());
        assert!(t.lookup(&stray, "web").is_none());
        let nowhere = t.scope("nosuch", "10.1.0.2".parse().unwrap());
        assert!(nowhere.is_empty());
        assert!(t.lookup(&nowhere, "web").is_none());
    }

    #[test]
    fn name_dot_network_resolves_on_that_network_only() {
        let t = table();
        let db = t.scope("front", "10.1.0.3".parse().unwrap());
        assert_eq!(v4(t.lookup(&db, "db.back").unwrap()), vec![Ipv4Addr::new(10, 2, 0, 3)]);
        assert_eq!(v4(t.lookup(&db, "db.front").unwrap()), vec![Ipv4Addr::new(10, 1, 0, 3)]);
        assert!(t.lookup(&db, "web.back").is_none(), "web is not on back");
        let web = t.scope("front", "10.1.0.2".parse().unwrap());
        assert!(t.lookup(&web, "cache.back").is_none(), "web is not attached to back");
    }

    #[test]
    fn round_robin_rotates_per_query_and_per_family() {
        let t = NameTable::new([
            ep("n", "a", &["svc"], [10, 0, 0, 2], "a"),
            ep("n", "b", &["svc"], [10, 0, 0, 3], "b"),
            ep("n", "c", &["SVC."], [10, 0, 0, 4], "c"),
        ]);
        let s = t.scope("n", "10.0.0.2".parse().unwrap());
        let firsts: Vec<Ipv4Addr> = (0..6).map(|_| t.lookup(&s, "svc").unwrap().v4().next().unwrap()).collect();
        let ip = |l| Ipv4Addr::new(10, 0, 0, l);
        assert_eq!(firsts, [ip(2), ip(3), ip(4), ip(2), ip(3), ip(4)]);
        let all: Vec<Ipv4Addr> = t.lookup(&s, "svc").unwrap().v4().collect();
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn names_are_case_insensitive_and_invalid_ones_skipped() {
        let t = NameTable::new([ep("Net", "Web.Example.", &["", "bad label"], [10, 0, 0, 2], "w")]);
        let s = t.scope("Net", "10.0.0.2".parse().unwrap());
        assert!(t.lookup(&s, "web.example").is_some());
        assert!(t.lookup(&s, "web.example.net").is_some(), "NAME.NETWORK with the network's name in any case");
        assert!(t.lookup(&s, "bad label").is_none());
    }

    #[test]
    fn ptr_names_the_endpoint_dot_network_within_scope() {
        let mut e = ep("front", "web", &["www"], [10, 1, 0, 2], "ns-web");
        e.ipv6 = Some("fd00::2".parse().unwrap());
        let t = NameTable::new([e, ep("back", "cache", &[], [10, 2, 0, 4], "ns-cache")]);
        let web = t.scope("front", "10.1.0.2".parse().unwrap());
        assert_eq!(t.reverse(&web, "10.1.0.2".parse().unwrap()).unwrap().to_ascii(), "web.front.");
        assert_eq!(t.reverse(&web, "fd00::2".parse().unwrap()).unwrap().to_ascii(), "web.front.");
        assert!(t.reverse(&web, "10.2.0.4".parse().unwrap()).is_none());
    }

    #[test]
    fn endpoint_names_are_checked_as_dns_names() {
        for good in ["web", "Web-1", "db_2", "api.v2", "a", &"a".repeat(63)] {
            assert!(check_name("--alias", good).is_ok(), "{good:?} refused");
        }
        let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(63)].join(".");
        for bad in ["", "a b", "-web", "web-", "a..b", ".a", "a.", "é", "a/b", &"a".repeat(64), &long] {
            let e = check_name("--alias", bad).unwrap_err();
            assert!(e.starts_with("invalid --alias") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn query_keys_are_lower_case_and_refuse_odd_labels() {
        let mut k = String::new();
        assert!(query_key(&Name::from_ascii("WeB.Front.").unwrap(), &mut k));
        assert_eq!(k, "web.front");
        assert!(query_key(&Name::from_ascii("web").unwrap(), &mut k));
        assert_eq!(k, "web");
        let odd = Name::from_labels([&b"a.b"[..], &b"c"[..]]).unwrap();
        assert!(!query_key(&odd, &mut k));
        assert!(!query_key(&Name::root(), &mut k));
    }
}
