#!/usr/bin/env bash
# Footprint of the guest side: the firmware image's flash/RAM (`size`), and the Linux agent built as a static
# binary: its size, shared libraries, RSS, and CPU per heartbeat (a host stand-in challenges it every 50 ms).
# Usage: scripts/guest-footprint.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
cargo build -q -p vigil-guest --bin vigil-fw --no-default-features --features firmware --target thumbv7m-none-eabi --profile firmware
echo "--- firmware (thumbv7m-none-eabi, lm3s6965evb): text = flash, data+bss = static RAM"
size target/thumbv7m-none-eabi/firmware/vigil-fw
# glibc with +crt-static, and musl (static by default), both with the small profile
RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --profile small -p vigil-guest --bin vigil-guest --target x86_64-unknown-linux-gnu
cargo build -q --profile small -p vigil-guest --bin vigil-guest --target x86_64-unknown-linux-musl
for t in x86_64-unknown-linux-gnu x86_64-unknown-linux-musl; do
  b=target/$t/small/vigil-guest
  echo "--- Linux agent, $t, static: $(stat -c %s "$b") bytes; $(file -b "$b" | cut -d, -f1-2,4); ldd: $(ldd "$b" 2>&1 | head -1 | xargs)"
done
bin=target/x86_64-unknown-linux-musl/small/vigil-guest
work=$(mktemp -d -t vigil-guest-fp.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
python3 - "$work" "$bin" "$secs" <<'PY'
import json, os, socket, subprocess, sys, time
work, binary, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
path = os.path.join(work, "port.sock")
srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen(1)
agent = subprocess.Popen([binary, "--port", path, "--api-socket", os.path.join(work, "api.sock"), "--interval-ms", "100"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
conn, _ = srv.accept(); conn.settimeout(0.01)
buf = b""; nonce = 1; answered = 0; registered = False; next_ch = 0.0
def ticks():
    # nanoseconds on CPU (all threads of the process)
    return sum(int(open(f"/proc/{agent.pid}/task/{t}/schedstat").read().split()[0]) for t in os.listdir(f"/proc/{agent.pid}/task"))
start = None
while True:
    now = time.time()
    if start and now - start > secs: break
    if registered and now >= next_ch:
        nonce += 1
        conn.sendall(b'\n{"version":3,"revision":1,"sequence":1,"msg_type":"challenge","heartbeat_challenge":%d}\n' % nonce)
        next_ch = now + 0.05
    try:
        d = conn.recv(65536)
        if not d: break
        buf += d
    except socket.timeout:
        continue
    *lines, buf = buf.split(b"\n")
    for l in lines:
        if not l.strip(): continue
        m = json.loads(l)
        if m["msg_type"] == "init" and not registered:
            conn.sendall(b'\n{"version":3,"revision":1,"sequence":1,"msg_type":"init_ack","invocation_id":%d}\n' % m["invocation_id"])
            registered = True; time.sleep(0.5); start = time.time(); t0 = ticks(); answered = 0
        elif m["msg_type"] == "challenge_response" and start:
            answered += 1
cpu = (ticks() - t0) / 1e9
rss = [l for l in open(f"/proc/{agent.pid}/status") if l.startswith("VmRSS")][0].split()[1]
agent.terminate(); agent.wait()
print(f"--- Linux agent at a 50 ms challenge rate for {secs:.0f} s: {answered} heartbeats answered, "
      f"RSS {rss} KiB, CPU {cpu * 1000:.1f} ms = {1e6 * cpu / max(answered, 1):.1f} us per heartbeat (from schedstat)")
PY
