#!/usr/bin/env bash
# A private Docker engine for the tests: its own data root and socket, no bridge, no iptables, no
# ip_forward, so it touches nothing else on the machine (see shared/reference/machine-notes.md).
#   scripts/dockerd.sh start   -> prints DOCKER_HOST=unix://...
#   scripts/dockerd.sh stop
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
D=${NITRODECK_DOCKERD_DIR:-$here/.dockerd}
cmd=${1:-start}
case "$cmd" in
  start)
    if [ -S "$D/docker.sock" ] && [ -f "$D/pid" ] && kill -0 "$(cat "$D/pid")" 2>/dev/null; then
      echo "DOCKER_HOST=unix://$D/docker.sock"; exit 0
    fi
    command -v dockerd >/dev/null || { echo "dockerd not installed" >&2; exit 1; }
    mkdir -p "$D"
    rm -f "$D/docker.sock" "$D/pid"
    nohup dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none --ip-forward=false \
      --data-root="$D/root" --exec-root="$D/exec" --pidfile="$D/pid" -H "unix://$D/docker.sock" \
      >"$D/dockerd.log" 2>&1 &
    for _ in $(seq 1 100); do
      if DOCKER_HOST="unix://$D/docker.sock" docker version >/dev/null 2>&1; then
        echo "DOCKER_HOST=unix://$D/docker.sock"; exit 0
      fi
      sleep 0.2
    done
    echo "dockerd did not answer; see $D/dockerd.log" >&2
    tail -5 "$D/dockerd.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$D/pid" ]; then
      pid=$(cat "$D/pid"); kill "$pid" 2>/dev/null
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null
      rm -f "$D/pid"
    fi
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
