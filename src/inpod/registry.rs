//! The pods the agent has handed over, and what each request does to them: enrolment (with
//! duplicate adds), deletion, `keep`, and the reconciliation `snapshot_sent` triggers. Drives a
//! [`PodHandler`] and keeps [`Metrics`]' gauges in step.
//!
//! Runs on the `zring-inpod` thread only. No IO of its own (the handler may do some), so its
//! tests are plain unit tests with a recording handler.
//!
//! Invariants:
//! - a uid is in at most one of `enrolled` (the handler serves it) and `pending` (the handler
//!   refused it; retried);
//! - the registry outlives connections: an agent restart changes nothing until the new
//!   connection's `snapshot_sent`, so pods stay served meanwhile;
//! - after `snapshot_sent` nothing is enrolled or pending that the agent did not add or keep on
//!   this connection.
//!
//! Choices where ztunnel's behaviour is the model (its `statemanager.rs`): an add of a uid
//! already enrolled with the *same* namespace is acked and changes nothing; with another
//! namespace the old pod is removed first. A `del` of an unknown uid is acked (deletes are
//! idempotent: the agent may repeat one after a restart) but logged and counted. A `del` before
//! `snapshot_sent` removes the pod at once (ztunnel lets the reconciliation do it; the end state
//! is the same, reached sooner).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::codec::Request;
use super::metrics::Metrics;
use super::{Pod, PodHandler};

/// Why a well-formed request failed. The ack carries the text.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("pod {uid}: {message}")]
    AddRefused { uid: String, message: String },
    #[error("pod {uid} removed, but: {message}")]
    RemoveFailed { uid: String, message: String },
    #[error("keep for {0} after snapshot_sent")]
    KeepAfterSnapshot(String),
    #[error("snapshot_sent twice on one connection")]
    SecondSnapshot,
}

impl ApplyError {
    /// Whether the connection must be dropped after the ack: an out-of-order request means the
    /// agent's view and ours differ, and only a new snapshot re-aligns them. A refused pod is
    /// that pod's problem only.
    pub fn ends_connection(&self) -> bool {
        match self {
            ApplyError::AddRefused { .. } | ApplyError::RemoveFailed { .. } => false,
            ApplyError::KeepAfterSnapshot(_) | ApplyError::SecondSnapshot => true,
        }
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    /// Pods the handler serves, by uid.
    enrolled: HashMap<String, Pod>,
    /// Pods the handler refused, kept (with their netns) for the next retry.
    pending: HashMap<String, Pod>,
    /// Uids added or kept on this connection before its `snapshot_sent`.
    seen: HashSet<String>,
    /// Whether this connection's `snapshot_sent` has arrived.
    snapshot_done: bool,
}

impl Registry {
    /// A new connection: its snapshot starts. Pending pods are dropped, as ztunnel does: the
    /// agent re-sends every pod it still has.
    pub fn begin_connection(&mut self, metrics: &Metrics) {
        self.seen.clear();
        self.snapshot_done = false;
        self.pending.clear();
        self.publish(metrics);
    }

    /// Applies one request; `Ok` is acked as success.
    pub fn apply(
        &mut self,
        request: Request,
        handler: &mut dyn PodHandler,
        metrics: &Metrics,
    ) -> Result<(), ApplyError> {
        let result = match request {
            Request::Add(pod) => self.add(pod, handler, metrics),
            Request::Keep { uid } => self.keep(uid),
            Request::Del { uid } => self.del(&uid, handler, metrics),
            Request::SnapshotSent => self.snapshot_sent(handler, metrics),
        };
        if let Err(e) = &result {
            match e {
                // Counted where they happen (`start`, `stop`), retries and reconciliation too.
                ApplyError::AddRefused { .. } | ApplyError::RemoveFailed { .. } => {}
                ApplyError::KeepAfterSnapshot(_) | ApplyError::SecondSnapshot => {
                    Metrics::inc(&metrics.protocol_errors)
                }
            }
        }
        self.publish(metrics);
        result
    }

    fn add(
        &mut self,
        pod: Pod,
        handler: &mut dyn PodHandler,
        metrics: &Metrics,
    ) -> Result<(), ApplyError> {
        info!(uid = %pod.uid, name = %pod.info.name, namespace = %pod.info.namespace, "pod added by the node agent");
        if !self.snapshot_done {
            self.seen.insert(pod.uid.clone());
        }
        if let Some(old) = self.enrolled.get(&pod.uid) {
            if old.netns.id() == pod.netns.id() {
                // The same pod again (a re-sent snapshot): already served, the new descriptor
                // is dropped here.
                return Ok(());
            }
            warn!(uid = %pod.uid, "pod re-added with another network namespace: replacing it");
            let old = self.enrolled.remove(&pod.uid).expect("just found");
            // A failed remove is logged and counted by `stop`; the new netns is what matters.
            let _ = self.stop(&old, handler, metrics);
        }
        self.pending.remove(&pod.uid);
        self.start(pod, handler, metrics)
    }

