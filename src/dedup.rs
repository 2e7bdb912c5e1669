//! The deduplication window: event ids made durable (confirmed or spooled) in the last `ttl`,
//! at most `max_entries` of them. A provider's retry of a request already made durable is
//! answered 200 without publishing again.
//!
//! Two generations of `max_entries / 2` ids each: inserts go to the current one; when it is
//! full, or older than `ttl`, it becomes the previous one and the old previous one is cleared
//! for reuse. A lookup checks both and the entry's own time against `ttl`. So the window always
//! holds the newest `max_entries / 2` ids at least and `max_entries` at most, each for at most
//! `ttl`. The window is in memory only: after a restart a retry is published again, which
//! at-least-once delivery allows (same `message_id`).
//!
//! Memory is what this shape is for: at the default 100,000 ids the window is the bridge's
//! largest structure. Nothing is ever removed from a map one entry at a time, so no tombstones
//! accumulate and neither map rehashes or doubles under churn (an insertion-ordered queue with
//! single removals had the map growing to twice its entries); both are sized up front, which
//! costs address space, not resident memory, until ids arrive. An entry is 24 bytes: the id's
//! 128 bits as two `u64` and milliseconds since the window was made (not a 16-byte `Instant`).
//! Ids are hashed by folding their bits: they are SHA-256 output already, which no sender can
//! steer, so SipHash would buy nothing.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::Instant;

use crate::config::DedupConfig;

/// Capacity reserved up front per generation, at most: a window configured far larger grows as
/// it fills.
const MAX_PREALLOCATED: usize = 1 << 17;

pub struct Dedup {
    ttl_ms: u64,
    /// Ids per generation: half of `max_entries`, at least one.
    generation: usize,
    /// Zero of the millisecond clock the entries are stamped with.
    epoch: Instant,
    inner: Mutex<Inner>,
}

/// An id's 128 bits (see [`key`]), as two words so an entry needs 8-byte alignment, not 16.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Key(u64, u64);

/// Hashes a [`Key`] by xor-ing its words (see the module docs for why that is enough).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `Key` (it hashes through `write_u64`); kept correct for anything else.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(32) ^ n;
    }
}

type Generation = HashMap<Key, u64, BuildHasherDefault<KeyHasher>>;

struct Inner {
    /// id → milliseconds (since `epoch`) when it was inserted.
    current: Generation,
    previous: Generation,
    /// When `current` started taking inserts.
    current_since: u64,
}

/// The id as a number. Envelope ids are 32 hex digits (UUID-shaped SHA-256 prefixes), so this is
/// exact; anything else is hashed down to 128 bits.
fn key(id: &str) -> Key {
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
    if digits != 32 {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(id.as_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        k = u128::from_be_bytes(first);
    }
    // Truncation intended: the two halves.
    Key((k >> 64) as u64, k as u64)
}

impl Inner {
    /// Make `current` the previous generation and start an empty one (reusing the allocation).
    fn rotate(&mut self, now: u64) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.clear();
        self.current_since = now;
    }

    fn get(&self, k: &Key) -> Option<u64> {
        self.current
            .get(k)
            .or_else(|| self.previous.get(k))
            .copied()
    }
}

