#!/usr/bin/env bash
# Run a command with the private dockerd up (when it can be started), and stop it afterwards.
set -u
here=$(cd "$(dirname "$0")" && pwd)
started=""
if [ -z "${DOCKER_HOST:-}" ] && command -v dockerd >/dev/null && [ "$(id -u)" = 0 ]; then
  if line=$("$here/dockerd.sh" start); then
    export "$line"; started=1
  else
    echo "warning: private dockerd did not start; Docker tests will skip (fail under CI)" >&2
  fi
fi
"$@"; rc=$?
[ -n "$started" ] && "$here/dockerd.sh" stop
exit $rc
