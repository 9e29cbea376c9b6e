#!/usr/bin/env bash
# The README's run command: vigild watching 1,000 simulated guests, a few of which fail, for 25 seconds.
# Prints the fault events, then vigild's status summary. No setup beyond the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p vigil-host
work=$(mktemp -d -t vigil-demo.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
dir="$work/qemu"; mkdir -p "$dir"
./target/release/vigil-sim --dir "$dir" --guests 1000 --hang 2 --unhealthy 2 --late 1 --garbage 1 --flap 1 --exit 1 \
  --fail-after-secs 8 --flap-down-secs 5 &
sleep 0.5
./target/release/vigild run --watch "$dir" --state-dir "$work/state" --events "$work/events.jsonl" --status-file "$work/status.json" --log error &
vigild=$!
echo "vigild is watching $dir (1,000 simulated guests; failures start after 8 s)..."
for i in $(seq 1 25); do
  sleep 1
  printf '\r%2ds: %5d registered, faults so far: %d ' "$i" \
    "$(grep -c '"kind":"registered"' "$work/events.jsonl" 2>/dev/null || true)" \
    "$(grep -cE '"kind":"(heartbeat_lost|unhealthy)"' "$work/events.jsonl" 2>/dev/null || true)"
done
echo
echo "--- events other than connected/registered (the guests' ids say how they were told to fail):"
grep -vE '"kind":"(connected|registered)"' "$work/events.jsonl" | cut -c1-220 || true
echo "--- vigild status:"
./target/release/vigild status --status-file "$work/status.json" | head -20
kill -TERM "$vigild"; wait "$vigild" || true
