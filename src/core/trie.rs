//! A subject trie: many patterns, one name, all matching values — without scanning every
//! pattern. Modelled on NATS' sublist: one node per level, with separate slots for the
//! `*` and `#` wildcards, so a lookup costs in proportion to the name's depth and the
//! number of wildcard branches, not to the number of subscriptions.

use std::collections::HashMap;

use super::pattern::{Level, Pattern};

/// Patterns mapped to values. A lookup returns each (pattern, value) entry once. The same
/// value may be inserted under several patterns; a lookup may then return it once per
/// matching pattern (callers dedupe).
#[derive(Debug)]
pub struct SubjectTrie<T> {
    root: Node<T>,
    len: usize,
}

#[derive(Debug)]
struct Node<T> {
    literal: HashMap<Box<str>, Node<T>>,
    one: Option<Box<Node<T>>>,
    many: Option<Box<Node<T>>>,
    values: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self {
            literal: HashMap::new(),
            one: None,
            many: None,
            values: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.values.is_empty()
            && self.literal.is_empty()
            && self.one.is_none()
            && self.many.is_none()
    }
}

impl<T> Default for SubjectTrie<T> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T: Clone + PartialEq> SubjectTrie<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of (pattern, value) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn insert(&mut self, pattern: &Pattern, value: T) {
        let mut node = &mut self.root;
        for level in pattern.levels() {
            node = match level {
                Level::Literal(l) => node.literal.entry(l.as_str().into()).or_default(),
                Level::One => node.one.get_or_insert_with(Default::default),
                Level::Many => node.many.get_or_insert_with(Default::default),
            };
        }
        node.values.push(value);
        self.len += 1;
    }

    /// Removes one entry equal to `value` under `pattern`; prunes emptied nodes.
    pub fn remove(&mut self, pattern: &Pattern, value: &T) -> bool {
        let removed = remove_at(&mut self.root, pattern.levels(), value);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Appends every value whose pattern matches `name` to `out`, each entry once.
    pub fn matches(&self, name: &str, out: &mut Vec<T>) {
        let levels: Vec<&str> = name.split('.').collect();
        let dollar = name.starts_with('$');
        let mut walk = Walk {
            levels: &levels,
            dollar,
            ended: Vec::new(),
            out,
        };
        walk.collect(&self.root, 0, 0);
    }
}

/// One lookup. A pattern with two or more `#` can match one name in several ways (`#.#`
/// on `a.b`: the first `#` takes none, one or both levels), which would reach its node
/// once per way; `ended` keeps such nodes so their values are given once. With at most one
/// `#` on the way the split is forced, so the common case never touches `ended`.
struct Walk<'n, 'a, T> {
    levels: &'a [&'a str],
    dollar: bool,
    ended: Vec<&'n Node<T>>,
    out: &'a mut Vec<T>,
}

impl<'n, T: Clone> Walk<'n, '_, T> {
    fn collect(&mut self, node: &'n Node<T>, i: usize, hashes: u32) {
        let end = self.levels.len();
        if i == end && hashes >= 2 {
            if self.ended.iter().any(|n| std::ptr::eq(*n, node)) {
                return; // this node at the end of the name was fully explored already
            }
            self.ended.push(node);
        }
        // A leading wildcard never matches a `$` first level (see the pattern module).
        let wild_ok = !(self.dollar && i == 0);
        if wild_ok && let Some(m) = &node.many {
            for j in i..=end {
                self.collect(m, j, hashes + 1);
            }
        }
        if i == end {
            self.out.extend(node.values.iter().cloned());
            return;
        }
        if let Some(child) = node.literal.get(self.levels[i]) {
            self.collect(child, i + 1, hashes);
        }
        if wild_ok && let Some(o) = &node.one {
            self.collect(o, i + 1, hashes);
        }
    }
}

fn remove_at<T: PartialEq>(node: &mut Node<T>, levels: &[Level], value: &T) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return match node.values.iter().position(|v| v == value) {
            Some(i) => {
                node.values.swap_remove(i);
                true
            }
            None => false,
        };
    };
    match first {
        Level::Literal(l) => {
            let Some(child) = node.literal.get_mut(l.as_str()) else {
                return false;
            };
            let removed = remove_at(child, rest, value);
            if child.is_empty() {
                node.literal.remove(l.as_str());
            }
            removed
        }
        Level::One | Level::Many => {
            let slot = if *first == Level::One {
                &mut node.one
            } else {
                &mut node.many
            };
            let Some(child) = slot.as_mut() else {
                return false;
            };
            let removed = remove_at(child, rest, value);
            if child.is_empty() {
                *slot = None;
            }
            removed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    fn lookup(t: &SubjectTrie<u32>, name: &str) -> Vec<u32> {
        let mut v = Vec::new();
        t.matches(name, &mut v);
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn insert_match_remove() {
        let mut t = SubjectTrie::new();
        t.insert(&p("a.b"), 1);
        t.insert(&p("a.*"), 2);
        t.insert(&p("#"), 3);
        t.insert(&p("a.#"), 4);
        assert_eq!(lookup(&t, "a.b"), vec![1, 2, 3, 4]);
        assert_eq!(lookup(&t, "a"), vec![3, 4]);
        assert_eq!(lookup(&t, "$SYS.a"), Vec::<u32>::new());
        assert!(t.remove(&p("a.*"), &2));
        assert!(!t.remove(&p("a.*"), &2));
        assert_eq!(lookup(&t, "a.b"), vec![1, 3, 4]);
        assert_eq!(t.len(), 3);
        for (pat, v) in [("a.b", 1), ("#", 3), ("a.#", 4)] {
            assert!(t.remove(&p(pat), &v));
        }
        assert!(t.is_empty());
        assert!(t.root.is_empty(), "nodes are pruned");
    }
}
