//! Unit tests of the core's side of the cluster seam, over an in-memory [`fake`]
//! cluster: `queue` for shared queues, `topic` for topics and bindings.

mod fake;
mod queue;
mod topic;
