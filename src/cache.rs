//! A small thread-safe LRU cache bounded by a byte budget.
//!
//! Holds decrypted, verified objects (pages, directory nodes, chunk lists,
//! chunks) in process memory only; nothing here ever reaches the disk.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// An LRU of `Arc<V>` whose total charged size stays within a budget.
pub struct Lru<K, V> {
    inner: Mutex<Inner<K, V>>,
    budget: usize,
}

struct Inner<K, V> {
    map: HashMap<K, (Arc<V>, usize, u64)>,
    order: BTreeMap<u64, K>,
    tick: u64,
    used: usize,
}

impl<K: Eq + Hash + Clone, V> Lru<K, V> {
    /// An empty cache holding at most `budget` charged bytes.
    pub fn new(budget: usize) -> Self {
        Lru {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: BTreeMap::new(),
                tick: 0,
                used: 0,
            }),
            budget,
        }
    }

    /// The cached value, marking it recently used.
    pub fn get(&self, k: &K) -> Option<Arc<V>> {
        let mut g = self.inner.lock().expect("cache lock");
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        let (v, _, t) = inner.map.get_mut(k)?;
        let old = std::mem::replace(t, tick);
        let v = v.clone();
        inner.order.remove(&old);
        inner.order.insert(tick, k.clone());
        Some(v)
    }

    /// Inserts a value charged at `size` bytes, evicting the least recently used.
    pub fn insert(&self, k: K, v: Arc<V>, size: usize) {
        if size > self.budget {
            return;
        }
        let mut g = self.inner.lock().expect("cache lock");
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((_, s, t)) = inner.map.insert(k.clone(), (v, size, tick)) {
            inner.used -= s;
            inner.order.remove(&t);
        }
        inner.order.insert(tick, k);
        inner.used += size;
        while inner.used > self.budget {
            let Some((_, victim)) = inner.order.pop_first() else {
                break;
            };
            if let Some((_, s, _)) = inner.map.remove(&victim) {
                inner.used -= s;
            }
        }
    }

    /// Drops the value of `k`, if cached.
    pub fn remove(&self, k: &K) {
        let mut g = self.inner.lock().expect("cache lock");
        let inner = &mut *g;
        if let Some((_, s, t)) = inner.map.remove(k) {
            inner.used -= s;
            inner.order.remove(&t);
        }
    }

    /// Bytes currently charged.
    pub fn used(&self) -> usize {
        self.inner.lock().expect("cache lock").used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let c = Lru::new(10);
        c.insert(1, Arc::new("a"), 4);
        c.insert(2, Arc::new("b"), 4);
        assert!(c.get(&1).is_some());
        c.insert(3, Arc::new("c"), 4);
        assert!(c.get(&2).is_none(), "2 was least recently used");
        assert!(c.get(&1).is_some() && c.get(&3).is_some());
        assert_eq!(c.used(), 8);
        c.insert(4, Arc::new("too big"), 11);
        assert!(c.get(&4).is_none());
        c.remove(&1);
        assert!(c.get(&1).is_none());
        assert_eq!(c.used(), 4, "its charge is returned");
        c.remove(&1);
        assert_eq!(c.used(), 4);
    }
}
