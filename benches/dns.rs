//! Criterion bench of the embedded DNS server's answer path, on one core:
//! `Resolver::resolve` from the bytes of a query to the bytes of its answer
//! (parse, scope the asker, look the name up, build and encode the reply),
//! without sockets.
//!
//! The table holds 1,000 endpoints on 10 networks (each with a name and an
//! alias shared by 4); the asker is attached to two of them. After each bench
//! a line `queries/s per core` gives the figure plainly (median sample).
//! `dns/name_table_rebuild_1001` times what every add-port, del-port and
//! alias change costs the daemon: the table built again and published.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use vswitch::dns::{Endpoint, NameTable, Outcome, Resolver, Transport, Upstreams};

const NETWORKS: u8 = 10;
const PER_NETWORK: u8 = 100;

fn resolver() -> Resolver {
    let r = Resolver::new(Upstreams::default(), Duration::from_secs(1));
    r.set_names(NameTable::new(endpoints()));
    r
}

/// The table's 1,001 endpoints.
fn endpoints() -> Vec<Endpoint> {
    let mut eps = Vec::new();
    for n in 0..NETWORKS {
        for i in 0..PER_NETWORK {
            eps.push(Endpoint {
                network: format!("net{n}"),
                name: format!("host{n}-{i}"),
                aliases: vec![format!("svc{n}-{}", i / 4)],
                ipv4: Ipv4Addr::new(10, n, 0, 2 + i),
                ipv6: None,
                key: format!("ns{n}-{i}"),
            });
        }
    }
    // The asker (ns0-0) is on net0 and net1 as well.
    eps.push(Endpoint {
        network: "net1".into(),
        name: "host0-0".into(),
        aliases: vec![],
        ipv4: Ipv4Addr::new(10, 1, 1, 2),
        ipv6: None,
        key: "ns0-0".into(),
    });
    eps
}

fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

/// Whether criterion measures (`cargo bench`), rather than runs each bench once.
fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |a: &str| args.iter().any(|x| x == a);
    has("--bench") && !has("--test") && !has("--list")
}

fn bench_one(c: &mut Criterion, r: &Resolver, id: &str, q: &[u8], expect_answers: usize) {
    let asker: IpAddr = Ipv4Addr::new(10, 0, 0, 2).into();
    match r.resolve(q, asker, "net0", Transport::Udp) {
        Outcome::Reply(b) => assert_eq!(Message::from_vec(&b).unwrap().answers.len(), expect_answers, "{id}"),
        other => panic!("{id}: {other:?}"),
    }
    let mut per_query: Vec<f64> = Vec::new();
    let mut group = c.benchmark_group("dns");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(r.resolve(black_box(q), asker, "net0", Transport::Udp));
            }
            let took = start.elapsed();
            if iters >= 16 {
                per_query.push(took.as_nanos() as f64 / iters as f64);
            }
            took
        })
    });
    group.finish();
    if measuring() && !per_query.is_empty() {
        per_query.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let ns = per_query[per_query.len() / 2];
        eprintln!("dns/{id:<24} queries/s per core: {:8.0} ({ns:6.0} ns/query)", 1e9 / ns);
    }
}

fn answer_path(c: &mut Criterion) {
    let r = resolver();
    bench_one(c, &r, "local_a", &query("host0-57", RecordType::A), 1);
    bench_one(c, &r, "local_a_alias_4_rr", &query("svc0-3", RecordType::A), 4);
    bench_one(c, &r, "local_a_other_network", &query("HOST1-9.net1.", RecordType::A), 1);
    bench_one(c, &r, "local_ptr", &query("59.0.0.10.in-addr.arpa.", RecordType::PTR), 1);
}

/// What the daemon does on every add-port, del-port or alias change: the
/// whole table built again from its endpoints (and published).
fn rebuild(c: &mut Criterion) {
    let eps = endpoints();
    let r = resolver();
    let mut group = c.benchmark_group("dns");
    group.bench_function("name_table_rebuild_1001", |b| b.iter(|| r.set_names(NameTable::new(black_box(eps.clone())))));
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = answer_path, rebuild
}
criterion_main!(benches);
