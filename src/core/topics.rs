//! Topic bindings: which queues a publish to a topic reaches. Patterns live in a subject
//! trie; the answer for a topic is cached until the bindings change (a generation
//! number tags each cached answer with the bindings it was computed from).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::pattern::Pattern;
use super::queue::Queue;
use super::trie::SubjectTrie;

/// Pointer identity for queues stored in the trie.
#[derive(Debug, Clone)]
struct QueueRef(Arc<Queue>);

impl PartialEq for QueueRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[derive(Debug, Default)]
struct Bindings {
    trie: SubjectTrie<QueueRef>,
    by_queue: HashMap<Arc<str>, Vec<Pattern>>,
}

#[derive(Debug, Default)]
struct MatchCache {
    generation: u64,
    map: HashMap<Box<str>, Arc<[Arc<Queue>]>>,
}

const MATCH_CACHE_MAX: usize = 16_384;

/// The bindings of every queue, and the cache of what they match.
#[derive(Debug, Default)]
pub(super) struct Topics {
    bindings: RwLock<Bindings>,
    generation: AtomicU64,
    cache: Mutex<MatchCache>,
}

impl Topics {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Bindings> {
        self.bindings.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Bindings> {
        self.bindings
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Binds `q` to `pattern`. False when it already was. A shared queue's bindings are
    /// kept but not put in the trie: the cluster feeds it its topic messages (see
    /// [`super::shared`]).
    pub(super) fn bind(&self, q: &Arc<Queue>, pattern: Pattern) -> bool {
        let mut b = self.write();
        let bound = b.by_queue.entry(Arc::clone(q.name_arc())).or_default();
        if bound.contains(&pattern) {
            return false;
        }
        bound.push(pattern.clone());
        match q.shared() {
            // Told under the lock, so concurrent changes reach the log in order.
            Some(log) => log.bind(bound),
            None => b.trie.insert(&pattern, QueueRef(Arc::clone(q))),
        }
        self.generation.fetch_add(1, Ordering::Release);
        true
    }

    /// Removes one binding of `q`. False when it did not exist.
    pub(super) fn unbind(&self, q: &Arc<Queue>, pattern: &Pattern) -> bool {
        let mut b = self.write();
        let mut removed = b.trie.remove(pattern, &QueueRef(Arc::clone(q)));
        if let Some(patterns) = b.by_queue.get_mut(q.name()) {
            removed |= patterns.contains(pattern);
            patterns.retain(|p| p != pattern);
            if let Some(log) = q.shared() {
                log.bind(patterns);
            }
            if patterns.is_empty() {
                b.by_queue.remove(q.name());
            }
        }
        self.generation.fetch_add(1, Ordering::Release);
        removed
    }

    /// Removes every binding of `q` (it is being deleted); returns the patterns it had.
    pub(super) fn unbind_all(&self, q: &Arc<Queue>) -> Vec<Pattern> {
        let mut b = self.write();
        let Some(patterns) = b.by_queue.remove(q.name()) else {
            return Vec::new();
        };
        for p in &patterns {
            b.trie.remove(p, &QueueRef(Arc::clone(q)));
        }
        self.generation.fetch_add(1, Ordering::Release);
        patterns
    }

    /// The patterns the queue called `queue` is bound to.
    pub(super) fn patterns(&self, queue: &str) -> Vec<String> {
        self.read()
            .by_queue
            .get(queue)
            .map(|v| v.iter().map(|p| p.as_str().to_owned()).collect())
            .unwrap_or_default()
    }

    /// How many bindings there are.
    pub(super) fn len(&self) -> usize {
        self.read().trie.len()
    }

    /// The queues bound to patterns matching `topic`, deduplicated, cached until the
    /// bindings change.
    pub(super) fn matching(&self, topic: &str) -> Arc<[Arc<Queue>]> {
        let generation = self.generation.load(Ordering::Acquire);
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.generation == generation
                && let Some(hit) = cache.map.get(topic)
            {
                return Arc::clone(hit);
            }
        }
        let (generation, found) = {
            let b = self.read();
            // Read the generation under the lock so the cached entry is tagged with the
            // bindings it was computed from.
            let generation = self.generation.load(Ordering::Acquire);
            let mut out = Vec::new();
            b.trie.matches(topic, &mut out);
            (generation, out)
        };
        let mut queues: Vec<Arc<Queue>> = Vec::with_capacity(found.len());
        for QueueRef(q) in found {
            if !queues.iter().any(|x| Arc::ptr_eq(x, &q)) {
                queues.push(q);
            }
        }
        let result: Arc<[Arc<Queue>]> = queues.into();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.generation != generation || cache.map.len() >= MATCH_CACHE_MAX {
            cache.map.clear();
            cache.generation = generation;
        }
        cache.map.insert(topic.into(), Arc::clone(&result));
        result
    }
}
