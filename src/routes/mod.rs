//! The routing table: compiled from `routes/*.yaml`, immutable once built, swapped
//! atomically on reload (see [`reload`]). Readers take a snapshot per publish, so a
//! message is routed entirely by one table even while a reload happens.

pub mod compile;
mod counters;
pub mod explain;
mod fanout;
mod files;
pub mod jid_pattern;
pub mod jq;
pub mod rate;
pub mod received;
pub mod reload;
mod route;
pub mod schema;
pub mod spec;
mod table;
pub mod template;

pub use compile::{
    CompileContext, DEFAULT_MAX_FANOUT, LinkKind, RouteError, compile_sources, load_dir,
};
pub use counters::{Counts, Retired, RouteCounters};
pub use files::read as read_files;
pub use route::{
    CompiledRoute, Declare, JqTransform, PUBSUB_MAX_ITEMS, PubsubNode, PubsubRead, Rendered,
    RoutingError, Source, Target, Transform, Verdict, When,
};
pub use spec::BodyFormat;
pub use table::{AmqpSourceKey, Leg, MAX_ROUTE_DEPTH, Resolved, RouteTable};
