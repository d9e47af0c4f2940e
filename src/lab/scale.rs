//! Many in-pod pods at once, for the enrolment bench (`benches/inpod.rs`) and any test that
//! needs hundreds of pods: bare pod namespaces ([`Lab::add_bare_pods`]), their workloads in
//! ztunnel's strict local-config format ([`local_config`]), and handing them to a proxy through
//! the fake agent one at a time, as istio-cni does, timing each request to its `Ack`
//! ([`add_each`], [`del_each`]).
//!
//! Runs on the thread that owns the [`Lab`] and the [`FakeAgent`]; everything blocks.
//!
//! A bare pod is a network namespace with `lo` up and nothing else: no veth, no address, no
//! redirection rules. That is all enrolment needs (the proxy binds its listeners on the
//! unspecified address inside it), and it keeps 500 pods cheap to build: about 5 ms each, most
//! of it the two `ip` invocations.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::cni::{CniError, FakeAgent};
use super::{Lab, LabError, Netns};
use crate::inpod::WorkloadInfo;

/// Namespace every bulk pod's workload lives in.
pub const NAMESPACE: &str = "bench";

/// What handing pods over can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error(transparent)]
    Agent(#[from] CniError),
    #[error("cannot open the netns of pod {uid}: {source}")]
    Netns { uid: String, source: std::io::Error },
    #[error("the proxy refused {request} of pod {uid} (pod {index}): {error}")]
    Refused {
        request: &'static str,
        uid: String,
        index: usize,
        error: String,
    },
}

/// One pod of a bulk set: who the agent says it is, and its namespace.
#[derive(Debug, Clone)]
pub struct BulkPod {
    /// The uid the agent sends, and the workload's uid in [`local_config`].
    pub uid: String,
    pub info: WorkloadInfo,
    /// The address its workload has in the config (the namespace itself holds none).
    pub ip: Ipv4Addr,
    pub netns: Netns,
}

impl Lab {
    /// Makes `count` bare pods (see the module doc) named `<prefix>-<i>`: workload `<prefix>-<i>`
    /// in namespace [`NAMESPACE`] with its own service account `sa-<i>` (so a proxy that issues
    /// a certificate per identity issues one per pod), uid `Kubernetes//Pod/bench/<prefix>-<i>`,
    /// config address `10.<200 + i / 62500>.<(i / 250) % 250>.<2 + i % 250>` (never routed).
    /// The lab deletes them on drop like any other namespace, so a failure halfway cleans up too.
    pub fn add_bare_pods(&mut self, prefix: &str, count: usize) -> Result<Vec<BulkPod>, LabError> {
        if count > 250 * 250 * 50 {
            return Err(LabError::Topology(format!(
                "{count} bare pods: more than the address plan holds"
            )));
        }
        (0..count)
            .map(|i| {
                let name = format!("{prefix}-{i}");
                let netns = self.make_ns(&format!("b-{name}"))?;
                Ok(BulkPod {
                    uid: format!("Kubernetes//Pod/{NAMESPACE}/{name}"),
                    info: WorkloadInfo {
                        name: name.clone(),
                        namespace: NAMESPACE.into(),
                        service_account: format!("sa-{i}"),
                    },
                    ip: bulk_ip(i),
                    netns,
                })
            })
            .collect()
    }
}

fn bulk_ip(i: usize) -> Ipv4Addr {
    // Each octet is below 256 by construction (count is capped in `add_bare_pods`).
    let octet = |v: usize| u8::try_from(v).unwrap_or(u8::MAX);
    Ipv4Addr::new(
        10,
        octet(200 + i / 62_500),
        octet((i / 250) % 250),
        octet(2 + i % 250),
    )
}

