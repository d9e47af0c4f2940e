//! gRPC channels from the control thread to the control plane: the Delta ADS stream
//! (`XDS_ADDRESS`) and the Istio CA (`CA_ADDRESS`). Runs on the control thread's tokio
//! runtime only; cores never hold a channel.
//!
//! - `https://` addresses use TLS (rustls, the backend's default suites, ALPN `h2`) and trust
//!   exactly the PEM certificates of a root file (`XDS_ROOT_CA` / `CA_ROOT_CA`), read on every
//!   connect so a rotated root is picked up. The name verified is the address's host, or the
//!   `ALT_*_HOSTNAME` override (istiod's certificate names `istiod.istio-system.svc` even
//!   when it is reached by another name).
//! - `http://` addresses are plaintext, for tests and local development.
//! - Requests carry `authorization: Bearer <token>` from the token file (`AUTH_TOKEN`, a
//!   projected service-account token istiod reviews), read per request because kubelet
//!   rotates it. A missing token file is an error only when the operator named one; the
//!   default path is optional so plaintext test setups need none.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tonic::codegen::http::Uri;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::crypto::control_plane_provider;

/// How long establishing a connection (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a control-plane channel cannot be set up or a request not be authorized.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("invalid address {address:?}: {reason}")]
    Address {
        address: String,
        reason: &'static str,
    },
    #[error("root certificates {}: {reason}", path.display())]
    Roots { path: PathBuf, reason: String },
    #[error("TLS server name {0:?} is neither a DNS name nor an IP address")]
    ServerName(String),
    #[error("token {}: {reason}", path.display())]
    Token { path: PathBuf, reason: String },
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Where the bearer token comes from.
#[derive(Debug, Clone)]
pub struct TokenFile {
    pub path: PathBuf,
    /// The operator named this file: its absence is an error, not "no token".
    pub required: bool,
}

/// One control-plane endpoint: address, TLS settings and credentials.
#[derive(Debug, Clone)]
pub struct Target {
    address: String,
    uri: Uri,
    tls: Option<Tls>,
    token: Option<TokenFile>,
}

#[derive(Debug, Clone)]
struct Tls {
    roots: PathBuf,
    server_name: String,
}

impl Target {
    /// Checks the address (`http://host:port` or `https://host:port`; `config` has already
    /// turned ztunnel's scheme-less `host:port` into `https://`); TLS settings apply to
    /// `https` only.
    pub fn new(
        address: &str,
        roots: &Path,
        alt_hostname: Option<&str>,
        token: Option<TokenFile>,
    ) -> Result<Target, GrpcError> {
        let bad = |reason| GrpcError::Address {
            address: address.to_owned(),
            reason,
        };
        let uri: Uri = address.parse().map_err(|_| bad("not a URI"))?;
        let host = uri.host().filter(|h| !h.is_empty()).ok_or(bad("no host"))?;
        // `Uri` keeps a port it cannot read (`istiod:port`) and reports none.
        let authority = uri.authority().map_or("", |a| a.as_str());
        let after_host = authority
            .rsplit_once(']')
            .map_or(authority, |(_, rest)| rest);
        if let Some((_, port)) = after_host.rsplit_once(':')
            && port.parse::<u16>().is_err()
        {
            return Err(bad("the port is not a number from 0 to 65535"));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad("a path is not allowed"));
        }
        let tls = match uri.scheme_str() {
            Some("https") => {
                let server_name = alt_hostname.unwrap_or(host.trim_matches(['[', ']']));
                ServerName::try_from(server_name.to_owned())
                    .map_err(|_| GrpcError::ServerName(server_name.to_owned()))?;
                Some(Tls {
                    roots: roots.to_owned(),
                    server_name: server_name.to_owned(),
                })
            }
            Some("http") => None,
            _ => return Err(bad("the scheme must be http:// or https://")),
        };
        Ok(Target {
            address: address.to_owned(),
            uri,
            tls,
            token,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects now; the channel is good for one stream's life (the xDS client reconnects
    /// with its own backoff).
    pub async fn connect(&self) -> Result<Channel, GrpcError> {
        let endpoint = self.endpoint();
        let channel = match &self.tls {
            None => endpoint.connect_with_connector(plain_connector()).await,
            Some(tls) => {
                endpoint
                    .connect_with_connector(tls_connector(tls_config(tls)?, &tls.server_name)?)
                    .await
            }
        };
        channel.map_err(|source| GrpcError::Connect {
            address: self.address.clone(),
            source,
        })
    }

    /// A channel that connects on first use and reconnects by itself (the CA client's: one
    /// unary request per certificate, hours apart).
    pub fn connect_lazy(&self) -> Result<Channel, GrpcError> {
        let endpoint = self.endpoint();
        Ok(match &self.tls {
            None => endpoint.connect_with_connector_lazy(plain_connector()),
            Some(tls) => endpoint
                .connect_with_connector_lazy(tls_connector(tls_config(tls)?, &tls.server_name)?),
        })
    }

    /// Adds the bearer token to a request, if there is one.
    pub fn authorize<T>(&self, request: &mut tonic::Request<T>) -> Result<(), GrpcError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let error = |reason: String| GrpcError::Token {
            path: token.path.clone(),
            reason,
        };
        let bytes = match std::fs::read(&token.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !token.required => return Ok(()),
            Err(e) => return Err(error(e.to_string())),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| error("not UTF-8".into()))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(error("the file is empty".into()));
        }
        let value = AsciiMetadataValue::try_from(format!("Bearer {text}"))
            .map_err(|_| error("not a valid header value".into()))?;
        request.metadata_mut().insert("authorization", value);
        Ok(())
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::from(self.uri.clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
    }
}

type Connecting<T> = std::pin::Pin<Box<dyn Future<Output = io::Result<T>> + Send>>;
type Io<T> = hyper_util::rt::TokioIo<T>;

fn plain_connector() -> impl tower::Service<
    Uri,
    Response = Io<tokio::net::TcpStream>,
    Error = io::Error,
    Future = Connecting<Io<tokio::net::TcpStream>>,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|uri: Uri| -> Connecting<_> {
        Box::pin(async move { Ok(Io::new(tcp(&uri).await?)) })
    })
}

