//! Authorization policies: ztunnel's local `Authorization` YAML shape (`RawPolicy`, its match
//! groups, and `RawStringMatch`, the YAML-tagged string match whose reader lives in `budget`)
//! and their conversion into `state::Authorization`. Pure; runs on the control thread (or
//! whichever thread calls `parse`). Invariant: unknown fields in a match group are refused,
//! so a typo cannot silently widen an ALLOW.

use serde::Deserialize;

use super::budget::{List, Text};
use super::{LocalConfigError, invalid};
use crate::state::{
    Authorization, Cidr, Match, PolicyAction, PolicyScope, ServiceAccountMatch, StringMatch,
    excerpt,
};

pub(super) fn policy(p: RawPolicy) -> Result<Authorization, LocalConfigError> {
    let subject = &format!(
        "policy {}",
        excerpt(&format!("{}/{}", p.namespace.0, p.name.0))
    );
    let mut rules = Vec::with_capacity(p.rules.0.len());
    for rule in p.rules.0 {
        let mut clauses = Vec::with_capacity(rule.0.len());
        for clause in rule.0 {
            let matches = clause
                .0
                .into_iter()
                .map(|m| match_group(subject, m))
                .collect::<Result<_, _>>()?;
            clauses.push(matches);
        }
        rules.push(clauses);
    }
    Ok(Authorization {
        name: p.name.0.into(),
        namespace: p.namespace.0.into(),
        scope: p.scope,
        action: p.action,
        dry_run: p.dry_run,
        rules,
    })
}

fn match_group(subject: &str, m: RawMatch) -> Result<Match, LocalConfigError> {
    let cidrs = |field: &'static str, list: List<Text>| -> Result<Vec<Cidr>, LocalConfigError> {
        list.0
            .iter()
            .map(|t| {
                let cidr = Cidr::parse(&t.0).map_err(|e| {
                    invalid(subject, field, format!("{} is invalid: {e}", excerpt(&t.0)))
                })?;
                // ztunnel reads these as `IpNet`, which needs the prefix length.
                if !t.0.contains('/') {
                    let why = format!(
                        "{} has no prefix length: ztunnel requires one (/32 for one IPv4 \
                         address, /128 for IPv6)",
                        excerpt(&t.0)
                    );
                    return Err(invalid(subject, field, why));
                }
                Ok(cidr)
            })
            .collect()
    };
    let strings = |list: List<RawStringMatch>| list.0.into_iter().map(|s| s.0).collect();
    let accounts = |list: List<RawServiceAccountMatch>| {
        list.0
            .into_iter()
            .map(|a| ServiceAccountMatch {
                namespace: a.namespace.0.into(),
                service_account: a.service_account.0.into(),
            })
            .collect()
    };
    Ok(Match {
        namespaces: strings(m.namespaces),
        not_namespaces: strings(m.not_namespaces),
        service_accounts: accounts(m.service_accounts),
        not_service_accounts: accounts(m.not_service_accounts),
        principals: strings(m.principals),
        not_principals: strings(m.not_principals),
        source_ips: cidrs("sourceIps", m.source_ips)?,
        not_source_ips: cidrs("notSourceIps", m.not_source_ips)?,
        destination_ips: cidrs("destinationIps", m.destination_ips)?,
        not_destination_ips: cidrs("notDestinationIps", m.not_destination_ips)?,
        destination_ports: m.destination_ports.0,
        not_destination_ports: m.not_destination_ports.0,
    })
}

// ---- raw YAML shapes: ztunnel's spellings, required where ztunnel requires them ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawPolicy {
    name: Text,
    namespace: Text,
    scope: PolicyScope,
    action: PolicyAction,
    rules: List<List<List<RawMatch>>>,
    dry_run: bool,
}

/// ztunnel ignores unknown fields here; zring refuses them (see the module doc).
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
struct RawMatch {
    namespaces: List<RawStringMatch>,
    not_namespaces: List<RawStringMatch>,
    service_accounts: List<RawServiceAccountMatch>,
    not_service_accounts: List<RawServiceAccountMatch>,
    principals: List<RawStringMatch>,
    not_principals: List<RawStringMatch>,
    source_ips: List<Text>,
    not_source_ips: List<Text>,
    destination_ips: List<Text>,
    not_destination_ips: List<Text>,
    destination_ports: List<u16>,
    not_destination_ports: List<u16>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawServiceAccountMatch {
    namespace: Text,
    service_account: Text,
}

/// A `StringMatch` written as ztunnel writes it, a YAML tag (`!Exact x`); read by hand in
/// `budget`.
pub(super) struct RawStringMatch(pub(super) StringMatch);
