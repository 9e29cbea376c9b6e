#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md, on this machine, in one go (about 35 minutes; heavy: run it on a quiet machine).
#   1. the data plane: vigild against a naive floor host, 1,000 and 10,000 guests at 1 s (vigil-bench), the table's
#      pair and four more per guest count for the ratio's spread;
#   2. the highest heartbeat rate at 10,000 guests that runs 60 s with no false fault;
#   3. a burst of 10,000 faults through the spool to a local webhook, /healthz latency meanwhile (vigil-burst);
#   4. criterion: codec, garbage rejection, the round trip against the std way, timers, spool writes.
# Usage: scripts/bench.sh [quick]   (quick: shorter windows, no rate search)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v strace >/dev/null || { [ "$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq strace >/dev/null; }
cargo build --release -q -p vigil-host -p vigil-benches --bins
secs=20; repeat=4; [ "${1:-}" = quick ] && secs=5 && repeat=0
echo "## data plane (vigil-bench --guests 1000,10000 --interval-ms 1000 --secs $secs --syscalls --repeat $repeat)"
./target/release/vigil-bench --guests 1000,10000 --interval-ms 1000 --secs "$secs" --syscalls --repeat "$repeat"
if [ "${1:-}" != quick ]; then
  echo "## highest rate at 10,000 guests with no false fault over 60 s (vigild on CPU 0, the simulators on CPU 1)"
  for ms in 500 250 200 150 120 100; do
    line=$(./target/release/vigil-bench --guests 10000 --interval-ms "$ms" --secs 60 --hang 0 --vigild-only --pin | grep '^| vigild')
    echo "$line"
    faults=$(echo "$line" | awk -F'|' '{gsub(/ /,"",$13); print $13}')
    [ "$faults" = 0 ] || break
  done
fi
echo "## the upstream path under a burst: 10,000 guests hang at once (vigil-burst)"
./target/release/vigil-burst --guests 10000 --fail-after-secs 40
echo "## criterion"
cargo bench -q -p vigil-benches --bench core -- --warm-up-time 1 --measurement-time 3 2>/dev/null | grep -E 'time:|round trip|^[a-z].*/' || true
cargo bench -q -p vigil-benches --bench timers -- --warm-up-time 1 --measurement-time 3 2>/dev/null | grep -E 'time:|^[a-z]' || true
cargo bench -q -p vigil-benches --bench spool -- --warm-up-time 1 --measurement-time 3 2>/dev/null | grep -E 'time:|thrpt:|^spool' || true
