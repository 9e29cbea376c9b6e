#!/usr/bin/env bash
# Builds the Debian packages vigild and vigil-guest into target/debian/ (cargo-deb; the metadata is in
# host/Cargo.toml and firmware-guest/Cargo.toml, the units and maintainer scripts in packaging/).
# With --check: also extracts both into a throwaway root, checks that every path their units name exists there,
# and runs `systemd-analyze verify` and `systemd-analyze security` on the units (prints the exposure scores).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
cargo build --release -q -p vigil-host --bin vigild
# the guest agent as shipped: static (musl) and small, so the one package serves every Linux image
cargo build -q -p vigil-guest --bin vigil-guest --profile small --target x86_64-unknown-linux-musl
# manual pages from the clap definitions (the agent's with its `man` feature, built apart: the packaged agent
# is built without it)
rm -rf packaging/man && mkdir -p packaging/man
"$target/release/vigild" gen-man packaging/man
CARGO_TARGET_DIR="$target/man-build" cargo run -q --release -p vigil-guest --features man --bin vigil-guest -- \
  --write-man packaging/man
gzip -9n packaging/man/*.1
mkdir -p "$target/debian"
cargo deb -q -p vigil-host --no-build --strip --output "$target/debian/"
cargo deb -q -p vigil-guest --no-build --strip --profile small --target x86_64-unknown-linux-musl \
  --output "$target/debian/"
ls -l "$target/debian/"*.deb
[ "${1:-}" = --check ] || exit 0

root=$(mktemp -d -t vigil-pkg-root.XXXXXX)
trap 'rm -rf "$root"' EXIT
for deb in "$target/debian/"vigild_*.deb "$target/debian/"vigil-guest_*.deb; do
  dpkg-deb --info "$deb" >/dev/null
  dpkg -x "$deb" "$root"
done
status=0
for unit in "$root"/lib/systemd/system/*.service "$root"/usr/lib/systemd/system/*.service; do
  [ -f "$unit" ] || continue
  # every absolute path the unit names (ExecStart's program, EnvironmentFile without '-', --config files in it)
  paths=$(sed -n -e 's/^ExecStart=\([^ ]*\).*/\1/p' -e 's/^EnvironmentFile=\([^-].*\)/\1/p' "$unit"
          { grep -o -- '--config [^ ]*' "$unit" || true; } | cut -d' ' -f2)
  for p in $paths; do
    if [ -e "$root$p" ]; then echo "package: $(basename "$unit"): $p present"; else echo "package: $(basename "$unit"): $p MISSING"; status=1; fi
  done
  # (the throwaway root holds only the packages: the system's own units and /bin/kill, and the man pages of
  # Documentation=, are looked up there in vain; those lines are not findings)
  systemd-analyze verify --root="$root" "$unit" 2>&1 | grep -v -e 'Cannot add dependency job' -e 'Failed to load unit' \
    -e "Command 'man " -e 'sysinit.target not found' -e '/bin/kill is not executable' || true
  systemd-analyze security --offline=true --root="$root" "$unit" 2>/dev/null | tail -1 | sed "s|^|package: $(basename "$unit"): |"
done
# the config the package installs passes its own checker, and ARGS names files the package installs
"$root/usr/bin/vigild" check-config "$root/etc/vigil/vigild.toml"
grep -q -- '--config /etc/vigil/vigild.toml' "$root/etc/default/vigild"
exit $status
