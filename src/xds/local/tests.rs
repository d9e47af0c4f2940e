//! Tests for the local config source, one file per concern; the helpers every file uses are
//! here.
//!
//! - `examples`: the seed cluster, ztunnel's own example, empty documents, defaults;
//! - `fields`: every field, and the indexes the snapshot builds from them;
//! - `validation`: every validation error (each message must name its culprit), as a table;
//! - `schema`: unknown fields, string matches, ztunnel's field names;
//! - `hostile`: garbage, deep nesting, huge values, alias bombs;
//! - `source`: `load` and `LocalSource` change tracking.

use std::net::IpAddr;

use super::yaml::{MAX_FLOW_DEPTH, check_flow_depth};
use super::*;
use crate::state::{
    Authorization, HealthStatus, IpFamily, LoadBalancerHealthPolicy, LoadBalancerMode, NetworkMode,
    PolicyAction, PolicyScope, Protocol, StringMatch,
};

mod examples;
mod fields;
mod hostile;
mod schema;
mod source;
mod validation;

const SEED: &str = include_str!("../../../tests/data/seed-two-nodes.yaml");

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ok(yaml: &str) -> Snapshot {
    parse(yaml).unwrap_or_else(|e| panic!("{e}\n--- input ---\n{yaml}"))
}

/// Parses as a file is parsed: ztunnel's format only, no shorthand.
fn strict(yaml: &str) -> Snapshot {
    parse_bytes(yaml.as_bytes()).unwrap_or_else(|e| panic!("{e}\n--- input ---\n{yaml}"))
}

/// The error a file with this content gets.
fn strict_err(yaml: &str) -> String {
    match parse_bytes(yaml.as_bytes()) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

fn err(yaml: &str) -> String {
    match parse(yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

fn assert_err(case: &str, yaml: &str, wants: &[&str]) {
    let msg = err(yaml);
    for want in wants {
        assert!(msg.contains(want), "{case}: message {msg:?} lacks {want:?}");
    }
}
