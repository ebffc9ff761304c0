//! Servers that clients connect to. The accept loop is shared: a connection limit (a
//! semaphore; over it the protocol's refusal is sent and the socket closed), a tracing
//! span per connection, and shutdown by one cancellation token.

pub mod mqtt;
pub mod stomp;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// A process-unique connection id, for spans and session ids.
pub fn next_connection_id() -> u64 {
    CONNECTION_IDS.fetch_add(1, Ordering::Relaxed)
}

/// Accepts connections until `cancel` fires. `handle` gets the socket, the peer, a
/// connection id and the permit (`None` when over the limit: refuse and close).
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    protocol: &'static str,
    max_connections: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, u64, Option<OwnedSemaphorePermit>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max_connections));
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: log, back off briefly, keep serving.
                tracing::warn!(protocol, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let permit = Arc::clone(&limit).try_acquire_owned().ok();
        if permit.is_none() {
            tracing::warn!(protocol, %peer, max_connections, "connection limit reached; refusing");
        }
        let id = next_connection_id();
        let span = tracing::info_span!(
            "conn",
            protocol,
            id,
            %peer,
            client_id = tracing::field::Empty,
            user = tracing::field::Empty
        );
        tracker.spawn(handle(stream, peer, id, permit).instrument(span));
    }
}
