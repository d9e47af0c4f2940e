//! In-pod mode on a core: the task that takes this core's mail (`inpod::handoff`), starts and
//! stops enrolled pods' listeners, delivers upstream sockets made inside pods' netns, and the
//! accept loops and connection tasks of those listeners.
//!
//! Runs on one core; everything here is `Rc`/`Cell`, never shared with another thread.
//!
//! Lifecycle of one pod on this core: `AddPod` registers the pod and spawns one accept loop
//! per listener, then confirms. `RemovePod` fires the pod's `stop` (its accept loops drop their
//! listeners) and confirms once every loop has ended, so the agent's `Ack` of a `del` means the
//! pod's ports are closed on this core; its open connections go on until they end or until the
//! drain deadline, when its `kill` fires and cuts them. The pod's `PodCtx` (and with it the
//! netns descriptor) goes with the last task that holds it.
//!
//! A connection accepted in a pod is served by the same data path as node mode
//! (`proxy::outbound`, `proxy::inbound_passthrough`, `proxy::inbound`), given
//! [`Capture::Pod`] with the pod's [`CorePod`] (original destination, upstream sockets from the
//! pod's netns, the pod's workload); this file only counts the pod's connections and cuts them
//! at the drain deadline after the pod's removal. A removal also forgets the pod's pooled HBONE
//! connections (`Pool::close_pod`) and sends GOAWAY on its inbound HBONE connections.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpListener;
use tracing::{debug, error, info};

use crate::core::CoreCtx;
use crate::dns::{self, CoreDns, Origin, UdpUpstream};
use crate::inpod::factory::DnsSockets;
use crate::inpod::handoff::{CoreAnswer, CoreMail, Inbox};
use crate::inpod::pod::{CorePod, PodPort, Upstreams};
use crate::latch::Latch;
use crate::proxy::{self, Capture};

/// One pod served by this core.
#[derive(Debug)]
struct Served {
    /// The pod; its `removed` latch fires on removal: accept loops end and drop their
    /// listeners, inbound HBONE connections get GOAWAY.
    pod: Rc<CorePod>,
    /// Fired at the drain deadline after removal: connections still open are cut.
    kill: Latch<()>,
    /// Accept loops still running; `closed` fires when it reaches 0 after `stop`.
    loops: Cell<usize>,
    closed: Latch<()>,
    /// Connections open; `emptied` fires when it reaches 0 after `stop`.
    conns: Cell<u64>,
    emptied: Latch<()>,
}

/// The core's pod task: runs for the core's life. `dns`: the core's DNS proxy, when it is on.
pub(super) async fn run(ctx: Rc<CoreCtx>, inbox: Inbox, dns: Option<Rc<CoreDns>>) {
    let mut inbox = match inbox.into_core() {
        Ok(i) => i,
        Err(e) => {
            error!(core = ctx.id, "in-pod mail cannot reach this core: {e}");
            return;
        }
    };
    let upstreams = Rc::new(Upstreams::new(inbox.own().clone()));
    let mut pods: HashMap<String, Rc<Served>> = HashMap::new();
    loop {
        let batch = match inbox.recv().await {
            Ok(b) => b,
            Err(e) => {
                error!(core = ctx.id, "in-pod mail stopped: {e}");
                return;
            }
        };
        for mail in batch {
            match mail {
                CoreMail::AddPod {
                    pod,
                    listeners,
                    dns: dns_sockets,
                    done,
                } => {
                    if let Some(old) = pods.remove(&pod.uid) {
                        // An add that timed out before and is retried: the old listeners go.
                        remove(&ctx, old, None);
                    }
                    let uid = pod.uid.clone();
                    let served = Rc::new(Served {
                        pod: Rc::new(CorePod::new(pod, upstreams.clone())),
                        kill: Latch::default(),
                        loops: Cell::new(0),
                        closed: Latch::default(),
                        conns: Cell::new(0),
                        emptied: Latch::default(),
                    });
                    let result = start(&ctx, &served, listeners).and_then(|()| match &dns {
                        Some(dns) => dns_sockets
                            .into_iter()
                            .try_for_each(|sockets| start_dns(&ctx, &served, dns, sockets)),
                        None => Ok(()),
                    });
                    if result.is_ok() {
                        pods.insert(uid, served);
                    } else {
                        served.pod.removed().fire(());
                    }
                    let _ = done.send(CoreAnswer {
                        core: ctx.id,
                        result,
                    });
                }
                CoreMail::RemovePod { uid, done } => match pods.remove(&uid) {
                    Some(served) => remove(&ctx, served, Some(done)),
                    None => {
                        let _ = done.send(CoreAnswer {
                            core: ctx.id,
                            result: Ok(()),
                        });
                    }
                },
                CoreMail::Upstream { id, socket } => upstreams.deliver(id, socket),
            }
        }
    }
}

/// Registers `listeners` with this core's runtime and spawns their accept loops.
fn start(
    ctx: &Rc<CoreCtx>,
    served: &Rc<Served>,
    listeners: Vec<(PodPort, std::net::TcpListener)>,
) -> Result<(), String> {
    let mut ready = Vec::with_capacity(listeners.len());
    for (port, l) in listeners {
        let l = super::nodelay_listener(l)
            .and_then(TcpListener::from_std)
            .map_err(|e| format!("cannot register the {} listener: {e}", port.name()))?;
        ready.push((port, l));
    }
    for (port, l) in ready {
        served.loops.set(served.loops.get() + 1);
        monoio::spawn(accept_loop(ctx.clone(), served.clone(), l, port));
    }
    debug!(core = ctx.id, uid = %served.pod.ctx.uid, "pod listeners up");
    Ok(())
}

