//! The `zring` command line: parse the subcommand, validate configuration, hand over to `app`.
//! `proxy ztunnel` (what Istio's ztunnel chart passes) and `proxy` are `run`.
//!
//! Runs on the main thread. Configuration comes from the environment (see `zring --help`);
//! errors print as one line and exit non-zero.

use std::process::ExitCode;

use zring::config::{Config, NOT_IMPLEMENTED, VARS};

#[global_allocator]
static GLOBAL: zring::sys::alloc::Counting = zring::sys::alloc::Counting::new();

fn usage() -> String {
    let mut s = String::from(
        "zring: a node proxy for Istio's ambient mesh, one io_uring runtime per core.

Usage:
  zring [run]     run the proxy on this node (proxies on 15001, 15006, 15008; admin on
                  127.0.0.1:15000, read-only in node mode, and on ZRING_ADMIN_SOCKET; metrics
                  on :15020, readiness and liveness on :15021)
  zring proxy [ztunnel]
                  the same, as Istio's ztunnel chart starts it (`proxy ztunnel`)
  zring demo      as root: build the seed's two-node cluster in network namespaces, run zring
                  on each node, send traffic appa → appb, print the access logs, clean up
  zring check     validate the environment and LOCAL_XDS_PATH, then exit
  zring redirect print|apply|remove
                  the node's capture rules (nftables TPROXY + policy routing, table ip zring):
                  print the nft script, install it in this network namespace (idempotent), or
                  remove it. Takes ZRING_POD_CIDRS (comma-separated, required for print/apply)
                  and ZRING_POD_INTERFACES (nft iifname pattern of pod interfaces, default
                  veth*); the rules assume PACKET_MARK 1337. deploy/ runs `apply` at start-up.
  zring admin [METHOD] PATH
                  one request to the admin API's Unix socket (ZRING_ADMIN_SOCKET), the only
                  place node mode takes mutating requests: e.g. `zring admin POST /quitquitquit`,
                  `zring admin POST '/logging?level=debug'`; METHOD defaults to GET
  zring help      show this help (also -h, --help)
  zring version   show the version (also -V, --version)

Capture modes (PROXY_MODE):
  shared          in-pod, as ztunnel (Istio >= 1.21): istio-cni's node agent hands each
                  enrolled pod's network namespace over INPOD_UDS; zring listens on 15001,
                  15006, 15008 inside every such pod, once per core, and makes that pod's
                  upstream sockets inside it (source: the pod's IP, marked PACKET_MARK)
  node            node-level: zring listens in the node's namespace (IP_TRANSPARENT) and the
                  node's TPROXY rules (`zring redirect apply`) send enrolled pods' traffic there
  Unset: shared (in-pod), as ztunnel; any other value is refused. Both modes run the
  same data path (routing, HBONE, authorization, access logs, metrics).

Control plane: like ztunnel, XDS_ADDRESS and CA_ADDRESS default to istiod (ISTIOD below:
https://istiod.istio-system.svc:15012 in a Kubernetes pod, https://localhost:15012 elsewhere),
read host:port without a scheme as TLS, and are off when set to the empty string: run without
istiod as `XDS_ADDRESS= CA_ADDRESS= LOCAL_XDS_PATH=config.yaml zring run` (the local file, the
built-in development CA). LOCAL_XDS_PATH alone turns only the xDS default off. `zring check`
shows what was chosen.

Configuration (environment):
",
    );
    // Name and default, then the help from a fixed column; a long pair pushes the help to
    // the next line rather than out of alignment.
    const HELP_COLUMN: usize = 52;
    let name_width = VARS.iter().map(|v| v.name.len()).max().unwrap_or(0);
    for v in VARS {
        let head = format!("  {:<name_width$} {}", v.name, v.default);
        if head.chars().count() < HELP_COLUMN {
            s.push_str(&format!("{head:<HELP_COLUMN$}{}\n", v.help));
        } else {
            s.push_str(&format!("{head}\n{:HELP_COLUMN$}{}\n", "", v.help));
        }
    }
    s.push_str(
        "
Accepted for ztunnel compatibility but not implemented (a set one is logged at start-up):
",
    );
    for u in NOT_IMPLEMENTED {
        s.push_str(&format!("  {:<28} {}\n", u.name, u.what));
    }
    s
}

/// What `zring` was asked to do, from its arguments.
#[derive(Debug, PartialEq, Eq)]
enum Command<'a> {
    Run,
    Check,
    Demo,
    Help,
    Version,
    Redirect(Option<&'a str>, Option<&'a String>),
    /// `admin [METHOD] PATH`: method, path.
    Admin(&'a str, &'a str),
}

/// Reads the arguments; `Err` is the one-line complaint (exit status 2).
fn command(args: &[String]) -> Result<Command<'_>, String> {
    let first = args.first().map(String::as_str);
    if first == Some("redirect") {
        return Ok(Command::Redirect(
            args.get(1).map(String::as_str),
            args.get(2),
        ));
    }
    if first == Some("admin") {
        return match &args[1..] {
            [path] => Ok(Command::Admin("GET", path)),
            [method, path] => Ok(Command::Admin(method, path)),
            _ => Err("usage: zring admin [METHOD] PATH (see zring --help)".into()),
        };
    }
    // `proxy [TYPE]` is ztunnel's spelling of run; Istio's chart passes `proxy ztunnel`.
    let rest = match first {
        Some("proxy") => match args.get(1).map(String::as_str) {
            None | Some("ztunnel") => &args[args.len().min(2)..],
            Some(other) => {
                return Err(format!(
                    "proxy type {other:?} is not supported: zring is a node proxy, \
                     `zring proxy ztunnel` (see zring --help)"
                ));
            }
        },
        _ => args.get(1..).unwrap_or_default(),
    };
    if let Some(extra) = rest.first() {
        return Err(format!("unexpected argument {extra:?} (see zring --help)"));
    }
    Ok(match first.unwrap_or("run") {
        "run" | "proxy" => Command::Run,
        "check" => Command::Check,
        "demo" => Command::Demo,
        "help" | "-h" | "--help" => Command::Help,
        "version" | "-V" | "--version" => Command::Version,
        other => return Err(format!("unknown command {other:?} (see zring --help)")),
    })
}

