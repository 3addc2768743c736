#!/usr/bin/env bash
# System packages the tests use: a Docker engine, rsvg-convert for screenshots, socat, tmux, jq,
# iproute2, headless chromium, systemd-analyze, gcc. Installed only when root and missing; otherwise tests that need them skip with a reason
# (and fail under CI=true).
set -eu
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v rsvg-convert >/dev/null || need+=(librsvg2-bin)
command -v tmux >/dev/null || need+=(tmux)
command -v socat >/dev/null || need+=(socat)
command -v ip >/dev/null || need+=(iproute2)
command -v jq >/dev/null || need+=(jq)
command -v htop >/dev/null || need+=(htop)  # benchmarks/tui_idle.py compares against it
command -v unshare >/dev/null || need+=(util-linux)
command -v chromium >/dev/null || need+=(chromium)  # tests/test_agent_web.py: serve --web in a browser
command -v systemd-analyze >/dev/null || need+=(systemd)  # tests/test_agent_deploy.py verifies the agent's unit
command -v gcc >/dev/null || need+=(gcc libc6-dev)  # tests/test_build_docker.py: a static binary through docker build
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "not root: skipping apt-get install ${need[*]} (tests needing them will skip)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
