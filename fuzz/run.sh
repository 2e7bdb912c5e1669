#!/usr/bin/env bash
# Fuzz every target for a bounded time (default 60 s each), seeded with the provider samples.
# Needs a nightly toolchain and cargo-fuzz (`cargo install --locked cargo-fuzz`).
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
# Prints each target's executions; exits 1 on the first crash (the input is in fuzz/artifacts/).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"; shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(parse_any parse_isendu parse_mailship parse_generic json_scan auth_verify spool_record request amqp_frames)

# Seeds: each sample prefixed with every selector byte 0..15 and an empty x-event line.
# For `request`: the flags byte 1 (sign the body with the endpoint's secret), an endpoint byte
# for each of the first 24 endpoints, an empty path line and no headers, then the sample.
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  i=0
  for f in ../samples/*/*.json; do
    if [ "$t" = request ]; then
      for ep in $(seq 0 23); do
        { printf '\x01'; printf "\\x$(printf %02x "$ep")"; printf '\n\n'; cat "$f"; } > "corpus/$t/seed-$i-$ep"
      done
    else
      for sel in $(seq 0 15); do
        { printf "\\x$(printf %02x "$sel")"; printf '\n'; cat "$f"; } > "corpus/$t/seed-$i-$sel"
      done
    fi
    i=$((i + 1))
  done
done

# One build of every target (later `fuzz run`s find it up to date).
cargo +nightly fuzz build -O >/dev/null 2>&1 || cargo +nightly fuzz build -O

for t in "${targets[@]}"; do
  log="$(mktemp)"
  status=0
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=65536 \
    -dict=json.dict >"$log" 2>&1 || status=$?
  runs="$(grep -oE '^Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' || true)"
  echo "== $t: ${secs}s, ${runs:-?} executions, exit $status"
  if [ "$status" -ne 0 ] || { [ -d "artifacts/$t" ] && [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; }; then
    grep -E '^(==[0-9]+==|SUMMARY|thread|panicked|artifact)|assert' "$log" | head -20 || true
    echo "crash in $t: see fuzz/artifacts/$t"
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
done
echo "no crashes"
