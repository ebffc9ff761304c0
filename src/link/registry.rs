//! The registry of every link's status, which the admin API lists.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::LinkStatus;

/// Every link's status, by name.
#[derive(Debug, Default, Clone)]
pub struct Links(Arc<Mutex<BTreeMap<String, Arc<LinkStatus>>>>);

impl Links {
    /// Registers a starting link: its status (listed from now on) and its two core
    /// queues (see [`super::declare_link_queues`]), which every link kind has alike.
    pub(crate) fn add(
        &self,
        status: &Arc<LinkStatus>,
        core: &crate::core::Core,
        max_pending: usize,
        dead_letter: &str,
    ) {
        self.insert(Arc::clone(status));
        super::declare_link_queues(core, &status.name, max_pending, dead_letter);
    }

    fn insert(&self, s: Arc<LinkStatus>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(s.name.clone(), s);
    }

    pub fn to_json(&self) -> serde_json::Value {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        serde_json::Value::Array(map.values().map(|s| s.to_json()).collect())
    }
}
