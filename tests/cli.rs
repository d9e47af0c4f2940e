//! The command line as a user meets it: help, version, and one-line errors for bad
//! configuration, each with a non-zero exit. No root needed.

use std::process::Command;

const ZRING: &str = env!("CARGO_BIN_EXE_zring");

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(ZRING);
    cmd.args(args).env_remove("LOCAL_XDS_PATH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_variable() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for v in zring::config::VARS {
        assert!(out.contains(v.name), "{} missing from --help", v.name);
    }
}

#[test]
fn version() {
    let (code, out, _) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("zring "));
}

#[test]
fn bad_variable_is_one_line_naming_it() {
    for (k, v) in [
        ("ZRING_CORES", "lots"),
        ("ZRING_DRIVER", "kqueue"),
        ("PACKET_MARK", "-1"),
        ("XDS_ADDRESS", "istiod:15012"),
        ("CA_ADDRESS", "ftp://istiod:15012"),
        ("SECRET_TTL", "1s"),
    ] {
        let (code, out, err) = run(&["run"], &[(k, v)]);
        assert_eq!(code, 2, "{k}={v}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(k), "{err}");
    }
}

#[test]
fn unknown_command_and_extra_arguments() {
    assert_eq!(run(&["frobnicate"], &[]).0, 2);
    assert_eq!(run(&["run", "extra"], &[]).0, 2);
}

#[test]
fn broken_yaml_is_refused_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    std::fs::write(
        &p,
        "workloads:\n- name: x\n  namespace: ns\n  workloadIps: [\"not-an-ip\"]\n  services: {}\n",
    )
    .unwrap();
    let path = p.to_str().unwrap();
    for cmd in ["check", "run"] {
        let (code, out, err) = run(&[cmd], &[("LOCAL_XDS_PATH", path), ("ZRING_CORES", "1")]);
        assert_ne!(code, 0, "{cmd}: {out}{err}");
        assert!(
            err.contains("LOCAL_XDS_PATH") && err.contains("not-an-ip"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn check_accepts_the_seed_config() {
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/seed-two-nodes.yaml"
    );
    let (code, out, err) = run(&["check"], &[("LOCAL_XDS_PATH", seed)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 workloads, 1 services, 1 policies"), "{out}");
}

#[test]
fn redirect_prints_the_lab_ruleset_for_a_real_node() {
    let (code, out, err) = run(
        &["redirect", "print"],
        &[
            ("ZRING_POD_CIDRS", "10.244.0.0/16"),
            ("ZRING_POD_INTERFACES", "cali*"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let capture = zring::lab::Capture::parse("10.244.0.0/16", "cali*").unwrap();
    let script = zring::capture::script(&capture);
    assert!(out.starts_with(&script), "{out}");
    assert!(
        out.contains("# then: ip rule add fwmark 0x111 lookup 133"),
        "{out}"
    );
}

#[test]
fn redirect_refuses_missing_or_unsafe_parameters() {
    for (env, needle) in [
        (vec![], "ZRING_POD_CIDRS"),
        (
            vec![("ZRING_POD_CIDRS", "10.244.0.1/16")],
            "ZRING_POD_CIDRS",
        ),
        (
            vec![
                ("ZRING_POD_CIDRS", "10.244.0.0/16"),
                ("ZRING_POD_INTERFACES", "veth\" accept"),
            ],
            "ZRING_POD_INTERFACES",
        ),
        (
            vec![("ZRING_POD_CIDRS", "10.244.0.0/16"), ("PACKET_MARK", "7")],
            "PACKET_MARK",
        ),
    ] {
        let mut cmd = Command::new(ZRING);
        cmd.args(["redirect", "print"])
            .env_remove("ZRING_POD_CIDRS");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{env:?}: {err}");
        assert!(err.contains(needle), "{env:?}: {err}");
    }
    assert_eq!(run(&["redirect"], &[]).0, 2);
    assert_eq!(run(&["redirect", "print", "extra"], &[]).0, 2);
}
