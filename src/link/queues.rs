//! A link's two core queues: where its outbound messages wait, and where those it gives
//! up on go.

pub use crate::router::link_queue;

/// Declares a link's two core queues: its outbound buffer (bounded; publishers wait,
/// not lose, when it is full) and its dead-letter queue (up front, so giving up on a
/// message never depends on queue auto-creation).
pub fn declare_link_queues(
    core: &crate::core::Core,
    link: &str,
    max_pending: usize,
    dead_letter: &str,
) {
    let options = crate::core::QueueOptions {
        max_length: max_pending,
        overflow: crate::core::Overflow::Block,
        ..crate::core::QueueOptions::default()
    };
    if let Err(e) = core.declare_queue(&link_queue(link), Some(options)) {
        tracing::error!(link, error = %e, "cannot declare the link queue");
    }
    if let Err(e) = core.declare_queue(dead_letter, None) {
        tracing::error!(link, error = %e, "cannot declare the dead-letter queue");
    }
}
