#!/usr/bin/env bash
# Scale measurement: vigild watching N simulated guests (default 10,000 at a 1 s interval).
# Prints vigild's CPU (% of one core), RSS and RSS per guest over a measurement window.
# Usage: scripts/scale.sh [GUESTS] [INTERVAL_MS] [WINDOW_SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
guests=${1:-10000}; interval=${2:-1000}; window=${3:-30}
cargo build --release -q -p vigil-host
work=$(mktemp -d -t vigil-scale.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
dir="$work/qemu"; mkdir -p "$dir"
# each simulated guest takes two descriptors (listener + connection): shard the simulator under a 20k fd limit
per=5000; shards=$(( (guests + per - 1) / per )); left=$guests
for s in $(seq 1 "$shards"); do
  n=$(( left < per ? left : per )); left=$(( left - n ))
  ./target/release/vigil-sim --dir "$dir" --guests "$n" --interval-ms "$interval" --prefix "s$s" >/dev/null 2>&1 &
done
sleep 2
./target/release/vigild run --watch "$dir" --events "$work/events.jsonl" --status-file "$work/status.json" --log error &
pid=$!
echo "waiting for $guests registrations..."
for _ in $(seq 1 120); do
  r=$(grep -c '"kind":"registered"' "$work/events.jsonl" 2>/dev/null || true)
  [ "${r:-0}" -ge "$guests" ] && break; sleep 1
done
echo "registered: $r"
sleep 5
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
c0=$(cpu); t0=$(date +%s.%N)
sleep "$window"
c1=$(cpu); t1=$(date +%s.%N)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
faults=$(grep -cE '"kind":"(heartbeat_lost|unhealthy|protocol_error)"' "$work/events.jsonl" || true)
awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v hz="$ticks" -v rss="$rss" -v g="$guests" -v i="$interval" -v f="$faults" 'BEGIN {
  printf "| guests | interval | vigild CPU (%% of one core) | RSS | RSS per guest | false faults |\n|---|---|---|---|---|---|\n";
  printf "| %d | %d ms | %.1f %% | %.1f MiB | %.2f KiB | %d |\n", g, i, 100*(c1-c0)/hz/(t1-t0), rss/1024, rss/g, f }'
kill -TERM "$pid"; wait "$pid" || true