/// `pods` as workloads of node `node` in ztunnel's strict local-config format (every field it
/// requires, `services: {}`, `trustDomain` for its fake CA), HBONE, no services or policies.
/// zring reads the same file.
pub fn local_config(node: &str, pods: &[BulkPod]) -> String {
    let mut out = String::from("workloads:\n");
    for p in pods {
        let WorkloadInfo {
            name,
            namespace,
            service_account,
        } = &p.info;
        out.push_str(&format!(
            "- uid: {uid}\n  name: {name}\n  namespace: {namespace}\n  \
             serviceAccount: {service_account}\n  trustDomain: cluster.local\n  \
             workloadName: {name}\n  workloadType: deployment\n  canonicalName: {name}\n  \
             canonicalRevision: v1\n  clusterId: Kubernetes\n  workloadIps: [\"{ip}\"]\n  \
             protocol: HBONE\n  node: {node}\n  network: \"\"\n  services: {{}}\n",
            uid = p.uid,
            ip = p.ip,
        ));
    }
    out.push_str("services: []\npolicies: []\n");
    out
}

/// Sends `add` for each pod in order, the next only once the previous is acked, and returns
/// each request's time from send to `Ack` (the pod's netns is opened before the clock starts).
/// Stops at the first refusal or agent error.
pub fn add_each(agent: &mut FakeAgent, pods: &[BulkPod]) -> Result<Vec<Duration>, ScaleError> {
    let mut took = Vec::with_capacity(pods.len());
    for (index, pod) in pods.iter().enumerate() {
        let path = crate::sys::netns::path(pod.netns.name());
        let file = std::fs::File::open(&path).map_err(|source| ScaleError::Netns {
            uid: pod.uid.clone(),
            source,
        })?;
        let start = Instant::now();
        let ack = agent.add_with_fds(&pod.uid, Some(&pod.info), &[file.as_fd()])?;
        took.push(start.elapsed());
        check(ack, "add", pod, index)?;
    }
    Ok(took)
}

/// Sends `del` for each pod in order, one at a time like [`add_each`], and returns each
/// request's time from send to `Ack`.
pub fn del_each(agent: &mut FakeAgent, pods: &[BulkPod]) -> Result<Vec<Duration>, ScaleError> {
    let mut took = Vec::with_capacity(pods.len());
    for (index, pod) in pods.iter().enumerate() {
        let start = Instant::now();
        let ack = agent.del(&pod.uid)?;
        took.push(start.elapsed());
        check(ack, "del", pod, index)?;
    }
    Ok(took)
}

fn check(
    ack: super::cni::Ack,
    request: &'static str,
    pod: &BulkPod,
    index: usize,
) -> Result<(), ScaleError> {
    ack.map_err(|error| ScaleError::Refused {
        request,
        uid: pod.uid.clone(),
        index,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(i: usize) -> BulkPod {
        BulkPod {
            uid: format!("Kubernetes//Pod/{NAMESPACE}/pod-{i}"),
            info: WorkloadInfo {
                name: format!("pod-{i}"),
                namespace: NAMESPACE.into(),
                service_account: format!("sa-{i}"),
            },
            ip: bulk_ip(i),
            netns: Netns::named("unused"),
        }
    }

    #[test]
    fn addresses_are_unique_and_inside_10_slash_8() {
        let ips: std::collections::BTreeSet<Ipv4Addr> = (0..70_000).map(bulk_ip).collect();
        assert_eq!(ips.len(), 70_000);
        assert_eq!(bulk_ip(0), Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(bulk_ip(251), Ipv4Addr::new(10, 200, 1, 3));
        assert_eq!(bulk_ip(62_500), Ipv4Addr::new(10, 201, 0, 2));
    }

    #[test]
    fn the_config_is_ztunnels_strict_format_and_zring_reads_it() {
        let pods: Vec<BulkPod> = (0..3).map(pod).collect();
        let yaml = local_config("a", &pods);
        for needle in [
            "- uid: Kubernetes//Pod/bench/pod-2\n",
            "  serviceAccount: sa-1\n",
            "  trustDomain: cluster.local\n",
            "  services: {}\n",
            "  workloadIps: [\"10.200.0.4\"]\n",
        ] {
            assert!(yaml.contains(needle), "{needle:?} in\n{yaml}");
        }
        let parsed: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(parsed["workloads"].as_sequence().unwrap().len(), 3);
        crate::xds::local::parse(&yaml).expect("zring reads it");
    }
}
