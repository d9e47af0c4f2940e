//! The control-plane addresses (`XDS_ADDRESS`, `CA_ADDRESS`) and their defaults, read as
//! ztunnel reads them, with the root and token files that go with them. Runs once at start-up
//! on the main thread, inside [`Config::from_lookup`](super::Config::from_lookup).

use std::path::Path;

use super::ConfigError;
use super::parse::{err, parse_bool};
use crate::grpc::{Target, TokenFile};

/// ztunnel's default locations (it runs from `/`) for the mesh root and the istiod token.
pub const DEFAULT_ROOT_CA: &str = "/var/run/secrets/istio/root-cert.pem";
pub const DEFAULT_AUTH_TOKEN: &str = "/var/run/secrets/tokens/istio-token";
/// ztunnel's control-plane address when `XDS_ADDRESS` / `CA_ADDRESS` are unset, in a
/// Kubernetes pod (`KUBERNETES_SERVICE_HOST` set) and elsewhere.
pub const ISTIOD_IN_CLUSTER: &str = "https://istiod.istio-system.svc:15012";
pub const ISTIOD_LOCAL: &str = "https://localhost:15012";

/// What [`control_plane`] chose.
pub(super) struct ControlPlane {
    /// istiod's Delta ADS endpoint; `None`: no xDS.
    pub xds: Option<Target>,
    /// The Istio CA; `None`: the built-in development CA.
    pub ca: Option<Target>,
    /// How each address was chosen, one line each.
    pub notes: Vec<String>,
}

/// The istiod endpoints (`None`: off) and one note per choice, for `zring check`. A local
/// config file (`local_xds_file`) turns the xDS default off; naming both sources is an error.
pub(super) fn control_plane(
    get: &impl Fn(&str) -> Option<String>,
    local_xds_file: bool,
) -> Result<ControlPlane, ConfigError> {
    let var = |name: &'static str| get(name).filter(|v| !v.is_empty());
    let auth_token = match var("AUTH_TOKEN") {
        Some(p) => TokenFile {
            path: p.into(),
            required: true,
        },
        None => TokenFile {
            path: DEFAULT_AUTH_TOKEN.into(),
            required: false,
        },
    };
    // ztunnel's rule for both addresses: unset means istiod, empty means off, no scheme
    // means TLS. zring takes its config from one source, so a local file turns the xDS
    // default off (ztunnel would layer the file under xDS; naming both is refused below).
    let istiod = match var("KUBERNETES_SERVICE_HOST") {
        Some(_) => ISTIOD_IN_CLUSTER,
        None => ISTIOD_LOCAL,
    };
    let mut notes = Vec::new();
    let xds_address = match get("XDS_ADDRESS") {
        None if local_xds_file => {
            notes.push(
                "XDS_ADDRESS unset with LOCAL_XDS_PATH: no xDS, the file is the config".into(),
            );
            None
        }
        raw => resolve_address("XDS_ADDRESS", raw, istiod, &mut notes),
    };
    let ca_address = if parse_bool("FAKE_CA", var("FAKE_CA"), false)? {
        notes.push("FAKE_CA=true: the built-in development CA".into());
        None
    } else {
        resolve_address("CA_ADDRESS", get("CA_ADDRESS"), istiod, &mut notes)
    };
    let target =
        |address: &'static str, a: Option<String>, roots: &'static str, alt: &'static str| {
            let Some(a) = a else {
                return Ok(None);
            };
            let roots = var(roots).unwrap_or_else(|| DEFAULT_ROOT_CA.into());
            if roots == "SYSTEM" {
                return Err(err(
                    address,
                    &a,
                    "system roots (SYSTEM) are not supported; name a PEM file",
                ));
            }
            Target::new(
                &a,
                Path::new(&roots),
                var(alt).as_deref(),
                Some(auth_token.clone()),
            )
            .map(Some)
            .map_err(|e| err(address, &a, &e.to_string()))
        };
    let xds = target(
        "XDS_ADDRESS",
        xds_address,
        "XDS_ROOT_CA",
        "ALT_XDS_HOSTNAME",
    )?;
    let ca = target("CA_ADDRESS", ca_address, "CA_ROOT_CA", "ALT_CA_HOSTNAME")?;
    if let (Some(x), true) = (&xds, local_xds_file) {
        return Err(err(
            "XDS_ADDRESS",
            x.address(),
            "LOCAL_XDS_PATH is set too, and zring takes its config from one source \
             (ztunnel would layer the file under xDS); set XDS_ADDRESS= (empty) to use the file",
        ));
    }
    Ok(ControlPlane { xds, ca, notes })
}

/// One control-plane address as ztunnel reads it: unset is `default`, empty (or blank) is
/// off, `host:port` without a scheme is TLS; each choice is noted for `zring check`.
pub(super) fn resolve_address(
    name: &'static str,
    raw: Option<String>,
    default: &str,
    notes: &mut Vec<String>,
) -> Option<String> {
    let resolved = match raw.as_deref().map(str::trim) {
        None => {
            notes.push(format!("{name} unset: {default} (ztunnel's default)"));
            return Some(default.to_owned());
        }
        Some("") => {
            notes.push(format!("{name} empty: off"));
            return None;
        }
        Some(a) if a.contains("://") => a.to_owned(),
        Some(a) => format!("https://{a}"),
    };
    notes.push(format!("{name}: {resolved}"));
    Some(resolved)
}
