#!/usr/bin/env bash
# A private Docker engine for building and trying the image by hand on a machine where none runs
# (the same engine the container tests start). It keeps its data in STATE (default
# /var/lib/kubetrain-test-docker, shared with the tests, which use this engine while it runs) and
# leaves the host's network alone (no iptables rules, no bridge: use --network host or none).
#
#   tests/container/dockerd.sh start    start it; prints the DOCKER_HOST to export
#   tests/container/dockerd.sh stop     stop it (by its PID)
#   tests/container/dockerd.sh status
# Needs root and Debian's docker.io. Use its own client (/usr/bin/docker) with
# DOCKER_BUILDKIT=1: a newer client elsewhere on PATH wants the buildx plugin for BuildKit.
set -euo pipefail

state=${KUBETRAIN_TEST_DOCKER_STATE:-/var/lib/kubetrain-test-docker}
run=/run/kubetrain-test-docker
pidfile=$run/dockerd.pid
sock=$run/docker.sock

running_pid() {
  local pid
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && grep -qa dockerd "/proc/$pid/cmdline" && echo "$pid"
}

case ${1:-} in
  start)
    if pid=$(running_pid); then
      echo "dockerd already running (pid $pid)" >&2
    else
      command -v dockerd >/dev/null || {
        echo "dockerd is missing: apt-get install docker.io" >&2
        exit 1
      }
      mkdir -p "$state" "$run"
      rm -f "$pidfile" "$sock"
      setsid dockerd --data-root "$state/data" --exec-root "$run/exec" --pidfile "$pidfile" \
        --host "unix://$sock" --iptables=false --ip-forward=false --bridge=none \
        >>"$state/dockerd.log" 2>&1 </dev/null &
      for _ in $(seq 1 120); do
        DOCKER_HOST=unix://$sock /usr/bin/docker version >/dev/null 2>&1 && break
        sleep 0.5
      done
      DOCKER_HOST=unix://$sock /usr/bin/docker version >/dev/null 2>&1 || {
        echo "dockerd did not start; see $state/dockerd.log" >&2
        exit 1
      }
      # The container tests reuse (and leave running) an engine this script started.
      echo "tests/container/dockerd.sh" >"$run/owner"
    fi
    echo "export DOCKER_HOST=unix://$sock DOCKER_BUILDKIT=1"
    ;;
  stop)
    if pid=$(running_pid); then
      kill "$pid"
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      rm -f "$run/owner"
      echo "dockerd stopped" >&2
    else
      echo "dockerd not running" >&2
    fi
    ;;
  status)
    if pid=$(running_pid); then echo "running (pid $pid), DOCKER_HOST=unix://$sock"; else echo "stopped"; exit 3; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
