//! How core operations fail.

use super::destination::{Destination, NameError};

/// Why a publish failed. Each edge turns this into its protocol's refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("{0} is full")]
    Full(Destination),
    #[error("message of {size} bytes exceeds the {max}-byte limit of {destination}")]
    TooLarge {
        destination: Destination,
        size: usize,
        max: usize,
    },
    #[error("{0} does not exist")]
    NotFound(Destination),
    #[error("{0} was deleted")]
    Closed(Destination),
    #[error("invalid destination name: {0}")]
    InvalidName(#[from] NameError),
    /// The message could not be made durable (disk full, read-only data directory).
    #[error("{0}")]
    Store(String),
}

/// Why a core operation other than publish failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("invalid name: {0}")]
    InvalidName(#[from] NameError),
    #[error("queue `{0}` does not exist")]
    NoSuchQueue(String),
    #[error("queue `{0}` was deleted")]
    Closed(String),
}
