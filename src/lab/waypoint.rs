//! A stand-in waypoint for lab tests: an HBONE server built from zring's own server pieces,
//! in a pod outside capture (as Istio leaves waypoints), that proves a workload identity over
//! mTLS on 15008, answers every CONNECT 200, reports what it was asked and echoes the stream.
//! It stands for the waypoint's HBONE face only (no L7), which is all node proxies see of it.

use std::future::poll_fn;
use std::sync::mpsc;

use bytes::Bytes;

use super::LabError;
use crate::core::Driver;
use crate::hbone::{server, tls};
use crate::identity::{CertStore, DevCa, Identity, server_config};

/// What the waypoint saw of one CONNECT.
#[derive(Debug)]
pub struct Seen {
    /// The client's identity (the node proxy's tunnel for its pod).
    pub peer_identity: String,
    /// The CONNECT target: the `:authority` asked for.
    pub authority: String,
    pub headers: http::HeaderMap,
}

/// Starts a waypoint in `pod`'s namespace on `0.0.0.0:15008`, as `identity`, with a
/// certificate from the development CA in `ca_dir` (the mesh's); every CONNECT is reported on
/// the returned channel. Runs on a thread of its own until the process ends.
pub fn start(
    pod: &super::Netns,
    ca_dir: &std::path::Path,
    identity: &str,
) -> Result<mpsc::Receiver<Seen>, LabError> {
    let io = |context: &str, e: &dyn std::fmt::Display| LabError::Io {
        context: format!("stand-in waypoint: {context}"),
        source: std::io::Error::other(e.to_string()),
    };
    let id = Identity::parse(identity).map_err(|e| io("identity", &e))?;
    let ca = DevCa::load_or_create(ca_dir).map_err(|e| io("development CA", &e))?;
    let cert = ca.issue(&id).map_err(|e| io("certificate", &e))?;
    let store = CertStore::new(vec![ca.root().clone()])
        .map_err(|e| io("trust store", &e))?
        .with_certs([cert]);
    let config = server_config(&store, &id).map_err(|e| io("TLS config", &e))?;
    let listener = pod
        .run(|| std::net::TcpListener::bind("0.0.0.0:15008"))
        .map_err(|e| io("listening on 15008", &e))?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("lab-waypoint".into())
        .spawn(move || serve(listener, config, tx))
        .map_err(|e| io("thread", &e))?;
    Ok(rx)
}

fn serve(
    listener: std::net::TcpListener,
    config: std::sync::Arc<rustls::ServerConfig>,
    seen: mpsc::Sender<Seen>,
) {
    let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        if listener.set_nonblocking(true).is_err() {
            return;
        }
        let Ok(listener) = monoio::net::TcpListener::from_std(listener) else {
            return;
        };
        while let Ok((tcp, peer)) = listener.accept().await {
            let (config, seen) = (config.clone(), seen.clone());
            monoio::spawn(async move {
                let Ok((io, peer_identity)) =
                    tls::server_handshake(tcp, config, Driver::Legacy).await
                else {
                    return;
                };
                let on_stream = move |req: http::Request<h2::RecvStream>, respond| {
                    let _ = seen.send(Seen {
                        peer_identity: peer_identity.to_string(),
                        authority: req.uri().to_string(),
                        headers: req.headers().clone(),
                    });
                    monoio::spawn(echo(req, respond));
                };
                let _ = server::serve(io, peer, std::future::pending(), on_stream).await;
            });
        }
    });
}

/// Answers 200 and sends the stream's bytes back until its end.
async fn echo(req: http::Request<h2::RecvStream>, respond: h2::server::SendResponse<Bytes>) {
    let Ok(mut send) = server::respond_ok(respond) else {
        return;
    };
    let mut recv = req.into_body();
    while let Some(Ok(data)) = poll_fn(|cx| recv.poll_data(cx)).await {
        // END_STREAM may come on an empty DATA frame.
        if data.is_empty() {
            continue;
        }
        let _ = recv.flow_control().release_capacity(data.len());
        send.reserve_capacity(data.len());
        let _ = poll_fn(|cx| send.poll_capacity(cx)).await;
        if send.send_data(data, false).is_err() {
            return;
        }
    }
    let _ = send.send_data(Bytes::new(), true);
}
