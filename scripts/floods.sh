#!/usr/bin/env bash
# The flood table of issue #12, re-measured: 60 honest guests beside hostile guests that write random bytes as fast
# as vigild reads them (in their own process at the lowest CPU priority), and the number of honest guests declared
# lost. Release build; about 40 s per row.
# Usage: scripts/floods.sh [SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-25}
cargo build --release -q -p vigil-host
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
echo "| hostile guests | interval | honest guests declared lost | vigild CPU | worst honest round trip |"
echo "|---|---|---|---|---|"
for row in "60 1000" "200 1000" "60 500" "10 200" "200 400"; do
  set -- $row; hostile=$1; ms=$2
  work=$(mktemp -d -t vigil-floods.XXXXXX); dir="$work/qemu"; mkdir -p "$dir"
  ./target/release/vigil-sim --dir "$dir" --guests 60 --interval-ms "$ms" --prefix good >/dev/null 2>&1 & good=$!
  nice -n 19 ./target/release/vigil-sim --dir "$dir" --guests "$hostile" --flood "$hostile" --fail-after-secs 3 --prefix bad >/dev/null 2>&1 & bad=$!
  sleep 1
  ./target/release/vigild run --watch "$dir" --events "$work/events.jsonl" --admin-socket "$work/admin.sock" --log error & pid=$!
  sleep 5
  c0=$(awk '{print $14 + $15}' "/proc/$pid/stat"); t0=$(date +%s.%N)
  sleep "$secs"
  c1=$(awk '{print $14 + $15}' "/proc/$pid/stat"); t1=$(date +%s.%N)
  worst=$(curl -s --unix-socket "$work/admin.sock" http://localhost/v1/guests | python3 -c 'import json,sys; g=json.load(sys.stdin)["guests"]; print(max(x["max_rtt_ms"] for x in g if x["id"].startswith("good")))')
  lost=$( (grep '"kind":"heartbeat_lost"' "$work/events.jsonl" || true) | (grep -o '"guest":"good[^"]*"' || true) | sort -u | wc -l)
  kill -TERM "$pid" "$good" "$bad" 2>/dev/null; wait "$pid" "$good" "$bad" 2>/dev/null || true
  awk -v h="$hostile" -v ms="$ms" -v lost="$lost" -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v w="$worst" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "| %d | %d ms | %d of 60 | %.0f %% of a core | %d ms |\n", h, ms, lost, 100*(c1-c0)/hz/(t1-t0), w }'
  rm -rf "$work"
done
