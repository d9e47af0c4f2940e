//! Dry-run policies: what they would have decided, reported beside the enforced verdict and
//! never changing it; and `Decision`'s helpers and display, as the access log shows them.

use super::*;

#[test]
fn dry_run() {
    let all = || vec![vec![]];
    check_cases(vec![
        Case {
            label: "a matching dry-run DENY would deny",
            policies: vec![dry(deny("dd", one(from_ns("a"))))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: Some("deny: policy ns/dd (dry-run)"),
        },
        Case {
            label: "a non-matching dry-run DENY changes nothing",
            policies: vec![dry(deny("dd", one(from_ns("c"))))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: Some("allow: no ALLOW policy applies"),
        },
        Case {
            label: "a dry-run ALLOW that does not match would deny",
            policies: vec![dry(allow("da", one(from_ns("c"))))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: Some("deny: no ALLOW policy matched"),
        },
        Case {
            label: "a dry-run ALLOW that matches would allow",
            policies: vec![dry(allow("da", one(from_ns("a"))))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: Some("allow: policy ns/da (dry-run)"),
        },
        Case {
            label: "a dry-run ALLOW would admit what enforced policies deny",
            policies: vec![
                allow("al", one(from_ns("c"))),
                dry(allow("da", one(from_ns("a")))),
            ],
            refs: &[],
            conn: ab(),
            verdict: "deny: no ALLOW policy matched",
            dry_run: Some("allow: policy ns/da (dry-run)"),
        },
        Case {
            label: "when both match, the dry-run ALLOW is named",
            policies: vec![allow("al", all()), dry(allow("da", all()))],
            refs: &[],
            conn: ab(),
            verdict: "allow: policy ns/al",
            dry_run: Some("allow: policy ns/da (dry-run)"),
        },
        Case {
            label: "an enforced ALLOW still allows beside a failing dry-run ALLOW",
            policies: vec![
                allow("al", one(from_ns("a"))),
                dry(allow("da", one(from_ns("c")))),
            ],
            refs: &[],
            conn: ab(),
            verdict: "allow: policy ns/al",
            dry_run: Some("allow: policy ns/al"),
        },
        Case {
            label: "the dry-run DENY is named even when an enforced one matches",
            policies: vec![deny("d", all()), dry(deny("dd", all()))],
            refs: &[],
            conn: ab(),
            verdict: "deny: policy ns/d",
            dry_run: Some("deny: policy ns/dd (dry-run)"),
        },
        Case {
            label: "a dry-run DENY never denies",
            policies: vec![dry(deny("dd", all())), allow("al", all())],
            refs: &[],
            conn: ab(),
            verdict: "allow: policy ns/al",
            dry_run: Some("deny: policy ns/dd (dry-run)"),
        },
        Case {
            label: "a dry-run ALLOW never allows",
            policies: vec![dry(allow("da", all())), allow("al", one(from_ns("c")))],
            refs: &[],
            conn: ab(),
            verdict: "deny: no ALLOW policy matched",
            dry_run: Some("allow: policy ns/da (dry-run)"),
        },
        Case {
            label: "a dry-run ALLOW alone is not an ALLOW policy for the verdict",
            policies: vec![dry(allow("da", vec![]))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: Some("deny: no ALLOW policy matched"),
        },
        Case {
            label: "dry-run degenerate DENY would deny",
            policies: vec![dry(deny("dd", one(m())))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: Some("deny: policy ns/dd (dry-run)"),
        },
        Case {
            label: "dry-run policies of another namespace are not reported",
            policies: vec![dry(policy(
                "other",
                "dd",
                PolicyScope::Namespace,
                PolicyAction::Deny,
                all(),
            ))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: None,
        },
    ]);
}

#[test]
fn decision_helpers_and_display() {
    let snap = snapshot([dry(deny("dd", vec![vec![]])), allow("al", vec![vec![]])]);
    let d = decide(&snap, &workload(&[]), &ab());
    assert!(d.is_allowed());
    assert!(d.dry_run_flips());
    assert_eq!(
        d.to_string(),
        "allow: policy ns/al [dry-run: deny: policy ns/dd (dry-run)]"
    );
    assert_eq!(d.verdict.policy().map(|p| &*p.name), Some("al"));

    let snap = snapshot([deny("d", vec![vec![]])]);
    let d = decide(&snap, &workload(&[]), &ab());
    assert!(!d.is_allowed());
    assert!(!d.dry_run_flips());
    assert_eq!(d.to_string(), "deny: policy ns/d");

    let d = decide(&snapshot([]), &workload(&["ns/x"]), &ab());
    assert!(!d.is_allowed());
    assert_eq!(d.verdict, Verdict::PolicyNotReceived("ns/x".into()));
    assert_eq!(d.verdict.policy(), None);
}