    fn keep(&mut self, uid: String) -> Result<(), ApplyError> {
        if self.snapshot_done {
            return Err(ApplyError::KeepAfterSnapshot(uid));
        }
        info!(%uid, "pod kept by the node agent");
        self.seen.insert(uid);
        Ok(())
    }

    fn del(
        &mut self,
        uid: &str,
        handler: &mut dyn PodHandler,
        metrics: &Metrics,
    ) -> Result<(), ApplyError> {
        self.seen.remove(uid);
        if self.pending.remove(uid).is_some() {
            info!(%uid, "pending pod deleted by the node agent");
            return Ok(());
        }
        let Some(pod) = self.enrolled.remove(uid) else {
            warn!(%uid, "node agent deleted a pod that is not enrolled");
            Metrics::inc(&metrics.unknown_deletes);
            return Ok(());
        };
        info!(%uid, "pod deleted by the node agent");
        self.stop(&pod, handler, metrics)
    }

    fn snapshot_sent(
        &mut self,
        handler: &mut dyn PodHandler,
        metrics: &Metrics,
    ) -> Result<(), ApplyError> {
        if self.snapshot_done {
            return Err(ApplyError::SecondSnapshot);
        }
        let gone: Vec<String> = self
            .enrolled
            .keys()
            .filter(|uid| !self.seen.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            let pod = self.enrolled.remove(&uid).expect("listed above");
            info!(%uid, "pod not in the node agent's snapshot: removing it");
            // A failed remove is logged and counted by `stop`; the snapshot's ack is still a
            // success, since the registry now matches the agent.
            let _ = self.stop(&pod, handler, metrics);
        }
        self.pending.retain(|uid, _| self.seen.contains(uid));
        self.seen.clear();
        self.snapshot_done = true;
        info!(
            enrolled = self.enrolled.len(),
            pending = self.pending.len(),
            "node agent snapshot reconciled"
        );
        Ok(())
    }

    /// Retries every pending pod once.
    pub fn retry_pending(&mut self, handler: &mut dyn PodHandler, metrics: &Metrics) {
        for (_, pod) in std::mem::take(&mut self.pending) {
            info!(uid = %pod.uid, "retrying a pending pod");
            // A refusal is logged, counted and kept pending by `start`.
            let _ = self.start(pod, handler, metrics);
        }
        self.publish(metrics);
    }

    /// Removes every pod (the client is stopping).
    pub fn remove_all(&mut self, handler: &mut dyn PodHandler, metrics: &Metrics) {
        for (_, pod) in std::mem::take(&mut self.enrolled) {
            let _ = self.stop(&pod, handler, metrics);
        }
        self.pending.clear();
        self.snapshot_done = false;
        self.publish(metrics);
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Uids served now, sorted.
    pub fn enrolled(&self) -> Vec<String> {
        let mut uids: Vec<String> = self.enrolled.keys().cloned().collect();
        uids.sort();
        uids
    }

    /// Uids waiting for a retry, sorted.
    pub fn pending(&self) -> Vec<String> {
        let mut uids: Vec<String> = self.pending.keys().cloned().collect();
        uids.sort();
        uids
    }

    fn start(
        &mut self,
        pod: Pod,
        handler: &mut dyn PodHandler,
        metrics: &Metrics,
    ) -> Result<(), ApplyError> {
        match handler.add(&pod) {
            Ok(()) => {
                Metrics::inc(&metrics.proxies_started);
                info!(uid = %pod.uid, "pod enrolled");
                self.enrolled.insert(pod.uid.clone(), pod);
                Ok(())
            }
            Err(message) => {
                Metrics::inc(&metrics.add_failures);
                warn!(uid = %pod.uid, error = %message, "pod could not be enrolled; will retry");
                let uid = pod.uid.clone();
                self.pending.insert(uid.clone(), pod);
                Err(ApplyError::AddRefused { uid, message })
            }
        }
    }

    fn stop(
        &mut self,
        pod: &Pod,
        handler: &mut dyn PodHandler,
        metrics: &Metrics,
    ) -> Result<(), ApplyError> {
        Metrics::inc(&metrics.proxies_stopped);
        handler.remove(pod).map_err(|message| {
            Metrics::inc(&metrics.remove_failures);
            warn!(uid = %pod.uid, error = %message, "pod removal reported a failure");
            ApplyError::RemoveFailed {
                uid: pod.uid.clone(),
                message,
            }
        })
    }

    /// Writes the gauges and readiness from the current state.
    fn publish(&self, metrics: &Metrics) {
        metrics
            .active_proxy_count
            .store(self.enrolled.len() as u64, Ordering::Relaxed);
        metrics
            .pending_proxy_count
            .store(self.pending.len() as u64, Ordering::Relaxed);
        metrics.ready.store(
            self.snapshot_done && self.pending.is_empty(),
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
#[path = "registry/tests.rs"]
mod tests;
