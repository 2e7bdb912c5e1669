//! The deduplication window: event ids made durable (confirmed or spooled) in the last `ttl`,
//! at most `max_entries` of them. A provider's retry of a request already made durable is
//! answered 200 without publishing again.
//!
//! A `HashMap` of id → insertion time plus a `VecDeque` in insertion order, so expiry and the
//! size bound both pop from the front in O(1). The window is in memory only: after a restart a
//! retry is published again, which at-least-once delivery allows (same `message_id`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::DedupConfig;

pub struct Dedup {
    ttl: Duration,
    max_entries: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// id → when it was (last) inserted. Keyed by the id's 128 bits (see [`key`]): 16 bytes
    /// instead of a heap string, so the default window of 100,000 ids costs a few MiB.
    seen: HashMap<u128, Instant>,
    /// Insertion order; an entry whose time differs from `seen` is stale (re-inserted later).
    order: VecDeque<(u128, Instant)>,
}

/// The id as a number. Envelope ids are 32 hex digits (UUID-shaped SHA-256 prefixes), so this is
/// exact; anything else is hashed down to 128 bits.
fn key(id: &str) -> u128 {
    let mut k: u128 = 0;
    let mut digits = 0;
    for c in id.chars().filter(|c| *c != '-') {
        match c.to_digit(16) {
            Some(d) if digits < 32 => {
                k = (k << 4) | u128::from(d);
                digits += 1;
            }
            _ => {
                digits = 0;
                break;
            }
        }
    }
    if digits == 32 {
        return k;
    }
    let digest = crate::providers::hash_hex(id.as_bytes());
    u128::from_str_radix(&digest[..32], 16).unwrap_or_default()
}

impl Inner {
    fn evict(&mut self, now: Instant, ttl: Duration, max: usize) {
        while let Some((id, at)) = self.order.front() {
            let expired = now.duration_since(*at) >= ttl;
            if !expired && self.seen.len() <= max && self.order.len() <= max.saturating_mul(2) {
                break;
            }
            if self.seen.get(id) == Some(at) {
                self.seen.remove(id);
            }
            self.order.pop_front();
        }
    }
}

impl Dedup {
    pub fn new(cfg: &DedupConfig) -> Self {
        Self {
            ttl: cfg.ttl,
            max_entries: cfg.max_entries.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// True when `id` was made durable within the window.
    pub fn contains(&self, id: &str) -> bool {
        self.contains_at(id, Instant::now())
    }

    fn contains_at(&self, id: &str, now: Instant) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .seen
            .get(&key(id))
            .is_some_and(|at| now.duration_since(*at) < self.ttl)
    }

    /// Remember `ids` as durable from now on.
    pub fn insert<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        self.insert_at(ids, Instant::now());
    }

    fn insert_at<'a>(&self, ids: impl IntoIterator<Item = &'a str>, now: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            let k = key(id);
            inner.seen.insert(k, now);
            inner.order.push_back((k, now));
        }
        inner.evict(now, self.ttl, self.max_entries);
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dedup(ttl: u64, max: usize) -> Dedup {
        Dedup::new(&DedupConfig {
            enabled: true,
            ttl: Duration::from_secs(ttl),
            max_entries: max,
        })
    }

    #[test]
    fn ids_key_exactly_and_other_strings_do_not_collide() {
        let id = "0123abcd-4567-89ef-0123-456789abcdef";
        assert_eq!(key(id), 0x0123abcd456789ef0123456789abcdef);
        assert_ne!(key("a"), key("b"));
        assert_ne!(key(id), key(&id.replace('f', "g")));
    }

    #[test]
    fn remembers_within_ttl_and_forgets_after() {
        let d = dedup(10, 100);
        let t0 = Instant::now();
        d.insert_at(["a"], t0);
        assert!(d.contains_at("a", t0 + Duration::from_secs(9)));
        assert!(!d.contains_at("a", t0 + Duration::from_secs(10)));
        assert!(!d.contains_at("b", t0));
        d.insert_at(["b"], t0 + Duration::from_secs(11));
        assert_eq!(d.len(), 1, "expired entry evicted on insert");
    }

    #[test]
    fn size_is_bounded_oldest_first() {
        let d = dedup(600, 3);
        let t0 = Instant::now();
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            d.insert_at([*id], t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(d.len(), 3);
        assert!(!d.contains_at("a", t0));
        assert!(d.contains_at("d", t0));
    }

    #[test]
    fn reinsert_refreshes_and_keeps_order_bounded() {
        let d = dedup(10, 2);
        let t0 = Instant::now();
        for i in 0..100 {
            d.insert_at(["a"], t0 + Duration::from_millis(i));
        }
        assert_eq!(d.len(), 1);
        assert!(d.inner.lock().unwrap().order.len() <= 4);
        assert!(d.contains_at("a", t0 + Duration::from_millis(9_050)));
    }
}
