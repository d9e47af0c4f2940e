//! The command line as a user meets it: help, version, and one-line errors for bad
//! configuration, each with a non-zero exit. No root needed.

use std::process::Command;

const ZRING: &str = env!("CARGO_BIN_EXE_zring");

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(ZRING);
    cmd.args(args).env_remove("LOCAL_XDS_PATH");
    // The control plane as the caller's environment has it would change the answers.
    for k in [
        "XDS_ADDRESS",
        "CA_ADDRESS",
        "KUBERNETES_SERVICE_HOST",
        "FAKE_CA",
    ] {
        cmd.env_remove(k);
    }
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
    for u in zring::config::NOT_IMPLEMENTED {
        assert!(out.contains(u.name), "{} missing from --help", u.name);
    }
    assert!(out.contains("zring proxy [ztunnel]") && out.contains("XDS_ADDRESS= CA_ADDRESS="));
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
        ("XDS_ADDRESS", "istiod:15012/xds"),
        ("CA_ADDRESS", "ftp://istiod:15012"),
        ("CA_ADDRESS", "istiod:port"),
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
    for args in [
        &["proxy", "sidecar"][..],
        &["proxy", "router"],
        &["proxy", "ztunnel", "extra"],
        &["check", "extra"],
    ] {
        let (code, out, err) = run(args, &[]);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("zring --help"), "{args:?}: {err}");
    }
    let (_, _, err) = run(&["proxy", "sidecar"], &[]);
    assert!(
        err.contains("\"sidecar\"") && err.contains("proxy ztunnel"),
        "{err}"
    );
}

/// Istio's ztunnel chart starts the container with `proxy ztunnel`; `proxy` alone is ztunnel's
/// default command too. Both reach `run`: a bad variable is reported the way `run` reports it.
#[test]
fn proxy_ztunnel_is_run() {
    for args in [&["proxy", "ztunnel"][..], &["proxy"], &["run"], &[]] {
        let (code, out, err) = run(args, &[("ZRING_CORES", "lots")]);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.starts_with("zring: invalid ZRING_CORES="),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn check_explains_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("root-cert.pem");
    std::fs::write(&roots, a_root_pem()).unwrap();
    let roots = roots.to_str().unwrap();
    // Unset: ztunnel's defaults, by service name inside a pod.
    let (code, out, err) = run(
        &["check"],
        &[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("CA_ROOT_CA", roots),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("xds: Delta ADS from https://istiod.istio-system.svc:15012"),
        "{out}"
    );
    assert!(
        out.contains("ca: Istio CA at https://istiod.istio-system.svc:15012"),
        "{out}"
    );
    assert!(out.contains("XDS_ADDRESS unset"), "{out}");
    // The chart's scheme-less address is TLS.
    let (code, out, err) = run(
        &["check"],
        &[
            ("XDS_ADDRESS", "istiod-canary.istio-system.svc:15012"),
            ("CA_ROOT_CA", roots),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("xds: Delta ADS from https://istiod-canary.istio-system.svc:15012"),
        "{out}"
    );
    // Empty: off.
    let (code, out, err) = run(&["check"], &[("XDS_ADDRESS", ""), ("CA_ADDRESS", "")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("xds: off") && out.contains("ca: built-in development CA"),
        "{out}"
    );
    assert!(out.contains("XDS_ADDRESS empty: off"), "{out}");
    // An unimplemented ztunnel feature is accepted and named.
    let (code, out, err) = run(
        &["check"],
        &[
            ("XDS_ADDRESS", ""),
            ("CA_ADDRESS", ""),
            ("XDS_ON_DEMAND", "true"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("not implemented (accepted): XDS_ON_DEMAND=true"),
        "{out}"
    );
}

/// A root certificate's PEM, enough for the root file `check` loads.
fn a_root_pem() -> String {
    let ca = zring::identity::DevCa::generate().unwrap();
    zring::identity::pem_certificate(ca.root())
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
        let (code, out, err) = run(
            &[cmd],
            &[
                ("LOCAL_XDS_PATH", path),
                ("CA_ADDRESS", ""),
                ("ZRING_CORES", "1"),
            ],
        );
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
    let (code, out, err) = run(&["check"], &[("LOCAL_XDS_PATH", seed), ("CA_ADDRESS", "")]);
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

/// `zring admin`: a usage error without a path; a clear failure when nothing listens on the
/// socket (the socket's name in the message).
#[test]
fn admin_needs_a_path_and_names_the_socket() {
    let (code, _, err) = run(&["admin"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("usage: zring admin"), "{err}");
    let (code, _, err) = run(&["admin", "POST", "/x", "extra"], &[]);
    assert_eq!(code, 2, "{err}");
    let missing = std::env::temp_dir().join(format!("zring-no-admin-{}.sock", std::process::id()));
    let missing = missing.display().to_string();
    let (code, _, err) = run(
        &["admin", "POST", "/quitquitquit"],
        &[("ZRING_ADMIN_SOCKET", &missing)],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&missing), "{err}");
}

/// `zring run` and `zring check` execute themselves again with glibc's `rep movsb` threshold
/// raised on AMD CPUs (`sys::memcpy`); `check` reports what is in force. The caller's
/// environment lacks the tunable, so the line naming it proves the second exec happened.
#[test]
fn large_copies_are_steered_off_rep_movsb_on_amd_cpus() {
    let vendor = zring::sys::memcpy::cpu_vendor().expect("/proc/cpuinfo names the CPU vendor");
    let amd = vendor == "AuthenticAMD";
    let ours = "glibc.cpu.x86_rep_movsb_threshold=1073741824";
    let check = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(ZRING);
        cmd.arg("check")
            .env_remove("LOCAL_XDS_PATH")
            .env_remove("GLIBC_TUNABLES")
            .env_remove("ZRING_MEMCPY_TUNING")
            .env("XDS_ADDRESS", "")
            .env("CA_ADDRESS", "");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{env:?}: {stdout}");
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("large copies: "))
            .unwrap_or_else(|| panic!("{env:?}: no `large copies` line in {stdout}"))
            .to_owned()
    };
    let with_default = check(&[]);
    let with_others = check(&[("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")]);
    if amd {
        assert_eq!(with_default, format!("GLIBC_TUNABLES={ours}"));
        assert_eq!(
            with_others,
            format!("GLIBC_TUNABLES=glibc.malloc.arena_max=2:{ours}")
        );
    } else {
        assert_eq!(
            with_default,
            format!("glibc's default (CPU vendor {vendor})")
        );
        assert_eq!(with_others, with_default);
    }
    // The operator's own threshold wins, and the switch turns the tuning off.
    let theirs = "glibc.cpu.x86_rep_movsb_threshold=8192";
    assert_eq!(
        check(&[("GLIBC_TUNABLES", theirs)]),
        format!("GLIBC_TUNABLES={theirs}")
    );
    assert_eq!(
        check(&[("ZRING_MEMCPY_TUNING", "off")]),
        "glibc's default (ZRING_MEMCPY_TUNING=off)"
    );
}