fn main() -> ExitCode {
    zring::sys::alloc::configure();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match command(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zring: {e}");
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Redirect(action, extra) => return redirect(action, extra),
        Command::Admin(method, path) => return admin(method, path),
        Command::Help => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("zring {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Demo => {
            init_logging_to_stderr_quietly();
            return match zring::demo::run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("zring demo: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Run | Command::Check => {
            // Before anything is opened: the exec replaces this process (sys::memcpy).
            if let Err(e) = zring::sys::memcpy::reexec_if_needed() {
                eprintln!("zring: executing again with GLIBC_TUNABLES failed, carrying on: {e}");
            }
        }
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zring: {e}");
            return ExitCode::from(2);
        }
    };
    if cmd == Command::Check {
        return match zring::app::check(&config) {
            Ok(report) => {
                print!("{report}");
                for note in &config.notes {
                    println!("control plane: {note}");
                }
                for line in &config.not_implemented {
                    println!("not implemented (accepted): {line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("zring: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    // The guard flushes the log writer's queue when main returns.
    let (logs, _flush) = zring::logging::init(config.log_format);
    for note in &config.notes {
        tracing::info!("control plane: {note}");
    }
    for line in &config.not_implemented {
        tracing::warn!("accepted but not implemented: {line}");
    }
    match zring::app::run(config, Some(logs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("zring: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `zring admin METHOD PATH`: prints the answer's body; fails unless the status is 2xx.
fn admin(method: &str, path: &str) -> ExitCode {
    let socket = match std::env::var("ZRING_ADMIN_SOCKET") {
        Ok(p) if !p.is_empty() && p != "off" => std::path::PathBuf::from(p),
        _ => std::env::temp_dir().join(zring::config::DEFAULT_ADMIN_SOCKET),
    };
    match zring::admin::client::request(&socket, &method.to_ascii_uppercase(), path) {
        Ok((status, body)) => {
            print!("{body}");
            if (200..300).contains(&status) {
                ExitCode::SUCCESS
            } else {
                eprintln!("zring admin: {method} {path}: status {status}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("zring admin: {}: {e}", socket.display());
            ExitCode::FAILURE
        }
    }
}

/// `zring redirect ACTION`: the node's capture rules, from the same text the lab installs.
fn redirect(action: Option<&str>, extra: Option<&String>) -> ExitCode {
    use zring::capture::{self, Capture, Place};
    if let Some(extra) = extra {
        eprintln!("zring redirect: unexpected argument {extra:?}");
        return ExitCode::from(2);
    }
    let capture = || -> anyhow::Result<Capture> {
        let config = Config::from_env()?;
        anyhow::ensure!(
            config.packet_mark == capture::ZRING_MARK,
            "PACKET_MARK={} but the capture rules recognise zring's sockets by mark {}",
            config.packet_mark,
            capture::ZRING_MARK
        );
        let cidrs = std::env::var("ZRING_POD_CIDRS")
            .map_err(|_| anyhow::anyhow!("ZRING_POD_CIDRS is not set (e.g. 10.244.0.0/16)"))?;
        let ifaces = std::env::var("ZRING_POD_INTERFACES").unwrap_or_else(|_| "veth*".into());
        // Pods' DNS to the DNS proxy only when asked for explicitly: the rule's REDIRECT
        // needs an IPv4 address on the node side of each pod's veth, which not every CNI has.
        let dns =
            std::env::var("ISTIO_META_DNS_CAPTURE").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        Capture::parse(&cidrs, &ifaces)
            .map(|c| {
                c.with_dns(dns && config.dns.enabled)
                    .with_ipv6(config.ipv6_enabled)
            })
            .map_err(|e| {
                anyhow::anyhow!("ZRING_POD_CIDRS={cidrs:?} ZRING_POD_INTERFACES={ifaces:?}: {e}")
            })
    };
    let result = match action {
        Some("print") => capture().map(|c| {
            print!("{}", capture::script(&c));
            let v6 = c.ipv6.then(capture::policy_routing6);
            for line in capture::policy_routing()
                .into_iter()
                .chain(v6.into_iter().flatten())
            {
                println!("# then: ip {line}");
            }
        }),
        Some("apply") => capture().and_then(|c| {
            let c = capture::install(Place::Here, &c)?;
            println!(
                "zring redirect: capture installed (table ip {}{}, pods {:?} behind {:?})",
                capture::TABLE,
                if c.ipv6 { " and table ip6" } else { "" },
                c.pod_cidrs
                    .iter()
                    .map(ToString::to_string)
                    .chain(c.pod_cidrs6.iter().map(ToString::to_string))
                    .collect::<Vec<_>>(),
                c.pod_interfaces
            );
            Ok(())
        }),
        Some("remove") => capture::remove(Place::Here)
            .map(|()| println!("zring redirect: capture removed"))
            .map_err(Into::into),
        other => {
            eprintln!("zring redirect: expected print, apply or remove, got {other:?}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zring redirect: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The demo prints its own story on stdout; library warnings (e.g. from the lab) go to stderr.
fn init_logging_to_stderr_quietly() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
}
