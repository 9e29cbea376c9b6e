#!/usr/bin/env bash
# Runs every test of the workspace, after installing what the tests need and is missing, and building the Debian
# packages (scripts/package.sh: the operator-guide test installs them):
#   - rust targets: thumbv7m-none-eabi (the firmware test), x86_64-unknown-linux-musl (the static agent in the VM test)
#   - Debian packages: qemu-system-arm, qemu-system-x86, a Debian kernel, busybox-static, cpio (the QEMU tests),
#     procps (ps, for the action test), prometheus (promtool, for the metrics test), curl (the admin-socket test),
#     prometheus-alertmanager (the upstream test), libvirt-daemon-system + libvirt-clients (the libvirt test)
# Idempotent and non-interactive. Without root (or apt), it names the missing packages and stops.
# Usage: scripts/test.sh [extra cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

need_targets=(thumbv7m-none-eabi x86_64-unknown-linux-musl)
installed=$(rustup target list --installed 2>/dev/null || true)
for t in "${need_targets[@]}"; do
  if ! grep -qx "$t" <<<"$installed"; then
    echo "test.sh: rustup target add $t"
    rustup target add "$t" >/dev/null
  fi
done

# Debian packages, by a file each one provides
declare -A pkg_for=(
  [/usr/bin/qemu-system-arm]=qemu-system-arm
  [/usr/bin/qemu-system-x86_64]=qemu-system-x86
  [/bin/busybox]=busybox-static
  [/usr/bin/cpio]=cpio
  [/usr/bin/ps]=procps
  [/usr/bin/promtool]=prometheus
  [/usr/bin/curl]=curl
  [/usr/bin/prometheus-alertmanager]=prometheus-alertmanager
  [/usr/sbin/libvirtd]=libvirt-daemon-system
  [/usr/bin/virsh]=libvirt-clients
  [/usr/sbin/qemu-ga]=qemu-guest-agent
  [/usr/bin/chromium]=chromium
)
missing=()
for f in "${!pkg_for[@]}"; do
  [ -e "$f" ] || missing+=("${pkg_for[$f]}")
done
ls /boot/vmlinuz-* >/dev/null 2>&1 || missing+=(linux-image-cloud-amd64)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: apt-get install ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "test.sh: missing Debian packages: ${missing[*]}" >&2
    echo "test.sh: install them (sudo apt-get install ${missing[*]}) and run again" >&2
    exit 1
  fi
fi

# the Debian packages, for the test that follows the operator guide from `dpkg -i` (host/tests/operator_guide.rs)
./scripts/package.sh >/dev/null

cargo test --workspace "$@"
