//! The HTTP/2 settings of an HBONE connection, for both ends in one place: the flow-control
//! windows and frame size are ztunnel's (so the two interoperate with the same flow control),
//! the rest are abuse limits (see the constants in `hbone`).
//!
//! Pure: builds h2 builders, runs on any thread (used on the cores).

use super::{
    CONNECTION_WINDOW, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE, MAX_LOCAL_ERROR_RESETS,
    MAX_PENDING_RESETS, MAX_SEND_BUFFER, SERVER_MAX_STREAMS, STREAM_WINDOW,
};

/// Applies the settings both ends share to `$builder`, a `&mut` h2 builder. A macro because
/// h2's client and server builders are two types with the same setters and no common trait.
macro_rules! shared {
    ($builder:expr) => {
        $builder
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
            .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
    };
}

/// The client side (HBONE pool connections): the shared settings, and no server push.
pub fn client() -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    shared!(builder).enable_push(false);
    builder
}

/// The server side (15008): the shared settings with these receive windows (the connection's
/// first, `limits::Window`), and at most [`SERVER_MAX_STREAMS`] streams.
pub fn server(connection_window: u32, stream_window: u32) -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    shared!(builder)
        .initial_window_size(stream_window)
        .initial_connection_window_size(connection_window)
        .max_concurrent_streams(SERVER_MAX_STREAMS);
    builder
}
