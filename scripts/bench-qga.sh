#!/usr/bin/env bash
# Agentless guests through one libvirtd (issue #22): ping rate, missed pings, false faults, vigild's and libvirtd's
# CPU per ping at falling intervals, then the detection time at 1 s. Needs what scripts/test.sh installs (QEMU,
# libvirt, qemu-guest-agent) and root (a private libvirtd). VIGIL_QGA_BENCH_VMS (default 16) domains,
# VIGIL_QGA_BENCH_SECS (default 20) per step. Prints a table (BENCHMARKS.md holds the last one).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -q --release -p vigil-host --test qga_bench -- --ignored --nocapture 2>&1 | sed -n '/^qga through/,$p'
