#!/bin/sh
# `systemctl` as the operator guide calls it, inside host/tests/operator_guide.rs's private root, where systemd is
# not PID 1. `enable`, `disable` and every other verb are the real systemctl's (it works offline in a chroot: the
# [Install] section is checked and the symlinks made). `start`, `restart` and `enable --now` start the service as its unit file says,
# applying these settings of systemd.exec(5)/systemd.service(5):
#   EnvironmentFile= (a leading '-': may be missing), User=, Group= (with the user's supplementary groups),
#   RuntimeDirectory=, StateDirectory=, LogsDirectory= (created under /run, /var/lib, /var/log, owned by User=),
#   UMask=, LimitNOFILE=, ExecStart= ("$VAR" is the variable's value split at white space, as systemd does),
#   Type=notify (NOTIFY_SOCKET is handed to the service; the test, which owns that socket, waits for READY=1
#   before the guide's next command, as `systemctl start` would) and WatchdogSec= (WATCHDOG_USEC).
# The sandboxing settings (ProtectSystem= and the rest) are not applied here: scripts/package.sh --check runs
# `systemd-analyze verify` and `systemd-analyze security` on the units. The main process's pid goes to
# /run/systemctl-standin/UNIT.pid, its output to /run/systemctl-standin/UNIT.log.
set -eu
now=0 verb= units=
for a in "$@"; do
  case "$a" in
    --now) now=1 ;;
    -*) ;;
    *) if [ -z "$verb" ]; then verb=$a; else units="$units ${a%.service}"; fi ;;
  esac
done

start() {
  unit=$1
  file=/lib/systemd/system/$unit.service
  [ -f "$file" ] || file=/usr/lib/systemd/system/$unit.service
  [ -f "$file" ] || { echo "Failed to start $unit.service: Unit $unit.service not found." >&2; exit 5; }
  key() { sed -n "s/^$1=//p" "$file" | tail -n 1; }
  envfile=$(key EnvironmentFile)
  case "$envfile" in -*) envfile=${envfile#-}; [ -f "$envfile" ] || envfile= ;; esac
  if [ -n "$envfile" ]; then set -a; . "$envfile"; set +a; fi
  user=$(key User) group=$(key Group)
  for pair in RuntimeDirectory:/run StateDirectory:/var/lib LogsDirectory:/var/log; do
    for name in $(key "${pair%%:*}"); do
      install -d -m 0755 -o "${user:-root}" -g "${group:-${user:-root}}" "${pair#*:}/$name"
    done
  done
  mkdir -p /run/systemctl-standin
  notify=
  if [ "$(key Type)" = notify ]; then notify=${NOTIFY_SOCKET:?the test gives NOTIFY_SOCKET for Type=notify}; fi
  wd=$(key WatchdogSec)
  set -f
  eval "set -- $(key ExecStart)"
  set +f
  (
    um=$(key UMask)
    [ -z "$um" ] || umask "$um"
    lim=$(key LimitNOFILE)
    if [ -n "$lim" ] && ! ulimit -n "$lim" 2>/dev/null; then
      # systemd, PID 1 with CAP_SYS_RESOURCE, may raise the hard limit; this sandbox may not
      echo "systemctl stand-in: LimitNOFILE=$lim is above this machine's hard limit; using $(ulimit -Hn)" >&2
      ulimit -n "$(ulimit -Hn)"
    fi
    cd /
    if [ -n "$notify" ]; then export NOTIFY_SOCKET="$notify"; else unset NOTIFY_SOCKET; fi
    if [ -n "$wd" ]; then export WATCHDOG_USEC=$((wd * 1000000)); fi
    if [ -n "$user" ]; then
      set -- setpriv --reuid="$user" --regid="${group:-$user}" --init-groups -- "$@"
    fi
    exec setsid "$@" </dev/null >"/run/systemctl-standin/$unit.log" 2>&1
  ) &
  echo $! >"/run/systemctl-standin/$unit.pid"
}

case "$verb" in
  enable | disable)
    /usr/bin/systemctl "$verb" $units
    if [ "$now" = 1 ] && [ "$verb" = enable ]; then for u in $units; do start "$u"; done; fi
    ;;
  start | restart)
    for u in $units; do start "$u"; done
    ;;
  reload)
    for u in $units; do kill -HUP "$(cat "/run/systemctl-standin/$u.pid")"; done
    ;;
  *)
    # everything else (preset, is-enabled, daemon-reload from the maintainer scripts): the real one, offline
    exec /usr/bin/systemctl "$@"
    ;;
esac
