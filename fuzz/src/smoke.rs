//! Every fuzz target run on mutated seeds without libFuzzer: a plain `cargo test` of this crate
//! (so on every CI run, where the instrumented build is too slow to pay on a clean clone) feeds
//! each target the seeds `run.sh` uses — every bundled sample behind each selector — and then
//! random mutations of them (bit flips, interesting bytes, inserted dictionary tokens from
//! `json.dict`, deleted, repeated and spliced ranges, truncations) for a bounded time.
//!
//! Not coverage-guided: it finds what blind mutation of valid inputs finds, which is what broke
//! parsers most often (an edge one byte away from a sample). `run.sh` remains the real fuzzer.
//! `FUZZ_SMOKE_SECONDS` sets the time per target (default 2); `FUZZ_SMOKE_SEED` replays a run
//! (the seed is printed). A crashing input is written to the temporary directory and named in
//! the failure.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use webhook_bridge::providers;

/// xorshift64*: reproducible from its seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// The tokens of `json.dict` (`"…"` lines, with `\"`, `\\` and `\xNN` escapes).
fn dictionary() -> Vec<Vec<u8>> {
    include_str!("../json.dict")
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.strip_suffix('"'))
        .map(|t| {
            let mut out = Vec::new();
            let mut bytes = t.bytes();
            while let Some(b) = bytes.next() {
                match (b, bytes.clone().next()) {
                    (b'\\', Some(b'x')) => {
                        bytes.next();
                        let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                        let text = String::from_utf8_lossy(&hex).into_owned();
                        out.push(u8::from_str_radix(&text, 16).unwrap_or(b'?'));
                    }
                    (b'\\', Some(next)) => {
                        bytes.next();
                        out.push(next);
                    }
                    _ => out.push(b),
                }
            }
            out
        })
        .collect()
}

/// `run.sh`'s seeds for `target`: each sample behind every selector (for `amqp_frames`, broker
/// streams built by the target).
fn seeds(target: &str) -> Vec<Vec<u8>> {
    if target == "amqp_frames" {
        return crate::targets::amqp_frames::seeds();
    }
    let mut out = Vec::new();
    for (_, sample) in providers::samples::all() {
        for selector in 0u8..16 {
            let mut seed = if target == "request" {
                vec![1, selector, b'\n', b'\n']
            } else {
                vec![selector, b'\n']
            };
            seed.extend_from_slice(sample.body);
            out.push(seed);
        }
    }
    out
}

const INTERESTING: &[u8] = b"\0\xff\x7f\x80\"\\{}[]:,0-9eE.+ \n\r\t";

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>], dict: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        let at = rng.below(len + 1);
        match rng.below(8) {
            0 if len > 0 => input[at.min(len - 1)] ^= 1 << rng.below(8),
            1 if len > 0 => input[at.min(len - 1)] = INTERESTING[rng.below(INTERESTING.len())],
            2 => {
                let token = &dict[rng.below(dict.len())];
                input.splice(at..at, token.iter().copied());
            }
            3 if len > 0 => {
                let end = (at + 1 + rng.below(16)).min(len);
                input.drain(at.min(len - 1)..end);
            }
            4 if len > 0 => {
                let start = at.min(len - 1);
                let end = (start + 1 + rng.below(64)).min(len);
                let piece = input[start..end].to_vec();
                let to = rng.below(input.len() + 1);
                input.splice(to..to, piece);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            6 => input.truncate(at),
            _ => {
                let byte = rng.next() as u8;
                input.insert(at, byte);
            }
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

#[test]
fn every_target_survives_mutated_seeds() {
    let per_target = Duration::from_secs_f64(
        std::env::var("FUZZ_SMOKE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0),
    );
    let seed = env_number("FUZZ_SMOKE_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    let dict = dictionary();
    assert!(dict.len() > 10, "json.dict read: {} tokens", dict.len());
    for &(name, target) in crate::targets::ALL {
        let mut rng = Rng(seed);
        let seeds = seeds(name);
        assert!(!seeds.is_empty());
        let started = Instant::now();
        let mut runs = 0u64;
        let mut input = Vec::new();
        while runs < seeds.len() as u64 || started.elapsed() < per_target {
            let i = runs as usize;
            if i < seeds.len() {
                input.clone_from(&seeds[i]);
            } else {
                // Mostly mutate a fresh seed; sometimes keep mutating the last input.
                if rng.below(4) != 0 {
                    input.clone_from(&seeds[rng.below(seeds.len())]);
                }
                mutate(&mut rng, &mut input, &seeds, &dict);
                input.truncate(65536);
            }
            if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
                let path = std::env::temp_dir().join(format!("fuzz-smoke-{name}-{seed}-{runs}"));
                let saved = std::fs::write(&path, &input).is_ok();
                panic!(
                    "{name} panicked on run {runs} (FUZZ_SMOKE_SEED={seed}); input{} {}",
                    if saved { " saved to" } else { " (not saved):" },
                    if saved {
                        path.display().to_string()
                    } else {
                        format!("{:?}", String::from_utf8_lossy(&input))
                    }
                );
            }
            runs += 1;
        }
        eprintln!(
            "fuzz smoke {name}: {runs} inputs in {:.1} s (FUZZ_SMOKE_SEED={seed})",
            started.elapsed().as_secs_f64()
        );
        assert!(runs > seeds.len() as u64, "{name}: no mutated input ran");
    }
}