type TlsIo = Io<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

fn tls_connector(
    config: Arc<ClientConfig>,
    server_name: &str,
) -> Result<
    impl tower::Service<Uri, Response = TlsIo, Error = io::Error, Future = Connecting<TlsIo>>
    + Clone
    + Send
    + 'static,
    GrpcError,
> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| GrpcError::ServerName(server_name.to_owned()))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    Ok(tower::service_fn(move |uri: Uri| -> Connecting<_> {
        let (connector, name) = (connector.clone(), name.clone());
        Box::pin(async move {
            let stream = connector.connect(name, tcp(&uri).await?).await?;
            Ok(Io::new(stream))
        })
    }))
}

async fn tcp(uri: &Uri) -> io::Result<tokio::net::TcpStream> {
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn tls_config(tls: &Tls) -> Result<Arc<ClientConfig>, GrpcError> {
    let error = |reason: String| GrpcError::Roots {
        path: tls.roots.clone(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in load_certs(&tls.roots).map_err(error)? {
        roots.add(cert).map_err(|e| GrpcError::Roots {
            path: tls.roots.clone(),
            reason: e.to_string(),
        })?;
    }
    let mut config = ClientConfig::builder_with_provider(control_plane_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Every PEM certificate in `path`; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        let roots = Path::new("/nonexistent/root-cert.pem");
        let t = Target::new("https://istiod.istio-system.svc:15012", roots, None, None).unwrap();
        assert!(t.is_tls());
        assert!(
            !Target::new("http://127.0.0.1:15010", roots, None, None)
                .unwrap()
                .is_tls()
        );
        for bad in [
            "istiod:15012",
            "ftp://istiod:15012",
            "https://",
            "https://istiod:15012/some/path",
            "",
        ] {
            assert!(
                matches!(
                    Target::new(bad, roots, None, None),
                    Err(GrpcError::Address { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Target::new("https://10.0.0.1:15012", roots, Some("bad name!"), None),
            Err(GrpcError::ServerName(_))
        ));
    }

    #[test]
    fn bearer_token_is_read_per_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let target = |required| {
            Target::new(
                "http://127.0.0.1:1",
                Path::new("/x"),
                None,
                Some(TokenFile {
                    path: path.clone(),
                    required,
                }),
            )
            .unwrap()
        };
        let header = |t: &Target| {
            let mut r = tonic::Request::new(());
            t.authorize(&mut r).map(|()| {
                r.metadata()
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned())
            })
        };
        assert_eq!(header(&target(false)).unwrap(), None, "optional and absent");
        assert!(matches!(
            header(&target(true)),
            Err(GrpcError::Token { .. })
        ));
        std::fs::write(&path, "tok-1\n").unwrap();
        assert_eq!(
            header(&target(true)).unwrap().as_deref(),
            Some("Bearer tok-1")
        );
        std::fs::write(&path, "tok-2").unwrap();
        assert_eq!(
            header(&target(false)).unwrap().as_deref(),
            Some("Bearer tok-2"),
            "rotated tokens are picked up"
        );
        std::fs::write(&path, "").unwrap();
        assert!(
            header(&target(false)).is_err(),
            "an empty token is an error"
        );
        std::fs::write(&path, "a\nb").unwrap();
        assert!(header(&target(false)).is_err());
    }

    #[test]
    fn roots_must_be_pem_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.pem");
        std::fs::write(&path, "not a cert").unwrap();
        assert!(load_certs(&path).is_err());
        assert!(load_certs(&dir.path().join("missing")).is_err());
        std::fs::write(&path, "").unwrap();
        assert!(load_certs(&path).is_err(), "no certificate at all");
        let (a, b) = (
            crate::identity::DevCa::generate().unwrap(),
            crate::identity::DevCa::generate().unwrap(),
        );
        let bundle = crate::identity::pem_certificate(a.root())
            + &crate::identity::pem_certificate(b.root());
        std::fs::write(&path, bundle).unwrap();
        assert_eq!(
            load_certs(&path).unwrap(),
            vec![a.root().clone(), b.root().clone()]
        );
    }
}
