//! Which policy decides: the scopes (global, namespace, workload selector), the verdict order
//! (DENY before ALLOW, no ALLOW policy means allow), fail closed on a named policy that has not
//! arrived, and istiod's encodings read through the local YAML source.

use super::*;

#[test]
fn scopes() {
    let global = |name: &str, action, rules| {
        policy("istio-system", name, PolicyScope::Global, action, rules)
    };
    let selector = |ns: &str, name: &str, action, rules| {
        policy(ns, name, PolicyScope::WorkloadSelector, action, rules)
    };
    let deny_a = || one(from_ns("a"));
    check_cases(vec![
        Case {
            label: "no policy",
            policies: vec![],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: None,
        },
        Case {
            label: "global DENY applies",
            policies: vec![global("g", PolicyAction::Deny, deny_a())],
            refs: &[],
            conn: ab(),
            verdict: "deny: policy istio-system/g",
            dry_run: None,
        },
        Case {
            label: "global ALLOW applies",
            policies: vec![global("g", PolicyAction::Allow, one(from_ns("c")))],
            refs: &[],
            conn: ab(),
            verdict: "deny: no ALLOW policy matched",
            dry_run: None,
        },
        Case {
            label: "namespace DENY of the destination's namespace",
            policies: vec![deny("d", deny_a())],
            refs: &[],
            conn: ab(),
            verdict: "deny: policy ns/d",
            dry_run: None,
        },
        Case {
            label: "namespace policies of another namespace do not apply",
            policies: vec![
                policy(
                    "other",
                    "d",
                    PolicyScope::Namespace,
                    PolicyAction::Deny,
                    deny_a(),
                ),
                policy(
                    "other",
                    "al",
                    PolicyScope::Namespace,
                    PolicyAction::Allow,
                    vec![],
                ),
            ],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: None,
        },
        Case {
            label: "a selector policy applies to the workload naming it",
            policies: vec![selector(NS, "s", PolicyAction::Deny, deny_a())],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "deny: policy ns/s",
            dry_run: None,
        },
        Case {
            label: "a selector policy does not apply to a workload not naming it",
            policies: vec![
                selector(NS, "s", PolicyAction::Deny, deny_a()),
                selector(NS, "sa", PolicyAction::Allow, vec![]),
            ],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: None,
        },
        Case {
            label: "a named selector ALLOW from another namespace applies",
            policies: vec![selector(
                "other",
                "s",
                PolicyAction::Allow,
                one(from_ns("a")),
            )],
            refs: &["other/s"],
            conn: ab(),
            verdict: "allow: policy other/s",
            dry_run: None,
        },
        Case {
            label: "ALLOW policies of all three scopes: any one allows",
            policies: vec![
                global("g", PolicyAction::Allow, one(from_ns("x"))),
                allow("n", one(from_ns("y"))),
                selector(NS, "s", PolicyAction::Allow, one(from_ns("a"))),
            ],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "allow: policy ns/s",
            dry_run: None,
        },
        Case {
            label: "ALLOW policies of all three scopes: none matches",
            policies: vec![
                global("g", PolicyAction::Allow, one(from_ns("x"))),
                allow("n", one(from_ns("y"))),
                selector(NS, "s", PolicyAction::Allow, one(from_ns("z"))),
            ],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "deny: no ALLOW policy matched",
            dry_run: None,
        },
    ]);
}