/// Serves the pod's DNS sockets: a UDP loop and a TCP accept loop, counted with the pod's
/// listener loops so that its removal waits for them to close too.
fn start_dns(
    ctx: &Rc<CoreCtx>,
    served: &Rc<Served>,
    dns: &Rc<CoreDns>,
    sockets: DnsSockets,
) -> Result<(), String> {
    let upstream = UdpUpstream::new(sockets.upstream)
        .map_err(|e| format!("cannot register the DNS upstream socket: {e}"))?;
    let origin = Rc::new(Origin::Pod(served.pod.clone()));
    let (udp, tcp) = (sockets.udp, sockets.tcp);
    let loops: [std::pin::Pin<Box<dyn Future<Output = ()>>>; 2] = [
        Box::pin(dns::serve_udp(
            ctx.clone(),
            dns.clone(),
            origin.clone(),
            udp,
            Rc::new(upstream),
        )),
        Box::pin(dns::serve_tcp(ctx.clone(), dns.clone(), origin, tcp)),
    ];
    for serve in loops {
        served.loops.set(served.loops.get() + 1);
        let served = served.clone();
        monoio::spawn(async move {
            serve.await;
            loop_ended(&served);
        });
    }
    Ok(())
}

/// One of the pod's loops has closed its socket.
fn loop_ended(served: &Served) {
    served.loops.set(served.loops.get() - 1);
    if served.loops.get() == 0 {
        served.closed.fire(());
    }
}

/// Closes the pod's listeners; confirms on `done` once they are closed; cuts its connections
/// at the drain deadline if they have not ended by then.
fn remove(
    ctx: &Rc<CoreCtx>,
    served: Rc<Served>,
    done: Option<crossbeam_channel::Sender<CoreAnswer>>,
) {
    served.pod.removed().fire(());
    if served.conns.get() == 0 {
        served.emptied.fire(());
    }
    let pooled = ctx.pool.close_pod(&served.pod.ctx.uid);
    if pooled > 0 {
        debug!(core = ctx.id, uid = %served.pod.ctx.uid, pooled, "removed pod: its HBONE connections close");
    }
    let (ctx, deadline) = (ctx.clone(), ctx.config().drain_deadline);
    monoio::spawn(async move {
        if served.loops.get() > 0 {
            served.closed.wait().await;
        }
        if let Some(done) = done {
            let _ = done.send(CoreAnswer {
                core: ctx.id,
                result: Ok(()),
            });
        }
        let open = served.conns.get();
        if open == 0 {
            return;
        }
        monoio::select! {
            () = served.emptied.wait() => {}
            () = monoio::time::sleep(deadline) => {
                info!(
                    core = ctx.id,
                    uid = %served.pod.ctx.uid,
                    open = served.conns.get(),
                    "removed pod: closing connections still open at the drain deadline"
                );
                served.kill.fire(());
            }
        }
    });
}

async fn accept_loop(ctx: Rc<CoreCtx>, served: Rc<Served>, listener: TcpListener, port: PodPort) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            () = served.pod.removed().wait() => break,
            () = ctx.draining.wait() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                // TCP_NODELAY comes from the listener (`start`).
                let (c, pod) = (ctx.clone(), Capture::Pod(served.pod.clone()));
                // One spawn per listener: each task is only as large as its own path's future.
                match port {
                    PodPort::Outbound => crate::task::spawn(
                        "outbound",
                        connection(served.clone(), proxy::outbound::serve(c, pod, stream, peer)),
                    ),
                    PodPort::InboundPlaintext => crate::task::spawn(
                        "inbound_plaintext",
                        connection(
                            served.clone(),
                            proxy::inbound_passthrough::serve(c, pod, stream, peer),
                        ),
                    ),
                    PodPort::Inbound => crate::task::spawn(
                        "inbound",
                        connection(served.clone(), proxy::inbound::serve(c, pod, stream, peer)),
                    ),
                };
            }
            Err(e) => {
                error!(core = ctx.id, uid = %served.pod.ctx.uid, listener = port.name(), "accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    loop_ended(&served);
}

/// Counts a connection of a pod until dropped.
struct PodConn<'a>(&'a Served);

impl Drop for PodConn<'_> {
    fn drop(&mut self) {
        self.0.conns.set(self.0.conns.get() - 1);
        if self.0.conns.get() == 0 && self.0.pod.removed().is_fired() {
            self.0.emptied.fire(());
        }
    }
}

/// Runs one connection of the pod (`serve`, the data path) counted in the pod's connections,
/// until it ends or the pod's `kill` fires (the drain deadline after its removal): dropping the
/// data path's future closes both sockets and writes its access-log record.
async fn connection(served: Rc<Served>, serve: impl Future<Output = ()>) {
    served.conns.set(served.conns.get() + 1);
    let _conn = PodConn(&served);
    monoio::select! {
        () = serve => {}
        () = served.kill.wait() => {}
    }
}
