#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, from the committed seed corpora, and fails on any crash.
# Long campaigns: scripts/fuzz.sh 600 (ten minutes each); a crash leaves its input in fuzz/artifacts/<target>/.
# Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
targets=$(cargo +nightly fuzz list)
cargo +nightly fuzz build -O
status=0
for t in $targets; do
  mkdir -p "corpus/$t"
  # work on a scratch copy so the committed seeds stay small
  work=$(mktemp -d -t "fuzz-$t.XXXXXX")
  cp -r "corpus/$t/." "$work/" 2>/dev/null || true
  log=$(mktemp)
  if cargo +nightly fuzz run -O "$t" "$work" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=4096 >"$log" 2>&1; then
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || true)
    [ -n "$execs" ] || execs=$(grep -Eo '#[0-9]+' "$log" | tail -1 | tr -d '#')
    printf '%-10s ok   %12s execs in %ss\n' "$t" "$execs" "$secs"
  else
    printf '%-10s CRASH (see fuzz/artifacts/%s)\n' "$t" "$t"; tail -40 "$log"; status=1
  fi
  rm -rf "$work" "$log"
done
exit $status
