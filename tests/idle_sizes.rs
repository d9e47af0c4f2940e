//! What one idle proxied connection's task costs in bytes of future state (issue 14, idle
//! memory): the sizes of the futures a connection's task holds for its whole life, printed
//! for `perf/notes-hbone.md`. Runs nowhere but here (no sockets, no runtime): the sizes are
//! the compiler's, read off the future types without building their arguments.

use std::future::Future;
use std::mem::size_of;

fn size4<A, B, C, D, F: Future>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
    size_of::<F>()
}

fn size6<A, B, C, D, E, G, F: Future>(_: impl FnOnce(A, B, C, D, E, G) -> F) -> usize {
    size_of::<F>()
}

#[test]
fn idle_connection_future_sizes() {
    use zring::net::copy::ByteCounter;
    let outbound = size4(zring::proxy::outbound::serve);
    let inbound = size4(zring::proxy::inbound::serve);
    let stream = zring::proxy::inbound::stream_task_size();
    let pump = size6(
        |a, b, c, d, e, f: (&'static ByteCounter, &'static ByteCounter)| {
            zring::hbone::pump::bidirectional(a, b, c, d, e, f)
        },
    );
    println!("outbound::serve task future: {outbound} B");
    println!("inbound::serve (15008 connection) task future: {inbound} B");
    println!("inbound CONNECT stream task future: {stream} B");
    let wait = zring::hbone::pump::idle_wait_size();
    println!("hbone::pump::bidirectional future: {pump} B, its idle wait (boxed): {wait} B");
    println!(
        "h2 SendStream<Bytes>: {} B, RecvStream: {} B, SendResponse<Bytes>: {} B",
        size_of::<h2::SendStream<bytes::Bytes>>(),
        size_of::<h2::RecvStream>(),
        size_of::<h2::server::SendResponse<bytes::Bytes>>()
    );
    println!(
        "http Request<RecvStream>: {} B (its HeaderMap: {} B)",
        size_of::<http::Request<h2::RecvStream>>(),
        size_of::<http::HeaderMap>()
    );
    println!(
        "core::conns: Registration {} B, its shared block {} B",
        size_of::<zring::core::conns::Registration<'static>>(),
        zring::core::conns::conn_block_size()
    );
    println!(
        "ConnRecord: {} B, proxy::Error: {} B, Capture: {} B, TcpStream: {} B",
        size_of::<zring::proxy::ConnRecord>(),
        size_of::<zring::proxy::Error>(),
        size_of::<zring::proxy::Capture>(),
        size_of::<monoio::net::TcpStream>()
    );
    // Each pump runs inside its connection's (outbound) or stream's (inbound) task: its state
    // is part of the task's, so a task smaller than its pump would mean the pump was boxed
    // out of it, and these sizes would no longer say what an idle connection holds.
    assert!(pump < outbound, "pump {pump} B, outbound task {outbound} B");
    assert!(
        pump < stream,
        "pump {pump} B, inbound stream task {stream} B"
    );
}
