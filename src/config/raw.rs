//! The serde mirror of the settings file. No logic; see `docs/configuration.md`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::LogFormat;
use crate::core::{ExpiredAction, Overflow};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// Directory of route files, relative to the settings file.
    pub routes_dir: Option<String>,
    /// Listener name → `HOST:PORT`, or `off`.
    #[serde(default)]
    pub listeners: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub queues: RawQueues,
    #[serde(default)]
    pub links: BTreeMap<String, RawLink>,
    pub log: Option<RawLog>,
    pub sweep_interval: Option<String>,
    pub shutdown_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueues {
    pub auto_create: Option<bool>,
    #[serde(default)]
    pub defaults: RawQueue,
    #[serde(default)]
    pub subscription_defaults: RawQueue,
    #[serde(default)]
    pub named: BTreeMap<String, RawQueue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub max_length: Option<usize>,
    pub max_bytes: Option<usize>,
    pub overflow: Option<Overflow>,
    pub ttl: Option<String>,
    pub expired: Option<ExpiredAction>,
    pub dead_letter: Option<String>,
    pub max_deliveries: Option<u32>,
}

/// External links. Their connection settings arrive with the AMQP and XMPP links; for
/// now only the name and kind are known, so routes can be validated against them.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum RawLink {
    Amqp(BTreeMap<String, serde_json::Value>),
    Xmpp(BTreeMap<String, serde_json::Value>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
}
