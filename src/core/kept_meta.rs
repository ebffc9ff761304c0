//! Metadata namespaces a layer keeps wherever the router keeps such things: in the
//! cluster when it keeps the namespace ([`super::shared::SharedMeta`]), otherwise in
//! this router's store, behind the same interface ([`StoreMeta`]), so that a layer
//! writes and restores its state one way whether the router is clustered or alone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use super::Core;
use super::shared::{MetaApply, SharedMeta};
use crate::store::{Store, StoreWait};

/// One namespace of this router's store as a [`SharedMeta`]: writes go to the store
/// (and a copy in memory), and [`watch`](SharedMeta::watch) applies what the store
/// recovered at start plus what was written since, at once. Nobody else writes to it,
/// so nothing follows. One per namespace and core ([`Core::kept_metadata`]): the
/// store hands its recovered values out once, and several owners (one per link) may
/// share a namespace.
#[derive(Debug)]
pub(super) struct StoreMeta {
    ns: &'static str,
    store: Arc<dyn Store>,
    values: Mutex<BTreeMap<String, Bytes>>,
}

impl SharedMeta for StoreMeta {
    fn put(&self, key: &str, value: Bytes) -> StoreWait {
        let wait = self.store.put(self.ns, key, value.to_vec());
        self.lock().insert(key.to_owned(), value);
        wait
    }

    fn delete(&self, key: &str) -> StoreWait {
        self.lock().remove(key);
        self.store.delete(self.ns, key);
        self.store.barrier()
    }

    fn watch(&self, apply: MetaApply) -> StoreWait {
        let now = self.lock().clone();
        for (k, v) in now {
            apply(&k, Some(v));
        }
        StoreWait::Done(Ok(()))
    }
}

impl StoreMeta {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        self.values.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Core {
    /// Where the metadata namespace `ns` is kept: the cluster's when this router is
    /// clustered and the cluster keeps `ns` ([`Core::shared_metadata`]), otherwise
    /// this router's store; `None` when there is neither (`--data-dir off`: the owner
    /// keeps its state in memory only).
    pub fn kept_metadata(&self, ns: &'static str) -> Option<Arc<dyn SharedMeta>> {
        if let Some(shared) = self.shared_metadata(ns) {
            return Some(shared);
        }
        let store = self.store()?;
        let mut kept = self
            .inner
            .kept_meta
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let meta = kept.entry(ns).or_insert_with(|| {
            let values = self
                .take_recovered(ns)
                .into_iter()
                .map(|(k, v)| (k, Bytes::from(v)))
                .collect();
            Arc::new(StoreMeta {
                ns,
                store: Arc::clone(store),
                values: Mutex::new(values),
            })
        });
        Some(Arc::clone(meta) as Arc<dyn SharedMeta>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FileJournal, FsyncPolicy};

    fn watched(meta: &dyn SharedMeta) -> Vec<(String, Option<Bytes>)> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let wait = meta.watch(Box::new(move |k, v| {
            s.lock().unwrap().push((k.to_owned(), v))
        }));
        assert!(wait.is_done_ok());
        seen.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_namespace_is_restored_from_the_store_and_shared_by_its_owners() {
        let dir = tempfile::tempdir().unwrap();
        let open = || -> Arc<dyn Store> {
            Arc::new(FileJournal::open(dir.path(), FsyncPolicy::Always).unwrap())
        };
        let v2 = Bytes::from_static(b"v2");
        {
            let core = Core::with_store(crate::core::CoreConfig::default(), open()).unwrap();
            let a = core.kept_metadata("ns_test").unwrap();
            a.put("k1", Bytes::from_static(b"v1")).wait().await.unwrap();
            a.put("k2", v2.clone()).wait().await.unwrap();
            a.delete("k1").wait().await.unwrap();
            // A second owner of the namespace sees what the first wrote.
            let b = core.kept_metadata("ns_test").unwrap();
            assert_eq!(watched(&*b), [("k2".to_owned(), Some(v2.clone()))]);
            core.store().unwrap().close();
        }
        // Restarted: the store gives it back.
        let core = Core::with_store(crate::core::CoreConfig::default(), open()).unwrap();
        let kept = core.kept_metadata("ns_test").unwrap();
        assert_eq!(watched(&*kept), [("k2".to_owned(), Some(v2))]);
        // Without a store, nothing keeps it.
        assert!(Core::default().kept_metadata("ns_test").is_none());
    }
}
