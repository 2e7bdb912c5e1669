#!/usr/bin/env bash
# Fuzz every target for a bounded time (default 60 s each), seeded with the provider samples.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"; shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(parse_any parse_isendu parse_mailship parse_generic auth_verify spool_record)

# Seeds: each sample prefixed with every selector byte 0..15 and an empty x-event line.
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  i=0
  for f in ../samples/*/*.json; do
    for sel in $(seq 0 15); do
      { printf "\\x$(printf %02x "$sel")"; printf '\n'; cat "$f"; } > "corpus/$t/seed-$i-$sel"
    done
    i=$((i + 1))
  done
done

for t in "${targets[@]}"; do
  echo "== $t (${secs}s)"
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=65536 \
    -dict=json.dict 2>&1 | grep -E '^(#[0-9]+.*DONE|Done|==[0-9]+==|SUMMARY|thread|panicked|artifact)' || true
  [ -d "artifacts/$t" ] && [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ] && { echo "crash in $t: see fuzz/artifacts/$t"; exit 1; }
done
echo "no crashes"