impl Dedup {
    pub fn new(cfg: &DedupConfig) -> Self {
        let generation = cfg.max_entries.div_ceil(2).max(1);
        let reserve = generation.min(MAX_PREALLOCATED);
        let map = || Generation::with_capacity_and_hasher(reserve, BuildHasherDefault::default());
        Self {
            ttl_ms: u64::try_from(cfg.ttl.as_millis()).unwrap_or(u64::MAX),
            generation,
            epoch: Instant::now(),
            inner: Mutex::new(Inner {
                current: map(),
                previous: map(),
                current_since: 0,
            }),
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// True when `id` was made durable within the window.
    pub fn contains(&self, id: &str) -> bool {
        self.contains_at(id, Instant::now())
    }

    fn contains_at(&self, id: &str, now: Instant) -> bool {
        let now = self.millis(now);
        let k = key(id);
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .get(&k)
            .is_some_and(|at| now.saturating_sub(at) < self.ttl_ms)
    }

    /// Remember `ids` as durable from now on.
    pub fn insert<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        self.insert_at(ids, Instant::now());
    }

    fn insert_at<'a>(&self, ids: impl IntoIterator<Item = &'a str>, now: Instant) {
        let now = self.millis(now);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_sub(inner.current_since) >= self.ttl_ms {
            // Everything in `previous` is older than `ttl` now; `current` soon will be.
            inner.rotate(now);
        }
        for id in ids {
            let k = key(id);
            if inner.current.len() >= self.generation && !inner.current.contains_key(&k) {
                inner.rotate(now);
            }
            inner.current.insert(k, now);
        }
    }

    /// Ids the window would answer as duplicates at `now` (walks the window: for tests).
    #[cfg(test)]
    fn len_at(&self, now: Instant) -> usize {
        let now = self.millis(now);
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let live = |at: &u64| now.saturating_sub(*at) < self.ttl_ms;
        let newer = inner.current.values().filter(|at| live(at)).count();
        let older = inner
            .previous
            .iter()
            .filter(|(k, at)| live(at) && !inner.current.contains_key(k))
            .count();
        newer + older
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        assert_eq!(key(id), Key(0x0123abcd456789ef, 0x0123456789abcdef));
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
        let t11 = t0 + Duration::from_secs(11);
        d.insert_at(["b"], t11);
        assert_eq!(d.len_at(t11), 1);
        assert!(d.contains_at("b", t0 + Duration::from_secs(20)));
        assert!(!d.contains_at("b", t0 + Duration::from_secs(21)));
    }

    #[test]
    fn size_is_bounded_oldest_first() {
        let d = dedup(600, 4);
        let t0 = Instant::now();
        let ids = ["a", "b", "c", "d", "e", "f", "g"];
        for (i, id) in ids.iter().enumerate() {
            let t = t0 + Duration::from_millis(i as u64);
            d.insert_at([*id], t);
            let held = d.len_at(t);
            assert!((2.min(i + 1)..=4).contains(&held), "{held} ids after {id}");
            // The newest half of the bound is always there.
            assert!(d.contains_at(id, t));
            if i > 0 {
                assert!(d.contains_at(ids[i - 1], t));
            }
        }
        assert!(!d.contains_at("a", t0));
        assert!(!d.contains_at("d", t0));
    }

    #[test]
    fn reinsert_refreshes_and_keeps_the_window_small() {
        let d = dedup(10, 2);
        let t0 = Instant::now();
        for i in 0..100 {
            d.insert_at(["a"], t0 + Duration::from_millis(i));
        }
        assert_eq!(d.len_at(t0), 1);
        assert!(d.contains_at("a", t0 + Duration::from_millis(10_050)));
        assert!(!d.contains_at("a", t0 + Duration::from_millis(10_099)));
    }

    #[test]
    fn window_is_sized_up_front_and_never_grows_under_load() {
        let d = dedup(600, 1000);
        let caps = |d: &Dedup| {
            let inner = d.inner.lock().unwrap();
            (inner.current.capacity(), inner.previous.capacity())
        };
        let (a, b) = caps(&d);
        assert!(a >= 500 && b >= 500, "{a} {b}");
        let t0 = Instant::now();
        let ids: Vec<String> = (0..5000).map(|i| format!("id-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            d.insert_at([id.as_str()], t0 + Duration::from_millis(i as u64));
        }
        let t = t0 + Duration::from_millis(5000);
        assert_eq!(d.len_at(t), 1000);
        assert_eq!(caps(&d), (a, b), "neither generation grew or rehashed");
        assert!(d.contains_at("id-4999", t) && d.contains_at("id-4000", t));
        assert!(!d.contains_at("id-3999", t));
    }
}