#[test]
fn verdict_order() {
    let all = || vec![vec![]];
    check_cases(vec![
        Case {
            label: "ALLOW matches",
            policies: vec![allow("al", one(from_ns("a")))],
            refs: &[],
            conn: ab(),
            verdict: "allow: policy ns/al",
            dry_run: None,
        },
        Case {
            label: "ALLOW does not match",
            policies: vec![allow("al", one(from_ns("c")))],
            refs: &[],
            conn: ab(),
            verdict: "deny: no ALLOW policy matched",
            dry_run: None,
        },
        Case {
            label: "a non-matching DENY alone allows",
            policies: vec![deny("d", one(from_ns("c")))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: None,
        },
        Case {
            label: "DENY beats an allow-all",
            policies: vec![allow("al", all()), deny("d", one(from_ns("a")))],
            refs: &[],
            conn: ab(),
            verdict: "deny: policy ns/d",
            dry_run: None,
        },
        Case {
            label: "the first matching DENY is named",
            policies: vec![
                deny("d1", one(from_ns("c"))),
                deny("d2", one(from_ns("a"))),
                deny("d3", all()),
            ],
            refs: &[],
            conn: ab(),
            verdict: "deny: policy ns/d2",
            dry_run: None,
        },
        Case {
            label: "allow-all",
            policies: vec![allow("al", all())],
            refs: &[],
            conn: Conn::plain(),
            verdict: "allow: policy ns/al",
            dry_run: None,
        },
        Case {
            label: "ALLOW with no rules allows nothing",
            policies: vec![allow("nothing", vec![])],
            refs: &[],
            conn: ab(),
            verdict: "deny: no ALLOW policy matched",
            dry_run: None,
        },
        Case {
            label: "STRICT as istiod converts it: plaintext denied",
            policies: vec![deny(
                "strict",
                one(Match {
                    not_principals: vec![PRESENCE],
                    ..m()
                }),
            )],
            refs: &[],
            conn: Conn::plain(),
            verdict: "deny: policy ns/strict",
            dry_run: None,
        },
        Case {
            label: "STRICT as istiod converts it: mTLS allowed",
            policies: vec![deny(
                "strict",
                one(Match {
                    not_principals: vec![PRESENCE],
                    ..m()
                }),
            )],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: None,
        },
    ]);
}

/// Fail closed (a): a named policy that has not arrived denies until it does.
#[test]
fn missing_policy_denies_until_it_arrives() {
    let allow_a = || {
        policy(
            NS,
            "s",
            PolicyScope::WorkloadSelector,
            PolicyAction::Allow,
            one(from_ns("a")),
        )
    };
    check_cases(vec![
        Case {
            label: "only policy missing",
            policies: vec![],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "deny: policy ns/s referenced but not yet received",
            dry_run: None,
        },
        Case {
            label: "a matching ALLOW does not override a missing policy",
            policies: vec![allow("al", vec![vec![]])],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "deny: policy ns/s referenced but not yet received",
            dry_run: None,
        },
        Case {
            label: "the first missing key is named",
            policies: vec![allow_a()],
            refs: &["ns/s", "ns/gone", "ns/later"],
            conn: ab(),
            verdict: "deny: policy ns/gone referenced but not yet received",
            dry_run: None,
        },
        Case {
            label: "a matching DENY is the more precise reason",
            policies: vec![deny("d", one(from_ns("a")))],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "deny: policy ns/d",
            dry_run: None,
        },
        Case {
            label: "once it arrives, it decides",
            policies: vec![allow_a()],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "allow: policy ns/s",
            dry_run: None,
        },
        Case {
            label: "missing, with a dry-run policy present",
            policies: vec![dry(deny("dd", one(from_ns("c"))))],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "deny: policy ns/s referenced but not yet received",
            dry_run: Some("deny: policy ns/s referenced but not yet received"),
        },
    ]);
}

/// istiod's encodings, read through the local YAML source: allow-all, deny-all, STRICT, and a
/// DENY rule whose HTTP-only group was emptied.
#[test]
fn from_local_yaml() {
    let snap = crate::xds::local::parse(
        r#"
policies:
- {name: allow-all, namespace: ns, scope: Namespace, action: Allow, rules: [[]]}
- name: strict
  namespace: istio-system
  scope: Global
  action: Deny
  rules: [[[{notPrincipals: [{Presence: []}]}]]]
- name: http-only-deny
  namespace: ns
  scope: WorkloadSelector
  action: Deny
  rules: [[[{}]]]
"#,
    )
    .unwrap();
    let plain = decide(&snap, &workload(&[]), &Conn::plain());
    assert_eq!(
        plain.verdict.to_string(),
        "deny: policy istio-system/strict"
    );
    let mtls = decide(&snap, &workload(&[]), &ab());
    assert_eq!(mtls.verdict.to_string(), "allow: policy ns/allow-all");
    let selected = decide(&snap, &workload(&["ns/http-only-deny"]), &ab());
    assert_eq!(
        selected.verdict.to_string(),
        "deny: policy ns/http-only-deny"
    );
}
