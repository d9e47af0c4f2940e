//! A [`PodHandler`] for tests: records every call, serves pods by holding them (so their netns
//! descriptors stay open exactly as long as a real handler's would), and refuses the uids a test
//! tells it to. Cheap to clone: clones share one record, so a test keeps a clone to inspect what
//! the client's thread did.
//!
//! Runs on the `zring-inpod` thread (the calls) and the test thread (the reads); a std mutex
//! joins them, which is fine outside the data plane.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Pod, PodHandler};

/// One call the client made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Add(String),
    Remove(String),
}

#[derive(Debug, Default)]
struct Record {
    calls: Vec<Call>,
    served: BTreeMap<String, Pod>,
    refused: BTreeSet<String>,
    failing_removes: BTreeSet<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RecordingHandler {
    record: Arc<Mutex<Record>>,
}

impl RecordingHandler {
    pub fn new() -> RecordingHandler {
        RecordingHandler::default()
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        // A panicking test thread must not hide what the client did.
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Uids served now, sorted.
    pub fn served(&self) -> Vec<String> {
        self.lock().served.keys().cloned().collect()
    }

    /// The served pod `uid`, if any.
    pub fn pod(&self, uid: &str) -> Option<Pod> {
        self.lock().served.get(uid).cloned()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Makes `add` of `uid` fail (`true`) or succeed again (`false`).
    pub fn refuse(&self, uid: &str, refuse: bool) {
        let mut r = self.lock();
        if refuse {
            r.refused.insert(uid.to_owned());
        } else {
            r.refused.remove(uid);
        }
    }

    /// Makes `remove` of `uid` report a failure (the pod is dropped all the same).
    pub fn fail_remove(&self, uid: &str) {
        self.lock().failing_removes.insert(uid.to_owned());
    }
}

impl PodHandler for RecordingHandler {
    fn add(&mut self, pod: &Pod) -> Result<(), String> {
        let mut r = self.lock();
        r.calls.push(Call::Add(pod.uid.clone()));
        if r.refused.contains(&pod.uid) {
            return Err(format!("test handler refuses {}", pod.uid));
        }
        r.served.insert(pod.uid.clone(), pod.clone());
        Ok(())
    }

    fn remove(&mut self, pod: &Pod) -> Result<(), String> {
        let mut r = self.lock();
        r.calls.push(Call::Remove(pod.uid.clone()));
        r.served.remove(&pod.uid);
        if r.failing_removes.contains(&pod.uid) {
            return Err(format!("test handler failed to remove {}", pod.uid));
        }
        Ok(())
    }
}
