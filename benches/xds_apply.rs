//! How long the control thread takes to apply a large xDS push: 100,000 workloads (each an
//! endpoint of one of 1,000 services) in one Delta ADS response, decoded, converted, validated
//! and built into a `Snapshot`; then one incremental change against that state, which rebuilds
//! the whole snapshot. Cores are not involved: they would pick the result up with one pointer
//! swap. Run with `cargo bench --bench xds_apply`.

use std::collections::HashMap;
use std::time::Instant;

use prost::Message;
use prost_types::Any;
use zring::xds::proto::discovery::Resource;
use zring::xds::proto::{ADDRESS_TYPE, workload as pw};
use zring::xds::resources::{Kind, ResourceSet};

/// zring's own allocator, so the figures are the control thread's.
#[global_allocator]
static GLOBAL: zring::sys::alloc::Counting = zring::sys::alloc::Counting::new();

const WORKLOADS: u32 = 100_000;
const SERVICES: u32 = 1_000;

fn resource(name: String, a: pw::Address) -> Resource {
    Resource {
        name,
        version: "1".into(),
        resource: Some(Any {
            type_url: ADDRESS_TYPE.into(),
            value: a.encode_to_vec(),
        }),
        ..Default::default()
    }
}

fn workload(i: u32) -> Resource {
    let [_, a, b, c] = i.to_be_bytes();
    let uid = format!("Kubernetes//Pod/ns{}/app-{i}", i % 50);
    let service = format!(
        "ns{}/svc{}.ns{}.svc.cluster.local",
        i % 50,
        i % SERVICES,
        i % 50
    );
    let w = pw::Workload {
        uid: uid.clone(),
        name: format!("app-{i}"),
        namespace: format!("ns{}", i % 50),
        addresses: vec![vec![10, a, b, c]],
        tunnel_protocol: pw::TunnelProtocol::Hbone as i32,
        service_account: format!("sa{}", i % 200),
        node: format!("node-{}", i % 500),
        canonical_name: format!("app{}", i % SERVICES),
        canonical_revision: "v1".into(),
        workload_name: format!("app{}", i % SERVICES),
        cluster_id: "Kubernetes".into(),
        services: HashMap::from([(
            service,
            pw::PortList {
                ports: vec![pw::Port {
                    service_port: 80,
                    target_port: 8080,
                }],
            },
        )]),
        ..Default::default()
    };
    resource(
        uid,
        pw::Address {
            r#type: Some(pw::address::Type::Workload(w)),
        },
    )
}

fn service(i: u32) -> Resource {
    let ns = format!("ns{}", i % 50);
    let hostname = format!("svc{i}.{ns}.svc.cluster.local");
    let s = pw::Service {
        name: format!("svc{i}"),
        namespace: ns.clone(),
        hostname: hostname.clone(),
        addresses: vec![pw::NetworkAddress {
            network: String::new(),
            address: vec![172, 20, (i >> 8) as u8, i as u8],
            length: None,
        }],
        ports: vec![pw::Port {
            service_port: 80,
            target_port: 8080,
        }],
        ..Default::default()
    };
    resource(
        format!("{ns}/{hostname}"),
        pw::Address {
            r#type: Some(pw::address::Type::Service(s)),
        },
    )
}

fn main() {
    zring::sys::alloc::configure();
    let mut resources: Vec<Resource> = (0..SERVICES).map(service).collect();
    resources.extend((0..WORKLOADS).map(workload));
    let bytes: usize = resources.iter().map(|r| r.encoded_len()).sum();

    let mut set = ResourceSet::new();
    let start = Instant::now();
    let applied = set.apply(Kind::Address, resources, vec![]);
    let full = start.elapsed();
    assert!(applied.rejected.is_empty(), "{:?}", &applied.rejected[..1]);
    let snapshot = applied.snapshot.expect("a snapshot");
    assert_eq!(snapshot.workload_count(), WORKLOADS as usize);

    let start = Instant::now();
    let applied = set.apply(Kind::Address, vec![workload(7)], vec![]);
    let incremental = start.elapsed();
    assert!(applied.snapshot.is_some());

    println!(
        "xds_apply: {WORKLOADS} workloads + {SERVICES} services ({:.1} MB encoded) applied in \
         {:.0} ms (decode, convert, validate, build); one incremental change: {:.0} ms",
        bytes as f64 / 1e6,
        full.as_secs_f64() * 1e3,
        incremental.as_secs_f64() * 1e3
    );
}
